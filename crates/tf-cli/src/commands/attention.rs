//! `tf attention`: decode one input and draw every layer's and head's attention.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use clap::Args;
use tf_inspect::attention_maps::AttentionMaps;
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, RunTask};

use crate::commands::predict::{ensure_source_fits, parse_input};

#[derive(Args, Debug)]
pub struct AttentionArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// The input: a sequence such as "3 1 4 1 5", or a sentence for a translation model.
    input: String,
    /// Directory to write the pictures and attention.json into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: AttentionArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let max_len = model.max_len();
    let maps = match &config.task {
        RunTask::Synthetic(task) => {
            let source = parse_input(task, &model, &args.input)?;
            AttentionMaps::capture(&model, &source, max_len, |id| task.token_label(id), device)?
        }
        RunTask::Translation(_) => {
            let vocab = dir.load_vocabulary()?;
            let source = vocab.encode(&args.input)?;
            ensure_source_fits(&model, &source, "tokens")?;
            AttentionMaps::capture(&model, &source, max_len, |id| vocab.token(id), device)?
        }
    };
    let written = maps.write(&args.out)?;
    println!("input   {}", maps.source.join(" "));
    println!("output  {}", maps.output.join(" "));
    println!(
        "wrote {} files into {} (per head: encoder-self/, decoder-self/, cross/; grids: encoder-self.png, decoder-self.png, cross.png; weights: attention.json)",
        written.len(),
        args.out.display()
    );
    Ok(())
}
