//! Attention masks, in one polarity: `true` = blocked (the query may not attend to that key).
//!
//! This is the polarity of burn's `burn::tensor::module::attention`; every mask in the
//! workspace follows it. Masks are named by what they block: a *padding* mask blocks padded
//! keys, a *causal* (future) mask blocks keys after the query's own position.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

/// What a block of attention must not look at.
///
/// Kept symbolic (a key-padding mask, a causal flag and optional blocked query–key pairs) rather
/// than as one dense tensor, so that the fused attention kernel can take the causal part as its
/// `is_causal` option and never materialise a `[q_len, k_len]` mask for it;
/// [`AttentionMask::to_tensor`] builds the dense form for the explicit path.
#[derive(Clone, Debug, Default)]
pub struct AttentionMask {
    /// Keys that are padding, `true` = padding (blocked).
    ///
    /// # Shapes
    /// `[batch, k_len]`
    pub key_padding: Option<Tensor<2, Bool>>,
    /// Block every key after the query's position. Aligned at the bottom-right corner: with
    /// `q_len < k_len` (cached decoding) query `i` is position `k_len - q_len + i`.
    pub causal: bool,
    /// Query–key pairs blocked in every sequence and head, `true` = blocked: an arbitrary
    /// pattern, like PyTorch's `attn_mask` (the causal pattern is better said with `causal`).
    ///
    /// # Shapes
    /// `[q_len, k_len]`
    pub pairs: Option<Tensor<2, Bool>>,
}

impl AttentionMask {
    /// Nothing is blocked.
    pub fn none() -> Self {
        Self::default()
    }

    /// Block padded keys.
    ///
    /// # Shapes
    /// - `key_padding`: `[batch, k_len]`, `true` = padding.
    pub fn padding(key_padding: Tensor<2, Bool>) -> Self {
        Self {
            key_padding: Some(key_padding),
            ..Self::default()
        }
    }

    /// Block future keys (and, with [`with_key_padding`](Self::with_key_padding), padding).
    pub fn causal() -> Self {
        Self {
            causal: true,
            ..Self::default()
        }
    }

    /// The same mask, also blocking the given padded keys.
    ///
    /// # Shapes
    /// - `key_padding`: `[batch, k_len]`, `true` = padding.
    pub fn with_key_padding(mut self, key_padding: Option<Tensor<2, Bool>>) -> Self {
        self.key_padding = key_padding;
        self
    }

    /// The same mask, also blocking the given query–key pairs in every sequence and head.
    ///
    /// # Shapes
    /// - `pairs`: `[q_len, k_len]`, `true` = blocked.
    pub fn with_pairs(mut self, pairs: Option<Tensor<2, Bool>>) -> Self {
        self.pairs = pairs;
        self
    }

    /// Whether the mask blocks anything at all.
    pub fn is_empty(&self) -> bool {
        self.key_padding.is_none() && !self.causal && self.pairs.is_none()
    }

    /// Everything but the causal part (key padding and blocked pairs), broadcast to one dense
    /// mask: what the fused kernel takes besides its `is_causal` flag.
    ///
    /// # Shapes
    /// returns `[batch, n_heads, q_len, k_len]`
    pub fn without_causal_4d(
        &self,
        [batch, n_heads, q_len, k_len]: [usize; 4],
    ) -> Option<Tensor<4, Bool>> {
        let padding = self.key_padding.as_ref().map(|pad| {
            pad.clone()
                .reshape([batch, 1, 1, k_len]) // [batch, 1, 1, k_len]
                .expand([batch, n_heads, q_len, k_len])
        });
        let pairs = self.pairs.as_ref().map(|pairs| {
            pairs
                .clone()
                .reshape([1, 1, q_len, k_len]) // [1, 1, q_len, k_len]
                .expand([batch, n_heads, q_len, k_len])
        });
        match (padding, pairs) {
            (Some(p), Some(q)) => Some(p.bool_or(q)),
            (p, q) => p.or(q),
        }
    }

    /// The whole mask as one dense tensor, or `None` when nothing is blocked.
    ///
    /// # Shapes
    /// returns `[batch, n_heads, q_len, k_len]`
    pub fn to_tensor(
        &self,
        [batch, n_heads, q_len, k_len]: [usize; 4],
        device: &Device,
    ) -> Option<Tensor<4, Bool>> {
        let rest = self.without_causal_4d([batch, n_heads, q_len, k_len]);
        let future = self.causal.then(|| {
            causal_mask(q_len, k_len, device)
                .reshape([1, 1, q_len, k_len]) // [1, 1, q_len, k_len]
                .expand([batch, n_heads, q_len, k_len])
        });
        match (rest, future) {
            (Some(p), Some(f)) => Some(p.bool_or(f)),
            (p, f) => p.or(f),
        }
    }
}

