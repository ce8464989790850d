//! The learning-rate schedule of §5.3:
//! `lr = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5)`, linear warm-up then inverse square
//! root decay, optionally scaled by a constant factor.

use serde::{Deserialize, Serialize};

/// The paper's warm-up schedule ("Noam").
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NoamSchedule {
    /// Model width `d_model`.
    pub d_model: usize,
    /// Warm-up steps (4000 in the paper).
    pub warmup: usize,
    /// Constant factor (1 in the paper).
    pub factor: f64,
}

impl NoamSchedule {
    /// The paper's schedule: factor 1.
    pub fn new(d_model: usize, warmup: usize) -> Self {
        Self {
            d_model,
            warmup: warmup.max(1),
            factor: 1.0,
        }
    }

    /// The same shape, scaled so that the rate at the end of warm-up is `peak`.
    pub fn with_peak(d_model: usize, warmup: usize, peak: f64) -> Self {
        let paper = Self::new(d_model, warmup);
        Self {
            factor: peak / paper.lr(paper.warmup),
            ..paper
        }
    }

    /// The rate at the end of warm-up, the highest.
    pub fn peak(&self) -> f64 {
        self.lr(self.warmup)
    }

    /// The rate for `step`, counted from 1 (step 0 is treated as step 1).
    pub fn lr(&self, step: usize) -> f64 {
        let step = step.max(1) as f64;
        let warmup = self.warmup as f64;
        self.factor
            * (self.d_model as f64).powf(-0.5)
            * step.powf(-0.5).min(step * warmup.powf(-1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_rates() {
        // d_model 512, warmup 4000 (the paper): step 1 -> 512^-0.5 · 4000^-1.5.
        let s = NoamSchedule::new(512, 4000);
        assert!((s.lr(1) - 0.044_194_17 * 3.952_847e-6).abs() < 1e-12);
        // Peak at step 4000: 512^-0.5 · 4000^-0.5 = 6.987_712e-4.
        assert!((s.peak() - 6.987_712e-4).abs() < 1e-9);
        // After warm-up, inverse square root: lr(16000) = peak / 2.
        assert!((s.lr(16_000) - s.peak() / 2.0).abs() < 1e-12);
        // Linear during warm-up: lr(2000) = peak / 2.
        assert!((s.lr(2000) - s.peak() / 2.0).abs() < 1e-12);
    }

    #[test]
    fn peak_scaling_keeps_the_shape() {
        let s = NoamSchedule::with_peak(256, 800, 1e-3);
        assert!((s.peak() - 1e-3).abs() < 1e-15);
        assert!((s.lr(3200) - 5e-4).abs() < 1e-12);
        assert!(s.lr(799) < s.lr(800) && s.lr(801) < s.lr(800));
    }
}
