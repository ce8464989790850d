//! `tf ablate`: zero, mean or resample ablation of any activation (hook point), all of it, some
//! heads or some positions, measured by the change in the references' log-probability and, with
//! `--bleu`, in the BLEU of the greedy translations.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use tf_attention::HookPoint;
use tf_inspect::InspectError;
use tf_inspect::ablation::{AblationMethod, BleuDecoding, Selection, ablation_study};
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, RunTask};

use crate::args::{TranslatorSplit, translator_split};
use crate::commands::EVAL_SEED;
use crate::commands::codec::Codec;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Method {
    /// Zeros.
    Zero,
    /// The activation's mean over the sentences' real positions.
    Mean,
    /// The activation on another sentence of the same length.
    Resample,
}

#[derive(Args, Debug)]
pub struct AblateArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// The activation to ablate, e.g. `dec.2.cross.z`, `enc.0.resid_post`, `dec.1.ffn.hidden`
    /// (the names: docs/inspection.md).
    #[arg(long)]
    point: String,
    /// What replaces it.
    #[arg(long, value_enum, default_value_t = Method::Zero)]
    method: Method,
    /// Only these heads, e.g. `0,2` (points with heads: q, k, v, pattern, z).
    #[arg(long, value_delimiter = ',')]
    heads: Option<Vec<usize>>,
    /// Ablate each head of the point in turn, one row each.
    #[arg(long, conflicts_with = "heads")]
    each_head: bool,
    /// Only these positions, e.g. `0,1` (those a sentence has).
    #[arg(long, value_delimiter = ',')]
    positions: Option<Vec<usize>>,
    /// Sentences to measure over: fresh task samples, or a translation model's first N
    /// sentence pairs of --split.
    #[arg(long, default_value_t = 200)]
    samples: usize,
    /// Seed of the samples (synthetic tasks) and of the resampling donors.
    #[arg(long, default_value_t = EVAL_SEED)]
    seed: u64,
    /// Corpus directory (translation models) [default: the one the model was trained on].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split to measure on (translation models) [default: the run's validation split].
    #[arg(long)]
    split: Option<String>,
    /// Also decode every sentence greedily, clean and ablated, and report the BLEU of each
    /// against the references (a whole pass per generated token: slower).
    #[arg(long)]
    bleu: bool,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: AblateArgs, device: &Device) -> Result<()> {
    let point: HookPoint = args.point.parse()?;
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::Off)?;
    let (examples, description) = match &config.task {
        RunTask::Synthetic(task) => {
            if args.data.is_some() || args.split.is_some() {
                bail!("--data and --split are for translation models");
            }
            let examples = task.samples(args.samples, args.seed);
            let description = format!("{} samples of `{}`", examples.len(), task.kind);
            (examples, description)
        }
        RunTask::Translation(task) => {
            let vocab = dir.load_vocabulary()?;
            let TranslatorSplit { split, pairs, .. } = translator_split(
                task,
                &vocab,
                args.data.as_deref(),
                args.split.as_deref(),
                args.samples,
            )?;
            let description = format!("the first {} sentence pairs of {split}", pairs.len());
            (pairs, description)
        }
    };
    let method = match args.method {
        Method::Zero => AblationMethod::Zero,
        Method::Mean => AblationMethod::Mean,
        Method::Resample => AblationMethod::Resample { seed: args.seed },
    };
    let selections: Vec<Selection> = if args.each_head {
        if !point.has_heads() {
            bail!("--each-head: {point} has no heads (q, k, v, pattern and z have)");
        }
        let [_, heads, ..] = model.hook_dims(&point, 1, 1, 1)?[..] else {
            unreachable!("a point with heads is rank 4")
        };
        (0..heads)
            .map(|h| Selection {
                heads: Some(vec![h]),
                positions: args.positions.clone(),
            })
            .collect()
    } else {
        vec![Selection {
            heads: args.heads.clone(),
            positions: args.positions.clone(),
        }]
    };
    let codec = Codec::new(&dir, &config.task)?;
    let max_output = |source_len: usize| codec.max_output(&model, source_len);
    let text = |ids: &[usize]| {
        codec
            .text(ids)
            .map_err(|err| InspectError::Invalid(err.to_string()))
    };
    let decoding = BleuDecoding {
        max_output: &max_output,
        text: &text,
    };
    let bleu = args.bleu.then_some(&decoding);
    let started = Instant::now();
    let results = ablation_study(
        &model,
        &examples,
        point,
        method,
        &selections,
        bleu,
        codec.special_ids(),
        device,
    )?;
    println!(
        "{} ablation of {point} over {description} ({:.1} s)",
        method.name(),
        started.elapsed().as_secs_f64()
    );
    let bleu_columns = if args.bleu {
        "     BLEU  ablated  change"
    } else {
        ""
    };
    println!("heads      positions  sentences  log p/token  ablated   change{bleu_columns}");
    let list = |v: &Option<Vec<usize>>| match v {
        None => "all".to_string(),
        Some(v) => v
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
    };
    for r in &results {
        let bleu = r.bleu.map_or(String::new(), |b| {
            format!(
                "  {:>7.2}  {:>7.2}  {:>+6.2}",
                b.bleu,
                b.ablated_bleu,
                b.ablated_bleu - b.bleu
            )
        });
        println!(
            "{:<10} {:<10} {:>9}  {:>11.4}  {:>7.4}  {:>+7.4}{bleu}",
            list(&r.selection.heads),
            list(&r.selection.positions),
            r.sentences,
            r.log_prob,
            r.ablated_log_prob,
            r.change()
        );
    }
    if let Some(skipped) = results.first().map(|r| r.skipped).filter(|&s| s > 0) {
        println!("{skipped} sentences had no donor of their length and were left out");
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&results)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