/// Blocks the future: `mask[i][j]` is `true` when key `j` comes after query `i`.
///
/// Aligned at the bottom-right corner, so that `q_len < k_len` describes the last `q_len`
/// positions of a sequence of `k_len` (one decoding step against a key/value cache); the query
/// `i` sits at position `k_len - q_len + i`. This is the alignment of burn's fused `is_causal`.
///
/// # Shapes
/// returns `[q_len, k_len]`
///
/// # Panics
/// If `q_len > k_len`: a query would have no position among the keys.
pub fn causal_mask(q_len: usize, k_len: usize, device: &Device) -> Tensor<2, Bool> {
    assert!(
        q_len <= k_len,
        "causal mask needs q_len <= k_len, got q_len {q_len} and k_len {k_len}"
    );
    // `tril_mask` is true strictly above the diagonal shifted by `offset`.
    Tensor::<2, Bool>::tril_mask([q_len, k_len], (k_len - q_len) as i64, device)
}

/// Blocks the positions at or past each sequence's length.
///
/// # Shapes
/// returns `[batch, max_len]` with `batch = lengths.len()`; `true` = padding.
///
/// # Panics
/// If a length exceeds `max_len`.
pub fn padding_mask_from_lengths(
    lengths: &[usize],
    max_len: usize,
    device: &Device,
) -> Tensor<2, Bool> {
    let mut blocked = Vec::with_capacity(lengths.len() * max_len);
    for &len in lengths {
        assert!(
            len <= max_len,
            "sequence length {len} exceeds max_len {max_len}"
        );
        blocked.extend((0..max_len).map(|pos| pos >= len));
    }
    Tensor::from_data(TensorData::new(blocked, [lengths.len(), max_len]), device)
}

/// Blocks the positions holding `pad_id`.
///
/// # Shapes
/// - `ids`: `[batch, seq_len]`
/// - returns `[batch, seq_len]`, `true` = padding.
pub fn padding_mask_from_ids(ids: Tensor<2, Int>, pad_id: usize) -> Tensor<2, Bool> {
    ids.equal_elem(pad_id as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bools<const D: usize>(mask: Tensor<D, Bool>) -> Vec<bool> {
        mask.into_data().try_to_vec::<bool>().unwrap()
    }

    #[test]
    fn causal_mask_blocks_the_strict_upper_triangle() {
        let device = Device::flex();
        let (t, f) = (true, false);
        assert_eq!(
            bools(causal_mask(3, 3, &device)),
            [f, t, t, f, f, t, f, f, f]
        );
    }

    #[test]
    fn causal_mask_is_bottom_right_aligned_for_cached_steps() {
        let device = Device::flex();
        // One new query at position 3 of 4 sees everything; two queries at 2 and 3.
        assert_eq!(bools(causal_mask(1, 4, &device)), [false; 4]);
        let (t, f) = (true, false);
        assert_eq!(bools(causal_mask(2, 4, &device)), [f, f, f, t, f, f, f, f]);
    }

    #[test]
    fn padding_masks_from_lengths_and_ids_agree() {
        let device = Device::flex();
        let from_lengths = padding_mask_from_lengths(&[3, 1], 3, &device);
        let ids = Tensor::<2, Int>::from_ints([[5, 6, 7], [5, 0, 0]], &device);
        let from_ids = padding_mask_from_ids(ids, 0);
        let (t, f) = (true, false);
        assert_eq!(bools(from_lengths), [f, f, f, f, t, t]);
        assert_eq!(bools(from_ids), [f, f, f, f, t, t]);
    }

    #[test]
    fn dense_mask_combines_padding_and_future() {
        let device = Device::flex();
        let pad = padding_mask_from_lengths(&[2], 3, &device);
        let mask = AttentionMask::causal()
            .with_key_padding(Some(pad))
            .to_tensor([1, 2, 3, 3], &device)
            .unwrap();
        let (t, f) = (true, false);
        let one_head = [f, t, t, f, f, t, f, f, t];
        let expected: Vec<bool> = one_head.iter().chain(one_head.iter()).copied().collect();
        assert_eq!(bools(mask), expected);
        assert!(
            AttentionMask::none()
                .to_tensor([1, 1, 2, 2], &device)
                .is_none()
        );
    }

    #[test]
    fn blocked_pairs_join_the_padding_in_every_head() {
        let device = Device::flex();
        let (t, f) = (true, false);
        let pairs =
            Tensor::<2, Bool>::from_data(TensorData::new(vec![f, t, f, f], [2, 2]), &device);
        let pad = padding_mask_from_lengths(&[2, 1], 2, &device);
        let mask = AttentionMask::padding(pad).with_pairs(Some(pairs));
        assert!(!mask.is_empty());
        let dense = bools(mask.to_tensor([2, 1, 2, 2], &device).unwrap());
        // Sequence 0 (no padding): the pair pattern alone; sequence 1: key 1 padded as well.
        assert_eq!(dense, [f, t, f, f, f, t, f, t]);
    }
}
