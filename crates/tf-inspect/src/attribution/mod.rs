//! Attributions of each generated target token over the source tokens and the target prefix:
//! what the prediction at decoder position `t` draws on.
//!
//! - [`Attention`](AttributionMethod::Attention): the last decoder layer's cross-attention and
//!   self-attention, averaged over heads.
//! - [`Rollout`](AttributionMethod::Rollout) (Abnar & Zuidema, 2020): attention composed through
//!   the layers with the residual, `0.5·A + 0.5·I` per layer (heads averaged): the encoder's
//!   rollout under the last cross-attention for the source, the decoder's own for the prefix.
//! - [`Norm`](AttributionMethod::Norm) (Kobayashi et al., 2020): `‖Σ_h α_h f_h(x_j)‖`, the norm
//!   of what each key position adds to the last layer's attention output (`f_h(x_j) = v_hj
//!   W^O_h`), not only how much it is looked at.
//! - [`AltiPlus`](AttributionMethod::AltiPlus) (Ferrando et al., 2022): every attention block's
//!   output decomposed into one term per input position, scored by closeness, composed through
//!   the encoder and decoder into the source and prefix shares of each prediction.
//! - [`ValueZeroing`](AttributionMethod::ValueZeroing) (Mohebbi et al., 2023): how far each
//!   layer's output moves when one position's value vectors are zeroed, composed as ALTI+
//!   composes.
//! - [`Gradient`](AttributionMethod::Gradient), [`GradientTimesInput`](AttributionMethod::GradientTimesInput)
//!   and [`IntegratedGradients`](AttributionMethod::IntegratedGradients) (Sundararajan et al.,
//!   2017; baseline: zero token embeddings, positions kept): of the chosen token's
//!   log-probability with respect to the scaled token embeddings, L2 norm over `d_model`.
//!
//! Attention, rollout and norm rows sum to 1 over the source and, separately, over the prefix;
//! the rows of ALTI+, value zeroing and the gradient methods sum to 1 over source and prefix
//! together (shares of one prediction, [`AttributionMethod::gives_shares`]). A row's prefix is the decoder input up to its position (BOS first); the
//! positions after it are 0.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;
use tf_attention::hooks::{AttentionBlock, AttentionSite, Stack};
use tf_attention::{HookPoint, HookValue, Hooks, MultiHeadAttention, Patch, Replacement};
use tf_model::Transformer;

use crate::error::{InspectError, Result};
use crate::forced::{Forced, forced, ids, repeated_ids};
use crate::tokens::Tokens;

mod alti;
mod value_zeroing;

/// How contributions are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributionMethod {
    /// Raw attention weights of the last layer.
    Attention,
    /// Attention rollout.
    Rollout,
    /// Norm-based (attention weight × transformed value).
    Norm,
    /// ALTI+: source and prefix contributions through every layer.
    AltiPlus,
    /// Value zeroing, composed through every layer.
    ValueZeroing,
    /// Gradient norm.
    Gradient,
    /// Norm of gradient ⊙ input.
    GradientTimesInput,
    /// Integrated gradients with this many steps.
    IntegratedGradients {
        /// Riemann steps (midpoints) from the baseline to the input.
        steps: usize,
    },
}

impl AttributionMethod {
    /// The name `tf attribute --method` takes.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Attention => "attention",
            Self::Rollout => "rollout",
            Self::Norm => "norm",
            Self::AltiPlus => "alti+",
            Self::ValueZeroing => "value-zeroing",
            Self::Gradient => "gradient",
            Self::GradientTimesInput => "gradient-x-input",
            Self::IntegratedGradients { .. } => "integrated-gradients",
        }
    }

    /// Whether each row is a share of one prediction, summing to 1 over the source and the
    /// prefix together (otherwise it sums to 1 over each apart).
    pub fn gives_shares(&self) -> bool {
        !matches!(self, Self::Attention | Self::Rollout | Self::Norm)
    }

    /// Whether the method needs the model on an autodiff device.
    pub fn needs_gradients(&self) -> bool {
        matches!(
            self,
            Self::Gradient | Self::GradientTimesInput | Self::IntegratedGradients { .. }
        )
    }
}

