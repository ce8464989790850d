//! `tf lens`: the logit lens of the decoder on one input: what each layer would predict, and the
//! rank of the finally chosen token at each layer and position.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use clap::Args;
use tf_inspect::logit_lens::logit_lens;
use tf_model::OutputLimit;
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, RunTask};

use crate::commands::predict::{ensure_source_fits, parse_input};

#[derive(Args, Debug)]
pub struct LensArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// The input: a sentence for a translation model, a sequence such as "3 1 4" for a
    /// synthetic task.
    input: String,
    /// The translation to read the layers along [default: the model's greedy one].
    #[arg(long)]
    target: Option<String>,
    /// Also write ranks, probabilities and top tokens as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

pub fn run(args: LensArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::Off)?;
    let lens = match &config.task {
        RunTask::Synthetic(task) => {
            let source = parse_input(task, &model, &args.input)?;
            let target = args.target.as_deref().map(|t| task.parse(t)).transpose()?;
            let label = |id| task.token_label(id);
            logit_lens(
                &model,
                &source,
                target.as_deref(),
                model.max_len(),
                label,
                device,
            )?
        }
        RunTask::Translation(_) => {
            let vocab = dir.load_vocabulary()?;
            let source = vocab.encode(&args.input)?;
            ensure_source_fits(&model, &source, "tokens")?;
            let target = args
                .target
                .as_deref()
                .map(|t| vocab.encode(t))
                .transpose()?;
            let max_output = OutputLimit::default().clamped(source.len(), model.max_len());
            let label = |id| vocab.token(id);
            logit_lens(
                &model,
                &source,
                target.as_deref(),
                max_output,
                label,
                device,
            )?
        }
    };
    println!("input   {}", lens.source.join(" "));
    println!(
        "rank of the chosen token : the layer's own top token\n{}",
        lens.table()
    );
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&lens)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
