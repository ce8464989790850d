//! The one configuration both layer kinds share: an encoder layer and a decoder layer of a model
//! have the same widths, heads, dropout and norm placement.

use burn::config::Config;
use burn::tensor::Device;
use tf_attention::error::{check_nonzero, check_probability};
use tf_attention::{ConfigError, MultiHeadAttentionConfig};

use crate::decoder_layer::DecoderLayer;
use crate::encoder_layer::EncoderLayer;
use crate::feed_forward::{FeedForwardActivation, PositionWiseFeedForwardConfig};
use crate::residual::{NormPosition, ResidualNormConfig};

/// Configuration of an [`EncoderLayer`] or a [`DecoderLayer`]; defaults are the base model's
/// (Table 3): `d_model` 512, 8 heads, `d_ff` 2048, `P_drop` 0.1, ReLU, post-norm.
#[derive(Config, Debug)]
pub struct TransformerLayerConfig {
    /// Model width. Default: 512.
    #[config(default = 512)]
    pub d_model: usize,
    /// Attention heads; must divide `d_model` unless `head_width` is given. Default: 8.
    #[config(default = 8)]
    pub n_heads: usize,
    /// Width of one head, `d_k = d_v`. Default: `d_model / n_heads`. Smaller, the heads
    /// together are narrower than the model (Table 3, rows B: `d_k` reduced at fixed heads).
    #[config(default = "None")]
    pub head_width: Option<usize>,
    /// Feed-forward inner width. Default: 2048.
    #[config(default = 2048)]
    pub d_ff: usize,
    /// Dropout on every sublayer output (§5.4). Default: 0.1.
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
    /// LayerNorm epsilon. Default: 1e-5.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
    /// Rotary position embedding of the self-attentions' queries and keys (encoder and decoder;
    /// never cross-attention), covering this many positions. Default: none.
    #[config(default = "None")]
    pub rotary_max_len: Option<usize>,
}

impl TransformerLayerConfig {
    /// The smallest layer for tests and examples: `d_model` 16, 2 heads, `d_ff` 32, no
    /// dropout. Not from the paper.
    pub fn tiny() -> Self {
        Self::new()
            .with_d_model(16)
            .with_n_heads(2)
            .with_d_ff(32)
            .with_dropout(0.0)
    }

