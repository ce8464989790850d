//! Head importance and pruning, after Michel, Levy & Neubig (2019), "Are Sixteen Heads Really
//! Better than One?".
//!
//! A gate `g_h` multiplies each head's output before its block's W^O; the importance of head `h`
//! is `I_h = E_x |∂L(x)/∂g_h|` at `g = 1`, the expected absolute gradient of one example's loss
//! (cross-entropy with the label smoothing the caller chooses: none for the synthetic tasks, the
//! training loss's for a translator). Scores are then divided by their block's ℓ2 norm, as the
//! paper does per layer, and heads are pruned from the least important up.

use burn::tensor::Device;
use serde::Serialize;
use tf_model::{BlockId, HeadId, Transformer};

use tf_train::data::batch::Seq2SeqBatch;
use tf_train::data::task::{Example, SpecialIds};

use crate::error::{InspectError, Result};
use crate::prune::{PruneOrder, removal_order};

/// One head's importance.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct HeadImportance {
    /// Which head.
    pub head: HeadId,
    /// `E_x |∂L(x)/∂g_h|`.
    pub raw: f64,
    /// `raw` divided by the ℓ2 norm of its block's raw scores.
    pub normalized: f64,
}

/// The importance of every head of `model`, in the order of [`Transformer::heads`].
///
/// `model` must live on an autodiff device and have no dropout (load it with
/// [`ModelDir::load_model`](tf_train::ModelDir::load_model) with
/// [`Dropout::Off`](tf_train::store::model_dir::Dropout::Off)).
pub fn head_importance(
    model: &Transformer,
    examples: &[Example],
    label_smoothing: f64,
    special: SpecialIds,
    device: &Device,
) -> Vec<HeadImportance> {
    assert!(
        device.is_autodiff(),
        "head importance needs gradients: pass device.autodiff()"
    );
    let blocks = model.attention_blocks();
    let heads = model.heads();
    let mut sums = vec![0.0f64; heads.len()];
    for example in examples {
        let loss = Seq2SeqBatch::with_special(std::slice::from_ref(example), special, device)
            .loss(model, label_smoothing);
        let grads = loss.backward();
        let mut first = 0;
        for (_, mha) in &blocks {
            let out_proj_grad = mha
                .out_proj
                .weight
                .grad(&grads)
                .expect("W^O takes part in the loss");
            let gate_grads = mha
                .head_gate_gradients(out_proj_grad)
                .into_data()
                .try_to_vec::<f32>()
                .expect("float gradients");
            for (sum, g) in sums[first..].iter_mut().zip(gate_grads) {
                *sum += g.abs() as f64;
            }
            first += mha.n_heads;
        }
    }
    let n = examples.len().max(1) as f64;
    let raw: Vec<f64> = sums.iter().map(|s| s / n).collect();
    heads
        .iter()
        .zip(&raw)
        .map(|(&head, &score)| {
            let norm = heads
                .iter()
                .zip(&raw)
                .filter(|(other, _)| other.block == head.block)
                .map(|(_, s)| s * s)
                .sum::<f64>()
                .sqrt();
            HeadImportance {
                head,
                raw: score,
                normalized: if norm > 0.0 { score / norm } else { 0.0 },
            }
        })
        .collect()
}

/// The `count` least important heads (by normalized score), never every head of a block: a head
/// whose block would be left empty is passed over for the next one.
///
/// # Errors
/// If `count` exceeds the heads that can go (all but one per block).
pub fn least_important(importance: &[HeadImportance], count: usize) -> Result<Vec<HeadId>> {
    let mut order = removal_order(importance, PruneOrder::Importance);
    if order.len() < count {
        let mut blocks: Vec<BlockId> = importance.iter().map(|i| i.head.block).collect();
        blocks.dedup();
        return Err(InspectError::Invalid(format!(
            "cannot remove {count} heads: the model has {} heads in {} attention blocks, and each block keeps one",
            importance.len(),
            blocks.len()
        )));
    }
    order.truncate(count);
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_model::AttentionKind;
    use tf_train::{Task, TaskKind};

    fn head(kind: AttentionKind, layer: usize, head: usize) -> HeadId {
        HeadId {
            block: BlockId { kind, layer },
            head,
        }
    }

    #[test]
    fn the_least_important_go_first_but_every_block_keeps_one() {
        let scores = [
            (head(AttentionKind::EncoderSelf, 0, 0), 0.1),
            (head(AttentionKind::EncoderSelf, 0, 1), 0.2),
            (head(AttentionKind::Cross, 0, 0), 0.9),
            (head(AttentionKind::Cross, 0, 1), 0.3),
        ];
        let importance: Vec<HeadImportance> = scores
            .iter()
            .map(|&(head, s)| HeadImportance {
                head,
                raw: s,
                normalized: s,
            })
            .collect();
        assert_eq!(least_important(&importance, 1).unwrap(), [scores[0].0]);
        // Encoder head 1 would empty its block: cross head 1 goes instead.
        assert_eq!(
            least_important(&importance, 2).unwrap(),
            [scores[0].0, scores[3].0]
        );
        let err = least_important(&importance, 3).unwrap_err().to_string();
        assert!(err.contains("4 heads in 2 attention blocks"), "{err}");
    }

    #[test]
    fn importance_is_positive_and_normalized_per_block() {
        let device = Device::flex().autodiff();
        let task = Task::new(TaskKind::Reverse, 6, 2, 5).unwrap();
        device.seed(3);
        let model = task.tiny_model().init(&device);
        let importance =
            head_importance(&model, &task.samples(8, 2), 0.0, SpecialIds::OURS, &device);
        assert_eq!(importance.len(), model.heads().len());
        assert!(importance.iter().all(|i| i.raw > 0.0));
        for block in model.attention_blocks().iter().map(|(b, _)| *b) {
            let norm: f64 = importance
                .iter()
                .filter(|i| i.head.block == block)
                .map(|i| i.normalized * i.normalized)
                .sum();
            assert!((norm - 1.0).abs() < 1e-9, "{block:?}: {norm}");
        }
    }
}
