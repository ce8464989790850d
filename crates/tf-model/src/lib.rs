//! # tf-model
//!
//! The encoder–decoder Transformer of "Attention Is All You Need" (Vaswani et al., 2017) for
//! [burn]: token embeddings scaled by `√d_model` (§3.4) with optional weight sharing, the
//! encoder and decoder stacks (§3.1), the whole model, greedy decoding and beam search with an
//! explicit key/value cache, weight import from PyTorch, and MarianMT (opus-mt) in and out.
//!
//! ```
//! use burn::tensor::{Device, Int, Tensor};
//! use tf_model::{GreedyOptions, TransformerConfig};
//!
//! let device = Device::flex();
//! let model = TransformerConfig::tiny(12, 12).init(&device);
//! let src = Tensor::<2, Int>::from_ints([[3, 4, 5]], &device);
//! let tgt = Tensor::<2, Int>::from_ints([[1, 5, 4]], &device);
//! let logits = model.forward(src.clone(), tgt, None, None);
//! assert_eq!(logits.dims(), [1, 3, 12]); // [batch, tgt_len, tgt_vocab]
//! let tokens = model.greedy_decode(src, None, &GreedyOptions::new(1, 2, 5)).unwrap();
//! assert!(tokens[0].len() <= 5);
//! ```

pub mod beam;
pub mod cache;
pub mod config;
pub mod decoder;
pub mod embedding;
pub mod encoder;
pub mod final_norm;
pub mod greedy;
pub mod heads;
pub mod hooked;
pub mod marian_export;
pub mod marian_import;
pub mod next_token;
pub mod output_limit;
pub mod torch_import;
pub mod transformer;

pub use beam::{BeamOptions, BeamRanking, DEFAULT_ALPHA, DEFAULT_BEAM, Hypothesis};
pub use cache::{DecodeContext, DecoderCache};
pub use config::{EmbeddingSharing, FinalNorm, HeadCounts, TransformerConfig};
pub use decoder::{Decoder, DecoderOptions};
pub use embedding::ScaledEmbedding;
pub use encoder::Encoder;
pub use final_norm::FinalLayerNorm;
pub use greedy::{CapturedAttention, DecodeError, GreedyOptions, Steps};
pub use heads::{AttentionKind, BlockId, HeadId, PruneError, in_block_order};
pub use hooked::HookError;
pub use marian_export::{ExportedMarian, MarianTokenIds, export_marian};
pub use marian_import::{ImportedMarian, MarianConfig, import_marian};
pub use next_token::{Candidate, best_next_tokens};
pub use output_limit::OutputLimit;
pub use torch_import::{
    Imported, TorchImportError, TorchMhaConfig, TorchModuleConfig, TorchTransformerConfig,
    TransformerStacks, import_multi_head_attention, import_transformer, import_transformer_stacks,
};
pub use transformer::{Memory, Transformer, TransformerOutput};
