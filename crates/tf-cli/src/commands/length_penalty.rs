//! `tf length-penalty`: choose the beam search length penalty α of a translation model on a
//! held-out split, and record it beside the weights for `tf translate`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_model::DEFAULT_BEAM;
use tf_train::ModelDir;
use tf_train::eval::length_penalty::{CANDIDATE_ALPHAS, tune_length_penalty};

use crate::args::{Alphas, parse_alphas};
use crate::progress;

#[derive(Args, Debug)]
pub struct LengthPenaltyArgs {
    /// Model directory written by `tf train --task translation`.
    #[arg(long)]
    model: PathBuf,
    /// The α to try.
    #[arg(long, default_value_t = Alphas(CANDIDATE_ALPHAS.to_vec()), value_parser = parse_alphas)]
    alphas: Alphas,
    /// Beams per sentence.
    #[arg(long, default_value_t = DEFAULT_BEAM)]
    beam: usize,
    /// Corpus directory [default: the one the model was trained on].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split to choose on [default: the run's validation split].
    #[arg(long)]
    split: Option<String>,
}

pub fn run(args: LengthPenaltyArgs, device: &Device) -> Result<()> {
    if args.alphas.0.is_empty() || args.beam < 2 {
        bail!("--alphas needs at least one α and --beam at least 2 beams (α only ranks beams)");
    }
    let dir = ModelDir::new(&args.model);
    let config = dir.load_config()?;
    let task = config.task.translation()?;
    let data = args.data.unwrap_or_else(|| task.data.clone());
    let split = args.split.unwrap_or_else(|| task.valid_split.clone());
    let _lock = dir.lock()?;
    let bar = progress::bar(0);
    let choice = tune_length_penalty(
        &dir,
        &data,
        &split,
        args.beam,
        &args.alphas.0,
        device,
        |n, total| {
            bar.set_length(total as u64);
            bar.inc(n as u64)
        },
    )
    .with_context(|| format!("choosing the length penalty of {}", dir.path().display()))?;
    bar.finish_and_clear();
    println!(
        "beam {} on {} sentences of {} ({}):",
        choice.beam_size,
        choice.sentences,
        choice.split,
        data.display()
    );
    for tried in &choice.tried {
        let chosen = if tried.alpha == choice.alpha {
            "  (chosen)"
        } else {
            ""
        };
        println!("  α {:<5} BLEU {:6.2}{chosen}", tried.alpha, tried.bleu);
    }
    println!(
        "`tf translate --model {}` now decodes with α {} (recorded in its length_penalty.json)",
        dir.path().display(),
        choice.alpha
    );
    Ok(())
}
