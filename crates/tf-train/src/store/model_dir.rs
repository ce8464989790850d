//! The model directory: its configuration, the weights the other commands load, the best-model
//! record and the vocabulary of a translation model. Checkpoints ([`checkpoint`](super::checkpoint))
//! and averaging ([`average`](super::average)) are in files of their own.
//!
//! ```text
//! DIR/config.json                 RunConfig: model, task and training settings
//! DIR/model.bpk(.sha256)          the weights predict/eval/translate load: the newest
//!                                 checkpoint's, or for translation the best by validation BLEU
//! DIR/best.json                   translation: the step and BLEU of model.bpk
//! DIR/tokenizer.json              translation: the subword vocabulary (Hugging Face format)
//! DIR/length_penalty.json         translation: the beam search α chosen on held-out data for
//!                                 the weights in model.bpk (their SHA-256 inside)
//! DIR/metrics.csv                 one row per logged training step and validation
//! DIR/latest                      name of the newest complete checkpoint
//! DIR/checkpoints/step-NNNNNNNN/  model.bpk, optimizer.bpk, state.json
//! ```
//!
//! Every file is written atomically ([`write_atomic`]); each weights file has its SHA-256
//! beside it (`model.bpk.sha256`, [`checksum`](super::checksum)), checked on load.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tf_model::{Transformer, TransformerConfig};

use crate::data::marian_tokenizer::MarianTokenizer;
use crate::data::subword::SubwordVocab;
use crate::data::translation::VocabularySource;
use crate::data::vocabulary::TranslationVocab;
use crate::error::{self, Error, Result, ResultExt, bail};
use crate::eval::length_penalty::LengthPenalty;
use crate::store::atomic::write_atomic;
use crate::store::checksum::{read_verified, sha256_hex, write_with_checksum};
use crate::training::config::RunConfig;

/// Name of the run's configuration file.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the weights file (in the directory and in each checkpoint).
pub const MODEL_FILE: &str = "model.bpk";
/// Name of the subword vocabulary of a translation model.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
const BEST_FILE: &str = "best.json";
const LENGTH_PENALTY_FILE: &str = "length_penalty.json";
const METRICS_FILE: &str = "metrics.csv";
const LOCK_FILE: &str = ".lock";

/// Which weights `model.bpk` holds in a translation run: the best by validation BLEU.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestModel {
    /// The step they are from.
    pub step: usize,
    /// Their validation BLEU.
    pub bleu: f64,
    /// The checkpoints whose mean they are, when they are an average (else empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub averaged: Vec<String>,
}

/// A model directory held for one writer ([`ModelDir::lock`]); dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

/// Whether a loaded model keeps the dropout its configuration asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropout {
    /// As configured (what training resumes with; inference models ignore dropout anyway).
    AsConfigured,
    /// Every dropout at 0: gradients that do not depend on chance (head importance).
    Off,
}

/// The model directory of one run.
#[derive(Clone, Debug)]
pub struct ModelDir {
    pub(crate) root: PathBuf,
}

