//! Multi-head attention (§3.2.2): `MultiHead(Q, K, V) = Concat(head_1, …, head_h) W^O` with
//! `head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V)`.
//!
//! The `h` per-head projections of size `d_k = d_model / h` are one `d_model × d_model` matrix
//! each for Q, K and V, stored side by side as one `in_proj` of `d_model × 3·d_model` (the layout
//! of PyTorch's `nn.MultiheadAttention.in_proj_weight`, transposed). Self-attention projects Q, K
//! and V in one matmul; cross-attention projects the query with the first third and the memory
//! with the other two. The heads are a reshape, and all of them attend in one batched matmul.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, Initializer, Linear, LinearConfig};
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{ConfigError, check_nonzero, check_probability};
use crate::fused_linear::{self, Activation};
use crate::hooks::{AttentionBlock, AttentionSite, LayerHooks, LayerSite};
use crate::mask::AttentionMask;
use crate::rotary::{RotaryEncoding, RotaryEncodingConfig};
use crate::sdpa::{attention_weights, fused_attention};

/// Configuration of [`MultiHeadAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadAttentionConfig {
    /// Model width `d_model`; must be divisible by `n_heads` unless `head_width` is given.
    pub d_model: usize,
    /// Number of heads `h`.
    pub n_heads: usize,
    /// Width of one head, `d_k = d_v`. Default: `d_model / n_heads`. Given explicitly by an
    /// attention whose heads were pruned: fewer heads of the original width.
    #[config(default = "None")]
    pub head_width: Option<usize>,
    /// Dropout on the attention weights. Default: 0.0, as in the paper, which drops sublayer
    /// outputs only (§5.4). A non-zero value makes training take the explicit path, since the
    /// fused kernel has no dropout.
    #[config(default = 0.0)]
    pub attention_dropout: f64,
    /// Biases on the four projections. Default: true.
    #[config(default = true)]
    pub bias: bool,
    /// Rotary position embedding ([`rotary`](crate::rotary)) of the queries and keys in
    /// [`self_attention`](MultiHeadAttention::self_attention), covering this many positions.
    /// Default: none (positions, if any, were added to the embeddings). Cross-attention and
    /// [`forward`](MultiHeadAttention::forward) never rotate: their queries and keys come from
    /// different sequences, whose relative position means nothing.
    #[config(default = "None")]
    pub rotary_max_len: Option<usize>,
}

