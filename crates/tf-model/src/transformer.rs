//! The encoder–decoder Transformer (§3, Figure 1).

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor};
use tf_attention::fused_linear::{self, Activation};
use tf_attention::{HookPoint, Hooks, SelfAttentionCache, Weights};
use tf_layers::{DecoderLayerWeights, PositionalEncoding};

use crate::cache::{DecodeContext, DecoderCache};
use crate::config::{EmbeddingSharing, TransformerConfig};
use crate::decoder::{Decoder, DecoderOptions};
use crate::embedding::ScaledEmbedding;
use crate::encoder::Encoder;
use crate::greedy::CapturedAttention;

/// The encoder–decoder Transformer. Build it with [`TransformerConfig::init`].
#[derive(Module, Debug)]
pub struct Transformer {
    /// Source token embedding (also the target's and the output projection with
    /// [`EmbeddingSharing::All`]).
    pub src_embedding: ScaledEmbedding,
    /// Target token embedding; `None` when it is the source embedding.
    pub tgt_embedding: Option<ScaledEmbedding>,
    /// Output projection to target logits; `None` when tied to the target embedding.
    pub generator: Option<Linear>,
    /// `[tgt_vocab]` bias added to the tied output projection's logits (MarianMT's
    /// `final_logits_bias`); `None` without one, and always with a `generator`, which has its
    /// own.
    pub output_bias: Option<Param<Tensor<1>>>,
    /// Position information added to both embeddings.
    pub positional: PositionalEncoding,
    /// Dropout on the embedding + position sums (§5.4).
    pub embedding_dropout: Dropout,
    /// The encoder stack.
    pub encoder: Encoder,
    /// The decoder stack.
    pub decoder: Decoder,
}

/// The encoder's output and which source positions are padding: what the decoder attends to.
#[derive(Clone, Debug)]
pub struct Memory {
    /// # Shapes
    /// `[batch, src_len, d_model]`
    pub output: Tensor<3>,
    /// # Shapes
    /// `[batch, src_len]`, `true` = padding
    pub pad_mask: Option<Tensor<2, Bool>>,
}

/// Logits and every attention block's weights, from [`Transformer::forward_with_attention`].
#[derive(Clone, Debug)]
pub struct TransformerOutput {
    /// `[batch, tgt_len, tgt_vocab]`.
    pub logits: Tensor<3>,
    /// Every layer's and head's weights (`steps` = `tgt_len`).
    pub attention: CapturedAttention,
}

impl Transformer {
    /// Builds the modules of a validated `config`; use [`TransformerConfig::init`].
    pub(crate) fn new(config: &TransformerConfig, device: &Device) -> Self {
        let d_model = config.layer.d_model;
        let embedding =
            |vocab| ScaledEmbedding::new(vocab, d_model, config.scale_embedding, device);
        let (tgt_embedding, generator) = match config.embedding_sharing {
            EmbeddingSharing::Separate => (
                Some(embedding(config.tgt_vocab)),
                Some(LinearConfig::new(d_model, config.tgt_vocab).init(device)),
            ),
            EmbeddingSharing::TargetOutput => (Some(embedding(config.tgt_vocab)), None),
            EmbeddingSharing::All => (None, None),
        };
        let layer = &config.stack_layer();
        let (encoder_heads, decoder_heads, cross_heads) = config.heads_per_layer();
        Self {
            src_embedding: embedding(config.src_vocab),
            tgt_embedding,
            generator,
            output_bias: config
                .output_bias
                .then(|| Param::from_tensor(Tensor::zeros([config.tgt_vocab], device))),
            positional: config.positional().init(device),
            embedding_dropout: DropoutConfig::new(layer.dropout).init(),
            encoder: Encoder::with_heads(layer, &encoder_heads, config.has_final_norm(), device),
            decoder: Decoder::with_heads(
                layer,
                &decoder_heads,
                &cross_heads,
                config.has_final_norm(),
                device,
            ),
        }
    }

    /// Longest source or target sequence the positional encoding covers.
    pub fn max_len(&self) -> usize {
        self.positional.max_len
    }

    /// Longest source the programs built on this model accept: one position fewer than
    /// [`max_len`](Self::max_len), so that an output as long as its source, and its EOS, fits
    /// the decoder's positions (what a copy needs; a translation's output is limited further by
    /// [`OutputLimit`](crate::OutputLimit)).
    pub fn max_source_len(&self) -> usize {
        self.max_len().saturating_sub(1)
    }

