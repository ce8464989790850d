//! ALTI+ (Ferrando et al., 2022, "Towards Opening the Black Box of Neural Machine Translation:
//! Source and Target Contributions to the Model's Predictions"): how much each source token
//! and each target-prefix token contributes to a prediction, from the decomposition of every
//! attention block's output into one term per input position.
//!
//! An attention block's output at position `i` is (post-norm) `y_i = LN(x_i + Σ_j T_ij + b_O)`
//! with `T_ij = Σ_h α_h,ij v_h,j W^O_h`. LayerNorm is linear once its standard deviation `σ_i`
//! is fixed, so `y_i = Σ_j T̃_ij + T̃_ii' + rest_i`: `T̃ = γ ⊙ (T − mean(T)) / σ_i` for every key
//! position and for the residual `x_i`, and `rest_i` the biases no position owns. (Pre-norm:
//! `y_i = x_i + Σ_j T_ij + b_O`, nothing to linearise.) ALTI (Ferrando et al., 2022a) scores
//! each term by how close it is to the output,
//!
//! `c_ij = max(0, ‖y_i‖₁ − ‖y_i − T̃_ij‖₁)`, rows normalised to sum to 1,
//!
//! and composes the layers: the encoder's blocks multiply (the residual term of position `i`
//! counts for `i` itself); in each decoder layer the self-attention block's contributions
//! (the residual folded in the same way) are scaled by the cross-attention block's residual
//! share, and the cross-attention's shares of the encoder outputs reach the source tokens
//! through the encoder. The feed-forward networks act on each position alone and leave the
//! shares as they are. Every prediction's shares lie in `[0, 1]` and sum to 1 over the source
//! and the prefix.

use burn::tensor::{Int, Tensor};
use tf_attention::hooks::{AttentionBlock, AttentionSite, LayerSite, Stack};
use tf_attention::{HookPoint, Hooks, MultiHeadAttention};
use tf_layers::{NormPosition, ResidualNorm};
use tf_model::Transformer;

use super::{DecoderLayerShares, Rows, compose, kept3, kept4, matrix, normalised, weighted_values};
use crate::error::{InspectError, Result};

/// ALTI+ shares of each prediction of the teacher-forced pass over `src` and `tgt` (a batch of
/// one): `[target position][source token]` and `[target position][prefix position]`.
///
/// # Shapes
/// - `src`: `[1, src_len]`
/// - `tgt`: `[1, tgt_len]`
pub(super) fn alti_plus(
    model: &Transformer,
    src: Tensor<2, Int>,
    tgt: Tensor<2, Int>,
) -> Result<Rows> {
    let [_, s_len] = src.dims();
    let [_, t_len] = tgt.dims();
    let mut hooks = Hooks::none().cache_all();
    model
        .forward_hooked(src, tgt, None, None, &mut hooks)
        .map_err(|err| InspectError::Invalid(err.to_string()))?;
    let encoder = model
        .encoder
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let block = Block::new(&hooks, Stack::Encoder, l, AttentionBlock::SelfAttention);
            fold_residual(block.contributions(&layer.self_attn, &layer.self_attn_residual))
        })
        .collect();
    let decoder = model
        .decoder
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let own = Block::new(&hooks, Stack::Decoder, l, AttentionBlock::SelfAttention);
            let own = fold_residual(own.contributions(&layer.self_attn, &layer.self_attn_residual));
            let cross = Block::new(&hooks, Stack::Decoder, l, AttentionBlock::CrossAttention);
            let cross = cross.contributions(&layer.cross_attn, &layer.cross_attn_residual);
            let (prefix, source) = own
                .into_iter()
                .zip(cross)
                .map(|(own_row, mut cross_row)| {
                    let residual = cross_row.pop().expect("the residual column");
                    (
                        own_row.into_iter().map(|c| residual * c).collect(),
                        cross_row,
                    )
                })
                .unzip();
            DecoderLayerShares { prefix, source }
        })
        .collect();
    Ok(compose(encoder, decoder, s_len, t_len))
}

