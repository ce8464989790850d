//! `tf import-torch`: a PyTorch `nn.Transformer` state dict as a model directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_model::{TorchModuleConfig, import_transformer};
use tf_train::{ModelDir, RunConfig, TrainingConfig};

use crate::args::TaskArgs;

#[derive(Args, Debug)]
pub struct ImportTorchArgs {
    /// The state dict, as `safetensors.torch.save_file(model.state_dict(), PATH)` writes it.
    #[arg(long)]
    state_dict: PathBuf,
    /// The module's arguments as JSON: {"kind": "transformer", "d_model": .., "nhead": .., ...}.
    #[arg(long)]
    config: PathBuf,
    /// Model directory to write (must not hold a model yet).
    #[arg(long)]
    out: PathBuf,
    /// The task whose vocabulary the model reads and writes.
    #[command(flatten)]
    task: TaskArgs,
    /// Seed of the parameters the file does not hold (the embeddings, if absent).
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run(args: ImportTorchArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.out);
    dir.ensure_vacant()?;
    let json = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let torch = match serde_json::from_str(&json)
        .with_context(|| format!("{} is not a module description", args.config.display()))?
    {
        TorchModuleConfig::Transformer(torch) => torch,
        TorchModuleConfig::Mha(_) => bail!(
            "{} describes an nn.MultiheadAttention; a model directory needs an nn.Transformer \
             (import attention alone with tf_model::import_multi_head_attention)",
            args.config.display()
        ),
    };
    let state_dict = std::fs::read(&args.state_dict)
        .with_context(|| format!("cannot read {}", args.state_dict.display()))?;
    let task = args.task.synthetic()?;
    let model_config = torch
        .transformer(task.vocab_size(), task.vocab_size())?
        .with_max_len(task.max_len + 1);
    let config = RunConfig {
        model: model_config,
        task: task.into(),
        training: TrainingConfig::default(),
    };
    config.validate()?;
    device.seed(args.seed);
    let imported = import_transformer(&torch, &config.model, &state_dict, device)
        .with_context(|| format!("importing {}", args.state_dict.display()))?;
    dir.save_model(&config, &imported.module)?;
    println!(
        "imported {} ({} encoder + {} decoder layers, d_model {}, {} heads) into {}",
        args.state_dict.display(),
        torch.num_encoder_layers,
        torch.num_decoder_layers,
        torch.d_model,
        torch.nhead,
        args.out.display()
    );
    if !imported.left_as_initialised.is_empty() {
        println!(
            "note: the file has no {}: the model keeps freshly initialised ones (seed {}), so its \
             outputs mean nothing until they are trained or imported",
            imported.left_as_initialised.join(" or "),
            args.seed
        );
    }
    Ok(())
}
