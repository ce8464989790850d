//! Batches by token budget: pairs of similar length go together (little padding), each batch
//! holds as many pairs as fit in `max_tokens` padded tokens on either side, and the order of
//! batches (and of equal-length pairs) is shuffled from a seed, anew each epoch.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Groups the pair indices `0..src_lens.len()` into batches.
///
/// A batch of `n` pairs costs `n · longest source` source tokens and `n · longest target` target
/// tokens, padding included; both stay within `max_tokens` (a single pair longer than that is a
/// batch of its own). Every index appears in exactly one batch; an index is a whole pair, so a
/// source never meets another pair's target.
///
/// # Panics
/// If the length lists differ in length or `max_tokens` is 0.
pub fn token_batches(
    src_lens: &[usize],
    tgt_lens: &[usize],
    max_tokens: usize,
    seed: u64,
) -> Vec<Vec<usize>> {
    assert_eq!(
        src_lens.len(),
        tgt_lens.len(),
        "one source and one target length per pair"
    );
    assert!(max_tokens > 0, "max_tokens must be positive");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut order: Vec<usize> = (0..src_lens.len()).collect();
    order.shuffle(&mut rng); // equal lengths come in a fresh order each epoch
    order.sort_by_key(|&i| (tgt_lens[i], src_lens[i])); // stable: the shuffle breaks ties

    let mut batches = Vec::new();
    let mut batch: Vec<usize> = Vec::new();
    let (mut longest_src, mut longest_tgt) = (0, 0);
    for i in order {
        let (src, tgt) = (longest_src.max(src_lens[i]), longest_tgt.max(tgt_lens[i]));
        let n = batch.len() + 1;
        if !batch.is_empty() && (n * src > max_tokens || n * tgt > max_tokens) {
            batches.push(std::mem::take(&mut batch));
            (longest_src, longest_tgt) = (src_lens[i], tgt_lens[i]);
        } else {
            (longest_src, longest_tgt) = (src, tgt);
        }
        batch.push(i);
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches.shuffle(&mut rng);
    batches
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngExt;

    fn lengths(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(seed);
        let src: Vec<usize> = (0..n).map(|_| rng.random_range(2..40)).collect();
        let tgt: Vec<usize> = src
            .iter()
            .map(|&s| (s + rng.random_range(0..6)).saturating_sub(2).max(1))
            .collect();
        (src, tgt)
    }

    #[test]
    fn every_pair_once_within_budget() {
        let (src, tgt) = lengths(1000, 1);
        let batches = token_batches(&src, &tgt, 400, 7);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        for batch in &batches {
            let longest = |lens: &[usize]| batch.iter().map(|&i| lens[i]).max().unwrap();
            assert!(batch.len() * longest(&src) <= 400 && batch.len() * longest(&tgt) <= 400);
        }
    }

    #[test]
    fn bucketing_pads_little_and_reshuffles_per_seed() {
        let (src, tgt) = lengths(2000, 2);
        let batches = token_batches(&src, &tgt, 500, 3);
        let (real, padded) = batches.iter().fold((0, 0), |(real, padded), batch| {
            let longest = batch.iter().map(|&i| tgt[i]).max().unwrap();
            (
                real + batch.iter().map(|&i| tgt[i]).sum::<usize>(),
                padded + longest * batch.len(),
            )
        });
        assert!(
            real as f64 / padded as f64 > 0.9,
            "target padding {real}/{padded}"
        );
        assert_ne!(token_batches(&src, &tgt, 500, 4), batches);
        assert_eq!(token_batches(&src, &tgt, 500, 3), batches);
    }

    #[test]
    fn an_over_long_pair_is_a_batch_of_its_own() {
        let batches = token_batches(&[3, 50, 4], &[3, 60, 4], 20, 0);
        assert!(batches.contains(&vec![1]));
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 3);
    }
}
