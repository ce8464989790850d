//! `tf heads`: per-head statistics and importance over samples of a synthetic task.

use std::path::PathBuf;

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_inspect::head_stats::{format_csv, format_table, head_statistics};
use tf_inspect::importance::head_importance;
use tf_train::ModelDir;
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;

use crate::commands::EVAL_SEED;

#[derive(Args, Debug)]
pub struct HeadsArgs {
    /// Model directory written by `tf train` on a synthetic task.
    #[arg(long)]
    model: PathBuf,
    /// Task samples to measure over (teacher-forced).
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Seed of the samples.
    #[arg(long, default_value_t = EVAL_SEED)]
    seed: u64,
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

pub fn run(args: HeadsArgs, device: &Device) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let task = config.task.synthetic()?;
    let examples = task.samples(args.samples, args.seed);
    let mut stats = head_statistics(&model, task, &examples, args.batch_size, device);
    if !args.no_importance {
        let gradient_device = device.clone().autodiff();
        let (_, model) = dir.load_model(&gradient_device, Dropout::Off)?;
        for (s, i) in stats
            .iter_mut()
            .zip(head_importance(&model, &examples, &gradient_device))
        {
            s.importance = Some(i.normalized);
        }
    }
    println!(
        "{} heads over {} samples of `{}` (seed {}); importance normalized per block",
        stats.len(),
        examples.len(),
        task.kind,
        args.seed
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