/// A self-attention block's `[q][k + 1]` contributions as `[q][k]`: the residual (last
/// column) is the query position's own.
fn fold_residual(rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.into_iter()
        .enumerate()
        .map(|(i, mut row)| {
            let residual = row.pop().expect("the residual column");
            row[i] += residual;
            row
        })
        .collect()
}

/// One attention block's tensors, kept by a hooked pass over a batch of one.
struct Block {
    /// `[1, heads, q_len, k_len]`.
    pattern: Tensor<4>,
    /// `[1, heads, k_len, d_k]`.
    value: Tensor<4>,
    /// The residual stream entering the block, `[1, q_len, d_model]`.
    residual: Tensor<3>,
    /// The residual stream leaving it, `[1, q_len, d_model]`.
    output: Tensor<3>,
}

impl Block {
    fn new(hooks: &Hooks, stack: Stack, layer: usize, block: AttentionBlock) -> Self {
        let at = |site| HookPoint::Layer { stack, layer, site };
        let (residual, output) = match block {
            AttentionBlock::SelfAttention => (LayerSite::ResidPre, LayerSite::ResidMid),
            AttentionBlock::CrossAttention => (LayerSite::ResidMid, LayerSite::ResidMidCross),
        };
        Self {
            pattern: kept4(
                hooks,
                at(LayerSite::Attention(block, AttentionSite::Pattern)),
            ),
            value: kept4(hooks, at(LayerSite::Attention(block, AttentionSite::Value))),
            residual: kept3(hooks, at(residual)),
            output: kept3(hooks, at(output)),
        }
    }

    /// ALTI's `[q][k + 1]` contributions: the key positions, then the residual.
    fn contributions(self, mha: &MultiHeadAttention, norm: &ResidualNorm) -> Vec<Vec<f32>> {
        let output = self.output.clone();
        let (terms, _) = self.terms(mha, norm);
        normalised(with_residual_fallback(matrix(closeness(
            terms,
            output.squeeze_dim(0),
        ))))
    }

    /// The block's output decomposed: one term per key position and the residual last, and
    /// what no position owns (the biases), `y_i = Σ_j terms_ij + rest_i`.
    ///
    /// # Shapes
    /// - returns `[q_len, k_len + 1, d_model]` and `[q_len, d_model]`
    fn terms(self, mha: &MultiHeadAttention, norm: &ResidualNorm) -> (Tensor<3>, Tensor<2>) {
        let [_, q, d] = self.residual.dims();
        let mixed = weighted_values(self.pattern, self.value, mha); // [q, k, d]
        let terms = Tensor::cat(vec![mixed, self.residual.reshape([q, 1, d])], 1);
        let bias = match &mha.out_proj.bias {
            Some(b) => b.val().reshape([1, d]).expand([q, d]),
            None => Tensor::zeros([q, d], &terms.device()),
        };
        match norm.position {
            NormPosition::Pre => (terms, bias),
            NormPosition::Post => {
                let [_, columns, _] = terms.dims();
                let sum = terms.clone().sum_dim(1).reshape([q, d]) + bias.clone();
                let sigma = sum.var_bias(1).add_scalar(norm.epsilon).sqrt(); // [q, 1]
                let gamma = norm.norm.gamma.val().reshape([1, d]);
                let scale = (gamma.clone().expand([q, d]) / sigma.clone().expand([q, d]))
                    .reshape([q, 1, d]);
                let centred = terms.clone() - terms.mean_dim(2).expand([q, columns, d]);
                let beta = match &norm.norm.beta {
                    Some(b) => b.val().reshape([1, d]).expand([q, d]),
                    None => Tensor::zeros([q, d], &sigma.device()),
                };
                let centred_bias = bias.clone() - bias.mean_dim(1).expand([q, d]);
                let rest = centred_bias * gamma.expand([q, d]) / sigma.expand([q, d]) + beta;
                (centred * scale.expand([q, columns, d]), rest)
            }
        }
    }
}

