//! `tf translate`: sentences in, translations out, one a line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use tf_model::{DEFAULT_ALPHA, DEFAULT_BEAM};
use tf_train::ModelDir;
use tf_train::data::translation::VocabularySource;
use tf_train::eval::length_penalty::check_alphas;
use tf_train::eval::translate::{TranslateOptions, translate};
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;

/// `generate`'s default `length_penalty`, which an imported MarianMT model decodes with.
const TRANSFORMERS_LENGTH_PENALTY: f64 = 1.0;

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
    #[arg(long, default_value_t = DEFAULT_BEAM)]
    beam: usize,
    /// Length penalty exponent alpha of GNMT's ((5 + length) / 6)^alpha, or of length^alpha
    /// for an imported MarianMT model (transformers' length_penalty) [default: the one chosen
    /// for the model on its validation split (DIR/length_penalty.json, written by `tf train`
    /// and `tf length-penalty`), else 0.6, or 1 as generate's for a MarianMT model].
    #[arg(long)]
    alpha: Option<f64>,
    /// Sentences decoded together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
}

pub fn run(args: TranslateArgs, device: &Device) -> Result<()> {
    if args.beam == 0 || args.batch_size == 0 {
        bail!("--beam and --batch-size must be at least 1");
    }
    if let Some(alpha) = args.alpha {
        check_alphas(&[alpha]).context("--alpha")?;
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    config.task.translation()?;
    let vocab = dir.load_vocabulary()?;
    let alpha = match args.alpha {
        Some(alpha) => alpha,
        None if args.beam > 1 => models_alpha(&dir)?,
        None => DEFAULT_ALPHA, // greedy decoding has no use for it
    };
    let lines = read_input_lines(args.input.as_deref())?;
    let options = TranslateOptions {
        batch_sentences: args.batch_size,
        ..TranslateOptions::beam(args.beam, alpha)
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

/// The length penalty chosen for the model's weights, else the paper's, or `transformers`'
/// default for an imported MarianMT model (with a warning when the choice on record was made for
/// other weights).
pub fn models_alpha(dir: &ModelDir) -> Result<f64> {
    if let Some(choice) = dir.length_penalty()? {
        return Ok(choice.alpha);
    }
    let imported = matches!(
        dir.load_config()?.task.translation()?.vocabulary,
        VocabularySource::Marian { .. }
    );
    if imported {
        return Ok(TRANSFORMERS_LENGTH_PENALTY);
    }
    if dir.has_length_penalty_record() {
        eprintln!(
            "warning: {}'s length penalty was chosen for other weights; decoding with α \
             {DEFAULT_ALPHA} (`tf length-penalty --model {}` chooses again)",
            dir.path().display(),
            dir.path().display()
        );
    }
    Ok(DEFAULT_ALPHA)
}
