//! Label-smoothed cross-entropy as one operation of the Flex CPU backend, with its own backward.
//!
//! Composed from burn's tensor operations the loss is a dozen passes over the
//! `[tokens, vocab]` logits, each allocating a tensor of that size, and autodiff records every
//! one of them (`log_softmax` alone is max, subtract, exp, sum, log, subtract; burn fuses none of
//! it under autodiff). Here the forward reads each row of logits once for its maximum and once
//! for the log-sum-exp, the true logit and the mean logit, and keeps only the log-sum-exp of
//! each row; the backward writes the gradient in one pass,
//!
//! ```text
//! ∂L/∂z[r, k] = g · keep_r / n · (softmax(z_r)_k − (1 − ε)·[k = y_r] − ε / V)
//! ```
//!
//! with `softmax(z_r)_k = exp(z[r, k] − lse_r)` recomputed from the logits, which autodiff
//! keeps anyway. Rows are split across rayon's threads.
//!
//! [`label_smoothed_cross_entropy`](crate::training::loss::label_smoothed_cross_entropy) takes
//! this path on Flex with f32 logits and keeps the composed one for every other device (and
//! inside [`tf_attention::fused::composed_only`]).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::backend_extension;
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::{Backend, Bytes, DType, Dispatch, Flex, Shape};
use burn::tensor::{Int, Tensor};
use rayon::prelude::*;
use tf_attention::fused::{self, exp};

/// The loss as a backend operation: Flex computes it, autodiff over Flex differentiates it.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLossBackend: Backend {
    /// Label-smoothed cross-entropy, mean over the rows whose target is not `pad_id`.
    ///
    /// # Shapes
    /// - `logits`: `[rows, vocab]`
    /// - `targets`: `[rows]`
    /// - returns `[1]`
    fn label_smoothed_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        pad_id: usize,
        smoothing: f32,
    ) -> FloatTensor<Self>;
}

/// The name [`tf_attention::fused::calls`] counts this operation under.
pub const OP: &str = "label_smoothed_cross_entropy";

/// Whether the fused loss serves these tensors: f32 logits on Flex (see [`fused::applies`])
/// and i64/i32 targets.
pub fn applies<const D: usize, const E: usize>(
    logits: &Tensor<D>,
    targets: &Tensor<E, Int>,
) -> bool {
    fused::applies(&logits.device(), logits.dtype())
        && matches!(targets.dtype(), DType::I64 | DType::I32)
}

/// The fused loss; the caller checks [`applies`] first.
///
/// # Shapes
/// - `logits`: `[rows, vocab]`
/// - `targets`: `[rows]`
/// - returns `[1]`
pub fn label_smoothed_cross_entropy(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    pad_id: usize,
    smoothing: f64,
) -> Tensor<1> {
    Tensor::from_dispatch(
        <Dispatch as FusedLossBackend>::label_smoothed_cross_entropy(
            logits.into_dispatch(),
            targets.into_dispatch(),
            pad_id,
            smoothing as f32,
        ),
    )
}

/// What the backward needs of the forward.
#[derive(Clone, Debug)]
struct Saved {
    logits: FlexTensor,
    targets: Vec<i64>,
    log_sum_exp: Vec<f32>,
    pad_id: i64,
    smoothing: f32,
    /// Rows whose target is not `pad_id`: the mean's divisor.
    n_tokens: usize,
}

/// The forward's result: the loss, and what the backward needs.
struct Forward {
    loss: FlexTensor,
    saved: Saved,
}

fn scalar(value: f32) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(vec![value]),
        Layout::contiguous(Shape::new([1])),
        DType::F32,
    )
}

fn target_ids(targets: &FlexTensor) -> Vec<i64> {
    let targets = targets.to_contiguous();
    match targets.dtype() {
        DType::I64 => targets.storage::<i64>().to_vec(),
        DType::I32 => targets.storage::<i32>().iter().map(|&t| t as i64).collect(),
        other => unreachable!("applies() admits i64 and i32 targets, not {other:?}"),
    }
}