/// Rows of closeness where no term comes closer to the output than nothing (every one clamped
/// to 0, which a small random model can give) credit the residual, the token itself: the
/// block moved it, and no term explains where. Otherwise such a row would share nothing, and
/// the attributions composed through it would not sum to 1.
fn with_residual_fallback(rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.into_iter()
        .map(|mut row| {
            if row.iter().all(|&x| x == 0.0)
                && let Some(residual) = row.last_mut()
            {
                *residual = 1.0;
            }
            row
        })
        .collect()
}

/// `max(0, ‖y_i‖₁ − ‖y_i − t_ij‖₁)`: how much closer to `y_i` each term is than nothing.
///
/// # Shapes
/// - `terms`: `[q_len, n, d_model]`
/// - `output`: `[q_len, d_model]`
/// - returns `[q_len, n]`
fn closeness(terms: Tensor<3>, output: Tensor<2>) -> Tensor<2> {
    let [q, n, d] = terms.dims();
    let y = output.reshape([q, 1, d]);
    let size = y.clone().abs().sum_dim(2).reshape([q, 1]).expand([q, n]);
    let distance = (y.expand([q, n, d]) - terms)
        .abs()
        .sum_dim(2)
        .reshape([q, n]);
    (size - distance).clamp_min(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};
    use tf_attention::max_abs_diff;
    use tf_model::TransformerConfig;

    #[test]
    fn a_row_no_term_explains_credits_the_residual() {
        let rows = with_residual_fallback(vec![vec![0.0, 0.0, 0.0], vec![0.5, 0.0, 0.25]]);
        assert_eq!(rows, [vec![0.0, 0.0, 1.0], vec![0.5, 0.0, 0.25]]);
    }

    #[test]
    fn closeness_by_hand() {
        // y = [2, 0]; t₁ = [2, 0] is y itself (closeness ‖y‖₁ = 2), t₂ = [1, 1] is at distance
        // 2 (0), t₃ = [1, 0] at 1 (1), t₄ = [−2, 0] farther than nothing (clamped to 0).
        let device = Device::flex();
        let terms = Tensor::<3>::from_data(
            TensorData::new(vec![2.0f32, 0.0, 1.0, 1.0, 1.0, 0.0, -2.0, 0.0], [1, 4, 2]),
            &device,
        );
        let y = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.0], [1, 2]), &device);
        let c = closeness(terms, y).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(c, [2.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn the_terms_and_the_biases_add_up_to_each_block_output() {
        let device = Device::flex();
        for position in [NormPosition::Post, NormPosition::Pre] {
            device.seed(5);
            let config = TransformerConfig::tiny(10, 10);
            let layer = config.layer.clone().with_norm_position(position);
            let model = config.with_layer(layer).init(&device);
            let ids = |v: Vec<i64>| {
                let n = v.len();
                Tensor::<2, Int>::from_data(TensorData::new(v, [1, n]), &device)
            };
            let mut hooks = Hooks::none().cache_all();
            model
                .forward_hooked(
                    ids(vec![3, 4, 5, 6]),
                    ids(vec![1, 7, 8]),
                    None,
                    None,
                    &mut hooks,
                )
                .unwrap();
            let layer = &model.decoder.layers[0];
            for (block, mha, norm) in [
                (
                    AttentionBlock::SelfAttention,
                    &layer.self_attn,
                    &layer.self_attn_residual,
                ),
                (
                    AttentionBlock::CrossAttention,
                    &layer.cross_attn,
                    &layer.cross_attn_residual,
                ),
            ] {
                let block = Block::new(&hooks, Stack::Decoder, 0, block);
                let output = block.output.clone().squeeze_dim::<2>(0);
                let (terms, rest) = block.terms(mha, norm);
                let [q, _, d] = terms.dims();
                let sum = terms.sum_dim(1).reshape([q, d]) + rest;
                assert!(max_abs_diff(sum, output) < 1e-4, "{position:?}");
            }
        }
    }
}
