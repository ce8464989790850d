//! `tf align`: word alignments of a parallel file read off each attribution method, and off
//! each cross-attention head with `--heads`; their alignment error rate against a reference
//! alignment (Pharaoh lines, such as eflomal's) with `--reference`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use serde::Serialize;
use tf_inspect::alignment::{
    AlignmentScore, WordAlignment, align_words, alignment_error_rate, cross_attention_heads,
    words_of_tokens,
};
use tf_inspect::attribution::{AttributionMethod, attribute};
use tf_inspect::tokens::Tokens;
use tf_train::data::corpus::read_lines;
use tf_train::store::atomic::write_atomic;

use crate::commands::attribute::Method;
use crate::commands::codec::load_inspected;
use crate::progress;

#[derive(Args, Debug)]
pub struct AlignArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// Source sentences, one a line (gunzipped if the name ends in .gz).
    #[arg(long)]
    source: PathBuf,
    /// Their translations, line by line, teacher-forced [default: the model's greedy ones].
    #[arg(long)]
    target: Option<PathBuf>,
    /// Reference alignment, a Pharaoh line (`0-0 1-2 …`, source-target word indices over
    /// whitespace-separated words) per sentence pair: score each alignment against it.
    #[arg(long)]
    reference: Option<PathBuf>,
    /// Attribution methods to align with [default: all but integrated gradients].
    #[arg(long, value_enum, value_delimiter = ',')]
    methods: Option<Vec<Method>>,
    /// Also align with each cross-attention head.
    #[arg(long)]
    heads: bool,
    /// Only the first N sentence pairs.
    #[arg(long)]
    limit: Option<usize>,
    /// Steps of integrated gradients.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Directory to write each method's alignment (METHOD.align) and attributions
    /// (METHOD.jsonl, one JSON object a pair) into.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the scores as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// One aligner's score against the reference.
#[derive(Serialize)]
struct Scored {
    /// The attribution method, or `cross L.H`.
    aligner: String,
    #[serde(flatten)]
    score: AlignmentScore,
}

