//! What each attention head does, measured over task samples: how spread its weights are
//! (entropy), how far it looks (attention-weighted distance |i − j|), how peaked it is (mean
//! max weight), and, for cross-attention, how often its strongest source position is the one
//! the task's ground truth aligns the target position with.

use std::fmt::Write as _;

use burn::tensor::{Device, Tensor};
use serde::Serialize;
use tf_model::{AttentionKind, HeadId, Transformer};

use tf_train::Task;

use crate::attention_maps::AttentionMaps;
use tf_train::data::batch::Seq2SeqBatch;
use tf_train::data::task::Example;

/// One head's statistics, averaged over the unpadded query positions of the samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadStats {
    /// Which head.
    pub head: HeadId,
    /// Mean entropy of a query's weights, in nats (0 = all weight on one key).
    pub entropy: f64,
    /// Mean attention-weighted distance `Σ_j p_j |i − j|` between query and key positions.
    pub distance: f64,
    /// Mean largest weight of a query.
    pub max_weight: f64,
    /// Cross-attention only: share of target positions whose most-attended source position is
    /// the aligned one ([`Task::alignment`]).
    pub alignment: Option<f64>,
    /// Head importance (Michel et al., 2019), when measured.
    pub importance: Option<f64>,
}

/// Running sums for one head.
#[derive(Clone, Debug, Default)]
struct Sums {
    entropy: f64,
    distance: f64,
    max_weight: f64,
    rows: usize,
    aligned: usize,
    aligned_rows: usize,
}

impl Sums {
    /// Adds one query row `i` over its `row.len()` unpadded keys; `aligned_to` is the ground
    /// truth key for cross-attention.
    fn add_row(&mut self, i: usize, row: &[f32], aligned_to: Option<usize>) {
        let mut entropy = 0.0;
        let mut distance = 0.0;
        let (mut best, mut best_weight) = (0, f32::NEG_INFINITY);
        for (j, &p) in row.iter().enumerate() {
            if p > 0.0 {
                entropy -= p as f64 * (p as f64).ln();
            }
            distance += p as f64 * i.abs_diff(j) as f64;
            if p > best_weight {
                (best, best_weight) = (j, p);
            }
        }
        self.entropy += entropy;
        self.distance += distance;
        self.max_weight += best_weight as f64;
        self.rows += 1;
        if let Some(target) = aligned_to {
            self.aligned_rows += 1;
            self.aligned += usize::from(best == target);
        }
    }

    fn finish(&self, head: HeadId) -> HeadStats {
        let rows = self.rows.max(1) as f64;
        HeadStats {
            head,
            entropy: self.entropy / rows,
            distance: self.distance / rows,
            max_weight: self.max_weight / rows,
            // Measured where rows came with a ground truth (cross-attention on task samples).
            alignment: (self.aligned_rows > 0)
                .then(|| self.aligned as f64 / self.aligned_rows as f64),
            importance: None,
        }
    }
}

/// Statistics of every head in `maps`, the attention behind one decoded input: entropy,
/// distance and max weight over its query rows (no alignment or importance: one sentence has
/// no ground truth to align with), in the order of the blocks.
pub fn sentence_statistics(maps: &AttentionMaps) -> Vec<HeadStats> {
    maps.blocks
        .iter()
        .flat_map(|block| {
            block.heads.iter().enumerate().map(move |(head, rows)| {
                let mut sums = Sums::default();
                for (i, row) in rows.iter().enumerate() {
                    sums.add_row(i, row, None);
                }
                sums.finish(HeadId {
                    block: block.block,
                    head,
                })
            })
        })
        .collect()
}

/// Statistics of every head of `model` (inference mode) on teacher-forced `examples` of
/// `task`, in the order of [`Transformer::heads`].
pub fn head_statistics(
    model: &Transformer,
    task: &Task,
    examples: &[Example],
    batch_size: usize,
    device: &Device,
) -> Vec<HeadStats> {
    let heads = model.heads();
    let mut sums = vec![Sums::default(); heads.len()];
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = Seq2SeqBatch::new(chunk, device);
        let out = model.forward_with_attention(
            batch.src,
            batch.tgt_in,
            Some(batch.src_pad_mask),
            Some(batch.tgt_pad_mask),
        );
        let mut first_head = 0;
        for (block, weights) in out.attention.into_blocks() {
            let kind = block.kind;
            let n_heads = weights.dims()[1];
            add_block(
                &mut sums[first_head..first_head + n_heads],
                kind,
                weights,
                task,
                chunk,
            );
            first_head += n_heads;
        }
    }
    heads
        .into_iter()
        .zip(&sums)
        .map(|(head, s)| s.finish(head))
        .collect()
}

