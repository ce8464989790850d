//! Scaled dot-product attention as one operation of the Flex CPU backend, with its own backward.
//!
//! Under autodiff burn runs attention as a decomposed graph (transpose, matmul, scale, mask,
//! max, subtract, exp, sum, divide, matmul), every step a pass over `[batch, heads, q, k]` that
//! autodiff records, and the head views Q, K and V are copied to contiguous memory on the way.
//! Here each (sequence, head) pair is one task on rayon's pool, and a task works through blocks
//! of [`QUERY_BLOCK`] query rows:
//!
//! ```text
//! forward   S = s·Q Kᵀ (gemm)   P = softmax(S + M) in place, keeping lse = log Σ exp   O = P V (gemm)
//! backward  S, P recomputed from lse   dV += Pᵀ dO   dP = dO Vᵀ   D = rowsum(P ∘ dP)
//!           dS = P ∘ (dP − D)   dQ = s·dS K   dK += s·dSᵀ Q
//! ```
//!
//! (FlashAttention-2's backward; `D` equals `rowsum(dO ∘ O)`, so the output need not be kept).
//! Only the log-sum-exp of each query row is saved, never the weights: memory is
//! `QUERY_BLOCK × k_len` floats per thread at any length. Q, K, V and dO are read through their
//! strides (the head views of a projection are not copied), and the output and the gradients
//! are written as `[batch, len, heads, d]` and returned as `[batch, heads, len, d]` views, so
//! that merging the heads back is free. A row whose keys are all blocked gives zeros and passes
//! no gradient, as the composed path's [`masked_softmax`](crate::sdpa::masked_softmax) does.
//!
//! [`fused_attention`](crate::sdpa::fused_attention) takes this path on Flex with f32 tensors
//! (and no arbitrary `pairs` mask), and burn's `module::attention` everywhere else.

use std::ops::Range;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::backend_extension;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::{BoolTensor, FloatTensor};
use burn::backend::{Backend, Dispatch, Flex, Shape};
use burn::tensor::{Bool, Tensor, TensorData};
use gemm::{Parallelism, gemm};
use rayon::prelude::*;

use crate::fused::{self, exp};
use crate::mask::AttentionMask;

/// Scaled dot-product attention as a backend operation: Flex computes it, autodiff over Flex
/// differentiates it.
#[backend_extension(Flex, Autodiff)]
pub trait FusedAttentionBackend: Backend {
    /// `softmax(Q Kᵀ / √d_k + M) V`, `M` blocking padded keys and, with `causal`, later keys
    /// (bottom-right aligned).
    ///
    /// # Shapes
    /// - `query`: `[batch, n_heads, q_len, d_k]`
    /// - `key`: `[batch, n_heads, k_len, d_k]`
    /// - `value`: `[batch, n_heads, k_len, d_v]`
    /// - `key_padding`: `[batch, k_len]`, `true` = blocked
    /// - returns `[batch, n_heads, q_len, d_v]`
    fn fused_scaled_dot_product_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        causal: bool,
    ) -> FloatTensor<Self>;
}

/// The name [`fused::calls`] counts this operation under.
pub const OP: &str = "attention";

/// Query rows a task handles at once: the scores of a block, `QUERY_BLOCK × k_len`, are the
/// only buffer that grows with the sequence.
pub const QUERY_BLOCK: usize = 64;

/// Whether the fused attention serves these tensors: f32 on Flex (see [`fused::applies`]) and
/// a mask of key padding and causality only.
pub fn applies(query: &Tensor<4>, mask: &AttentionMask) -> bool {
    mask.pairs.is_none() && fused::applies(&query.device(), query.dtype())
}

