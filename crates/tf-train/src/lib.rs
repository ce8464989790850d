//! # tf-train
//!
//! Training and evaluation for the [`tf_model`] Transformer: built-in synthetic tasks
//! ([`task`]), padded teacher-forcing batches ([`batch`]), label-smoothed cross-entropy
//! ([`loss`]), the paper's learning-rate schedule ([`schedule`]), the training loop with
//! validation, checkpoints and resume ([`train`]), accuracy ([`eval`]), and the model directory
//! ([`checkpoint`]). Attention inspection: the weights behind one decoded input, drawn
//! ([`attention_maps`], [`plot`]), per-head statistics ([`head_stats`]) and head importance for
//! pruning ([`importance`]). Parallel corpora ([`corpus`]), subword vocabularies ([`subword`]), token-budget batching
//! ([`bucketing`]), corpus BLEU equal to sacreBLEU's ([`bleu`]); translation as a task
//! ([`translation`]) and sentences in, sentences out ([`translate`]). The `tf` command-line
//! program is built on it.

pub mod attention_maps;
pub mod average;
pub mod batch;
pub mod bleu;
pub mod bucketing;
pub mod checkpoint;
pub mod config;
pub mod corpus;
pub mod device;
pub mod eval;
pub mod head_stats;
pub mod importance;
pub mod loss;
pub mod metrics;
pub mod plot;
pub mod schedule;
pub mod subword;
pub mod task;
#[cfg(test)]
mod testing;
pub mod train;
pub mod translate;
pub mod translation;

pub use checkpoint::ModelDir;
pub use config::{RunConfig, RunTask, TrainingConfig};
pub use device::Backend;
pub use task::{Task, TaskKind};
pub use train::{TrainSummary, train};
