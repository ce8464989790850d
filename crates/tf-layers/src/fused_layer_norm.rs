//! Layer normalisation as one operation of the Flex CPU backend, with its own backward.
//!
//! Under autodiff burn computes `(x − mean) / √(var + ε) · γ + β` as a chain of recorded
//! operations (mean, subtract, square, mean, add, square root, divide, multiply, add), each a
//! pass over the whole `[tokens, d_model]` tensor that allocates its result and keeps its
//! inputs for the backward, whose passes are as many again; the translation model has 15 layer
//! norms a step. Here the forward reads each row twice (mean, then variance) and writes it once,
//! keeping the row's mean and `1 / √(var + ε)`; the backward writes `∂x` in one pass per row,
//!
//! ```text
//! x̂ = (x − mean)·r,   g = ∂y ∘ γ,   ∂x = r · (g − mean(g) − x̂ · mean(g ∘ x̂))
//! ∂γ = Σ_rows ∂y ∘ x̂,   ∂β = Σ_rows ∂y
//! ```
//!
//! Rows are split across rayon's threads, each summing its rows' `∂γ` and `∂β` before the
//! partial sums are added.
//!
//! [`layer_norm`] takes this path on Flex with f32 tensors and burn-nn's module everywhere
//! else.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::backend_extension;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, Shape};
use burn::nn::LayerNorm;
use burn::tensor::Tensor;
use rayon::prelude::*;
use tf_attention::fused;

/// Layer normalisation as a backend operation: Flex computes it, autodiff over Flex
/// differentiates it.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLayerNormBackend: Backend {
    /// `(x − mean) / √(var + ε) · γ + β` over the last axis (biased variance).
    ///
    /// # Shapes
    /// - `x`: `[..., d]`
    /// - `gamma`, `beta`: `[d]`
    /// - returns `[..., d]`
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self>;
}

/// The name [`fused::calls`] counts this operation under.
pub const OP: &str = "layer_norm";

/// `norm` (with its `epsilon`, which burn-nn's module does not expose) applied to `x`: fused
/// on Flex with f32 tensors and a bias, burn-nn's module elsewhere.
///
/// # Shapes
/// - `x`: `[..., d]`
/// - returns `[..., d]`
pub fn layer_norm<const D: usize>(norm: &LayerNorm, epsilon: f64, x: Tensor<D>) -> Tensor<D> {
    let Some(beta) = norm.beta.as_ref() else {
        return norm.forward(x);
    };
    if !fused::applies(&x.device(), x.dtype()) {
        return norm.forward(x);
    }
    Tensor::from_dispatch(<Dispatch as FusedLayerNormBackend>::fused_layer_norm(
        x.into_dispatch(),
        norm.gamma.val().into_dispatch(),
        beta.val().into_dispatch(),
        epsilon as f32,
    ))
}

/// Rows of work per rayon task.
const ROWS_PER_TASK: usize = 64;

/// What the backward needs of the forward.
#[derive(Clone, Debug)]
struct Saved {
    /// `[rows · d]`, contiguous.
    x: FlexTensor,
    gamma: Vec<f32>,
    /// Per row: mean and `1 / √(var + ε)`.
    stats: Vec<(f32, f32)>,
}

fn values(t: &FlexTensor) -> Vec<f32> {
    t.to_contiguous().storage::<f32>().to_vec()
}

fn forward(
    x: FlexTensor,
    gamma: &FlexTensor,
    beta: &FlexTensor,
    epsilon: f32,
) -> (FlexTensor, Saved) {
    fused::count(OP, 1, 0);
    let x = x.to_contiguous();
    let shape = x.layout().shape().clone();
    let d = shape[shape.num_dims() - 1].max(1);
    let (gamma, beta) = (values(gamma), values(beta));
    let input = x.storage::<f32>();
    let mut out = vec![0.0f32; input.len()];
    let normalize = |(out, input): (&mut [f32], &[f32])| {
        let mut stats = Vec::with_capacity(out.len() / d);
        for (y, row) in out.chunks_mut(d).zip(input.chunks(d)) {
            let mean = row.iter().sum::<f32>() / d as f32;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let rstd = 1.0 / (var + epsilon).sqrt();
            for (((y, &v), &g), &b) in y.iter_mut().zip(row).zip(&gamma).zip(&beta) {
                *y = (v - mean) * rstd * g + b;
            }
            stats.push((mean, rstd));
        }
        stats
    };
    let stats: Vec<(f32, f32)> = if fused::worth_threads(input.len()) {
        out.par_chunks_mut(ROWS_PER_TASK * d)
            .zip(input.par_chunks(ROWS_PER_TASK * d))
            .flat_map_iter(normalize)
            .collect()
    } else {
        normalize((&mut out, input))
    };
    let saved = Saved { x, gamma, stats };
    (fused::f32_tensor(out, shape), saved)
}

