//! Dropout as one operation of the Flex CPU backend, with its own backward and no stored mask.
//!
//! burn-nn's [`Dropout`] draws its mask element by element from a locked ChaCha generator, then
//! multiplies and scales in two more passes that autodiff records, keeping the mask and the
//! input for the backward. Here the mask of element `i` is a counter-based hash of `(seed, i)`:
//! the forward writes `x · keep / (1 − p)` in one pass, and the backward regenerates the same
//! mask from the seed (8 bytes of state) to write `g · keep / (1 − p)`. The seed is drawn from
//! the device's seeded generator, so `device.seed(s)` makes a run's masks the same every time.
//! Elements are split across rayon's threads in blocks.
//!
//! [`dropout`] takes this path for f32 tensors on Flex and burn-nn's module everywhere else.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::backend_extension;
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Bytes, DType, Dispatch, Flex};
use burn::nn::Dropout;
use burn::tensor::{Distribution, Int, Tensor};
use rayon::prelude::*;
use tf_attention::fused;

/// Dropout as a backend operation: Flex computes it, autodiff over Flex differentiates it.
#[backend_extension(Flex, Autodiff)]
pub trait FusedDropoutBackend: Backend {
    /// Zeroes each element whose hash of `(seed, index)` falls below `prob`, and scales the
    /// others by `1 / (1 − prob)`.
    ///
    /// # Shapes
    /// - `input`: any
    /// - returns the input's shape
    fn fused_dropout(input: FloatTensor<Self>, seed: u64, prob: f32) -> FloatTensor<Self>;
}

/// The name [`tf_attention::fused::calls`] counts this operation under.
pub const OP: &str = "dropout";

/// Whether the fused dropout serves `input`: f32 on Flex (see [`fused::applies`]).
pub fn applies<const D: usize>(input: &Tensor<D>) -> bool {
    fused::applies(&input.device(), input.dtype())
}

/// `module` applied to `input`: the identity outside training (no autodiff, the module frozen,
/// or probability 0), the fused operation on Flex, burn-nn's module elsewhere.
///
/// # Shapes
/// - `input`: any
/// - returns the input's shape
pub fn dropout<const D: usize>(module: &Dropout, input: Tensor<D>) -> Tensor<D> {
    if !module.training.is_enabled() || !input.device().is_autodiff() || module.prob == 0.0 {
        return input;
    }
    if !applies(&input) {
        return module.forward(input);
    }
    let seed = draw_seed(&input.device());
    Tensor::from_dispatch(<Dispatch as FusedDropoutBackend>::fused_dropout(
        input.into_dispatch(),
        seed,
        module.prob as f32,
    ))
}

/// A 60-bit seed from the device's seeded generator (two draws of 30 bits: a device's
/// integers may be 32-bit).
fn draw_seed(device: &burn::tensor::Device) -> u64 {
    let halves = Tensor::<1, Int>::random([2], Distribution::Uniform(0.0, 2f64.powi(30)), device)
        .try_into_vec_as::<i64>()
        .expect("two integers");
    ((halves[0] as u64) << 30) ^ halves[1] as u64
}

/// A 32-bit integer hash with good avalanche (Wellons' "lowbias32"): every input bit flips
/// each output bit with probability close to one half.
#[inline(always)]
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^= x >> 16;
    x
}

/// Whether element `index` is kept: its hash under `seed`, as a uniform number in `[0, 1)` with
/// 24 bits, is at least `prob`. 32-bit arithmetic only, so that loops over it vectorise.
#[inline(always)]
fn kept(seed: u64, index: u32, threshold: u32) -> bool {
    let h = mix(mix(index ^ seed as u32) ^ (seed >> 32) as u32);
    (h >> 8) >= threshold
}

/// `prob` as the 24-bit threshold of [`kept`].
fn threshold(prob: f32) -> u32 {
    (f64::from(prob) * f64::from(1u32 << 24)).round() as u32
}

/// Elements per block of work: large enough to amortise a task, small enough to spread.
const BLOCK: usize = 1 << 14;

/// `x · keep · scale` for every element of `values`, in blocks across threads.
fn masked(values: &[f32], seed: u64, prob: f32) -> Vec<f32> {
    assert!(
        values.len() <= u32::MAX as usize,
        "fused dropout indexes elements with 32 bits"
    );
    let (threshold, scale) = (threshold(prob), 1.0 / (1.0 - prob));
    let mut out = vec![0.0f32; values.len()];
    out.par_chunks_mut(BLOCK)
        .zip(values.par_chunks(BLOCK))
        .enumerate()
        .for_each(|(block, (out, values))| {
            let first = (block * BLOCK) as u32;
            for (i, (o, &x)) in out.iter_mut().zip(values).enumerate() {
                let keep = kept(seed, first + i as u32, threshold);
                *o = if keep { x * scale } else { 0.0 };
            }
        });
    out
}

/// Applies the mask of `seed` to `tensor` (the forward to the input, the backward to the
/// incoming gradient): the same elements are kept either way.
fn apply(tensor: FlexTensor, seed: u64, prob: f32) -> FlexTensor {
    let tensor = tensor.to_contiguous();
    let shape = tensor.layout().shape().clone();
    let out = masked(tensor.storage::<f32>(), seed, prob);
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(shape),
        DType::F32,
    )
}

