//! Checkpoints: the weights, the optimizer state and the step of a run, each in
//! `DIR/checkpoints/step-NNNNNNNN/`, published by renaming a complete temporary directory and
//! then naming it in `DIR/latest`, so a run killed at any point leaves the last complete one.

use std::fs;

use burn::optim::ModuleOptimizer;
use burn::tensor::{Bytes, Device};
use serde::{Deserialize, Serialize};
use tf_model::Transformer;

use crate::error::{self, Error, Result, ResultExt};
use crate::store::atomic::write_atomic;
use crate::store::checksum::{read_verified, write_with_checksum};
use crate::store::model_dir::{MODEL_FILE, ModelDir, load_weights, weights_bytes};

const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";
const LATEST_FILE: &str = "latest";
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

/// Whether a checkpoint's weights also become the directory's `model.bpk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// The newest checkpoint is the model (synthetic tasks).
    AsModel,
    /// `model.bpk` is chosen otherwise (translation: the best by validation BLEU).
    CheckpointOnly,
}

impl ModelDir {
    /// Writes a checkpoint: the checkpoint directory first (under a temporary name, renamed when
    /// complete), then, with [`Publish::AsModel`], the top-level weights, then `latest`; then
    /// drops all but the newest `keep` checkpoints.
    pub fn save_checkpoint(
        &self,
        model: &Transformer,
        optimizer: &ModuleOptimizer,
        state: &TrainingState,
        keep: usize,
        publish: Publish,
    ) -> Result<()> {
        let checkpoints = self.root.join(CHECKPOINTS_DIR);
        error::create_dir_all(&checkpoints)?;
        let name = format!("step-{:08}", state.step);
        let tmp = checkpoints.join(format!(".{name}.tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        error::create_dir_all(&tmp)?;

        let weights = weights_bytes(model)?;
        let written = (|| {
            write_with_checksum(&tmp.join(MODEL_FILE), &weights)?;
            write_with_checksum(&tmp.join(OPTIMIZER_FILE), &optimizer.into_bytes()?)?;
            write_atomic(
                &tmp.join(STATE_FILE),
                serde_json::to_string_pretty(state)?.as_bytes(),
            )
        })();
        if let Err(err) = written {
            // A full disk, say: leave no half checkpoint taking its space.
            let _ = fs::remove_dir_all(&tmp);
            return Err(err);
        }

        let dest = checkpoints.join(&name);
        if dest.exists() {
            fs::remove_dir_all(&dest).map_err(|err| Error::io("remove", &dest, err))?;
        }
        fs::rename(&tmp, &dest).map_err(|err| Error::io("publish", &dest, err))?;
        // The model before `latest`: a run killed in between resumes from the checkpoint
        // before and publishes again, where the other order could leave `latest` ahead of
        // the model with nothing left to train.
        if publish == Publish::AsModel {
            write_with_checksum(&self.root.join(MODEL_FILE), &weights)?;
        }
        write_atomic(&self.root.join(LATEST_FILE), name.as_bytes())?;
        self.remove_old_checkpoints(keep.max(1))
    }

    /// Whether a complete checkpoint is there to resume from (a run killed before its first
    /// checkpoint has none).
    pub fn has_checkpoint(&self) -> bool {
        self.root.join(LATEST_FILE).is_file()
    }

    /// Loads the newest checkpoint into `model` and `optimizer`.
    pub fn load_checkpoint(
        &self,
        model: Transformer,
        optimizer: ModuleOptimizer,
    ) -> Result<(Transformer, ModuleOptimizer, TrainingState)> {
        let latest_path = self.root.join(LATEST_FILE);
        let name = error::read_to_string(&latest_path).context("no checkpoint to resume from")?;
        let dir = self.root.join(CHECKPOINTS_DIR).join(name.trim());
        let model = load_weights(model, &dir.join(MODEL_FILE))?;
        let optimizer_path = dir.join(OPTIMIZER_FILE);
        let bytes = read_verified(&optimizer_path)?;
        let optimizer = optimizer
            .from_bytes(Bytes::from_bytes_vec(bytes))
            .map_err(|err| {
                Error::format(
                    &optimizer_path,
                    "is not an optimizer state",
                    format!("{err:?}"),
                )
            })?;
        let state_path = dir.join(STATE_FILE);
        let state: TrainingState = serde_json::from_str(&error::read_to_string(&state_path)?)
            .map_err(|err| Error::format(&state_path, "is not a valid training state", err))?;
        Ok((model, optimizer, state))
    }

    /// The complete checkpoints on disk (`step-NNNNNNNN`), oldest first.
    pub fn checkpoint_names(&self) -> Result<Vec<String>> {
        let checkpoints = self.root.join(CHECKPOINTS_DIR);
        if !checkpoints.is_dir() {
            return Ok(Vec::new());
        }
        let mut names: Vec<String> = fs::read_dir(&checkpoints)
            .map_err(|err| Error::io("list", &checkpoints, err))?
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
            .ok_or_else(|| Error::invalid(format!("{name:?} is not a checkpoint name")))
    }

    /// The weights of checkpoint `name` in a model built from the run's configuration.
    pub fn load_checkpoint_model(&self, name: &str, device: &Device) -> Result<Transformer> {
        let config = self.load_config()?;
        let path = self.root.join(CHECKPOINTS_DIR).join(name).join(MODEL_FILE);
        load_weights(config.model.init(device), &path)
    }

    /// Removes all but the newest `keep` checkpoints.
    fn remove_old_checkpoints(&self, keep: usize) -> Result<()> {
        let checkpoints = self.root.join(CHECKPOINTS_DIR);
        let names = self.checkpoint_names()?;
        let excess = names.len().saturating_sub(keep);
        for name in &names[..excess] {
            let path = checkpoints.join(name);
            fs::remove_dir_all(&path).map_err(|err| Error::io("remove", &path, err))?;
        }
        Ok(())
    }
}