/// The gradients of x, γ and β for the output gradient `upstream`.
fn backward(saved: &Saved, upstream: FlexTensor) -> [FlexTensor; 3] {
    fused::count(OP, 0, 1);
    let upstream = upstream.to_contiguous();
    let shape = saved.x.layout().shape().clone();
    let d = shape[shape.num_dims() - 1].max(1);
    let (input, d_out) = (saved.x.storage::<f32>(), upstream.storage::<f32>());
    let gamma = &saved.gamma;
    let mut d_x = vec![0.0f32; input.len()];
    let (d_gamma, d_beta) = d_x
        .par_chunks_mut(ROWS_PER_TASK * d)
        .zip(input.par_chunks(ROWS_PER_TASK * d))
        .zip(d_out.par_chunks(ROWS_PER_TASK * d))
        .zip(saved.stats.par_chunks(ROWS_PER_TASK))
        .map(|(((d_x, input), d_out), stats)| {
            let (mut d_gamma, mut d_beta) = (vec![0.0f32; d], vec![0.0f32; d]);
            let rows = d_x.chunks_mut(d).zip(input.chunks(d)).zip(d_out.chunks(d));
            for (((d_x, row), dy), &(mean, rstd)) in rows.zip(stats) {
                // mean(g) and mean(g ∘ x̂), g = ∂y ∘ γ
                let (mut sum_g, mut sum_g_xhat) = (0.0f32, 0.0f32);
                for (((&v, &dy), &g), (dg, db)) in row
                    .iter()
                    .zip(dy)
                    .zip(gamma)
                    .zip(d_gamma.iter_mut().zip(d_beta.iter_mut()))
                {
                    let xhat = (v - mean) * rstd;
                    sum_g += dy * g;
                    sum_g_xhat += dy * g * xhat;
                    *dg += dy * xhat;
                    *db += dy;
                }
                let (mean_g, mean_g_xhat) = (sum_g / d as f32, sum_g_xhat / d as f32);
                for (((dx, &v), &dy), &g) in d_x.iter_mut().zip(row).zip(dy).zip(gamma) {
                    let xhat = (v - mean) * rstd;
                    *dx = rstd * (dy * g - mean_g - xhat * mean_g_xhat);
                }
            }
            (d_gamma, d_beta)
        })
        .reduce(
            || (vec![0.0f32; d], vec![0.0f32; d]),
            |(mut ga, mut ba), (gb, bb)| {
                ga.iter_mut().zip(&gb).for_each(|(a, b)| *a += b);
                ba.iter_mut().zip(&bb).for_each(|(a, b)| *a += b);
                (ga, ba)
            },
        );
    let params = Shape::new([d]);
    [
        fused::f32_tensor(d_x, shape),
        fused::f32_tensor(d_gamma, params.clone()),
        fused::f32_tensor(d_beta, params),
    ]
}

