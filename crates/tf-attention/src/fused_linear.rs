//! A linear map `y = x W + b`, optionally followed by ReLU, as one operation of the Flex CPU
//! backend with its own backward.
//!
//! burn's linear on Flex is right in its arithmetic (one gemm over the rows of every sequence)
//! but pays around it: each product's output is allocated as a zeroed byte vector that is then
//! copied into an aligned one (a memset and a memmove of the whole output, for the translation
//! model's `[2048, 8000]` logits 64 MiB each, forward and backward), the bias is a second pass
//! that allocates again, and ReLU a third with a recorded backward of its own. Here the output
//! is written once: the bias is placed in the rows and the gemm adds `x W` to it, then ReLU is
//! applied in place; the backward masks the incoming gradient by the output (`y > 0`), and
//! runs `∂x = g Wᵀ` and `∂W = xᵀ g` as gemms on the operands' strides (a transposed weight,
//! like the tied output projection's `Eᵀ`, is not copied), with `∂b` the column sums of `g`.
//! Gradients are computed only for the inputs that autodiff tracks.
//!
//! [`linear`] takes this path on Flex with f32 tensors and burn's `module::linear` (and
//! `relu`) everywhere else.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::backend_extension;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, DType, Dispatch, Flex, Shape};
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use crate::fused;

/// The linear map as a backend operation: Flex computes it, autodiff over Flex differentiates
/// it.
#[backend_extension(Flex, Autodiff)]
pub trait FusedLinearBackend: Backend {
    /// `x W + b` (`b` ignored unless `has_bias`), then ReLU if `relu`.
    ///
    /// # Shapes
    /// - `x`: `[..., d_in]`
    /// - `weight`: `[d_in, d_out]`
    /// - `bias`: `[d_out]`
    /// - returns `[..., d_out]`
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
        relu: bool,
    ) -> FloatTensor<Self>;
}

/// The name [`fused::calls`] counts this operation under.
pub const OP: &str = "linear";

/// What follows the affine map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Nothing: `x W + b`.
    Identity,
    /// `max(0, x W + b)`.
    Relu,
}

/// `x W + b`, then `activation`: fused on Flex with f32 tensors, burn's `module::linear` (and
/// `relu`) elsewhere.
///
/// # Shapes
/// - `x`: `[..., d_in]`
/// - `weight`: `[d_in, d_out]`
/// - `bias`: `[d_out]`
/// - returns `[..., d_out]`
pub fn linear<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    activation: Activation,
) -> Tensor<D> {
    if !(fused::applies(&x.device(), x.dtype()) && weight.dtype() == DType::F32) {
        let y = burn::tensor::module::linear(x, weight, bias);
        return match activation {
            Activation::Identity => y,
            Activation::Relu => relu(y),
        };
    }
    let has_bias = bias.is_some();
    // Without a bias the kernel reads nothing from this one-element stand-in.
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1], &x.device()));
    Tensor::from_dispatch(<Dispatch as FusedLinearBackend>::fused_linear(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        has_bias,
        activation == Activation::Relu,
    ))
}

/// A burn-nn [`Linear`](burn::nn::Linear) layer's map of `x`, then `activation`, through
/// [`linear`].
///
/// # Shapes
/// - `x`: `[..., d_in]`
/// - returns `[..., d_out]`
pub fn apply<const D: usize>(
    layer: &burn::nn::Linear,
    x: Tensor<D>,
    activation: Activation,
) -> Tensor<D> {
    linear(
        x,
        layer.weight.val(),
        layer.bias.as_ref().map(|b| b.val()),
        activation,
    )
}

/// A 2-D operand given by its data and (row, column) strides.
struct Matrix<'a> {
    data: &'a [f32],
    offset: usize,
    rows: usize,
    cols: usize,
    row_stride: isize,
    col_stride: isize,
}

