//! `tf predict`: a synthetic-task model's output for each input sequence.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_model::Transformer;
use tf_train::eval::accuracy::predict;
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, Task};

use crate::args::read_input_lines;

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Model directory written by `tf train` on a synthetic task.
    #[arg(long)]
    model: PathBuf,
    /// Input sequences, e.g. "3 1 4 1 5"; none = read one per line from stdin.
    sequences: Vec<String>,
}

/// Sequences decoded together.
const BATCH: usize = 256;

pub fn run(args: PredictArgs, device: &Device) -> Result<()> {
    let (config, model) = ModelDir::new(&args.model).load_model(device, Dropout::AsConfigured)?;
    let task = config.task.synthetic()?;
    let lines = if args.sequences.is_empty() {
        read_input_lines(None)?
    } else {
        args.sequences
    };
    // Every line gets its answer or its error, in order: a bad line does not cost the others.
    let parsed: Vec<Result<Vec<usize>>> = lines
        .iter()
        .map(|line| parse_input(task, &model, line))
        .collect();
    let sources: Vec<Vec<usize>> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok())
        .cloned()
        .collect();
    let mut predictions = predict(&model, &sources, model.max_len(), BATCH, device)?.into_iter();
    let mut failed = 0;
    for (number, result) in parsed.iter().enumerate() {
        match result {
            Ok(_) => {
                let prediction = predictions.next().expect("one prediction per good input");
                println!("{}", task.format(&prediction));
            }
            Err(err) => {
                failed += 1;
                println!();
                eprintln!("error: input {}: {err:#}", number + 1);
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} inputs could not be read (their output lines are empty)",
            lines.len()
        );
    }
    Ok(())
}

/// One input sequence as token ids, refusing unknown symbols, empty sequences and sources
/// longer than the model takes ([`Transformer::max_source_len`], the limit `tf translate`
/// cuts at).
pub fn parse_input(task: &Task, model: &Transformer, line: &str) -> Result<Vec<usize>> {
    let ids = task.parse(line).with_context(|| format!("{line:?}"))?;
    ensure_source_fits(model, &ids, "symbols")?;
    Ok(ids)
}

/// Refuses an empty source and one longer than the model takes
/// ([`Transformer::max_source_len`]); `unit` names what the source is made of.
pub fn ensure_source_fits(model: &Transformer, source: &[usize], unit: &str) -> Result<()> {
    if source.is_empty() {
        bail!("empty input: no {unit}");
    }
    if source.len() > model.max_source_len() {
        bail!(
            "{} {unit}, but this model handles at most {}",
            source.len(),
            model.max_source_len()
        );
    }
    Ok(())
}
