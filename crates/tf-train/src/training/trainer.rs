//! The training loop: teacher forcing, label-smoothed cross-entropy, Adam with the paper's
//! warm-up schedule, gradient clipping, periodic validation, checkpoints and resume. Synthetic
//! tasks draw fresh samples every step; translation runs epochs over a corpus in token-budget
//! batches, validates loss and greedy BLEU after each epoch and keeps the best model by BLEU.
//!
//! A plain loop rather than burn-train's `Learner`: owning it gives the per-step learning rate
//! of §5.3, checkpoints that are written atomically and hold the optimizer and step, and
//! greedy-decoding accuracy or BLEU as the validation metric (docs/training.md).

use std::time::{Duration, Instant};

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Tensor};
use tf_model::{DEFAULT_BEAM, Transformer};

use crate::data::batch::Seq2SeqBatch;
use crate::data::source::{TrainingData, step_seed};
use crate::data::subword::SubwordVocab;
use crate::data::translation::TranslationTask;
use crate::error::{Error, Result, ResultExt, bail};
use crate::eval::accuracy::Accuracy;
use crate::eval::length_penalty::{LengthPenalty, made_on, tune_length_penalty};
use crate::eval::validation::{Validation, validate};
use crate::store::checkpoint::{Publish, TrainingState};
use crate::store::model_dir::{BestModel, ModelDir, RunLock, copy_weights};
use crate::training::config::{RunConfig, RunTask, TrainingConfig};
use crate::training::metrics::{MetricsLog, MetricsRow};
use crate::training::observer::TrainingObserver;
use crate::training::optimizer::{optimizer, schedule};

/// Seed offset of the dropout stream, so that it is not the data stream.
const DROPOUT_STREAM: u64 = 0xD0_0000_0000_0002;

/// How a run begins.
#[derive(Clone, Copy, Debug)]
pub enum Start<'a> {
    /// A new run into a directory that holds no model. A translation run brings the vocabulary
    /// it was configured with, saved as the run's `tokenizer.json`.
    New {
        /// The run.
        config: &'a RunConfig,
        /// The subword vocabulary (translation only).
        vocabulary: Option<&'a SubwordVocab>,
    },
    /// A new run, like [`Start::New`], whose model starts from `weights` instead of a fresh
    /// initialisation (fine-tuning a pruned model). `weights` must fit `config.model`.
    FineTune {
        /// The run.
        config: &'a RunConfig,
        /// The subword vocabulary (translation only).
        vocabulary: Option<&'a SubwordVocab>,
        /// The model training starts from.
        weights: &'a Transformer,
    },
    /// Continues the run in the directory from its newest checkpoint, with the configuration
    /// saved there.
    Resume,
}

/// What a run ended with.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    /// Steps taken in total.
    pub steps: usize,
    /// Steps taken by this call (fewer than `steps` after a resume; 0 when nothing was left).
    pub steps_this_run: usize,
    /// Training loss at the first logged step of this invocation.
    pub first_loss: f64,
    /// Training loss at the last logged step.
    pub last_loss: f64,
    /// Last validation result (synthetic tasks).
    pub validation: Accuracy,
    /// Last validation BLEU (translation).
    pub bleu: Option<f64>,
    /// The weights in `model.bpk` (translation: the best by validation BLEU).
    pub best: Option<BestModel>,
    /// Wall time of the run, seconds (a resumed run includes the time before the interruption).
    pub elapsed_secs: f64,
    /// The length penalty chosen for the model (translation runs that choose one).
    pub length_penalty: Option<LengthPenalty>,
}

/// Averages the newest `average_last` checkpoints (when there are at least two), validates the
/// mean, and makes it the directory's model if its BLEU is at least the best so far. Returns
/// the mean's record and validation loss.
fn validate_average(
    dir: &ModelDir,
    data: &TrainingData,
    config: &RunConfig,
    device: &Device,
    observer: &mut dyn TrainingObserver,
) -> Result<Option<(BestModel, f64)>> {
    let available = dir.checkpoint_names()?.len();
    let last = config.training.average_last.min(available);
    if last < 2 {
        return Ok(None);
    }
    let averaged = dir.average_checkpoints(last, device)?;
    let result = validate(&averaged.model, data, config, device)?;
    let bleu = result.bleu.expect("translation validates BLEU");
    let newest = averaged.names.last().expect("two or more");
    let record = BestModel {
        step: dir.checkpoint_step(newest)?,
        bleu,
        averaged: averaged.names.clone(),
    };
    let best = dir.best()?;
    let keep = best.as_ref().is_none_or(|b| bleu >= b.bleu);
    if keep {
        dir.save_best(&averaged.model, &record)?;
    }
    observer.report(&format!(
        "the mean of {} has validation BLEU {bleu:.2}{}",
        averaged.names.join(", "),
        match (&best, keep) {
            (Some(b), true) => format!(" (best so far {:.2}): kept as the model", b.bleu),
            (Some(b), false) => format!(": the best so far ({:.2}) stays the model", b.bleu),
            (None, _) => ": kept as the model".to_string(),
        }
    ));
    Ok(Some((record, result.loss)))
}