    /// Checks that the config builds working layers, naming the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "TransformerLayerConfig";
        self.self_attention().validate()?;
        self.feed_forward().validate()?;
        check_probability(NAME, "dropout", self.dropout)?;
        check_nonzero(NAME, "d_model", self.d_model)?;
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "layer_norm_eps must be positive, got {}",
                    self.layer_norm_eps
                ),
            ));
        }
        Ok(())
    }

    /// The self-attention sublayers' config: [`attention`](Self::attention), rotary if the
    /// layer is.
    pub fn self_attention(&self) -> MultiHeadAttentionConfig {
        self.attention().with_rotary_max_len(self.rotary_max_len)
    }

    /// A self-attention sublayer's config with `n_heads` heads (see
    /// [`attention_with_heads`](Self::attention_with_heads)).
    pub fn self_attention_with_heads(&self, n_heads: usize) -> MultiHeadAttentionConfig {
        self.attention_with_heads(n_heads)
            .with_rotary_max_len(self.rotary_max_len)
    }

    /// The cross-attention sublayer's config (and the self-attention's, without rotation).
    pub fn attention(&self) -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(self.d_model, self.n_heads)
            .with_head_width(self.head_width)
            .with_attention_dropout(self.attention_dropout)
    }

    /// Width of one head, `d_k`.
    pub fn head_width(&self) -> usize {
        // 0 for a config without heads, which validation refuses.
        self.head_width
            .unwrap_or_else(|| self.d_model.checked_div(self.n_heads).unwrap_or(0))
    }

    /// An attention sublayer's config with `n_heads` heads of this config's width
    /// ([`head_width`](Self::head_width)): what an attention keeps after some of its heads were
    /// pruned.
    pub fn attention_with_heads(&self, n_heads: usize) -> MultiHeadAttentionConfig {
        if n_heads == self.n_heads {
            return self.attention();
        }
        let mut config = self.attention().with_head_width(Some(self.head_width()));
        config.n_heads = n_heads;
        config
    }

    /// The feed-forward sublayer's config.
    pub fn feed_forward(&self) -> PositionWiseFeedForwardConfig {
        PositionWiseFeedForwardConfig::new(self.d_model, self.d_ff).with_activation(self.activation)
    }

    /// The residual wrapper's config.
    pub fn residual(&self) -> ResidualNormConfig {
        ResidualNormConfig::new(self.d_model, self.dropout, self.norm_position)
            .with_layer_norm_eps(self.layer_norm_eps)
    }

    /// Builds an encoder layer, or says why the config cannot.
    pub fn try_init_encoder(&self, device: &Device) -> Result<EncoderLayer, ConfigError> {
        self.try_init_encoder_with_heads(self.n_heads, device)
    }

    /// Builds an encoder layer whose self-attention has `self_heads` heads (after pruning).
    pub fn try_init_encoder_with_heads(
        &self,
        self_heads: usize,
        device: &Device,
    ) -> Result<EncoderLayer, ConfigError> {
        self.validate()?;
        Ok(EncoderLayer {
            self_attn: self
                .self_attention_with_heads(self_heads)
                .try_init(device)?,
            self_attn_residual: self.residual().init(device),
            ffn: self.feed_forward().init(device),
            ffn_residual: self.residual().init(device),
        })
    }

    /// Builds a decoder layer, or says why the config cannot.
    pub fn try_init_decoder(&self, device: &Device) -> Result<DecoderLayer, ConfigError> {
        self.try_init_decoder_with_heads(self.n_heads, self.n_heads, device)
    }

    /// Builds a decoder layer whose attentions have `self_heads` and `cross_heads` heads
    /// (after pruning).
    pub fn try_init_decoder_with_heads(
        &self,
        self_heads: usize,
        cross_heads: usize,
        device: &Device,
    ) -> Result<DecoderLayer, ConfigError> {
        self.validate()?;
        Ok(DecoderLayer {
            self_attn: self
                .self_attention_with_heads(self_heads)
                .try_init(device)?,
            self_attn_residual: self.residual().init(device),
            cross_attn: self.attention_with_heads(cross_heads).try_init(device)?,
            cross_attn_residual: self.residual().init(device),
            ffn: self.feed_forward().init(device),
            ffn_residual: self.residual().init(device),
        })
    }

    /// Builds an encoder layer.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails, with its message.
    pub fn init_encoder(&self, device: &Device) -> EncoderLayer {
        self.try_init_encoder(device)
            .unwrap_or_else(|err| panic!("{err}"))
    }

    /// Builds a decoder layer.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails, with its message.
    pub fn init_decoder(&self, device: &Device) -> DecoderLayer {
        self.try_init_decoder(device)
            .unwrap_or_else(|err| panic!("{err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_base_model() {
        let c = TransformerLayerConfig::new();
        assert_eq!(
            (c.d_model, c.n_heads, c.d_ff, c.dropout),
            (512, 8, 2048, 0.1)
        );
        assert_eq!(c.norm_position, NormPosition::Post);
        assert_eq!(c.activation, FeedForwardActivation::Relu);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn invalid_layers_are_refused() {
        let heads = TransformerLayerConfig::new()
            .with_d_model(30)
            .with_n_heads(4);
        assert!(heads.validate().unwrap_err().to_string().contains("(30)"));
        assert!(
            TransformerLayerConfig::new()
                .with_dropout(-0.1)
                .validate()
                .is_err()
        );
        assert!(
            TransformerLayerConfig::new()
                .with_d_ff(0)
                .validate()
                .is_err()
        );
        assert!(
            TransformerLayerConfig::new()
                .with_layer_norm_eps(0.0)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn a_head_width_narrows_the_heads_and_frees_d_model_from_dividing() {
        let device = Device::flex();
        let narrow = TransformerLayerConfig::tiny().with_head_width(Some(4)); // 2 heads of 4, d_model 16
        let layer = narrow.init_decoder(&device);
        for attention in [&layer.self_attn, &layer.cross_attn] {
            assert_eq!(attention.in_proj.weight.dims(), [16, 24]);
            assert_eq!(attention.out_proj.weight.dims(), [8, 16]);
        }
        // Pruned to one head, the head keeps its width.
        assert_eq!(narrow.attention_with_heads(1).head_width(), 4);
        let odd = TransformerLayerConfig::new()
            .with_d_model(30)
            .with_n_heads(4);
        assert!(odd.validate().is_err());
        assert!(odd.with_head_width(Some(8)).validate().is_ok());
    }
}
