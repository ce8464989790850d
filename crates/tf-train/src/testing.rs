//! What the unit tests of several modules share.

use std::path::PathBuf;

use crate::data::translation::TranslationTask;

/// A German→English task over the corpus in `data`: `train` and `val` splits, 400 tokens,
/// sentences of at most 12, batches of 64 tokens.
pub fn translation_task(data: PathBuf) -> TranslationTask {
    TranslationTask {
        data,
        src: "de".into(),
        tgt: "en".into(),
        train_split: "train".into(),
        valid_split: "val".into(),
        vocab_size: 400,
        max_len: 12,
        batch_tokens: 64,
        vocabulary: Default::default(),
    }
}

/// A fresh, empty directory under the system's temporary directory, named for the test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