/// Trains a run into `dir` on `device` (gradients are taken on its autodiff form), telling
/// `observer` how it goes. A [`Start::New`] or [`Start::FineTune`] run is checked whole before
/// anything is written.
pub fn train(
    dir: &ModelDir,
    start: Start<'_>,
    device: &Device,
    observer: &mut dyn TrainingObserver,
) -> Result<TrainSummary> {
    let result = run(dir, start, device, observer);
    observer.finished();
    result
}

/// Whether a logged training loss means the run diverged: not finite, or above both the first
/// logged loss and four times the best so far. A learning run stays below its first loss
/// (an untrained model's), and noise does not quadruple a loss; a learning rate far too high
/// sends it to thousands within steps.
/// One optimisation step, as `tf train` takes it: teacher-forced forward pass, label-smoothed
/// loss, backward pass, and `optimizer` (Adam with the run's clipping, see
/// [`optimizer`](crate::training::optimizer::optimizer)) at learning rate `lr`. Returns the
/// updated model and the batch's loss. The benchmark times this very function.
pub fn training_step(
    model: Transformer,
    optimizer: &mut ModuleOptimizer,
    batch: Seq2SeqBatch,
    lr: f64,
    label_smoothing: f64,
) -> (Transformer, Tensor<1>) {
    let loss = batch.loss(&model, label_smoothing);
    let gradients = GradientsParams::from_grads(loss.clone().backward(), &model);
    (optimizer.step(lr, model, gradients), loss)
}

fn diverged(loss: f64, first: f64, best: f64) -> bool {
    !loss.is_finite() || loss > first.max(4.0 * best)
}

/// Writes a new run's configuration (and vocabulary) into `dir`, after checking them all, and
/// holds the directory for the run.
fn create_run(
    dir: &ModelDir,
    config: &RunConfig,
    vocabulary: Option<&SubwordVocab>,
) -> Result<RunLock> {
    config.validate()?;
    dir.ensure_vacant()?;
    match (&config.task, vocabulary) {
        (RunTask::Translation(task), Some(vocabulary)) if vocabulary.len() != task.vocab_size => {
            bail!(
                "the vocabulary has {} tokens, the configuration {}",
                vocabulary.len(),
                task.vocab_size
            )
        }
        (RunTask::Translation(_), None) => {
            bail!("a new translation run needs its subword vocabulary")
        }
        (RunTask::Synthetic(_), Some(_)) => {
            bail!("a synthetic task has no subword vocabulary")
        }
        _ => {}
    }
    let lock = dir.lock()?;
    // Another run may have taken the directory between the first look and the lock.
    dir.ensure_vacant()?;
    if let Some(vocabulary) = vocabulary {
        vocabulary.save(&dir.tokenizer_path())?;
    }
    dir.save_config(config)?;
    Ok(lock)
}