/// One decoding's attributions.
#[derive(Clone, Debug, Serialize)]
pub struct Attribution {
    /// The method's name.
    pub method: String,
    /// The source tokens (columns of `source`).
    pub source_tokens: Vec<String>,
    /// The generated tokens, EOS last (rows).
    pub target_tokens: Vec<String>,
    /// The decoder input, BOS first (columns of `target`).
    pub prefix_tokens: Vec<String>,
    /// `[target token][source token]`.
    pub source: Vec<Vec<f32>>,
    /// `[target token][prefix position]`.
    pub target: Vec<Vec<f32>>,
}

/// Attributes each token of `source`'s translation (`target` if given, else greedy, at most
/// `max_output` tokens) by `method`; `labels` write token ids as text.
///
/// # Errors
/// If the source is empty, the translation does not fit the model's positions, or a gradient
/// method is asked of a model that is not on an autodiff device.
pub fn attribute(
    model: &Transformer,
    source: &[usize],
    target: Option<&[usize]>,
    max_output: usize,
    method: AttributionMethod,
    tokens: Tokens<'_>,
    device: &Device,
) -> Result<Attribution> {
    if method.needs_gradients() && !device.is_autodiff() {
        return Err(InspectError::Invalid(format!(
            "{} needs gradients: load the model on an autodiff device",
            method.name()
        )));
    }
    if let AttributionMethod::IntegratedGradients { steps: 0 } = method {
        return Err(InspectError::Invalid(
            "integrated gradients need at least one step".into(),
        ));
    }
    let Forced { prefix, output, .. } =
        forced(model, source, target, max_output, tokens.special, device)?;
    let (src, tgt) = (ids(source, device), ids(&prefix, device));
    let (source_rows, target_rows) = match method {
        AttributionMethod::Attention | AttributionMethod::Rollout => {
            let out = model.forward_with_attention(src, tgt, None, None);
            let heads_mean = |w: &Tensor<4>| matrix(w.clone().mean_dim(1));
            let last = |ws: &[Tensor<4>]| heads_mean(ws.last().expect("a layer"));
            let attention = &out.attention;
            if method == AttributionMethod::Attention {
                (last(&attention.cross), last(&attention.decoder_self))
            } else {
                let encoder = rollout(attention.encoder_self.iter().map(heads_mean));
                let decoder = rollout(attention.decoder_self.iter().map(heads_mean));
                (product(&last(&attention.cross), &encoder), decoder)
            }
        }
        AttributionMethod::Norm => norm_based(model, src, tgt)?,
        AttributionMethod::AltiPlus => alti::alti_plus(model, src, tgt)?,
        AttributionMethod::ValueZeroing => {
            value_zeroing::value_zeroing(model, source, &prefix, device)?
        }
        AttributionMethod::Gradient => {
            gradients(model, source, &prefix, &output, 1, false, device)?
        }
        AttributionMethod::GradientTimesInput => {
            gradients(model, source, &prefix, &output, 1, true, device)?
        }
        AttributionMethod::IntegratedGradients { steps } => {
            gradients(model, source, &prefix, &output, steps, true, device)?
        }
    };
    Ok(Attribution {
        method: method.name().to_string(),
        source_tokens: tokens.sources(source),
        target_tokens: tokens.targets(&output),
        prefix_tokens: tokens.targets(&prefix),
        source: source_rows,
        target: target_rows,
    })
}

/// Source rows and prefix rows: `[target token][source token]`, `[target token][prefix position]`.
pub(crate) type Rows = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// A `[1, rows, columns]` (or `[1, 1, rows, columns]`) tensor as rows.
pub(crate) fn matrix<const D: usize>(t: Tensor<D>) -> Vec<Vec<f32>> {
    let dims = t.dims();
    let columns = dims[D - 1];
    t.into_data()
        .try_to_vec::<f32>()
        .expect("f32 values")
        .chunks(columns.max(1))
        .map(<[f32]>::to_vec)
        .collect()
}

/// `a · b` of row-major matrices.
fn product(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let columns = b.first().map_or(0, Vec::len);
    a.iter()
        .map(|row| {
            (0..columns)
                .map(|j| row.iter().zip(b).map(|(&x, b_row)| x * b_row[j]).sum())
                .collect()
        })
        .collect()
}

