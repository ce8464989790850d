//! One encoder layer (§3.1): self-attention, then the feed-forward network, each inside a
//! residual connection with dropout and LayerNorm.

use burn::module::Module;
use burn::tensor::{Bool, Tensor};
use tf_attention::{AttentionMask, MultiHeadAttention};

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
        return_weights: bool,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let mask = AttentionMask::none().with_key_padding(pad_mask);
        let (x, weights) = self.self_attn_residual.forward(x, |h| {
            let out = self
                .self_attn
                .self_attention(h, &mask, None, return_weights);
            (out.context, out.weights)
        });
        let (x, ()) = self.ffn_residual.forward(x, |h| (self.ffn.forward(h), ()));
        (x, weights)
    }
}