impl FusedDropoutBackend for Flex {
    fn fused_dropout(input: FlexTensor, seed: u64, prob: f32) -> FlexTensor {
        fused::count(OP, 1, 0);
        apply(input, seed, prob)
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl Backward<Flex, 1> for DropoutBackward {
    /// The seed and the probability: the mask is regenerated, not stored.
    type State = (u64, f32);

    fn backward(self, ops: Ops<(u64, f32), 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [input] = ops.parents;
        let upstream = grads.consume::<Flex>(&ops.node);
        if let Some(input) = input {
            fused::count(OP, 0, 1);
            let (seed, prob) = ops.state;
            grads.register::<Flex>(input.id, apply(upstream, seed, prob));
        }
    }
}

impl<C: CheckpointStrategy> FusedDropoutBackend for Autodiff<Flex, C> {
    fn fused_dropout(input: FloatTensor<Self>, seed: u64, prob: f32) -> FloatTensor<Self> {
        fused::count(OP, 1, 0);
        match DropoutBackward
            .prepare::<C>([input.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = apply(input.into_primitive(), seed, prob);
                prep.finish((seed, prob), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(apply(input.into_primitive(), seed, prob)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::DropoutConfig;
    use burn::tensor::{Device, TensorData};
    use proptest::prelude::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn keeps_one_minus_p_of_the_elements_independently() {
        for prob in [0.1f32, 0.5] {
            let n = 1 << 20;
            let out = masked(&vec![1.0; n], 7, prob);
            let keep: Vec<bool> = out.iter().map(|&v| v != 0.0).collect();
            let kept = keep.iter().filter(|&&k| k).count() as f64 / n as f64;
            // Binomial standard deviation at n = 2^20 is at most 0.0005.
            assert!(
                (kept - f64::from(1.0 - prob)).abs() < 0.003,
                "{prob}: kept {kept}"
            );
            let pairs = keep.windows(2).filter(|w| w[0] && w[1]).count() as f64 / (n - 1) as f64;
            let want = f64::from((1.0 - prob) * (1.0 - prob));
            assert!(
                (pairs - want).abs() < 0.003,
                "{prob}: neighbours kept together {pairs}"
            );
            let scale = 1.0 / (1.0 - prob);
            assert!(out.iter().all(|&v| v == 0.0 || v == scale));
        }
        assert_ne!(masked(&[1.0; 64], 1, 0.5), masked(&[1.0; 64], 2, 0.5));
    }

    #[test]
    fn the_fused_path_serves_flex_in_training_only() {
        let module = DropoutConfig::new(0.5).init();
        let flex = Device::flex();
        let x = Tensor::<2>::ones([4, 8], &flex);
        let before = fused::calls(OP);
        assert_eq!(
            values(dropout(&module, x.clone())),
            values(x.clone()),
            "no autodiff"
        );
        assert_eq!(fused::calls(OP), before);
        let train = flex.clone().autodiff();
        dropout(&module, Tensor::<2>::ones([4, 8], &train));
        assert_eq!(fused::calls(OP).forward, before.forward + 1);
        assert!(!fused::composed_only(|| applies(&x)));
        #[allow(deprecated)]
        let ndarray = Tensor::<2>::ones([4, 8], &Device::ndarray().autodiff());
        assert!(!applies(&ndarray));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Output and input gradient equal those of burn's composed `x · mask · scale` with the
        /// mask the fused forward chose, on random shapes, values and probabilities.
        #[test]
        fn equals_the_composed_dropout_with_its_mask(
            rows in 1usize..20,
            cols in 1usize..70,
            prob in 0.05f64..0.9,
            seed in any::<u64>(),
        ) {
            use rand::{RngExt, SeedableRng, rngs::StdRng};
            let mut rng = StdRng::seed_from_u64(seed);
            // Values away from zero, so that a kept element is never mistaken for a dropped one.
            let x: Vec<f32> = (0..rows * cols).map(|_| 0.5 + rng.random::<f32>()).collect();
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.random::<f32>() - 0.5).collect();
            let device = Device::flex().autodiff();
            let module = DropoutConfig::new(prob).init();
            let input = || Tensor::<2>::from_data(TensorData::new(x.clone(), [rows, cols]), &device).require_grad();
            let weights = Tensor::<2>::from_data(TensorData::new(w.clone(), [rows, cols]), &device);

            let xf = input();
            let fused = dropout(&module, xf.clone());
            let mask: Vec<f32> = values(fused.clone()).iter().map(|&v| f32::from(v != 0.0)).collect();
            let fused_grad = values(xf.grad(&(fused.clone() * weights.clone()).sum().backward()).unwrap());

            let xc = input();
            let mask = Tensor::<2>::from_data(TensorData::new(mask, [rows, cols]), &device);
            let composed = xc.clone() * mask * (1.0 / (1.0 - prob));
            let composed_grad = values(xc.grad(&(composed.clone() * weights).sum().backward()).unwrap());

            for (a, b) in values(fused).iter().zip(values(composed)) {
                prop_assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "output {a} vs {b}");
            }
            for (a, b) in fused_grad.iter().zip(&composed_grad) {
                prop_assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "gradient {a} vs {b}");
            }
        }
    }
}
