//! Greedy decoding: at each step, the most probable next token.

use burn::tensor::{Bool, Int, Tensor, TensorData};
use tf_attention::Weights;
use tf_layers::DecoderLayerWeights;

use crate::cache::DecodeContext;
use crate::heads::{BlockId, in_block_order};
use crate::next_token::without_token;
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
    /// A token never generated (`transformers`' `bad_words_ids` of one token: opus-mt's pad).
    /// Default: none.
    pub forbidden: Option<usize>,
    /// Decode step by step against a key/value cache (default), or recompute the whole prefix
    /// each step. Both give the same tokens; the cache makes a step's cost flat in its position.
    pub steps: Steps,
}

impl GreedyOptions {
    /// Cached decoding of at most `max_len` tokens between `bos` and `eos`.
    pub fn new(bos: usize, eos: usize, max_len: usize) -> Self {
        Self {
            bos,
            eos,
            max_len,
            forbidden: None,
            steps: Steps::Cached,
        }
    }

    /// The same options, never generating `forbidden`.
    pub fn with_forbidden(self, forbidden: Option<usize>) -> Self {
        Self { forbidden, ..self }
    }
}

/// How each decoding step sees the tokens before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Steps {
    /// Against a [`DecoderCache`](crate::DecoderCache): only the newest token goes in.
    #[default]
    Cached,
    /// The whole prefix again each step (the reference the cache is tested against).
    Recomputed,
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

/// Captured attention weights of every layer and head: of one teacher-forced forward pass
/// ([`Transformer::forward_with_attention`]), or behind a greedy decoding, each step's rows
/// assembled into full matrices. Step `t`'s query is the decoder input at position `t` (BOS, then the tokens
/// generated before step `t`); it predicts generated token `t`. A sequence that finished early
/// has rows past its EOS too (the batch decodes until every sequence has finished).
#[derive(Clone, Debug)]
pub struct CapturedAttention {
    /// Per encoder layer, `[batch, n_heads, src_len, src_len]`.
    pub encoder_self: Vec<Tensor<4>>,
    /// Per decoder layer, `[batch, n_heads, steps, steps]`; zero right of the diagonal.
    pub decoder_self: Vec<Tensor<4>>,
    /// Per decoder layer, `[batch, n_heads, steps, src_len]`.
    pub cross: Vec<Tensor<4>>,
}

impl CapturedAttention {
    /// Every block's weights `[batch, n_heads, q_len, k_len]`, in the order of
    /// [`Transformer::attention_blocks`].
    pub fn into_blocks(self) -> Vec<(BlockId, Tensor<4>)> {
        in_block_order(self.encoder_self, self.decoder_self, self.cross)
    }

    /// Appends one step's rows.
    fn push_step(rows: &mut Vec<Vec<(Tensor<4>, Tensor<4>)>>, weights: Vec<DecoderLayerWeights>) {
        // The newest query's row of each layer: [batch, n_heads, 1, k_len].
        let last = |w: Tensor<4>| {
            let q_len = w.dims()[2];
            w.narrow(2, q_len - 1, 1)
        };
        rows.push(
            weights
                .into_iter()
                .map(|w| (last(w.self_attn), last(w.cross_attn)))
                .collect(),
        );
    }

    /// Stacks the steps' rows, the self-attention ones padded with zeros to `steps` keys.
    fn assemble(encoder_self: Vec<Tensor<4>>, rows: Vec<Vec<(Tensor<4>, Tensor<4>)>>) -> Self {
        let steps = rows.len();
        let n_layers = rows.first().map_or(0, Vec::len);
        let mut decoder_self = vec![Vec::with_capacity(steps); n_layers];
        let mut cross = vec![Vec::with_capacity(steps); n_layers];
        for step in rows {
            for (layer, (self_row, cross_row)) in step.into_iter().enumerate() {
                let [batch, n_heads, _, k_len] = self_row.dims();
                let future = Tensor::zeros([batch, n_heads, 1, steps - k_len], &self_row.device());
                decoder_self[layer].push(Tensor::cat(vec![self_row, future], 3)); // [b, h, 1, steps]
                cross[layer].push(cross_row);
            }
        }
        let stack =
            |layers: Vec<Vec<Tensor<4>>>| layers.into_iter().map(|r| Tensor::cat(r, 2)).collect();
        Self {
            encoder_self,
            decoder_self: stack(decoder_self),
            cross: stack(cross),
        }
    }
}