/// Adds one block's weights of one batch to its heads' sums.
///
/// # Shapes
/// - `weights`: `[batch, n_heads, q_len, k_len]`
fn add_block(
    sums: &mut [Sums],
    kind: AttentionKind,
    weights: Tensor<4>,
    task: &Task,
    examples: &[Example],
) {
    let [_, n_heads, q_len, k_len] = weights.dims();
    let values = weights
        .into_data()
        .try_to_vec::<f32>()
        .expect("float weights");
    for (b, example) in examples.iter().enumerate() {
        let (src_len, tgt_in_len) = (example.src.len(), example.tgt.len() + 1);
        let (queries, keys) = match kind {
            AttentionKind::EncoderSelf => (src_len, src_len),
            AttentionKind::DecoderSelf => (tgt_in_len, tgt_in_len),
            AttentionKind::Cross => (tgt_in_len, src_len),
        };
        let alignment = (kind == AttentionKind::Cross).then(|| task.alignment(&example.src));
        for (h, head_sums) in sums.iter_mut().enumerate().take(n_heads) {
            for i in 0..queries {
                let start = ((b * n_heads + h) * q_len + i) * k_len;
                // The last decoder position predicts EOS, which aligns with no source position.
                let aligned_to = alignment.as_ref().and_then(|a| a.get(i).copied());
                head_sums.add_row(i, &values[start..start + keys], aligned_to);
            }
        }
    }
}

impl HeadStats {
    /// The row of this head: attention kind, layer, head, then its measures in column order
    /// (`None` where not measured).
    fn row(&self) -> (&'static str, usize, usize, [Option<f64>; 5]) {
        let block = self.head.block;
        let measures = [
            Some(self.entropy),
            Some(self.distance),
            Some(self.max_weight),
            self.alignment,
            self.importance,
        ];
        (block.kind.name(), block.layer, self.head.head, measures)
    }
}

/// The statistics as an aligned text table (3 decimals, `-` where not measured).
pub fn format_table(stats: &[HeadStats]) -> String {
    const WIDTHS: [usize; 5] = [8, 8, 8, 9, 10];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<13} {:>5} {:>4} {:>8} {:>8} {:>8} {:>9} {:>10}",
        "attention", "layer", "head", "entropy", "distance", "max w", "alignment", "importance"
    );
    for s in stats {
        let (kind, layer, head, measures) = s.row();
        let _ = write!(out, "{kind:<13} {layer:>5} {head:>4}");
        for (value, width) in measures.into_iter().zip(WIDTHS) {
            let _ = match value {
                Some(v) => write!(out, " {v:>width$.3}"),
                None => write!(out, " {:>width$}", "-"),
            };
        }
        out.push('\n');
    }
    out
}

/// The statistics as CSV, one row per head (6 decimals, empty where not measured).
pub fn format_csv(stats: &[HeadStats]) -> String {
    let mut out =
        String::from("attention,layer,head,entropy,distance,max_weight,alignment,importance\n");
    for s in stats {
        let (kind, layer, head, measures) = s.row();
        let _ = write!(out, "{kind},{layer},{head}");
        for value in measures {
            let _ = match value {
                Some(v) => write!(out, ",{v:.6}"),
                None => write!(out, ","),
            };
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_train::TaskKind;

    #[test]
    fn one_row_gives_hand_computed_numbers() {
        let mut sums = Sums::default();
        // Query 1 over keys 0..3 with weights 0.5, 0.5, 0: entropy ln 2, distance 0.5.
        sums.add_row(1, &[0.5, 0.5, 0.0], Some(0));
        let head = HeadId {
            block: tf_model::BlockId {
                kind: AttentionKind::Cross,
                layer: 0,
            },
            head: 0,
        };
        let stats = sums.finish(head);
        assert!((stats.entropy - 2f64.ln()).abs() < 1e-9);
        assert!((stats.distance - 0.5).abs() < 1e-9);
        assert_eq!(stats.max_weight, 0.5);
        assert_eq!(stats.alignment, Some(1.0)); // ties go to the first key

        let table = format_table(std::slice::from_ref(&stats));
        assert_eq!(
            table.lines().nth(1).unwrap(),
            "cross             0    0    0.693    0.500    0.500     1.000          -"
        );
        let csv = format_csv(&[stats]);
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "cross,0,0,0.693147,0.500000,0.500000,1.000000,"
        );
    }

    #[test]
    fn statistics_cover_every_head_and_stay_in_range() {
        let device = Device::flex();
        let task = Task::new(TaskKind::Reverse, 6, 2, 6).unwrap();
        let model = task.tiny_model().init(&device);
        let examples = task.samples(10, 1);
        let stats = head_statistics(&model, &task, &examples, 4, &device);
        assert_eq!(stats.len(), model.heads().len());
        for s in &stats {
            // Entropy at most ln(keys), max weight at least 1/keys.
            assert!(s.entropy >= 0.0 && s.entropy <= (7f64).ln() + 1e-6, "{s:?}");
            assert!(
                s.max_weight > 1.0 / 7.0 && s.max_weight <= 1.0 + 1e-6,
                "{s:?}"
            );
            assert!(s.distance >= 0.0 && s.distance < 7.0);
            let alignment_range = s.alignment.is_none_or(|a| (0.0..=1.0).contains(&a));
            assert!(alignment_range);
            assert_eq!(
                s.alignment.is_some(),
                s.head.block.kind == AttentionKind::Cross
            );
        }
        assert_eq!(format_table(&stats).lines().count(), stats.len() + 1);
        assert!(format_csv(&stats).starts_with("attention,layer,head,"));
    }
}
