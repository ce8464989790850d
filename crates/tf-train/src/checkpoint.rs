//! The model directory: its configuration, checkpoints (model + optimizer + step) and the
//! weights the other subcommands load. Every file is written atomically (a temporary file in the
//! same directory, synced, then renamed over the old one), so an interrupted run never leaves a
//! half-written file where a good one was.
//!
//! ```text
//! DIR/config.json                 RunConfig: model, task and training settings
//! DIR/model.bpk                   the weights predict/eval/translate load: the newest
//!                                 checkpoint's, or for translation the best by validation BLEU
//! DIR/best.json                   translation: the step and BLEU of model.bpk
//! DIR/tokenizer.json              translation: the subword vocabulary (Hugging Face format)
//! DIR/metrics.csv                 one row per logged training step and validation
//! DIR/latest                      name of the newest complete checkpoint
//! DIR/checkpoints/step-NNNNNNNN/  model.bpk, optimizer.bpk, state.json
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};
use tf_model::Transformer;

use crate::config::RunConfig;
use crate::subword::SubwordVocab;

/// Name of the run's configuration file.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the weights file (in the directory and in each checkpoint).
pub const MODEL_FILE: &str = "model.bpk";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";
const LATEST_FILE: &str = "latest";
const BEST_FILE: &str = "best.json";
/// Name of the subword vocabulary of a translation model.
pub const TOKENIZER_FILE: &str = "tokenizer.json";
const CHECKPOINTS_DIR: &str = "checkpoints";

/// What a checkpoint records besides the weights and the optimizer state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The run's seed.
    pub seed: u64,
    /// Training wall time so far, seconds.
    pub elapsed_secs: f64,
}

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

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .context("path has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        File::open(dir)?.sync_all()
    };
    write().map_err(|err| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::new(err).context(format!("cannot write {}", path.display()))
    })
}

