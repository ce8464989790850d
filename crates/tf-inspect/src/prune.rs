//! Pruning sweeps: remove heads in order of importance, least important first, without
//! retraining, and measure the model after each step (Michel et al., 2019, Figure 2's shape).

use std::path::{Path, PathBuf};

use tf_model::{Transformer, TransformerConfig};
use tf_train::eval::accuracy::Accuracy;

use crate::error::Result;
use crate::importance::{HeadImportance, least_important};
use crate::plot::{Axes, Series, line_plot};

/// The model measured with `removed` heads pruned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepPoint {
    /// Heads removed.
    pub removed: usize,
    /// Greedy accuracy of what is left.
    pub accuracy: Accuracy,
}

/// Measures `model` (built from `config`) with 0, 1, … heads removed in importance order, up to
/// every head that can go (each block keeps one); `measure` scores one model.
pub fn sweep(
    model: &Transformer,
    config: &TransformerConfig,
    importance: &[HeadImportance],
    mut measure: impl FnMut(&Transformer) -> Result<Accuracy>,
    mut on_point: impl FnMut(&SweepPoint),
) -> Result<Vec<SweepPoint>> {
    let removable = model.heads().len() - model.attention_blocks().len();
    let mut points = Vec::with_capacity(removable + 1);
    for removed in 0..=removable {
        let accuracy = if removed == 0 {
            measure(model)?
        } else {
            let (_, pruned) = model.prune_heads(config, &least_important(importance, removed)?)?;
            measure(&pruned)?
        };
        let point = SweepPoint { removed, accuracy };
        on_point(&point);
        points.push(point);
    }
    Ok(points)
}

/// Draws exact match and token accuracy against heads removed as `stem.png` and `stem.svg`.
pub fn plot_sweep(stem: &Path, title: &str, points: &[SweepPoint]) -> Result<Vec<PathBuf>> {
    let series = |name: &str, value: fn(&Accuracy) -> f64| Series {
        name: name.into(),
        points: points
            .iter()
            .map(|p| (p.removed as f64, value(&p.accuracy)))
            .collect(),
    };
    line_plot(
        stem,
        title,
        &Axes::unit("heads removed", "accuracy"),
        &[
            series("exact match", |a| a.exact_match),
            series("token accuracy", |a| a.token_accuracy),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::importance::head_importance;
    use burn::module::Module;
    use burn::tensor::Device;
    use tf_train::eval::accuracy::accuracy;
    use tf_train::{Task, TaskKind};

    #[test]
    fn a_sweep_removes_one_more_head_each_step_and_its_first_point_is_the_model() {
        let task = Task::new(TaskKind::Reverse, 5, 1, 4).unwrap();
        let config = task.tiny_model();
        let device = Device::flex();
        let gradient_device = device.clone().autodiff();
        gradient_device.seed(3);
        let gradient_model = config.init(&gradient_device);
        let model = gradient_model.valid();
        let examples = task.samples(4, 1);
        let importance = head_importance(&gradient_model, &examples, 0.0, &gradient_device);
        let measure = |m: &Transformer| Ok(accuracy(m, &examples, 5, 8, &device)?);
        let mut heard = Vec::new();
        let points = sweep(&model, &config, &importance, measure, |p| {
            heard.push(p.removed)
        })
        .unwrap();
        // 2 + 2 layers of 2 heads in 6 blocks: 12 heads, 6 can go.
        assert_eq!(heard, (0..=6).collect::<Vec<_>>());
        assert_eq!(
            points[0].accuracy,
            accuracy(&model, &examples, 5, 8, &device).unwrap()
        );
    }
}