fn run(
    dir: &ModelDir,
    start: Start<'_>,
    device: &Device,
    observer: &mut dyn TrainingObserver,
) -> Result<TrainSummary> {
    let train_device = device.clone().autodiff();
    // The model a fine-tune starts from, on the training device.
    let (config, _lock, given) = match start {
        Start::New { config, vocabulary } => {
            let lock = create_run(dir, config, vocabulary)?;
            (config.clone(), lock, None)
        }
        Start::FineTune {
            config,
            vocabulary,
            weights,
        } => {
            // The weights must fit the configuration before anything is written.
            config.validate()?;
            let model = copy_weights(weights, config.model.init(&train_device))
                .context("cannot start from the given model")?;
            let lock = create_run(dir, config, vocabulary)?;
            (config.clone(), lock, Some(model))
        }
        Start::Resume => {
            dir.load_config()?; // a clear error, before the lock creates anything
            let lock = dir.lock()?;
            (dir.load_config()?, lock, None)
        }
    };
    let t = &config.training;
    let mut data = TrainingData::new(&config, dir, &mut |line| observer.report(line))?;
    train_device.seed(t.seed);

    let mut model: Transformer = given.unwrap_or_else(|| config.model.init(&train_device));
    let mut optimizer = optimizer(&config);
    let mut state = TrainingState {
        step: 0,
        seed: t.seed,
        elapsed_secs: 0.0,
    };
    if let Start::Resume = start {
        if dir.has_checkpoint() {
            (model, optimizer, state) = dir
                .load_checkpoint(model, optimizer)
                .context("cannot resume")?;
            observer.report(&format!("resuming at step {}", state.step));
        } else {
            observer.report(&format!(
                "{} has no checkpoint yet (the run stopped before its first): training starts \
                 again from step 0",
                dir.path().display()
            ));
        }
    }
    let mut best = dir.best()?;
    // Rows logged after the checkpoint by an interrupted run are dropped: the resumed run
    // logs those steps again.
    let mut log = MetricsLog::open_after(&dir.metrics_path(), state.step)?;
    let schedule = schedule(&config);
    let total_steps = data.total_steps(t);
    let publish = match data {
        TrainingData::Synthetic { .. } => Publish::AsModel,
        TrainingData::Translation { .. } => Publish::CheckpointOnly,
    };
    let first_step = state.step;
    observer.started(state.step, total_steps);

    let started = Instant::now() - Duration::from_secs_f64(state.elapsed_secs);
    let time_limit = t.time_limit_secs.map(Duration::from_secs_f64);
    let (mut window_tokens, mut window_start) = (0usize, Instant::now());
    let (mut first_loss, mut last_loss) = (None, f64::NAN);
    let mut best_loss: Option<(f64, usize)> = None;
    let mut last_validation = Accuracy::default();
    let mut last_bleu = None;

    let out_of_time = || time_limit.is_some_and(|limit| started.elapsed() >= limit);
    while state.step < total_steps && !out_of_time() {
        state.step += 1;
        let step = state.step;
        let lr = schedule.lr(step);

        let examples = data.batch(step, t);
        // Each step's dropout masks come from the run's seed and the step alone, so that a
        // resumed run continues exactly as the uninterrupted one would have.
        train_device.seed(step_seed(t.seed ^ DROPOUT_STREAM, step));
        let batch = Seq2SeqBatch::new(&examples, &train_device);
        let n_target_tokens = batch.n_target_tokens;
        let loss;
        (model, loss) = training_step(model, &mut optimizer, batch, lr, t.label_smoothing);
        let logged_loss = (step.is_multiple_of(t.log_every) || step == 1).then_some(loss);
        window_tokens += n_target_tokens;

        let mut progress_line = None;
        if let Some(loss) = logged_loss {
            let loss = loss.into_scalar::<f32>() as f64;
            let first = *first_loss.get_or_insert(loss);
            let (best, best_step) = *best_loss.get_or_insert((loss, step));
            if diverged(loss, first, best) {
                let checkpoint = dir.checkpoint_names()?.pop();
                return Err(Error::Training(format!(
                    "the training loss diverged at step {step}: {loss:.4} (first logged {first:.4}, \
                     best {best:.4} at step {best_step}); lower the learning rate and train again{}",
                    checkpoint
                        .map(|c| format!(" ({c} holds the weights before it)"))
                        .unwrap_or_default()
                )));
            }
            if loss < best {
                best_loss = Some((loss, step));
            }
            let tokens_per_sec = window_tokens as f64 / window_start.elapsed().as_secs_f64();
            (window_tokens, window_start) = (0, Instant::now());
            last_loss = loss;
            progress_line = Some(format!(
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
        observer.stepped(step, progress_line.as_deref());

        let stopping = out_of_time();
        let last = step == total_steps || stopping;
        if data.validates_after(step, t) || last {
            let validation_started = Instant::now();
            let inference = model.valid();
            let result = validate(&inference, &data, &config, device)?;
            let elapsed = started.elapsed().as_secs_f64();
            let epoch = data.epochs_done(step);
            let Validation {
                loss: valid_loss,
                accuracy,
                bleu,
            } = result;
            let summary = match (&accuracy, bleu) {
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
            observer.report(&format!(
                "{epoch_text}step {step:>6}  train loss {last_loss:.4}  valid loss {valid_loss:.4}  {summary}  ({elapsed:.0} s)"
            ));
            log.append(&MetricsRow {
                step,
                split: "valid",
                loss: valid_loss,
                lr,
                token_accuracy: accuracy.map(|a| a.token_accuracy),
                exact_match: accuracy.map(|a| a.exact_match),
                elapsed_secs: elapsed,
                epoch,
                bleu,
                ..Default::default()
            })?;
        }

        if data.checkpoints_after(step, t) || last {
            state.elapsed_secs = started.elapsed().as_secs_f64();
            dir.save_checkpoint(&model, &optimizer, &state, t.keep_checkpoints, publish)?;
        }
        if stopping {
            observer.report(&format!(
                "stopping at step {step}: the time limit of {:.0} s is reached",
                t.time_limit_secs.unwrap_or_default()
            ));
            break;
        }
    }
    if let TrainingData::Translation { .. } = data
        && t.average_last > 1
        && let Some((averaged, loss)) = validate_average(dir, &data, &config, device, observer)?
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
    let elapsed_secs = started.elapsed().as_secs_f64();
    let length_penalty = match &config.task {
        RunTask::Translation(task) if !t.length_penalties.is_empty() => {
            Some(choose_length_penalty(dir, task, t, device, observer)?)
        }
        _ => None,
    };
    Ok(TrainSummary {
        steps: state.step,
        steps_this_run: state.step - first_step,
        first_loss: first_loss.unwrap_or(f64::NAN),
        last_loss,
        validation: last_validation,
        bleu: last_bleu,
        best,
        elapsed_secs,
        length_penalty,
    })
}

/// Chooses the length penalty of the directory's final model on the whole validation split
/// (after training: it does not count against the time limit), telling `observer`; a choice
/// already made for these weights on the same terms (a finished run resumed) is kept.
fn choose_length_penalty(
    dir: &ModelDir,
    task: &TranslationTask,
    t: &TrainingConfig,
    device: &Device,
    observer: &mut dyn TrainingObserver,
) -> Result<LengthPenalty> {
    if let Some(choice) = dir.length_penalty()?
        && made_on(
            &choice,
            &task.valid_split,
            DEFAULT_BEAM,
            &t.length_penalties,
        )
    {
        return Ok(choice);
    }
    let alphas: Vec<String> = t.length_penalties.iter().map(f64::to_string).collect();
    observer.report(&format!(
        "choosing the length penalty: beam {DEFAULT_BEAM} on all of {} with α {}",
        task.valid_split,
        alphas.join(", ")
    ));
    let choice = tune_length_penalty(
        dir,
        &task.data,
        &task.valid_split,
        DEFAULT_BEAM,
        &t.length_penalties,
        device,
        |_, _| {},
    )?;
    let scores: Vec<String> = choice
        .tried
        .iter()
        .map(|s| format!("α {} {:.2}", s.alpha, s.bleu))
        .collect();
    observer.report(&format!(
        "BLEU on {} {} sentences: {}; `tf translate` decodes with α {}",
        choice.sentences,
        choice.split,
        scores.join(", "),
        choice.alpha
    ));
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::task::{Task, TaskKind};
    use crate::testing::temp_dir;
    use crate::training::observer::Silent;
    use crate::training::preset::Preset;

    #[test]
    fn divergence_is_a_non_finite_loss_or_one_far_above_both_the_first_and_the_best() {
        assert!(!diverged(2.9, 3.0, 0.5), "below the first loss");
        assert!(!diverged(1.9, 3.0, 0.5), "noise around a falling loss");
        assert!(
            diverged(3.1, 3.0, 0.5),
            "worse than untrained and 6 × the best"
        );
        assert!(
            !diverged(3.5, 3.0, 1.0),
            "above the first but under 4 × the best"
        );
        assert!(diverged(1.2e6, 3.0, 2.8));
        assert!(diverged(f64::NAN, 3.0, 0.5) && diverged(f64::INFINITY, 3.0, 0.5));
    }

    #[test]
    fn a_new_run_checks_everything_before_it_writes() {
        let dir = temp_dir("trainer-new");
        let out = ModelDir::new(dir.join("run"));
        let task = Task::new(TaskKind::Copy, 5, 1, 4).unwrap();
        let mut config = Preset::synthetic().synthetic_run(task).unwrap();
        config.training.label_smoothing = 1.5;
        let start = Start::New {
            config: &config,
            vocabulary: None,
        };
        let err = train(&out, start, &Device::flex(), &mut Silent).unwrap_err();
        assert!(err.to_string().contains("label_smoothing"), "{err}");
        assert!(
            !out.path().exists(),
            "nothing may be written for an invalid run"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