impl<'a> Matrix<'a> {
    /// `tensor` (2-D, non-negative strides) as it lies in memory.
    fn of(tensor: &'a FlexTensor) -> Self {
        let layout = tensor.layout();
        let [rows, cols] = layout.shape().dims::<2>();
        let strides = layout.strides();
        Self {
            data: tensor.storage::<f32>(),
            offset: layout.start_offset(),
            rows,
            cols,
            row_stride: strides[0],
            col_stride: strides[1],
        }
    }

    fn transposed(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn ptr(&self) -> *const f32 {
        self.data[self.offset..].as_ptr()
    }
}

/// A 2-D view with non-negative strides: `tensor` itself, or a contiguous copy.
fn plain_2d(tensor: FlexTensor) -> FlexTensor {
    if tensor.layout().strides().iter().all(|&s| s >= 0) {
        tensor
    } else {
        tensor.to_contiguous()
    }
}

/// `x` as `[rows, d_in]` rows of its last axis (a copy only when `x` is not contiguous).
fn rows_of(x: FlexTensor) -> FlexTensor {
    let dims = x.layout().shape().to_vec();
    let d_in = *dims.last().expect("linear input has an axis");
    let rows = dims.iter().product::<usize>() / d_in.max(1);
    x.reshape(Shape::new([rows, d_in]))
}

/// `lhs × rhs`, `[m, k] × [k, n]`, into a new row-major buffer that starts as `init` rows
/// (added to) or uninitialised (overwritten). gemm spreads large products over rayon's pool.
fn product(lhs: &Matrix, rhs: &Matrix, init: Option<&[f32]>) -> Vec<f32> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions");
    let len = m * n;
    let mut out: Vec<f32> = match init {
        Some(row) => {
            let mut out = Vec::with_capacity(len);
            for _ in 0..m {
                out.extend_from_slice(row);
            }
            out
        }
        None => Vec::with_capacity(len),
    };
    // As burn-flex decides: gemm's own threads for large products, one thread below.
    let parallelism = if m * n * k >= 192 * 192 * 192 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    // SAFETY: the operands address `m × k` and `k × n` matrices through their strides; `out`
    // has room for `m × n` floats, which gemm writes all of (and reads only with `init`).
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            init.is_some(),
            lhs.ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr(),
            rhs.col_stride,
            rhs.row_stride,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        out.set_len(len);
    }
    out
}

/// Rows of work per rayon task in the element-wise passes.
const CHUNK: usize = 1 << 14;

/// What the backward needs of the forward.
#[derive(Clone, Debug)]
struct Saved {
    /// `[rows, d_in]`.
    x: FlexTensor,
    /// `[d_in, d_out]`, as given.
    weight: FlexTensor,
    /// The output `[rows, d_out]`, kept for ReLU's mask.
    output: Option<FlexTensor>,
    /// The shape of the original input.
    x_shape: Shape,
}

fn forward(
    x: FlexTensor,
    weight: FlexTensor,
    bias: &FlexTensor,
    has_bias: bool,
    relu: bool,
) -> (FlexTensor, Saved) {
    fused::count(OP, 1, 0);
    let x_shape = x.layout().shape().clone();
    let x = rows_of(x);
    let weight = plain_2d(weight);
    let bias = has_bias.then(|| bias.to_contiguous());
    let mut out = product(
        &Matrix::of(&x),
        &Matrix::of(&weight),
        bias.as_ref().map(|b| b.storage::<f32>()),
    );
    if relu {
        let clamp = |chunk: &mut [f32]| chunk.iter_mut().for_each(|y| *y = y.max(0.0));
        if fused::worth_threads(out.len()) {
            out.par_chunks_mut(CHUNK).for_each(clamp);
        } else {
            clamp(&mut out);
        }
    }
    let d_out = weight.layout().shape().dims::<2>()[1];
    let mut out_dims = x_shape.to_vec();
    *out_dims.last_mut().expect("an axis") = d_out;
    let rows = x.layout().shape().dims::<2>()[0];
    let output = fused::f32_tensor(out, Shape::new([rows, d_out]));
    let saved = Saved {
        x,
        weight,
        output: relu.then(|| output.clone()),
        x_shape,
    };
    (output.reshape(Shape::from(out_dims)), saved)
}

