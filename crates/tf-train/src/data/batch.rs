//! Padded batches for teacher forcing: the decoder reads the target shifted right (BOS first)
//! and is trained to emit the target followed by EOS (§3, "auto-regressive").

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use tf_attention::padding_mask_from_lengths;
use tf_model::Transformer;

use crate::data::task::{Example, SpecialIds};
use crate::training::loss::label_smoothed_cross_entropy;

/// One batch, on a device.
#[derive(Clone, Debug)]
pub struct Seq2SeqBatch {
    /// `[batch, src_len]` source ids, padded with PAD.
    pub src: Tensor<2, Int>,
    /// `[batch, src_len]`, `true` = padding.
    pub src_pad_mask: Tensor<2, Bool>,
    /// `[batch, tgt_len]` decoder input: BOS + target, padded.
    pub tgt_in: Tensor<2, Int>,
    /// `[batch, tgt_len]`, `true` = padding.
    pub tgt_pad_mask: Tensor<2, Bool>,
    /// `[batch, tgt_len]` what the decoder must emit: target + EOS, padded with PAD.
    pub tgt_out: Tensor<2, Int>,
    /// Number of non-padding target tokens (what the loss averages over).
    pub n_target_tokens: usize,
    /// The padding id of `tgt_out`, which the loss ignores.
    pub pad: usize,
}

/// Pads `rows` to the longest with `pad`. Returns the ids and each row's length.
fn pad_rows(rows: &[Vec<usize>], pad: usize) -> (Vec<i64>, Vec<usize>, usize) {
    let max_len = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * max_len);
    for row in rows {
        ids.extend(row.iter().map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad as i64, max_len - row.len()));
    }
    (ids, rows.iter().map(Vec::len).collect(), max_len)
}

/// A `[batch, len]` id tensor padded with `pad`, and its padding mask.
fn padded(
    rows: &[Vec<usize>],
    pad: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Bool>, Vec<usize>) {
    let (ids, lengths, max_len) = pad_rows(rows, pad);
    let tensor = Tensor::from_data(TensorData::new(ids, [rows.len(), max_len]), device);
    let mask = padding_mask_from_lengths(&lengths, max_len, device);
    (tensor, mask, lengths)
}

impl Seq2SeqBatch {
    /// Pads and places `examples` on `device`, with our special ids.
    ///
    /// # Panics
    /// If `examples` is empty or a source is empty.
    pub fn new(examples: &[Example], device: &Device) -> Self {
        Self::with_special(examples, SpecialIds::OURS, device)
    }

    /// [`new`](Self::new) for a model with other special ids (an imported MarianMT model): the
    /// decoder input starts with `special.bos`, the targets end in `special.eos` and are
    /// padded with `special.pad`.
    ///
    /// # Panics
    /// If `examples` is empty or a source is empty.
    pub fn with_special(examples: &[Example], special: SpecialIds, device: &Device) -> Self {
        assert!(!examples.is_empty(), "a batch needs at least one example");
        assert!(
            examples.iter().all(|e| !e.src.is_empty()),
            "sources must not be empty"
        );
        let sources: Vec<Vec<usize>> = examples.iter().map(|e| e.src.clone()).collect();
        let inputs: Vec<Vec<usize>> = examples
            .iter()
            .map(|e| {
                std::iter::once(special.bos)
                    .chain(e.tgt.iter().copied())
                    .collect()
            })
            .collect();
        let outputs: Vec<Vec<usize>> = examples
            .iter()
            .map(|e| {
                e.tgt
                    .iter()
                    .copied()
                    .chain(std::iter::once(special.eos))
                    .collect()
            })
            .collect();
        let (src, src_pad_mask, _) = padded(&sources, special.pad, device);
        let (tgt_in, tgt_pad_mask, lengths) = padded(&inputs, special.pad, device);
        let (tgt_out, _, _) = padded(&outputs, special.pad, device);
        Self {
            src,
            src_pad_mask,
            tgt_in,
            tgt_pad_mask,
            tgt_out,
            n_target_tokens: lengths.iter().sum(),
            pad: special.pad,
        }
    }

    /// The teacher-forced, label-smoothed loss of `model` on this batch: mean per non-padding
    /// target token.
    ///
    /// # Shapes
    /// returns `[1]`
    pub fn loss(self, model: &Transformer, label_smoothing: f64) -> Tensor<1> {
        let logits = model.forward(
            self.src,
            self.tgt_in,
            Some(self.src_pad_mask),
            Some(self.tgt_pad_mask),
        );
        label_smoothed_cross_entropy(logits, self.tgt_out, self.pad, label_smoothing)
    }

    /// Pads and places sources alone, for decoding.
    ///
    /// # Shapes
    /// returns `[batch, src_len]` ids and mask
    pub fn sources(sources: &[Vec<usize>], device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>) {
        let (src, mask, _) = padded(sources, SpecialIds::OURS.pad, device);
        (src, mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ints(t: Tensor<2, Int>) -> Vec<i64> {
        t.try_into_vec_as::<i64>().unwrap()
    }

    #[test]
    fn targets_are_shifted_right_and_padded() {
        let device = Device::flex();
        let batch = Seq2SeqBatch::new(
            &[
                Example {
                    src: vec![5, 6, 7],
                    tgt: vec![7, 6, 5],
                },
                Example {
                    src: vec![8],
                    tgt: vec![8],
                },
            ],
            &device,
        );
        assert_eq!(ints(batch.src), [5, 6, 7, 8, 0, 0]);
        assert_eq!(ints(batch.tgt_in), [1, 7, 6, 5, 1, 8, 0, 0]);
        assert_eq!(ints(batch.tgt_out), [7, 6, 5, 2, 8, 2, 0, 0]);
        let mask = batch.tgt_pad_mask.into_data().try_to_vec::<bool>().unwrap();
        assert_eq!(mask, [false, false, false, false, false, false, true, true]);
        assert_eq!(batch.n_target_tokens, 6);
    }
}
