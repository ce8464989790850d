//! Presets and run preparation: the model and training defaults of each kind of run, the
//! overrides a user gives, and a checked [`RunConfig`] built from them before anything is
//! written or learned.

use tf_layers::{PositionalEncodingKind, TransformerLayerConfig};
use tf_model::{EmbeddingSharing, OutputLimit, TransformerConfig};

use crate::data::corpus::ParallelCorpus;
use crate::data::subword::SubwordVocab;
use crate::data::task::Task;
use crate::data::translation::TranslationTask;
use crate::error::{Result, ResultExt};
use crate::training::config::{RunConfig, TrainingConfig};

/// Model sizes and training lengths that differ between the synthetic tasks and translation.
#[derive(Clone, Debug)]
pub struct Preset {
    /// The layers' widths, heads and dropout.
    pub layer: TransformerLayerConfig,
    /// Encoder layers (and decoder layers, unless `decoder_layers` says otherwise).
    pub layers: usize,
    /// Decoder layers, when not as many as the encoder's (a deep encoder with a shallow decoder
    /// decodes faster).
    pub decoder_layers: Option<usize>,
    /// Position information: sinusoids added to the embeddings (the paper's), learned,
    /// rotary, or none.
    pub positional: PositionalEncodingKind,
    /// Which embedding matrices are one: all three by default (the vocabularies are joint).
    pub embedding_sharing: EmbeddingSharing,
    /// The training recipe.
    pub training: TrainingConfig,
}

/// Dropout of the translation preset.
pub const TRANSLATION_DROPOUT: f64 = 0.3;
/// Most epochs of the translation preset (its 85 minutes usually end it first).
pub const TRANSLATION_EPOCHS: usize = 60;

impl Preset {
    /// Copy, reverse and sort: `d_model` 128, 4 heads, 2 + 2 layers, `d_ff` 512, dropout 0.1;
    /// 3,500 steps, peak learning rate 1e-3 after 400 warm-up steps ([`TrainingConfig::default`]),
    /// which reach exact match ≥ 0.99 on `reverse` (docs/training.md).
    pub fn synthetic() -> Self {
        Self {
            layer: TransformerLayerConfig::new()
                .with_d_model(128)
                .with_n_heads(4)
                .with_d_ff(512),
            layers: 2,
            decoder_layers: None,
            positional: PositionalEncodingKind::Sinusoidal,
            embedding_sharing: EmbeddingSharing::All,
            training: TrainingConfig::default(),
        }
    }

    /// Multi30k-sized translation: `d_model` 256, 4 heads, 3 + 3 layers, `d_ff` 1024, dropout
    /// 0.3 (29,000 sentence pairs overfit at the paper's 0.1); 800 warm-up steps, up to 60
    /// epochs within 85 minutes of training (a wall-clock budget: a slower machine trains fewer
    /// epochs), the mean of the last 5 checkpoints kept if it validates best, and the length
    /// penalty chosen on `val` (docs/translation.md).
    pub fn translation() -> Self {
        Self {
            layer: TransformerLayerConfig::new()
                .with_d_model(256)
                .with_n_heads(4)
                .with_d_ff(1024)
                .with_dropout(TRANSLATION_DROPOUT),
            layers: 3,
            decoder_layers: None,
            positional: PositionalEncodingKind::Sinusoidal,
            embedding_sharing: EmbeddingSharing::All,
            training: TrainingConfig {
                steps: usize::MAX,
                epochs: Some(TRANSLATION_EPOCHS),
                time_limit_secs: Some(85.0 * 60.0),
                warmup: 800,
                ..TrainingConfig::default()
            },
        }
    }

    /// The model for vocabularies of `vocab` tokens and `max_len` positions (source and target
    /// share the joint vocabulary; by default also one embedding matrix, §3.4).
    pub fn model(&self, vocab: usize, max_len: usize) -> TransformerConfig {
        TransformerConfig::new(vocab, vocab)
            .with_layer(self.layer.clone())
            .with_n_encoder_layers(self.layers)
            .with_n_decoder_layers(self.decoder_layers.unwrap_or(self.layers))
            .with_max_len(max_len)
            .with_positional_encoding(self.positional)
            .with_embedding_sharing(self.embedding_sharing)
    }

