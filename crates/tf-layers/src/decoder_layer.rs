//! One decoder layer (§3.1): masked self-attention, cross-attention over the encoder output, and
//! the feed-forward network, each inside a residual connection with dropout and LayerNorm.

use burn::module::Module;
use burn::tensor::{Bool, Int, Tensor};
use tf_attention::hooks::{LayerHooks, LayerSite};
use tf_attention::{AttentionMask, KeyValue, MultiHeadAttention, SelfAttentionCache, Weights};

use crate::encoder_layer::hook3;
use crate::feed_forward::PositionWiseFeedForward;
use crate::residual::ResidualNorm;

/// A decoder layer; build it with
/// [`TransformerLayerConfig::init_decoder`](crate::TransformerLayerConfig::init_decoder).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Masked (causal) multi-head self-attention.
    pub self_attn: MultiHeadAttention,
    /// Residual, dropout and LayerNorm around the self-attention.
    pub self_attn_residual: ResidualNorm,
    /// Multi-head attention over the encoder output.
    pub cross_attn: MultiHeadAttention,
    /// Residual, dropout and LayerNorm around the cross-attention.
    pub cross_attn_residual: ResidualNorm,
    /// Position-wise feed-forward network.
    pub ffn: PositionWiseFeedForward,
    /// Residual, dropout and LayerNorm around the feed-forward network.
    pub ffn_residual: ResidualNorm,
}

/// The encoder output one decoder layer attends to: its keys and values, projected once, and
/// which source positions are padding.
#[derive(Clone, Debug)]
pub struct CrossAttentionMemory {
    /// Keys and values of the encoder output, `[batch, n_heads, src_len, d_k]`.
    pub key_value: KeyValue,
    /// `[batch, src_len]`, `true` = padding.
    pub pad_mask: Option<Tensor<2, Bool>>,
}

impl CrossAttentionMemory {
    /// Keeps the batch rows `indices` (in that order), e.g. the surviving beams.
    ///
    /// # Shapes
    /// - `indices`: `[new_batch]`
    pub fn select_batch(self, indices: Tensor<1, Int>) -> Self {
        Self {
            pad_mask: self.pad_mask.map(|m| m.select(0, indices.clone())),
            key_value: self.key_value.select_batch(indices),
        }
    }
}

/// What [`DecoderLayer::forward`] takes besides its input and the memory. `Default` is a
/// teacher-forced pass without target padding, cache or weights.
#[derive(Debug, Default)]
pub struct DecoderLayerOptions<'a> {
    /// `[batch, k_len]`, `true` = padding; with a cache, `k_len = cache.len() + tgt_len`.
    pub tgt_pad_mask: Option<Tensor<2, Bool>>,
    /// The self-attention keys and values of the positions before the input; with it, the input
    /// holds only the new positions, whose keys and values are appended.
    pub cache: Option<&'a mut SelfAttentionCache>,
    /// Whether the attention weights come back.
    pub weights: Weights,
    /// The layer's hooks: `resid_pre`, `attn.*`, `resid_mid`, `cross.*`, `resid_mid_cross`,
    /// `ffn.*` and `resid_post`; none by default.
    pub hooks: Option<&'a mut LayerHooks<'a>>,
}

/// The attention weights of one decoder layer, when asked for.
#[derive(Clone, Debug)]
pub struct DecoderLayerWeights {
    /// `[batch, n_heads, tgt_len, k_len]`, `k_len` counting cached positions.
    pub self_attn: Tensor<4>,
    /// `[batch, n_heads, tgt_len, src_len]`.
    pub cross_attn: Tensor<4>,
}

