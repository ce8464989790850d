//! `tf prune`: remove the least important heads into a new model directory, or sweep accuracy
//! (synthetic tasks) or BLEU and decoding speed (translators) against heads removed.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use tf_inspect::importance::{HeadImportance, head_importance, least_important};
use tf_inspect::prune::{
    PruneOrder, SweepPoint, TranslationScore, plot_sweep, plot_translation_sweeps, removal_order,
    sweep, translation_score,
};
use tf_model::{AttentionKind, Transformer};
use tf_train::data::task::Example;
use tf_train::data::vocabulary::TranslationVocab;
use tf_train::eval::accuracy::accuracy;
use tf_train::eval::translate::TranslateOptions;
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;
use tf_train::training::fine_tune::{final_lr, fine_tune_run, trained_steps};
use tf_train::{ModelDir, RunConfig, RunTask, Start, train};

use crate::args::{TranslatorSplit, translator_split};
use crate::commands::EVAL_SEED;
use crate::commands::train::draw_curves;
use crate::commands::translate::models_alpha;
use crate::progress::TrainingProgress;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["heads", "sweep"])))]
pub struct PruneArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// Remove this many heads (the least important) and write the model to --out.
    #[arg(long, requires = "out")]
    heads: Option<usize>,
    /// Model directory to write the pruned model to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// After removing --heads, train the pruned model this many steps on the model's training
    /// data with its recipe before writing it (0 = no fine-tune).
    #[arg(long, default_value_t = 0, requires = "heads")]
    finetune_steps: usize,
    /// Peak learning rate of the fine-tune [default: the rate the model's own schedule ended
    /// at].
    #[arg(long, requires = "heads")]
    finetune_lr: Option<f64>,
    /// Instead: the model's score for every number of heads removed, as a table and a plot
    /// (accuracy for a synthetic task; BLEU and sentences/s for a translator).
    #[arg(long)]
    sweep: bool,
    /// Orders the sweep removes heads in, each a line of the plot: importance (least important
    /// first), random, or one kind of attention (encoder-self, decoder-self, cross).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "importance")]
    orders: Vec<OrderChoice>,
    /// Seed of the random order.
    #[arg(long, default_value_t = 1)]
    order_seed: u64,
    /// Where the sweep's plot goes (PNG and SVG; default: DIR/prune-sweep).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Samples head importance is measured over: fresh task samples, or a translator's first
    /// N pairs of --split (with its training loss).
    #[arg(long, default_value_t = 500)]
    importance_samples: usize,
    /// Seed of the importance samples (synthetic tasks; different from the evaluation's).
    #[arg(long, default_value_t = 1)]
    importance_seed: u64,
    /// Samples the model is scored on: fresh task samples, or a translator's first N sentences
    /// of --split [default: 1000 samples; a translator: the whole split].
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Corpus directory (translators) [default: the one the model was trained on].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split importance and BLEU are measured on (translators) [default: the run's validation
    /// split].
    #[arg(long)]
    split: Option<String>,
    /// Beams of the beam-search BLEU beside the greedy one (translators; 0 = greedy only).
    #[arg(long, default_value_t = 5)]
    beam: usize,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
    /// Also write the sweep's points as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum OrderChoice {
    Importance,
    Random,
    EncoderSelf,
    DecoderSelf,
    Cross,
}

impl OrderChoice {
    fn order(self, seed: u64) -> PruneOrder {
        match self {
            Self::Importance => PruneOrder::Importance,
            Self::Random => PruneOrder::Random { seed },
            Self::EncoderSelf => PruneOrder::Kind(AttentionKind::EncoderSelf),
            Self::DecoderSelf => PruneOrder::Kind(AttentionKind::DecoderSelf),
            Self::Cross => PruneOrder::Kind(AttentionKind::Cross),
        }
    }
}

