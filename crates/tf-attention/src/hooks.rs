//! Hook points: every activation of the encoder–decoder, named as TransformerLens names those of
//! a decoder-only model, and [`Hooks`], the explicit value a forward pass is given to read
//! (cache) or replace them. Nothing is stored in the modules: a pass without hooks is the plain
//! forward pass.
//!
//! | name | tensor | shape |
//! | --- | --- | --- |
//! | `embed.src`, `embed.tgt` | scaled token embeddings plus positions (before dropout) | `[batch, seq, d_model]` |
//! | `{enc,dec}.{l}.resid_pre` | the residual stream entering layer `l` | `[batch, seq, d_model]` |
//! | `{enc,dec}.{l}.attn.{q,k,v}` | self-attention queries, keys, values, per head (after RoPE, if any) | `[batch, heads, seq, d_k]` |
//! | `{enc,dec}.{l}.attn.pattern` | self-attention weights | `[batch, heads, q_len, k_len]` |
//! | `{enc,dec}.{l}.attn.z` | each head's weighted values, before `W^O` | `[batch, heads, seq, d_k]` |
//! | `{enc,dec}.{l}.attn.out` | the self-attention's output, after `W^O` | `[batch, seq, d_model]` |
//! | `{enc,dec}.{l}.resid_mid` | the residual stream after the self-attention block | `[batch, seq, d_model]` |
//! | `dec.{l}.cross.{q,k,v,pattern,z,out}` | the same for the cross-attention (keys and values over the source) | as `attn` |
//! | `dec.{l}.resid_mid_cross` | the residual stream after the cross-attention block | `[batch, seq, d_model]` |
//! | `{enc,dec}.{l}.ffn.hidden` | `max(0, xW_1 + b_1)` | `[batch, seq, d_ff]` |
//! | `{enc,dec}.{l}.ffn.out` | the feed-forward network's output | `[batch, seq, d_model]` |
//! | `{enc,dec}.{l}.resid_post` | the residual stream leaving layer `l` | `[batch, seq, d_model]` |
//! | `logits` | pre-softmax scores of the target vocabulary | `[batch, tgt_len, vocab]` |

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use burn::tensor::{Tensor, TensorData};

/// The encoder or the decoder stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stack {
    /// `enc`.
    Encoder,
    /// `dec`.
    Decoder,
}

/// A layer's self-attention or (decoder) cross-attention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttentionBlock {
    /// `attn`.
    SelfAttention,
    /// `cross`.
    CrossAttention,
}

/// A tensor inside an attention block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttentionSite {
    /// `q`: queries, `[batch, heads, q_len, d_k]`.
    Query,
    /// `k`: keys, `[batch, heads, k_len, d_k]`.
    Key,
    /// `v`: values, `[batch, heads, k_len, d_k]`.
    Value,
    /// `pattern`: attention weights, `[batch, heads, q_len, k_len]`.
    Pattern,
    /// `z`: each head's weighted values, `[batch, heads, q_len, d_k]`.
    Z,
    /// `out`: the block's output after `W^O`, `[batch, q_len, d_model]`.
    Out,
}

