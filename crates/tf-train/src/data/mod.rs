//! Where examples come from: synthetic tasks, parallel corpora, subword vocabularies,
//! translation pairs, batches, bucketing, and the per-step source of a run's batches.

pub mod batch;
pub mod bucketing;
pub mod corpus;
pub mod source;
pub mod subword;
pub mod task;
pub mod translation;
