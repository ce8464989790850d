//! What the unit tests of several modules share.

use std::path::PathBuf;

use burn::tensor::Device;
use tf_model::{Transformer, TransformerConfig};

use crate::task::Task;

/// A small untrained model for `task`: `d_model` 16, 2 heads, 2 + 2 layers, no dropout.
pub fn tiny_model(task: &Task, device: &Device) -> Transformer {
    TransformerConfig::tiny(task.vocab_size(), task.vocab_size())
        .with_d_model(16)
        .with_n_heads(2)
        .with_d_ff(32)
        .with_dropout(0.0)
        .with_max_len(task.max_len + 2)
        .init(device)
}

/// A fresh, empty directory under the system's temporary directory, named for the test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
