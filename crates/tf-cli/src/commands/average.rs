//! `tf average`: the mean of a run's last checkpoints as a new model directory.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use clap::Args;
use tf_train::{ModelDir, RunTask};

#[derive(Args, Debug)]
pub struct AverageArgs {
    /// Model directory written by `tf train` (its checkpoints/).
    #[arg(long)]
    model: PathBuf,
    /// How many of the newest checkpoints to average.
    #[arg(long, default_value_t = 5)]
    last: usize,
    /// Model directory to write the averaged model to.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: AverageArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.model);
    let config = dir.load_config()?;
    let out = ModelDir::new(&args.out);
    out.ensure_vacant()?;
    let averaged = dir.average_checkpoints(args.last, device)?;
    out.save_model(&config, &averaged.model)?;
    if let RunTask::Translation(_) = config.task {
        dir.load_vocabulary()?.save(out.path())?;
    }
    println!(
        "averaged {} into {}",
        averaged.names.join(", "),
        args.out.display()
    );
    Ok(())
}