impl AttentionSite {
    const ALL: [(Self, &'static str); 6] = [
        (Self::Query, "q"),
        (Self::Key, "k"),
        (Self::Value, "v"),
        (Self::Pattern, "pattern"),
        (Self::Z, "z"),
        (Self::Out, "out"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

/// A tensor of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerSite {
    /// `resid_pre`.
    ResidPre,
    /// `attn.*` or `cross.*`.
    Attention(AttentionBlock, AttentionSite),
    /// `resid_mid`: after the self-attention block.
    ResidMid,
    /// `resid_mid_cross`: after the cross-attention block (decoder).
    ResidMidCross,
    /// `ffn.hidden`.
    FfnHidden,
    /// `ffn.out`.
    FfnOut,
    /// `resid_post`.
    ResidPost,
}

/// Where a tensor is in the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// `embed.src`.
    EmbedSource,
    /// `embed.tgt`.
    EmbedTarget,
    /// `enc.{l}.…` or `dec.{l}.…`.
    Layer {
        /// Which stack.
        stack: Stack,
        /// The layer, from 0.
        layer: usize,
        /// Which of its tensors.
        site: LayerSite,
    },
    /// `logits`.
    Logits,
}

impl HookPoint {
    /// The point `site` of layer `layer` of `stack`.
    pub fn layer(stack: Stack, layer: usize, site: LayerSite) -> Self {
        Self::Layer { stack, layer, site }
    }

    /// The tensor `site` of an attention block of a layer.
    pub fn attention(
        stack: Stack,
        layer: usize,
        block: AttentionBlock,
        site: AttentionSite,
    ) -> Self {
        Self::layer(stack, layer, LayerSite::Attention(block, site))
    }

    /// Whether the tensor has a heads axis (`[batch, heads, positions, …]`): q, k, v, pattern, z.
    pub fn has_heads(&self) -> bool {
        matches!(
            self,
            Self::Layer {
                site: LayerSite::Attention(_, site),
                ..
            } if *site != AttentionSite::Out
        )
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmbedSource => f.write_str("embed.src"),
            Self::EmbedTarget => f.write_str("embed.tgt"),
            Self::Logits => f.write_str("logits"),
            Self::Layer { stack, layer, site } => {
                let stack = match stack {
                    Stack::Encoder => "enc",
                    Stack::Decoder => "dec",
                };
                write!(f, "{stack}.{layer}.")?;
                match site {
                    LayerSite::ResidPre => f.write_str("resid_pre"),
                    LayerSite::ResidMid => f.write_str("resid_mid"),
                    LayerSite::ResidMidCross => f.write_str("resid_mid_cross"),
                    LayerSite::FfnHidden => f.write_str("ffn.hidden"),
                    LayerSite::FfnOut => f.write_str("ffn.out"),
                    LayerSite::ResidPost => f.write_str("resid_post"),
                    LayerSite::Attention(block, site) => {
                        let block = match block {
                            AttentionBlock::SelfAttention => "attn",
                            AttentionBlock::CrossAttention => "cross",
                        };
                        write!(f, "{block}.{}", site.name())
                    }
                }
            }
        }
    }
}

/// A hook name that names no tensor.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown hook point {name:?}: {why} (names: embed.src, embed.tgt, logits, \
         enc.L.{{resid_pre, attn.{{q,k,v,pattern,z,out}}, resid_mid, ffn.{{hidden,out}}, resid_post}}, \
         dec.L.{{the same, cross.{{q,k,v,pattern,z,out}}, resid_mid_cross}})"
)]
pub struct UnknownHookPoint {
    /// The name given.
    pub name: String,
    /// What is wrong with it.
    pub why: String,
}

impl FromStr for HookPoint {
    type Err = UnknownHookPoint;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let unknown = |why: &str| UnknownHookPoint {
            name: name.to_string(),
            why: why.to_string(),
        };
        match name {
            "embed.src" => return Ok(Self::EmbedSource),
            "embed.tgt" => return Ok(Self::EmbedTarget),
            "logits" => return Ok(Self::Logits),
            _ => {}
        }
        let mut parts = name.splitn(3, '.');
        let stack = match parts.next() {
            Some("enc") => Stack::Encoder,
            Some("dec") => Stack::Decoder,
            _ => return Err(unknown("it starts with neither embed, logits, enc nor dec")),
        };
        let layer = parts
            .next()
            .and_then(|l| l.parse::<usize>().ok())
            .ok_or_else(|| unknown("the layer must be a number"))?;
        let rest = parts
            .next()
            .ok_or_else(|| unknown("it names no tensor of the layer"))?;
        let site = match rest {
            "resid_pre" => LayerSite::ResidPre,
            "resid_mid" => LayerSite::ResidMid,
            "resid_mid_cross" => LayerSite::ResidMidCross,
            "ffn.hidden" => LayerSite::FfnHidden,
            "ffn.out" => LayerSite::FfnOut,
            "resid_post" => LayerSite::ResidPost,
            _ => {
                let (block, site) = rest
                    .split_once('.')
                    .ok_or_else(|| unknown("no such tensor in a layer"))?;
                let block = match block {
                    "attn" => AttentionBlock::SelfAttention,
                    "cross" => AttentionBlock::CrossAttention,
                    _ => return Err(unknown("no such tensor in a layer")),
                };
                let site = AttentionSite::ALL
                    .iter()
                    .find(|(_, n)| *n == site)
                    .map(|(s, _)| *s)
                    .ok_or_else(|| unknown("an attention block has q, k, v, pattern, z and out"))?;
                LayerSite::Attention(block, site)
            }
        };
        let cross = matches!(
            site,
            LayerSite::ResidMidCross | LayerSite::Attention(AttentionBlock::CrossAttention, _)
        );
        if stack == Stack::Encoder && cross {
            return Err(unknown("the encoder has no cross-attention"));
        }
        Ok(Self::layer(stack, layer, site))
    }
}

/// A hooked tensor: rank 3 (`[batch, positions, width]`) or rank 4 (`[batch, heads, positions, …]`).
#[derive(Clone, Debug)]
pub enum HookValue {
    /// `[batch, positions, width]`.
    Rank3(Tensor<3>),
    /// `[batch, heads, positions, d_k or k_len]`.
    Rank4(Tensor<4>),
}

