//! The training loop: teacher forcing, label-smoothed cross-entropy, Adam with the paper's
//! warm-up schedule, gradient clipping, periodic validation, checkpoints and resume.
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

use crate::batch::Seq2SeqBatch;
use crate::checkpoint::{ModelDir, TrainingState};
use crate::config::RunConfig;
use crate::eval;
use crate::metrics::{MetricsLog, MetricsRow};
use crate::schedule::NoamSchedule;

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
    /// Last validation result.
    pub validation: eval::Accuracy,
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

/// The examples of training step `step` (deterministic in the seed and step, so a resumed run
/// sees the batches it would have seen).
fn batch_seed(seed: u64, step: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (step as u64)
}

/// Trains the run described by `config` into `dir`, on `device` (gradients are taken on its
/// autodiff form). With `resume`, continues from the newest checkpoint in `dir` and keeps the
/// configuration saved there; without it, `dir` must not hold a run already.
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
    let mut log = MetricsLog::open(&dir.metrics_path())?;
    let schedule = schedule(&config);
    let validation = config
        .task
        .samples(t.eval_samples, t.seed ^ VALIDATION_STREAM);
    let max_target_len = config.task.max_len + 1;

    let progress = if show_progress {
        ProgressBar::new(t.steps as u64)
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
    let (mut window_tokens, mut window_start) = (0usize, Instant::now());
    let (mut first_loss, mut last_loss) = (None, f64::NAN);
    let mut last_validation = eval::Accuracy::default();

    while state.step < t.steps {
        state.step += 1;
        let step = state.step;
        let lr = schedule.lr(step);

        let examples = config.task.samples(t.batch_size, batch_seed(t.seed, step));
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
                ..Default::default()
            })?;
        }

        if step.is_multiple_of(t.eval_every) || step == t.steps {
            let inference = model.valid();
            let inference_device = device.clone();
            let valid_loss = eval::loss(
                &inference,
                &validation,
                t.label_smoothing,
                256,
                &inference_device,
            );
            last_validation = eval::accuracy(
                &inference,
                &validation,
                max_target_len,
                256,
                &inference_device,
            )?;
            let elapsed = started.elapsed().as_secs_f64();
            progress.suspend(|| {
                println!(
                    "step {step:>6}  train loss {last_loss:.4}  valid loss {valid_loss:.4}  token acc {:.4}  exact match {:.4}  ({elapsed:.0} s)",
                    last_validation.token_accuracy, last_validation.exact_match
                )
            });
            log.append(&MetricsRow {
                step,
                split: "valid",
                loss: valid_loss,
                lr,
                token_accuracy: Some(last_validation.token_accuracy),
                exact_match: Some(last_validation.exact_match),
                elapsed_secs: elapsed,
                ..Default::default()
            })?;
        }

        if step.is_multiple_of(t.checkpoint_every) || step == t.steps {
            state.elapsed_secs = started.elapsed().as_secs_f64();
            dir.save_checkpoint(&model, &optimizer, &state, t.keep_checkpoints)?;
        }
    }
    progress.finish_and_clear();
    Ok(TrainSummary {
        steps: state.step,
        first_loss: first_loss.unwrap_or(f64::NAN),
        last_loss,
        validation: last_validation,
        elapsed_secs: started.elapsed().as_secs_f64(),
    })
}
