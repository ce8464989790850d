//! # tf-layers
//!
//! The layers of "Attention Is All You Need" (Vaswani et al., 2017) for [burn], built on
//! [`tf_attention`]: positional encodings (§3.5), the position-wise feed-forward network (§3.3),
//! the residual + dropout + LayerNorm wrapper (§3.1, §5.4, post-norm as in the paper or
//! pre-norm), and the encoder and decoder layers (§3.1). Dropout runs as one fused operation
//! with its own backward on the Flex CPU backend ([`fused_dropout`]).
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use tf_attention::Weights;
//! use tf_layers::TransformerLayerConfig;
//!
//! let device = Device::flex();
//! let config = TransformerLayerConfig::new().with_d_model(16).with_n_heads(2).with_d_ff(32);
//! let layer = config.init_encoder(&device);
//! let x = Tensor::<3>::random([2, 5, 16], Distribution::Default, &device);
//! let (y, _) = layer.forward(x, None, Weights::Omit);
//! assert_eq!(y.dims(), [2, 5, 16]);
//! ```

pub mod decoder_layer;
pub mod encoder_layer;
pub mod feed_forward;
pub mod fused_dropout;
pub mod fused_layer_norm;
pub mod layer_config;
pub mod positional_encoding;
pub mod residual;

pub use decoder_layer::{
    CrossAttentionMemory, DecoderLayer, DecoderLayerOptions, DecoderLayerWeights,
};
pub use encoder_layer::EncoderLayer;
pub use feed_forward::{
    FeedForwardActivation, PositionWiseFeedForward, PositionWiseFeedForwardConfig,
};
pub use layer_config::TransformerLayerConfig;
pub use positional_encoding::{
    PositionTable, PositionalEncoding, PositionalEncodingConfig, PositionalEncodingKind, sinusoid,
    sinusoid_halves,
};
pub use residual::{NormPosition, ResidualNorm, ResidualNormConfig};
