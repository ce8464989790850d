//! `tf export-marian`: a translation model directory as what `MarianMTModel.save_pretrained`
//! writes, for `transformers` (`MarianMTModel.from_pretrained`, `AutoTokenizer.from_pretrained`)
//! to load and translate with as `tf translate --beam 1` does.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::Args;
use serde_json::{Value, json};
use tf_model::TransformerConfig;
use tf_model::marian_export::{MarianTokenIds, export_marian};
use tf_train::ModelDir;
use tf_train::data::subword::SPECIAL_TOKENS;
use tf_train::data::vocabulary::TranslationVocab;
use tf_train::store::atomic::write_atomic;
use tf_train::store::model_dir::Dropout;

#[derive(Args, Debug)]
pub struct ExportMarianArgs {
    /// Model directory written by `tf train --task translation` (or `tf import-marian`).
    #[arg(long)]
    model: PathBuf,
    /// Directory to write the MarianMT files into (created; must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ExportMarianArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device, Dropout::AsConfigured)?;
    config.task.translation()?;
    let vocab = dir.load_vocabulary()?;
    let special = vocab.special_ids();
    let ids = MarianTokenIds {
        pad: special.pad,
        decoder_start: special.bos,
        eos: special.eos,
    };
    let exported = export_marian(&config.model, &model, ids)
        .with_context(|| format!("exporting {}", args.model.display()))?;
    ensure_empty(&args.out)?;

    // Beam search ranks differently in `generate` (length^α, not GNMT's penalty), so the
    // exported defaults are those that decode exactly as here: greedy, up to the positions, EOS
    // forced at the limit only where the model was made to (an imported MarianMT model).
    let forced_eos = match &vocab {
        TranslationVocab::Learned(_) => Value::Null,
        TranslationVocab::Marian { .. } => json!(special.eos),
    };
    // `tf translate` stops within the model's positions; `generate` counts the start token too.
    let max_length = config.model.max_len + 1;
    let mut model_config = serde_json::to_value(&exported.config)?;
    let fields = model_config
        .as_object_mut()
        .expect("a configuration serialises to an object");
    for (key, value) in [
        ("architectures", json!(["MarianMTModel"])),
        ("is_encoder_decoder", json!(true)),
        ("forced_eos_token_id", forced_eos.clone()),
        ("dtype", json!("float32")),
    ] {
        fields.insert(key.into(), value);
    }
    let generation = json!({
        "decoder_start_token_id": special.bos,
        "pad_token_id": special.pad,
        "eos_token_id": special.eos,
        "forced_eos_token_id": forced_eos,
        "bad_words_ids": special.forbidden.map(|id| json!([[id]])),
        "num_beams": 1,
        "max_length": max_length,
    });

    write_json(&args.out.join("config.json"), &model_config)?;
    write_json(&args.out.join("generation_config.json"), &generation)?;
    write_atomic(&args.out.join("model.safetensors"), &exported.safetensors)?;
    vocab.save(&args.out)?;
    if let TranslationVocab::Learned(_) = vocab {
        for (name, value) in fast_tokenizer_config(&config.model) {
            write_json(&args.out.join(name), &value)?;
        }
    }
    println!(
        "exported {} ({} encoder + {} decoder layers, d_model {}, {} heads) as MarianMT into {}",
        args.model.display(),
        exported.config.encoder_layers,
        exported.config.decoder_layers,
        exported.config.d_model,
        exported.config.encoder_attention_heads,
        args.out.display()
    );
    Ok(())
}

/// `tokenizer_config.json` and `special_tokens_map.json` that make `AutoTokenizer` load our
/// `tokenizer.json` as a `PreTrainedTokenizerFast`: our special tokens, no text clean-up (the
/// tokenizer's own decoder restores spaces), sources without EOS as the model was trained.
fn fast_tokenizer_config(model: &TransformerConfig) -> [(&'static str, Value); 2] {
    let [pad, bos, eos, unk] = SPECIAL_TOKENS;
    let tokens = json!({
        "pad_token": pad,
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": unk,
    });
    let mut config = tokens.clone();
    let fields = config.as_object_mut().expect("an object");
    fields.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    fields.insert("clean_up_tokenization_spaces".into(), json!(false));
    fields.insert("model_max_length".into(), json!(model.max_len));
    [
        ("tokenizer_config.json", config),
        ("special_tokens_map.json", tokens),
    ]
}

fn ensure_empty(out: &Path) -> Result<()> {
    if out.exists() {
        let mut entries = std::fs::read_dir(out)
            .with_context(|| format!("{} exists and is not a readable directory", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; export into a new directory",
                out.display()
            );
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    Ok(write_atomic(path, text.as_bytes())?)
}
