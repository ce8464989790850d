//! Pruning sweeps: remove heads one more at a time in a chosen order (least important first,
//! at random, or one kind of attention only), without retraining, and measure the model after
//! each step (Michel et al., 2019, Figures 2 and 3). A synthetic model is measured by its
//! accuracy, a translator by BLEU (greedy and beam) and decoding speed.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use tf_model::{AttentionKind, BlockId, HeadId, Transformer, TransformerConfig};
use tf_train::data::vocabulary::TranslationVocab;
use tf_train::eval::accuracy::Accuracy;
use tf_train::eval::bleu::corpus_bleu;
use tf_train::eval::translate::{TranslateOptions, translate};

use crate::error::Result;
use crate::importance::HeadImportance;
use crate::plot::{Axes, Series, line_plot};

/// The order heads are removed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PruneOrder {
    /// Least important first (by normalized importance).
    Importance,
    /// A random order drawn from the seed.
    Random {
        /// Seed of the order.
        seed: u64,
    },
    /// Only heads of one kind of attention, least important first.
    Kind(AttentionKind),
}

impl PruneOrder {
    /// A name for tables and legends: `importance`, `random`, or the kind's name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Importance => "importance",
            Self::Random { .. } => "random",
            Self::Kind(kind) => kind.name(),
        }
    }
}

/// Every head that can go, in the order `order` removes them: a head whose block would be left
/// without heads is passed over (each block keeps one), so removing the first `k` is always
/// possible.
pub fn removal_order(importance: &[HeadImportance], order: PruneOrder) -> Vec<HeadId> {
    let mut candidates: Vec<&HeadImportance> = importance
        .iter()
        .filter(|i| match order {
            PruneOrder::Kind(kind) => i.head.block.kind == kind,
            _ => true,
        })
        .collect();
    match order {
        PruneOrder::Random { seed } => {
            candidates.sort_by_key(|i| i.head);
            candidates.shuffle(&mut StdRng::seed_from_u64(seed));
        }
        _ => candidates.sort_by(|a, b| {
            a.normalized
                .total_cmp(&b.normalized)
                .then(a.head.cmp(&b.head))
        }),
    }
    let block_size = |block: BlockId| importance.iter().filter(|i| i.head.block == block).count();
    let mut removed: Vec<HeadId> = Vec::new();
    for candidate in candidates {
        let block = candidate.head.block;
        let gone = removed.iter().filter(|h| h.block == block).count();
        if gone + 1 < block_size(block) {
            removed.push(candidate.head);
        }
    }
    removed
}

/// The model measured with `removed` heads pruned.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct SweepPoint<S> {
    /// Heads removed.
    pub removed: usize,
    /// What `measure` gave for what is left.
    pub score: S,
}

/// Measures `model` (built from `config`) with the first 0, 1, …, `order.len()` heads of
/// `order` removed ([`removal_order`]); `measure` scores one model, `on_point` hears each point.
pub fn sweep<S>(
    model: &Transformer,
    config: &TransformerConfig,
    order: &[HeadId],
    mut measure: impl FnMut(&Transformer) -> Result<S>,
    mut on_point: impl FnMut(&SweepPoint<S>),
) -> Result<Vec<SweepPoint<S>>> {
    let mut points = Vec::with_capacity(order.len() + 1);
    for removed in 0..=order.len() {
        let score = if removed == 0 {
            measure(model)?
        } else {
            let (_, pruned) = model.prune_heads(config, &order[..removed])?;
            measure(&pruned)?
        };
        let point = SweepPoint { removed, score };
        on_point(&point);
        points.push(point);
    }
    Ok(points)
}

/// A translator's BLEU and speed on a set of sentences.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TranslationScore {
    /// Corpus BLEU of greedy decoding.
    pub greedy_bleu: f64,
    /// Greedy decoding, sentences per second.
    pub greedy_per_sec: f64,
    /// Corpus BLEU of beam search, when measured.
    pub beam_bleu: Option<f64>,
    /// Beam search, sentences per second, when measured.
    pub beam_per_sec: Option<f64>,
}

/// Scores `model` on `sources` against `references`: greedy decoding, and beam search when
/// `beam` is given, each timed.
pub fn translation_score(
    model: &Transformer,
    vocab: &TranslationVocab,
    sources: &[String],
    references: &[String],
    beam: Option<TranslateOptions>,
    device: &Device,
) -> Result<TranslationScore> {
    let run = |options: &TranslateOptions| -> Result<(f64, f64)> {
        let started = Instant::now();
        let out = translate(model, vocab, sources, options, device, |_| {})?;
        let per_sec = sources.len() as f64 / started.elapsed().as_secs_f64();
        Ok((corpus_bleu(&out.sentences, references)?.score, per_sec))
    };
    let (greedy_bleu, greedy_per_sec) = run(&TranslateOptions::greedy())?;
    let beam = beam.map(|options| run(&options)).transpose()?;
    Ok(TranslationScore {
        greedy_bleu,
        greedy_per_sec,
        beam_bleu: beam.map(|b| b.0),
        beam_per_sec: beam.map(|b| b.1),
    })
}