    /// A synthetic-task run: the model sized to the task (its longest source, and one more
    /// position: an output as long as that source and its EOS fit), checked.
    pub fn synthetic_run(&self, task: Task) -> Result<RunConfig> {
        let config = RunConfig {
            model: self.model(task.vocab_size(), task.longest_source() + 1),
            task: task.into(),
            training: self.training.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    /// A translation run's configuration for `task` as it stands (its `vocab_size` the one
    /// asked for), checked: what [`translation_run`](Self::translation_run) checks before it
    /// spends time on the vocabulary.
    pub fn translation_config(&self, task: TranslationTask) -> Result<RunConfig> {
        // Room for the longest output a training-length source may have.
        let max_positions = OutputLimit::default().tokens(task.max_len);
        let config = RunConfig {
            model: self.model(task.vocab_size, max_positions),
            task: task.into(),
            training: self.training.clone(),
        };
        config.validate()?;
        Ok(config)
    }

    /// A new translation run: checks every setting, reads the training split, learns the joint
    /// subword vocabulary from it (merges seen at least `min_frequency` times), and sizes the
    /// model to the vocabulary. Writes nothing: [`train`](crate::training::trainer::train)
    /// saves the vocabulary with the run.
    pub fn translation_run(
        &self,
        task: TranslationTask,
        min_frequency: u64,
    ) -> Result<PreparedTranslation> {
        self.translation_config(task.clone())?;
        let corpus = task.read(&task.train_split)?;
        let vocabulary = task
            .learn_vocabulary(&corpus, min_frequency)
            .context("cannot learn the subword vocabulary")?;
        let config = self.translation_config(TranslationTask {
            vocab_size: vocabulary.len(),
            ..task
        })?;
        Ok(PreparedTranslation {
            config,
            vocabulary,
            corpus,
        })
    }
}

/// A translation run ready to start: its configuration, the vocabulary learned for it, and the
/// training split it was learned from.
#[derive(Clone, Debug)]
pub struct PreparedTranslation {
    /// The checked configuration, sized to the vocabulary.
    pub config: RunConfig,
    /// The vocabulary, to be saved as the run's `tokenizer.json`.
    pub vocabulary: SubwordVocab,
    /// The training split.
    pub corpus: ParallelCorpus,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::task::TaskKind;
    use crate::testing::{temp_dir, translation_task};

    #[test]
    fn presets_size_the_model_to_the_task() {
        let task = Task::new(TaskKind::Reverse, 10, 1, 12).unwrap();
        let config = Preset::synthetic().synthetic_run(task).unwrap();
        assert_eq!(config.model.layer.d_model, 128);
        assert_eq!((config.model.src_vocab, config.model.max_len), (13, 13));
        assert_eq!(config.training, TrainingConfig::default());

        let translation = Preset::translation();
        assert_eq!(translation.model(8000, 160).layer.d_model, 256);
        assert_eq!(translation.training.epochs, Some(60));
        assert_eq!(translation.model(8000, 160).layer.dropout, 0.3);
        assert_eq!(Preset::synthetic().layer.dropout, 0.1, "the paper's");
    }

    #[test]
    fn an_invalid_translation_run_is_refused_before_reading_anything() {
        let dir = temp_dir("preset-invalid");
        let task = translation_task(dir.join("no-such-corpus"));
        let mut preset = Preset::translation();
        preset.layer = preset.layer.with_n_heads(7); // 256 is not divisible by 7
        let err = preset
            .translation_run(task.clone(), 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_heads (7)"), "{err}");
        // A valid preset gets as far as the missing corpus.
        let err = Preset::translation()
            .translation_run(task, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing file"), "{err}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "nothing written"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