/// `Â_L · … · Â_1` with `Â = 0.5·A + 0.5·I`, layers in order.
fn rollout(layers: impl Iterator<Item = Vec<Vec<f32>>>) -> Vec<Vec<f32>> {
    let mut result: Option<Vec<Vec<f32>>> = None;
    for a in layers {
        let n = a.len();
        let residual: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| 0.5 * a[i][j] + if i == j { 0.5 } else { 0.0 })
                    .collect()
            })
            .collect();
        result = Some(match result {
            None => residual,
            Some(below) => product(&residual, &below),
        });
    }
    result.unwrap_or_default()
}

/// The `n × n` identity.
fn identity(n: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect()
}

/// What one decoder layer's output at each position draws on: the layer's input at each prefix
/// position and each encoder output; each row sums to 1 over both.
pub(crate) struct DecoderLayerShares {
    /// `[position][prefix position]`.
    pub prefix: Vec<Vec<f32>>,
    /// `[position][source position]`.
    pub source: Vec<Vec<f32>>,
}

/// Per-layer contributions composed into each prediction's shares of the source tokens and the
/// target prefix, as ALTI+ composes them: the encoder's layers multiply (`R = C_L ⋯ C_1`, over
/// the source tokens), and each decoder layer maps the shares `M` of its input to
/// `prefix · M + source · R` (the source part through the encoder). Rows that sum to 1 in every
/// layer give rows that sum to 1.
pub(crate) fn compose(
    encoder: Vec<Vec<Vec<f32>>>,
    decoder: Vec<DecoderLayerShares>,
    s_len: usize,
    t_len: usize,
) -> Rows {
    let mut through_encoder = identity(s_len);
    for layer in encoder {
        through_encoder = product(&layer, &through_encoder);
    }
    let mut source = vec![vec![0.0; s_len]; t_len];
    let mut target = identity(t_len);
    for layer in decoder {
        let direct = product(&layer.source, &through_encoder);
        source = product(&layer.prefix, &source)
            .into_iter()
            .zip(direct)
            .map(|(a, b)| a.into_iter().zip(b).map(|(x, y)| x + y).collect())
            .collect();
        target = product(&layer.prefix, &target);
    }
    (source, target)
}

/// Each row divided by its sum (left as it is when the sum is 0).
pub(crate) fn normalised(rows: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    rows.into_iter()
        .map(|row| {
            let sum: f32 = row.iter().sum();
            if sum > 0.0 {
                row.into_iter().map(|x| x / sum).collect()
            } else {
                row
            }
        })
        .collect()
}

/// Kobayashi et al.'s `‖Σ_h α_h,ij v_h,j W^O_h‖` of the last decoder layer's cross- and
/// self-attention, rows normalised.
fn norm_based(model: &Transformer, src: Tensor<2, Int>, tgt: Tensor<2, Int>) -> Result<Rows> {
    let last = model.decoder.layers.len() - 1;
    let layer = &model.decoder.layers[last];
    let point = |block, site| HookPoint::attention(Stack::Decoder, last, block, site);
    let blocks = [
        (AttentionBlock::CrossAttention, &layer.cross_attn),
        (AttentionBlock::SelfAttention, &layer.self_attn),
    ];
    let mut hooks = Hooks::none();
    for (block, _) in &blocks {
        hooks = hooks
            .cache(point(*block, AttentionSite::Pattern))
            .cache(point(*block, AttentionSite::Value));
    }
    model
        .forward_hooked(src, tgt, None, None, &mut hooks)
        .map_err(|err| InspectError::Invalid(err.to_string()))?;
    let rank4 = |p: HookPoint| kept4(&hooks, p);
    let mut out = Vec::new();
    for (block, mha) in &blocks {
        let pattern = rank4(point(*block, AttentionSite::Pattern));
        let value = rank4(point(*block, AttentionSite::Value));
        let [_, _, q, k] = pattern.dims();
        let mixed = weighted_values(pattern, value, mha); // [q, k, d_model]
        let norms = mixed.powi_scalar(2).sum_dim(2).sqrt().reshape([q, k]);
        out.push(normalised(matrix(norms)));
    }
    let target = out.pop().expect("two blocks");
    let source = out.pop().expect("two blocks");
    Ok((source, target))
}

