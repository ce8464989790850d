//! Scaled dot-product attention (§3.2.1): `Attention(Q, K, V) = softmax(QKᵀ / √d_k + M) V`,
//! where the mask `M` is `-inf` at blocked pairs.
//!
//! Two routes compute it: [`scaled_dot_product_attention`] materialises the weights (they can be
//! returned, inspected, or dropped out), and [`fused_attention`] calls burn's fused
//! `burn::tensor::module::attention`, which backends may implement without materialising the
//! `[q_len, k_len]` score matrix. Both give a fully masked query row an output of zeros.

use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Tensor};

use crate::fused_sdpa;
use crate::mask::AttentionMask;

/// Attention weights `softmax(QKᵀ / √d_k + M)`, each query row summing to 1 over its unblocked
/// keys, blocked keys getting exactly 0, and a row whose keys are all blocked getting all zeros.
///
/// # Shapes
/// - `query`: `[batch, n_heads, q_len, d_k]`
/// - `key`: `[batch, n_heads, k_len, d_k]`
/// - `mask`: `[batch, n_heads, q_len, k_len]`, `true` = blocked
/// - returns `[batch, n_heads, q_len, k_len]`
pub fn attention_weights(
    query: Tensor<4>,
    key: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> Tensor<4> {
    let [_, _, _, d_k] = query.dims();
    let scores = query
        .matmul(key.swap_dims(2, 3)) // [batch, n_heads, q_len, k_len]
        .div_scalar((d_k as f64).sqrt());
    masked_softmax(scores, mask)
}

/// Softmax over the last axis (keys) with `-inf` at blocked positions, safe for rows whose keys
/// are all blocked.
///
/// A naive softmax of an all `-inf` row computes `-inf - (-inf) = NaN`, then `0 / 0`. Clamping
/// the row maximum to the most negative finite value and the row sum to the smallest positive
/// normal value turns that row into zeros while leaving every other row unchanged (the same
/// remedy as burn's fused attention fallback).
///
/// # Shapes
/// - `scores`: `[batch, n_heads, q_len, k_len]`
/// - `mask`: `[batch, n_heads, q_len, k_len]`, `true` = blocked
/// - returns `[batch, n_heads, q_len, k_len]`
pub fn masked_softmax(scores: Tensor<4>, mask: Option<Tensor<4, Bool>>) -> Tensor<4> {
    let scores = match mask {
        Some(mask) => scores.mask_fill(mask, f32::NEG_INFINITY),
        None => scores,
    };
    let row_max = scores.clone().max_dim(3).clamp_min(f32::MIN); // [batch, n_heads, q_len, 1]
    let numerator = (scores - row_max).exp();
    let row_sum = numerator.clone().sum_dim(3).clamp_min(f32::MIN_POSITIVE); // [.., q_len, 1]
    numerator / row_sum
}

/// Scaled dot-product attention on the explicit path: returns the context and the weights.
///
/// # Shapes
/// - `query`: `[batch, n_heads, q_len, d_k]`
/// - `key`: `[batch, n_heads, k_len, d_k]`
/// - `value`: `[batch, n_heads, k_len, d_v]`
/// - `mask`: `[batch, n_heads, q_len, k_len]`, `true` = blocked
/// - returns (`[batch, n_heads, q_len, d_v]`, `[batch, n_heads, q_len, k_len]`)
pub fn scaled_dot_product_attention(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
) -> (Tensor<4>, Tensor<4>) {
    let weights = attention_weights(query, key, mask);
    (weights.clone().matmul(value), weights)
}

/// Scaled dot-product attention through a fused kernel; the weights are never returned.
///
/// On Flex with f32 tensors it is this crate's own kernel with its own backward
/// ([`fused_sdpa`](crate::fused_sdpa)), so training is fused too; elsewhere (and with a `pairs`
/// mask) burn's `module::attention`, which backends may fuse at inference. The causal part of
/// `mask` travels as a flag (bottom-right aligned, like [`causal_mask`](crate::causal_mask)), so
/// no dense future mask is built.
///
/// # Shapes
/// - `query`: `[batch, n_heads, q_len, d_k]`
/// - `key`: `[batch, n_heads, k_len, d_k]`
/// - `value`: `[batch, n_heads, k_len, d_v]`
/// - `mask.key_padding`: `[batch, k_len]`; `mask.pairs`: `[q_len, k_len]`
/// - returns `[batch, n_heads, q_len, d_v]`
pub fn fused_attention(
    query: Tensor<4>,
    key: Tensor<4>,
    value: Tensor<4>,
    mask: &AttentionMask,
) -> Tensor<4> {
    if fused_sdpa::applies(&query, mask) {
        return fused_sdpa::attention(query, key, value, mask);
    }
    let [batch, n_heads, q_len, _] = query.dims();
    let k_len = key.dims()[2];
    let options = AttentionModuleOptions {
        scale: None, // 1 / √d_k
        softcap: None,
        is_causal: mask.causal,
    };
    attention(
        query,
        key,
        value,
        mask.without_causal_4d([batch, n_heads, q_len, k_len]),
        None,
        options,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::{causal_mask, padding_mask_from_lengths};
    use burn::tensor::{Device, Distribution, TensorData};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn assert_close(actual: &[f32], expected: &[f32], tol: f32) {
        assert_eq!(actual.len(), expected.len());
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!((a - e).abs() <= tol, "at {i}: {a} vs {e} (tol {tol})");
        }
    }

    #[test]
    fn hand_computed_two_keys() {
        // d_k = 4, so scores are q·k / 2. q = [2,0,0,0]; k0 = [1,0,0,0], k1 = [0,0,0,0]
        // scores = [1, 0]; weights = [e/(e+1), 1/(e+1)] = [0.7310586, 0.2689414];
        // v0 = [1, 0], v1 = [0, 10] -> context = [0.7310586, 2.689414].
        let device = Device::flex();
        let t = |data: TensorData| Tensor::<4>::from_data(data, &device);
        let q = t(TensorData::new(vec![2.0f32, 0., 0., 0.], [1, 1, 1, 4]));
        let k = t(TensorData::new(
            vec![1.0f32, 0., 0., 0., 0., 0., 0., 0.],
            [1, 1, 2, 4],
        ));
        let v = t(TensorData::new(vec![1.0f32, 0., 0., 10.], [1, 1, 2, 2]));
        let (context, weights) = scaled_dot_product_attention(q, k, v, None);
        assert_close(&values(weights), &[0.731_058_6, 0.268_941_4], 1e-6);
        assert_close(&values(context), &[0.731_058_6, 2.689_414], 1e-5);
    }

    #[test]
    fn rows_sum_to_one_and_masked_keys_get_zero() {
        let device = Device::flex();
        let [batch, heads, len, d_k] = [2, 2, 5, 4];
        let q = Tensor::<4>::random([batch, heads, len, d_k], Distribution::Default, &device);
        let k = Tensor::<4>::random([batch, heads, len, d_k], Distribution::Default, &device);
        let mask = AttentionMask::causal()
            .with_key_padding(Some(padding_mask_from_lengths(&[5, 3], len, &device)))
            .to_tensor([batch, heads, len, len], &device);
        let weights = attention_weights(q, k, mask.clone());
        let sums = values(weights.clone().sum_dim(3));
        assert_close(&sums, &vec![1.0; batch * heads * len], 1e-6);
        let blocked = mask.unwrap().into_data().try_to_vec::<bool>().unwrap();
        for (w, b) in values(weights).iter().zip(blocked) {
            if b {
                assert_eq!(*w, 0.0);
            }
        }
    }

    #[test]
    fn causal_first_query_returns_first_value() {
        let device = Device::flex();
        let q = Tensor::<4>::random([1, 2, 4, 3], Distribution::Default, &device);
        let k = Tensor::<4>::random([1, 2, 4, 3], Distribution::Default, &device);
        let v = Tensor::<4>::random([1, 2, 4, 3], Distribution::Default, &device);
        let mask = causal_mask(4, 4, &device)
            .reshape([1, 1, 4, 4])
            .expand([1, 2, 4, 4]);
        let (context, _) = scaled_dot_product_attention(q, k, v.clone(), Some(mask));
        let first = |t: Tensor<4>| values(t.narrow(2, 0, 1));
        assert_close(&first(context), &first(v), 1e-6);
    }

    #[test]
    fn fully_masked_rows_give_zeros_not_nan_on_both_paths() {
        let device = Device::flex();
        let q = Tensor::<4>::random([2, 2, 3, 4], Distribution::Default, &device);
        let k = Tensor::<4>::random([2, 2, 3, 4], Distribution::Default, &device);
        let v = Tensor::<4>::random([2, 2, 3, 4], Distribution::Default, &device);
        // The second sequence is all padding.
        let mask = AttentionMask::padding(padding_mask_from_lengths(&[3, 0], 3, &device));
        let dense = mask.to_tensor([2, 2, 3, 3], &device);
        let (explicit, weights) =
            scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), dense);
        let fused = fused_attention(q, k, v, &mask);
        for out in [explicit.clone(), fused.clone(), weights.clone()] {
            let second = values(out.narrow(0, 1, 1));
            assert!(second.iter().all(|x| *x == 0.0), "{second:?}");
        }
        assert_close(&values(explicit), &values(fused), 1e-5);
    }

    #[test]
    fn fused_equals_explicit_with_causal_and_padding() {
        let device = Device::flex();
        for (q_len, k_len) in [(5, 5), (1, 5), (2, 5)] {
            let q = Tensor::<4>::random([2, 2, q_len, 4], Distribution::Default, &device);
            let k = Tensor::<4>::random([2, 2, k_len, 4], Distribution::Default, &device);
            let v = Tensor::<4>::random([2, 2, k_len, 4], Distribution::Default, &device);
            let mask = AttentionMask::causal().with_key_padding(Some(padding_mask_from_lengths(
                &[5, 4],
                k_len,
                &device,
            )));
            let dense = mask.to_tensor([2, 2, q_len, k_len], &device);
            let (explicit, _) =
                scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), dense);
            let fused = fused_attention(q, k, v, &mask);
            assert_close(&values(explicit), &values(fused), 1e-5);
        }
    }
}