/// The model directory of one run.
#[derive(Clone, Debug)]
pub struct ModelDir {
    root: PathBuf,
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
        self.root.join("metrics.csv")
    }

    /// The subword vocabulary's path (translation models).
    pub fn tokenizer_path(&self) -> PathBuf {
        self.root.join(TOKENIZER_FILE)
    }

    /// Loads the subword vocabulary of a translation model.
    pub fn load_vocabulary(&self) -> Result<SubwordVocab> {
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

    /// Writes the run's configuration (creating the directory).
    pub fn save_config(&self, config: &RunConfig) -> Result<()> {
        fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create {}", self.root.display()))?;
        let json = serde_json::to_string_pretty(config)?;
        write_atomic(&self.root.join(CONFIG_FILE), json.as_bytes())
    }

    /// Reads and checks the run's configuration.
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
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let config: RunConfig = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid run configuration", path.display()))?;
        config
            .validate()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(config)
    }

    /// Loads the trained model for inference on `device`.
    pub fn load_model(&self, device: &Device) -> Result<(RunConfig, Transformer)> {
        let config = self.load_config()?;
        let path = self.root.join(MODEL_FILE);
        let model = load_weights(config.model.init(device), &path)?;
        Ok((config, model))
    }

    /// Loads the trained model with every dropout at 0, for gradients that do not depend on
    /// chance (head importance): pass an autodiff device.
    pub fn load_model_without_dropout(&self, device: &Device) -> Result<(RunConfig, Transformer)> {
        let config = self.load_config()?;
        let model = config
            .model
            .clone()
            .with_dropout(0.0)
            .with_attention_dropout(0.0)
            .init(device);
        let model = load_weights(model, &self.root.join(MODEL_FILE))?;
        Ok((config, model))
    }

    /// Writes a model directory that holds `model` alone, without checkpoints: the
    /// configuration, then the weights (what `tf import-torch` writes).
    pub fn save_model(&self, config: &RunConfig, model: &Transformer) -> Result<()> {
        self.save_config(config)?;
        let weights = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(record_error)?;
        write_atomic(&self.root.join(MODEL_FILE), &weights)
    }

    /// Makes `model` the directory's weights (`model.bpk`), recording its step and BLEU in
    /// `best.json`.
    pub fn save_best(&self, model: &Transformer, best: &BestModel) -> Result<()> {
        let weights = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(record_error)?;
        write_atomic(&self.root.join(MODEL_FILE), &weights)?;
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
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let best = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a best-model record", path.display()))?;
        Ok(Some(best))
    }

    /// Writes a checkpoint: the checkpoint directory first (under a temporary name, renamed when
    /// complete), then `latest`, then, with `publish`, the top-level weights; then drops all but
    /// the newest `keep` checkpoints.
    pub fn save_checkpoint(
        &self,
        model: &Transformer,
        optimizer: &ModuleOptimizer,
        state: &TrainingState,
        keep: usize,
        publish: bool,
    ) -> Result<()> {
        let checkpoints = self.root.join(CHECKPOINTS_DIR);
        fs::create_dir_all(&checkpoints)?;
        let name = format!("step-{:08}", state.step);
        let tmp = checkpoints.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;

        let weights = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(record_error)?;
        write_atomic(&tmp.join(MODEL_FILE), &weights)?;
        let optimizer_bytes = optimizer.into_bytes().map_err(record_error)?;
        write_atomic(&tmp.join(OPTIMIZER_FILE), &optimizer_bytes)?;
        write_atomic(
            &tmp.join(STATE_FILE),
            serde_json::to_string_pretty(state)?.as_bytes(),
        )?;

        let dest = checkpoints.join(&name);
        if dest.exists() {
            fs::remove_dir_all(&dest)?;
        }
        fs::rename(&tmp, &dest).with_context(|| format!("cannot publish {}", dest.display()))?;
        write_atomic(&self.root.join(LATEST_FILE), name.as_bytes())?;
        if publish {
            write_atomic(&self.root.join(MODEL_FILE), &weights)?;
        }
        self.prune(keep.max(1))
    }

    /// Loads the newest checkpoint into `model` and `optimizer`.
    pub fn load_checkpoint(
        &self,
        model: Transformer,
        optimizer: ModuleOptimizer,
    ) -> Result<(Transformer, ModuleOptimizer, TrainingState)> {
        let latest_path = self.root.join(LATEST_FILE);
        let name = fs::read_to_string(&latest_path).with_context(|| {
            format!(
                "no checkpoint to resume from: cannot read {}",
                latest_path.display()
            )
        })?;
        let dir = self.root.join(CHECKPOINTS_DIR).join(name.trim());
        let model = load_weights(model, &dir.join(MODEL_FILE))?;
        let optimizer_path = dir.join(OPTIMIZER_FILE);
        let bytes = fs::read(&optimizer_path)
            .with_context(|| format!("cannot read {}", optimizer_path.display()))?;
        let optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(record_error)
            .with_context(|| format!("cannot load {}", optimizer_path.display()))?;
        let state_path = dir.join(STATE_FILE);
        let state: TrainingState = serde_json::from_str(
            &fs::read_to_string(&state_path)
                .with_context(|| format!("cannot read {}", state_path.display()))?,
        )
        .with_context(|| format!("{} is not a valid training state", state_path.display()))?;
        Ok((model, optimizer, state))
    }

    /// The complete checkpoints on disk (`step-NNNNNNNN`), oldest first.
    pub fn checkpoint_names(&self) -> Result<Vec<String>> {
        let checkpoints = self.root.join(CHECKPOINTS_DIR);
        if !checkpoints.is_dir() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = fs::read_dir(&checkpoints)
            .with_context(|| format!("cannot list {}", checkpoints.display()))?
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("step-"))
            .collect();
        names.sort();
        Ok(names)
    }

    /// The step a checkpoint name (`step-NNNNNNNN`) stands for.
    pub fn checkpoint_step(&self, name: &str) -> Result<usize> {
        name.strip_prefix("step-")
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("{name:?} is not a checkpoint name"))
    }

    /// The weights of checkpoint `name` in a model built from the run's configuration.
    pub fn load_checkpoint_model(&self, name: &str, device: &Device) -> Result<Transformer> {
        let config = self.load_config()?;
        let path = self.root.join(CHECKPOINTS_DIR).join(name).join(MODEL_FILE);
        load_weights(config.model.init(device), &path)
    }

    /// Removes all but the newest `keep` checkpoints.
    fn prune(&self, keep: usize) -> Result<()> {
        let checkpoints = self.root.join(CHECKPOINTS_DIR);
        let names = self.checkpoint_names()?;
        let excess = names.len().saturating_sub(keep);
        for name in &names[..excess] {
            fs::remove_dir_all(checkpoints.join(name))?;
        }
        Ok(())
    }
}

fn record_error(err: burn::store::RecordError) -> anyhow::Error {
    anyhow::anyhow!("{err:?}")
}

/// Loads weights from `path` into `model`, refusing missing, extra or mis-shaped tensors.
fn load_weights(model: Transformer, path: &Path) -> Result<Transformer> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(record_error)
        .with_context(|| format!("{} is not a weights file", path.display()))?;
    model
        .try_load_record(record)
        .map_err(record_error)
        .with_context(|| format!("{} does not fit the model in config.json", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("tf-atomic-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "temporary files left behind");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_a_clear_error() {
        let err = ModelDir::new("/nonexistent/run").load_config().unwrap_err();
        assert!(
            err.to_string().contains("is not a model directory"),
            "{err}"
        );
    }
}
