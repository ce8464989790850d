//! # tf-inspect
//!
//! What the attention of a trained [`tf_model::Transformer`] does, and which heads matter:
//!
//! - [`alignment`]: word alignments from attributions or cross-attention heads, and their
//!   alignment error rate against a reference alignment (eflomal's, say).
//! - [`ablation`]: zero, mean and resample ablation of any activation, by the change in the
//!   references' log-probability.
//! - [`attention_maps`]: the weights behind one decoded input, every layer and head, as
//!   heatmaps (PNG and SVG), grids and JSON.
//! - [`head_stats`]: per-head entropy, attention distance, max weight and cross-attention
//!   alignment with a synthetic task's ground truth.
//! - [`importance`]: head importance after Michel et al. (2019), and the least important heads.
//! - [`logit_lens`]: what each decoder layer would predict, and the rank of the final choice.
//! - [`patching`]: activation patching of a clean source into a corrupted one, per layer ×
//!   position of the residual stream and per head.
//! - [`prune`]: a sweep of accuracy against heads removed, in importance order.
//! - [`attribution`]: each generated token's attributions over the source and the target
//!   prefix: attention, rollout, norm-based, ALTI+, value zeroing, gradient, gradient × input,
//!   integrated gradients.
//! - [`curves`]: learning curves of one run or several, from their metrics logs.
//! - [`plot`]: heatmaps and line plots with plotters and an embedded font.
//! - [`viewer`]: one self-contained HTML page to explore the attention of a decoding
//!   interactively (head view, model view, alignment matrix, SVG export).
//!
//! Built on `tf-train` (data, model directories, evaluation); the `tf` program's `attention`,
//! `heads` and `prune` commands are thin layers over it.

pub mod ablation;
pub mod alignment;
pub mod attention_maps;
pub mod attribution;
pub mod curves;
pub mod error;
pub mod forced;
pub mod head_stats;
pub mod importance;
pub mod logit_lens;
pub mod patching;
pub mod plot;
pub mod prune;
pub mod tokens;
pub mod viewer;

pub use error::{InspectError, Result};
