//! Activation patching (Vig et al., 2020; Meng et al., 2022): run a clean source and a
//! corrupted one (one word swapped, say), then rerun the corrupted source with one activation
//! taken from the clean run, and measure how much of the clean behaviour it brings back.
//!
//! The decoder is teacher-forced on the clean translation in every run. The metric is the
//! logit difference between the clean and the corrupted translation's token at the first
//! position where the two translations differ; when they do not differ, the log-probability of
//! the clean translation. A patch's *effect* is `(patched − corrupted) / (clean − corrupted)`:
//! 0 changes nothing, 1 restores the clean run.
//!
//! Patched one at a time: each layer's residual stream (`resid_pre` of every layer and the last
//! `resid_post`) at each position, encoder and decoder, and each head's output `z` (every
//! position) of every attention block.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor};
use serde::Serialize;
use tf_attention::hooks::{AttentionBlock, AttentionSite, LayerSite, Stack};
use tf_attention::{HookPoint, Hooks, Patch, Replacement};
use tf_model::{AttentionKind, Transformer};

use crate::tokens::Tokens;
use tf_train::store::atomic::write_atomic;

use crate::error::{InspectError, Result};
use crate::forced::{Forced, forced, greedy, ids};
use crate::plot::{self, Heatmap};

/// What a run is measured by.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PatchMetric {
    /// `logit(clean_token) − logit(corrupt_token)` at `position` of the decoder.
    LogitDifference {
        /// Decoder position (0 predicts the first target token).
        position: usize,
        /// The clean translation's token there.
        clean_token: usize,
        /// The corrupted translation's token there.
        corrupt_token: usize,
        /// `clean_token` as text.
        clean_label: String,
        /// `corrupt_token` as text.
        corrupt_label: String,
    },
    /// `Σ_t log p(clean token t)` over the clean translation and its EOS.
    CleanLogProb,
}

/// The effect of patching one point at each position: `effect[row][position]`.
#[derive(Clone, Debug, Serialize)]
pub struct PositionPatching {
    /// The point patched in each row (`enc.0.resid_pre`, …).
    pub points: Vec<String>,
    /// The token at each position.
    pub positions: Vec<String>,
    /// `[row][position]`.
    pub effect: Vec<Vec<f32>>,
}

/// The effect of patching each head's `z` of one kind of attention: `effect[layer][head]`.
#[derive(Clone, Debug, Serialize)]
pub struct HeadPatching {
    /// Encoder self-attention, decoder self-attention or cross-attention.
    pub kind: AttentionKind,
    /// `[layer][head]`.
    pub effect: Vec<Vec<f32>>,
}

/// Everything one patching experiment measured.
#[derive(Clone, Debug, Serialize)]
pub struct Patching {
    /// The clean source's tokens.
    pub clean_source: Vec<String>,
    /// The corrupted source's tokens.
    pub corrupt_source: Vec<String>,
    /// The clean translation (given, or greedy), without EOS.
    pub clean_translation: Vec<String>,
    /// The corrupted source's greedy translation, without EOS.
    pub corrupt_translation: Vec<String>,
    /// The decoder's input: BOS, then the clean translation.
    pub decoder_input: Vec<String>,
    /// What each run is measured by.
    pub metric: PatchMetric,
    /// The metric of the clean run.
    pub clean_score: f32,
    /// The metric of the corrupted run.
    pub corrupt_score: f32,
    /// The encoder's residual stream, layers × source positions.
    pub encoder_residual: PositionPatching,
    /// The decoder's residual stream, layers × target positions.
    pub decoder_residual: PositionPatching,
    /// Each head's output, per kind of attention.
    pub heads: Vec<HeadPatching>,
    /// Forward passes run.
    pub runs: usize,
}