/// Draws exact match and token accuracy against heads removed as `stem.png` and `stem.svg`.
pub fn plot_sweep(
    stem: &Path,
    title: &str,
    points: &[SweepPoint<Accuracy>],
) -> Result<Vec<PathBuf>> {
    let series = |name: &str, value: fn(&Accuracy) -> f64| Series {
        name: name.into(),
        points: points
            .iter()
            .map(|p| (p.removed as f64, value(&p.score)))
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

/// Draws BLEU against heads removed, one line per order (greedy) and the first order's beam
/// search, as `stem.png` and `stem.svg`.
pub fn plot_translation_sweeps(
    stem: &Path,
    title: &str,
    sweeps: &[(PruneOrder, Vec<SweepPoint<TranslationScore>>)],
) -> Result<Vec<PathBuf>> {
    let mut series: Vec<Series> = sweeps
        .iter()
        .map(|(order, points)| Series {
            name: format!("{}, greedy", order.name()),
            points: points
                .iter()
                .map(|p| (p.removed as f64, p.score.greedy_bleu))
                .collect(),
        })
        .collect();
    if let Some((order, points)) = sweeps.first()
        && points.iter().all(|p| p.score.beam_bleu.is_some())
    {
        series.insert(
            0,
            Series {
                name: format!("{}, beam", order.name()),
                points: points
                    .iter()
                    .filter_map(|p| Some((p.removed as f64, p.score.beam_bleu?)))
                    .collect(),
            },
        );
    }
    let top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(1.0f64, f64::max);
    let axes = Axes {
        y_max: Some((top / 5.0).ceil() * 5.0),
        ..Axes::unit("heads removed", "BLEU")
    };
    line_plot(stem, title, &axes, &series)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::importance::{head_importance, least_important};
    use burn::module::Module;
    use burn::tensor::Device;
    use tf_train::data::task::SpecialIds;
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
        let importance = head_importance(
            &gradient_model,
            &examples,
            0.0,
            SpecialIds::OURS,
            &gradient_device,
        );
        let measure = |m: &Transformer| Ok(accuracy(m, &examples, 5, 8, &device)?);
        let mut heard = Vec::new();
        let order = removal_order(&importance, PruneOrder::Importance);
        let points = sweep(&model, &config, &order, measure, |p| heard.push(p.removed)).unwrap();
        // 2 + 2 layers of 2 heads in 6 blocks: 12 heads, 6 can go.
        assert_eq!(heard, (0..=6).collect::<Vec<_>>());
        assert_eq!(
            points[0].score,
            accuracy(&model, &examples, 5, 8, &device).unwrap()
        );
    }

    #[test]
    fn orders_keep_one_head_per_block_and_agree_with_least_important() {
        let task = Task::new(TaskKind::Reverse, 5, 1, 4).unwrap();
        let device = Device::flex().autodiff();
        device.seed(5);
        let model = task.tiny_model().init(&device);
        let importance =
            head_importance(&model, &task.samples(4, 1), 0.0, SpecialIds::OURS, &device);
        let by_importance = removal_order(&importance, PruneOrder::Importance);
        assert_eq!(by_importance, least_important(&importance, 6).unwrap());
        let random = removal_order(&importance, PruneOrder::Random { seed: 1 });
        assert_eq!(random.len(), 6);
        assert_eq!(
            random,
            removal_order(&importance, PruneOrder::Random { seed: 1 })
        );
        assert_ne!(
            random,
            removal_order(&importance, PruneOrder::Random { seed: 2 })
        );
        let cross = removal_order(&importance, PruneOrder::Kind(AttentionKind::Cross));
        // 2 cross-attention layers of 2 heads: one each can go.
        assert_eq!(cross.len(), 2);
        assert!(cross.iter().all(|h| h.block.kind == AttentionKind::Cross));
        for order in [&by_importance, &random, &cross] {
            let mut blocks: Vec<_> = order.iter().map(|h| h.block).collect();
            blocks.sort();
            blocks.dedup();
            assert_eq!(
                blocks.len(),
                order.len(),
                "one head of 2 per block: {order:?}"
            );
        }
    }
}
