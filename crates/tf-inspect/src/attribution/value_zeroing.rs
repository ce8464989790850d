//! Value zeroing (Mohebbi et al., 2023, "Quantifying Context Mixing in Transformers"): the
//! contribution of position `j` to a layer's output at position `i` is how far that output
//! moves, `1 − cos(x̃_i^{¬j}, x̃_i)`, when `j`'s value vector is zeroed in every head of the
//! layer's attention (its key stays, so the attention weights do not change); rows normalised
//! to sum to 1.
//!
//! Mohebbi et al. score encoders. For the decoder, one layer's output at `i` is scored against
//! zeroing each prefix position's value in its self-attention and each encoder output's value
//! in its cross-attention, normalised together: the layer's shares of its own input and of the
//! encoder's output. The layers are composed as ALTI+ composes its contributions
//! (`compose`), so a prediction's shares sum to 1 over the source tokens and
//! the target prefix. Every zeroing of one layer is one row of a single batch: one pass per
//! layer.

use burn::tensor::{Device, Tensor, TensorData};
use tf_attention::hooks::{AttentionBlock, AttentionSite, LayerSite, Stack};
use tf_attention::{HookPoint, HookValue, Hooks, Patch, Replacement};
use tf_model::Transformer;

use super::{DecoderLayerShares, Rows, compose, kept3, kept4, matrix, normalised};
use crate::error::{InspectError, Result};
use crate::forced::repeated_ids;

