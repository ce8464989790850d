//! Where a run's batches come from, step by step: fresh samples of a synthetic task, or epochs
//! over a tokenized corpus in token-budget batches. Deterministic in the seed and the step, so
//! a resumed run sees the batches the uninterrupted one would have seen.

use crate::data::bucketing::token_batches;
use crate::data::task::{Example, Task};
use crate::data::translation::{TranslationData, VocabularySource};
use crate::data::vocabulary::TranslationVocab;
use crate::error::{Result, bail};
use crate::store::model_dir::ModelDir;
use crate::training::config::{RunConfig, RunTask, TrainingConfig};

/// Seed offset of the validation examples, so they are never a training batch.
const VALIDATION_STREAM: u64 = 0x5EED_0000_0000_0001;

/// The seed of step (or epoch) `step` of a stream seeded `seed`: the examples of a training
/// step, the batch order of an epoch, a step's dropout masks. A function of the two alone, so a
/// resumed run draws what the uninterrupted one drew.
pub fn step_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64)
}

/// A run's training batches and its validation data.
pub enum TrainingData {
    /// Fresh task samples every step; validation on a held-out stream.
    Synthetic {
        /// The task.
        task: Task,
        /// The validation examples.
        validation: Vec<Example>,
    },
    /// Epochs over a tokenized corpus in token-budget batches; validation loss and BLEU.
    Translation {
        /// The tokenized splits.
        data: Box<TranslationData>,
        /// The run's vocabulary (for BLEU on detokenized output).
        vocab: Box<TranslationVocab>,
        /// Padded tokens per batch.
        batch_tokens: usize,
        /// Batches in an epoch.
        steps_per_epoch: usize,
        /// The epoch whose batch order `plan` is.
        planned_epoch: Option<usize>,
        /// That epoch's batches, as indices into the training pairs.
        plan: Vec<Vec<usize>>,
    },
}

impl TrainingData {
    /// The data of the run `config` in `dir` (a translation run's vocabulary is read from it);
    /// `report` hears what was read.
    pub fn new(config: &RunConfig, dir: &ModelDir, report: &mut dyn FnMut(&str)) -> Result<Self> {
        let t = &config.training;
        Ok(match &config.task {
            RunTask::Synthetic(task) => Self::Synthetic {
                task: task.clone(),
                validation: task.samples(t.eval_samples, t.seed ^ VALIDATION_STREAM),
            },
            RunTask::Translation(task) => {
                if task.vocabulary != VocabularySource::Learned {
                    bail!(
                        "{} holds an imported MarianMT model; training it further is not \
                         supported (translate, score and inspect it instead)",
                        dir.path().display()
                    );
                }
                let vocab = dir.load_vocabulary()?;
                let data = TranslationData::load(task, &vocab, t.eval_samples)?;
                let pairs = &data.train;
                report(&format!(
                    "{} training pairs of {} ({} longer than {} tokens and {} empty skipped); {} validation pairs, BLEU on {}",
                    pairs.examples.len(),
                    pairs.examples.len() + pairs.too_long + pairs.empty,
                    pairs.too_long,
                    task.max_len,
                    pairs.empty,
                    data.valid.examples.len(),
                    data.bleu_sources.len(),
                ));
                let (src_lens, tgt_lens) = lengths(&data.train.examples);
                let steps_per_epoch =
                    token_batches(&src_lens, &tgt_lens, task.batch_tokens, t.seed).len();
                Self::Translation {
                    data: Box::new(data),
                    vocab: Box::new(vocab),
                    batch_tokens: task.batch_tokens,
                    steps_per_epoch,
                    planned_epoch: None,
                    plan: Vec::new(),
                }
            }
        })
    }

    /// Steps of the whole run.
    pub fn total_steps(&self, t: &TrainingConfig) -> usize {
        match self {
            Self::Synthetic { .. } => t.steps,
            Self::Translation {
                steps_per_epoch, ..
            } => t.steps.min(
                t.epochs
                    .unwrap_or(usize::MAX)
                    .saturating_mul(*steps_per_epoch),
            ),
        }
    }

    /// Epochs completed after `step` steps (translation).
    pub fn epochs_done(&self, step: usize) -> Option<usize> {
        match self {
            Self::Synthetic { .. } => None,
            Self::Translation {
                steps_per_epoch, ..
            } => Some(step / steps_per_epoch),
        }
    }

