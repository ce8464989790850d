//! Learning curves: a run's metrics log drawn as training loss, validation loss, validation BLEU
//! (translation) or exact match (synthetic tasks), and the learning rate, against the step; one
//! line per run, so several runs compare on one picture.

use std::path::{Path, PathBuf};

use tf_train::training::metrics::MetricsRow;

use crate::error::Result;
use crate::plot::{Axes, Panel, Series, panels_plot};

/// One run's metrics, named for the legend.
#[derive(Clone, Debug)]
pub struct RunMetrics {
    /// The run's name (its directory, say).
    pub name: String,
    /// Its log.
    pub rows: Vec<MetricsRow>,
}

/// The four charts of `runs`: training loss, validation loss, the validation measure, and the
/// learning rate (in thousandths).
pub fn learning_curves(runs: &[RunMetrics]) -> Vec<Panel> {
    let series = |split: &str, value: &dyn Fn(&MetricsRow) -> Option<f64>| -> Vec<Series> {
        runs.iter()
            .map(|run| Series {
                name: run.name.clone(),
                points: run
                    .rows
                    .iter()
                    .filter(|r| r.split == split)
                    .filter_map(|r| Some((r.step as f64, value(r)?)))
                    .collect(),
            })
            .collect()
    };
    let panel = |title: &str, y_label: &str, series: Vec<Series>| {
        let top = series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max);
        Panel {
            title: title.into(),
            axes: Axes {
                y_max: Some(if top > 0.0 { top } else { 1.0 }),
                ..Axes::unit("step", y_label)
            },
            series,
            labelled: false,
        }
    };
    let translation = runs.iter().flat_map(|r| &r.rows).any(|r| r.bleu.is_some());
    let measure = if translation {
        panel(
            "validation BLEU (greedy)",
            "BLEU",
            series("valid", &|r| r.bleu),
        )
    } else {
        Panel {
            axes: Axes::unit("step", "exact match"),
            ..panel(
                "validation exact match",
                "exact match",
                series("valid", &|r| r.exact_match),
            )
        }
    };
    vec![
        panel("training loss", "loss", series("train", &|r| Some(r.loss))),
        panel(
            "validation loss",
            "loss",
            series("valid", &|r| Some(r.loss)),
        ),
        measure,
        panel(
            "learning rate",
            "lr × 1000",
            series("train", &|r| Some(r.lr * 1e3)),
        ),
    ]
}

/// Draws `runs` as `stem.png` and `stem.svg`.
pub fn write_curves(stem: &Path, title: &str, runs: &[RunMetrics]) -> Result<Vec<PathBuf>> {
    panels_plot(stem, title, &learning_curves(runs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: usize, split: &'static str, loss: f64) -> MetricsRow {
        MetricsRow {
            step,
            split,
            loss,
            lr: 1e-3,
            exact_match: (split == "valid").then_some(0.5),
            ..Default::default()
        }
    }

    #[test]
    fn four_charts_one_line_per_run_from_the_right_rows() {
        let runs = [
            RunMetrics {
                name: "a".into(),
                rows: vec![
                    row(1, "train", 3.0),
                    row(50, "train", 1.0),
                    row(50, "valid", 1.2),
                ],
            },
            RunMetrics {
                name: "b".into(),
                rows: vec![row(1, "train", 2.0)],
            },
        ];
        let panels = learning_curves(&runs);
        assert_eq!(panels.len(), 4);
        assert_eq!(panels[0].series.len(), 2);
        assert_eq!(panels[0].series[0].points, [(1.0, 3.0), (50.0, 1.0)]);
        assert_eq!(panels[0].axes.y_max, Some(3.0));
        assert_eq!(panels[1].series[0].points, [(50.0, 1.2)]);
        assert_eq!(panels[2].title, "validation exact match");
        assert_eq!(panels[2].series[0].points, [(50.0, 0.5)]);
        assert_eq!(panels[3].series[1].points, [(1.0, 1.0)]);

        let dir = std::env::temp_dir().join(format!("tf-curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let written = write_curves(&dir.join("curves"), "runs", &runs).unwrap();
        assert!(written.iter().all(|p| p.is_file()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