    /// Teacher-forced logits of every target position.
    ///
    /// # Shapes
    /// - `src`: `[batch, src_len]` token ids
    /// - `tgt`: `[batch, tgt_len]` token ids (the target shifted right, starting with BOS)
    /// - `src_pad_mask`: `[batch, src_len]`, `true` = padding
    /// - `tgt_pad_mask`: `[batch, tgt_len]`, `true` = padding
    /// - returns `[batch, tgt_len, tgt_vocab]`
    pub fn forward(
        &self,
        src: Tensor<2, Int>,
        tgt: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        tgt_pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<3> {
        let memory = self.encode(src, src_pad_mask);
        self.decode(tgt, DecodeContext::Full(&memory), tgt_pad_mask)
    }

    /// [`forward`](Self::forward), also returning the attention weights of every layer and head.
    /// Takes the explicit attention path; `forward` stays on the fused one.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub fn forward_with_attention(
        &self,
        src: Tensor<2, Int>,
        tgt: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        tgt_pad_mask: Option<Tensor<2, Bool>>,
    ) -> TransformerOutput {
        let (memory, encoder_self_attn) =
            self.encode_inner(src, src_pad_mask, Weights::Return, None);
        let layer_memory = self.decoder.memory(memory.output, memory.pad_mask);
        let options = DecoderOptions {
            tgt_pad_mask,
            weights: Weights::Return,
            ..Default::default()
        };
        let (logits, decoder) = self.decode_inner(tgt, &layer_memory, 0, options);
        let (decoder_self, cross) = decoder
            .into_iter()
            .map(|w| (w.self_attn, w.cross_attn))
            .unzip();
        TransformerOutput {
            logits,
            attention: CapturedAttention {
                encoder_self: encoder_self_attn,
                decoder_self,
                cross,
            },
        }
    }

    /// Runs the encoder.
    ///
    /// # Shapes
    /// - `src`: `[batch, src_len]` token ids
    /// - `src_pad_mask`: `[batch, src_len]`, `true` = padding
    pub fn encode(&self, src: Tensor<2, Int>, src_pad_mask: Option<Tensor<2, Bool>>) -> Memory {
        self.encode_inner(src, src_pad_mask, Weights::Omit, None).0
    }

    /// A cache for decoding against `memory` step by step; projects the cross-attention keys and
    /// values of every decoder layer once.
    pub fn new_cache(&self, memory: &Memory) -> DecoderCache {
        DecoderCache {
            self_attn: vec![SelfAttentionCache::default(); self.decoder.layers.len()],
            memory: self
                .decoder
                .memory(memory.output.clone(), memory.pad_mask.clone()),
            len: 0,
        }
    }

    /// Logits of the target positions given, against `context` (see [`DecodeContext`]: the
    /// whole prefix against the encoder's memory, or the new positions against a cache).
    ///
    /// # Shapes
    /// - `tgt`: `[batch, tgt_len]` token ids
    /// - `tgt_pad_mask`: `[batch, k_len]`, `true` = padding, `k_len = cache.len + tgt_len`
    ///   (`tgt_len` without a cache)
    /// - returns `[batch, tgt_len, tgt_vocab]`
    pub fn decode(
        &self,
        tgt: Tensor<2, Int>,
        context: DecodeContext<'_>,
        tgt_pad_mask: Option<Tensor<2, Bool>>,
    ) -> Tensor<3> {
        self.decode_in(tgt, context, tgt_pad_mask, Weights::Omit).0
    }

    /// [`decode`](Self::decode), also returning each decoder layer's attention weights of the
    /// positions given (explicit attention path).
    ///
    /// # Shapes
    /// As [`decode`](Self::decode); the weights are `[batch, n_heads, tgt_len, k_len]` with
    /// `k_len` the positions decoded so far (self-attention) or `src_len` (cross-attention).
    pub fn decode_with_attention(
        &self,
        tgt: Tensor<2, Int>,
        context: DecodeContext<'_>,
        tgt_pad_mask: Option<Tensor<2, Bool>>,
    ) -> (Tensor<3>, Vec<DecoderLayerWeights>) {
        self.decode_in(tgt, context, tgt_pad_mask, Weights::Return)
    }

