//! One encoder layer (§3.1): self-attention, then the feed-forward network, each inside a
//! residual connection with dropout and LayerNorm.

use burn::module::Module;
use burn::tensor::{Bool, Tensor};
use tf_attention::hooks::{LayerHooks, LayerSite};
use tf_attention::{AttentionMask, MultiHeadAttention, Weights};

use crate::feed_forward::PositionWiseFeedForward;
use crate::residual::ResidualNorm;

/// An encoder layer; build it with
/// [`TransformerLayerConfig::init_encoder`](crate::TransformerLayerConfig::init_encoder).
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Multi-head self-attention.
    pub self_attn: MultiHeadAttention,
    /// Residual, dropout and LayerNorm around the self-attention.
    pub self_attn_residual: ResidualNorm,
    /// Position-wise feed-forward network.
    pub ffn: PositionWiseFeedForward,
    /// Residual, dropout and LayerNorm around the feed-forward network.
    pub ffn_residual: ResidualNorm,
}

impl EncoderLayer {
    /// Every position attends to every unpadded position of the same sequence.
    ///
    /// # Shapes
    /// - `x`: `[batch, src_len, d_model]`
    /// - `pad_mask`: `[batch, src_len]`, `true` = padding
    /// - returns `[batch, src_len, d_model]` and, when asked, the self-attention weights
    ///   `[batch, n_heads, src_len, src_len]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<2, Bool>>,
        wanted: Weights,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        self.forward_hooked(x, pad_mask, wanted, None)
    }

    /// [`forward`](Self::forward) with the layer's hooks: `resid_pre`, `attn.*`, `resid_mid`,
    /// `ffn.*` and `resid_post`.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub fn forward_hooked(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<2, Bool>>,
        wanted: Weights,
        mut hooks: Option<&mut LayerHooks<'_>>,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let mask = AttentionMask::none().with_key_padding(pad_mask);
        let x = hook3(&mut hooks, LayerSite::ResidPre, x);
        let (x, weights) = self.self_attn_residual.forward(x, |h| {
            let out =
                self.self_attn
                    .self_attention_hooked(h, &mask, None, wanted, hooks.as_deref_mut());
            (out.context, out.weights)
        });
        let x = hook3(&mut hooks, LayerSite::ResidMid, x);
        let (x, ()) = self.ffn_residual.forward(x, |h| {
            (self.ffn.forward_hooked(h, hooks.as_deref_mut()), ())
        });
        (hook3(&mut hooks, LayerSite::ResidPost, x), weights)
    }
}

/// `x` through the layer's hook at `site`, if hooked.
///
/// # Shapes
/// - `x`: `[batch, seq_len, width]`
pub(crate) fn hook3(
    hooks: &mut Option<&mut LayerHooks<'_>>,
    site: LayerSite,
    x: Tensor<3>,
) -> Tensor<3> {
    match hooks {
        Some(hooks) => hooks.rank3(site, x),
        None => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TransformerLayerConfig;
    use crate::residual::NormPosition;
    use burn::tensor::{Device, Distribution};
    use tf_attention::{max_abs_diff, padding_mask_from_lengths};

    #[test]
    fn padding_changes_nothing_at_the_real_positions() {
        let device = Device::flex();
        for position in [NormPosition::Post, NormPosition::Pre] {
            device.seed(4);
            let layer = TransformerLayerConfig::tiny()
                .with_norm_position(position)
                .init_encoder(&device);
            let x = Tensor::<3>::random([1, 3, 16], Distribution::Default, &device);
            let (alone, _) = layer.forward(x.clone(), None, Weights::Omit);
            // Two positions of noise appended, masked as padding.
            let noise = Tensor::<3>::random([1, 2, 16], Distribution::Default, &device);
            let padded = Tensor::cat(vec![x, noise], 1); // [1, 5, 16]
            let mask = padding_mask_from_lengths(&[3], 5, &device);
            let (out, _) = layer.forward(padded, Some(mask), Weights::Omit);
            let diff = max_abs_diff(out.narrow(1, 0, 3), alone);
            assert!(diff <= 1e-5, "{position:?}: {diff}");
        }
    }

    #[test]
    fn weights_come_back_when_asked_sum_to_one_and_skip_padding() {
        let device = Device::flex();
        let layer = TransformerLayerConfig::tiny().init_encoder(&device);
        let x = Tensor::<3>::random([2, 4, 16], Distribution::Default, &device);
        let mask = padding_mask_from_lengths(&[4, 2], 4, &device);
        let (_, none) = layer.forward(x.clone(), Some(mask.clone()), Weights::Omit);
        assert!(none.is_none());
        let (out, weights) = layer.forward(x, Some(mask), Weights::Return);
        assert_eq!(out.dims(), [2, 4, 16]);
        let weights = weights.expect("asked for");
        assert_eq!(weights.dims(), [2, 2, 4, 4]); // [batch, n_heads, src_len, src_len]
        let row_sums = weights.clone().sum_dim(3);
        assert!(max_abs_diff(row_sums.clone(), row_sums.ones_like()) <= 1e-5);
        // The second sequence has 2 real positions: no weight on keys 2 and 3.
        let on_padding = weights.narrow(0, 1, 1).narrow(3, 2, 2).abs().max();
        assert_eq!(on_padding.into_scalar::<f32>(), 0.0);
    }
}
