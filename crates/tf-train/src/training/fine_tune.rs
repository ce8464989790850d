//! Fine-tuning a changed model for a few steps (a pruned one, to recover what pruning cost): a
//! new run with the trained run's task and recipe whose learning rate picks up where the
//! trained run's schedule ended, after a short warm-up for the fresh Adam moments.

use tf_model::TransformerConfig;

use crate::error::{Result, bail};
use crate::store::model_dir::ModelDir;
use crate::training::config::{RunConfig, TrainingConfig};
use crate::training::optimizer::schedule;

/// The last step the run in `dir` trained: its newest checkpoint's, else its best model's;
/// `None` for a directory that records neither (an imported, averaged or pruned model).
pub fn trained_steps(dir: &ModelDir) -> Result<Option<usize>> {
    if let Some(newest) = dir.checkpoint_names()?.last() {
        return Ok(Some(dir.checkpoint_step(newest)?));
    }
    Ok(dir.best()?.map(|best| best.step))
}

/// The learning rate `trained`'s schedule had reached after `steps` steps.
pub fn final_lr(trained: &RunConfig, steps: usize) -> f64 {
    schedule(trained).lr(steps)
}

/// A run that fine-tunes `model` (the trained model's configuration, changed) for `steps`
/// optimizer steps on `trained`'s task and recipe, at learning rate `lr`: warm-up over a tenth
/// of the steps, then the paper's inverse square-root decay. No time limit, no epochs count,
/// no checkpoint averaging, no length penalty chosen (`tf length-penalty` does that for the
/// result); validated and checkpointed at the end (and every `eval_every` /
/// `checkpoint_every` steps of a synthetic task, if sooner).
pub fn fine_tune_run(
    trained: &RunConfig,
    model: TransformerConfig,
    steps: usize,
    lr: f64,
) -> Result<RunConfig> {
    if steps == 0 {
        bail!("a fine-tune needs at least one step");
    }
    if !(lr.is_finite() && lr > 0.0) {
        bail!("the fine-tune's learning rate must be a positive number, got {lr}");
    }
    let t = &trained.training;
    let run = RunConfig {
        model,
        task: trained.task.clone(),
        training: TrainingConfig {
            steps,
            epochs: None,
            time_limit_secs: None,
            warmup: (steps / 10).max(1),
            peak_lr: Some(lr),
            eval_every: t.eval_every.min(steps),
            checkpoint_every: t.checkpoint_every.min(steps),
            average_last: 1,
            length_penalties: Vec::new(),
            ..t.clone()
        },
    };
    run.validate()?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::task::{Task, TaskKind};
    use crate::training::preset::Preset;

    fn trained() -> RunConfig {
        let task = Task::new(TaskKind::Reverse, 6, 1, 5).unwrap();
        Preset::synthetic().synthetic_run(task).unwrap()
    }

    #[test]
    fn the_fine_tune_warms_up_to_the_given_rate_and_then_decays() {
        let trained = trained();
        let lr = final_lr(&trained, 3500);
        // Peak 1e-3 at step 400, then 1e-3 · (400 / 3500)^0.5.
        assert!(
            (lr - 1e-3 * (400.0f64 / 3500.0).sqrt()).abs() < 1e-12,
            "{lr}"
        );
        let run = fine_tune_run(&trained, trained.model.clone(), 200, lr).unwrap();
        let t = &run.training;
        assert_eq!(
            (t.steps, t.warmup, t.epochs, t.time_limit_secs),
            (200, 20, None, None)
        );
        assert_eq!(
            (t.eval_every, t.checkpoint_every, t.average_last),
            (200, 200, 1)
        );
        assert!(
            t.length_penalties.is_empty(),
            "a short fine-tune chooses no α"
        );
        assert_eq!(t.label_smoothing, trained.training.label_smoothing);
        let fine = schedule(&run);
        assert!((fine.lr(20) - lr).abs() < 1e-15);
        assert!(fine.lr(1) < fine.lr(20) && fine.lr(200) < fine.lr(20));
    }

    #[test]
    fn a_fine_tune_without_steps_or_with_a_bad_rate_is_refused() {
        let trained = trained();
        let model = trained.model.clone();
        assert!(fine_tune_run(&trained, model.clone(), 0, 1e-4).is_err());
        for lr in [0.0, -1e-4, f64::NAN] {
            let err = fine_tune_run(&trained, model.clone(), 10, lr).unwrap_err();
            assert!(err.to_string().contains("learning rate"), "{err}");
        }
    }
}