/// Per row: log-sum-exp and the row's loss `lse − (1 − ε)·z_y − ε·mean(z)` (0 for padding).
fn forward(logits: FlexTensor, targets: &FlexTensor, pad_id: usize, smoothing: f32) -> Forward {
    fused::count(OP, 1, 0);
    let logits = logits.to_contiguous();
    let [rows, vocab] = logits.layout().shape().dims::<2>();
    let targets = target_ids(targets);
    assert_eq!(targets.len(), rows, "one target per row of logits");
    let pad_id = pad_id as i64;
    let z = logits.storage::<f32>();
    let (log_sum_exp, losses): (Vec<f32>, Vec<f64>) = z
        .par_chunks(vocab.max(1))
        .zip(targets.par_iter())
        .map(|(row, &target)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (sum_exp, sum) = sum_exp_and_sum(row, max);
            let lse = f64::from(max) + sum_exp.ln();
            let loss = if target == pad_id {
                0.0
            } else {
                let true_logit = f64::from(row[target as usize]);
                let eps = f64::from(smoothing);
                lse - (1.0 - eps) * true_logit - eps * sum / vocab as f64
            };
            (lse as f32, loss)
        })
        .unzip();
    let n_tokens = targets.iter().filter(|&&t| t != pad_id).count();
    let loss = losses.iter().sum::<f64>() / n_tokens as f64;
    Forward {
        loss: scalar(loss as f32),
        saved: Saved {
            logits,
            targets,
            log_sum_exp,
            pad_id,
            smoothing,
            n_tokens,
        },
    }
}

/// Lanes of the row sums: wide enough for the compiler to keep them in vector registers.
const LANES: usize = 16;

/// `Σ exp(x − max)` and `Σ x` over `row`, in lanes of f32 added up in f64 at the end.
fn sum_exp_and_sum(row: &[f32], max: f32) -> (f64, f64) {
    let (mut exps, mut values) = ([0.0f32; LANES], [0.0f32; LANES]);
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for i in 0..LANES {
            exps[i] += exp(chunk[i] - max);
            values[i] += chunk[i];
        }
    }
    let (mut sum_exp, mut sum) = (0.0f64, 0.0f64);
    for &x in chunks.remainder() {
        sum_exp += f64::from(exp(x - max));
        sum += f64::from(x);
    }
    sum_exp += exps.iter().map(|&e| f64::from(e)).sum::<f64>();
    sum += values.iter().map(|&v| f64::from(v)).sum::<f64>();
    (sum_exp, sum)
}

/// The gradient of the loss with respect to the logits, for an incoming gradient `upstream`.
fn backward(saved: &Saved, upstream: f32) -> FlexTensor {
    fused::count(OP, 0, 1);
    let shape = saved.logits.layout().shape().clone();
    let [_, vocab] = shape.dims::<2>();
    let scale = upstream / saved.n_tokens as f32;
    let uniform = saved.smoothing / vocab as f32;
    let on_target = 1.0 - saved.smoothing;
    let z = saved.logits.storage::<f32>();
    let mut grad = vec![0.0f32; z.len()];
    grad.par_chunks_mut(vocab.max(1))
        .zip(z.par_chunks(vocab.max(1)))
        .zip(saved.targets.par_iter().zip(saved.log_sum_exp.par_iter()))
        .for_each(|((out, row), (&target, &lse))| {
            if target == saved.pad_id {
                return; // zeros
            }
            for (g, &x) in out.iter_mut().zip(row) {
                *g = scale * (exp(x - lse) - uniform);
            }
            out[target as usize] -= scale * on_target;
        });
    FlexTensor::new(
        Bytes::from_elems(grad),
        Layout::contiguous(shape),
        DType::F32,
    )
}

impl FusedLossBackend for Flex {
    fn label_smoothed_cross_entropy(
        logits: FlexTensor,
        targets: FlexTensor,
        pad_id: usize,
        smoothing: f32,
    ) -> FlexTensor {
        forward(logits, &targets, pad_id, smoothing).loss
    }
}

#[derive(Debug)]
struct LossBackward;

impl Backward<Flex, 1> for LossBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [logits] = ops.parents;
        let upstream = grads.consume::<Flex>(&ops.node).to_contiguous();
        if let Some(logits) = logits {
            let grad = backward(&ops.state, upstream.storage::<f32>()[0]);
            grads.register::<Flex>(logits.id, grad);
        }
    }
}

impl<C: CheckpointStrategy> FusedLossBackend for Autodiff<Flex, C> {
    fn label_smoothed_cross_entropy(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        pad_id: usize,
        smoothing: f32,
    ) -> FloatTensor<Self> {
        match LossBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = forward(logits.into_primitive(), &targets, pad_id, smoothing);
                prep.finish(out.saved, out.loss)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(logits.into_primitive(), &targets, pad_id, smoothing).loss)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::loss::composed_label_smoothed_cross_entropy;
    use burn::tensor::{Device, TensorData};
    use proptest::prelude::*;

