//! A training run: its configuration and presets, the loop, fine-tuning a changed model, the
//! optimizer and learning-rate schedule, the loss, the metrics log, and the observer hook for
//! progress.

pub mod config;
pub mod fine_tune;
pub mod fused_loss;
pub mod loss;
pub mod metrics;
pub mod observer;
pub mod optimizer;
pub mod preset;
pub mod schedule;
pub mod trainer;
