//! Where examples come from: synthetic tasks, parallel corpora (and verified downloads of
//! Multi30k), subword vocabularies, translation pairs, batches, bucketing, and the per-step
//! source of a run's batches.

pub mod batch;
pub mod bucketing;
pub mod corpus;
pub mod distillation;
pub mod download;
pub mod multi30k;
pub mod source;
pub mod subword;
pub mod task;
pub mod translation;