pub fn run(args: AlignArgs, device: &Device) -> Result<()> {
    let methods: Vec<AttributionMethod> = args
        .methods
        .as_deref()
        .unwrap_or(&Method::QUICK)
        .iter()
        .map(|m| m.with_steps(args.steps))
        .collect();
    // Gradient attributions need the autodiff device; the weights are the same on it.
    let device = if methods.iter().any(AttributionMethod::needs_gradients) {
        device.clone().autodiff()
    } else {
        device.clone()
    };
    let (model, codec) = load_inspected(&args.model, &device)?;
    let special = codec.special_ids();
    let limit = args.limit.unwrap_or(usize::MAX);
    let sources: Vec<String> = read_lines(&args.source)?.into_iter().take(limit).collect();
    let targets = match &args.target {
        Some(path) => {
            let targets: Vec<String> = read_lines(path)?.into_iter().take(limit).collect();
            same_length(&targets, &sources, path, &args.source)?;
            Some(targets)
        }
        None => None,
    };
    let reference = match &args.reference {
        Some(path) => {
            let lines: Vec<String> = read_lines(path)?.into_iter().take(limit).collect();
            same_length(&lines, &sources, path, &args.source)?;
            let parsed = lines
                .iter()
                .enumerate()
                .map(|(i, line)| {
                    WordAlignment::parse_pharaoh(line)
                        .with_context(|| format!("{} line {}", path.display(), i + 1))
                })
                .collect::<Result<Vec<_>>>()?;
            Some(parsed)
        }
        None => None,
    };

    let started = Instant::now();
    let mut alignments = vec![Vec::with_capacity(sources.len()); methods.len()];
    let mut jsonl = vec![String::new(); methods.len()];
    let mut head_alignments: Vec<Vec<Vec<WordAlignment>>> = Vec::new();
    let bar = progress::bar(sources.len() as u64);
    for (i, source_text) in sources.iter().enumerate() {
        let at = |what: &str| format!("{what} of line {}", i + 1);
        let (source, target) = codec
            .source_and_target(&model, source_text, targets.as_ref().map(|t| t[i].as_str()))
            .with_context(|| at("the sentence pair"))?;
        let max_output = codec
            .max_output(&model, source.len())
            .min(model.max_len().saturating_sub(1));
        // Greedy once, for every method alike.
        let target = match target {
            Some(target) => target,
            None => tf_inspect::forced::greedy(&model, &source, max_output, special, &device)?,
        };
        let source_words = words_of_tokens(&labels(&source, |id| codec.source_label(id)));
        let target_words = words_of_tokens(&labels(&target, |id| codec.label(id)));
        for (m, &method) in methods.iter().enumerate() {
            let attribution = attribute(
                &model,
                &source,
                Some(&target),
                max_output,
                method,
                Tokens {
                    special,
                    source: &|id| codec.source_label(id),
                    target: &|id| codec.label(id),
                },
                &device,
            )
            .with_context(|| at(method.name()))?;
            alignments[m].push(align_words(
                &attribution.source,
                &source_words,
                &target_words,
            )?);
            if args.out.is_some() {
                writeln!(jsonl[m], "{}", serde_json::to_string(&attribution)?)?;
            }
        }
        if args.heads {
            let layers = cross_attention_heads(&model, &source, &target, special, &device)?;
            head_alignments.resize_with(layers.len(), Vec::new);
            for (l, heads) in layers.iter().enumerate() {
                head_alignments[l].resize_with(heads.len(), Vec::new);
                for (h, weights) in heads.iter().enumerate() {
                    head_alignments[l][h].push(align_words(weights, &source_words, &target_words)?);
                }
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "aligned {} sentence pairs with {} methods{} in {seconds:.1} s",
        sources.len(),
        methods.len(),
        if args.heads {
            " and every cross-attention head"
        } else {
            ""
        }
    );

    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        for ((method, aligned), lines) in methods.iter().zip(&alignments).zip(&jsonl) {
            write_atomic(
                &out.join(format!("{}.align", method.name())),
                &pharaoh(aligned),
            )?;
            write_atomic(
                &out.join(format!("{}.jsonl", method.name())),
                lines.as_bytes(),
            )?;
        }
        for (l, heads) in head_alignments.iter().enumerate() {
            for (h, aligned) in heads.iter().enumerate() {
                write_atomic(&out.join(format!("cross-{l}.{h}.align")), &pharaoh(aligned))?;
            }
        }
        println!(
            "wrote the alignments (METHOD.align, cross-L.H.align) and attributions (METHOD.jsonl) into {}",
            out.display()
        );
    }

    let Some(reference) = reference else {
        return Ok(());
    };
    let score = |aligner: String, aligned: &[WordAlignment]| -> Result<Scored> {
        Ok(Scored {
            aligner,
            score: alignment_error_rate(aligned, &reference)?,
        })
    };
    let mut scores = methods
        .iter()
        .zip(&alignments)
        .map(|(method, aligned)| score(method.name().to_string(), aligned))
        .collect::<Result<Vec<_>>>()?;
    for (l, heads) in head_alignments.iter().enumerate() {
        for (h, aligned) in heads.iter().enumerate() {
            scores.push(score(format!("cross {l}.{h}"), aligned)?);
        }
    }
    println!(
        "{:<22} {:>6} {:>9} {:>7}",
        "aligner", "AER", "precision", "recall"
    );
    for s in &scores {
        println!(
            "{:<22} {:>6.3} {:>9.3} {:>7.3}",
            s.aligner, s.score.aer, s.score.precision, s.score.recall
        );
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&scores)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn labels(ids: &[usize], label: impl Fn(usize) -> String) -> Vec<String> {
    ids.iter().map(|&id| label(id)).collect()
}

/// One Pharaoh line per sentence pair.
fn pharaoh(aligned: &[WordAlignment]) -> Vec<u8> {
    aligned
        .iter()
        .map(|a| a.to_pharaoh() + "\n")
        .collect::<String>()
        .into_bytes()
}

fn same_length(lines: &[String], sources: &[String], path: &Path, source: &Path) -> Result<()> {
    if lines.len() != sources.len() {
        bail!(
            "{} has {} lines for the {} of {}",
            path.display(),
            lines.len(),
            sources.len(),
            source.display()
        );
    }
    Ok(())
}
