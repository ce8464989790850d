//! Everything a run is made of, saved as the model directory's `config.json`.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tf_model::TransformerConfig;

use crate::task::Task;

/// How to train.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Sequences per batch.
    pub batch_size: usize,
    /// Warm-up steps of the learning-rate schedule.
    pub warmup: usize,
    /// Learning rate at the end of warm-up; `None` is the paper's `d_model^-0.5 · warmup^-0.5`.
    pub peak_lr: Option<f64>,
    /// Label smoothing ε (0.1 in the paper).
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this; `None` = no clipping.
    pub grad_clip: Option<f64>,
    /// Seed of initialisation, dropout and data.
    pub seed: u64,
    /// Log the training loss every this many steps.
    pub log_every: usize,
    /// Validate every this many steps (and at the end).
    pub eval_every: usize,
    /// Validation sequences.
    pub eval_samples: usize,
    /// Checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
}

/// The model, the task, and the training settings of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// The Transformer's configuration.
    pub model: TransformerConfig,
    /// The task it learns.
    pub task: Task,
    /// How it is trained.
    pub training: TrainingConfig,
}

impl RunConfig {
    /// Checks every part, so that nothing is built from a broken configuration.
    pub fn validate(&self) -> Result<()> {
        self.task.validate()?;
        self.model.validate()?;
        if self.model.src_vocab != self.task.vocab_size()
            || self.model.tgt_vocab != self.task.vocab_size()
        {
            bail!(
                "the model's vocabularies ({}, {}) do not match the task's {} tokens",
                self.model.src_vocab,
                self.model.tgt_vocab,
                self.task.vocab_size()
            );
        }
        // BOS + target + EOS must fit the positional encoding.
        if self.task.max_len + 1 > self.model.max_len {
            bail!(
                "task sequences of up to {} symbols need max_len >= {}, the model has {}",
                self.task.max_len,
                self.task.max_len + 1,
                self.model.max_len
            );
        }
        let t = &self.training;
        for (name, value) in [
            ("steps", t.steps),
            ("batch_size", t.batch_size),
            ("log_every", t.log_every),
            ("eval_every", t.eval_every),
            ("eval_samples", t.eval_samples),
            ("checkpoint_every", t.checkpoint_every),
            ("keep_checkpoints", t.keep_checkpoints),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1, got 0");
            }
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail!(
                "label_smoothing must be in [0, 1), got {}",
                t.label_smoothing
            );
        }
        if let Some(lr) = t.peak_lr
            && !(lr.is_finite() && lr > 0.0)
        {
            bail!("the learning rate must be positive, got {lr}");
        }
        if let Some(clip) = t.grad_clip
            && !(clip.is_finite() && clip > 0.0)
        {
            bail!("the gradient clipping norm must be positive, got {clip}");
        }
        Ok(())
    }
}