/// Value-zeroing shares of each prediction of the teacher-forced pass over `source` and
/// `prefix`: `[target position][source token]` and `[target position][prefix position]`.
pub(super) fn value_zeroing(
    model: &Transformer,
    source: &[usize],
    prefix: &[usize],
    device: &Device,
) -> Result<Rows> {
    let (s_len, t_len) = (source.len(), prefix.len());
    let mut clean = Hooks::none().cache_all();
    run(model, source, prefix, 1, &mut clean, device)?;
    let encoder = (0..model.encoder.layers.len())
        .map(|l| {
            let scores = layer_scores(model, source, prefix, &clean, Stack::Encoder, l, device)?;
            Ok(normalised(scores))
        })
        .collect::<Result<Vec<_>>>()?;
    let decoder = (0..model.decoder.layers.len())
        .map(|l| {
            let scores = layer_scores(model, source, prefix, &clean, Stack::Decoder, l, device)?;
            let (source, prefix) = normalised(scores)
                .into_iter()
                .map(|mut row| {
                    let prefix = row.split_off(s_len);
                    (row, prefix)
                })
                .unzip();
            Ok(DecoderLayerShares { prefix, source })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(compose(encoder, decoder, s_len, t_len))
}

/// The cosine distances of layer `layer`'s output, `[output position][zeroed position]`: an
/// encoder layer's over the source positions; a decoder layer's over the encoder outputs
/// (zeroed in the cross-attention) and then the prefix positions (zeroed in the
/// self-attention). `clean` holds the unchanged pass's tensors.
fn layer_scores(
    model: &Transformer,
    source: &[usize],
    prefix: &[usize],
    clean: &Hooks,
    stack: Stack,
    layer: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let at = |site| HookPoint::Layer { stack, layer, site };
    let value = |block| at(LayerSite::Attention(block, AttentionSite::Value));
    let (s_len, t_len) = (source.len(), prefix.len());
    // Row b of the batch zeroes one position: (block, first row of the block).
    let blocks = match stack {
        Stack::Encoder => vec![(AttentionBlock::SelfAttention, 0)],
        Stack::Decoder => vec![
            (AttentionBlock::CrossAttention, 0),
            (AttentionBlock::SelfAttention, s_len),
        ],
    };
    let rows = match stack {
        Stack::Encoder => s_len,
        Stack::Decoder => s_len + t_len,
    };
    let mut hooks = Hooks::none().cache(at(LayerSite::ResidPost));
    for &(block, first) in &blocks {
        let point = value(block);
        let zeroed = zeroed(kept4(clean, point), rows, first, device);
        hooks = hooks.patch(
            point,
            Patch::all(Replacement::Value(HookValue::Rank4(zeroed))),
        );
    }
    run(model, source, prefix, rows, &mut hooks, device)?;
    let changed = kept3(&hooks, at(LayerSite::ResidPost)); // [rows, len, d]
    let unchanged = kept3(clean, at(LayerSite::ResidPost)); // [1, len, d]
    let [_, len, d] = changed.dims();
    let unchanged = unchanged.expand([rows, len, d]);
    let dot = (changed.clone() * unchanged.clone()).sum_dim(2);
    let norms =
        changed.powi_scalar(2).sum_dim(2).sqrt() * unchanged.powi_scalar(2).sum_dim(2).sqrt();
    let cosine = dot / norms.clamp_min(f32::MIN_POSITIVE);
    let distance = cosine
        .neg()
        .add_scalar(1.0)
        .clamp_min(0.0)
        .reshape([rows, len]);
    Ok(matrix(distance.transpose()))
}

/// `value` (`[1, heads, k_len, d_k]`) repeated for `rows` rows, row `first + j` with key
/// position `j`'s value zeroed in every head (the other rows unchanged).
///
/// # Shapes
/// - returns `[rows, heads, k_len, d_k]`
fn zeroed(value: Tensor<4>, rows: usize, first: usize, device: &Device) -> Tensor<4> {
    let [_, h, k, d_k] = value.dims();
    let mut keep = vec![1f32; rows * k];
    for j in 0..k.min(rows.saturating_sub(first)) {
        keep[(first + j) * k + j] = 0.0;
    }
    let keep = Tensor::<4>::from_data(TensorData::new(keep, [rows, 1, k, 1]), device);
    value.expand([rows, h, k, d_k]) * keep.expand([rows, h, k, d_k])
}

/// The teacher-forced hooked pass over `rows` copies of `source` and `prefix`.
fn run(
    model: &Transformer,
    source: &[usize],
    prefix: &[usize],
    rows: usize,
    hooks: &mut Hooks,
    device: &Device,
) -> Result<()> {
    let (src, tgt) = (
        repeated_ids(source, rows, device),
        repeated_ids(prefix, rows, device),
    );
    model
        .forward_hooked(src, tgt, None, None, hooks)
        .map_err(|err| InspectError::Invalid(err.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_model::TransformerConfig;

    #[test]
    fn each_batched_row_is_the_pass_that_zeroes_one_value() {
        // Row j of the batched pass must be what a pass that zeroes position j alone gives.
        let device = Device::flex();
        device.seed(6);
        let model = TransformerConfig::tiny(10, 10).init(&device);
        let (source, prefix) = ([3, 4, 5], [1, 6, 7, 8]);
        let mut clean = Hooks::none().cache_all();
        run(&model, &source, &prefix, 1, &mut clean, &device).unwrap();
        let scores =
            layer_scores(&model, &source, &prefix, &clean, Stack::Decoder, 1, &device).unwrap();
        let at = |site| HookPoint::Layer {
            stack: Stack::Decoder,
            layer: 1,
            site,
        };
        let output = at(LayerSite::ResidPost);
        let unchanged = kept3(&clean, output).squeeze_dim::<2>(0);
        for (column, (block, position)) in [
            (1, (AttentionBlock::CrossAttention, 1)),
            (3 + 2, (AttentionBlock::SelfAttention, 2)),
        ] {
            let value = at(LayerSite::Attention(block, AttentionSite::Value));
            let mut one = Hooks::none()
                .patch(value, Patch::zeros().with_positions(vec![position]))
                .cache(output);
            run(&model, &source, &prefix, 1, &mut one, &device).unwrap();
            let changed = kept3(&one, output).squeeze_dim::<2>(0);
            for (i, row) in scores.iter().enumerate() {
                let a = changed
                    .clone()
                    .narrow(0, i, 1)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                let b = unchanged
                    .clone()
                    .narrow(0, i, 1)
                    .into_data()
                    .try_to_vec::<f32>()
                    .unwrap();
                let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
                let expected = 1.0 - dot / (norm(&a) * norm(&b));
                assert!((row[column] - expected).abs() < 1e-5, "{block:?} row {i}");
            }
        }
        // Causal: zeroing a later prefix position moves nothing before it.
        assert!(
            scores[0][3 + 1..].iter().all(|&x| x.abs() < 1e-6),
            "{:?}",
            scores[0]
        );
    }
}
