//! `tf eval`: exact match and token accuracy on fresh samples of a synthetic task.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_train::ModelDir;
use tf_train::eval::accuracy::accuracy;
use tf_train::store::model_dir::Dropout;

use crate::commands::EVAL_SEED;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Model directory written by `tf train` on a synthetic task.
    #[arg(long)]
    model: PathBuf,
    /// Fresh sequences to evaluate on.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Seed of the evaluation samples (different from training's by default).
    #[arg(long, default_value_t = EVAL_SEED)]
    seed: u64,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
}

pub fn run(args: EvalArgs, device: &Device) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let (config, model) = ModelDir::new(&args.model).load_model(device, Dropout::AsConfigured)?;
    let task = config.task.synthetic()?;
    let examples = task.samples(args.samples, args.seed);
    let accuracy = accuracy(&model, &examples, task.max_len + 1, args.batch_size, device)?;
    println!(
        "task {} (symbols {}, lengths {}..={}), {} fresh samples (seed {})",
        task.kind, task.n_symbols, task.min_len, task.max_len, accuracy.sequences, args.seed
    );
    println!("exact match     {:.4}", accuracy.exact_match);
    println!("token accuracy  {:.4}", accuracy.token_accuracy);
    Ok(())
}
