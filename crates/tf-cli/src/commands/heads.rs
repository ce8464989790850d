//! `tf heads`: per-head statistics, roles and importance, over samples of a synthetic task or
//! sentence pairs of a translation model's corpus.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_inspect::head_stats::{Alignment, GroundTruth, format_csv, format_table, head_statistics};
use tf_inspect::importance::head_importance;
use tf_train::data::corpus::read_split;
use tf_train::data::task::Example;
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, RunTask};

use crate::args::{TranslatorSplit, translator_split};
use crate::commands::EVAL_SEED;

#[derive(Args, Debug)]
pub struct HeadsArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// Samples to measure over (teacher-forced): fresh task samples, or a translation model's
    /// first N sentence pairs of --split.
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Seed of the samples (synthetic tasks).
    #[arg(long, default_value_t = EVAL_SEED)]
    seed: u64,
    /// Corpus directory (translation models) [default: the one the model was trained on].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split to measure on (translation models) [default: the run's validation split].
    #[arg(long)]
    split: Option<String>,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Skip head importance (one backward pass per sample).
    #[arg(long)]
    no_importance: bool,
    /// Also write the table as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write the statistics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What the heads are measured on.
struct Samples {
    examples: Vec<Example>,
    /// For a synthetic task: the source position each target position copies.
    alignment: Option<Box<Alignment<'static>>>,
    /// For a translation model: each token's count in both sides of the training split.
    token_counts: Option<Vec<u64>>,
    /// The loss importance is measured with.
    label_smoothing: f64,
    description: String,
}

pub fn run(args: HeadsArgs, device: &Device) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let samples = samples(&args, &dir)?;
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let special = config.task.special_ids();
    let truth = GroundTruth {
        alignment: samples.alignment.as_deref(),
        token_counts: samples.token_counts.as_deref(),
    };
    let mut stats = head_statistics(
        &model,
        &samples.examples,
        truth,
        args.batch_size,
        special,
        device,
    );
    if !args.no_importance {
        let gradient_device = device.clone().autodiff();
        let (_, model) = dir.load_model(&gradient_device, Dropout::Off)?;
        let importance = head_importance(
            &model,
            &samples.examples,
            samples.label_smoothing,
            special,
            &gradient_device,
        );
        for (s, i) in stats.iter_mut().zip(importance) {
            s.importance = Some(i.normalized);
        }
    }
    println!(
        "{} heads over {}; importance normalized per block; prev/same/next: share of queries \
         whose strongest key is that relative position",
        stats.len(),
        samples.description
    );
    print!("{}", format_table(&stats));
    if let Some(path) = &args.csv {
        write_atomic(path, format_csv(&stats).as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&stats)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The samples of the model's task, refusing flags that do not apply to it, before any model
/// is loaded.
fn samples(args: &HeadsArgs, dir: &ModelDir) -> Result<Samples> {
    let config = dir.load_config()?;
    match &config.task {
        RunTask::Synthetic(task) => {
            if args.data.is_some() || args.split.is_some() {
                bail!(
                    "--data and --split are for translation models; {} was trained on the \
                     synthetic `{}` task (its samples are drawn with --samples and --seed)",
                    dir.path().display(),
                    task.kind
                );
            }
            let examples = task.samples(args.samples, args.seed);
            let task = task.clone();
            Ok(Samples {
                description: format!(
                    "{} samples of `{}` (seed {})",
                    examples.len(),
                    task.kind,
                    args.seed
                ),
                examples,
                alignment: Some(Box::new(move |src| task.alignment(src))),
                token_counts: None,
                label_smoothing: 0.0,
            })
        }
        RunTask::Translation(task) => {
            let vocab = dir.load_vocabulary()?;
            let TranslatorSplit {
                data, split, pairs, ..
            } = translator_split(
                task,
                &vocab,
                args.data.as_deref(),
                args.split.as_deref(),
                args.samples,
            )?;
            let train = read_split(&data, &task.train_split, &task.src, &task.tgt)
                .context("reading the training split for token frequencies")?;
            let mut token_counts = vec![0u64; vocab.len()];
            for sentence in &train.source {
                for id in vocab.encode_source(sentence)? {
                    token_counts[id] += 1;
                }
            }
            for sentence in &train.target {
                for id in vocab.encode_target(sentence)? {
                    token_counts[id] += 1;
                }
            }
            // Source and target ids of separate vocabularies name different tokens.
            let token_counts = vocab.shares_ids().then_some(token_counts);
            Ok(Samples {
                description: format!(
                    "the first {} sentence pairs of {} in {} ({}; rare: by {} frequency)",
                    pairs.len(),
                    split,
                    data.display(),
                    task.direction(),
                    task.train_split
                ),
                examples: pairs,
                alignment: None,
                token_counts,
                label_smoothing: config.training.label_smoothing,
            })
        }
    }
}
