//! What each attention head does, measured over samples: how spread its weights are (entropy),
//! how far it looks (attention-weighted distance |i − j|), how peaked it is (mean max weight,
//! Voita et al.'s "confidence"), and where its strongest key falls: at a fixed relative position
//! (self-attention), on one of the sentence's rarest tokens, on the diagonal of a translation
//! (cross-attention), or on the source position a synthetic task's ground truth aligns with.
//! [`HeadStats::roles`] names a head's role where a criterion of Voita et al. (2019) holds.

use std::fmt::Write as _;

use burn::tensor::{Device, Tensor};
use serde::Serialize;
use tf_model::{AttentionKind, HeadId, Transformer};

use crate::attention_maps::AttentionMaps;
use tf_train::data::batch::Seq2SeqBatch;
use tf_train::data::task::{Example, SpecialIds};

/// A positional head puts its strongest weight on one relative position (−1, 0, +1) at least this
/// often (Voita et al., 2019: 90 %).
pub const POSITIONAL_SHARE: f64 = 0.9;
/// A rare-token head puts its strongest weight on one of the sentence's two rarest tokens more
/// often than this (Voita et al., 2019: more than half of the time).
pub const RARE_TOKEN_SHARE: f64 = 0.5;
/// A diagonal cross-attention head's strongest source position is within one of the
/// proportional diagonal at least this often.
pub const DIAGONAL_SHARE: f64 = 0.5;
/// Sentences with fewer keys than this do not count towards the rare-token share (with two keys,
/// every key is one of the two rarest).
pub const RARE_TOKEN_MIN_KEYS: usize = 4;

/// The source position each target position of a sample aligns with, given its source.
pub type Alignment<'a> = dyn Fn(&[usize]) -> Vec<usize> + 'a;

/// What the samples tell beyond the weights, where known.
#[derive(Clone, Copy, Default)]
pub struct GroundTruth<'a> {
    /// For cross-attention: the source position each target position aligns with (a synthetic
    /// task's ground truth, e.g. [`Task::alignment`](tf_train::Task::alignment)).
    pub alignment: Option<&'a Alignment<'a>>,
    /// How often each token id occurs in the training data, for the rare-token share.
    pub token_counts: Option<&'a [u64]>,
}

/// One head's statistics, averaged over the unpadded query positions of the samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadStats {
    /// Which head.
    pub head: HeadId,
    /// Mean entropy of a query's weights, in nats (0 = all weight on one key).
    pub entropy: f64,
    /// Mean attention-weighted distance `Σ_j p_j |i − j|` between query and key positions.
    pub distance: f64,
    /// Mean largest weight of a query (confidence).
    pub max_weight: f64,
    /// Self-attention only: share of queries whose most-attended key is the previous, the same
    /// and the next position.
    pub positional: Option<[f64; 3]>,
    /// Share of queries whose most-attended key is one of the two rarest subwords of the sentence
    /// ([`GroundTruth::token_counts`]; sentences of at least [`RARE_TOKEN_MIN_KEYS`] subwords;
    /// BOS is none, and a causal query counts once it sees both).
    pub rare_token: Option<f64>,
    /// Cross-attention only: share of target positions whose most-attended source position is
    /// within one of `round(i · (S − 1) / (T − 1))`, the diagonal of a source of S and a decoder
    /// input of T positions.
    pub diagonal: Option<f64>,
    /// Cross-attention only: share of target positions whose most-attended source position is
    /// the aligned one ([`GroundTruth::alignment`]).
    pub alignment: Option<f64>,
    /// Head importance (Michel et al., 2019), when measured.
    pub importance: Option<f64>,
    /// The roles whose criterion holds ([`HeadStats::roles_from_shares`]).
    pub roles: Vec<&'static str>,
}

/// What one query row is measured against.
#[derive(Clone, Copy, Debug, Default)]
struct RowTruth {
    /// Count the relative position of the strongest key (self-attention).
    positional: bool,
    /// The diagonal key of this row (cross-attention).
    diagonal: Option<usize>,
    /// The ground-truth key of this row.
    aligned_to: Option<usize>,
    /// The positions of the sentence's two rarest keys.
    rarest: Option<[usize; 2]>,
}

/// Running sums for one head.
#[derive(Clone, Debug, Default)]
struct Sums {
    entropy: f64,
    distance: f64,
    max_weight: f64,
    rows: usize,
    positional: [usize; 3],
    positional_rows: usize,
    rare: usize,
    rare_rows: usize,
    diagonal: usize,
    diagonal_rows: usize,
    aligned: usize,
    aligned_rows: usize,
}

