//! One file per `tf` command: its arguments and what it does with the libraries.

pub mod ablate;
pub mod align;
pub mod attention;
pub mod attribute;
pub mod average;
pub mod bleu;
pub mod codec;
pub mod data;
pub mod distill;
pub mod eval;
pub mod export_marian;
pub mod heads;
pub mod import_marian;
pub mod import_torch;
pub mod length_penalty;
pub mod lens;
pub mod patch;
pub mod plot;
pub mod predict;
pub mod prune;
pub mod train;
pub mod translate;

/// Seed of the fresh samples `tf eval`, `tf heads` and `tf prune` measure on (not training's).
pub const EVAL_SEED: u64 = 20_251_125;