impl FusedLayerNormBackend for Flex {
    fn fused_layer_norm(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f32,
    ) -> FlexTensor {
        forward(x, &gamma, &beta, epsilon).0
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = grads.consume::<Flex>(&ops.node);
        let computed = backward(&ops.state, upstream);
        for (parent, grad) in ops.parents.into_iter().zip(computed) {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedLayerNormBackend for Autodiff<Flex, C> {
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f32,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, saved) = forward(x, &gamma, &beta, epsilon);
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, &gamma, &beta, epsilon).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LayerNormConfig;
    use burn::tensor::{Device, Distribution, TensorData};
    use proptest::prelude::*;
    use tf_attention::compare::assert_close;

    fn data<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn hand_computed_row() {
        // x = [1, 3]: mean 2, var 1, x̂ = [−1, 1] (ε = 0); γ = [2, 3], β = [0.5, −0.5]
        // -> y = [−1.5, 2.5]. With ∂y = [1, 0]: g = [2, 0], mean(g) = 1,
        // mean(g ∘ x̂) = −1, ∂x = [2 − 1 − 1, 0 − 1 + 1] = [0, 0] (a shift-and-scale
        // invariance: ∂x is orthogonal to 1 and to x̂); ∂γ = ∂y ∘ x̂ = [−1, 0]; ∂β = [1, 0].
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 3.0], [1, 2]), &device)
            .require_grad();
        let mut norm = LayerNormConfig::new(2).with_epsilon(0.0).init(&device);
        norm.gamma = norm
            .gamma
            .map(|_| Tensor::from_floats([2.0, 3.0], &device).require_grad());
        norm.beta = norm
            .beta
            .map(|b| b.map(|_| Tensor::from_floats([0.5, -0.5], &device).require_grad()));
        let before = fused::calls(OP);
        let y = layer_norm(&norm, 0.0, x.clone());
        assert_close(&data(y.clone()), &[-1.5, 2.5], 1e-6, "y");
        let grads = (y * Tensor::from_floats([[1.0, 0.0]], &device))
            .sum()
            .backward();
        assert_eq!(fused::calls(OP).forward, before.forward + 1);
        assert_eq!(fused::calls(OP).backward, before.backward + 1);
        assert_close(&data(x.grad(&grads).unwrap()), &[0.0, 0.0], 1e-6, "∂x");
        let gamma = norm.gamma.val().grad(&grads).unwrap();
        assert_close(&data(gamma), &[-1.0, 0.0], 1e-6, "∂γ");
        let beta = norm.beta.as_ref().unwrap().val().grad(&grads).unwrap();
        assert_close(&data(beta), &[1.0, 0.0], 1e-6, "∂β");
    }

    /// Output and gradients of x, γ and β, fused or through burn-nn's module.
    fn run(
        norm: &LayerNorm,
        x: &Tensor<3>,
        upstream: &Tensor<3>,
        fused_path: bool,
    ) -> [Vec<f32>; 4] {
        let x = x.clone().require_grad();
        let y = if fused_path {
            layer_norm(norm, 1e-5, x.clone())
        } else {
            fused::composed_only(|| layer_norm(norm, 1e-5, x.clone()))
        };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        [
            data(y),
            data(x.grad(&grads).unwrap()),
            data(norm.gamma.val().grad(&grads).unwrap()),
            data(norm.beta.as_ref().unwrap().val().grad(&grads).unwrap()),
        ]
    }

    /// `∂x` of layer norm (ε = 1e-5) computed in f64, and per element the size of the terms
    /// that cancel in it (`r·(|g| + |mean(g)| + |x̂·mean(g ∘ x̂)|)` and the error x̂ brings): f32
    /// rounding is relative to those, not to `∂x` (with d = 2, `∂x` is 0 up to ε whatever the
    /// terms).
    fn exact_input_gradient(
        x: &[f32],
        gamma: &[f32],
        dy: &[f32],
        d: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let (mut out, mut size) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
        for (row, dy) in x.chunks(d).zip(dy.chunks(d)) {
            let n = d as f64;
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / n;
            let r = 1.0 / (var + 1e-5).sqrt();
            let xhat: Vec<f64> = row.iter().map(|&v| (f64::from(v) - mean) * r).collect();
            let g: Vec<f64> = dy
                .iter()
                .zip(gamma)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .collect();
            let mean_g = g.iter().sum::<f64>() / n;
            let mean_gx = g.iter().zip(&xhat).map(|(a, b)| a * b).sum::<f64>() / n;
            // x̂ itself carries f32 error of about r·max|x| ulps when the row's spread is small
            // against its values; it enters through x̂ and through mean(g ∘ x̂).
            let spread = r * row.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
            let mean_abs_g = g.iter().map(|g| g.abs()).sum::<f64>() / n;
            for (g, xh) in g.iter().zip(&xhat) {
                out.push((r * (g - mean_g - xh * mean_gx)) as f32);
                let terms = g.abs()
                    + mean_g.abs()
                    + mean_gx.abs() * (xh.abs() + spread)
                    + mean_abs_g * spread * xh.abs();
                size.push((r * terms) as f32);
            }
        }
        (out, size)
    }

    /// `|a − e| ≤ tol · (1 + size)` element by element.
    fn assert_within(actual: &[f32], expected: &[f32], size: &[f32], tol: f32, what: &str) {
        for (i, ((a, e), s)) in actual.iter().zip(expected).zip(size).enumerate() {
            assert!(
                (a - e).abs() <= tol * (1.0 + s),
                "{what} at {i}: {a} vs {e} (terms {s})"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn equals_burns_layer_norm_with_its_gradients(
            batch in 1usize..4,
            len in 1usize..70,
            d in 1usize..40,
            scale in 0.1f64..10.0,
        ) {
            let device = Device::flex().autodiff();
            let normal = Distribution::Normal(0.0, scale);
            let mut norm = LayerNormConfig::new(d).init(&device);
            norm.gamma = norm.gamma.map(|g| g.random_like(normal).require_grad());
            norm.beta = norm.beta.map(|b| b.map(|b| b.random_like(normal).require_grad()));
            let x = Tensor::<3>::random([batch, len, d], normal, &device);
            let upstream = Tensor::<3>::random([batch, len, d], Distribution::Normal(0.0, 1.0), &device);
            let fused_run = run(&norm, &x, &upstream, true);
            let composed = run(&norm, &x, &upstream, false);
            // ∂x cancels three terms of size |∂y·γ|·r, and the two f32 paths round differently
            // there: each is held against the f64 formula relative to those terms.
            let (exact, size) =
                exact_input_gradient(&data(x), &data(norm.gamma.val()), &data(upstream), d);
            assert_within(&fused_run[1], &exact, &size, 1e-5, "fused ∂x against f64");
            assert_within(&composed[1], &exact, &size, 1e-5, "composed ∂x against f64");
            for (what, (a, e)) in ["y", "∂γ", "∂β"]
                .iter()
                .zip([0, 2, 3].map(|i| (&fused_run[i], &composed[i])))
            {
                assert_close(a, e, 1e-5, what);
            }
        }
    }
}
