//! The training loop: teacher forcing, label-smoothed cross-entropy, Adam with the paper's
//! warm-up schedule, gradient clipping, periodic validation, checkpoints and resume. Synthetic
//! tasks draw fresh samples every step; translation runs epochs over a corpus in token-budget
//! batches, validates loss and greedy BLEU after each epoch and keeps the best model by BLEU.
//!
//! A plain loop rather than burn-train's `Learner`: the loop is short, and owning it gives the
//! per-step learning rate of §5.3, checkpoints that are written atomically and hold the
//! optimizer and step, and greedy-decoding accuracy as the validation metric (docs/training.md).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};
use tf_model::Transformer;

use crate::average::average_models;
use crate::batch::Seq2SeqBatch;
use crate::bleu::corpus_bleu;
use crate::bucketing::token_batches;
use crate::checkpoint::{BestModel, ModelDir, TrainingState};
use crate::config::{RunConfig, RunTask, TrainingConfig};
use crate::eval;
use crate::metrics::{MetricsLog, MetricsRow};
use crate::schedule::NoamSchedule;
use crate::subword::SubwordVocab;
use crate::task::{Example, Task};
use crate::translate::{TranslateOptions, translate};
use crate::translation::TranslationData;

/// Seed offset of the validation examples, so they are never a training batch.
const VALIDATION_STREAM: u64 = 0x5EED_0000_0000_0001;

/// What a run ended with.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Steps taken in total.
    pub steps: usize,
    /// Training loss at the first logged step of this invocation.
    pub first_loss: f64,
    /// Training loss at the last logged step.
    pub last_loss: f64,
    /// Last validation result (synthetic tasks).
    pub validation: eval::Accuracy,
    /// Last validation BLEU (translation).
    pub bleu: Option<f64>,
    /// The weights in `model.bpk` (translation: the best by validation BLEU).
    pub best: Option<BestModel>,
    /// Wall time of the run, seconds (resumed runs include earlier sessions).
    pub elapsed_secs: f64,
}

/// Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 (§5.3), and global-norm gradient clipping.
pub fn optimizer(config: &RunConfig) -> ModuleOptimizer {
    AdamConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.98)
        .with_epsilon(1e-9)
        .with_grad_clipping(
            config
                .training
                .grad_clip
                .map(|c| GradientClippingConfig::Norm(c as f32)),
        )
        .init()
}

/// The learning-rate schedule of a run.
pub fn schedule(config: &RunConfig) -> NoamSchedule {
    let t = &config.training;
    match t.peak_lr {
        Some(peak) => NoamSchedule::with_peak(config.model.d_model, t.warmup, peak),
        None => NoamSchedule::new(config.model.d_model, t.warmup),
    }
}

/// The examples of training step `step`, or the batch order of epoch `step` (deterministic in
/// the seed, so a resumed run sees the batches it would have seen).
fn batch_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64)
}

/// Where a run's batches and validation come from.
enum TrainingData {
    /// Fresh task samples every step; validation on a held-out stream.
    Synthetic {
        task: Task,
        validation: Vec<Example>,
    },
    /// Epochs over a tokenized corpus in token-budget batches; validation loss and BLEU.
    Translation {
        data: Box<TranslationData>,
        vocab: Box<SubwordVocab>,
        batch_tokens: usize,
        steps_per_epoch: usize,
        /// The epoch whose batch order `plan` is.
        planned_epoch: Option<usize>,
        plan: Vec<Vec<usize>>,
    },
}

