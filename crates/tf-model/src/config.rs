//! The model's configuration, with the paper's base and big models as presets (Table 3).

use burn::config::Config;
use burn::tensor::Device;
use tf_attention::ConfigError;
use tf_attention::error::check_nonzero;
use tf_layers::{
    NormPosition, PositionalEncodingConfig, PositionalEncodingKind, TransformerLayerConfig,
};

use crate::transformer::Transformer;

/// Which embedding matrices are one and the same (§3.4).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum EmbeddingSharing {
    /// Source embedding, target embedding and output projection are all separate.
    Separate,
    /// The target embedding is the output (pre-softmax) projection.
    TargetOutput,
    /// Source embedding, target embedding and output projection are one matrix, as in the paper
    /// with its shared source–target vocabulary; needs `src_vocab == tgt_vocab`.
    All,
}

/// Whether a stack ends with a LayerNorm.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FinalNorm {
    /// Only with pre-norm layers, whose output is otherwise unnormalised.
    Auto,
    /// Always (PyTorch's `nn.Transformer` has one in both placements).
    Always,
    /// Never.
    Never,
}

/// How many heads each attention block has, once some were pruned
/// ([`Transformer::prune_heads`](crate::Transformer::prune_heads)); one count per layer.
#[derive(Config, Debug, PartialEq)]
pub struct HeadCounts {
    /// Each encoder layer's self-attention.
    pub encoder_self: Vec<usize>,
    /// Each decoder layer's self-attention.
    pub decoder_self: Vec<usize>,
    /// Each decoder layer's cross-attention.
    pub cross: Vec<usize>,
}

/// Configuration of a [`Transformer`]: the layer every encoder and decoder layer is built from
/// ([`TransformerLayerConfig`]), how many of each, and what surrounds the stacks. Defaults are
/// the paper's base model (Table 3): `d_model` 512, 8 heads, 6 + 6 layers, `d_ff` 2048,
/// dropout 0.1, ReLU, post-norm, sinusoidal positions.
#[derive(Config, Debug)]
pub struct TransformerConfig {
    /// Source vocabulary size.
    pub src_vocab: usize,
    /// Target vocabulary size.
    pub tgt_vocab: usize,
    /// What every encoder and decoder layer is made of: `d_model`, heads, `d_ff`, dropout,
    /// activation, norm placement, LayerNorm epsilon. Default: the base model's layer.
    #[config(default = "TransformerLayerConfig::new()")]
    pub layer: TransformerLayerConfig,
    /// Encoder layers. Default: 6.
    #[config(default = 6)]
    pub n_encoder_layers: usize,
    /// Decoder layers. Default: 6.
    #[config(default = 6)]
    pub n_decoder_layers: usize,
    /// Final LayerNorm on each stack. Default: only with pre-norm.
    #[config(default = "FinalNorm::Auto")]
    pub final_norm: FinalNorm,
    /// Sinusoidal (paper), learned, rotary (in the self-attentions) or no positions. Default:
    /// sinusoidal.
    #[config(default = "PositionalEncodingKind::Sinusoidal")]
    pub positional_encoding: PositionalEncodingKind,
    /// Longest source or target sequence, in tokens. Default: 1024.
    #[config(default = 1024)]
    pub max_len: usize,
    /// Shared embedding matrices. Default: target embedding = output projection.
    #[config(default = "EmbeddingSharing::TargetOutput")]
    pub embedding_sharing: EmbeddingSharing,
    /// Whether token embeddings are multiplied by `√d_model` (§3.4). Default: true, as in the
    /// paper; some models are trained without (`transformers`' `scale_embedding = false`).
    #[config(default = true)]
    pub scale_embedding: bool,
    /// Whether an output projection tied to an embedding adds a bias to the logits (MarianMT's
    /// `final_logits_bias`). Default: false, as in the paper. A separate output projection
    /// ([`EmbeddingSharing::Separate`]) always has its own bias.
    #[config(default = false)]
    pub output_bias: bool,
    /// Heads per attention block after pruning (each of the layer's head width). Default:
    /// none, every block has `n_heads`.
    #[config(default = "None")]
    pub head_counts: Option<HeadCounts>,
}

