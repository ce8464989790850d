//! # tf-train
//!
//! Training and evaluation for the [`tf_model`] Transformer: built-in synthetic tasks
//! ([`task`]), padded teacher-forcing batches ([`batch`]), label-smoothed cross-entropy
//! ([`loss`]), the paper's learning-rate schedule ([`schedule`]), the training loop with
//! validation, checkpoints and resume ([`train`]), accuracy ([`eval`]), and the model directory
//! ([`checkpoint`]). The `tf` command-line program is built on it.

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod device;
pub mod eval;
pub mod loss;
pub mod metrics;
pub mod schedule;
pub mod task;
pub mod train;

pub use checkpoint::ModelDir;
pub use config::{RunConfig, TrainingConfig};
pub use device::Backend;
pub use task::{Task, TaskKind};
pub use train::{TrainSummary, train};
