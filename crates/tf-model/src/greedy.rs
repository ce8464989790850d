//! Greedy decoding: at each step, the most probable next token.

use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::transformer::Transformer;

/// How to decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GreedyOptions {
    /// The token every target starts with.
    pub bos: usize,
    /// The token that ends a target (not included in the output).
    pub eos: usize,
    /// Most tokens to generate per sequence (EOS included).
    pub max_len: usize,
    /// Decode step by step against a key/value cache (default), or recompute the whole prefix
    /// each step. Both give the same tokens; the cache makes a step's cost flat in its position.
    pub use_cache: bool,
}

impl GreedyOptions {
    /// Cached decoding of at most `max_len` tokens between `bos` and `eos`.
    pub fn new(bos: usize, eos: usize, max_len: usize) -> Self {
        Self {
            bos,
            eos,
            max_len,
            use_cache: true,
        }
    }
}

/// A decoding request the model cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The source is longer than the positional encoding covers.
    #[error("source of {len} tokens exceeds the model's max_len {max_len}")]
    SourceTooLong {
        /// Source length asked for.
        len: usize,
        /// The model's limit.
        max_len: usize,
    },
    /// The target would be longer than the positional encoding covers.
    #[error("decoding {len} tokens exceeds the model's max_len {max_len}")]
    TargetTooLong {
        /// Target length asked for.
        len: usize,
        /// The model's limit.
        max_len: usize,
    },
}

impl Transformer {
    /// Greedy decoding of every source sequence in the batch; returns each sequence's tokens,
    /// without BOS, up to (not including) its EOS.
    ///
    /// # Shapes
    /// - `src`: `[batch, src_len]` token ids
    /// - `src_pad_mask`: `[batch, src_len]`, `true` = padding
    pub fn greedy_decode(
        &self,
        src: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        options: &GreedyOptions,
    ) -> Result<Vec<Vec<usize>>, DecodeError> {
        let [batch, src_len] = src.dims();
        let max_len = self.max_len();
        if src_len > max_len {
            return Err(DecodeError::SourceTooLong {
                len: src_len,
                max_len,
            });
        }
        // The decoder's input at the last step is BOS and max_len - 1 generated tokens.
        if options.max_len > max_len {
            return Err(DecodeError::TargetTooLong {
                len: options.max_len,
                max_len,
            });
        }
        let device = src.device();
        let memory = self.encode(src, src_pad_mask);
        let mut cache = options.use_cache.then(|| self.new_cache(&memory));

        let mut tokens: Vec<Vec<i64>> = vec![vec![options.bos as i64]; batch];
        let mut finished = vec![false; batch];
        for _ in 0..options.max_len {
            let len = tokens[0].len();
            // With a cache, only the newest token goes in; otherwise the whole prefix.
            let start = if cache.is_some() { len - 1 } else { 0 };
            let input: Vec<i64> = tokens
                .iter()
                .flat_map(|t| t[start..].iter().copied())
                .collect();
            let input =
                Tensor::<2, Int>::from_data(TensorData::new(input, [batch, len - start]), &device);
            let logits = self.decode(input, &memory, None, cache.as_mut());
            let [_, steps, vocab] = logits.dims();
            let next = logits
                .narrow(1, steps - 1, 1) // [batch, 1, vocab]
                .reshape([batch, vocab])
                .argmax(1) // [batch, 1]
                .try_into_vec_as::<i64>()
                .expect("argmax reads back as integers");
            for ((seq, done), token) in tokens.iter_mut().zip(&mut finished).zip(next) {
                seq.push(token);
                *done |= token == options.eos as i64;
            }
            if finished.iter().all(|&done| done) {
                break;
            }
        }
        Ok(tokens
            .into_iter()
            .map(|seq| {
                seq.into_iter()
                    .skip(1)
                    .map(|t| t as usize)
                    .take_while(|&t| t != options.eos)
                    .collect()
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransformerConfig;
    use burn::tensor::Device;
    use tf_layers::NormPosition;

    fn tiny(position: NormPosition) -> TransformerConfig {
        TransformerConfig::tiny(11, 11)
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_ff(32)
            .with_dropout(0.0)
            .with_max_len(32)
            .with_norm_position(position)
    }

    #[test]
    fn cached_decoding_gives_the_tokens_and_logits_of_full_recomputation() {
        let device = Device::flex();
        for position in [NormPosition::Post, NormPosition::Pre] {
            device.seed(7);
            let model = tiny(position).init(&device);
            let src = Tensor::<2, Int>::from_ints([[3, 4, 5, 6], [7, 8, 0, 0]], &device);
            let pad = src.clone().equal_elem(0);
            let mut options = GreedyOptions::new(1, 2, 12);
            let cached = model
                .greedy_decode(src.clone(), Some(pad.clone()), &options)
                .unwrap();
            options.use_cache = false;
            let full = model
                .greedy_decode(src.clone(), Some(pad.clone()), &options)
                .unwrap();
            assert_eq!(cached, full, "{position:?}");

            // Logits of a fixed prefix, step by step vs all at once.
            let tgt = Tensor::<2, Int>::from_ints([[1, 5, 9, 4], [1, 3, 3, 10]], &device);
            let memory = model.encode(src, Some(pad));
            let all = model.decode(tgt.clone(), &memory, None, None);
            let mut cache = model.new_cache(&memory);
            let steps: Vec<Tensor<3>> = (0..4)
                .map(|t| model.decode(tgt.clone().narrow(1, t, 1), &memory, None, Some(&mut cache)))
                .collect();
            assert_eq!(cache.len, 4);
            let diff = (all - Tensor::cat(steps, 1))
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(diff <= 1e-5, "{position:?}: {diff}");
        }
    }

    #[test]
    fn too_long_requests_are_errors() {
        let device = Device::flex();
        let model = tiny(NormPosition::Post).init(&device);
        let src = Tensor::<2, Int>::from_ints([[3; 40]], &device);
        assert_eq!(
            model.greedy_decode(src, None, &GreedyOptions::new(1, 2, 5)),
            Err(DecodeError::SourceTooLong {
                len: 40,
                max_len: 32
            })
        );
        let src = Tensor::<2, Int>::from_ints([[3, 4]], &device);
        assert!(
            model
                .greedy_decode(src, None, &GreedyOptions::new(1, 2, 33))
                .is_err()
        );
    }
}