/// Patches `clean` into `corrupt` (token ids of equal length) at every residual position and
/// every head; `target` is the clean translation (default: `clean`'s greedy one, at most
/// `max_output` tokens and one fewer than the model's positions); `labels` write token ids as
/// text.
///
/// # Errors
/// If the sources differ in length or are empty, or a translation is longer than the model's
/// positions.
pub fn activation_patching(
    model: &Transformer,
    clean: &[usize],
    corrupt: &[usize],
    target: Option<&[usize]>,
    max_output: usize,
    tokens: Tokens<'_>,
    device: &Device,
) -> Result<Patching> {
    if clean.is_empty() || clean.len() != corrupt.len() {
        return Err(InspectError::Invalid(format!(
            "patching needs a clean and a corrupted source of the same number of tokens, not {} and {}",
            clean.len(),
            corrupt.len()
        )));
    }
    let (clean_src, corrupt_src) = (ids(clean, device), ids(corrupt, device));
    let Forced {
        translation: clean_translation,
        prefix: decoder_input,
        output: expected,
    } = forced(model, clean, target, max_output, tokens.special, device)?;
    let corrupt_translation = greedy(model, corrupt, max_output, tokens.special, device)?;
    let metric = metric_of(
        &expected,
        &corrupt_translation,
        tokens.special.eos,
        tokens.target,
    );
    let tgt = ids(&decoder_input, device);
    let (src_len, tgt_len) = (clean.len(), decoder_input.len());

    // The clean run keeps every activation that is patched.
    let residual_points = |stack: Stack, layers: usize| -> Vec<HookPoint> {
        (0..layers)
            .map(|l| HookPoint::layer(stack, l, LayerSite::ResidPre))
            .chain([HookPoint::layer(stack, layers - 1, LayerSite::ResidPost)])
            .collect()
    };
    let encoder_points = residual_points(Stack::Encoder, model.encoder.layers.len());
    let decoder_points = residual_points(Stack::Decoder, model.decoder.layers.len());
    let head_blocks = head_blocks(model);
    let mut clean_hooks = Hooks::none();
    for point in encoder_points.iter().chain(&decoder_points) {
        clean_hooks = clean_hooks.cache(*point);
    }
    for (_, blocks) in &head_blocks {
        for (point, _) in blocks {
            clean_hooks = clean_hooks.cache(*point);
        }
    }
    let run = |src: &Tensor<2, Int>, hooks: &mut Hooks| -> Result<f32> {
        let logits = model
            .forward_hooked(src.clone(), tgt.clone(), None, None, hooks)
            .map_err(|err| InspectError::Invalid(err.to_string()))?;
        Ok(score(&metric, logits, &expected))
    };
    let clean_score = run(&clean_src, &mut clean_hooks)?;
    let corrupt_score = run(&corrupt_src, &mut Hooks::none())?;
    let mut runs = 2;
    let denominator = clean_score - corrupt_score;
    let mut patched = |point: HookPoint, patch: Patch| -> Result<f32> {
        runs += 1;
        let score = run(&corrupt_src, &mut Hooks::none().patch(point, patch))?;
        Ok(if denominator.abs() > f32::EPSILON {
            (score - corrupt_score) / denominator
        } else {
            0.0
        })
    };
    let clean_value = |point: &HookPoint| {
        let value = clean_hooks.cached(point).expect("kept by the clean run");
        Replacement::Value(value.clone())
    };

    let mut residual = |points: &[HookPoint], len: usize| -> Result<Vec<Vec<f32>>> {
        points
            .iter()
            .map(|point| {
                (0..len)
                    .map(|p| {
                        patched(
                            *point,
                            Patch::all(clean_value(point)).with_positions(vec![p]),
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let encoder_effect = residual(&encoder_points, src_len)?;
    let decoder_effect = residual(&decoder_points, tgt_len)?;
    let mut heads = Vec::new();
    for (kind, blocks) in &head_blocks {
        let effect = blocks
            .iter()
            .map(|(point, n_heads)| {
                (0..*n_heads)
                    .map(|h| patched(*point, Patch::all(clean_value(point)).with_heads(vec![h])))
                    .collect::<Result<Vec<f32>>>()
            })
            .collect::<Result<_>>()?;
        heads.push(HeadPatching {
            kind: *kind,
            effect,
        });
    }
    let names = |points: &[HookPoint]| points.iter().map(ToString::to_string).collect();
    Ok(Patching {
        clean_source: tokens.sources(clean),
        corrupt_source: tokens.sources(corrupt),
        clean_translation: tokens.targets(&clean_translation),
        corrupt_translation: tokens.targets(&corrupt_translation),
        decoder_input: tokens.targets(&decoder_input),
        metric,
        clean_score,
        corrupt_score,
        encoder_residual: PositionPatching {
            points: names(&encoder_points),
            positions: tokens.sources(clean),
            effect: encoder_effect,
        },
        decoder_residual: PositionPatching {
            points: names(&decoder_points),
            positions: tokens.targets(&decoder_input),
            effect: decoder_effect,
        },
        heads,
        runs,
    })
}

/// The `z` point of every attention block and its number of heads, by kind of attention.
fn head_blocks(model: &Transformer) -> Vec<(AttentionKind, Vec<(HookPoint, usize)>)> {
    let z = |stack, layer, block| HookPoint::attention(stack, layer, block, AttentionSite::Z);
    let encoder = model.encoder.layers.iter().enumerate();
    let decoder = || model.decoder.layers.iter().enumerate();
    vec![
        (
            AttentionKind::EncoderSelf,
            encoder
                .map(|(l, layer)| {
                    (
                        z(Stack::Encoder, l, AttentionBlock::SelfAttention),
                        layer.self_attn.n_heads,
                    )
                })
                .collect(),
        ),
        (
            AttentionKind::DecoderSelf,
            decoder()
                .map(|(l, layer)| {
                    (
                        z(Stack::Decoder, l, AttentionBlock::SelfAttention),
                        layer.self_attn.n_heads,
                    )
                })
                .collect(),
        ),
        (
            AttentionKind::Cross,
            decoder()
                .map(|(l, layer)| {
                    (
                        z(Stack::Decoder, l, AttentionBlock::CrossAttention),
                        layer.cross_attn.n_heads,
                    )
                })
                .collect(),
        ),
    ]
}

/// The logit difference at the first token where the translations (with their EOS, `eos`)
/// differ, or the clean translation's log-probability where they do not.
fn metric_of(
    expected: &[usize],
    corrupt_translation: &[usize],
    eos: usize,
    label: impl Fn(usize) -> String,
) -> PatchMetric {
    let corrupt = corrupt_translation.iter().copied().chain([eos]);
    match expected
        .iter()
        .zip(corrupt)
        .position(|(&clean, corrupt)| clean != corrupt)
    {
        Some(position) => {
            let clean_token = expected[position];
            let corrupt_token = corrupt_translation.get(position).copied().unwrap_or(eos);
            PatchMetric::LogitDifference {
                position,
                clean_token,
                corrupt_token,
                clean_label: label(clean_token),
                corrupt_label: label(corrupt_token),
            }
        }
        None => PatchMetric::CleanLogProb,
    }
}

/// The metric of one run's logits.
///
/// # Shapes
/// - `logits`: `[1, tgt_len, tgt_vocab]`; `expected` has `tgt_len` tokens
fn score(metric: &PatchMetric, logits: Tensor<3>, expected: &[usize]) -> f32 {
    let [_, tgt_len, vocab] = logits.dims();
    match *metric {
        PatchMetric::LogitDifference {
            position,
            clean_token,
            corrupt_token,
            ..
        } => {
            let row = logits
                .narrow(1, position, 1)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 logits");
            row[clean_token] - row[corrupt_token]
        }
        PatchMetric::CleanLogProb => {
            let log_probs = burn::tensor::activation::log_softmax(logits, 2)
                .into_data()
                .try_to_vec::<f32>()
                .expect("f32 logits");
            (0..tgt_len)
                .map(|t| log_probs[t * vocab + expected[t]])
                .sum()
        }
    }
}

impl Patching {
    /// Writes into `dir`: `patching.json`, `encoder-residual`, `decoder-residual` (layers ×
    /// positions) and `heads` (one map per kind, layers × heads) as PNG and SVG. Effects are
    /// drawn clamped to [0, 1]; the JSON has them as measured. Returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        tf_train::error::create_dir_all(dir)?;
        let json = dir.join("patching.json");
        write_atomic(&json, serde_json::to_string_pretty(self)?.as_bytes())?;
        let mut written = vec![json];
        for (name, stack, patching) in [
            ("encoder-residual", "encoder", &self.encoder_residual),
            ("decoder-residual", "decoder", &self.decoder_residual),
        ] {
            let map = Heatmap {
                rows: &patching.effect,
                query_labels: &patching.points,
                key_labels: &patching.positions,
                title: format!("Patching the {stack} residual stream (effect)"),
            };
            written.extend(plot::heatmap(&dir.join(name), &map)?);
        }
        for heads in &self.heads {
            let layers: Vec<String> = (0..heads.effect.len()).map(|l| format!("L{l}")).collect();
            let widest = heads.effect.iter().map(Vec::len).max().unwrap_or(0);
            let columns: Vec<String> = (0..widest).map(|h| format!("H{h}")).collect();
            let map = Heatmap {
                rows: &heads.effect,
                query_labels: &layers,
                key_labels: &columns,
                title: format!("Patching {} heads (effect)", heads.kind),
            };
            let stem = dir.join(format!("heads-{}", heads.kind.name()));
            written.extend(plot::heatmap(&stem, &map)?);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_model::{GreedyOptions, TransformerConfig};
    use tf_train::data::task::{BOS, EOS};

    fn model(device: &Device) -> Transformer {
        device.seed(7);
        TransformerConfig::tiny(12, 12)
            .with_max_len(16)
            .init(device)
    }

    #[test]
    fn the_last_residual_at_the_metric_position_restores_everything() {
        let device = Device::flex();
        let model = model(&device);
        let (clean, corrupt) = ([3, 4, 5, 6], [3, 9, 5, 6]);
        // A clean translation whose first token differs from the corrupted one's: the metric is
        // the logit difference there.
        let src = Tensor::<2, Int>::from_ints([corrupt.map(|t| t as i64)], &device);
        let options = GreedyOptions::new(BOS, EOS, 8);
        let corrupt_first = model.greedy_decode(src, None, &options).unwrap()[0]
            .first()
            .copied()
            .unwrap_or(EOS);
        let first = if corrupt_first == 5 { 6 } else { 5 };
        let target = [first, 7, 8];
        let patching = activation_patching(
            &model,
            &clean,
            &corrupt,
            Some(&target),
            8,
            Tokens::ours(&|id| id.to_string()),
            &device,
        )
        .unwrap();
        let PatchMetric::LogitDifference { position, .. } = patching.metric else {
            panic!("the translations differ: {:?}", patching.metric)
        };
        assert_eq!(position, 0);
        let rows = &patching.decoder_residual.effect;
        assert_eq!(rows.len(), 3); // resid_pre 0, 1 and resid_post 1
        assert_eq!(rows[0].len(), 4); // BOS + 3 tokens
        assert_eq!(patching.decoder_residual.points[2], "dec.1.resid_post");
        assert!((patching.clean_score - patching.corrupt_score).abs() > 1e-4);
        // The logits at the metric's position depend on that position's last residual alone.
        for (p, &effect) in rows[2].iter().enumerate() {
            let expected = if p == position { 1.0 } else { 0.0 };
            assert!((effect - expected).abs() <= 1e-4, "position {p}: {effect}");
        }
        // The embedding of a position whose token is the same in both sources patches nothing.
        let embedding = &patching.encoder_residual.effect[0];
        for p in [0, 2, 3] {
            assert!(embedding[p].abs() <= 1e-6, "position {p}: {}", embedding[p]);
        }
        assert!(embedding[1].abs() > 1e-4);
        assert_eq!(
            patching
                .heads
                .iter()
                .map(|h| h.effect.len())
                .collect::<Vec<_>>(),
            [2, 2, 2]
        );
        assert_eq!(patching.runs, 2 + 3 * 4 + 3 * 4 + 3 * 2 * 2);
    }

    #[test]
    fn sources_of_different_lengths_are_refused() {
        let device = Device::flex();
        let err = activation_patching(
            &model(&device),
            &[3, 4],
            &[3],
            None,
            8,
            Tokens::ours(&|id| id.to_string()),
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("same number of tokens, not 2 and 1"), "{err}");
    }

    #[test]
    fn the_metric_is_the_first_difference_or_the_clean_log_prob() {
        let label = |id: usize| format!("t{id}");
        let difference = |position, clean_token, corrupt_token| PatchMetric::LogitDifference {
            position,
            clean_token,
            corrupt_token,
            clean_label: label(clean_token),
            corrupt_label: label(corrupt_token),
        };
        assert_eq!(
            metric_of(&[5, 6, EOS], &[5, 7], EOS, label),
            difference(1, 6, 7)
        );
        // A shorter corrupted translation differs where it ends.
        assert_eq!(
            metric_of(&[5, 6, EOS], &[5], EOS, label),
            difference(1, 6, EOS)
        );
        assert_eq!(
            metric_of(&[5, 6, EOS], &[5, 6], EOS, label),
            PatchMetric::CleanLogProb
        );
    }
}