impl ModelDir {
    /// The directory at `root` (not created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The metrics log's path.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(METRICS_FILE)
    }

    /// The subword vocabulary's path (translation models).
    pub fn tokenizer_path(&self) -> PathBuf {
        self.root.join(TOKENIZER_FILE)
    }

    /// Loads the vocabulary of a translation model: learned here (`tokenizer.json`), or the
    /// MarianMT tokenizer imported with it.
    pub fn load_vocabulary(&self) -> Result<TranslationVocab> {
        let config = self.load_config()?;
        Ok(match config.task.translation()?.vocabulary {
            VocabularySource::Learned => self.load_learned_vocabulary()?.into(),
            VocabularySource::Marian { special, .. } => {
                TranslationVocab::marian(MarianTokenizer::load(&self.root)?, special)
            }
        })
    }

    /// Loads the subword vocabulary learned for a translation model (`tokenizer.json`).
    pub fn load_learned_vocabulary(&self) -> Result<SubwordVocab> {
        let path = self.tokenizer_path();
        if !path.is_file() {
            bail!(
                "{} has no {TOKENIZER_FILE}: a translation model directory needs the vocabulary \
                 it was trained with",
                self.root.display()
            );
        }
        SubwordVocab::load(&path)
    }

    /// Whether a run's configuration is there.
    pub fn has_config(&self) -> bool {
        self.root.join(CONFIG_FILE).is_file()
    }

    /// Succeeds when no model is there yet, so that nothing of one is overwritten: the one
    /// check every command that writes a new model directory makes.
    pub fn ensure_vacant(&self) -> Result<()> {
        if self.has_config() {
            bail!(
                "{} already holds a model; choose another directory (or continue its training \
                 with `tf train --resume --out {}`)",
                self.root.display(),
                self.root.display()
            );
        }
        Ok(())
    }

    /// Takes the directory for one writer (creating it): the lock lasts as long as the returned
    /// value, and is released by the operating system when the program ends however it ends.
    ///
    /// # Errors
    /// If another process holds it (a second `tf train` on the same directory).
    pub fn lock(&self) -> Result<RunLock> {
        error::create_dir_all(&self.root)?;
        let path = self.root.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|err| Error::io("open", &path, err))?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::invalid(format!(
                "another program is writing to {} (it holds {}): wait for it to finish, or \
                 choose another directory",
                self.root.display(),
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(err)) => Err(Error::io("lock", &path, err)),
        }
    }

    /// Writes the run's configuration (creating the directory).
    pub fn save_config(&self, config: &RunConfig) -> Result<()> {
        error::create_dir_all(&self.root)?;
        let json = serde_json::to_string_pretty(config)?;
        write_atomic(&self.root.join(CONFIG_FILE), json.as_bytes())
    }

    /// Reads and checks the run's configuration; files written by earlier versions (flat layer
    /// settings, model fields added since) still load.
    pub fn load_config(&self) -> Result<RunConfig> {
        let path = self.root.join(CONFIG_FILE);
        if !path.is_file() {
            bail!(
                "{} is not a model directory: {} is missing (train one with `tf train --out {}`)",
                self.root.display(),
                CONFIG_FILE,
                self.root.display()
            );
        }
        let text = error::read_to_string(&path)?;
        let invalid =
            |err: serde_json::Error| Error::format(&path, "is not a valid run configuration", err);
        let json: Value = serde_json::from_str(&text).map_err(invalid)?;
        let config: RunConfig =
            serde_json::from_value(upgrade_model_config(json)).map_err(invalid)?;
        config
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    /// Loads the trained model (`model.bpk`) on `device`.
    pub fn load_model(
        &self,
        device: &Device,
        dropout: Dropout,
    ) -> Result<(RunConfig, Transformer)> {
        let config = self.load_config()?;
        let model_config = match dropout {
            Dropout::AsConfigured => config.model.clone(),
            Dropout::Off => config.model.clone().without_dropout(),
        };
        let model = load_weights(model_config.init(device), &self.root.join(MODEL_FILE))?;
        Ok((config, model))
    }

    /// Writes a model directory that holds `model` alone, without checkpoints: the
    /// configuration, then the weights (what `tf import-torch`, `tf average` and `tf prune`
    /// write).
    pub fn save_model(&self, config: &RunConfig, model: &Transformer) -> Result<()> {
        self.save_config(config)?;
        write_with_checksum(&self.root.join(MODEL_FILE), &weights_bytes(model)?)
    }

    /// Makes `model` the directory's weights (`model.bpk`), recording its step and BLEU in
    /// `best.json`.
    pub fn save_best(&self, model: &Transformer, best: &BestModel) -> Result<()> {
        write_with_checksum(&self.root.join(MODEL_FILE), &weights_bytes(model)?)?;
        write_atomic(
            &self.root.join(BEST_FILE),
            serde_json::to_string_pretty(best)?.as_bytes(),
        )
    }

    /// The best model so far, if the run records one.
    pub fn best(&self) -> Result<Option<BestModel>> {
        let path = self.root.join(BEST_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = error::read_to_string(&path)?;
        let best = serde_json::from_str(&text)
            .map_err(|err| Error::format(&path, "is not a best-model record", err))?;
        Ok(Some(best))
    }

    /// SHA-256 of the directory's weights file as it is now.
    pub fn weights_sha256(&self) -> Result<String> {
        Ok(sha256_hex(&error::read(&self.root.join(MODEL_FILE))?))
    }

    /// Records the length penalty chosen for the directory's weights
    /// (`choice.weights_sha256` says which).
    pub fn save_length_penalty(&self, choice: &LengthPenalty) -> Result<()> {
        write_atomic(
            &self.root.join(LENGTH_PENALTY_FILE),
            serde_json::to_string_pretty(choice)?.as_bytes(),
        )
    }

    /// Whether a length penalty was recorded, for these weights or earlier ones.
    pub fn has_length_penalty_record(&self) -> bool {
        self.root.join(LENGTH_PENALTY_FILE).is_file()
    }

    /// The length penalty chosen for the weights the directory holds now: `None` when none was
    /// chosen, or when the weights changed after it was (a resumed run's new best, say).
    pub fn length_penalty(&self) -> Result<Option<LengthPenalty>> {
        let path = self.root.join(LENGTH_PENALTY_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = error::read_to_string(&path)?;
        let choice: LengthPenalty = serde_json::from_str(&text)
            .map_err(|err| Error::format(&path, "is not a length penalty record", err))?;
        Ok((choice.weights_sha256 == self.weights_sha256()?).then_some(choice))
    }
}

/// The settings every encoder and decoder layer shares, which `config.json` files of earlier
/// versions kept flat in `model` beside its other fields.
const LAYER_SETTINGS: [&str; 8] = [
    "d_model",
    "n_heads",
    "d_ff",
    "dropout",
    "attention_dropout",
    "activation",
    "norm_position",
    "layer_norm_eps",
];

/// `json`'s `model` as `TransformerConfig` reads it now: flat layer settings moved into
/// `model.layer` ([`nest_layer_settings`]), and every model or layer field the file does not
/// have set to its default. A field is only ever added with the default that keeps earlier
/// models as they were (`scale_embedding` true, `output_bias` false), so a file that predates
/// it means that default; burn's `Config` derive would otherwise refuse the file.
fn upgrade_model_config(json: Value) -> Value {
    let mut json = nest_layer_settings(json);
    let Some(model) = json.get_mut("model").and_then(Value::as_object_mut) else {
        return json;
    };
    let defaults = match serde_json::to_value(TransformerConfig::new(1, 1)) {
        Ok(Value::Object(defaults)) => defaults,
        _ => return json,
    };
    for (name, default) in defaults {
        match (model.get_mut(&name), default) {
            (None, default) => {
                model.insert(name, default);
            }
            (Some(Value::Object(layer)), Value::Object(layer_defaults)) if name == "layer" => {
                for (name, default) in layer_defaults {
                    layer.entry(name).or_insert(default);
                }
            }
            _ => {}
        }
    }
    json
}

/// Moves flat layer settings of `model` into `model.layer`, where `TransformerConfig` keeps
/// them; a file that already nests them is returned as it is.
fn nest_layer_settings(mut json: Value) -> Value {
    if let Some(model) = json.get_mut("model").and_then(Value::as_object_mut)
        && !model.contains_key("layer")
    {
        let layer: serde_json::Map<String, Value> = LAYER_SETTINGS
            .iter()
            .filter_map(|&name| Some((name.to_string(), model.remove(name)?)))
            .collect();
        model.insert("layer".into(), Value::Object(layer));
    }
    json
}

/// The weights of `model` as burn's record bytes.
pub(crate) fn weights_bytes(model: &Transformer) -> Result<Bytes> {
    Ok(model.clone().into_record().into_bytes()?)
}

/// `model` with the weights of `source` (on `model`'s device), refusing weights that do not fit.
pub(crate) fn copy_weights(source: &Transformer, model: Transformer) -> Result<Transformer> {
    let record = ModuleRecord::from_bytes(weights_bytes(source)?)
        .map_err(|err| Error::Training(format!("cannot read the weights back: {err:?}")))?;
    model.try_load_record(record).map_err(|err| {
        Error::Training(format!(
            "the weights do not fit the model's configuration: {err:?}"
        ))
    })
}

/// Loads weights from `path` into `model`, refusing missing, extra or mis-shaped tensors.
pub(crate) fn load_weights(model: Transformer, path: &Path) -> Result<Transformer> {
    let bytes = read_verified(path)?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|err| Error::format(path, "is not a weights file", format!("{err:?}")))?;
    model.try_load_record(record).map_err(|err| {
        Error::format(
            path,
            "does not fit the model in config.json",
            format!("{err:?}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_dir;

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let err = ModelDir::new("/nonexistent/run").load_config().unwrap_err();
        assert!(
            err.to_string().contains("is not a model directory"),
            "{err}"
        );
    }

    /// `config.json` exactly as the program wrote it before `TransformerConfig` nested its
    /// layer settings: `tf train --task reverse` and `tf train --task translation` with
    /// default flags.
    const FLAT_CONFIG: &str = include_str!("../../tests/fixtures/config-flat-layer.json");
    const FLAT_TRANSLATION_CONFIG: &str =
        include_str!("../../tests/fixtures/config-flat-layer-translation.json");

    #[test]
    fn configs_with_flat_layer_settings_still_load() {
        let dir = temp_dir("flat-config");
        for (json, expected) in [
            (FLAT_CONFIG, (128, 4, 512, 2, 13)),
            (FLAT_TRANSLATION_CONFIG, (256, 4, 1024, 3, 166)),
        ] {
            std::fs::write(dir.join(CONFIG_FILE), json).unwrap();
            let config = ModelDir::new(&dir).load_config().unwrap();
            let (model, layer) = (&config.model, &config.model.layer);
            assert_eq!(
                (
                    layer.d_model,
                    layer.n_heads,
                    layer.d_ff,
                    model.n_encoder_layers,
                    model.max_len
                ),
                expected
            );
            assert_eq!((layer.dropout, layer.layer_norm_eps), (0.1, 1e-5));
            // Fields added since take the defaults that keep the model as it was.
            assert!(model.scale_embedding && !model.output_bias);
            // Saved again, it is nested, and loads to the same configuration.
            ModelDir::new(&dir).save_config(&config).unwrap();
            let saved = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
            assert!(saved.contains("\"layer\""), "{saved}");
            let reloaded = ModelDir::new(&dir).load_config().unwrap();
            assert_eq!(reloaded.model.to_string(), config.model.to_string());
            assert_eq!(reloaded.task, config.task);
            assert_eq!(reloaded.training, config.training);
        }
        let translation = ModelDir::new(&dir).load_config().unwrap();
        assert_eq!(translation.training.epochs, Some(20));
        assert_eq!(translation.task.translation().unwrap().vocab_size, 8000);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_config_says_what_is_wrong() {
        let dir = temp_dir("corrupt-config");
        let broken = FLAT_CONFIG.replace("\"kind\": \"reverse\"", "\"kind\": \"rotate\"");
        std::fs::write(dir.join(CONFIG_FILE), broken).unwrap();
        let err = ModelDir::new(&dir).load_config().unwrap_err().to_string();
        assert!(
            err.contains("is not a valid run configuration") && err.contains("rotate"),
            "{err}"
        );
        std::fs::write(dir.join(CONFIG_FILE), "{\"model\": ").unwrap();
        let err = ModelDir::new(&dir).load_config().unwrap_err().to_string();
        assert!(err.contains("EOF"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_is_locked_for_one_writer_at_a_time() {
        let dir = temp_dir("lock");
        let model_dir = ModelDir::new(dir.join("run"));
        let held = model_dir.lock().unwrap();
        let err = model_dir.lock().unwrap_err().to_string();
        assert!(err.contains("another program is writing"), "{err}");
        drop(held);
        assert!(model_dir.lock().is_ok(), "released when dropped");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_length_penalty_applies_only_to_the_weights_it_was_chosen_for() {
        use crate::eval::length_penalty::AlphaBleu;
        let dir = temp_dir("length-penalty");
        let model_dir = ModelDir::new(&dir);
        assert_eq!(model_dir.length_penalty().unwrap(), None, "none chosen");
        assert!(!model_dir.has_length_penalty_record());
        std::fs::write(dir.join(MODEL_FILE), b"weights one").unwrap();
        let choice = LengthPenalty {
            alpha: 1.5,
            beam_size: 5,
            split: "val".into(),
            sentences: 2,
            tried: vec![
                AlphaBleu {
                    alpha: 0.6,
                    bleu: 30.0,
                },
                AlphaBleu {
                    alpha: 1.5,
                    bleu: 31.0,
                },
            ],
            weights_sha256: model_dir.weights_sha256().unwrap(),
        };
        model_dir.save_length_penalty(&choice).unwrap();
        assert_eq!(model_dir.length_penalty().unwrap(), Some(choice));
        std::fs::write(dir.join(MODEL_FILE), b"weights two").unwrap();
        assert_eq!(
            model_dir.length_penalty().unwrap(),
            None,
            "the weights changed since"
        );
        assert!(model_dir.has_length_penalty_record());
        std::fs::write(dir.join(LENGTH_PENALTY_FILE), "{\"alpha\": ").unwrap();
        let err = model_dir.length_penalty().unwrap_err().to_string();
        assert!(err.contains("is not a length penalty record"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_with_a_model_is_not_vacant() {
        let dir = temp_dir("vacant");
        let model_dir = ModelDir::new(&dir);
        assert!(model_dir.ensure_vacant().is_ok());
        std::fs::write(dir.join(CONFIG_FILE), FLAT_CONFIG).unwrap();
        let err = model_dir.ensure_vacant().unwrap_err().to_string();
        assert!(err.contains("already holds a model"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
