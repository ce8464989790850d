//! `tf lens`: the logit lens of the decoder on one input: what each layer would predict, and the
//! rank of the finally chosen token at each layer and position.

use std::path::PathBuf;

use anyhow::Result;
use burn::tensor::Device;
use clap::Args;
use tf_inspect::logit_lens::logit_lens;
use tf_inspect::tokens::Tokens;
use tf_train::store::atomic::write_atomic;

use crate::commands::codec::load_inspected;

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
    let (model, codec) = load_inspected(&args.model, device)?;
    let (source, target) = codec.source_and_target(&model, &args.input, args.target.as_deref())?;
    let lens = logit_lens(
        &model,
        &source,
        target.as_deref(),
        codec.max_output(&model, source.len()),
        Tokens {
            special: codec.special_ids(),
            source: &|id| codec.source_label(id),
            target: &|id| codec.label(id),
        },
        device,
    )?;
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