impl Sums {
    /// Adds one query row `i` over its `row.len()` unpadded keys.
    fn add_row(&mut self, i: usize, row: &[f32], truth: RowTruth) {
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
        if truth.positional {
            self.positional_rows += 1;
            if let Some(offset) = (best + 1).checked_sub(i).filter(|&o| o < 3) {
                self.positional[offset] += 1;
            }
        }
        if let Some(rarest) = truth.rarest {
            self.rare_rows += 1;
            self.rare += usize::from(rarest.contains(&best));
        }
        if let Some(diagonal) = truth.diagonal {
            self.diagonal_rows += 1;
            self.diagonal += usize::from(best.abs_diff(diagonal) <= 1);
        }
        if let Some(target) = truth.aligned_to {
            self.aligned_rows += 1;
            self.aligned += usize::from(best == target);
        }
    }

    fn finish(&self, head: HeadId) -> HeadStats {
        let rows = self.rows.max(1) as f64;
        // Measured where rows came with that truth.
        let share = |hits: usize, rows: usize| (rows > 0).then(|| hits as f64 / rows as f64);
        let mut stats = HeadStats {
            head,
            entropy: self.entropy / rows,
            distance: self.distance / rows,
            max_weight: self.max_weight / rows,
            positional: (self.positional_rows > 0).then(|| {
                self.positional
                    .map(|n| n as f64 / self.positional_rows as f64)
            }),
            rare_token: share(self.rare, self.rare_rows),
            diagonal: share(self.diagonal, self.diagonal_rows),
            alignment: share(self.aligned, self.aligned_rows),
            importance: None,
            roles: Vec::new(),
        };
        stats.roles = stats.roles_from_shares();
        stats
    }
}

impl HeadStats {
    /// The roles whose criterion holds: "previous token", "same token", "next token"
    /// ([`POSITIONAL_SHARE`]), "rare tokens" ([`RARE_TOKEN_SHARE`]), "diagonal"
    /// ([`DIAGONAL_SHARE`]).
    pub fn roles_from_shares(&self) -> Vec<&'static str> {
        let mut roles = Vec::new();
        if let Some(shares) = self.positional {
            for (share, role) in shares
                .iter()
                .zip(["previous token", "same token", "next token"])
            {
                if *share >= POSITIONAL_SHARE {
                    roles.push(role);
                }
            }
        }
        if self.rare_token.is_some_and(|r| r > RARE_TOKEN_SHARE) {
            roles.push("rare tokens");
        }
        if self.diagonal.is_some_and(|d| d >= DIAGONAL_SHARE) {
            roles.push("diagonal");
        }
        roles
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
                    sums.add_row(i, row, RowTruth::default());
                }
                sums.finish(HeadId {
                    block: block.block,
                    head,
                })
            })
        })
        .collect()
}

