//! `tf import-marian`: a Hugging Face MarianMT model (an opus-mt translator) as a model
//! directory that every translation command reads.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use serde_json::Value;
use tf_model::{MarianConfig, import_marian};
use tf_train::data::marian_tokenizer::{self, MarianTokenizer};
use tf_train::data::task::SpecialIds;
use tf_train::data::translation::{TranslationTask, VocabularySource};
use tf_train::data::vocabulary::TranslationVocab;
use tf_train::{ModelDir, RunConfig, RunTask, TrainingConfig};

/// The files `MarianMTModel.save_pretrained` writes that the import reads.
const MODEL_CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const GENERATION_CONFIG: &str = "generation_config.json";

#[derive(Args, Debug)]
pub struct ImportMarianArgs {
    /// What `MarianMTModel.save_pretrained` and `MarianTokenizer.save_pretrained` wrote:
    /// config.json, model.safetensors, source.spm, target.spm, vocab.json (a downloaded
    /// Helsinki-NLP/opus-mt-* snapshot holds them all).
    #[arg(long)]
    from: PathBuf,
    /// Model directory to write (must not hold a model yet).
    #[arg(long)]
    out: PathBuf,
    /// Source language, the corpus files' suffix [default: the tokenizer's `source_lang`].
    #[arg(long)]
    src: Option<String>,
    /// Target language [default: the tokenizer's `target_lang`].
    #[arg(long)]
    tgt: Option<String>,
    /// Corpus the translation commands read splits from (`SPLIT.LANG[.gz]` files).
    #[arg(long, env = "TF_MULTI30K", default_value = "data/multi30k")]
    data: PathBuf,
    /// Split that `tf length-penalty` and BLEU on held-out data read.
    #[arg(long, default_value = "val")]
    valid_split: String,
}

pub fn run(args: ImportMarianArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.out);
    dir.ensure_vacant()?;
    let from = &args.from;
    if !from.is_dir() {
        bail!("{} is not a directory", from.display());
    }
    let config_path = from.join(MODEL_CONFIG);
    let json: Value = serde_json::from_str(&read_text(&config_path)?)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let marian: MarianConfig = serde_json::from_value(json)
        .with_context(|| format!("{} is not a MarianMT configuration", config_path.display()))?;
    let model_config = marian
        .transformer()
        .with_context(|| format!("in {}", config_path.display()))?;
    let tokenizer = MarianTokenizer::load(from)?;
    let special = tokenizer.special_ids();
    let sizes = (tokenizer.source_vocab_size(), tokenizer.target_vocab_size());
    if sizes != (model_config.src_vocab, model_config.tgt_vocab) {
        bail!(
            "the tokenizer in {} has {} source and {} target ids, the model in {} {} and {}",
            from.display(),
            sizes.0,
            sizes.1,
            config_path.display(),
            model_config.src_vocab,
            model_config.tgt_vocab
        );
    }
    if (special.pad, special.eos) != (marian.pad_token_id, marian.eos_token_id)
        || marian.decoder_start() != marian.pad_token_id
    {
        bail!(
            "{} has pad {}, EOS {} and decoder start {}, the tokenizer pad {} and EOS {}: \
             MarianMT starts decoding from its pad token",
            config_path.display(),
            marian.pad_token_id,
            marian.eos_token_id,
            marian.decoder_start(),
            special.pad,
            special.eos
        );
    }
    let (src, tgt) = languages(from, args.src, args.tgt)?;
    // Training settings are ours (an imported model can be evaluated, inspected and pruned);
    // the length bounds follow the model's positions.
    let max_len = model_config.max_len.saturating_sub(2).max(1);
    let task = TranslationTask {
        data: args.data,
        src,
        tgt,
        train_split: "train".into(),
        valid_split: args.valid_split,
        vocab_size: sizes.0,
        max_len,
        batch_tokens: (max_len + 1).max(4096),
        vocabulary: VocabularySource::Marian {
            tgt_vocab_size: sizes.1,
            special: SpecialIds {
                pad: special.pad,
                bos: marian.decoder_start(),
                eos: special.eos,
                forbidden: forbidden_token(from, model_config.tgt_vocab)?,
            },
        },
    };
    let config = RunConfig {
        model: model_config,
        task: RunTask::Translation(task),
        training: TrainingConfig::default(),
    };
    config.validate()?;

    let weights_path = from.join(WEIGHTS);
    let weights = std::fs::read(&weights_path)
        .with_context(|| format!("cannot read {}", weights_path.display()))?;
    let imported = import_marian(&marian, &weights, device)
        .with_context(|| format!("importing {}", weights_path.display()))?;
    dir.save_model(&config, &imported.model)?;
    TranslationVocab::from(tokenizer).save(&args.out)?;
    println!(
        "imported {} ({} encoder + {} decoder layers, d_model {}, {} heads, {} + {} ids) into {}",
        from.display(),
        marian.encoder_layers,
        marian.decoder_layers,
        marian.d_model,
        marian.encoder_attention_heads,
        sizes.0,
        sizes.1,
        args.out.display()
    );
    for note in imported.notes {
        println!("note: {note}");
    }
    Ok(())
}

/// The one token `generation_config.json` forbids (`bad_words_ids: [[id]]`, opus-mt's pad), if
/// any; longer banned sequences cannot be represented and are refused.
fn forbidden_token(from: &Path, tgt_vocab: usize) -> Result<Option<usize>> {
    let path = from.join(GENERATION_CONFIG);
    if !path.is_file() {
        return Ok(None);
    }
    let config: Value = serde_json::from_str(&read_text(&path)?)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    let banned = match &config["bad_words_ids"] {
        Value::Null => return Ok(None),
        Value::Array(banned) => banned,
        other => bail!("{}: bad_words_ids is {other}, not a list", path.display()),
    };
    let ids: Vec<Option<u64>> = banned
        .iter()
        .map(|sequence| match sequence.as_array().map(Vec::as_slice) {
            Some([id]) => id.as_u64(),
            _ => None,
        })
        .collect();
    match ids.as_slice() {
        [] => Ok(None),
        [Some(id)] if (*id as usize) < tgt_vocab => Ok(Some(*id as usize)),
        _ => bail!(
            "{}: bad_words_ids {} is not one token of the target vocabulary; only a single \
             forbidden token is supported",
            path.display(),
            config["bad_words_ids"]
        ),
    }
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The languages given, else those the tokenizer's configuration names.
fn languages(from: &Path, src: Option<String>, tgt: Option<String>) -> Result<(String, String)> {
    let path = from.join(marian_tokenizer::TOKENIZER_CONFIG);
    let config: Value = if path.is_file() {
        serde_json::from_str(&read_text(&path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?
    } else {
        Value::Null
    };
    let named = |given: Option<String>, key: &str, flag: &str| match given {
        Some(lang) => Ok(lang),
        None => match config[key].as_str() {
            Some(lang) if !lang.is_empty() => Ok(lang.to_string()),
            _ => bail!(
                "{} names no {key}: give the language with {flag} (the corpus files' suffix, \
                 such as de)",
                path.display()
            ),
        },
    };
    Ok((
        named(src, "source_lang", "--src")?,
        named(tgt, "target_lang", "--tgt")?,
    ))
}
