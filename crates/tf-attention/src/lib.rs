//! # tf-attention
//!
//! The attention of "Attention Is All You Need" (Vaswani et al., 2017) for [burn]: scaled
//! dot-product attention (§3.2.1), attention masks, multi-head attention (§3.2.2), and rotary
//! position embedding of its queries and keys (Su et al., 2021).
//!
//! It stands alone: any burn model can use [`MultiHeadAttention`] without the rest of this
//! workspace. Tensors are backend-agnostic; the [`Device`](burn::tensor::Device) the module is
//! built on picks the backend (NdArray, Flex, WGPU, ...) at run time.
//!
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use tf_attention::{AttentionMask, MultiHeadAttentionConfig, Weights, padding_mask_from_lengths};
//!
//! let device = Device::flex();
//! let mha = MultiHeadAttentionConfig::new(16, 2).init(&device);
//! let x = Tensor::<3>::random([2, 5, 16], Distribution::Default, &device); // [batch, seq, d_model]
//! let mask = AttentionMask::causal()
//!     .with_key_padding(Some(padding_mask_from_lengths(&[5, 3], 5, &device)));
//! let out = mha.self_attention(x, &mask, None, Weights::Return);
//! assert_eq!(out.context.dims(), [2, 5, 16]);
//! assert_eq!(out.weights.unwrap().dims(), [2, 2, 5, 5]); // [batch, heads, q_len, k_len]
//! ```
//!
//! Masks have one polarity throughout: `true` = blocked, as in burn's
//! `burn::tensor::module::attention`.

pub mod compare;
pub mod error;
pub mod fused;
pub mod fused_linear;
pub mod fused_sdpa;
pub mod hooks;
pub mod mask;
pub mod mha;
pub mod rotary;
pub mod sdpa;

pub use compare::max_abs_diff;
pub use error::ConfigError;
pub use hooks::{
    AttentionBlock, AttentionSite, HookPoint, HookValue, Hooks, LayerHooks, LayerSite, Patch,
    Replacement, Stack,
};
pub use mask::{AttentionMask, causal_mask, padding_mask_from_ids, padding_mask_from_lengths};
pub use mha::{
    AttentionOutput, KeyValue, MultiHeadAttention, MultiHeadAttentionConfig, SelfAttentionCache,
    Weights,
};
pub use rotary::{RotaryEncoding, RotaryEncodingConfig};
pub use sdpa::{attention_weights, fused_attention, masked_softmax, scaled_dot_product_attention};
