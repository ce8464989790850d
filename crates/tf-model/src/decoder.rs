//! The decoder: a stack of identical layers (§3.1), optionally ending in a LayerNorm.

use burn::module::Module;
use burn::tensor::{Bool, Device, Tensor};
use tf_attention::{Hooks, LayerHooks, SelfAttentionCache, Stack, Weights};
use tf_layers::{
    CrossAttentionMemory, DecoderLayer, DecoderLayerOptions, DecoderLayerWeights,
    TransformerLayerConfig,
};

use crate::final_norm::FinalLayerNorm;

/// What [`Decoder::forward`] takes besides its input and the memory. `Default` is a
/// teacher-forced pass without target padding, caches or weights.
#[derive(Debug, Default)]
pub struct DecoderOptions<'a> {
    /// `[batch, k_len]`, `true` = padding; with caches, `k_len` counts the cached positions.
    pub tgt_pad_mask: Option<Tensor<2, Bool>>,
    /// One self-attention cache per layer; with them, the input holds only the new positions.
    pub caches: Option<&'a mut [SelfAttentionCache]>,
    /// Whether each layer's attention weights come back.
    pub weights: Weights,
    /// Hooks at every layer's `dec.{l}.*` points; none by default. Meant for full
    /// (teacher-forced) passes: with caches, a layer's hooks see only the new positions.
    pub hooks: Option<&'a mut Hooks>,
}

/// `N` decoder layers and an optional final LayerNorm.
#[derive(Module, Debug)]
pub struct Decoder {
    /// The layers, applied in order.
    pub layers: Vec<DecoderLayer>,
    /// LayerNorm on the stack's output (pre-norm stacks need one).
    pub final_norm: FinalLayerNorm,
}

impl Decoder {
    /// `n_layers` layers of `layer`; the config is validated by the caller.
    pub fn new(
        layer: &TransformerLayerConfig,
        n_layers: usize,
        final_norm: bool,
        device: &Device,
    ) -> Self {
        let heads = vec![layer.n_heads; n_layers];
        Self::with_heads(layer, &heads, &heads, final_norm, device)
    }

    /// One layer of `layer` per entry of `self_heads` and `cross_heads`, whose attentions have
    /// that many heads.
    ///
    /// # Panics
    /// If a layer cannot be built (the caller validates the config), or the two lists differ in
    /// length.
    pub fn with_heads(
        layer: &TransformerLayerConfig,
        self_heads: &[usize],
        cross_heads: &[usize],
        final_norm: bool,
        device: &Device,
    ) -> Self {
        assert_eq!(self_heads.len(), cross_heads.len(), "one count per layer");
        Self {
            layers: self_heads
                .iter()
                .zip(cross_heads)
                .map(|(&s, &c)| {
                    layer
                        .try_init_decoder_with_heads(s, c, device)
                        .unwrap_or_else(|err| panic!("{err}"))
                })
                .collect(),
            final_norm: FinalLayerNorm::new(layer, final_norm, device),
        }
    }

    /// Each layer's cross-attention keys and values of the encoder output.
    ///
    /// # Shapes
    /// - `encoder_output`: `[batch, src_len, d_model]`
    /// - `pad_mask`: `[batch, src_len]`, `true` = padding
    pub fn memory(
        &self,
        encoder_output: Tensor<3>,
        pad_mask: Option<Tensor<2, Bool>>,
    ) -> Vec<CrossAttentionMemory> {
        self.layers
            .iter()
            .map(|layer| layer.memory(encoder_output.clone(), pad_mask.clone()))
            .collect()
    }

    /// With caches in `options` (one per layer), `x` holds only the new positions.
    ///
    /// # Shapes
    /// - `x`: `[batch, tgt_len, d_model]` (embedded and position-encoded)
    /// - `options.tgt_pad_mask`: `[batch, k_len]`, `true` = padding (`k_len` counts cached
    ///   positions)
    /// - returns `[batch, tgt_len, d_model]` and, with [`Weights::Return`], each layer's weights
    pub fn forward(
        &self,
        x: Tensor<3>,
        memory: &[CrossAttentionMemory],
        options: DecoderOptions<'_>,
    ) -> (Tensor<3>, Vec<DecoderLayerWeights>) {
        let DecoderOptions {
            tgt_pad_mask,
            caches,
            weights: wanted,
            mut hooks,
        } = options;
        assert_eq!(
            memory.len(),
            self.layers.len(),
            "one cross-attention memory per layer"
        );
        let mut caches = caches.map(|c| {
            assert_eq!(
                c.len(),
                self.layers.len(),
                "one self-attention cache per layer"
            );
            c.iter_mut()
        });
        let mut weights = Vec::new();
        let mut x = x;
        for (index, (layer, layer_memory)) in self.layers.iter().zip(memory).enumerate() {
            let cache = caches.as_mut().and_then(|c| c.next());
            let mut layer_hooks = hooks
                .as_deref_mut()
                .map(|hooks| LayerHooks::new(hooks, Stack::Decoder, index));
            let options = DecoderLayerOptions {
                tgt_pad_mask: tgt_pad_mask.clone(),
                cache,
                weights: wanted,
                hooks: layer_hooks.as_mut(),
            };
            let (out, layer_weights) = layer.forward(x, layer_memory, options);
            x = out;
            weights.extend(layer_weights);
        }
        (self.final_norm.forward(x), weights)
    }
}
