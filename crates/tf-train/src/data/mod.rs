//! Where examples come from: synthetic tasks, parallel corpora (and verified downloads of
//! Multi30k), subword vocabularies (our BPE ones, and the SentencePiece models and vocabularies
//! of MarianMT), translation pairs, batches, bucketing, and the per-step source of a run's
//! batches.

pub mod batch;
pub mod bucketing;
pub mod corpus;
pub mod distillation;
pub mod download;
pub mod marian_tokenizer;
pub mod multi30k;
pub mod sentencepiece;
pub mod source;
pub mod subword;
pub mod task;
pub mod translation;
pub mod vocabulary;
