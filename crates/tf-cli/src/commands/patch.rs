//! `tf patch`: activation patching of a clean source into a corrupted one (one word swapped,
//! say): how much of the clean translation each layer × position of the residual stream, and
//! each head, brings back. Writes JSON and heatmaps.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::Device;
use clap::Args;
use tf_inspect::patching::{PatchMetric, activation_patching};
use tf_inspect::tokens::Tokens;

use crate::commands::codec::load_inspected;

#[derive(Args, Debug)]
pub struct PatchArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// The clean source: a sentence for a translation model, a sequence such as "3 1 4" for a
    /// synthetic task.
    #[arg(long)]
    clean: String,
    /// The corrupted source, of as many tokens as the clean one.
    #[arg(long)]
    corrupt: String,
    /// The clean translation the decoder is teacher-forced on [default: the model's greedy
    /// translation of the clean source].
    #[arg(long)]
    target: Option<String>,
    /// Directory to write patching.json and the heatmaps into (created if missing)
    /// [default: MODEL/patching].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: PatchArgs, device: &Device) -> Result<()> {
    let (model, codec) = load_inspected(&args.model, device)?;
    let started = Instant::now();
    let clean = codec.source(&model, &args.clean)?;
    let corrupt = codec.source(&model, &args.corrupt)?;
    let target = args
        .target
        .as_deref()
        .map(|t| codec.target(t))
        .transpose()?;
    let patching = activation_patching(
        &model,
        &clean,
        &corrupt,
        target.as_deref(),
        codec.max_output(&model, clean.len()),
        Tokens {
            special: codec.special_ids(),
            source: &|id| codec.source_label(id),
            target: &|id| codec.label(id),
        },
        device,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    println!("clean    {}", patching.clean_source.join(" "));
    println!("corrupt  {}", patching.corrupt_source.join(" "));
    println!(
        "clean translation    {}",
        patching.clean_translation.join(" ")
    );
    println!(
        "corrupt translation  {}",
        patching.corrupt_translation.join(" ")
    );
    let metric = match &patching.metric {
        PatchMetric::LogitDifference {
            position,
            clean_label,
            corrupt_label,
            ..
        } => format!(
            "logit difference at target position {position}, {clean_label:?} − {corrupt_label:?}"
        ),
        PatchMetric::CleanLogProb => {
            "log-probability of the clean translation (the translations agree)".to_string()
        }
    };
    println!(
        "metric   {metric}: clean {:.4}, corrupt {:.4}",
        patching.clean_score, patching.corrupt_score
    );
    for heads in &patching.heads {
        let (best, effect) = heads
            .effect
            .iter()
            .enumerate()
            .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, &e)| ((l, h), e)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap_or(((0, 0), 0.0));
        println!(
            "{:<13} strongest head L{} H{}: effect {effect:.3}",
            heads.kind, best.0, best.1
        );
    }
    let out = args.out.unwrap_or_else(|| args.model.join("patching"));
    let written = patching.write(&out)?;
    println!(
        "{} patched runs in {seconds:.1} s; wrote {} files into {} (patching.json, encoder-residual, decoder-residual, heads-*)",
        patching.runs,
        written.len(),
        out.display()
    );
    Ok(())
}