/// The rank-3 tensor `hooks` kept at `point`.
///
/// # Panics
/// If it was not asked to be kept: a bug of the caller.
pub(crate) fn kept3(hooks: &Hooks, point: HookPoint) -> Tensor<3> {
    match hooks.cached(&point) {
        Some(HookValue::Rank3(t)) => t.clone(),
        _ => unreachable!("{point} is kept as rank 3"),
    }
}

/// The rank-4 tensor `hooks` kept at `point`.
///
/// # Panics
/// If it was not asked to be kept: a bug of the caller.
pub(crate) fn kept4(hooks: &Hooks, point: HookPoint) -> Tensor<4> {
    match hooks.cached(&point) {
        Some(HookValue::Rank4(t)) => t.clone(),
        _ => unreachable!("{point} is kept as rank 4"),
    }
}

/// `Σ_h α_h,ij f_h(x_j)` with `f_h(x_j) = v_h,j W^O_h`: what key position `j` adds to query
/// position `i`'s attention output (the output bias left out), for a batch of one.
///
/// # Shapes
/// - `pattern`: `[1, heads, q_len, k_len]`
/// - `value`: `[1, heads, k_len, d_k]`
/// - returns `[q_len, k_len, d_model]`
pub(crate) fn weighted_values(
    pattern: Tensor<4>,
    value: Tensor<4>,
    mha: &MultiHeadAttention,
) -> Tensor<3> {
    let [_, h, q, k] = pattern.dims();
    let d_k = mha.d_k;
    let d_model = mha.out_proj.weight.dims()[1];
    let w_o = mha.out_proj.weight.val().reshape([1, h, d_k, d_model]);
    let transformed = value.matmul(w_o); // [1, h, k, d_model]: f_h(x_j)
    let weighted = pattern
        .reshape([1, h, q, k, 1])
        .expand([1, h, q, k, d_model])
        * transformed
            .reshape([1, h, 1, k, d_model])
            .expand([1, h, q, k, d_model]);
    weighted.sum_dim(1).reshape([q, k, d_model])
}