impl HookValue {
    /// The tensor's shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Rank3(t) => t.dims().to_vec(),
            Self::Rank4(t) => t.dims().to_vec(),
        }
    }
}

/// What replaces a hooked tensor, or part of it.
// A pass holds a handful of replacements; boxing the tensor would save nothing that matters.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Replacement {
    /// Zeros (zero ablation).
    Zeros,
    /// This tensor, of the hooked tensor's shape or broadcastable to it (a size-1 axis is
    /// repeated): another run's activation (patching, resample ablation) or a mean over a split
    /// (mean ablation).
    Value(HookValue),
}

/// A replacement of a hooked tensor: all of it, or only some heads and/or positions (the query
/// positions of a pattern).
#[derive(Clone, Debug)]
pub struct Patch {
    /// What goes in.
    pub with: Replacement,
    /// Only these heads (points with heads only); `None` = all.
    pub heads: Option<Vec<usize>>,
    /// Only these positions; `None` = all.
    pub positions: Option<Vec<usize>>,
}

impl Patch {
    /// Replaces the whole tensor.
    pub fn all(with: Replacement) -> Self {
        Self {
            with,
            heads: None,
            positions: None,
        }
    }

    /// Zeros in place of the whole tensor.
    pub fn zeros() -> Self {
        Self::all(Replacement::Zeros)
    }

    /// Only these heads.
    pub fn with_heads(mut self, heads: Vec<usize>) -> Self {
        self.heads = Some(heads);
        self
    }

    /// Only these positions.
    pub fn with_positions(mut self, positions: Vec<usize>) -> Self {
        self.positions = Some(positions);
        self
    }
}

/// What a forward pass does at its hook points: replaces some tensors ([`Patch`]) and keeps
/// copies of others. The pass takes `&mut Hooks`; [`Hooks::none`] changes and keeps nothing.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    patches: Vec<(HookPoint, Patch)>,
    cache_all: bool,
    to_cache: Vec<HookPoint>,
    cache: BTreeMap<HookPoint, HookValue>,
}

impl Hooks {
    /// No hooks: the plain forward pass.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether no point is patched or cached.
    pub fn is_empty(&self) -> bool {
        self.patches.is_empty() && !self.cache_all && self.to_cache.is_empty()
    }

    /// Also keeps the tensor at `point` (as it flows on, after any patch of it).
    pub fn cache(mut self, point: HookPoint) -> Self {
        self.to_cache.push(point);
        self
    }

    /// Keeps every hooked tensor.
    pub fn cache_all(mut self) -> Self {
        self.cache_all = true;
        self
    }

    /// Also replaces (part of) the tensor at `point`; patches of one point apply in the order
    /// given.
    pub fn patch(mut self, point: HookPoint, patch: Patch) -> Self {
        self.patches.push((point, patch));
        self
    }

    /// The points asked to be kept one by one (not those of [`cache_all`](Self::cache_all)).
    pub fn cache_points(&self) -> &[HookPoint] {
        &self.to_cache
    }

    /// The patches, in the order given (for checking them against a model before a pass).
    pub fn patches(&self) -> &[(HookPoint, Patch)] {
        &self.patches
    }

    /// Whether the pass must compute the tensor at `point` (an attention pattern, which the
    /// fused attention path never forms).
    pub fn wants(&self, point: &HookPoint) -> bool {
        self.cache_all
            || self.to_cache.contains(point)
            || self.patches.iter().any(|(p, _)| p == point)
    }

    /// The tensor kept at `point`, if any.
    pub fn cached(&self, point: &HookPoint) -> Option<&HookValue> {
        self.cache.get(point)
    }

    /// Everything kept, by point.
    pub fn into_cache(self) -> BTreeMap<HookPoint, HookValue> {
        self.cache
    }

    /// The hook of a rank-3 tensor: patched and kept as asked.
    ///
    /// # Panics
    /// If a patch names heads, or positions or a replacement that do not fit `x`; the model
    /// checks patches against its sizes before a pass.
    pub fn rank3(&mut self, point: HookPoint, x: Tensor<3>) -> Tensor<3> {
        if self.is_empty() {
            return x;
        }
        let mut x = x;
        for (_, patch) in self.patches.iter().filter(|(p, _)| *p == point) {
            assert!(patch.heads.is_none(), "{point} has no heads to patch");
            let with = match &patch.with {
                Replacement::Zeros => x.zeros_like(),
                Replacement::Value(HookValue::Rank3(v)) => broadcast(point, v.clone(), x.dims()),
                Replacement::Value(HookValue::Rank4(_)) => {
                    panic!(
                        "{point} is [batch, positions, width]: a rank-4 replacement does not fit"
                    )
                }
            };
            x = match &patch.positions {
                None => with,
                Some(positions) => {
                    let [_, seq, _] = x.dims();
                    let mask = selection(point, "position", positions, seq, &x.device())
                        .reshape([1, seq, 1])
                        .expand(x.dims())
                        .greater_elem(0.5);
                    x.mask_where(mask, with)
                }
            };
        }
        if self.cache_all || self.to_cache.contains(&point) {
            self.cache.insert(point, HookValue::Rank3(x.clone()));
        }
        x
    }

