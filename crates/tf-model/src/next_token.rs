//! The candidates of one decoding step: each row's most probable next tokens with their
//! log-probabilities, read from the logits on the host.
//!
//! A search needs only the `n` best tokens of each row and their `log p = logit − log Σ exp`,
//! never the `[rows, vocab]` log-softmax itself. So the logits are read back once, and each row
//! (a task on rayon's pool, unless the step is small) is scanned twice: once for its `n` best
//! logits (the first is the row's maximum), once for `Σ exp(logit − max)` with an `exp` that
//! vectorises.

use burn::tensor::{Bool, Tensor, TensorData};
use rayon::prelude::*;
use tf_attention::fused::{self, exp};

/// A token's log-probability and its id.
pub type Candidate = (f32, usize);

/// For every row of `logits`, its `n` most probable tokens with their log-probabilities, best
/// first (ties: lower token). A row whose logits hold NaN or are all −∞ has no candidates.
///
/// # Shapes
/// - `logits`: `[rows, vocab]`
/// - returns `rows` lists of at most `n` candidates
pub fn best_next_tokens(logits: Tensor<2>, n: usize) -> Vec<Vec<Candidate>> {
    let [rows, vocab] = logits.dims();
    if vocab == 0 {
        return vec![Vec::new(); rows];
    }
    let logits = logits
        .into_data()
        .try_into_vec::<f32>()
        .expect("float logits");
    if fused::worth_threads(logits.len()) {
        logits
            .par_chunks_exact(vocab)
            .map(|row| row_candidates(row, n))
            .collect()
    } else {
        logits
            .chunks_exact(vocab)
            .map(|row| row_candidates(row, n))
            .collect()
    }
}

/// `logits` with `token`'s set to −∞, so that no search picks it.
///
/// # Shapes
/// - `logits`: `[rows, vocab]`
pub fn without_token(logits: Tensor<2>, token: usize) -> Tensor<2> {
    let [rows, vocab] = logits.dims();
    if token >= vocab {
        return logits;
    }
    let mut blocked = vec![false; vocab];
    blocked[token] = true;
    let mask = Tensor::<2, Bool>::from_data(TensorData::new(blocked, [1, vocab]), &logits.device());
    logits.mask_fill(mask.expand([rows, vocab]), f32::NEG_INFINITY)
}

/// [`best_next_tokens`] of one row of logits.
fn row_candidates(row: &[f32], n: usize) -> Vec<Candidate> {
    let mut best = best_tokens(row, n);
    let Some(&(max, _)) = best.first() else {
        return best;
    };
    let (sum_exp, sum) = sums_below(row, max);
    // A NaN anywhere in the row makes `sum` NaN; an infinite maximum leaves no distribution.
    if max.is_infinite() || sum.is_nan() {
        return Vec::new();
    }
    let log_sum = max + sum_exp.ln();
    for (value, _) in &mut best {
        *value -= log_sum;
    }
    best
}

/// `Σ exp(x − max)` and `Σ x` over `row`, whose values are at most `max`: eight partial sums
/// each, so that the loop vectorises.
fn sums_below(row: &[f32], max: f32) -> (f32, f32) {
    const LANES: usize = 8;
    let (mut exps, mut values) = ([0.0f32; LANES], [0.0f32; LANES]);
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for ((e, v), &x) in exps.iter_mut().zip(&mut values).zip(chunk) {
            *e += exp(x - max);
            *v += x;
        }
    }
    let tail = chunks.remainder();
    (
        exps.iter().sum::<f32>() + tail.iter().map(|&x| exp(x - max)).sum::<f32>(),
        values.iter().sum::<f32>() + tail.iter().sum::<f32>(),
    )
}

/// The `n` largest values of `row` with their indices, largest first (ties: lower index). One
/// pass; most values fail the comparison with the n-th best so far.
fn best_tokens(row: &[f32], n: usize) -> Vec<Candidate> {
    let mut best: Vec<Candidate> = Vec::with_capacity(n + 1);
    if n == 0 {
        return best;
    }
    for (t, &v) in row.iter().enumerate() {
        // Not above the n-th best: skipped, as a NaN always is.
        if v.is_nan() || (best.len() == n && v <= best[n - 1].0) {
            continue;
        }
        // After the last entry not below v: equal values keep their index order.
        let at = best.partition_point(|&(b, _)| b >= v);
        best.insert(at, (v, t));
        best.truncate(n);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Device, Distribution, TensorData};

    #[test]
    fn best_tokens_are_the_largest_with_ties_by_lower_index() {
        let row = [0.1, 0.5, 0.5, -1.0, 0.7, 0.5];
        assert_eq!(best_tokens(&row, 3), vec![(0.7, 4), (0.5, 1), (0.5, 2)]);
        assert_eq!(best_tokens(&row, 1), vec![(0.7, 4)]);
        assert_eq!(best_tokens(&row[..2], 4), vec![(0.5, 1), (0.1, 0)]);
        assert_eq!(best_tokens(&[f32::NAN, 1.0, f32::NAN], 2), vec![(1.0, 1)]);
        assert!(best_tokens(&row, 0).is_empty());
    }

    #[test]
    fn log_probabilities_of_equal_logits_are_minus_log_vocab() {
        // Four equal logits: each token has probability 1/4, whatever the logit.
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(TensorData::new(vec![3.0f32; 8], [2, 4]), &device);
        let best = best_next_tokens(logits, 2);
        let quarter = -(4.0f32).ln();
        assert_eq!(best.len(), 2);
        for row in best {
            assert_eq!(row.iter().map(|c| c.1).collect::<Vec<_>>(), vec![0, 1]);
            assert!(row.iter().all(|c| (c.0 - quarter).abs() < 1e-6), "{row:?}");
        }
    }

    #[test]
    fn equal_the_log_softmax_of_the_device() {
        // A vocabulary not a multiple of the eight lanes, so the tail counts too.
        let device = Device::flex();
        let logits = Tensor::<2>::random([5, 1003], Distribution::Normal(0.0, 4.0), &device);
        let expected = log_softmax(logits.clone(), 1)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for (r, row) in best_next_tokens(logits, 6).into_iter().enumerate() {
            assert_eq!(row.len(), 6);
            let values = &expected[r * 1003..(r + 1) * 1003];
            assert_eq!(row, {
                let mut want: Vec<Candidate> = best_tokens(values, 6);
                // Same ranking; values from the device to float rounding.
                for (w, c) in want.iter_mut().zip(&row) {
                    assert!((w.0 - c.0).abs() < 1e-5, "row {r}: {w:?} {c:?}");
                    w.0 = c.0;
                }
                want
            });
        }
    }

    #[test]
    fn rows_without_a_number_have_no_candidates() {
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(
                vec![
                    f32::NEG_INFINITY,
                    f32::NEG_INFINITY,
                    1.0,
                    f32::NAN,
                    0.0,
                    2.0,
                ],
                [3, 2],
            ),
            &device,
        );
        let best = best_next_tokens(logits, 1);
        assert!(best[0].is_empty() && best[1].is_empty());
        assert_eq!(best[2].len(), 1);
        assert_eq!(best[2][0].1, 1);
    }
}