impl DecoderLayer {
    /// Projects the encoder output into this layer's cross-attention keys and values. Done once
    /// per source batch; every decoding step reuses it.
    ///
    /// # Shapes
    /// - `encoder_output`: `[batch, src_len, d_model]`
    /// - `pad_mask`: `[batch, src_len]`, `true` = padding
    pub fn memory(
        &self,
        encoder_output: Tensor<3>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> CrossAttentionMemory {
        CrossAttentionMemory {
            key_value: self.cross_attn.project_key_value(encoder_output),
            pad_mask,
        }
    }

    /// Each target position attends to itself and earlier positions (and the cached ones), then
    /// to the unpadded source positions.
    ///
    /// With a cache in `options`, `x` holds only the new positions; the self-attention keys and
    /// values are appended to it, and the target padding mask covers all `cache.len() +
    /// tgt_len` positions.
    ///
    /// # Shapes
    /// - `x`: `[batch, tgt_len, d_model]`
    /// - `options.tgt_pad_mask`: `[batch, k_len]`, `true` = padding
    /// - returns `[batch, tgt_len, d_model]`, and the weights with [`Weights::Return`]
    pub fn forward(
        &self,
        x: Tensor<3>,
        memory: &CrossAttentionMemory,
        options: DecoderLayerOptions<'_>,
    ) -> (Tensor<3>, Option<DecoderLayerWeights>) {
        let DecoderLayerOptions {
            tgt_pad_mask,
            cache,
            weights: wanted,
            mut hooks,
        } = options;
        let self_mask = AttentionMask::causal().with_key_padding(tgt_pad_mask);
        let x = hook3(&mut hooks, LayerSite::ResidPre, x);
        let (x, self_weights) = self.self_attn_residual.forward(x, |h| {
            let out = self.self_attn.self_attention_hooked(
                h,
                &self_mask,
                cache,
                wanted,
                hooks.as_deref_mut(),
            );
            (out.context, out.weights)
        });
        let x = hook3(&mut hooks, LayerSite::ResidMid, x);
        let cross_mask = AttentionMask::none().with_key_padding(memory.pad_mask.clone());
        let (x, cross_weights) = self.cross_attn_residual.forward(x, |h| {
            let out = self.cross_attn.cross_attention_hooked(
                h,
                &memory.key_value,
                &cross_mask,
                wanted,
                hooks.as_deref_mut(),
            );
            (out.context, out.weights)
        });
        let x = hook3(&mut hooks, LayerSite::ResidMidCross, x);
        let (x, ()) = self.ffn_residual.forward(x, |h| {
            (self.ffn.forward_hooked(h, hooks.as_deref_mut()), ())
        });
        let x = hook3(&mut hooks, LayerSite::ResidPost, x);
        let weights = self_weights
            .zip(cross_weights)
            .map(|(self_attn, cross_attn)| DecoderLayerWeights {
                self_attn,
                cross_attn,
            });
        (x, weights)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransformerLayerConfig;
    use crate::residual::NormPosition;
    use burn::tensor::{Device, Distribution};
    use tf_attention::max_abs_diff;

    fn tiny(position: NormPosition) -> TransformerLayerConfig {
        TransformerLayerConfig::tiny()
            .with_d_model(8)
            .with_d_ff(16)
            .with_norm_position(position)
    }

    #[test]
    fn a_future_target_token_does_not_change_earlier_outputs() {
        let device = Device::flex();
        for position in [NormPosition::Post, NormPosition::Pre] {
            let layer = tiny(position).init_decoder(&device);
            let memory = layer.memory(
                Tensor::random([2, 3, 8], Distribution::Default, &device),
                None,
            );
            let x = Tensor::<3>::random([2, 4, 8], Distribution::Default, &device);
            let changed = Tensor::cat(
                vec![
                    x.clone().narrow(1, 0, 3),
                    Tensor::random([2, 1, 8], Distribution::Default, &device),
                ],
                1,
            );
            let (a, _) = layer.forward(x, &memory, DecoderLayerOptions::default());
            let (b, _) = layer.forward(changed, &memory, DecoderLayerOptions::default());
            assert!(max_abs_diff(a.narrow(1, 0, 3), b.narrow(1, 0, 3)) <= 1e-6);
        }
    }

    #[test]
    fn cached_steps_equal_the_full_pass_in_both_norm_positions() {
        let device = Device::flex();
        for position in [NormPosition::Post, NormPosition::Pre] {
            let layer = tiny(position).init_decoder(&device);
            let memory = layer.memory(
                Tensor::random([2, 3, 8], Distribution::Default, &device),
                None,
            );
            let x = Tensor::<3>::random([2, 4, 8], Distribution::Default, &device);
            let (full, _) = layer.forward(x.clone(), &memory, DecoderLayerOptions::default());
            let mut cache = SelfAttentionCache::default();
            let steps: Vec<Tensor<3>> = (0..4)
                .map(|t| {
                    layer
                        .forward(
                            x.clone().narrow(1, t, 1),
                            &memory,
                            DecoderLayerOptions {
                                cache: Some(&mut cache),
                                ..Default::default()
                            },
                        )
                        .0
                })
                .collect();
            assert!(max_abs_diff(full, Tensor::cat(steps, 1)) <= 1e-5);
        }
    }

    #[test]
    fn weights_are_returned_when_asked_with_their_shapes() {
        let device = Device::flex();
        let layer = tiny(NormPosition::Post).init_decoder(&device);
        let memory = layer.memory(
            Tensor::random([2, 3, 8], Distribution::Default, &device),
            None,
        );
        let x = Tensor::<3>::random([2, 4, 8], Distribution::Default, &device);
        let (_, weights) = layer.forward(
            x.clone(),
            &memory,
            DecoderLayerOptions {
                weights: Weights::Return,
                ..Default::default()
            },
        );
        let weights = weights.unwrap();
        assert_eq!(weights.self_attn.dims(), [2, 2, 4, 4]);
        assert_eq!(weights.cross_attn.dims(), [2, 2, 4, 3]);
        assert!(
            layer
                .forward(x, &memory, DecoderLayerOptions::default())
                .1
                .is_none()
        );
    }
}
