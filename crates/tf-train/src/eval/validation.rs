//! Validation during training: the teacher-forced loss on held-out examples, and greedy
//! accuracy (synthetic tasks) or greedy BLEU (translation).

use burn::tensor::Device;
use tf_model::Transformer;

use crate::data::batch::Seq2SeqBatch;
use crate::data::source::TrainingData;
use crate::data::task::Example;
use crate::error::Result;
use crate::eval::accuracy::{Accuracy, accuracy};
use crate::eval::bleu::corpus_bleu;
use crate::eval::translate::{TranslateOptions, translate};
use crate::training::config::RunConfig;

/// Sequences per teacher-forced or decoding batch during validation.
const VALIDATION_BATCH: usize = 128;

/// One validation: the loss, and accuracy (synthetic) or greedy BLEU (translation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// Mean label-smoothed loss per target token.
    pub loss: f64,
    /// Greedy accuracy (synthetic tasks).
    pub accuracy: Option<Accuracy>,
    /// Greedy corpus BLEU (translation).
    pub bleu: Option<f64>,
}

/// Validates `model` (in inference mode, `model.valid()`) on the run's held-out data.
pub fn validate(
    model: &Transformer,
    data: &TrainingData,
    config: &RunConfig,
    device: &Device,
) -> Result<Validation> {
    let smoothing = config.training.label_smoothing;
    Ok(match data {
        TrainingData::Synthetic { validation, .. } => Validation {
            loss: teacher_forced_loss(model, validation, smoothing, device),
            accuracy: Some(accuracy(
                model,
                validation,
                config.task.max_len() + 1,
                VALIDATION_BATCH,
                device,
            )?),
            bleu: None,
        },
        TrainingData::Translation { data, vocab, .. } => {
            let hyps = translate(
                model,
                vocab,
                &data.bleu_sources,
                &TranslateOptions::greedy(),
                device,
                |_| {},
            )?;
            let bleu = corpus_bleu(&hyps.sentences, &data.bleu_references)?;
            Validation {
                loss: teacher_forced_loss(model, &data.valid.examples, smoothing, device),
                accuracy: None,
                bleu: Some(bleu.score),
            }
        }
    })
}

/// Mean label-smoothed loss per target token on `examples`, teacher-forced.
pub fn teacher_forced_loss(
    model: &Transformer,
    examples: &[Example],
    label_smoothing: f64,
    device: &Device,
) -> f64 {
    let (mut total, mut tokens) = (0.0, 0usize);
    for chunk in examples.chunks(VALIDATION_BATCH) {
        let batch = Seq2SeqBatch::new(chunk, device);
        let n_target_tokens = batch.n_target_tokens;
        let mean = batch.loss(model, label_smoothing).into_scalar::<f32>() as f64;
        total += mean * n_target_tokens as f64;
        tokens += n_target_tokens;
    }
    total / tokens.max(1) as f64
}
