//! The decoding cache: everything a decoding step reuses from the steps before it, and the
//! contract of decoding with and without it.

use burn::tensor::{Int, Tensor};
use tf_attention::SelfAttentionCache;
use tf_layers::CrossAttentionMemory;

use crate::transformer::Memory;

/// What [`Transformer::decode`](crate::Transformer::decode) attends to.
#[derive(Debug)]
pub enum DecodeContext<'a> {
    /// The encoder's memory; the target given is the whole prefix (teacher forcing, or
    /// recomputing every step).
    Full(&'a Memory),
    /// A cache from [`Transformer::new_cache`](crate::Transformer::new_cache), which holds the
    /// memory's projected keys and values; the target given is only the positions after the
    /// `cache.len` already decoded, and the cache then includes them.
    Cached(&'a mut DecoderCache),
}

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
    /// Row `i` of the cache becomes row `indices[i]` of the old one, for beam search: beams
    /// that trade places within one sentence. Only the self-attention keys and values move;
    /// the cross-attention memory stays, so every row must take a row of the same source
    /// (whose memory rows are the same), as beams of one sentence do.
    ///
    /// # Shapes
    /// - `indices`: `[batch]`, each row taken from a row of the same source
    pub fn reorder_beams(&mut self, indices: Tensor<1, Int>) {
        for cache in &mut self.self_attn {
            cache.select_batch(indices.clone());
        }
    }

    /// Row `i` of the cache becomes row `indices[i]` of the old one, the cross-attention memory
    /// included: rows may be dropped (finished sentences) or repeated (a sentence fanning out
    /// into beams), and the batch changes size.
    ///
    /// # Shapes
    /// - `indices`: `[new_batch]`
    pub fn select_rows(&mut self, indices: Tensor<1, Int>) {
        self.reorder_beams(indices.clone());
        self.memory = std::mem::take(&mut self.memory)
            .into_iter()
            .map(|memory| memory.select_batch(indices.clone()))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransformerConfig;
    use burn::tensor::{Device, TensorData};
    use tf_attention::max_abs_diff;

    /// Beams of one sentence trade places: the reordered cache decodes as a cache built from
    /// the prefixes in the new order.
    #[test]
    fn reordering_beams_equals_decoding_the_reordered_prefixes() {
        let device = Device::flex();
        device.seed(9);
        let model = TransformerConfig::tiny(11, 11).init(&device);
        // One sentence, three beams: the memory rows are identical.
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5], [3, 4, 5], [3, 4, 5]], &device);
        let memory = model.encode(src, None);
        let prefixes = [[1i64, 6, 7], [1, 8, 9], [1, 10, 3]];
        let batch = |rows: &[[i64; 3]]| {
            let flat: Vec<i64> = rows.iter().flatten().copied().collect();
            Tensor::<2, Int>::from_data(TensorData::new(flat, [rows.len(), 3]), &device)
        };
        let mut cache = model.new_cache(&memory);
        model.decode(batch(&prefixes), DecodeContext::Cached(&mut cache), None);
        let order = [2usize, 0, 0];
        cache.reorder_beams(Tensor::from_ints([2, 0, 0], &device));

        let reordered: Vec<[i64; 3]> = order.iter().map(|&i| prefixes[i]).collect();
        let mut expected = model.new_cache(&memory);
        model.decode(
            batch(&reordered),
            DecodeContext::Cached(&mut expected),
            None,
        );

        let next = Tensor::<2, Int>::from_ints([[4], [5], [6]], &device);
        let got = model.decode(next.clone(), DecodeContext::Cached(&mut cache), None);
        let want = model.decode(next, DecodeContext::Cached(&mut expected), None);
        assert_eq!((cache.len, expected.len), (4, 4));
        assert!(max_abs_diff(got, want) <= 1e-5);
    }
}
