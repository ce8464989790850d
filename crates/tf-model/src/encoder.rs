//! The encoder: a stack of identical layers (§3.1), optionally ending in a LayerNorm.

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor};
use tf_attention::{Hooks, LayerHooks, Stack, Weights};
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
        self.forward_hooked(x, pad_mask, wanted, None)
    }

    /// [`forward`](Self::forward) with hooks at every layer's `enc.{l}.*` points.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub fn forward_hooked(
        &self,
        x: Tensor<3>,
        pad_mask: Option<Tensor<2, Bool>>,
        wanted: Weights,
        mut hooks: Option<&mut Hooks>,
    ) -> (Tensor<3>, Vec<Tensor<4>>) {
        let mut weights = Vec::new();
        let mut x = x;
        for (index, layer) in self.layers.iter().enumerate() {
            let mut layer_hooks = hooks
                .as_deref_mut()
                .map(|hooks| LayerHooks::new(hooks, Stack::Encoder, index));
            let (out, layer_weights) =
                layer.forward_hooked(x, pad_mask.clone(), wanted, layer_hooks.as_mut());
            x = out;
            weights.extend(layer_weights);
        }
        (self.final_norm.forward(x), weights)
    }
}