/// Gradient-based attributions: the gradient of each output token's log-probability with
/// respect to the scaled token embeddings, averaged over `steps` inputs scaled from 0 to 1
/// (midpoints; 1 step = the input itself), times the input when `times_input`; L2 norm over
/// `d_model`, rows normalised over source and prefix together. Every output position and step
/// is one row of a single batch: one backward pass.
fn gradients(
    model: &Transformer,
    source: &[usize],
    prefix: &[usize],
    output: &[usize],
    steps: usize,
    times_input: bool,
    device: &Device,
) -> Result<Rows> {
    let (n_out, s_len, t_len) = (output.len(), source.len(), prefix.len());
    let rows = n_out * steps;
    let (src, tgt) = (
        repeated_ids(source, rows, device),
        repeated_ids(prefix, rows, device),
    );
    // Token embeddings and what the positions add, from a pass that keeps the embeddings.
    let mut kept = Hooks::none()
        .cache(HookPoint::EmbedSource)
        .cache(HookPoint::EmbedTarget);
    model
        .forward_hooked(src.clone(), tgt.clone(), None, None, &mut kept)
        .map_err(|err| InspectError::Invalid(err.to_string()))?;
    let embedded = |point| kept3(&kept, point).detach();
    let e_src = model.src_embedding.forward(src.clone()).detach();
    let e_tgt = model.tgt_embedding().forward(tgt.clone()).detach();
    let pe_src = embedded(HookPoint::EmbedSource) - e_src.clone();
    let pe_tgt = embedded(HookPoint::EmbedTarget) - e_tgt.clone();
    // Row r = position t · steps + k, scaled by (k + 0.5) / steps (1 with one step).
    let scales: Vec<f32> = (0..rows)
        .map(|r| {
            if steps == 1 {
                1.0
            } else {
                ((r % steps) as f32 + 0.5) / steps as f32
            }
        })
        .collect();
    let scale =
        Tensor::<1>::from_data(TensorData::new(scales, [rows]), device).reshape([rows, 1, 1]);
    let x_src = (e_src.clone() * scale.clone()).detach().require_grad();
    let x_tgt = (e_tgt.clone() * scale).detach().require_grad();
    let mut hooks = Hooks::none()
        .patch(
            HookPoint::EmbedSource,
            Patch::all(Replacement::Value(HookValue::Rank3(x_src.clone() + pe_src))),
        )
        .patch(
            HookPoint::EmbedTarget,
            Patch::all(Replacement::Value(HookValue::Rank3(x_tgt.clone() + pe_tgt))),
        );
    let logits = model
        .forward_hooked(src, tgt, None, None, &mut hooks)
        .map_err(|err| InspectError::Invalid(err.to_string()))?;
    // Row r's own output position t = r / steps and its chosen token.
    let mut chosen = vec![0f32; rows * t_len];
    let mut tokens = vec![0i64; rows * t_len];
    for r in 0..rows {
        let t = r / steps;
        chosen[r * t_len + t] = 1.0;
        for (p, token) in tokens[r * t_len..(r + 1) * t_len].iter_mut().enumerate() {
            *token = output[p] as i64;
        }
    }
    let picked = log_softmax(logits, 2).gather(
        2,
        Tensor::<3, Int>::from_data(TensorData::new(tokens, [rows, t_len, 1]), device),
    ); // [rows, t_len, 1]
    let mask = Tensor::<3>::from_data(TensorData::new(chosen, [rows, t_len, 1]), device);
    let grads = (picked * mask).sum().backward();
    let gradient = |x: &Tensor<3>, input: Tensor<3>, len: usize| -> Vec<Vec<f32>> {
        let g = x
            .grad(&grads)
            .expect("the embeddings take part in the output"); // [rows, len, d]
        let d = g.dims()[2];
        let g = g
            .reshape([n_out, steps, len, d])
            .mean_dim(1)
            .reshape([n_out, len, d]);
        let g = if times_input {
            // The input at scale 1: one row per output position.
            let input = input
                .inner()
                .reshape([n_out, steps, len, d])
                .narrow(1, 0, 1);
            g * input.reshape([n_out, len, d])
        } else {
            g
        };
        matrix(g.powi_scalar(2).sum_dim(2).sqrt().reshape([n_out, len]))
    };
    let source_rows = gradient(&x_src, e_src, s_len);
    let target_rows = gradient(&x_tgt, e_tgt, t_len);
    // Shares of one prediction: each row over source and prefix together.
    let (source_rows, target_rows) = source_rows
        .into_iter()
        .zip(target_rows)
        .map(|(s, t)| {
            let sum: f32 = s.iter().chain(&t).sum();
            let share = |v: Vec<f32>| {
                if sum > 0.0 {
                    v.into_iter().map(|x| x / sum).collect()
                } else {
                    v
                }
            };
            (share(s), share(t))
        })
        .unzip();
    Ok((source_rows, target_rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_model::TransformerConfig;
    use tf_train::data::task::EOS;

    fn model(device: &Device) -> Transformer {
        device.seed(9);
        TransformerConfig::tiny(12, 12)
            .with_max_len(16)
            .init(device)
    }

    fn run(model: &Transformer, method: AttributionMethod, device: &Device) -> Attribution {
        let label = |id: usize| id.to_string();
        attribute(
            model,
            &[3, 4, 5],
            Some(&[6, 7]),
            6,
            method,
            Tokens::ours(&label),
            device,
        )
        .unwrap()
    }

    #[test]
    fn rows_have_the_shapes_and_sums_of_their_method() {
        let device = Device::flex().autodiff();
        let model = model(&device);
        for method in [
            AttributionMethod::Attention,
            AttributionMethod::Rollout,
            AttributionMethod::Norm,
            AttributionMethod::AltiPlus,
            AttributionMethod::ValueZeroing,
            AttributionMethod::Gradient,
            AttributionMethod::GradientTimesInput,
            AttributionMethod::IntegratedGradients { steps: 8 },
        ] {
            let a = run(&model, method, &device);
            assert_eq!(
                a.target_tokens,
                ["6".to_string(), "7".to_string(), EOS.to_string()]
            );
            assert_eq!((a.source.len(), a.source[0].len()), (3, 3), "{}", a.method);
            assert_eq!((a.target.len(), a.target[0].len()), (3, 3), "{}", a.method);
            for (t, (s, p)) in a.source.iter().zip(&a.target).enumerate() {
                assert!(s.iter().chain(p).all(|&x| x >= 0.0), "{}", a.method);
                // Causal: nothing after a row's own position.
                assert!(
                    p[t + 1..].iter().all(|&x| x.abs() <= 1e-6),
                    "{} row {t}: {p:?}",
                    a.method
                );
                let (s_sum, p_sum): (f32, f32) = (s.iter().sum(), p.iter().sum());
                assert!(s.iter().chain(p).all(|&x| x <= 1.0 + 1e-6), "{}", a.method);
                if method.gives_shares() {
                    assert!((s_sum + p_sum - 1.0).abs() <= 1e-4, "{}", a.method);
                } else {
                    assert!(
                        (s_sum - 1.0).abs() <= 1e-4 && (p_sum - 1.0).abs() <= 1e-4,
                        "{}",
                        a.method
                    );
                }
            }
        }
    }

    #[test]
    fn rollout_of_one_layer_by_hand() {
        // Â = 0.5·A + 0.5·I; two layers compose as Â_2 · Â_1.
        let a = vec![vec![0.0, 1.0], vec![1.0, 0.0]];
        assert_eq!(rollout([a.clone()].into_iter()), [[0.5, 0.5], [0.5, 0.5]]);
        let identity = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        assert_eq!(rollout([a, identity].into_iter()), [[0.5, 0.5], [0.5, 0.5]]);
    }

    #[test]
    fn composition_by_hand() {
        // Encoder: R = C₂·C₁ with C₁ = [[1, 0], [0.5, 0.5]], C₂ = [[0, 1], [1, 0]] = [[0.5, 0.5],
        // [1, 0]]. Decoder layer 1 (one position): 0.4 of its input, 0.6 of encoder output 1,
        // so M = 0.4·[0 | 1] + 0.6·[1, 0 | 0]; layer 2: half of that, half of encoder output 0:
        // source 0.5·0.6·[1, 0] + 0.5·[0.5, 0.5] = [0.55, 0.25], prefix 0.5·0.4 = 0.2.
        let encoder = vec![
            vec![vec![1.0, 0.0], vec![0.5, 0.5]],
            vec![vec![0.0, 1.0], vec![1.0, 0.0]],
        ];
        let decoder = vec![
            DecoderLayerShares {
                prefix: vec![vec![0.4]],
                source: vec![vec![0.0, 0.6]],
            },
            DecoderLayerShares {
                prefix: vec![vec![0.5]],
                source: vec![vec![1.0 - 0.5, 0.0]],
            },
        ];
        let (source, target) = compose(encoder, decoder, 2, 1);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(
            close(source[0][0], 0.55) && close(source[0][1], 0.25),
            "{source:?}"
        );
        assert!(close(target[0][0], 0.2), "{target:?}");
    }

    #[test]
    fn one_step_of_integrated_gradients_is_gradient_times_input() {
        // With one step at scale 1, integrated gradients are gradient × input.
        let device = Device::flex().autodiff();
        // One model for every run (tests seeding the device at once would change another).
        let model = model(&device);
        let one = run(
            &model,
            AttributionMethod::IntegratedGradients { steps: 1 },
            &device,
        );
        let gxi = run(&model, AttributionMethod::GradientTimesInput, &device);
        for (a, b) in one.source.iter().flatten().zip(gxi.source.iter().flatten()) {
            assert!((a - b).abs() <= 1e-5);
        }
        // More steps integrate along the path from the zero baseline: other shares.
        let ig = run(
            &model,
            AttributionMethod::IntegratedGradients { steps: 16 },
            &device,
        );
        assert!(
            ig.source
                .iter()
                .flatten()
                .zip(gxi.source.iter().flatten())
                .any(|(a, b)| (a - b).abs() > 1e-4)
        );
    }

    #[test]
    fn gradients_need_an_autodiff_device() {
        let device = Device::flex();
        let err = attribute(
            &model(&device),
            &[3],
            None,
            4,
            AttributionMethod::Gradient,
            Tokens::ours(&|id| id.to_string()),
            &device,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("needs gradients"), "{err}");
    }
}
