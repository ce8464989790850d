//! `tf translate`: sentences in, translations out, one a line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_train::ModelDir;
use tf_train::eval::translate::{TranslateOptions, translate};
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;

use crate::args::read_input_lines;
use crate::progress;

#[derive(Args, Debug)]
pub struct TranslateArgs {
    /// Model directory written by `tf train --task translation`.
    #[arg(long)]
    model: PathBuf,
    /// Source sentences, one a line (gunzipped if the name ends in .gz) [default: stdin].
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where the translations go, one a line, line N for input line N [default: stdout].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Beams per sentence (1 = greedy decoding).
    #[arg(long, default_value_t = 5)]
    beam: usize,
    /// Length penalty exponent alpha of GNMT's ((5 + length) / 6)^alpha.
    #[arg(long, default_value_t = 0.6)]
    alpha: f64,
    /// Sentences decoded together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

pub fn run(args: TranslateArgs, device: &Device) -> Result<()> {
    if args.beam == 0 || args.batch_size == 0 {
        bail!("--beam and --batch-size must be at least 1");
    }
    if !(args.alpha.is_finite() && args.alpha >= 0.0) {
        bail!("--alpha must be a non-negative number, got {}", args.alpha);
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    config.task.translation()?;
    let vocab = dir.load_vocabulary()?;
    let lines = read_input_lines(args.input.as_deref())?;
    let options = TranslateOptions {
        batch_sentences: args.batch_size,
        ..TranslateOptions::beam(args.beam, args.alpha)
    };
    let bar = progress::bar(lines.len() as u64);
    let translations = translate(&model, &vocab, &lines, &options, device, |n| {
        bar.inc(n as u64)
    })?;
    bar.finish_and_clear();
    for line in &translations.truncated {
        eprintln!(
            "warning: line {} has more than the model's {} tokens; translated its beginning",
            line + 1,
            model.max_source_len()
        );
    }
    let mut text = String::new();
    for sentence in &translations.sentences {
        text.push_str(sentence);
        text.push('\n');
    }
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => std::io::stdout()
            .lock()
            .write_all(text.as_bytes())
            .context("cannot write stdout")?,
    }
    Ok(())
}
