//! Accuracy of greedy decoding on task examples: exact match and token accuracy.

use burn::tensor::Device;
use tf_model::{GreedyOptions, Transformer};

use crate::data::batch::Seq2SeqBatch;
use crate::data::task::{BOS, EOS, Example};
use crate::error::Result;

/// How well decoded sequences match their targets.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Accuracy {
    /// Share of sequences decoded exactly.
    pub exact_match: f64,
    /// Share of target positions decoded right; a position the decoder leaves out or adds counts
    /// as wrong (the denominator is the longer of the two lengths, per sequence).
    pub token_accuracy: f64,
    /// Sequences evaluated.
    pub sequences: usize,
}

impl Accuracy {
    /// Compares each prediction with its reference.
    pub fn measure(predictions: &[Vec<usize>], references: &[Vec<usize>]) -> Self {
        assert_eq!(
            predictions.len(),
            references.len(),
            "one prediction per reference"
        );
        let (mut exact, mut right, mut positions) = (0usize, 0usize, 0usize);
        for (pred, reference) in predictions.iter().zip(references) {
            exact += usize::from(pred == reference);
            right += pred.iter().zip(reference).filter(|(p, r)| p == r).count();
            positions += pred.len().max(reference.len()).max(1);
        }
        let n = predictions.len().max(1) as f64;
        Self {
            exact_match: exact as f64 / n,
            token_accuracy: right as f64 / positions.max(1) as f64,
            sequences: predictions.len(),
        }
    }
}

/// Greedy-decodes the sources of `examples` in batches (at most `max_target_len` tokens each).
pub fn predict(
    model: &Transformer,
    sources: &[Vec<usize>],
    max_target_len: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<usize>>> {
    let options = GreedyOptions::new(BOS, EOS, max_target_len);
    let mut predictions = Vec::with_capacity(sources.len());
    for chunk in sources.chunks(batch_size.max(1)) {
        let (src, src_pad_mask) = Seq2SeqBatch::sources(chunk, device);
        predictions.extend(model.greedy_decode(src, Some(src_pad_mask), &options)?);
    }
    Ok(predictions)
}

/// Greedy decoding accuracy on `examples`; the model should be in inference mode
/// (`model.valid()`).
pub fn accuracy(
    model: &Transformer,
    examples: &[Example],
    max_target_len: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Accuracy> {
    let sources: Vec<Vec<usize>> = examples.iter().map(|e| e.src.clone()).collect();
    let references: Vec<Vec<usize>> = examples.iter().map(|e| e.tgt.clone()).collect();
    let predictions = predict(model, &sources, max_target_len, batch_size, device)?;
    Ok(Accuracy::measure(&predictions, &references))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_counts_exact_sequences_and_positions() {
        let refs = vec![vec![3, 4, 5], vec![6, 7]];
        let preds = vec![vec![3, 4, 5], vec![6, 8, 9]];
        let acc = Accuracy::measure(&preds, &refs);
        assert_eq!(acc.exact_match, 0.5);
        // right: 3 + 1 = 4 of max(3,3) + max(3,2) = 6 positions.
        assert!((acc.token_accuracy - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(acc.sequences, 2);
    }
}