    /// The hook of a rank-4 tensor with heads: patched and kept as asked.
    ///
    /// # Panics
    /// As [`rank3`](Self::rank3), for heads too.
    pub fn rank4(&mut self, point: HookPoint, x: Tensor<4>) -> Tensor<4> {
        if self.is_empty() {
            return x;
        }
        let mut x = x;
        for (_, patch) in self.patches.iter().filter(|(p, _)| *p == point) {
            let with = match &patch.with {
                Replacement::Zeros => x.zeros_like(),
                Replacement::Value(HookValue::Rank4(v)) => broadcast(point, v.clone(), x.dims()),
                Replacement::Value(HookValue::Rank3(_)) => {
                    panic!(
                        "{point} is [batch, heads, positions, …]: a rank-3 replacement does not fit"
                    )
                }
            };
            x = if patch.heads.is_none() && patch.positions.is_none() {
                with
            } else {
                let [_, n_heads, seq, _] = x.dims();
                let device = x.device();
                let heads = match &patch.heads {
                    Some(heads) => selection(point, "head", heads, n_heads, &device),
                    None => Tensor::ones([n_heads], &device),
                };
                let positions = match &patch.positions {
                    Some(positions) => selection(point, "position", positions, seq, &device),
                    None => Tensor::ones([seq], &device),
                };
                let mask = (heads.reshape([1, n_heads, 1, 1]) * positions.reshape([1, 1, seq, 1]))
                    .expand(x.dims())
                    .greater_elem(0.5);
                x.mask_where(mask, with)
            };
        }
        if self.cache_all || self.to_cache.contains(&point) {
            self.cache.insert(point, HookValue::Rank4(x.clone()));
        }
        x
    }
}

/// The hooks of one layer: the pass's [`Hooks`] and which layer of which stack is running, so
/// that a layer names its tensors by their [`LayerSite`] alone.
#[derive(Debug)]
pub struct LayerHooks<'a> {
    hooks: &'a mut Hooks,
    stack: Stack,
    layer: usize,
}

impl<'a> LayerHooks<'a> {
    /// Layer `layer` of `stack`, hooked by `hooks`.
    pub fn new(hooks: &'a mut Hooks, stack: Stack, layer: usize) -> Self {
        Self {
            hooks,
            stack,
            layer,
        }
    }

    /// The point of `site` in this layer.
    pub fn point(&self, site: LayerSite) -> HookPoint {
        HookPoint::layer(self.stack, self.layer, site)
    }

    /// Whether the pass must form the tensor at `site` (see [`Hooks::wants`]).
    pub fn wants(&self, site: LayerSite) -> bool {
        self.hooks.wants(&self.point(site))
    }

    /// [`Hooks::rank3`] at `site`.
    pub fn rank3(&mut self, site: LayerSite, x: Tensor<3>) -> Tensor<3> {
        let point = self.point(site);
        self.hooks.rank3(point, x)
    }

    /// [`Hooks::rank4`] at `site`.
    pub fn rank4(&mut self, site: LayerSite, x: Tensor<4>) -> Tensor<4> {
        let point = self.point(site);
        self.hooks.rank4(point, x)
    }
}

/// `value` repeated along its size-1 axes to `dims`.
fn broadcast<const D: usize>(point: HookPoint, value: Tensor<D>, dims: [usize; D]) -> Tensor<D> {
    let given = value.dims();
    assert!(
        given.iter().zip(dims).all(|(&g, d)| g == d || g == 1),
        "the replacement of {point} is {given:?}, which does not fit {dims:?}"
    );
    value.expand(dims)
}