impl TrainingData {
    fn new(config: &RunConfig, dir: &ModelDir) -> Result<Self> {
        let t = &config.training;
        Ok(match &config.task {
            RunTask::Synthetic(task) => Self::Synthetic {
                task: task.clone(),
                validation: task.samples(t.eval_samples, t.seed ^ VALIDATION_STREAM),
            },
            RunTask::Translation(task) => {
                let vocab = dir.load_vocabulary()?;
                let data = TranslationData::load(task, &vocab, t.eval_samples)?;
                let pairs = &data.train;
                println!(
                    "{} training pairs of {} ({} longer than {} tokens and {} empty skipped); {} validation pairs, BLEU on {}",
                    pairs.examples.len(),
                    pairs.examples.len() + pairs.too_long + pairs.empty,
                    pairs.too_long,
                    task.max_len,
                    pairs.empty,
                    data.valid.examples.len(),
                    data.bleu_sources.len(),
                );
                let (src_lens, tgt_lens) = train_lengths(&data.train.examples);
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
    fn total_steps(&self, t: &TrainingConfig) -> usize {
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
    fn epochs_done(&self, step: usize) -> Option<usize> {
        match self {
            Self::Synthetic { .. } => None,
            Self::Translation {
                steps_per_epoch, ..
            } => Some(step / steps_per_epoch),
        }
    }

    /// The examples of step `step` (1-based).
    fn batch(&mut self, step: usize, t: &TrainingConfig) -> Vec<Example> {
        match self {
            Self::Synthetic { task, .. } => task.samples(t.batch_size, batch_seed(t.seed, step)),
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
                    let (src_lens, tgt_lens) = train_lengths(&data.train.examples);
                    *plan = token_batches(
                        &src_lens,
                        &tgt_lens,
                        *batch_tokens,
                        batch_seed(t.seed, epoch),
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
    fn validates_after(&self, step: usize, t: &TrainingConfig) -> bool {
        match self {
            Self::Synthetic { .. } => step.is_multiple_of(t.eval_every),
            Self::Translation {
                steps_per_epoch, ..
            } => step.is_multiple_of(*steps_per_epoch),
        }
    }

    /// Whether step `step` ends a checkpoint period.
    fn checkpoints_after(&self, step: usize, t: &TrainingConfig) -> bool {
        match self {
            Self::Synthetic { .. } => step.is_multiple_of(t.checkpoint_every),
            Self::Translation { .. } => self.validates_after(step, t),
        }
    }
}

/// Source and target lengths of `examples`.
fn train_lengths(examples: &[Example]) -> (Vec<usize>, Vec<usize>) {
    examples.iter().map(|e| (e.src.len(), e.tgt.len())).unzip()
}

/// One validation: the loss, and accuracy (synthetic) or greedy BLEU (translation).
struct Validation {
    loss: f64,
    accuracy: Option<eval::Accuracy>,
    bleu: Option<f64>,
}

fn validate(
    model: &Transformer,
    data: &TrainingData,
    config: &RunConfig,
    device: &Device,
) -> Result<Validation> {
    let smoothing = config.training.label_smoothing;
    Ok(match data {
        TrainingData::Synthetic { validation, .. } => Validation {
            loss: eval::loss(model, validation, smoothing, 256, device),
            accuracy: Some(eval::accuracy(
                model,
                validation,
                config.task.max_len() + 1,
                256,
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
                loss: eval::loss(model, &data.valid.examples, smoothing, 128, device),
                accuracy: None,
                bleu: Some(bleu.score),
            }
        }
    })
}

/// Averages the newest `average_last` checkpoints (when there are at least two), validates the
/// mean, and makes it the directory's model if its BLEU is at least the best so far. Returns
/// the mean's record and validation loss.
fn validate_average(
    dir: &ModelDir,
    data: &TrainingData,
    config: &RunConfig,
    device: &Device,
) -> Result<Option<(BestModel, f64)>> {
    let names = dir.checkpoint_names()?;
    let chosen = &names[names.len().saturating_sub(config.training.average_last)..];
    if chosen.len() < 2 {
        return Ok(None);
    }
    let models = chosen
        .iter()
        .map(|name| dir.load_checkpoint_model(name, device))
        .collect::<Result<Vec<_>>>()?;
    let averaged = average_models(models)?;
    let result = validate(&averaged, data, config, device)?;
    let bleu = result.bleu.expect("translation validates BLEU");
    let record = BestModel {
        step: dir.checkpoint_step(chosen.last().expect("two or more"))?,
        bleu,
        averaged: chosen.to_vec(),
    };
    let best = dir.best()?;
    let keep = best.as_ref().is_none_or(|b| bleu >= b.bleu);
    if keep {
        dir.save_best(&averaged, &record)?;
    }
    println!(
        "the mean of {} has validation BLEU {bleu:.2}{}",
        chosen.join(", "),
        match (&best, keep) {
            (Some(b), true) => format!(" (best so far {:.2}): kept as the model", b.bleu),
            (Some(b), false) => format!(": the best so far ({:.2}) stays the model", b.bleu),
            (None, _) => ": kept as the model".to_string(),
        }
    );
    Ok(Some((record, result.loss)))
}

/// Trains the run described by `config` into `dir`, on `device` (gradients are taken on its
/// autodiff form). With `resume`, continues from the newest checkpoint in `dir` and keeps the
/// configuration saved there; without it, `dir` must not hold a run already. A translation run
/// needs its vocabulary in `dir` ([`ModelDir::tokenizer_path`]) before it starts.
pub fn train(
    config: &RunConfig,
    dir: &ModelDir,
    device: &Device,
    resume: bool,
    show_progress: bool,
) -> Result<TrainSummary> {
    config.validate()?;
    if dir.has_config() && !resume {
        bail!(
            "{} already holds a trained run; pass --resume to continue it, or choose another --out",
            dir.path().display()
        );
    }
    let config = if resume {
        dir.load_config()?
    } else {
        config.clone()
    };
    let t = &config.training;
    let mut data = TrainingData::new(&config, dir)?;
    let train_device = device.clone().autodiff();
    train_device.seed(t.seed);

    let mut model: Transformer = config.model.init(&train_device);
    let mut optimizer = optimizer(&config);
    let mut state = TrainingState {
        step: 0,
        seed: t.seed,
        elapsed_secs: 0.0,
    };
    if resume {
        (model, optimizer, state) = dir
            .load_checkpoint(model, optimizer)
            .context("cannot resume")?;
    } else {
        dir.save_config(&config)?;
    }
    let mut best = dir.best()?;
    let mut log = MetricsLog::open(&dir.metrics_path())?;
    let schedule = schedule(&config);
    let total_steps = data.total_steps(t);
    let publish_every_checkpoint = matches!(data, TrainingData::Synthetic { .. });

    let progress = if show_progress {
        ProgressBar::new(total_steps as u64)
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    progress.set_position(state.step as u64);

    let started = Instant::now() - std::time::Duration::from_secs_f64(state.elapsed_secs);
    let time_limit = t.time_limit_secs.map(std::time::Duration::from_secs_f64);
    let (mut window_tokens, mut window_start) = (0usize, Instant::now());
    let (mut first_loss, mut last_loss) = (None, f64::NAN);
    let mut last_validation = eval::Accuracy::default();
    let mut last_bleu = None;

    let out_of_time = || time_limit.is_some_and(|limit| started.elapsed() >= limit);
    while state.step < total_steps && !out_of_time() {
        state.step += 1;
        let step = state.step;
        let lr = schedule.lr(step);

        let examples = data.batch(step, t);
        let batch = Seq2SeqBatch::new(&examples, &train_device);
        let n_target_tokens = batch.n_target_tokens;
        let loss = batch.loss(&model, t.label_smoothing);
        let logged_loss = (step.is_multiple_of(t.log_every) || step == 1).then(|| loss.clone());
        let gradients = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(lr, model, gradients);
        window_tokens += n_target_tokens;
        progress.inc(1);

        if let Some(loss) = logged_loss {
            let loss = loss.into_scalar::<f32>() as f64;
            if !loss.is_finite() {
                bail!("the training loss became {loss} at step {step}; lower the learning rate");
            }
            let tokens_per_sec = window_tokens as f64 / window_start.elapsed().as_secs_f64();
            (window_tokens, window_start) = (0, Instant::now());
            first_loss.get_or_insert(loss);
            last_loss = loss;
            progress.set_message(format!(
                "loss {loss:.4} lr {lr:.2e} {tokens_per_sec:.0} tok/s"
            ));
            log.append(&MetricsRow {
                step,
                split: "train",
                loss,
                lr,
                target_tokens_per_sec: Some(tokens_per_sec),
                elapsed_secs: started.elapsed().as_secs_f64(),
                epoch: data.epochs_done(step),
                ..Default::default()
            })?;
        }

        let stopping = out_of_time();
        let last = step == total_steps || stopping;
        if data.validates_after(step, t) || last {
            let validation_started = Instant::now();
            let inference = model.valid();
            let result = validate(&inference, &data, &config, device)?;
            let elapsed = started.elapsed().as_secs_f64();
            let epoch = data.epochs_done(step);
            let summary = match (&result.accuracy, result.bleu) {
                (Some(accuracy), _) => {
                    last_validation = *accuracy;
                    format!(
                        "token acc {:.4}  exact match {:.4}",
                        accuracy.token_accuracy, accuracy.exact_match
                    )
                }
                (None, Some(bleu)) => {
                    last_bleu = Some(bleu);
                    // Ties go to the later, longer-trained model.
                    let improved = best.as_ref().is_none_or(|b| bleu >= b.bleu);
                    if improved {
                        let record = BestModel {
                            step,
                            bleu,
                            averaged: Vec::new(),
                        };
                        dir.save_best(&inference, &record)?;
                        best = Some(record);
                    }
                    format!(
                        "BLEU {bleu:.2}{}  (validation {:.0} s)",
                        if improved { " (best)" } else { "" },
                        validation_started.elapsed().as_secs_f64()
                    )
                }
                (None, None) => unreachable!("every validation measures something"),
            };
            let epoch_text = epoch.map(|e| format!("epoch {e:>3}  ")).unwrap_or_default();
            progress.suspend(|| {
                println!(
                    "{epoch_text}step {step:>6}  train loss {last_loss:.4}  valid loss {:.4}  {summary}  ({elapsed:.0} s)",
                    result.loss
                )
            });
            log.append(&MetricsRow {
                step,
                split: "valid",
                loss: result.loss,
                lr,
                token_accuracy: result.accuracy.map(|a| a.token_accuracy),
                exact_match: result.accuracy.map(|a| a.exact_match),
                elapsed_secs: elapsed,
                epoch,
                bleu: result.bleu,
                ..Default::default()
            })?;
        }

        if data.checkpoints_after(step, t) || last {
            state.elapsed_secs = started.elapsed().as_secs_f64();
            dir.save_checkpoint(
                &model,
                &optimizer,
                &state,
                t.keep_checkpoints,
                publish_every_checkpoint,
            )?;
        }
        if stopping {
            progress.suspend(|| {
                println!(
                    "stopping at step {step}: the time limit of {:.0} s is reached",
                    t.time_limit_secs.unwrap_or_default()
                )
            });
            break;
        }
    }
    progress.finish_and_clear();
    if let TrainingData::Translation { .. } = data
        && t.average_last > 1
        && let Some((averaged, loss)) = validate_average(dir, &data, &config, device)?
    {
        log.append(&MetricsRow {
            step: averaged.step,
            split: "average",
            loss,
            lr: schedule.lr(averaged.step),
            elapsed_secs: started.elapsed().as_secs_f64(),
            epoch: data.epochs_done(averaged.step),
            bleu: Some(averaged.bleu),
            ..Default::default()
        })?;
        last_bleu = Some(averaged.bleu);
        if best.as_ref().is_none_or(|b| averaged.bleu >= b.bleu) {
            best = Some(averaged);
        }
    }
    Ok(TrainSummary {
        steps: state.step,
        first_loss: first_loss.unwrap_or(f64::NAN),
        last_loss,
        validation: last_validation,
        bleu: last_bleu,
        best,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translation::EncodedPairs;

    fn translation_data(n: usize, batch_tokens: usize) -> TrainingData {
        let examples: Vec<Example> = (0..n)
            .map(|i| Example {
                src: vec![4 + i % 7; 1 + i % 5],
                tgt: vec![4 + i; 1 + (i * 3) % 7],
            })
            .collect();
        let (src_lens, tgt_lens) = train_lengths(&examples);
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
            vocab: Box::new(SubwordVocab::train(&sentences, 200, 1).unwrap()),
            batch_tokens,
            steps_per_epoch,
            planned_epoch: None,
            plan: Vec::new(),
        }
    }

    fn training(epochs: usize) -> TrainingConfig {
        TrainingConfig {
            steps: usize::MAX,
            epochs: Some(epochs),
            time_limit_secs: None,
            batch_size: 1,
            warmup: 1,
            peak_lr: None,
            label_smoothing: 0.1,
            grad_clip: None,
            seed: 3,
            log_every: 1,
            eval_every: 1,
            eval_samples: 1,
            checkpoint_every: 1,
            keep_checkpoints: 1,
            average_last: 1,
        }
    }

    #[test]
    fn every_epoch_sees_every_pair_once_in_a_new_order_and_a_resume_replays_it() {
        let t = training(3);
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