/// The gradients of `x`, `W` and `b` that are `wanted`, for the output gradient `upstream`.
fn backward(saved: &Saved, upstream: FlexTensor, wanted: [bool; 3]) -> [Option<FlexTensor>; 3] {
    fused::count(OP, 0, 1);
    let upstream = rows_of(upstream.to_contiguous());
    let [rows, d_out] = upstream.layout().shape().dims::<2>();
    let grad = match &saved.output {
        // ReLU: no gradient where the output was clamped to 0.
        Some(output) => {
            let mut grad = upstream.storage::<f32>().to_vec();
            grad.par_chunks_mut(CHUNK)
                .zip(output.storage::<f32>().par_chunks(CHUNK))
                .for_each(|(g, y)| {
                    for (g, &y) in g.iter_mut().zip(y) {
                        if y <= 0.0 {
                            *g = 0.0;
                        }
                    }
                });
            fused::f32_tensor(grad, Shape::new([rows, d_out]))
        }
        None => upstream,
    };
    let g = Matrix::of(&grad);
    let [want_x, want_weight, want_bias] = wanted;
    let d_x = want_x.then(|| {
        let w = Matrix::of(&saved.weight);
        let d_in = w.rows;
        fused::f32_tensor(product(&g, &w.transposed(), None), Shape::new([rows, d_in]))
            .reshape(saved.x_shape.clone())
    });
    let d_weight = want_weight.then(|| {
        let x = Matrix::of(&saved.x);
        let d_in = x.cols;
        fused::f32_tensor(
            product(&x.transposed(), &g, None),
            Shape::new([d_in, d_out]),
        )
    });
    let d_bias = want_bias.then(|| {
        fused::f32_tensor(
            column_sums(grad.storage::<f32>(), d_out),
            Shape::new([d_out]),
        )
    });
    [d_x, d_weight, d_bias]
}