/// 1 at the indices `chosen` of `0..size`, 0 elsewhere.
fn selection(
    point: HookPoint,
    what: &str,
    chosen: &[usize],
    size: usize,
    device: &burn::tensor::Device,
) -> Tensor<1> {
    let mut values = vec![0f32; size];
    for &i in chosen {
        assert!(i < size, "{point}: {what} {i} of {size}");
        values[i] = 1.0;
    }
    Tensor::from_data(TensorData::new(values, [size]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn names_round_trip_and_bad_names_say_why() {
        for name in [
            "embed.src",
            "embed.tgt",
            "logits",
            "enc.0.resid_pre",
            "enc.2.attn.pattern",
            "enc.1.ffn.hidden",
            "dec.0.cross.z",
            "dec.3.resid_mid_cross",
            "dec.1.attn.out",
            "dec.0.resid_post",
        ] {
            let point: HookPoint = name.parse().unwrap();
            assert_eq!(point.to_string(), name);
        }
        let heads = |name: &str| name.parse::<HookPoint>().unwrap().has_heads();
        assert!(heads("dec.0.cross.q") && heads("enc.0.attn.pattern"));
        assert!(!heads("enc.0.attn.out") && !heads("enc.0.resid_mid") && !heads("logits"));
        for (name, why) in [
            ("enc.0.cross.q", "the encoder has no cross-attention"),
            ("enc.x.resid_pre", "the layer must be a number"),
            ("enc.0.attn.query", "q, k, v, pattern, z and out"),
            ("enc.0.mlp.out", "no such tensor"),
            ("blocks.0.hook_q", "neither embed"),
            ("enc.0", "names no tensor"),
        ] {
            let err = name.parse::<HookPoint>().unwrap_err().to_string();
            assert!(err.contains(why) && err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn no_hooks_pass_the_tensor_through_and_keep_nothing() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 3, 4, 5], Distribution::Default, &device);
        let mut hooks = Hooks::none();
        let point: HookPoint = "enc.0.attn.z".parse().unwrap();
        assert!(!hooks.wants(&point));
        assert_eq!(values(hooks.rank4(point, x.clone())), values(x));
        assert!(hooks.into_cache().is_empty());
    }

    #[test]
    fn heads_and_positions_are_patched_and_the_rest_is_kept() {
        let device = Device::flex();
        let point: HookPoint = "dec.1.cross.z".parse().unwrap();
        let x = Tensor::<4>::ones([1, 3, 4, 2], &device);
        let clean = Tensor::<4>::ones([1, 3, 4, 2], &device).mul_scalar(7.0);
        let mut hooks = Hooks::none()
            .patch(
                point,
                Patch::all(Replacement::Value(HookValue::Rank4(clean)))
                    .with_heads(vec![1])
                    .with_positions(vec![0, 3]),
            )
            .cache(point);
        assert!(hooks.wants(&point));
        let out = values(hooks.rank4(point, x));
        for head in 0..3 {
            for pos in 0..4 {
                for k in 0..2 {
                    let got = out[(head * 4 + pos) * 2 + k];
                    let patched = head == 1 && (pos == 0 || pos == 3);
                    assert_eq!(
                        got,
                        if patched { 7.0 } else { 1.0 },
                        "head {head} pos {pos}"
                    );
                }
            }
        }
        // The cache holds the tensor as it flowed on.
        let HookValue::Rank4(kept) = hooks.cached(&point).unwrap().clone() else {
            panic!("rank 4 kept")
        };
        assert_eq!(values(kept), out);
    }

    #[test]
    fn zero_and_mean_ablation_of_positions_of_the_residual_stream() {
        let device = Device::flex();
        let point: HookPoint = "enc.0.resid_post".parse().unwrap();
        let x = Tensor::<3>::from_floats([[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]], &device);
        let mut zero = Hooks::none().patch(point, Patch::zeros().with_positions(vec![1]));
        assert_eq!(
            values(zero.rank3(point, x.clone())),
            [1.0, 2.0, 0.0, 0.0, 5.0, 6.0]
        );
        // A mean of shape [1, 1, width] fills every position asked for.
        let mean = Tensor::<3>::from_floats([[[9.0, 8.0]]], &device);
        let mut hooks = Hooks::none().patch(
            point,
            Patch::all(Replacement::Value(HookValue::Rank3(mean))).with_positions(vec![0, 2]),
        );
        assert_eq!(
            values(hooks.rank3(point, x)),
            [9.0, 8.0, 3.0, 4.0, 9.0, 8.0]
        );
    }

    #[test]
    #[should_panic(expected = "dec.0.attn.q: head 4 of 4")]
    fn a_head_out_of_range_is_named() {
        let device = Device::flex();
        let point: HookPoint = "dec.0.attn.q".parse().unwrap();
        let mut hooks = Hooks::none().patch(point, Patch::zeros().with_heads(vec![4]));
        hooks.rank4(point, Tensor::zeros([1, 4, 2, 2], &device));
    }
}