/// Statistics of every head of `model` (inference mode) on `examples`, teacher-forced after
/// `special.bos`, in the order of [`Transformer::heads`]; `truth` adds what the samples' ground
/// truth allows.
pub fn head_statistics(
    model: &Transformer,
    examples: &[Example],
    truth: GroundTruth,
    batch_size: usize,
    special: SpecialIds,
    device: &Device,
) -> Vec<HeadStats> {
    let heads = model.heads();
    let mut sums = vec![Sums::default(); heads.len()];
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = Seq2SeqBatch::with_special(chunk, special, device);
        let out = model.forward_with_attention(
            batch.src,
            batch.tgt_in,
            Some(batch.src_pad_mask),
            Some(batch.tgt_pad_mask),
        );
        let mut first_head = 0;
        for (block, weights) in out.attention.into_blocks() {
            let n_heads = weights.dims()[1];
            add_block(
                &mut sums[first_head..first_head + n_heads],
                block.kind,
                weights,
                truth,
                chunk,
                special.bos,
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

/// The positions of the two rarest of `keys` by `counts` (ties: the first), if there are at
/// least [`RARE_TOKEN_MIN_KEYS`] keys.
fn two_rarest(keys: &[usize], counts: &[u64]) -> Option<[usize; 2]> {
    if keys.len() < RARE_TOKEN_MIN_KEYS {
        return None;
    }
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_by_key(|&j| (counts.get(keys[j]).copied().unwrap_or(0), j));
    Some([order[0], order[1]])
}

/// The positions of the two rarest subwords among the `keys` of a block of `kind`. The
/// decoder's self-attention reads BOS first: no subword of the sentence, it never occurs in the
/// training text, and would otherwise always count as one of the rarest.
fn rarest_subwords(
    kind: AttentionKind,
    keys: &[usize],
    counts: &[u64],
    bos: usize,
) -> Option<[usize; 2]> {
    let first = usize::from(kind == AttentionKind::DecoderSelf && keys.first() == Some(&bos));
    two_rarest(&keys[first..], counts).map(|positions| positions.map(|j| j + first))
}

/// The rarest keys query `i` is measured against: the decoder's self-attention is causal, so a
/// query counts only once it can see both of them.
fn visible_rarest(kind: AttentionKind, rarest: Option<[usize; 2]>, i: usize) -> Option<[usize; 2]> {
    let causal = kind == AttentionKind::DecoderSelf;
    rarest.filter(|positions| !causal || positions.iter().all(|&j| j <= i))
}

/// The source position on the proportional diagonal for target position `i` of `tgt_len`.
fn diagonal_position(i: usize, src_len: usize, tgt_len: usize) -> usize {
    if tgt_len <= 1 {
        return 0;
    }
    ((i * (src_len - 1)) as f64 / (tgt_len - 1) as f64).round() as usize
}

/// Adds one block's weights of one batch to its heads' sums.
///
/// # Shapes
/// - `weights`: `[batch, n_heads, q_len, k_len]`
fn add_block(
    sums: &mut [Sums],
    kind: AttentionKind,
    weights: Tensor<4>,
    truth: GroundTruth,
    examples: &[Example],
    bos: usize,
) {
    let [_, n_heads, q_len, k_len] = weights.dims();
    let values = weights
        .into_data()
        .try_to_vec::<f32>()
        .expect("float weights");
    for (b, example) in examples.iter().enumerate() {
        let tgt_in: Vec<usize> = std::iter::once(bos)
            .chain(example.tgt.iter().copied())
            .collect();
        let (queries, keys) = match kind {
            AttentionKind::EncoderSelf => (example.src.len(), &example.src),
            AttentionKind::DecoderSelf => (tgt_in.len(), &tgt_in),
            AttentionKind::Cross => (tgt_in.len(), &example.src),
        };
        let cross = kind == AttentionKind::Cross;
        let alignment = truth.alignment.filter(|_| cross).map(|a| a(&example.src));
        let rarest = truth
            .token_counts
            .and_then(|c| rarest_subwords(kind, keys, c, bos));
        for (h, head_sums) in sums.iter_mut().enumerate().take(n_heads) {
            for i in 0..queries {
                let start = ((b * n_heads + h) * q_len + i) * k_len;
                let row_truth = RowTruth {
                    positional: !cross,
                    diagonal: cross.then(|| diagonal_position(i, keys.len(), queries)),
                    // The last decoder position predicts EOS, which aligns with no source
                    // position.
                    aligned_to: alignment.as_ref().and_then(|a| a.get(i).copied()),
                    rarest: visible_rarest(kind, rarest, i),
                };
                head_sums.add_row(i, &values[start..start + keys.len()], row_truth);
            }
        }
    }
}

/// The measured columns, in order: header, CSV name, table width.
const COLUMNS: [(&str, &str, usize); 10] = [
    ("entropy", "entropy", 7),
    ("distance", "distance", 8),
    ("max w", "max_weight", 6),
    ("prev", "previous", 6),
    ("same", "same", 6),
    ("next", "next", 6),
    ("rare", "rare_token", 6),
    ("diag", "diagonal", 6),
    ("align", "alignment", 6),
    ("importance", "importance", 10),
];

impl HeadStats {
    /// The row of this head: attention kind, layer, head, then its measures in column order
    /// (`None` where not measured).
    fn row(&self) -> (&'static str, usize, usize, [Option<f64>; 10]) {
        let block = self.head.block;
        let positional = |k: usize| self.positional.map(|p| p[k]);
        let measures = [
            Some(self.entropy),
            Some(self.distance),
            Some(self.max_weight),
            positional(0),
            positional(1),
            positional(2),
            self.rare_token,
            self.diagonal,
            self.alignment,
            self.importance,
        ];
        (block.kind.name(), block.layer, self.head.head, measures)
    }
}

/// The statistics as an aligned text table (3 decimals, `-` where not measured), with each
/// head's roles last.
pub fn format_table(stats: &[HeadStats]) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:<13} {:>5} {:>4}", "attention", "layer", "head");
    for (header, _, width) in COLUMNS {
        let _ = write!(out, " {header:>width$}");
    }
    out.push_str("  role\n");
    for s in stats {
        let (kind, layer, head, measures) = s.row();
        let _ = write!(out, "{kind:<13} {layer:>5} {head:>4}");
        for (value, (_, _, width)) in measures.into_iter().zip(COLUMNS) {
            let _ = match value {
                Some(v) => write!(out, " {v:>width$.3}"),
                None => write!(out, " {:>width$}", "-"),
            };
        }
        let _ = write!(out, "  {}", s.roles.join(", "));
        out.truncate(out.trim_end().len());
        out.push('\n');
    }
    out
}

/// The statistics as CSV, one row per head (6 decimals, empty where not measured), roles last
/// (separated by `;`).
pub fn format_csv(stats: &[HeadStats]) -> String {
    let mut out = String::from("attention,layer,head");
    for (_, name, _) in COLUMNS {
        let _ = write!(out, ",{name}");
    }
    out.push_str(",roles\n");
    for s in stats {
        let (kind, layer, head, measures) = s.row();
        let _ = write!(out, "{kind},{layer},{head}");
        for value in measures {
            let _ = match value {
                Some(v) => write!(out, ",{v:.6}"),
                None => write!(out, ","),
            };
        }
        let _ = writeln!(out, ",{}", s.roles.join(";"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;
    use tf_train::{Task, TaskKind};

    fn head(kind: AttentionKind) -> HeadId {
        HeadId {
            block: tf_model::BlockId { kind, layer: 0 },
            head: 0,
        }
    }

    #[test]
    fn one_row_gives_hand_computed_numbers() {
        let mut sums = Sums::default();
        // Query 1 over keys 0..3 with weights 0.5, 0.5, 0: entropy ln 2, distance 0.5; the
        // strongest key (ties go to the first) is 0: the aligned one, on the diagonal (1 ± 1),
        // one of the two rarest (0 and 2).
        let truth = RowTruth {
            positional: false,
            diagonal: Some(1),
            aligned_to: Some(0),
            rarest: Some([2, 0]),
        };
        sums.add_row(1, &[0.5, 0.5, 0.0], truth);
        let stats = sums.finish(head(AttentionKind::Cross));
        assert!((stats.entropy - 2f64.ln()).abs() < 1e-9);
        assert!((stats.distance - 0.5).abs() < 1e-9);
        assert_eq!(stats.max_weight, 0.5);
        assert_eq!(stats.alignment, Some(1.0));
        assert_eq!(stats.diagonal, Some(1.0));
        assert_eq!(stats.rare_token, Some(1.0));
        assert_eq!(stats.positional, None);
        assert_eq!(stats.roles, ["rare tokens", "diagonal"]);

        let table = format_table(std::slice::from_ref(&stats));
        assert_eq!(
            table.lines().nth(1).unwrap(),
            "cross             0    0   0.693    0.500  0.500      -      -      -  1.000  1.000  1.000          -  rare tokens, diagonal"
        );
        let csv = format_csv(&[stats]);
        assert_eq!(
            csv.lines().nth(1).unwrap(),
            "cross,0,0,0.693147,0.500000,0.500000,,,,1.000000,1.000000,1.000000,,rare tokens;diagonal"
        );
    }

    #[test]
    fn relative_positions_are_counted_and_name_a_positional_head() {
        let mut sums = Sums::default();
        let truth = RowTruth {
            positional: true,
            ..RowTruth::default()
        };
        // Rows 1..=9 look at the previous key, row 0 at itself: 90 % previous, 10 % same.
        for i in 0..10usize {
            let mut row = vec![0.0; 10];
            row[i.saturating_sub(1)] = 1.0;
            sums.add_row(i, &row, truth);
        }
        let stats = sums.finish(head(AttentionKind::EncoderSelf));
        assert_eq!(stats.positional, Some([0.9, 0.1, 0.0]));
        assert_eq!(stats.roles, ["previous token"]);
        assert_eq!(
            (stats.diagonal, stats.rare_token, stats.alignment),
            (None, None, None)
        );
    }

    #[test]
    fn rarest_keys_and_the_diagonal() {
        let counts = [100, 5, 7, 1, 50];
        assert_eq!(two_rarest(&[0, 1, 2, 3], &counts), Some([3, 1]));
        assert_eq!(
            two_rarest(&[4, 4, 0, 4], &counts),
            Some([0, 1]),
            "ties: the first"
        );
        assert_eq!(two_rarest(&[1, 2, 3], &counts), None, "too short to count");
        // A source of 5 and a decoder input of 3: positions 0, 2, 4.
        let diagonal: Vec<usize> = (0..3).map(|i| diagonal_position(i, 5, 3)).collect();
        assert_eq!(diagonal, [0, 2, 4]);
        assert_eq!(diagonal_position(0, 7, 1), 0);
    }

    #[test]
    fn decoder_rare_share_skips_bos_and_unseen_keys() {
        let device = Device::flex();
        // Decoder input BOS a b c d; `c` (id 5) and `a` (id 3) are the rarest subwords, at
        // positions 3 and 1. BOS never occurs in training text (count 0).
        let counts = [0, 0, 0, 10, 50, 2, 40];
        let examples = [Example {
            src: vec![3, 4, 5, 6],
            tgt: vec![3, 4, 5, 6],
        }];
        let truth = GroundTruth {
            alignment: None,
            token_counts: Some(&counts),
        };
        let stats_of = |strongest: &dyn Fn(usize) -> usize| {
            let mut values = vec![0.0f32; 25];
            for i in 0..5 {
                values[i * 5 + strongest(i)] = 1.0;
            }
            let weights = Tensor::<4>::from_data(TensorData::new(values, [1, 1, 5, 5]), &device);
            let mut sums = [Sums::default()];
            add_block(
                &mut sums,
                AttentionKind::DecoderSelf,
                weights,
                truth,
                &examples,
                SpecialIds::OURS.bos,
            );
            sums[0].finish(head(AttentionKind::DecoderSelf))
        };
        // A head that rests on BOS is no rare-token head.
        assert_eq!(stats_of(&|_| 0).rare_token, Some(0.0));
        // A head on the rarest key it can see: queries 3 and 4 see both rarest and count.
        let on_rarest = stats_of(&|i| if i >= 3 { 3 } else { i.min(1) });
        assert_eq!(on_rarest.rare_token, Some(1.0));
        assert_eq!(on_rarest.roles, ["rare tokens"]);
    }

    #[test]
    fn statistics_cover_every_head_and_stay_in_range() {
        let device = Device::flex();
        let task = Task::new(TaskKind::Reverse, 6, 2, 6).unwrap();
        let model = task.tiny_model().init(&device);
        let examples = task.samples(10, 1);
        let alignment = |src: &[usize]| task.alignment(src);
        let counts: Vec<u64> = (0..20).collect();
        let truth = GroundTruth {
            alignment: Some(&alignment),
            token_counts: Some(&counts),
        };
        let stats = head_statistics(&model, &examples, truth, 4, SpecialIds::OURS, &device);
        assert_eq!(stats.len(), model.heads().len());
        let in_unit = |v: Option<f64>| v.is_none_or(|v| (0.0..=1.0 + 1e-9).contains(&v));
        for s in &stats {
            // Entropy at most ln(keys), max weight at least 1/keys.
            assert!(s.entropy >= 0.0 && s.entropy <= (7f64).ln() + 1e-6, "{s:?}");
            assert!(
                s.max_weight > 1.0 / 7.0 && s.max_weight <= 1.0 + 1e-6,
                "{s:?}"
            );
            assert!(s.distance >= 0.0 && s.distance < 7.0);
            let cross = s.head.block.kind == AttentionKind::Cross;
            assert_eq!(s.alignment.is_some(), cross);
            assert_eq!(s.diagonal.is_some(), cross);
            assert_eq!(s.positional.is_some(), !cross);
            assert!(s.rare_token.is_some(), "sentences of 4+ keys were sampled");
            assert!(in_unit(s.alignment) && in_unit(s.diagonal) && in_unit(s.rare_token));
            let positional = s.positional.map_or(0.0, |p| p.iter().sum());
            assert!(positional <= 1.0 + 1e-9);
        }
        assert_eq!(format_table(&stats).lines().count(), stats.len() + 1);
        assert!(format_csv(&stats).starts_with("attention,layer,head,entropy,"));
        let without = head_statistics(
            &model,
            &examples,
            GroundTruth::default(),
            4,
            SpecialIds::OURS,
            &device,
        );
        assert!(
            without
                .iter()
                .all(|s| s.alignment.is_none() && s.rare_token.is_none())
        );
    }
}
