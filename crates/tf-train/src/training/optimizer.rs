//! The optimizer of §5.3: Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9, global-norm gradient
//! clipping, and the warm-up schedule ([`NoamSchedule`]) that sets its learning rate each step.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, ModuleOptimizer};

use crate::training::config::RunConfig;
use crate::training::schedule::NoamSchedule;

/// Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 (§5.3), and the run's gradient clipping.
pub fn optimizer(config: &RunConfig) -> ModuleOptimizer {
    adam(config.training.grad_clip)
}

/// Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9 (§5.3), the gradients' global norm clipped to
/// `grad_clip` if given.
pub fn adam(grad_clip: Option<f64>) -> ModuleOptimizer {
    AdamConfig::new()
        .with_beta_1(0.9)
        .with_beta_2(0.98)
        .with_epsilon(1e-9)
        .with_grad_clipping(grad_clip.map(|c| GradientClippingConfig::Norm(c as f32)))
        .init()
}

/// The learning-rate schedule of a run: the paper's, or its shape scaled to the run's peak.
pub fn schedule(config: &RunConfig) -> NoamSchedule {
    let t = &config.training;
    let d_model = config.model.layer.d_model;
    match t.peak_lr {
        Some(peak) => NoamSchedule::with_peak(d_model, t.warmup, peak),
        None => NoamSchedule::new(d_model, t.warmup),
    }
}