impl TransformerConfig {
    /// The base model of Table 3: 44M parameters besides the embeddings; 63M with one shared
    /// 37k-token embedding matrix (as the paper's WMT En-De model), more when the source,
    /// target and output matrices are separate.
    pub fn base(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self::new(src_vocab, tgt_vocab)
    }

    /// The big model of Table 3: `d_model` 1024, 16 heads, `d_ff` 4096, dropout 0.3.
    pub fn big(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self::new(src_vocab, tgt_vocab).with_layer(
            TransformerLayerConfig::new()
                .with_d_model(1024)
                .with_n_heads(16)
                .with_d_ff(4096)
                .with_dropout(0.3),
        )
    }

    /// The smallest model for tests and examples: [`TransformerLayerConfig::tiny`] layers
    /// (`d_model` 16, 2 heads, `d_ff` 32, no dropout), 2 + 2 of them, 32 positions. Not from
    /// the paper.
    pub fn tiny(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self::new(src_vocab, tgt_vocab)
            .with_layer(TransformerLayerConfig::tiny())
            .with_n_encoder_layers(2)
            .with_n_decoder_layers(2)
            .with_max_len(32)
    }

    /// Model width.
    pub fn d_model(&self) -> usize {
        self.layer.d_model
    }

    /// The same model with every dropout at 0: deterministic forward passes for gradients that
    /// must not depend on chance (head importance) and for tests.
    pub fn without_dropout(self) -> Self {
        let layer = self
            .layer
            .clone()
            .with_dropout(0.0)
            .with_attention_dropout(0.0);
        self.with_layer(layer)
    }

    /// The layer the stacks are built from: [`layer`](Self::layer), with its self-attentions
    /// rotating queries and keys over `max_len` positions when the positions are rotary.
    pub fn stack_layer(&self) -> TransformerLayerConfig {
        let rotary = self.positional_encoding.is_rotary().then_some(self.max_len);
        let layer = self.layer.clone();
        let rotary_max_len = rotary.or(layer.rotary_max_len);
        layer.with_rotary_max_len(rotary_max_len)
    }

    /// The positional encoding's configuration.
    pub fn positional(&self) -> PositionalEncodingConfig {
        PositionalEncodingConfig::new(self.layer.d_model)
            .with_max_len(self.max_len)
            .with_kind(self.positional_encoding)
    }

    /// Whether the stacks end with a LayerNorm.
    pub fn has_final_norm(&self) -> bool {
        match self.final_norm {
            FinalNorm::Auto => self.layer.norm_position == NormPosition::Pre,
            FinalNorm::Always => true,
            FinalNorm::Never => false,
        }
    }