    fn decode_in(
        &self,
        tgt: Tensor<2, Int>,
        context: DecodeContext<'_>,
        tgt_pad_mask: Option<Tensor<2, Bool>>,
        wanted: Weights,
    ) -> (Tensor<3>, Vec<DecoderLayerWeights>) {
        let [_, tgt_len] = tgt.dims();
        match context {
            DecodeContext::Cached(cache) => {
                let offset = cache.len;
                let options = DecoderOptions {
                    tgt_pad_mask,
                    caches: Some(&mut cache.self_attn),
                    weights: wanted,
                    hooks: None,
                };
                let out = self.decode_inner(tgt, &cache.memory, offset, options);
                cache.len += tgt_len;
                out
            }
            DecodeContext::Full(memory) => {
                let layer_memory = self
                    .decoder
                    .memory(memory.output.clone(), memory.pad_mask.clone());
                let options = DecoderOptions {
                    tgt_pad_mask,
                    weights: wanted,
                    ..Default::default()
                };
                self.decode_inner(tgt, &layer_memory, 0, options)
            }
        }
    }

    /// Runs the encoder, also returning each layer's self-attention weights
    /// `[batch, n_heads, src_len, src_len]` (explicit attention path).
    ///
    /// # Shapes
    /// As [`encode`](Self::encode).
    pub fn encode_with_attention(
        &self,
        src: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
    ) -> (Memory, Vec<Tensor<4>>) {
        self.encode_inner(src, src_pad_mask, Weights::Return, None)
    }

    /// The target embedding (the source one when shared).
    pub fn tgt_embedding(&self) -> &ScaledEmbedding {
        self.tgt_embedding.as_ref().unwrap_or(&self.src_embedding)
    }

    /// Embedding × √d_model + positions from `offset` (the hook point `point`), then dropout
    /// (§3.4, §3.5, §5.4).
    ///
    /// # Shapes
    /// - `tokens`: `[batch, seq_len]`
    /// - returns `[batch, seq_len, d_model]`
    fn embed(
        &self,
        embedding: &ScaledEmbedding,
        tokens: Tensor<2, Int>,
        offset: usize,
        hooks: Option<(&mut Hooks, HookPoint)>,
    ) -> Tensor<3> {
        let x = self.positional.forward(embedding.forward(tokens), offset);
        let x = match hooks {
            Some((hooks, point)) => hooks.rank3(point, x),
            None => x,
        };
        tf_layers::fused_dropout::dropout(&self.embedding_dropout, x)
    }

    pub(crate) fn encode_inner(
        &self,
        src: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        wanted: Weights,
        mut hooks: Option<&mut Hooks>,
    ) -> (Memory, Vec<Tensor<4>>) {
        let embed_hook = hooks.as_deref_mut().map(|h| (h, HookPoint::EmbedSource));
        let x = self.embed(&self.src_embedding, src, 0, embed_hook);
        let (output, weights) = self
            .encoder
            .forward_hooked(x, src_pad_mask.clone(), wanted, hooks);
        let memory = Memory {
            output,
            pad_mask: src_pad_mask,
        };
        (memory, weights)
    }

    /// The decoder from position `offset` and the output projection, with the hooks of
    /// `options` also at `embed.tgt` and `logits`.
    pub(crate) fn decode_inner(
        &self,
        tgt: Tensor<2, Int>,
        layer_memory: &[tf_layers::CrossAttentionMemory],
        offset: usize,
        options: DecoderOptions<'_>,
    ) -> (Tensor<3>, Vec<DecoderLayerWeights>) {
        let mut options = options;
        let embed_hook = options
            .hooks
            .as_deref_mut()
            .map(|h| (h, HookPoint::EmbedTarget));
        let x = self.embed(self.tgt_embedding(), tgt, offset, embed_hook);
        let mut hooks = options.hooks.take();
        let options = DecoderOptions {
            hooks: hooks.as_deref_mut(),
            ..options
        };
        let (x, weights) = self.decoder.forward(x, layer_memory, options);
        let logits = self.project(x);
        let logits = match hooks {
            Some(hooks) => hooks.rank3(HookPoint::Logits, logits),
            None => logits,
        };
        (logits, weights)
    }

