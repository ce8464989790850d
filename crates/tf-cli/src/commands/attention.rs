//! `tf attention`: decode one input and show every layer's and head's attention, as pictures
//! and JSON (`--out`) and as an interactive page (`--html`).

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use clap::Args;
use tf_inspect::attention_maps::AttentionMaps;
use tf_inspect::viewer::{ViewerData, ViewerInfo, model_summary};
use tf_model::OutputLimit;
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
    /// Directory to write the pictures and attention.json into (created if missing)
    /// [default: MODEL/attention, unless only --html is given].
    #[arg(long)]
    out: Option<PathBuf>,
    /// An interactive page to write: one self-contained HTML file (head view, model view,
    /// alignment matrix, SVG export) that opens from disk with no network.
    #[arg(long)]
    html: Option<PathBuf>,
}

pub fn run(args: AttentionArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let max_len = model.max_len();
    let (maps, output_text) = match &config.task {
        RunTask::Synthetic(task) => {
            let source = parse_input(task, &model, &args.input)?;
            let maps = AttentionMaps::capture(
                &model,
                &source,
                max_len,
                |id| task.token_label(id),
                device,
            )?;
            let text = task.format(&maps.output_ids);
            (maps, text)
        }
        RunTask::Translation(_) => {
            let vocab = dir.load_vocabulary()?;
            let source = vocab.encode(&args.input)?;
            ensure_source_fits(&model, &source, "tokens")?;
            // A translation's output is limited by its source's length, as in `tf translate`.
            let max_output = OutputLimit::default().clamped(source.len(), max_len);
            let maps =
                AttentionMaps::capture(&model, &source, max_output, |id| vocab.token(id), device)?;
            let text = vocab.decode(&maps.output_ids)?;
            (maps, text)
        }
    };
    println!("input   {}", maps.source.join(" "));
    println!("output  {}", maps.output.join(" "));
    let out = match (&args.out, &args.html) {
        (Some(out), _) => Some(out.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(args.model.join("attention")),
    };
    if let Some(out) = &out {
        let written = maps.write(out)?;
        println!(
            "wrote {} files into {} (per head: encoder-self/, decoder-self/, cross/; grids: encoder-self.png, decoder-self.png, cross.png; weights: attention.json)",
            written.len(),
            out.display()
        );
    }
    if let Some(html) = &args.html {
        let info = ViewerInfo {
            title: format!("Attention of {}", args.model.display()),
            model: model_summary(&config),
            translation: matches!(config.task, RunTask::Translation(_)),
            source_text: args.input.clone(),
            output_text,
        };
        ViewerData::new(&maps, info).write(html)?;
        println!("wrote {} (open it in a browser)", html.display());
    }
    Ok(())
}
