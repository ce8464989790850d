//! `tf attention`: decode one input and show every layer's and head's attention, as pictures
//! and JSON (`--out`) and as an interactive page (`--html`, with the decoding's attributions
//! beside the attention).

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use clap::Args;
use tf_inspect::attention_maps::AttentionMaps;
use tf_inspect::attribution::{AttributionMethod, attribute};
use tf_inspect::tokens::Tokens;
use tf_inspect::viewer::{ViewerAttribution, ViewerData, ViewerInfo, model_summary};
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, RunTask};

use crate::commands::attribute::Method;
use crate::commands::codec::Codec;

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
    /// Attribution methods the page shows beside the attention, comma-separated
    /// [default: every method but integrated-gradients].
    #[arg(long, value_enum, value_delimiter = ',', requires = "html")]
    attributions: Option<Vec<Method>>,
    /// A page without attributions.
    #[arg(long, conflicts_with = "attributions")]
    no_attributions: bool,
    /// Steps of integrated gradients, when the page shows them.
    #[arg(long, default_value_t = 32)]
    steps: usize,
}

pub fn run(args: AttentionArgs, device: &Device) -> Result<()> {
    let methods: Vec<AttributionMethod> = match (&args.html, &args.attributions) {
        (None, _) => Vec::new(),
        _ if args.no_attributions => Vec::new(),
        (Some(_), Some(chosen)) => chosen.iter().map(|m| m.with_steps(args.steps)).collect(),
        (Some(_), None) => Method::QUICK
            .iter()
            .map(|m| m.with_steps(args.steps))
            .collect(),
    };
    // Gradient attributions need the autodiff device; the weights are the same on it.
    let device = if methods.iter().any(AttributionMethod::needs_gradients) {
        device.clone().autodiff()
    } else {
        device.clone()
    };
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(&device, Dropout::Off)?;
    let codec = Codec::new(&dir, &config.task)?;
    let source = codec.source(&model, &args.input)?;
    // One fewer than the model's positions: the teacher-forced pass of the attributions puts
    // BOS before the whole output.
    let max_output = codec
        .max_output(&model, source.len())
        .min(model.max_len().saturating_sub(1));
    let tokens = Tokens {
        special: codec.special_ids(),
        source: &|id| codec.source_label(id),
        target: &|id| codec.label(id),
    };
    let maps = AttentionMaps::capture(&model, &source, max_output, tokens, &device)?;
    let output_text = codec.text(&maps.output_ids)?;
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
        let attributions = methods
            .iter()
            .map(|&method| {
                let attribution = attribute(
                    &model,
                    &source,
                    Some(&maps.output_ids),
                    max_output,
                    method,
                    tokens,
                    &device,
                )?;
                Ok(ViewerAttribution::new(method, &attribution))
            })
            .collect::<Result<Vec<_>>>()?;
        ViewerData::new(&maps, info)
            .with_attributions(attributions)
            .write(html)?;
        let shown: Vec<String> = methods.iter().map(|m| m.name().to_string()).collect();
        println!(
            "wrote {} (open it in a browser; attributions: {})",
            html.display(),
            if shown.is_empty() {
                "none".to_string()
            } else {
                shown.join(", ")
            }
        );
    }
    Ok(())
}
