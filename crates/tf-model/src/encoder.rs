//! The encoder: a stack of identical layers (§3.1), optionally ending in a LayerNorm.

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor};
use tf_attention::Weights;
use tf_layers::{EncoderLayer, TransformerLayerConfig};

use crate::final_norm::FinalLayerNorm;

/// `N` encoder layers and an optional final LayerNorm.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers, applied in order.
    pub layers: Vec<EncoderLayer>,
    /// LayerNorm on the stack's output (pre-norm stacks need one).
    pub final_norm: FinalLayerNorm,
}

impl Encoder {
    /// `n_layers` layers of `layer`; the config is validated by the caller.
    pub fn new(
        layer: &TransformerLayerConfig,
        n_layers: usize,
        final_norm: bool,
        device: &Device,
    ) -> Self {
        Self::with_heads(layer, &vec![layer.n_heads; n_layers], final_norm, device)
    }

    /// One layer of `layer` per entry of `heads`, whose self-attention has that many heads.
    ///
    /// # Panics
    /// If a layer cannot be built (the caller validates the config).
    pub fn with_heads(
        layer: &TransformerLayerConfig,
        heads: &[usize],
        final_norm: bool,
        device: &Device,
    ) -> Self {
        Self {
            layers: heads
                .iter()
                .map(|&h| {
                    layer
                        .try_init_encoder_with_heads(h, device)
                        .unwrap_or_else(|err| panic!("{err}"))
                })
                .collect(),
            final_norm: FinalLayerNorm::new(layer, final_norm, device),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, src_len, d_model]` (embedded and position-encoded)
    /// - `pad_mask`: `[batch, src_len]`, `true` = padding
    /// - returns `[batch, src_len, d_model]` and, when asked, each layer's self-attention weights
    ///   `[batch, n_heads, src_len, src_len]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<2, Bool>>,
        wanted: Weights,
    ) -> (Tensor<3>, Vec<Tensor<4>>) {
        let mut weights = Vec::new();
        let mut x = x;
        for layer in &self.layers {
            let (out, layer_weights) = layer.forward(x, pad_mask.clone(), wanted);
            x = out;
            weights.extend(layer_weights);
        }
        (self.final_norm.forward(x), weights)
    }
}