    /// The examples of step `step` (1-based).
    pub fn batch(&mut self, step: usize, t: &TrainingConfig) -> Vec<Example> {
        match self {
            Self::Synthetic { task, .. } => task.samples(t.batch_size, step_seed(t.seed, step)),
            Self::Translation {
                data,
                batch_tokens,
                steps_per_epoch,
                planned_epoch,
                plan,
                ..
            } => {
                let (epoch, index) = ((step - 1) / *steps_per_epoch, (step - 1) % *steps_per_epoch);
                if *planned_epoch != Some(epoch) {
                    let (src_lens, tgt_lens) = lengths(&data.train.examples);
                    *plan = token_batches(
                        &src_lens,
                        &tgt_lens,
                        *batch_tokens,
                        step_seed(t.seed, epoch),
                    );
                    *planned_epoch = Some(epoch);
                }
                plan[index]
                    .iter()
                    .map(|&i| data.train.examples[i].clone())
                    .collect()
            }
        }
    }

    /// Whether step `step` ends a validation period.
    pub fn validates_after(&self, step: usize, t: &TrainingConfig) -> bool {
        match self {
            Self::Synthetic { .. } => step.is_multiple_of(t.eval_every),
            Self::Translation {
                steps_per_epoch, ..
            } => step.is_multiple_of(*steps_per_epoch),
        }
    }

    /// Whether step `step` ends a checkpoint period.
    pub fn checkpoints_after(&self, step: usize, t: &TrainingConfig) -> bool {
        match self {
            Self::Synthetic { .. } => step.is_multiple_of(t.checkpoint_every),
            Self::Translation { .. } => self.validates_after(step, t),
        }
    }
}

/// Source and target lengths of `examples`.
fn lengths(examples: &[Example]) -> (Vec<usize>, Vec<usize>) {
    examples.iter().map(|e| (e.src.len(), e.tgt.len())).unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::translation::EncodedPairs;

    fn translation_data(n: usize, batch_tokens: usize) -> TrainingData {
        let examples: Vec<Example> = (0..n)
            .map(|i| Example {
                src: vec![4 + i % 7; 1 + i % 5],
                tgt: vec![4 + i; 1 + (i * 3) % 7],
            })
            .collect();
        let (src_lens, tgt_lens) = lengths(&examples);
        let steps_per_epoch = token_batches(&src_lens, &tgt_lens, batch_tokens, 1).len();
        let sentences = ["ein Satz".to_string()];
        TrainingData::Translation {
            data: Box::new(TranslationData {
                train: EncodedPairs {
                    lines: (0..n).collect(),
                    examples,
                    ..Default::default()
                },
                valid: EncodedPairs::default(),
                bleu_sources: Vec::new(),
                bleu_references: Vec::new(),
            }),
            vocab: Box::new(
                crate::data::subword::SubwordVocab::train(&sentences, 200, 1)
                    .unwrap()
                    .into(),
            ),
            batch_tokens,
            steps_per_epoch,
            planned_epoch: None,
            plan: Vec::new(),
        }
    }

    #[test]
    fn every_epoch_sees_every_pair_once_in_a_new_order_and_a_resume_replays_it() {
        let t = TrainingConfig {
            steps: usize::MAX,
            epochs: Some(3),
            seed: 3,
            ..TrainingConfig::default()
        };
        let mut data = translation_data(40, 24);
        let per_epoch = data.total_steps(&t) / 3;
        assert!(per_epoch > 3, "{per_epoch} batches an epoch");
        let mut epochs: Vec<Vec<Vec<usize>>> = vec![Vec::new(); 3];
        for step in 1..=3 * per_epoch {
            let batch: Vec<usize> = data.batch(step, &t).iter().map(|e| e.tgt[0] - 4).collect();
            epochs[(step - 1) / per_epoch].push(batch);
            assert_eq!(data.validates_after(step, &t), step % per_epoch == 0);
        }
        for epoch in &epochs {
            let mut seen: Vec<usize> = epoch.iter().flatten().copied().collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..40).collect::<Vec<_>>());
        }
        assert_ne!(epochs[0], epochs[1], "a fresh order each epoch");

        // A resumed run starting mid-epoch gets the batches the uninterrupted one got.
        let mut resumed = translation_data(40, 24);
        let step = per_epoch + 2;
        let batch: Vec<usize> = resumed
            .batch(step, &t)
            .iter()
            .map(|e| e.tgt[0] - 4)
            .collect();
        assert_eq!(batch, epochs[1][1]);
        assert_eq!(resumed.epochs_done(2 * per_epoch), Some(2));
    }
}