/// The fused attention; the caller checks [`applies`] first.
///
/// # Shapes
/// - `query`: `[batch, n_heads, q_len, d_k]`
/// - `key`: `[batch, n_heads, k_len, d_k]`
/// - `value`: `[batch, n_heads, k_len, d_v]`
/// - `mask.key_padding`: `[batch, k_len]`
/// - returns `[batch, n_heads, q_len, d_v]`
pub fn attention(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    mask: &AttentionMask,
) -> Tensor<4> {
    let [batch, _, k_len, _] = key.dims();
    let key_padding = mask.key_padding.clone().unwrap_or_else(|| {
        Tensor::<2, Bool>::from_data(
            TensorData::new(vec![false; batch * k_len], [batch, k_len]),
            &query.device(),
        )
    });
    Tensor::from_dispatch(
        <Dispatch as FusedAttentionBackend>::fused_scaled_dot_product_attention(
            query.into_dispatch(),
            key.into_dispatch(),
            value.into_dispatch(),
            key_padding.into_dispatch(),
            mask.causal,
        ),
    )
}

/// A `[batch, heads, rows, width]` f32 tensor read through its strides, the last one 1.
#[derive(Clone, Debug)]
struct Heads {
    tensor: FlexTensor,
    /// Strides of batch, head and row.
    strides: [isize; 3],
    shape: [usize; 4],
}

impl Heads {
    fn new(tensor: FlexTensor) -> Self {
        let unit_inner = {
            let strides = tensor.layout().strides();
            strides[3] == 1 && strides.iter().all(|&s| s >= 0)
        };
        let tensor = if unit_inner {
            tensor
        } else {
            tensor.to_contiguous()
        };
        let strides = tensor.layout().strides();
        let strides = [strides[0], strides[1], strides[2]];
        let shape = tensor.layout().shape().dims::<4>();
        Self {
            tensor,
            strides,
            shape,
        }
    }

    /// The first element of `row` of head `head` of sequence `b`.
    fn at(&self, b: usize, head: usize, row: usize) -> *const f32 {
        let offset = self.tensor.layout().start_offset() as isize
            + b as isize * self.strides[0]
            + head as isize * self.strides[1]
            + row as isize * self.strides[2];
        // In bounds: the layout describes elements of this buffer.
        self.tensor.storage::<f32>()[offset as usize..].as_ptr()
    }

    fn row_stride(&self) -> isize {
        self.strides[2]
    }
}

/// An output being written as `[batch, rows, heads, width]` by tasks that each own one
/// (sequence, head) pair.
struct Merged {
    data: Vec<f32>,
    shape: [usize; 4],
}

impl Merged {
    fn zeros([batch, heads, rows, width]: [usize; 4]) -> Self {
        Self {
            data: vec![0.0; batch * rows * heads * width],
            shape: [batch, heads, rows, width],
        }
    }

    fn writer(&mut self) -> MergedWriter {
        MergedWriter {
            ptr: self.data.as_mut_ptr(),
            shape: self.shape,
        }
    }

    /// The tensor `[batch, heads, rows, width]`, a view of memory laid out as
    /// `[batch, rows, heads, width]`.
    fn into_tensor(self) -> FlexTensor {
        let [batch, heads, rows, width] = self.shape;
        fused::f32_tensor(self.data, Shape::new([batch, rows, heads, width])).transpose(1, 2)
    }
}

/// Where a task writes its (sequence, head) pair of a [`Merged`] output.
#[derive(Clone, Copy)]
struct MergedWriter {
    ptr: *mut f32,
    shape: [usize; 4],
}

// Each task writes only the rows of its own (sequence, head) pair.
unsafe impl Send for MergedWriter {}
unsafe impl Sync for MergedWriter {}

impl MergedWriter {
    fn at(self, b: usize, head: usize, row: usize) -> *mut f32 {
        let [_, heads, rows, width] = self.shape;
        // In bounds for b < batch, head < heads, row < rows.
        unsafe { self.ptr.add(((b * rows + row) * heads + head) * width) }
    }

    fn row_stride(self) -> isize {
        (self.shape[1] * self.shape[3]) as isize
    }
}

/// What blocks a query from a key: the sequence's padded keys and, if causal, later keys.
#[derive(Clone, Debug)]
struct Blocked {
    /// `[batch, k_len]`, nonzero = padding.
    padding: Vec<u8>,
    causal: bool,
    q_len: usize,
    k_len: usize,
}