    /// The pre-softmax projection, tied to the target embedding (plus the output bias, if any)
    /// unless a generator exists.
    ///
    /// # Shapes
    /// - `x`: `[batch, tgt_len, d_model]`
    /// - returns `[batch, tgt_len, tgt_vocab]`
    pub(crate) fn project(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.generator {
            Some(generator) => fused_linear::apply(generator, x, Activation::Identity),
            None => fused_linear::linear(
                x,
                self.tgt_embedding().weight().transpose(), // x Eᵀ
                self.output_bias.as_ref().map(Param::val),
                Activation::Identity,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EmbeddingSharing, TransformerConfig};
    use burn::tensor::Device;
    use tf_attention::max_abs_diff;

    fn tiny() -> TransformerConfig {
        TransformerConfig::tiny(13, 13).with_max_len(16)
    }

    #[test]
    fn changing_a_future_target_token_leaves_earlier_logits_unchanged() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5]], &device);
        let a = model.forward(
            src.clone(),
            Tensor::from_ints([[1, 6, 7, 8]], &device),
            None,
            None,
        );
        let b = model.forward(src, Tensor::from_ints([[1, 6, 7, 12]], &device), None, None);
        let early = |t: Tensor<3>| t.narrow(1, 0, 3);
        let diff = (early(a.clone()) - early(b.clone()))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff <= 1e-6, "{diff}");
        let last = (a.narrow(1, 3, 1) - b.narrow(1, 3, 1))
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(last > 1e-4, "the changed position itself must change");
    }

    #[test]
    fn source_padding_does_not_change_the_logits() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let tgt = Tensor::<2, Int>::from_ints([[1, 6, 7]], &device);
        let alone = model.forward(
            Tensor::from_ints([[3, 4]], &device),
            tgt.clone(),
            None,
            None,
        );
        let src = Tensor::<2, Int>::from_ints([[3, 4, 0, 0]], &device);
        let padded = model.forward(src.clone(), tgt, Some(src.equal_elem(0)), None);
        let diff = max_abs_diff(alone, padded);
        assert!(diff <= 1e-5, "{diff}");
    }

    #[test]
    fn target_padding_does_not_change_the_logits_of_real_positions() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5]], &device);
        let alone = model.forward(
            src.clone(),
            Tensor::from_ints([[1, 6, 7]], &device),
            None,
            None,
        );
        let tgt = Tensor::<2, Int>::from_ints([[1, 6, 7, 0, 0]], &device);
        let padded = model.forward(src, tgt.clone(), None, Some(tgt.equal_elem(0)));
        let diff = max_abs_diff(padded.narrow(1, 0, 3), alone);
        assert!(diff <= 1e-5, "{diff}");
    }

    #[test]
    fn embedding_sharing_removes_matrices() {
        let device = Device::flex();
        let count = |sharing| {
            tiny()
                .with_embedding_sharing(sharing)
                .init(&device)
                .num_params()
        };
        let (separate, target_output, all) = (
            count(EmbeddingSharing::Separate),
            count(EmbeddingSharing::TargetOutput),
            count(EmbeddingSharing::All),
        );
        // A 13 × 16 matrix (and the generator's 13 biases) per sharing step.
        assert_eq!(separate - target_output, 13 * 16 + 13);
        assert_eq!(target_output - all, 13 * 16);
    }

    #[test]
    fn the_output_bias_is_added_to_every_positions_logits() {
        let device = Device::flex();
        let config = tiny().with_output_bias(true);
        let mut model = config.init(&device);
        assert_eq!(model.num_params(), tiny().init(&device).num_params() + 13);
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5]], &device);
        let tgt = Tensor::<2, Int>::from_ints([[1, 6]], &device);
        let before = model.forward(src.clone(), tgt.clone(), None, None);
        let bias: Vec<f32> = (0..13).map(|v| v as f32 * 0.5).collect();
        model.output_bias = Some(Param::from_tensor(Tensor::from_floats(
            bias.as_slice(),
            &device,
        )));
        let after = model.forward(src, tgt, None, None);
        let added = (after - before).into_data().try_to_vec::<f32>().unwrap();
        for (i, value) in added.iter().enumerate() {
            assert!((value - bias[i % 13]).abs() < 1e-5, "{i}: {value}");
        }
    }

    #[test]
    fn captured_weights_have_every_layer_and_sum_to_one() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5]], &device);
        let tgt = Tensor::<2, Int>::from_ints([[1, 6]], &device);
        let out = model.forward_with_attention(src.clone(), tgt.clone(), None, None);
        assert_eq!(out.attention.encoder_self.len(), 2);
        assert_eq!(out.attention.decoder_self.len(), 2);
        assert_eq!(out.attention.cross[0].dims(), [1, 2, 2, 3]);
        let sums = out.attention.cross[1].clone().sum_dim(3);
        let err = (sums - 1.0).abs().max().into_scalar::<f32>();
        assert!(err <= 1e-5);
        let fast = model.forward(src, tgt, None, None);
        let diff = max_abs_diff(fast, out.logits);
        assert!(diff <= 1e-5, "{diff}");
    }
}
