//! The decoding cache: everything a decoding step reuses from the steps before it.

use burn::tensor::{Int, Tensor};
use tf_attention::SelfAttentionCache;
use tf_layers::CrossAttentionMemory;

/// Per layer, the self-attention keys and values of the positions decoded so far, and the
/// cross-attention keys and values of the encoder output (computed once); plus the number of
/// positions decoded, which offsets the positional encoding of the next step.
///
/// An explicit value: make one with [`Transformer::new_cache`](crate::Transformer::new_cache),
/// pass it to every [`decode`](crate::Transformer::decode) step, and drop it when done.
#[derive(Clone, Debug)]
pub struct DecoderCache {
    /// One self-attention cache per decoder layer.
    pub self_attn: Vec<SelfAttentionCache>,
    /// One cross-attention memory per decoder layer.
    pub memory: Vec<CrossAttentionMemory>,
    /// Positions decoded so far.
    pub len: usize,
}

impl DecoderCache {
    /// Keeps the batch rows `indices` (in that order), for beam search: row `i` of the new cache
    /// is row `indices[i]` of the old.
    ///
    /// # Shapes
    /// - `indices`: `[new_batch]`
    pub fn reorder(&mut self, indices: Tensor<1, Int>) {
        self.reorder_self_attention(indices.clone());
        self.memory = std::mem::take(&mut self.memory)
            .into_iter()
            .map(|m| m.select_batch(indices.clone()))
            .collect();
    }

    /// Reorders only the self-attention caches: for beams that trade places within one
    /// sentence, whose rows of the cross-attention memory are all the same, so that copying
    /// them every step would change nothing.
    ///
    /// # Shapes
    /// - `indices`: `[batch]`, each row taken from a row of the same source
    pub fn reorder_self_attention(&mut self, indices: Tensor<1, Int>) {
        for cache in &mut self.self_attn {
            cache.select_batch(indices.clone());
        }
    }
}