impl Blocked {
    fn new(key_padding: &FlexTensor, causal: bool, q_len: usize, k_len: usize) -> Self {
        let padding = key_padding.to_contiguous().storage::<u8>().to_vec();
        Self {
            padding,
            causal,
            q_len,
            k_len,
        }
    }

    /// The padding of sequence `b`'s keys, `None` if it has none.
    fn padding_of(&self, b: usize) -> Option<&[u8]> {
        let padding = &self.padding[b * self.k_len..(b + 1) * self.k_len];
        padding.iter().any(|&p| p != 0).then_some(padding)
    }

    /// How many keys query `row` may see before padding: all up to its own position when
    /// causal (bottom-right aligned: query `row` is position `k_len − q_len + row`).
    fn visible_keys(&self, row: usize) -> usize {
        if self.causal {
            (self.k_len + row + 1)
                .saturating_sub(self.q_len)
                .min(self.k_len)
        } else {
            self.k_len
        }
    }
}

/// `dst = beta · lhs × rhs` (or `dst += beta · lhs × rhs` with `accumulate`), `m × k` times
/// `k × n`, every operand given by a pointer and (row, column) strides; one thread.
///
/// # Safety
/// The pointers must address `m × k`, `k × n` and `m × n` matrices with those strides, and
/// `dst` must not overlap the others.
#[allow(clippy::too_many_arguments)]
unsafe fn matmul(
    [m, k, n]: [usize; 3],
    dst: (*mut f32, isize, isize),
    lhs: (*const f32, isize, isize),
    rhs: (*const f32, isize, isize),
    beta: f32,
    accumulate: bool,
) {
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.0,
            dst.2,
            dst.1,
            accumulate,
            lhs.0,
            lhs.2,
            lhs.1,
            rhs.0,
            rhs.2,
            rhs.1,
            1.0,
            beta,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Scores of query `rows` of pair (`b`, `head`) against every key, into `scores`
/// (`rows.len() × k_len`, row-major): `scale · Q Kᵀ`.
fn scores(
    query: &Heads,
    key: &Heads,
    (b, head): (usize, usize),
    rows: &Range<usize>,
    scale: f32,
    scores: &mut [f32],
) {
    let [_, _, k_len, d_k] = key.shape;
    unsafe {
        matmul(
            [rows.len(), d_k, k_len],
            (scores.as_mut_ptr(), k_len as isize, 1),
            (query.at(b, head, rows.start), query.row_stride(), 1),
            (key.at(b, head, 0), 1, key.row_stride()),
            scale,
            false,
        );
    }
}

/// The forward of pair (`b`, `head`): writes its output rows and the log-sum-exp of each query
/// row (`+∞` for a row whose keys are all blocked).
#[allow(clippy::too_many_arguments)]
fn forward_pair(
    (query, key, value): (&Heads, &Heads, &Heads),
    blocked: &Blocked,
    (b, head): (usize, usize),
    scale: f32,
    out: MergedWriter,
    lse: &mut [f32],
    buffer: &mut Vec<f32>,
) {
    let [_, _, q_len, _] = query.shape;
    let [_, _, k_len, d_v] = value.shape;
    let padding = blocked.padding_of(b);
    for start in (0..q_len).step_by(QUERY_BLOCK) {
        let rows = start..(start + QUERY_BLOCK).min(q_len);
        buffer.resize(rows.len() * k_len, 0.0);
        scores(query, key, (b, head), &rows, scale, buffer);
        for (r, row) in rows.clone().zip(buffer.chunks_mut(k_len.max(1))) {
            lse[r] = softmax_in_place(row, padding, blocked.visible_keys(r));
        }
        unsafe {
            matmul(
                [rows.len(), k_len, d_v],
                (out.at(b, head, rows.start), out.row_stride(), 1),
                (buffer.as_ptr(), k_len as isize, 1),
                (value.at(b, head, 0), value.row_stride(), 1),
                1.0,
                false,
            );
        }
    }
}

/// Turns one row of scores into weights over the first `visible` keys that are not padding
/// (every other key gets 0); returns the row's log-sum-exp, `+∞` if no key is visible.
/// `padding` is `None` for a sequence without padding. Each pass runs in lanes that vectorise.
fn softmax_in_place(row: &mut [f32], padding: Option<&[u8]>, visible: usize) -> f32 {
    let (seen, hidden) = row.split_at_mut(visible);
    hidden.fill(0.0);
    if let Some(padding) = padding {
        for (s, &pad) in seen.iter_mut().zip(padding) {
            if pad != 0 {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    let max = lanes(seen, f32::NEG_INFINITY, |m, s| m.max(*s), f32::max);
    if max == f32::NEG_INFINITY {
        seen.fill(0.0);
        return f32::INFINITY;
    }
    // exp(−∞ − max) is 0 for the padding.
    let sum = lanes(
        seen,
        0.0,
        |sum, s| {
            *s = exp(*s - max);
            sum + *s
        },
        |a, b| a + b,
    );
    let inverse = 1.0 / sum;
    seen.iter_mut().for_each(|s| *s *= inverse);
    max + sum.ln()
}

/// Recomputes the weights of one row from its scores and log-sum-exp (blocked keys get 0).
fn weights_in_place(row: &mut [f32], padding: Option<&[u8]>, visible: usize, lse: f32) {
    let (seen, hidden) = row.split_at_mut(visible);
    hidden.fill(0.0);
    seen.iter_mut().for_each(|s| *s = exp(*s - lse));
    if let Some(padding) = padding {
        for (s, &pad) in seen.iter_mut().zip(padding) {
            if pad != 0 {
                *s = 0.0;
            }
        }
    }
}

/// Lanes of a row reduction: wide enough for the compiler to keep them in vector registers.
const LANES: usize = 16;

/// Folds `row` with `step` in [`LANES`] independent accumulators (so that the loop vectorises;
/// float addition is not reordered otherwise), then combines them with `combine`.
fn lanes(
    row: &mut [f32],
    init: f32,
    step: impl Fn(f32, &mut f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, s) in acc.iter_mut().zip(chunk) {
            *a = step(*a, s);
        }
    }
    let rest = chunks.into_remainder().iter_mut().fold(init, &step);
    acc.into_iter().fold(rest, combine)
}

/// `Σ a·b` in lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// What the backward needs of the forward.
#[derive(Clone, Debug)]
struct Saved {
    query: Heads,
    key: Heads,
    value: Heads,
    blocked: Blocked,
    /// `[batch, heads, q_len]`.
    log_sum_exp: Vec<f32>,
}

fn scale_of(d_k: usize) -> f32 {
    1.0 / (d_k as f32).sqrt()
}

/// The attention and the log-sum-exp of every query row.
fn forward(
    query: FlexTensor,
    key: FlexTensor,
    value: FlexTensor,
    key_padding: &FlexTensor,
    causal: bool,
) -> (FlexTensor, Saved) {
    fused::count(OP, 1, 0);
    let (query, key, value) = (Heads::new(query), Heads::new(key), Heads::new(value));
    let [batch, heads, q_len, d_k] = query.shape;
    let [_, _, k_len, d_v] = value.shape;
    let blocked = Blocked::new(key_padding, causal, q_len, k_len);
    let scale = scale_of(d_k);
    let mut out = Merged::zeros([batch, heads, q_len, d_v]);
    let writer = out.writer();
    let mut log_sum_exp = vec![0.0f32; batch * heads * q_len];
    let task = |buffer: &mut Vec<f32>, (pair, lse): (usize, &mut [f32])| {
        let pair = (pair / heads, pair % heads);
        let inputs = (&query, &key, &value);
        forward_pair(inputs, &blocked, pair, scale, writer, lse, buffer);
    };
    let rows = q_len.max(1);
    if fused::worth_threads(batch * heads * q_len * k_len * (d_k + d_v)) {
        log_sum_exp
            .par_chunks_mut(rows)
            .enumerate()
            .for_each_init(Vec::new, task);
    } else {
        let mut buffer = Vec::new();
        for pair in log_sum_exp.chunks_mut(rows).enumerate() {
            task(&mut buffer, pair);
        }
    }
    let saved = Saved {
        query,
        key,
        value,
        blocked,
        log_sum_exp,
    };
    (out.into_tensor(), saved)
}

/// The gradients of Q, K and V for the output gradient `upstream`.
fn backward(saved: &Saved, upstream: FlexTensor) -> [FlexTensor; 3] {
    fused::count(OP, 0, 1);
    let d_out = Heads::new(upstream);
    let Saved {
        query,
        key,
        value,
        blocked,
        log_sum_exp,
    } = saved;
    let [batch, heads, q_len, d_k] = query.shape;
    let [_, _, k_len, d_v] = value.shape;
    let scale = scale_of(d_k);
    let mut d_query = Merged::zeros(query.shape);
    let mut d_key = Merged::zeros(key.shape);
    let mut d_value = Merged::zeros(value.shape);
    let (dq, dk, dv) = (d_query.writer(), d_key.writer(), d_value.writer());
    (0..batch * heads).into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(weights, d_weights), pair| {
            let (b, head) = (pair / heads, pair % heads);
            let padding = blocked.padding_of(b);
            let lse = &log_sum_exp[pair * q_len..(pair + 1) * q_len];
            for start in (0..q_len).step_by(QUERY_BLOCK) {
                let rows = start..(start + QUERY_BLOCK).min(q_len);
                let n = rows.len();
                weights.resize(n * k_len, 0.0);
                d_weights.resize(n * k_len, 0.0);
                scores(query, key, (b, head), &rows, scale, weights);
                for (r, row) in rows.clone().zip(weights.chunks_mut(k_len.max(1))) {
                    weights_in_place(row, padding, blocked.visible_keys(r), lse[r]);
                }
                unsafe {
                    // dV += Pᵀ dO
                    matmul(
                        [k_len, n, d_v],
                        (dv.at(b, head, 0), dv.row_stride(), 1),
                        (weights.as_ptr(), 1, k_len as isize),
                        (d_out.at(b, head, rows.start), d_out.row_stride(), 1),
                        1.0,
                        true,
                    );
                    // dP = dO Vᵀ
                    matmul(
                        [n, d_v, k_len],
                        (d_weights.as_mut_ptr(), k_len as isize, 1),
                        (d_out.at(b, head, rows.start), d_out.row_stride(), 1),
                        (value.at(b, head, 0), 1, value.row_stride()),
                        1.0,
                        false,
                    );
                }
                // dS = P ∘ (dP − rowsum(P ∘ dP))
                for (p, dp) in weights
                    .chunks(k_len.max(1))
                    .zip(d_weights.chunks_mut(k_len.max(1)))
                {
                    let row_dot = dot(p, dp);
                    for (dp, p) in dp.iter_mut().zip(p) {
                        *dp = p * (*dp - row_dot);
                    }
                }
                unsafe {
                    // dQ = s · dS K
                    matmul(
                        [n, k_len, d_k],
                        (dq.at(b, head, rows.start), dq.row_stride(), 1),
                        (d_weights.as_ptr(), k_len as isize, 1),
                        (key.at(b, head, 0), key.row_stride(), 1),
                        scale,
                        false,
                    );
                    // dK += s · dSᵀ Q
                    matmul(
                        [k_len, n, d_k],
                        (dk.at(b, head, 0), dk.row_stride(), 1),
                        (d_weights.as_ptr(), 1, k_len as isize),
                        (query.at(b, head, rows.start), query.row_stride(), 1),
                        scale,
                        true,
                    );
                }
            }
        },
    );
    [
        d_query.into_tensor(),
        d_key.into_tensor(),
        d_value.into_tensor(),
    ]
}

impl FusedAttentionBackend for Flex {
    fn fused_scaled_dot_product_attention(
        query: FlexTensor,
        key: FlexTensor,
        value: FlexTensor,
        key_padding: FlexTensor,
        causal: bool,
    ) -> FlexTensor {
        forward(query, key, value, &key_padding, causal).0
    }
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 3> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Saved, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let upstream = grads.consume::<Flex>(&ops.node);
        let [d_query, d_key, d_value] = backward(&ops.state, upstream);
        for (parent, grad) in ops.parents.into_iter().zip([d_query, d_key, d_value]) {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

impl<C: CheckpointStrategy> FusedAttentionBackend for Autodiff<Flex, C> {
    fn fused_scaled_dot_product_attention(
        query: FloatTensor<Self>,
        key: FloatTensor<Self>,
        value: FloatTensor<Self>,
        key_padding: BoolTensor<Self>,
        causal: bool,
    ) -> FloatTensor<Self> {
        let nodes = [query.node(), key.node(), value.node()];
        let inputs = (
            query.into_primitive(),
            key.into_primitive(),
            value.into_primitive(),
        );
        match AttentionBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (out, saved) = forward(inputs.0, inputs.1, inputs.2, &key_padding, causal);
                prep.finish(saved, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(forward(inputs.0, inputs.1, inputs.2, &key_padding, causal).0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::assert_close;
    use crate::mask::padding_mask_from_lengths;
    use crate::sdpa::{fused_attention, scaled_dot_product_attention};
    use burn::tensor::{Device, Distribution};
    use proptest::prelude::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// One attention problem: queries from `[batch, q_len, heads·d]` and keys and values from
    /// `[batch, k_len, 2·heads·d]` projections (so the heads are strided views, as in
    /// multi-head attention), key lengths, causality, and the gradient flowing into the output.
    struct Case {
        queries: Tensor<3>,
        keys_values: Tensor<3>,
        upstream: Tensor<4>,
        lengths: Vec<usize>,
        causal: bool,
        heads: usize,
    }

    impl Case {
        fn random(
            [batch, heads, q_len, k_len, d]: [usize; 5],
            lengths: Vec<usize>,
            causal: bool,
        ) -> Self {
            let device = Device::flex().autodiff();
            let normal = Distribution::Normal(0.0, 1.0);
            Self {
                queries: Tensor::random([batch, q_len, heads * d], normal, &device),
                keys_values: Tensor::random([batch, k_len, 2 * heads * d], normal, &device),
                upstream: Tensor::random([batch, heads, q_len, d], normal, &device),
                lengths,
                causal,
                heads,
            }
        }

        /// The output and the gradients of both projections, by the fused kernel or by the
        /// explicit path with a dense mask.
        fn run(&self, fused: bool) -> [Vec<f32>; 3] {
            let [batch, q_len, width] = self.queries.dims();
            let k_len = self.keys_values.dims()[1];
            let (heads, d) = (self.heads, width / self.heads);
            let queries = self.queries.clone().require_grad();
            let keys_values = self.keys_values.clone().require_grad();
            let split = |x: Tensor<3>, parts: usize, part: usize| {
                let len = x.dims()[1];
                x.reshape([batch, len, parts * heads, d])
                    .narrow(2, part * heads, heads)
                    .swap_dims(1, 2)
            };
            let (q, k, v) = (
                split(queries.clone(), 1, 0),
                split(keys_values.clone(), 2, 0),
                split(keys_values.clone(), 2, 1),
            );
            let device = q.device();
            let padding = padding_mask_from_lengths(&self.lengths, k_len, &device);
            let mut mask = AttentionMask::padding(padding);
            mask.causal = self.causal;
            let out = if fused {
                assert!(applies(&q, &mask));
                attention(q, k, v, &mask)
            } else {
                let dense = mask.to_tensor([batch, heads, q_len, k_len], &device);
                scaled_dot_product_attention(q, k, v, dense).0
            };
            let grads = (out.clone() * self.upstream.clone()).sum().backward();
            [
                values(out),
                values(queries.grad(&grads).unwrap()),
                values(keys_values.grad(&grads).unwrap()),
            ]
        }

        fn assert_fused_equals_explicit(&self) {
            let before = fused::calls(OP);
            let fused_run = self.run(true);
            let after = fused::calls(OP);
            assert_eq!(after.forward, before.forward + 1, "the fused forward ran");
            assert_eq!(
                after.backward,
                before.backward + 1,
                "the fused backward ran"
            );
            let explicit = self.run(false);
            for (what, (a, e)) in ["output", "∂Q", "∂K∂V"]
                .iter()
                .zip(fused_run.iter().zip(&explicit))
            {
                assert!(a.iter().all(|x| x.is_finite()), "{what}");
                assert_close(a, e, 1e-5, what);
            }
        }
    }

    #[test]
    fn hand_computed_two_keys() {
        // As sdpa's test: d_k = 4, q = [2,0,0,0], k0 = [1,0,0,0], k1 = 0: scores [1, 0],
        // weights [e/(e+1), 1/(e+1)]; v0 = [1, 0], v1 = [0, 10] -> [0.7310586, 2.689414].
        let device = Device::flex();
        let t = |values: Vec<f32>, shape: [usize; 4]| {
            Tensor::<4>::from_data(TensorData::new(values, shape), &device)
        };
        let q = t(vec![2.0, 0., 0., 0.], [1, 1, 1, 4]);
        let k = t(vec![1.0, 0., 0., 0., 0., 0., 0., 0.], [1, 1, 2, 4]);
        let v = t(vec![1.0, 0., 0., 0., 0., 10., 0., 0.], [1, 1, 2, 4]);
        let before = fused::calls(OP).forward;
        let out = values(attention(q, k, v, &AttentionMask::none()));
        assert_eq!(fused::calls(OP).forward, before + 1);
        assert_close(&out, &[0.731_058_6, 2.689_414, 0.0, 0.0], 1e-6, "context");
    }

    #[test]
    fn a_sequence_of_padding_gives_zeros_and_no_gradient() {
        let case = Case::random([2, 2, 3, 4, 3], vec![4, 0], false);
        let [out, d_queries, d_keys_values] = case.run(true);
        let half = |v: &[f32]| v[v.len() / 2..].to_vec();
        assert!(half(&out).iter().all(|&x| x == 0.0), "{out:?}");
        assert!(half(&d_queries).iter().all(|&x| x == 0.0));
        assert!(half(&d_keys_values).iter().all(|&x| x == 0.0));
        case.assert_fused_equals_explicit();
    }

    #[test]
    fn more_queries_than_one_block() {
        let len = 2 * QUERY_BLOCK + 22;
        Case::random([2, 2, len, len, 8], vec![len, len - 37], true).assert_fused_equals_explicit();
        Case::random([1, 1, len, 5, 4], vec![5], false).assert_fused_equals_explicit();
    }

    #[test]
    fn other_devices_and_pair_masks_keep_the_composed_path() {
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        let q = Tensor::<4>::zeros([1, 1, 2, 4], &ndarray);
        assert!(!applies(&q, &AttentionMask::causal()));
        let q = Tensor::<4>::zeros([1, 1, 2, 4], &Device::flex());
        assert!(applies(&q, &AttentionMask::causal()));
        let pairs = crate::mask::causal_mask(2, 2, &Device::flex());
        assert!(!applies(&q, &AttentionMask::none().with_pairs(Some(pairs))));
        let before = fused::calls(OP).forward;
        let out = fused::composed_only(|| {
            fused_attention(q.clone(), q.clone(), q.clone(), &AttentionMask::none())
        });
        assert_eq!(out.dims(), [1, 1, 2, 4]);
        assert_eq!(
            fused::calls(OP).forward,
            before,
            "composed_only turns it off"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn equals_the_explicit_path_with_its_gradients(
            batch in 1usize..4,
            heads in 1usize..4,
            q_len in 1usize..9,
            k_len in 1usize..9,
            d in 1usize..9,
            causal: bool,
            seed in any::<u64>(),
        ) {
            // Key lengths from 0 (a sequence of padding) to k_len; a causal mask needs a
            // position among the keys for every query.
            let causal = causal && q_len <= k_len;
            let lengths = (0..batch)
                .map(|b| (seed >> (8 * b)) as usize % (k_len + 1))
                .collect();
            Case::random([batch, heads, q_len, k_len, d], lengths, causal)
                .assert_fused_equals_explicit();
        }
    }
}