pub fn run(mut args: PruneArgs, device: &Device) -> Result<()> {
    if args.importance_samples == 0 || args.eval_samples == Some(0) || args.batch_size == 0 {
        bail!("--importance-samples, --eval-samples and --batch-size must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let config = dir.load_config()?;
    if args.finetune_steps > 0 {
        args.finetune_lr = Some(finetune_lr(&args, &dir, &config)?);
    } else if args.finetune_lr.is_some() {
        bail!("--finetune-lr is the rate of a fine-tune: give --finetune-steps too");
    }
    if let Some(out) = &args.out {
        ModelDir::new(out).ensure_vacant()?;
    }
    match &config.task {
        RunTask::Synthetic(_) => {
            if args.data.is_some() || args.split.is_some() {
                bail!(
                    "--data and --split are for translation models; {} was trained on a \
                     synthetic task",
                    args.model.display()
                );
            }
            prune_synthetic(&args, &dir, device)
        }
        RunTask::Translation(_) => prune_translator(&args, &dir, device),
    }
}

/// The fine-tune's peak learning rate: `--finetune-lr`, else the rate the schedule of the run
/// in `dir` ended at; checked before any work starts.
fn finetune_lr(args: &PruneArgs, dir: &ModelDir, config: &RunConfig) -> Result<f64> {
    let lr = match args.finetune_lr {
        Some(lr) => lr,
        None => match trained_steps(dir)? {
            Some(steps) => final_lr(config, steps),
            None => bail!(
                "{} records no training steps (no checkpoint, no best.json), so the rate its \
                 schedule ended at is unknown: give --finetune-lr",
                dir.path().display()
            ),
        },
    };
    // The whole fine-tune run is checked here, before minutes of importance and scoring.
    fine_tune_run(config, config.model.clone(), args.finetune_steps, lr)?;
    Ok(lr)
}

/// Importance of every head of the model in `dir`, over `examples`, with `label_smoothing`.
fn importance_of(
    dir: &ModelDir,
    examples: &[Example],
    label_smoothing: f64,
    device: &Device,
) -> Result<Vec<HeadImportance>> {
    let gradient_device = device.clone().autodiff();
    let (config, gradient_model) = dir.load_model(&gradient_device, Dropout::Off)?;
    Ok(head_importance(
        &gradient_model,
        examples,
        label_smoothing,
        config.task.special_ids(),
        &gradient_device,
    ))
}

/// `model` (trained as `config`) without its `count` least important heads, and the run
/// configuration that fits it.
fn prune(
    config: &RunConfig,
    model: &Transformer,
    importance: &[HeadImportance],
    count: usize,
) -> Result<(RunConfig, Transformer)> {
    let remove = least_important(importance, count)?;
    let (pruned_config, pruned) = model.prune_heads(&config.model, &remove)?;
    for head in &remove {
        println!("removed {head}");
    }
    let run = RunConfig {
        model: pruned_config,
        ..config.clone()
    };
    Ok((run, pruned))
}

/// Writes `pruned` (configured as `run`) into `--out` with `vocab` when it is a translator,
/// after `--finetune-steps` of training on the run's task when asked for; returns the
/// fine-tuned model, if there was a fine-tune.
fn write_pruned(
    args: &PruneArgs,
    run: &RunConfig,
    pruned: Transformer,
    vocab: Option<&TranslationVocab>,
    device: &Device,
) -> Result<Option<Transformer>> {
    let out = ModelDir::new(args.out.as_ref().expect("clap requires --out with --heads"));
    if args.finetune_steps == 0 {
        out.save_model(run, &pruned)?;
        if let Some(vocab) = vocab {
            vocab.save(out.path())?;
        }
        return Ok(None);
    }
    let lr = args
        .finetune_lr
        .expect("run() resolves the fine-tune's rate");
    let fine_tune = fine_tune_run(run, run.model.clone(), args.finetune_steps, lr)?;
    println!(
        "fine-tuning the pruned model for {} steps (peak learning rate {lr:.2e}) into {}",
        args.finetune_steps,
        out.path().display()
    );
    let start = Start::FineTune {
        config: &fine_tune,
        vocabulary: vocab.map(TranslationVocab::learned).transpose()?,
        weights: &pruned,
    };
    let summary = train(&out, start, device, &mut TrainingProgress::new())?;
    println!(
        "fine-tune: train loss {:.4} -> {:.4}",
        summary.first_loss, summary.last_loss
    );
    draw_curves(out.path());
    Ok(Some(out.load_model(device, Dropout::AsConfigured)?.1))
}

fn sweep_plot_stem(args: &PruneArgs) -> PathBuf {
    args.plot
        .clone()
        .unwrap_or_else(|| args.model.join("prune-sweep"))
}

fn write_json(path: Option<&Path>, value: &impl serde::Serialize) -> Result<()> {
    if let Some(path) = path {
        write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn prune_synthetic(args: &PruneArgs, dir: &ModelDir, device: &Device) -> Result<()> {
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let task = config.task.synthetic()?;
    let importance_examples = task.samples(args.importance_samples, args.importance_seed);
    let importance = importance_of(dir, &importance_examples, 0.0, device)?;
    let eval_examples = task.samples(args.eval_samples.unwrap_or(1000), EVAL_SEED);
    let measure = |model: &Transformer| -> tf_inspect::Result<_> {
        Ok(accuracy(
            model,
            &eval_examples,
            task.max_len + 1,
            args.batch_size,
            device,
        )?)
    };
    println!(
        "importance over {} samples (seed {}); accuracy over {} fresh samples (seed {EVAL_SEED})",
        importance_examples.len(),
        args.importance_seed,
        eval_examples.len()
    );
    if let Some(count) = args.heads {
        let before = measure(&model)?;
        let (run, pruned) = prune(&config, &model, &importance, count)?;
        let describe = |a: &tf_train::eval::accuracy::Accuracy| {
            format!(
                "exact match {:.4}, token accuracy {:.4}",
                a.exact_match, a.token_accuracy
            )
        };
        println!("heads {} -> {}", model.heads().len(), pruned.heads().len());
        println!("before:      {}", describe(&before));
        println!("pruned:      {}", describe(&measure(&pruned)?));
        if let Some(tuned) = write_pruned(args, &run, pruned, None, device)? {
            println!("fine-tuned:  {}", describe(&measure(&tuned)?));
        }
        println!(
            "pruned model written to {}",
            args.out.as_ref().unwrap().display()
        );
        return Ok(());
    }
    if args.orders != [OrderChoice::Importance] {
        bail!("a synthetic model's sweep removes heads by importance only (--orders importance)");
    }
    println!(
        "{:>13} {:>11} {:>14}",
        "heads removed", "exact match", "token accuracy"
    );
    let order = removal_order(&importance, PruneOrder::Importance);
    let points = sweep(&model, &config.model, &order, measure, |point| {
        println!(
            "{:>13} {:>11.4} {:>14.4}",
            point.removed, point.score.exact_match, point.score.token_accuracy
        )
    })?;
    let title = format!(
        "Pruning heads by importance ({} heads, `{}`)",
        model.heads().len(),
        task.kind
    );
    for path in plot_sweep(&sweep_plot_stem(args), &title, &points)? {
        println!("wrote {}", path.display());
    }
    let rows: Vec<_> = points
        .iter()
        .map(|p| (p.removed, p.score.exact_match, p.score.token_accuracy))
        .collect();
    write_json(args.json.as_deref(), &rows)
}

fn prune_translator(args: &PruneArgs, dir: &ModelDir, device: &Device) -> Result<()> {
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let task = config.task.translation()?;
    let vocab = dir.load_vocabulary()?;
    let TranslatorSplit {
        data,
        split,
        corpus,
        pairs,
    } = translator_split(
        task,
        &vocab,
        args.data.as_deref(),
        args.split.as_deref(),
        args.importance_samples,
    )?;
    let n = args.eval_samples.unwrap_or(corpus.len()).min(corpus.len());
    let (sources, references) = (&corpus.source[..n], &corpus.target[..n]);
    let alpha = models_alpha(dir)?;
    let beam = (args.beam > 0).then(|| TranslateOptions {
        batch_sentences: args.batch_size.min(64),
        ..TranslateOptions::beam(args.beam, alpha)
    });
    let measure = |model: &Transformer| -> tf_inspect::Result<TranslationScore> {
        translation_score(model, &vocab, sources, references, beam, device)
    };
    let importance = importance_of(dir, &pairs, config.training.label_smoothing, device)?;
    println!(
        "importance over the first {} pairs of {split} (label smoothing {}); BLEU over its first \
         {n} sentences, greedy{}",
        pairs.len(),
        config.training.label_smoothing,
        beam.map(|_| format!(" and beam {} (α {alpha})", args.beam))
            .unwrap_or_default()
    );
    let describe = |s: &TranslationScore| {
        format!(
            "BLEU greedy {:.2}{}; {:.1} sentences/s greedy{}",
            s.greedy_bleu,
            s.beam_bleu
                .map(|b| format!(", beam {b:.2}"))
                .unwrap_or_default(),
            s.greedy_per_sec,
            s.beam_per_sec
                .map(|b| format!(", {b:.1} beam"))
                .unwrap_or_default()
        )
    };
    if let Some(count) = args.heads {
        let before = measure(&model)?;
        let (mut run, pruned) = prune(&config, &model, &importance, count)?;
        if let RunTask::Translation(task) = &mut run.task {
            // A fine-tune trains on the training split of the corpus --data names.
            task.data = data;
        }
        println!("heads {} -> {}", model.heads().len(), pruned.heads().len());
        println!("before:     {}", describe(&before));
        println!("pruned:     {}", describe(&measure(&pruned)?));
        if let Some(tuned) = write_pruned(args, &run, pruned, Some(&vocab), device)? {
            println!("fine-tuned: {}", describe(&measure(&tuned)?));
        }
        println!(
            "pruned model written to {}",
            args.out.as_ref().unwrap().display()
        );
        return Ok(());
    }
    let mut sweeps = Vec::new();
    for choice in &args.orders {
        let order = choice.order(args.order_seed);
        let heads = removal_order(&importance, order);
        println!("order {} ({} heads can go):", order.name(), heads.len());
        println!(
            "{:>13} {:<28} {:>11} {:>11} {:>13} {:>11}",
            "heads removed",
            "last removed",
            "BLEU greedy",
            "BLEU beam",
            "greedy sent/s",
            "beam sent/s"
        );
        let points = sweep(&model, &config.model, &heads, measure, |p| {
            let last = p
                .removed
                .checked_sub(1)
                .map_or(String::from("-"), |i| heads[i].to_string());
            let optional = |v: Option<f64>, digits: usize| {
                v.map_or("-".to_string(), |v| format!("{v:.digits$}"))
            };
            println!(
                "{:>13} {:<28} {:>11.2} {:>11} {:>13.1} {:>11}",
                p.removed,
                last,
                p.score.greedy_bleu,
                optional(p.score.beam_bleu, 2),
                p.score.greedy_per_sec,
                optional(p.score.beam_per_sec, 1)
            )
        })?;
        sweeps.push((order, points));
    }
    let title = format!(
        "BLEU on {split} against heads pruned ({} heads, {})",
        model.heads().len(),
        task.direction()
    );
    for path in plot_translation_sweeps(&sweep_plot_stem(args), &title, &sweeps)? {
        println!("wrote {}", path.display());
    }
    let rows: Vec<(&str, &Vec<SweepPoint<TranslationScore>>)> =
        sweeps.iter().map(|(o, p)| (o.name(), p)).collect();
    write_json(args.json.as_deref(), &rows)
}