impl DecodeError {
    /// A source of `len` tokens fits a model of `max_len` positions, or the error saying not.
    pub(crate) fn check_source(len: usize, max_len: usize) -> Result<(), Self> {
        if len > max_len {
            return Err(Self::SourceTooLong { len, max_len });
        }
        Ok(())
    }
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
        Ok(self.greedy(src, src_pad_mask, options, Weights::Omit)?.0)
    }

    /// [`greedy_decode`](Self::greedy_decode), also returning the attention weights of every
    /// layer and head behind each step (explicit attention path).
    ///
    /// # Shapes
    /// As [`greedy_decode`](Self::greedy_decode); the weights as [`CapturedAttention`] says.
    pub fn greedy_decode_with_attention(
        &self,
        src: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        options: &GreedyOptions,
    ) -> Result<(Vec<Vec<usize>>, CapturedAttention), DecodeError> {
        let (tokens, attention) = self.greedy(src, src_pad_mask, options, Weights::Return)?;
        Ok((tokens, attention.expect("captured")))
    }

    fn greedy(
        &self,
        src: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        options: &GreedyOptions,
        wanted: Weights,
    ) -> Result<(Vec<Vec<usize>>, Option<CapturedAttention>), DecodeError> {
        let [batch, src_len] = src.dims();
        let max_len = self.max_len();
        DecodeError::check_source(src_len, max_len)?;
        // The decoder's input at the last step is BOS and max_len - 1 generated tokens.
        if options.max_len > max_len {
            return Err(DecodeError::TargetTooLong {
                len: options.max_len,
                max_len,
            });
        }
        let device = src.device();
        let (memory, encoder_self) = match wanted {
            Weights::Return => self.encode_with_attention(src, src_pad_mask),
            Weights::Omit => (self.encode(src, src_pad_mask), Vec::new()),
        };
        let mut rows = Vec::new();
        let mut cache = (options.steps == Steps::Cached).then(|| self.new_cache(&memory));

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
            let context = match cache.as_mut() {
                Some(cache) => DecodeContext::Cached(cache),
                None => DecodeContext::Full(&memory),
            };
            let logits = match wanted {
                Weights::Return => {
                    let (logits, weights) = self.decode_with_attention(input, context, None);
                    CapturedAttention::push_step(&mut rows, weights);
                    logits
                }
                Weights::Omit => self.decode(input, context, None),
            };
            let [_, steps, vocab] = logits.dims();
            let last = logits
                .narrow(1, steps - 1, 1) // [batch, 1, vocab]
                .reshape([batch, vocab]);
            let last = match options.forbidden {
                Some(token) => without_token(last, token),
                None => last,
            };
            let next = last
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
        let tokens = tokens
            .into_iter()
            .map(|seq| {
                seq.into_iter()
                    .skip(1)
                    .map(|t| t as usize)
                    .take_while(|&t| t != options.eos)
                    .collect()
            })
            .collect();
        let attention =
            (wanted == Weights::Return).then(|| CapturedAttention::assemble(encoder_self, rows));
        Ok((tokens, attention))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransformerConfig;
    use burn::tensor::Device;
    use tf_attention::max_abs_diff;
    use tf_layers::{NormPosition, PositionalEncodingKind, TransformerLayerConfig};

    fn tiny(position: NormPosition) -> TransformerConfig {
        TransformerConfig::tiny(11, 11)
            .with_layer(TransformerLayerConfig::tiny().with_norm_position(position))
    }

    #[test]
    fn cached_decoding_gives_the_tokens_and_logits_of_full_recomputation() {
        let device = Device::flex();
        for (position, positional) in [
            (NormPosition::Post, PositionalEncodingKind::Sinusoidal),
            (NormPosition::Pre, PositionalEncodingKind::Sinusoidal),
            (NormPosition::Post, PositionalEncodingKind::Rotary),
            (NormPosition::Pre, PositionalEncodingKind::Rotary),
        ] {
            device.seed(7);
            let model = tiny(position)
                .with_positional_encoding(positional)
                .init(&device);
            let src = Tensor::<2, Int>::from_ints([[3, 4, 5, 6], [7, 8, 0, 0]], &device);
            let pad = src.clone().equal_elem(0);
            let mut options = GreedyOptions::new(1, 2, 12);
            let cached = model
                .greedy_decode(src.clone(), Some(pad.clone()), &options)
                .unwrap();
            options.steps = Steps::Recomputed;
            let full = model
                .greedy_decode(src.clone(), Some(pad.clone()), &options)
                .unwrap();
            assert_eq!(cached, full, "{position:?}, {positional:?}");

            // Logits of a fixed prefix, step by step vs all at once.
            let tgt = Tensor::<2, Int>::from_ints([[1, 5, 9, 4], [1, 3, 3, 10]], &device);
            let memory = model.encode(src, Some(pad));
            let all = model.decode(tgt.clone(), DecodeContext::Full(&memory), None);
            let mut cache = model.new_cache(&memory);
            let steps: Vec<Tensor<3>> = (0..4)
                .map(|t| {
                    let step = tgt.clone().narrow(1, t, 1);
                    model.decode(step, DecodeContext::Cached(&mut cache), None)
                })
                .collect();
            assert_eq!(cache.len, 4);
            let diff = (all - Tensor::cat(steps, 1))
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(diff <= 1e-5, "{position:?}, {positional:?}: {diff}");
        }
    }

    #[test]
    fn captured_steps_equal_the_teacher_forced_weights_of_the_output() {
        let device = Device::flex();
        device.seed(11);
        let model = tiny(NormPosition::Post).init(&device);
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5, 6, 7]], &device);
        for steps in [Steps::Cached, Steps::Recomputed] {
            let options = GreedyOptions {
                steps,
                ..GreedyOptions::new(1, 2, 6)
            };
            let (tokens, captured) = model
                .greedy_decode_with_attention(src.clone(), None, &options)
                .unwrap();
            assert_eq!(
                tokens,
                model.greedy_decode(src.clone(), None, &options).unwrap()
            );
            // The decoder inputs of every step: BOS and the tokens generated before the last.
            let steps = captured.cross[0].dims()[2];
            let mut inputs = vec![1i64];
            inputs.extend(tokens[0].iter().map(|&t| t as i64));
            inputs.resize(steps, 2); // a step that produced EOS had EOS's predecessor as input
            let tgt = Tensor::<2, Int>::from_data(
                TensorData::new(inputs[..steps].to_vec(), [1, steps]),
                &device,
            );
            let full = model.forward_with_attention(src.clone(), tgt, None, None);
            let diff = |a: &Tensor<4>, b: &Tensor<4>| max_abs_diff(a.clone(), b.clone());
            let full = full.attention;
            for layer in 0..2 {
                assert!(diff(&captured.encoder_self[layer], &full.encoder_self[layer]) <= 1e-6);
                assert!(diff(&captured.decoder_self[layer], &full.decoder_self[layer]) <= 1e-5);
                assert!(diff(&captured.cross[layer], &full.cross[layer]) <= 1e-5);
            }
            // Rows are distributions; the future is zero.
            let sums = captured.decoder_self[0]
                .clone()
                .sum_dim(3)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            assert!(sums.iter().all(|s| (s - 1.0).abs() <= 1e-5));
            let upper = captured.decoder_self[0]
                .clone()
                .narrow(2, 0, 1)
                .narrow(3, 1, steps - 1);
            assert_eq!(upper.abs().sum().into_scalar::<f32>(), 0.0);
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
