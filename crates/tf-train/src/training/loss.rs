//! Cross-entropy with label smoothing (§5.4), averaged over the non-padding target tokens.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

use crate::training::fused_loss;

/// Label-smoothed cross-entropy, mean over the positions whose target is not `pad_id`.
///
/// The smoothed target puts `1 - ε` on the true token and spreads `ε` uniformly over the whole
/// vocabulary (PyTorch's `CrossEntropyLoss(label_smoothing = ε)`), so the loss is
/// `(1 - ε)·(-log p_y) + ε·mean_k(-log p_k)`. With `ε = 0` it is plain cross-entropy.
///
/// On the Flex CPU backend this is one fused operation with its own backward
/// ([`fused_loss`]); elsewhere burn's composed operations.
///
/// # Shapes
/// - `logits`: `[batch, tgt_len, vocab]`
/// - `targets`: `[batch, tgt_len]`
/// - returns `[1]`
pub fn label_smoothed_cross_entropy(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    pad_id: usize,
    smoothing: f64,
) -> Tensor<1> {
    if fused_loss::applies(&logits, &targets) {
        let [batch, tgt_len, vocab] = logits.dims();
        return fused_loss::label_smoothed_cross_entropy(
            logits.reshape([batch * tgt_len, vocab]),
            targets.reshape([batch * tgt_len]),
            pad_id,
            smoothing,
        );
    }
    composed_label_smoothed_cross_entropy(logits, targets, pad_id, smoothing)
}

/// [`label_smoothed_cross_entropy`] from burn's tensor operations, on any device.
///
/// # Shapes
/// - `logits`: `[batch, tgt_len, vocab]`
/// - `targets`: `[batch, tgt_len]`
/// - returns `[1]`
pub fn composed_label_smoothed_cross_entropy(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    pad_id: usize,
    smoothing: f64,
) -> Tensor<1> {
    let [batch, tgt_len, _] = logits.dims();
    let log_probs = log_softmax(logits, 2); // [batch, tgt_len, vocab]
    let true_log_prob = log_probs
        .clone()
        .gather(2, targets.clone().reshape([batch, tgt_len, 1])) // [batch, tgt_len, 1]
        .reshape([batch, tgt_len]);
    let mean_log_prob = log_probs.mean_dim(2).reshape([batch, tgt_len]);
    let per_token =
        true_log_prob.mul_scalar(-(1.0 - smoothing)) - mean_log_prob.mul_scalar(smoothing);
    let keep = targets.not_equal_elem(pad_id as i64).float(); // [batch, tgt_len], 1 = counted
    let n_tokens = keep.clone().sum();
    (per_token * keep).sum() / n_tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn hand_computed_loss_ignores_padding() {
        let device = Device::flex();
        // Vocab 2, uniform logits: -log p = ln 2 for every token, smoothed or not.
        // A second position with target PAD (0) and wild logits must not count.
        let logits = Tensor::<3>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 100.0, -100.0], [1, 2, 2]),
            &device,
        );
        let targets = Tensor::<2, Int>::from_ints([[1, 0]], &device);
        let loss = label_smoothed_cross_entropy(logits, targets, 0, 0.1).into_scalar::<f32>();
        assert!((loss - std::f32::consts::LN_2).abs() < 1e-6, "{loss}");
    }

    #[test]
    fn smoothing_mixes_true_and_uniform_terms() {
        let device = Device::flex();
        // logits [ln 3, 0] -> p = [0.75, 0.25]; target 1: nll = ln 4, mean(-log p) = (ln 4/3 + ln 4)/2.
        let logits =
            Tensor::<3>::from_data(TensorData::new(vec![3.0f32.ln(), 0.0], [1, 1, 2]), &device);
        let targets = Tensor::<2, Int>::from_ints([[1]], &device);
        let eps = 0.1;
        let expected = (1.0 - eps) * 4.0f64.ln() + eps * ((4.0f64 / 3.0).ln() + 4.0f64.ln()) / 2.0;
        let loss = label_smoothed_cross_entropy(logits, targets, 0, eps).into_scalar::<f32>();
        assert!(
            (loss as f64 - expected).abs() < 1e-6,
            "{loss} vs {expected}"
        );
    }
}