    /// The heads of each layer's attention blocks: `(encoder self, decoder self, cross)`.
    pub fn heads_per_layer(&self) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        match &self.head_counts {
            Some(c) => (
                c.encoder_self.clone(),
                c.decoder_self.clone(),
                c.cross.clone(),
            ),
            None => (
                vec![self.layer.n_heads; self.n_encoder_layers],
                vec![self.layer.n_heads; self.n_decoder_layers],
                vec![self.layer.n_heads; self.n_decoder_layers],
            ),
        }
    }

    /// Checks that the config builds a working model, naming the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "TransformerConfig";
        check_nonzero(NAME, "src_vocab", self.src_vocab)?;
        check_nonzero(NAME, "tgt_vocab", self.tgt_vocab)?;
        check_nonzero(NAME, "n_encoder_layers", self.n_encoder_layers)?;
        check_nonzero(NAME, "n_decoder_layers", self.n_decoder_layers)?;
        if self.embedding_sharing == EmbeddingSharing::All && self.src_vocab != self.tgt_vocab {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "embedding_sharing All needs one vocabulary, got src_vocab {} and tgt_vocab {}",
                    self.src_vocab, self.tgt_vocab
                ),
            ));
        }
        if self.output_bias && self.embedding_sharing == EmbeddingSharing::Separate {
            return Err(ConfigError::new(
                NAME,
                "output_bias is for an output projection tied to an embedding; the separate one \
                 (embedding_sharing Separate) has its own bias",
            ));
        }
        self.stack_layer().validate()?;
        if let Some(counts) = &self.head_counts {
            for (what, counts, layers) in [
                ("encoder_self", &counts.encoder_self, self.n_encoder_layers),
                ("decoder_self", &counts.decoder_self, self.n_decoder_layers),
                ("cross", &counts.cross, self.n_decoder_layers),
            ] {
                let n_heads = self.layer.n_heads;
                if counts.len() != layers || counts.iter().any(|&n| n == 0 || n > n_heads) {
                    return Err(ConfigError::new(
                        NAME,
                        format!(
                            "head_counts.{what} must give 1..={n_heads} heads for each of {layers} layers, got {counts:?}"
                        ),
                    ));
                }
            }
        }
        self.positional().validate()
    }

    /// Builds the model, or says why the config cannot.
    pub fn try_init(&self, device: &Device) -> Result<Transformer, ConfigError> {
        self.validate()?;
        Ok(Transformer::new(self, device))
    }

    /// Builds the model.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails, with its message.
    pub fn init(&self, device: &Device) -> Transformer {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_base_model() {
        let c = TransformerConfig::base(100, 100);
        let l = &c.layer;
        assert_eq!(
            (
                l.d_model,
                l.n_heads,
                c.n_encoder_layers,
                c.n_decoder_layers,
                l.d_ff,
                l.dropout
            ),
            (512, 8, 6, 6, 2048, 0.1)
        );
        assert!(!c.has_final_norm());
        let pre = c.layer.clone().with_norm_position(NormPosition::Pre);
        assert!(c.with_layer(pre).has_final_norm());
        assert!(TransformerConfig::big(10, 10).validate().is_ok());
    }

    /// The count `base()`'s doc gives, by hand: an encoder layer is 4·(512² + 512) attention +
    /// (512·2048 + 2048 + 2048·512 + 512) feed-forward + 2·1024 LayerNorm = 3,152,384; a decoder
    /// layer has a second attention and LayerNorm: 4,204,032. Six of each: 44,138,496; one
    /// shared 37,000 × 512 embedding adds 18,944,000.
    #[test]
    fn the_base_model_has_the_parameters_its_doc_states() {
        use burn::module::Module;
        let device = Device::flex();
        let shared = TransformerConfig::base(37_000, 37_000)
            .with_embedding_sharing(EmbeddingSharing::All)
            .init(&device)
            .num_params();
        assert_eq!(shared, 44_138_496 + 18_944_000);
    }

    #[test]
    fn invalid_models_are_refused_with_a_message() {
        let tiny = TransformerConfig::tiny(10, 10);
        let err = tiny
            .clone()
            .with_layer(tiny.layer.clone().with_n_heads(5))
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("d_model (16) must be divisible by n_heads (5)")
        );
        let err = TransformerConfig::tiny(10, 12)
            .with_embedding_sharing(EmbeddingSharing::All)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("src_vocab 10 and tgt_vocab 12"));
        assert!(TransformerConfig::tiny(0, 10).validate().is_err());
        assert!(
            TransformerConfig::tiny(10, 10)
                .with_n_decoder_layers(0)
                .validate()
                .is_err()
        );
        assert!(
            TransformerConfig::tiny(10, 10)
                .with_max_len(0)
                .validate()
                .is_err()
        );
        assert!(
            tiny.clone()
                .with_layer(tiny.layer.clone().with_dropout(1.0))
                .validate()
                .is_err()
        );
        let err = TransformerConfig::tiny(10, 10)
            .with_embedding_sharing(EmbeddingSharing::Separate)
            .with_output_bias(true)
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("output_bias"), "{err}");
        let counts = HeadCounts::new(vec![2, 1], vec![1, 2], vec![2]);
        let err = TransformerConfig::tiny(10, 10)
            .with_head_counts(Some(counts))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("head_counts.cross"), "{err}");
    }

    #[test]
    fn a_config_saved_before_head_counts_existed_still_loads() {
        let mut json: serde_json::Value =
            serde_json::from_str(&TransformerConfig::tiny(10, 10).to_string()).unwrap();
        json.as_object_mut().unwrap().remove("head_counts");
        let config: TransformerConfig = serde_json::from_value(json).unwrap();
        assert_eq!(config.head_counts, None);
        assert_eq!(config.heads_per_layer().2, vec![2, 2]);
    }
}