impl MultiHeadAttentionConfig {
    /// Checks that the config builds a working module.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "MultiHeadAttentionConfig";
        check_nonzero(NAME, "d_model", self.d_model)?;
        check_nonzero(NAME, "n_heads", self.n_heads)?;
        if let Some(width) = self.head_width {
            check_nonzero(NAME, "head_width", width)?;
        } else if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "d_model ({}) must be divisible by n_heads ({})",
                    self.d_model, self.n_heads
                ),
            ));
        }
        check_probability(NAME, "attention_dropout", self.attention_dropout)?;
        match self.rotary() {
            Some(rotary) => rotary.validate(),
            None => Ok(()),
        }
    }

    /// Width of one head, `d_k`.
    pub fn head_width(&self) -> usize {
        // 0 for a config without heads, which validation refuses.
        self.head_width
            .unwrap_or_else(|| self.d_model.checked_div(self.n_heads).unwrap_or(0))
    }

    /// The rotary encoding's config, when the self-attention rotates.
    pub fn rotary(&self) -> Option<RotaryEncodingConfig> {
        self.rotary_max_len
            .map(|max_len| RotaryEncodingConfig::new(self.head_width(), max_len))
    }

    /// Builds the module, or says why the config cannot.
    pub fn try_init(
        &self,
        device: &burn::tensor::Device,
    ) -> Result<MultiHeadAttention, ConfigError> {
        self.validate()?;
        let d_k = self.head_width();
        let width = self.n_heads * d_k;
        // Glorot-uniform projections, as PyTorch's nn.MultiheadAttention initialises them.
        let projection = |d_input, d_output| {
            LinearConfig::new(d_input, d_output)
                .with_bias(self.bias)
                .with_initializer(Initializer::XavierUniform { gain: 1.0 })
                .init(device)
        };
        Ok(MultiHeadAttention {
            in_proj: projection(self.d_model, 3 * width),
            out_proj: projection(width, self.d_model),
            attention_dropout: DropoutConfig::new(self.attention_dropout).init(),
            rotary: self.rotary().map(|rotary| rotary.init(device)),
            n_heads: self.n_heads,
            d_k,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails, with its message.
    pub fn init(&self, device: &burn::tensor::Device) -> MultiHeadAttention {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// Multi-head attention with W^Q, W^K, W^V (one fused `in_proj`) and W^O (`out_proj`).
#[derive(Module, Debug)]
pub struct MultiHeadAttention {
    /// `[W^Q | W^K | W^V]`, `d_model → 3·h·d_k` (`3·d_model` unless heads were pruned).
    pub in_proj: Linear,
    /// `W^O`, `h·d_k → d_model`.
    pub out_proj: Linear,
    /// Dropout on the attention weights (off by default).
    pub attention_dropout: Dropout,
    /// Rotates the queries and keys of self-attention by their positions (RoPE); none by
    /// default.
    pub rotary: Option<RotaryEncoding>,
    /// Number of heads `h`.
    pub n_heads: usize,
    /// Width of one head, `d_k = d_v` (`d_model / h` unless heads were pruned).
    pub d_k: usize,
}

/// The three matrices of `in_proj`, in their order.
#[derive(Clone, Copy, Debug)]
enum Projection {
    Query = 0,
    Key = 1,
    Value = 2,
}

/// Keys and values, projected and split into heads.
#[derive(Clone, Debug)]
pub struct KeyValue {
    /// # Shapes
    /// `[batch, n_heads, k_len, d_k]`
    pub key: Tensor<4>,
    /// # Shapes
    /// `[batch, n_heads, k_len, d_k]`
    pub value: Tensor<4>,
}

impl KeyValue {
    /// Number of key positions.
    pub fn len(&self) -> usize {
        self.key.dims()[2]
    }

    /// Whether there are no key positions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the batch rows `indices` (in that order), e.g. the surviving beams.
    ///
    /// # Shapes
    /// - `indices`: `[new_batch]`
    pub fn select_batch(self, indices: Tensor<1, Int>) -> Self {
        Self {
            key: self.key.select(0, indices.clone()),
            value: self.value.select(0, indices),
        }
    }
}

/// The keys and values a self-attention has computed for the positions decoded so far.
///
/// An explicit value the caller owns and passes back each step (`modules stay &self`): start
/// with [`SelfAttentionCache::default`], and each cached call appends the new positions.
#[derive(Clone, Debug, Default)]
pub struct SelfAttentionCache {
    key_value: Option<KeyValue>,
}

impl SelfAttentionCache {
    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.key_value.as_ref().map_or(0, KeyValue::len)
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the batch rows `indices` (in that order), e.g. the surviving beams.
    ///
    /// # Shapes
    /// - `indices`: `[new_batch]`
    pub fn select_batch(&mut self, indices: Tensor<1, Int>) {
        self.key_value = self.key_value.take().map(|kv| kv.select_batch(indices));
    }

    /// Appends the new positions and returns all keys and values so far.
    fn extend(&mut self, new: KeyValue) -> KeyValue {
        let all = match self.key_value.take() {
            None => new,
            Some(old) => KeyValue {
                key: Tensor::cat(vec![old.key, new.key], 2), // [batch, n_heads, len + new, d_k]
                value: Tensor::cat(vec![old.value, new.value], 2),
            },
        };
        self.key_value = Some(all.clone());
        all
    }
}

/// Whether an attention call also returns its weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weights {
    /// The context only: burn's fused kernel computes it (unless attention dropout is active),
    /// and no `[batch, n_heads, q_len, k_len]` matrix is kept.
    #[default]
    Omit,
    /// The context and the weights, on the explicit path (for inspection).
    Return,
}

/// What an attention block returns.
#[derive(Clone, Debug)]
pub struct AttentionOutput {
    /// # Shapes
    /// `[batch, q_len, d_model]`
    pub context: Tensor<3>,
    /// The attention weights, with [`Weights::Return`].
    ///
    /// # Shapes
    /// `[batch, n_heads, q_len, k_len]`
    pub weights: Option<Tensor<4>>,
}

impl MultiHeadAttention {
    /// Width of all heads side by side, `h·d_k`: `d_model`, unless heads were pruned.
    pub fn heads_width(&self) -> usize {
        self.n_heads * self.d_k
    }

    /// The same attention without the heads not in `keep` (indices of heads, in the order
    /// kept): their columns of W^Q, W^K, W^V and their rows of W^O are removed, so the smaller
    /// module computes exactly what this one computes with those heads' outputs zeroed (see
    /// [`gate_heads`](Self::gate_heads)).
    ///
    /// # Panics
    /// If `keep` is empty or names a head that does not exist.
    pub fn prune_heads(&self, keep: &[usize]) -> Self {
        assert!(!keep.is_empty(), "an attention keeps at least one head");
        let width = self.heads_width();
        let head_columns = |offset: usize| {
            keep.iter().flat_map(move |&head| {
                assert!(head < self.n_heads, "head {head} of {}", self.n_heads);
                let start = offset + head * self.d_k;
                (start..start + self.d_k).map(|c| c as i64)
            })
        };
        let device = self.in_proj.weight.device();
        let index = |columns: Vec<i64>| {
            let n = columns.len();
            Tensor::<1, Int>::from_data(TensorData::new(columns, [n]), &device)
        };
        let qkv = index((0..3).flat_map(|part| head_columns(part * width)).collect());
        let rows = index(head_columns(0).collect());
        // New leaves (`detach`), so that the pruned module trains like any other.
        let select = |linear: &Linear, dim: usize, index: Tensor<1, Int>, bias: bool| Linear {
            weight: Param::from_tensor(linear.weight.val().select(dim, index.clone()).detach()),
            bias: linear.bias.as_ref().map(|b| {
                let b = if bias {
                    b.val().select(0, index)
                } else {
                    b.val()
                };
                Param::from_tensor(b.detach())
            }),
        };
        Self {
            in_proj: select(&self.in_proj, 1, qkv, true), // [d_model, 3·kept·d_k]
            out_proj: select(&self.out_proj, 0, rows, false), // [kept·d_k, d_model]
            attention_dropout: self.attention_dropout.clone(),
            rotary: self.rotary.clone(),
            n_heads: keep.len(),
            d_k: self.d_k,
        }
    }

    /// The same attention with head `i`'s output multiplied by `gates[i]` before W^O (the gates
    /// of Michel et al., 2019): rows of W^O scaled. All gates 1 leave the module unchanged; a
    /// gate 0 silences its head.
    ///
    /// # Shapes
    /// - `gates`: `[n_heads]`
    pub fn gate_heads(&self, gates: Tensor<1>) -> Self {
        let scale = gates
            .reshape([self.n_heads, 1])
            .expand([self.n_heads, self.d_k])
            .reshape([self.heads_width(), 1]); // [h·d_k, 1], one gate per row of W^O
        let mut gated = self.clone();
        gated.out_proj.weight = Param::from_tensor((self.out_proj.weight.val() * scale).detach());
        gated
    }

    /// `∂L/∂g_i` at gates 1, for each head, from the gradient of the loss with respect to W^O:
    /// with `W^O_g = diag(g) W^O` by rows, `∂L/∂g_i = Σ_{rows r of head i} Σ_c W^O[r,c] · G[r,c]`.
    ///
    /// # Shapes
    /// - `out_proj_grad`: `[h·d_k, d_model]`, on the device of this module's (non-autodiff)
    ///   weights
    /// - returns `[n_heads]`
    pub fn head_gate_gradients(&self, out_proj_grad: Tensor<2>) -> Tensor<1> {
        let weight = self.out_proj.weight.val().inner(); // [h·d_k, d_model]
        (weight * out_proj_grad)
            .sum_dim(1) // [h·d_k, 1]
            .reshape([self.n_heads, self.d_k])
            .sum_dim(1) // [n_heads, 1]
            .reshape([self.n_heads])
    }

    /// Self-attention of `x` over itself (and over the cached positions, with a cache).
    ///
    /// With `cache`, `x` holds only the new positions; their keys and values are appended to the
    /// cache and the queries attend to everything cached. A causal `mask` is bottom-right
    /// aligned, so it blocks the right keys in both forms. A `key_padding` mask must then cover
    /// all `cache.len() + seq_len` keys. With a rotary encoding, the new queries and keys are
    /// rotated by their positions `cache.len() ..` before the keys are cached.
    ///
    /// Weights are returned with [`Weights::Return`]; otherwise, unless attention dropout is
    /// active, burn's fused kernel computes the context.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`
    /// - returns context `[batch, seq_len, d_model]`, weights `[batch, n_heads, seq_len, k_len]`
    pub fn self_attention(
        &self,
        x: Tensor<3>,
        mask: &AttentionMask,
        cache: Option<&mut SelfAttentionCache>,
        weights: Weights,
    ) -> AttentionOutput {
        self.self_attention_hooked(x, mask, cache, weights, None)
    }

    /// [`self_attention`](Self::self_attention) with the layer's hooks at `attn.{q,k,v}` (the
    /// new positions, after RoPE, before they are cached), `attn.pattern`, `attn.z` and
    /// `attn.out`. A hooked pattern takes the explicit path.
    ///
    /// # Shapes
    /// As [`self_attention`](Self::self_attention).
    pub fn self_attention_hooked(
        &self,
        x: Tensor<3>,
        mask: &AttentionMask,
        cache: Option<&mut SelfAttentionCache>,
        weights: Weights,
        hooks: Option<&mut LayerHooks<'_>>,
    ) -> AttentionOutput {
        let mut hooks = hooks.map(|h| (h, AttentionBlock::SelfAttention));
        // 1. Q, K and V in one matmul, then split into heads.
        let [query, key, value] =
            self.split_heads(fused_linear::apply(&self.in_proj, x, Activation::Identity)); // x: [batch, seq_len, 3·d_model]
        let (query, key) = match &self.rotary {
            Some(rotary) => {
                let offset = cache.as_ref().map_or(0, |cache| cache.len());
                (rotary.apply(query, offset), rotary.apply(key, offset))
            }
            None => (query, key),
        };
        let query = hook4(&mut hooks, AttentionSite::Query, query);
        let new = KeyValue {
            key: hook4(&mut hooks, AttentionSite::Key, key),
            value: hook4(&mut hooks, AttentionSite::Value, value),
        };
        // 2. With a cache, attend to every position seen so far.
        let key_value = match cache {
            Some(cache) => cache.extend(new),
            None => new,
        };
        self.attend(query, key_value, mask, weights, hooks)
    }

    /// Cross-attention of `x` over keys and values projected once by
    /// [`project_key_value`](Self::project_key_value) (the encoder output, in a decoder).
    ///
    /// # Shapes
    /// - `x`: `[batch, q_len, d_model]`
    /// - `memory`: key and value `[batch, n_heads, k_len, d_k]`
    /// - returns context `[batch, q_len, d_model]`, weights `[batch, n_heads, q_len, k_len]`
    pub fn cross_attention(
        &self,
        x: Tensor<3>,
        memory: &KeyValue,
        mask: &AttentionMask,
        weights: Weights,
    ) -> AttentionOutput {
        self.cross_attention_hooked(x, memory, mask, weights, None)
    }

    /// [`cross_attention`](Self::cross_attention) with the layer's hooks at
    /// `cross.{q,k,v,pattern,z,out}`.
    ///
    /// # Shapes
    /// As [`cross_attention`](Self::cross_attention).
    pub fn cross_attention_hooked(
        &self,
        x: Tensor<3>,
        memory: &KeyValue,
        mask: &AttentionMask,
        weights: Weights,
        hooks: Option<&mut LayerHooks<'_>>,
    ) -> AttentionOutput {
        let mut hooks = hooks.map(|h| (h, AttentionBlock::CrossAttention));
        let [query] = self.split_heads(self.project(x, Projection::Query, 1));
        let query = hook4(&mut hooks, AttentionSite::Query, query);
        let memory = match hooks {
            None => memory.clone(),
            Some(_) => KeyValue {
                key: hook4(&mut hooks, AttentionSite::Key, memory.key.clone()),
                value: hook4(&mut hooks, AttentionSite::Value, memory.value.clone()),
            },
        };
        self.attend(query, memory, mask, weights, hooks)
    }

    /// Projects `source` with W^K and W^V into heads, for [`cross_attention`](Self::cross_attention).
    ///
    /// # Shapes
    /// - `source`: `[batch, k_len, d_model]`
    /// - returns key and value `[batch, n_heads, k_len, d_k]`
    pub fn project_key_value(&self, source: Tensor<3>) -> KeyValue {
        let [key, value] = self.split_heads(self.project(source, Projection::Key, 2)); // [batch, k_len, 2·d_model]
        KeyValue { key, value }
    }

    /// Attention of `query` over a `key` and a `value` given separately, as
    /// `torch.nn.MultiheadAttention(query, key, value)`: each is projected with its own
    /// matrix (W^Q, W^K, W^V).
    ///
    /// # Shapes
    /// - `query`: `[batch, q_len, d_model]`
    /// - `key`, `value`: `[batch, k_len, d_model]`
    /// - returns context `[batch, q_len, d_model]`, weights `[batch, n_heads, q_len, k_len]`
    pub fn forward(
        &self,
        query: Tensor<3>,
        key: Tensor<3>,
        value: Tensor<3>,
        mask: &AttentionMask,
        weights: Weights,
    ) -> AttentionOutput {
        let [query] = self.split_heads(self.project(query, Projection::Query, 1));
        let [key] = self.split_heads(self.project(key, Projection::Key, 1));
        let [value] = self.split_heads(self.project(value, Projection::Value, 1));
        let key_value = KeyValue { key, value };
        self.attend(query, key_value, mask, weights, None)
    }

    /// Projects `x` with `count` consecutive matrices of `in_proj`, starting at `first`
    /// (`Key` with 2 gives K and V in one matmul).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`
    /// - returns `[batch, seq_len, count·h·d_k]`
    fn project(&self, x: Tensor<3>, first: Projection, count: usize) -> Tensor<3> {
        let width = self.heads_width();
        let start = first as usize * width;
        let weight = self.in_proj.weight.val().narrow(1, start, count * width); // [d_model, count·h·d_k]
        let bias = self
            .in_proj
            .bias
            .as_ref()
            .map(|b| b.val().narrow(0, start, count * width));
        fused_linear::linear(x, weight, bias, Activation::Identity)
    }

    /// All heads attend at once, then are concatenated and projected with W^O.
    ///
    /// # Shapes
    /// - `query`: `[batch, n_heads, q_len, d_k]`
    /// - returns context `[batch, q_len, d_model]`, weights `[batch, n_heads, q_len, k_len]`
    fn attend(
        &self,
        query: Tensor<4>,
        key_value: KeyValue,
        mask: &AttentionMask,
        weights: Weights,
        mut hooks: BlockHooks<'_, '_>,
    ) -> AttentionOutput {
        let KeyValue { key, value } = key_value;
        let dropout_active = self.attention_dropout.prob > 0.0
            && self.attention_dropout.training.is_enabled()
            && query.device().is_autodiff();
        let wanted = weights == Weights::Return;
        let pattern_hooked = hooks.as_ref().is_some_and(|(h, block)| {
            h.wants(LayerSite::Attention(*block, AttentionSite::Pattern))
        });
        let (heads, weights) = if wanted || dropout_active || pattern_hooked {
            let [batch, n_heads, q_len, _] = query.dims();
            let k_len = key.dims()[2];
            let dense_mask = mask.to_tensor([batch, n_heads, q_len, k_len], &query.device());
            let weights = hook4(
                &mut hooks,
                AttentionSite::Pattern,
                attention_weights(query, key, dense_mask),
            );
            let heads = self
                .attention_dropout
                .forward(weights.clone())
                .matmul(value);
            (heads, wanted.then_some(weights))
        } else {
            (fused_attention(query, key, value, mask), None)
        };
        let heads = hook4(&mut hooks, AttentionSite::Z, heads);
        let context = fused_linear::apply(
            &self.out_proj,
            self.merge_heads(heads),
            Activation::Identity,
        );
        AttentionOutput {
            context: match hooks {
                Some((h, block)) => {
                    h.rank3(LayerSite::Attention(block, AttentionSite::Out), context)
                }
                None => context,
            },
            weights,
        }
    }

    /// Splits `P` projections side by side (Q, K and V of one matmul, say) into heads. Each
    /// head is a strided view of `x`: nothing is copied when `x` is contiguous, as a projection's
    /// output is.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, P·n_heads·d_k]`
    /// - returns `P` × `[batch, n_heads, seq_len, d_k]`
    fn split_heads<const P: usize>(&self, x: Tensor<3>) -> [Tensor<4>; P] {
        let [batch, seq_len, _] = x.dims();
        let heads = x.reshape([batch, seq_len, P * self.n_heads, self.d_k]); // [batch, seq_len, P·n_heads, d_k]
        std::array::from_fn(|part| {
            heads
                .clone()
                .narrow(2, part * self.n_heads, self.n_heads) // [batch, seq_len, n_heads, d_k]
                .swap_dims(1, 2) // [batch, n_heads, seq_len, d_k]
        })
    }

    /// Concatenates the heads. Free (no copy) when `x` lies in memory as
    /// `[batch, seq_len, n_heads, d_k]`, as the output of [`fused_sdpa`](crate::fused_sdpa) does.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_heads, seq_len, d_k]`
    /// - returns `[batch, seq_len, d_model]`
    fn merge_heads(&self, x: Tensor<4>) -> Tensor<3> {
        let [batch, n_heads, seq_len, d_k] = x.dims();
        x.swap_dims(1, 2) // [batch, seq_len, n_heads, d_k]
            .reshape([batch, seq_len, n_heads * d_k])
    }
}

/// The hooks of one attention block of a layer, when the pass is hooked.
type BlockHooks<'h, 'a> = Option<(&'h mut LayerHooks<'a>, AttentionBlock)>;

/// `x` through the block's hook at `site`, if hooked.
///
/// # Shapes
/// - `x`: `[batch, n_heads, len, d_k or k_len]`
fn hook4(hooks: &mut BlockHooks<'_, '_>, site: AttentionSite, x: Tensor<4>) -> Tensor<4> {
    match hooks {
        Some((h, block)) => h.rank4(LayerSite::Attention(*block, site), x),
        None => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::max_abs_diff;
    use crate::mask::padding_mask_from_lengths;
    use crate::sdpa::scaled_dot_product_attention;
    use burn::tensor::{Device, Distribution};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn random(shape: [usize; 3], device: &Device) -> Tensor<3> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    #[test]
    fn invalid_configs_are_refused_with_their_values() {
        let device = Device::flex();
        let err = MultiHeadAttentionConfig::new(10, 3)
            .try_init(&device)
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("d_model (10) must be divisible by n_heads (3)")
        );
        assert!(MultiHeadAttentionConfig::new(8, 0).validate().is_err());
        assert!(MultiHeadAttentionConfig::new(0, 2).validate().is_err());
        let bad_dropout = MultiHeadAttentionConfig::new(8, 2).with_attention_dropout(1.5);
        assert!(
            bad_dropout
                .validate()
                .unwrap_err()
                .to_string()
                .contains("1.5")
        );
    }

    #[test]
    #[should_panic(expected = "must be divisible")]
    fn init_panics_with_the_message() {
        MultiHeadAttentionConfig::new(10, 4).init(&Device::flex());
    }

    #[test]
    fn fused_path_equals_explicit_path() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(16, 2).init(&device);
        let x = random([3, 5, 16], &device);
        let mask = AttentionMask::causal().with_key_padding(Some(padding_mask_from_lengths(
            &[5, 2, 4],
            5,
            &device,
        )));
        let fused = mha.self_attention(x.clone(), &mask, None, Weights::Omit);
        let explicit = mha.self_attention(x, &mask, None, Weights::Return);
        assert!(fused.weights.is_none());
        assert!(explicit.weights.is_some());
        assert!(max_abs_diff(fused.context, explicit.context) <= 1e-5);
    }

    #[test]
    fn one_head_equals_plain_attention_on_projected_inputs() {
        let device = Device::flex();
        let d = 8;
        let mha = MultiHeadAttentionConfig::new(d, 1).init(&device);
        let (x, memory) = (random([2, 3, d], &device), random([2, 4, d], &device));
        let out = mha.cross_attention(
            x.clone(),
            &mha.project_key_value(memory.clone()),
            &AttentionMask::none(),
            Weights::Omit,
        );

        // By hand: Q = x W^Q + b^Q etc., softmax(QKᵀ/√d)V, then W^O.
        let w = mha.in_proj.weight.val();
        let b = mha.in_proj.bias.as_ref().unwrap().val();
        let project = |input: Tensor<3>, part: usize| {
            let weight = w.clone().narrow(1, part * d, d).unsqueeze::<3>();
            let bias = b.clone().narrow(0, part * d, d).unsqueeze::<3>();
            input.matmul(weight) + bias // [2, len, d]
        };
        let heads = |t: Tensor<3>| t.unsqueeze_dim::<4>(1); // [2, 1, len, d]
        let (expected, _) = scaled_dot_product_attention(
            heads(project(x, 0)),
            heads(project(memory.clone(), 1)),
            heads(project(memory, 2)),
            None,
        );
        let expected = mha.out_proj.forward(expected.squeeze_dim::<3>(1));
        assert!(max_abs_diff(out.context, expected) <= 1e-5);
    }

    #[test]
    fn separate_key_and_value_generalise_cross_attention() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(8, 2).init(&device);
        let (x, memory) = (random([2, 3, 8], &device), random([2, 4, 8], &device));
        let mask = AttentionMask::none();
        let cross = mha.cross_attention(
            x.clone(),
            &mha.project_key_value(memory.clone()),
            &mask,
            Weights::Omit,
        );
        let general = mha.forward(
            x.clone(),
            memory.clone(),
            memory.clone(),
            &mask,
            Weights::Omit,
        );
        assert!(max_abs_diff(cross.context, general.context) <= 1e-6);
        // The value's rows are what the context mixes: a zero value gives the output bias alone.
        let zero_value = mha.forward(
            x,
            memory.clone(),
            memory.zeros_like(),
            &mask,
            Weights::Return,
        );
        let weights = zero_value.weights.unwrap();
        let b_v = mha.in_proj.bias.as_ref().unwrap().val().narrow(0, 16, 8);
        let expected = mha
            .out_proj
            .forward(b_v.reshape([1, 1, 8]).expand([2, 3, 8]));
        assert!(max_abs_diff(zero_value.context, expected) <= 1e-5);
        assert_eq!(weights.dims(), [2, 2, 3, 4]);
    }

    /// A module with every bias non-zero, so that pruning must keep the right entries.
    fn with_random_biases(mha: MultiHeadAttention, device: &Device) -> MultiHeadAttention {
        let mut mha = mha;
        let random_bias = |n| {
            Param::from_tensor(Tensor::<1>::random(
                [n],
                Distribution::Normal(0.0, 1.0),
                device,
            ))
        };
        mha.in_proj.bias = Some(random_bias(mha.in_proj.weight.dims()[1]));
        mha.out_proj.bias = Some(random_bias(mha.out_proj.weight.dims()[1]));
        mha
    }

    #[test]
    fn gates_of_one_change_nothing_and_a_zero_gate_equals_pruning() {
        let device = Device::flex();
        let mha = with_random_biases(MultiHeadAttentionConfig::new(12, 3).init(&device), &device);
        let (x, memory) = (random([2, 4, 12], &device), random([2, 5, 12], &device));
        let mask = AttentionMask::padding(padding_mask_from_lengths(&[5, 3], 5, &device));
        let run = |m: &MultiHeadAttention| {
            m.forward(
                x.clone(),
                memory.clone(),
                memory.clone(),
                &mask,
                Weights::Omit,
            )
            .context
        };

        let ones = mha.gate_heads(Tensor::ones([3], &device));
        assert_eq!(values(run(&ones)), values(run(&mha)));

        let gated = mha.gate_heads(Tensor::from_floats([1.0, 0.0, 1.0], &device));
        let pruned = mha.prune_heads(&[0, 2]);
        assert_eq!(
            (pruned.n_heads, pruned.d_k, pruned.heads_width()),
            (2, 4, 8)
        );
        assert_eq!(pruned.in_proj.weight.dims(), [12, 24]);
        assert_eq!(pruned.out_proj.weight.dims(), [8, 12]);
        assert!(max_abs_diff(run(&pruned), run(&gated)) <= 1e-5);
        // The kept heads' weights are the original heads 0 and 2.
        let weights = |m: &MultiHeadAttention| {
            m.forward(
                x.clone(),
                memory.clone(),
                memory.clone(),
                &mask,
                Weights::Return,
            )
            .weights
        };
        let all = weights(&mha).unwrap();
        let kept = weights(&pruned).unwrap();
        let order = Tensor::<1, Int>::from_ints([0, 2], &device);
        assert!(max_abs_diff(kept, all.select(1, order)) <= 1e-6);
    }

    #[test]
    fn a_pruned_attention_is_rebuilt_from_its_config() {
        let device = Device::flex();
        let pruned = MultiHeadAttentionConfig::new(12, 3)
            .init(&device)
            .prune_heads(&[1]);
        let config = MultiHeadAttentionConfig::new(12, 1).with_head_width(Some(4));
        let rebuilt = config.init(&device);
        assert_eq!(rebuilt.in_proj.weight.dims(), pruned.in_proj.weight.dims());
        assert_eq!(
            rebuilt.out_proj.weight.dims(),
            pruned.out_proj.weight.dims()
        );
        assert!(
            MultiHeadAttentionConfig::new(10, 3)
                .with_head_width(Some(4))
                .validate()
                .is_ok()
        );
        assert!(
            MultiHeadAttentionConfig::new(10, 3)
                .with_head_width(Some(0))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn gate_gradients_equal_finite_differences() {
        let device = Device::flex().autodiff();
        let mha = with_random_biases(MultiHeadAttentionConfig::new(8, 2).init(&device), &device);
        let x = random([2, 3, 8], &device);
        let target = random([2, 3, 8], &device);
        let loss = |m: &MultiHeadAttention| {
            let out = m
                .self_attention(x.clone(), &AttentionMask::causal(), None, Weights::Omit)
                .context;
            (out - target.clone()).powi_scalar(2).sum()
        };
        let grads = loss(&mha).backward();
        let out_grad = mha.out_proj.weight.grad(&grads).unwrap();
        let analytic = values(mha.head_gate_gradients(out_grad));
        let h = 1e-2;
        for head in 0..2 {
            let gates = |g: f32| {
                let mut v = [1.0f32; 2];
                v[head] = g;
                Tensor::<1>::from_floats(v, &device)
            };
            let plus = values(loss(&mha.gate_heads(gates(1.0 + h))))[0];
            let minus = values(loss(&mha.gate_heads(gates(1.0 - h))))[0];
            let numeric = (plus - minus) / (2.0 * h);
            assert!(
                (numeric - analytic[head]).abs() <= 1e-2 * (1.0 + numeric.abs()),
                "head {head}: numeric {numeric}, analytic {}",
                analytic[head]
            );
        }
    }

    #[test]
    fn permuting_the_batch_permutes_the_output() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(16, 4).init(&device);
        let x = random([3, 4, 16], &device);
        let out = mha
            .self_attention(x.clone(), &AttentionMask::causal(), None, Weights::Omit)
            .context;
        let order = Tensor::<1, Int>::from_ints([2, 0, 1], &device);
        let permuted = mha
            .self_attention(
                x.select(0, order.clone()),
                &AttentionMask::causal(),
                None,
                Weights::Omit,
            )
            .context;
        assert!(max_abs_diff(permuted, out.select(0, order)) <= 1e-6);
    }

    #[test]
    fn padding_does_not_change_the_real_positions() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(8, 2).init(&device);
        let x = random([1, 3, 8], &device);
        let padded = Tensor::cat(vec![x.clone(), random([1, 2, 8], &device)], 1);
        let alone = mha
            .self_attention(x, &AttentionMask::none(), None, Weights::Omit)
            .context;
        let mask = AttentionMask::padding(padding_mask_from_lengths(&[3], 5, &device));
        let with_pad = mha
            .self_attention(padded, &mask, None, Weights::Omit)
            .context
            .narrow(1, 0, 3);
        assert!(max_abs_diff(alone, with_pad) <= 1e-5);
    }

    #[test]
    fn cached_steps_equal_the_full_causal_pass() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(8, 2).init(&device);
        let x = random([2, 4, 8], &device);
        let full = mha
            .self_attention(x.clone(), &AttentionMask::causal(), None, Weights::Omit)
            .context;
        let mut cache = SelfAttentionCache::default();
        let steps: Vec<Tensor<3>> = (0..4)
            .map(|t| {
                let step = x.clone().narrow(1, t, 1);
                mha.self_attention(
                    step,
                    &AttentionMask::causal(),
                    Some(&mut cache),
                    Weights::Omit,
                )
                .context
            })
            .collect();
        assert_eq!(cache.len(), 4);
        assert!(max_abs_diff(full, Tensor::cat(steps, 1)) <= 1e-5);
    }

    #[test]
    fn rotary_self_attention_rotates_queries_and_keys_only() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(8, 2)
            .with_rotary_max_len(Some(16))
            .init(&device);
        let x = random([2, 5, 8], &device);
        let out = mha.self_attention(x.clone(), &AttentionMask::causal(), None, Weights::Return);

        // By hand: project, split, rotate Q and K (not V), attend, merge, W^O.
        let plain = MultiHeadAttention {
            rotary: None,
            ..mha.clone()
        };
        let rotary = mha.rotary.as_ref().unwrap();
        let [q, k, v] = plain.split_heads(plain.in_proj.forward(x.clone()));
        let (expected, weights) = scaled_dot_product_attention(
            rotary.apply(q, 0),
            rotary.apply(k, 0),
            v,
            AttentionMask::causal().to_tensor([2, 2, 5, 5], &device),
        );
        let expected = plain.out_proj.forward(plain.merge_heads(expected));
        assert!(max_abs_diff(out.context.clone(), expected) <= 1e-5);
        assert!(max_abs_diff(out.weights.unwrap(), weights) <= 1e-6);
        // And the rotation changes the result.
        let unrotated = plain.self_attention(x, &AttentionMask::causal(), None, Weights::Omit);
        assert!(max_abs_diff(out.context, unrotated.context) > 1e-3);
    }

    #[test]
    fn rotary_cached_steps_equal_the_full_causal_pass() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(8, 2)
            .with_rotary_max_len(Some(8))
            .init(&device);
        let x = random([2, 5, 8], &device);
        let full = mha
            .self_attention(x.clone(), &AttentionMask::causal(), None, Weights::Omit)
            .context;
        let mut cache = SelfAttentionCache::default();
        // Two positions, then one at a time: each step rotated from the cache's length.
        let mut steps = vec![
            mha.self_attention(
                x.clone().narrow(1, 0, 2),
                &AttentionMask::causal(),
                Some(&mut cache),
                Weights::Omit,
            )
            .context,
        ];
        for t in 2..5 {
            steps.push(
                mha.self_attention(
                    x.clone().narrow(1, t, 1),
                    &AttentionMask::causal(),
                    Some(&mut cache),
                    Weights::Omit,
                )
                .context,
            );
        }
        assert!(max_abs_diff(full, Tensor::cat(steps, 1)) <= 1e-5);
    }

    #[test]
    fn rotary_survives_pruning_and_cross_attention_does_not_rotate() {
        let device = Device::flex();
        let mha = MultiHeadAttentionConfig::new(12, 3)
            .with_rotary_max_len(Some(8))
            .init(&device);
        assert!(mha.prune_heads(&[0, 2]).rotary.is_some());
        let plain = MultiHeadAttention {
            rotary: None,
            ..mha.clone()
        };
        let (x, memory) = (random([1, 3, 12], &device), random([1, 4, 12], &device));
        let cross = |m: &MultiHeadAttention| {
            m.cross_attention(
                x.clone(),
                &m.project_key_value(memory.clone()),
                &AttentionMask::none(),
                Weights::Omit,
            )
            .context
        };
        assert_eq!(values(cross(&mha)), values(cross(&plain)));
        let odd = MultiHeadAttentionConfig::new(6, 2).with_rotary_max_len(Some(8));
        assert!(odd.validate().unwrap_err().to_string().contains("even"));
    }
}
