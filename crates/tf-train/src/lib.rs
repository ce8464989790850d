//! # tf-train
//!
//! Training and evaluation for the [`tf_model`] Transformer, as a library in four wings:
//!
//! - [`data`]: where examples come from: synthetic tasks, parallel corpora, subword
//!   vocabularies, translation pairs, teacher-forcing batches, token-budget bucketing, and the
//!   per-step source of a run's batches.
//! - [`training`]: the run's configuration and presets, the loop, the optimizer and the paper's
//!   schedule, the label-smoothed loss, the metrics log, and the observer hook a program uses to
//!   show progress.
//! - [`store`]: the model directory on disk: atomic writes, configuration, weights,
//!   checkpoints, averaging.
//! - [`eval`]: accuracy, sacreBLEU-equal BLEU, translation of sentences, validation.
//!
//! Errors are one typed [`Error`]. The `tf` program (crate `tf-cli`) and attention inspection
//! (crate `tf-inspect`) are built on this crate; it has no terminal, plotting or allocator
//! dependencies.

pub mod data;
pub mod device;
pub mod error;
pub mod eval;
pub mod store;
#[cfg(test)]
mod testing;
pub mod training;

pub use data::task::{Task, TaskKind};
pub use device::Backend;
pub use error::{Error, Result, ResultExt};
pub use store::model_dir::ModelDir;
pub use training::config::{RunConfig, RunTask, TrainingConfig};
pub use training::trainer::{Start, TrainSummary, train};
