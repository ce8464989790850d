//! The model's configuration, with the paper's base and big models as presets (Table 3).

use burn::config::Config;
use burn::tensor::Device;
use tf_attention::ConfigError;
use tf_attention::error::check_nonzero;
use tf_layers::{
    FeedForwardActivation, NormPosition, PositionalEncodingConfig, PositionalEncodingKind,
    TransformerLayerConfig,
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

/// Configuration of a [`Transformer`]. Defaults are the paper's base model (Table 3):
/// `d_model` 512, 8 heads, 6 + 6 layers, `d_ff` 2048, dropout 0.1, ReLU, post-norm,
/// sinusoidal positions.
#[derive(Config, Debug)]
pub struct TransformerConfig {
    /// Source vocabulary size.
    pub src_vocab: usize,
    /// Target vocabulary size.
    pub tgt_vocab: usize,
    /// Model width. Default: 512.
    #[config(default = 512)]
    pub d_model: usize,
    /// Attention heads. Default: 8.
    #[config(default = 8)]
    pub n_heads: usize,
    /// Encoder layers. Default: 6.
    #[config(default = 6)]
    pub n_encoder_layers: usize,
    /// Decoder layers. Default: 6.
    #[config(default = 6)]
    pub n_decoder_layers: usize,
    /// Feed-forward inner width. Default: 2048.
    #[config(default = 2048)]
    pub d_ff: usize,
    /// Dropout on sublayer outputs and on the embedding + position sums (§5.4). Default: 0.1.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Dropout on attention weights. Default: 0.0 (the paper uses none).
    #[config(default = 0.0)]
    pub attention_dropout: f64,
    /// Feed-forward non-linearity. Default: ReLU.
    #[config(default = "FeedForwardActivation::Relu")]
    pub activation: FeedForwardActivation,
    /// Post-norm (paper) or pre-norm. Default: post-norm.
    #[config(default = "NormPosition::Post")]
    pub norm_position: NormPosition,
    /// Final LayerNorm on each stack. Default: only with pre-norm.
    #[config(default = "FinalNorm::Auto")]
    pub final_norm: FinalNorm,
    /// LayerNorm epsilon. Default: 1e-5.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Sinusoidal (paper) or learned positions. Default: sinusoidal.
    #[config(default = "PositionalEncodingKind::Sinusoidal")]
    pub positional_encoding: PositionalEncodingKind,
    /// Longest source or target sequence, in tokens. Default: 1024.
    #[config(default = 1024)]
    pub max_len: usize,
    /// Shared embedding matrices. Default: target embedding = output projection.
    #[config(default = "EmbeddingSharing::TargetOutput")]
    pub embedding_sharing: EmbeddingSharing,
    /// Heads per attention block after pruning (each of width `d_model / n_heads`). Default:
    /// none, every block has `n_heads`.
    #[config(default = "None")]
    pub head_counts: Option<HeadCounts>,
}

impl TransformerConfig {
    /// The base model of Table 3 (65M parameters with a 37k shared vocabulary).
    pub fn base(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self::new(src_vocab, tgt_vocab)
    }

    /// The big model of Table 3: `d_model` 1024, 16 heads, `d_ff` 4096, dropout 0.3.
    pub fn big(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self::new(src_vocab, tgt_vocab)
            .with_d_model(1024)
            .with_n_heads(16)
            .with_d_ff(4096)
            .with_dropout(0.3)
    }

    /// A small model for synthetic tasks and tests: `d_model` 64, 4 heads, 2 + 2 layers,
    /// `d_ff` 256. Not from the paper.
    pub fn tiny(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self::new(src_vocab, tgt_vocab)
            .with_d_model(64)
            .with_n_heads(4)
            .with_n_encoder_layers(2)
            .with_n_decoder_layers(2)
            .with_d_ff(256)
    }

    /// The configuration each encoder and decoder layer is built from.
    pub fn layer(&self) -> TransformerLayerConfig {
        TransformerLayerConfig::new()
            .with_d_model(self.d_model)
            .with_n_heads(self.n_heads)
            .with_d_ff(self.d_ff)
            .with_dropout(self.dropout)
            .with_attention_dropout(self.attention_dropout)
            .with_activation(self.activation)
            .with_norm_position(self.norm_position)
            .with_layer_norm_eps(self.layer_norm_eps)
    }

    /// The positional encoding's configuration.
    pub fn positional(&self) -> PositionalEncodingConfig {
        PositionalEncodingConfig::new(self.d_model)
            .with_max_len(self.max_len)
            .with_kind(self.positional_encoding)
    }

    /// Whether the stacks end with a LayerNorm.
    pub fn has_final_norm(&self) -> bool {
        match self.final_norm {
            FinalNorm::Auto => self.norm_position == NormPosition::Pre,
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
                vec![self.n_heads; self.n_encoder_layers],
                vec![self.n_heads; self.n_decoder_layers],
                vec![self.n_heads; self.n_decoder_layers],
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
        self.layer().validate()?;
        if let Some(counts) = &self.head_counts {
            for (what, counts, layers) in [
                ("encoder_self", &counts.encoder_self, self.n_encoder_layers),
                ("decoder_self", &counts.decoder_self, self.n_decoder_layers),
                ("cross", &counts.cross, self.n_decoder_layers),
            ] {
                if counts.len() != layers || counts.iter().any(|&n| n == 0 || n > self.n_heads) {
                    return Err(ConfigError::new(
                        NAME,
                        format!(
                            "head_counts.{what} must give 1..={} heads for each of {layers} layers, got {counts:?}",
                            self.n_heads
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
        assert_eq!(
            (
                c.d_model,
                c.n_heads,
                c.n_encoder_layers,
                c.n_decoder_layers,
                c.d_ff,
                c.dropout
            ),
            (512, 8, 6, 6, 2048, 0.1)
        );
        assert!(!c.has_final_norm());
        assert!(c.with_norm_position(NormPosition::Pre).has_final_norm());
        assert!(TransformerConfig::big(10, 10).validate().is_ok());
    }

    #[test]
    fn invalid_models_are_refused_with_a_message() {
        let err = TransformerConfig::tiny(10, 10)
            .with_n_heads(5)
            .validate()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("d_model (64) must be divisible by n_heads (5)")
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
            TransformerConfig::tiny(10, 10)
                .with_dropout(1.0)
                .validate()
                .is_err()
        );
        let counts = HeadCounts::new(vec![4, 2], vec![1, 4], vec![4]);
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
        assert_eq!(config.heads_per_layer().2, vec![4, 4]);
    }
}
