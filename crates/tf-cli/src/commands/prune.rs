//! `tf prune`: remove the least important heads into a new model directory, or sweep accuracy
//! against heads removed.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_inspect::importance::{head_importance, least_important};
use tf_inspect::prune::{plot_sweep, sweep};
use tf_train::eval::accuracy::accuracy;
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, RunConfig};

use crate::commands::EVAL_SEED;

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["heads", "sweep"])))]
pub struct PruneArgs {
    /// Model directory written by `tf train` on a synthetic task.
    #[arg(long)]
    model: PathBuf,
    /// Remove this many heads (the least important) and write the model to --out.
    #[arg(long, requires = "out")]
    heads: Option<usize>,
    /// Model directory to write the pruned model to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead: accuracy for every number of heads removed, as a table and a plot.
    #[arg(long)]
    sweep: bool,
    /// Where the sweep's plot goes (PNG and SVG; default: DIR/prune-sweep).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Task samples head importance is measured over.
    #[arg(long, default_value_t = 500)]
    importance_samples: usize,
    /// Seed of those samples (different from the evaluation's).
    #[arg(long, default_value_t = 1)]
    importance_seed: u64,
    /// Fresh samples accuracy is measured on.
    #[arg(long, default_value_t = 1000)]
    eval_samples: usize,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
}

pub fn run(args: PruneArgs, device: &Device) -> Result<()> {
    if args.importance_samples == 0 || args.eval_samples == 0 {
        bail!("--importance-samples and --eval-samples must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let task = config.task.synthetic()?;
    if let Some(out) = &args.out {
        ModelDir::new(out).ensure_vacant()?;
    }
    let gradient_device = device.clone().autodiff();
    let (_, gradient_model) = dir.load_model(&gradient_device, Dropout::Off)?;
    let importance_examples = task.samples(args.importance_samples, args.importance_seed);
    let importance = head_importance(&gradient_model, &importance_examples, 0.0, &gradient_device);
    let eval_examples = task.samples(args.eval_samples, EVAL_SEED);
    let measure = |model: &tf_model::Transformer| -> tf_inspect::Result<_> {
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
        let remove = least_important(&importance, count)?;
        let (pruned_config, pruned) = model.prune_heads(&config.model, &remove)?;
        let after = measure(&pruned)?;
        for head in &remove {
            println!("removed {head}");
        }
        let out = args.out.as_ref().expect("clap requires --out with --heads");
        let pruned_run = RunConfig {
            model: pruned_config,
            ..config.clone()
        };
        ModelDir::new(out).save_model(&pruned_run, &pruned)?;
        println!(
            "heads {} -> {}; exact match {:.4} -> {:.4}; token accuracy {:.4} -> {:.4}",
            model.heads().len(),
            pruned.heads().len(),
            before.exact_match,
            after.exact_match,
            before.token_accuracy,
            after.token_accuracy
        );
        println!("pruned model written to {}", out.display());
        return Ok(());
    }
    println!(
        "{:>13} {:>11} {:>14}",
        "heads removed", "exact match", "token accuracy"
    );
    let points = sweep(&model, &config.model, &importance, measure, |point| {
        println!(
            "{:>13} {:>11.4} {:>14.4}",
            point.removed, point.accuracy.exact_match, point.accuracy.token_accuracy
        )
    })?;
    let stem = args
        .plot
        .clone()
        .unwrap_or_else(|| args.model.join("prune-sweep"));
    let title = format!(
        "Pruning heads by importance ({} heads, `{}`)",
        model.heads().len(),
        task.kind
    );
    for path in plot_sweep(&stem, &title, &points)? {
        println!("wrote {}", path.display());
    }
    Ok(())
}