    /// Logits `[rows, vocab]` and targets with `pad_rows` of them padding (id 0).
    fn case(
        rows: usize,
        vocab: usize,
        values: &[f32],
        targets: &[i64],
        device: &Device,
    ) -> (Tensor<2>, Tensor<1, Int>) {
        let logits =
            Tensor::<2>::from_data(TensorData::new(values.to_vec(), [rows, vocab]), device);
        let targets =
            Tensor::<1, Int>::from_data(TensorData::new(targets.to_vec(), [rows]), device);
        (logits, targets)
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// Relative where values are large, absolute near zero.
    fn close(a: f32, b: f32, tol: f32) -> bool {
        (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn hand_computed_loss_and_gradient() {
        // logits [ln 3, 0] -> p = [0.75, 0.25]; target 1, ε = 0.1:
        // loss = 0.9·ln 4 + 0.1·(ln 4/3 + ln 4)/2; ∂/∂z = p − 0.9·[k = 1] − 0.05.
        // A second row is padding (target 0) and must count for nothing.
        let device = Device::flex().autodiff();
        let (logits, targets) = case(2, 2, &[3f32.ln(), 0.0, 50.0, -50.0], &[1, 0], &device);
        let logits = logits.require_grad();
        let before = fused::calls(OP);
        let loss = label_smoothed_cross_entropy(logits.clone(), targets, 0, 0.1);
        let expected = 0.9 * 4f64.ln() + 0.1 * ((4f64 / 3.0).ln() + 4f64.ln()) / 2.0;
        let value = loss.clone().into_scalar::<f32>();
        assert!(
            (f64::from(value) - expected).abs() < 1e-6,
            "{value} vs {expected}"
        );
        let grads = loss.backward();
        let grad = values(logits.grad(&grads).unwrap());
        let want = [0.75 - 0.05, 0.25 - 0.9 - 0.05, 0.0, 0.0];
        for (g, w) in grad.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{grad:?} vs {want:?}");
        }
        assert_eq!(
            fused::calls(OP),
            fused::Calls {
                forward: before.forward + 1,
                backward: before.backward + 1
            }
        );
    }

    #[test]
    fn the_fused_path_serves_flex_only() {
        let targets = |device: &Device| Tensor::<1, Int>::from_ints([1, 2], device);
        let logits = |device: &Device| Tensor::<2>::zeros([2, 3], device);
        for device in [Device::flex(), Device::flex().autodiff()] {
            assert!(applies(&logits(&device), &targets(&device)));
        }
        let ndarray = crate::Backend::Ndarray.device();
        assert!(!applies(&logits(&ndarray), &targets(&ndarray)));
        let flex = Device::flex();
        assert!(!fused::composed_only(|| applies(
            &logits(&flex),
            &targets(&flex)
        )));
        assert!(applies(&logits(&flex), &targets(&flex)), "turned on again");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Loss and gradient equal the composed burn operations' on random shapes, logits,
        /// smoothing and padding (a row of all padding but one included).
        #[test]
        fn equals_the_composed_loss(
            rows in 1usize..12,
            vocab in 2usize..40,
            scale in prop_oneof![Just(1.0f32), Just(30.0f32)],
            smoothing in prop_oneof![Just(0.0f64), Just(0.1f64), 0.0f64..0.5],
            seed in any::<u64>(),
        ) {
            use rand::{RngExt, SeedableRng, rngs::StdRng};
            let mut rng = StdRng::seed_from_u64(seed);
            let logits: Vec<f32> = (0..rows * vocab).map(|_| scale * (rng.random::<f32>() - 0.5)).collect();
            let mut targets: Vec<i64> = (0..rows).map(|_| rng.random_range(0..vocab as i64)).collect();
            targets[0] = 1 + rng.random_range(0..vocab as i64 - 1); // at least one counted row
            let device = Device::flex().autodiff();
            let run = |fused: bool| {
                let (z, t) = case(rows, vocab, &logits, &targets, &device);
                let z = z.require_grad();
                let loss = if fused {
                    label_smoothed_cross_entropy(z.clone(), t, 0, smoothing)
                } else {
                    composed_label_smoothed_cross_entropy(
                        z.clone().reshape([1, rows, vocab]), t.reshape([1, rows]), 0, smoothing)
                };
                let value = loss.clone().into_scalar::<f32>();
                let grads = loss.backward();
                (value, values(z.grad(&grads).unwrap()))
            };
            let (fused, fused_grad) = run(true);
            let (composed, composed_grad) = run(false);
            prop_assert!(close(fused, composed, 1e-5), "loss {fused} vs {composed}");
            for (a, b) in fused_grad.iter().zip(&composed_grad) {
                prop_assert!(close(*a, *b, 1e-5), "gradient {a} vs {b}");
            }
        }
    }
}