/// Sums of the columns of a row-major `[rows, width]` matrix.
fn column_sums(data: &[f32], width: usize) -> Vec<f32> {
    let rows_per_task = (CHUNK / width.max(1)).max(1);
    data.par_chunks(rows_per_task * width.max(1))
        .map(|block| {
            let mut sums = vec![0.0f32; width];
            for row in block.chunks(width.max(1)) {
                for (s, &v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
            }
            sums
        })
        .reduce(
            || vec![0.0f32; width],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        )
}

impl FusedLinearBackend for Flex {
    fn fused_linear(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        has_bias: bool,
        relu: bool,
    ) -> FlexTensor {
        forward(x, weight, &bias, has_bias, relu).0
    }
}

#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = grads.consume::<Flex>(&ops.node);
        let wanted = [0, 1, 2].map(|i| ops.parents[i].is_some());
        let computed = backward(&ops.state, upstream, wanted);
        for (parent, grad) in ops.parents.into_iter().zip(computed) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedLinearBackend for Autodiff<Flex, C> {
    fn fused_linear(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        has_bias: bool,
        relu: bool,
    ) -> FloatTensor<Self> {
        // Without a bias its stand-in is not a parent: no gradient is computed for it.
        let bias_node = bias.node();
        let nodes = [x.node(), weight.node(), bias_node];
        let (x, weight, bias) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let prep = LinearBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(prep) => {
                let (out, saved) = forward(x, weight, &bias, has_bias, relu);
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(forward(x, weight, &bias, has_bias, relu).0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::assert_close;
    use burn::tensor::{Device, Distribution, TensorData};
    use proptest::prelude::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn hand_computed_with_relu() {
        // x = [1, 2], W = [[1, -1], [1, -2]], b = [0.5, 0.5]:
        // x W + b = [3.5, -4.5] -> ReLU [3.5, 0]. With ∂L/∂y = [1, 1]: the second output is
        // clamped, so ∂x = [1, 1] (W's first column), ∂W = [[1, 0], [2, 0]], ∂b = [1, 0].
        let device = Device::flex().autodiff();
        let t = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v, shape), &device).require_grad()
        };
        let x = t(vec![1.0, 2.0], [1, 2]);
        let w = t(vec![1.0, -1.0, 1.0, -2.0], [2, 2]);
        let b =
            Tensor::<1>::from_data(TensorData::new(vec![0.5f32, 0.5], [2]), &device).require_grad();
        let before = fused::calls(OP);
        let y = linear(x.clone(), w.clone(), Some(b.clone()), Activation::Relu);
        assert_eq!(values(y.clone()), [3.5, 0.0]);
        let grads = y.sum().backward();
        assert_eq!(fused::calls(OP).forward, before.forward + 1);
        assert_eq!(fused::calls(OP).backward, before.backward + 1);
        assert_eq!(values(x.grad(&grads).unwrap()), [1.0, 1.0]);
        assert_eq!(values(w.grad(&grads).unwrap()), [1.0, 0.0, 2.0, 0.0]);
        assert_eq!(values(b.grad(&grads).unwrap()), [1.0, 0.0]);
    }

    #[test]
    fn other_devices_keep_burns_linear() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        let x = Tensor::<2>::ones([2, 3], &device);
        let w = Tensor::<2>::ones([3, 4], &device);
        let before = fused::calls(OP).forward;
        let y = linear(x, w, None, Activation::Relu);
        assert_eq!(values(y), vec![3.0; 8]);
        assert_eq!(fused::calls(OP).forward, before);
    }

    /// Output and the gradients of x, W and b, fused or through burn's composed operations.
    fn run(
        (x, w, b): (&Tensor<3>, &Tensor<2>, Option<&Tensor<1>>),
        transposed: bool,
        activation: Activation,
        upstream: &Tensor<3>,
        fused_path: bool,
    ) -> Vec<Vec<f32>> {
        let x = x.clone().require_grad();
        let w = w.clone().require_grad();
        let b = b.map(|b| b.clone().require_grad());
        // A transposed weight is a strided view, as the tied output projection's Eᵀ.
        let weight = if transposed {
            w.clone().transpose()
        } else {
            w.clone()
        };
        let y = if fused_path {
            linear(x.clone(), weight, b.clone(), activation)
        } else {
            fused::composed_only(|| linear(x.clone(), weight, b.clone(), activation))
        };
        let grads = (y.clone() * upstream.clone()).sum().backward();
        let mut out = vec![
            values(y),
            values(x.grad(&grads).unwrap()),
            values(w.grad(&grads).unwrap()),
        ];
        if let Some(b) = b {
            out.push(values(b.grad(&grads).unwrap()));
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn equals_burns_linear_with_its_gradients(
            batch in 1usize..4,
            len in 1usize..7,
            d_in in 1usize..20,
            d_out in 1usize..20,
            with_bias: bool,
            transposed: bool,
            with_relu: bool,
        ) {
            let device = Device::flex().autodiff();
            let normal = Distribution::Normal(0.0, 1.0);
            let x = Tensor::<3>::random([batch, len, d_in], normal, &device);
            let w_shape = if transposed { [d_out, d_in] } else { [d_in, d_out] };
            let w = Tensor::<2>::random(w_shape, normal, &device);
            let b = Tensor::<1>::random([d_out], normal, &device);
            let upstream = Tensor::<3>::random([batch, len, d_out], normal, &device);
            let activation = if with_relu { Activation::Relu } else { Activation::Identity };
            let inputs = (&x, &w, with_bias.then_some(&b));
            let before = fused::calls(OP);
            let fused_run = run(inputs, transposed, activation, &upstream, true);
            prop_assert_eq!(fused::calls(OP).forward, before.forward + 1);
            let composed = run(inputs, transposed, activation, &upstream, false);
            prop_assert_eq!(fused::calls(OP).forward, before.forward + 1);
            for (what, (a, e)) in ["y", "∂x", "∂W", "∂b"].iter().zip(fused_run.iter().zip(&composed)) {
                assert_close(a, e, 1e-5, what);
            }
        }
    }
}
