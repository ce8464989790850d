//! The hooked forward pass: [`Transformer::forward_hooked`] reads and replaces any activation
//! named by a [`HookPoint`] (see [`tf_attention::hooks`] for the names and shapes), after
//! checking every hook against the model and the input's sizes. With [`Hooks::none`] it
//! computes exactly what [`Transformer::forward`] does.

use burn::tensor::{Bool, Int, Tensor};
use tf_attention::hooks::{AttentionBlock, AttentionSite, LayerSite, Stack};
use tf_attention::{HookPoint, HookValue, Hooks, MultiHeadAttention, Replacement, Weights};

use crate::decoder::DecoderOptions;
use crate::transformer::Transformer;

/// A hook that does not fit the model or the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("hook {point}: {why}")]
pub struct HookError {
    /// The point, as named.
    pub point: String,
    /// What does not fit.
    pub why: String,
}

impl Transformer {
    /// Teacher-forced logits, as [`forward`](Self::forward), with every hook of `hooks` applied
    /// in the order the pass meets its point; the tensors asked for are kept in `hooks`.
    ///
    /// # Errors
    /// If a hook names a layer, head or position the model or the input does not have, or its
    /// replacement does not fit the tensor (see [`check_hooks`](Self::check_hooks)).
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub fn forward_hooked(
        &self,
        src: Tensor<2, Int>,
        tgt: Tensor<2, Int>,
        src_pad_mask: Option<Tensor<2, Bool>>,
        tgt_pad_mask: Option<Tensor<2, Bool>>,
        hooks: &mut Hooks,
    ) -> Result<Tensor<3>, HookError> {
        let [batch, src_len] = src.dims();
        let [_, tgt_len] = tgt.dims();
        self.check_hooks(hooks, batch, src_len, tgt_len)?;
        let (memory, _) = self.encode_inner(src, src_pad_mask, Weights::Omit, Some(&mut *hooks));
        let layer_memory = self.decoder.memory(memory.output, memory.pad_mask);
        let options = DecoderOptions {
            tgt_pad_mask,
            hooks: Some(hooks),
            ..Default::default()
        };
        Ok(self.decode_inner(tgt, &layer_memory, 0, options).0)
    }

    /// The logits a decoder residual stream would give if it were the last layer's output: the
    /// decoder's final LayerNorm (if any) and the output projection (the logit lens).
    ///
    /// # Shapes
    /// - `residual`: `[batch, tgt_len, d_model]`, e.g. `dec.{l}.resid_post`
    /// - returns `[batch, tgt_len, tgt_vocab]`
    pub fn unembed(&self, residual: Tensor<3>) -> Tensor<3> {
        self.project(self.decoder.final_norm.forward(residual))
    }

    /// Checks every hook of `hooks` against this model and an input of `batch` sentences,
    /// `src_len` source and `tgt_len` target positions.
    ///
    /// # Errors
    /// The first hook that names a layer, head or position that does not exist, patches heads
    /// of a tensor without heads, or brings a replacement that does not fit.
    pub fn check_hooks(
        &self,
        hooks: &Hooks,
        batch: usize,
        src_len: usize,
        tgt_len: usize,
    ) -> Result<(), HookError> {
        for point in hooks.cache_points() {
            self.hook_dims(point, batch, src_len, tgt_len)?;
        }
        for (point, patch) in hooks.patches() {
            let dims = self.hook_dims(point, batch, src_len, tgt_len)?;
            let error = |why: String| HookError {
                point: point.to_string(),
                why,
            };
            if let Some(heads) = &patch.heads {
                if !point.has_heads() {
                    return Err(error("has no heads to patch".into()));
                }
                if let Some(&head) = heads.iter().find(|&&h| h >= dims[1]) {
                    return Err(error(format!("head {head} of {}", dims[1])));
                }
            }
            if let Some(positions) = &patch.positions {
                let axis = if point.has_heads() { 2 } else { 1 };
                if let Some(&p) = positions.iter().find(|&&p| p >= dims[axis]) {
                    return Err(error(format!("position {p} of {}", dims[axis])));
                }
            }
            if let Replacement::Value(value) = &patch.with {
                let given = value.dims();
                let wrong_rank = matches!(
                    (value, point.has_heads()),
                    (HookValue::Rank3(_), true) | (HookValue::Rank4(_), false)
                );
                let fits = !wrong_rank
                    && given.len() == dims.len()
                    && given.iter().zip(&dims).all(|(&g, &d)| g == d || g == 1);
                if !fits {
                    return Err(error(format!(
                        "the replacement is {given:?}, which does not fit the tensor's {dims:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// The shape of the tensor at `point` for this input.
    ///
    /// # Errors
    /// If the point names a layer the model does not have.
    pub fn hook_dims(
        &self,
        point: &HookPoint,
        batch: usize,
        src_len: usize,
        tgt_len: usize,
    ) -> Result<Vec<usize>, HookError> {
        let d_model = self.src_embedding.weight().dims()[1];
        let (stack, layer, site) = match *point {
            HookPoint::EmbedSource => return Ok(vec![batch, src_len, d_model]),
            HookPoint::EmbedTarget => return Ok(vec![batch, tgt_len, d_model]),
            HookPoint::Logits => return Ok(vec![batch, tgt_len, self.tgt_vocab()]),
            HookPoint::Layer { stack, layer, site } => (stack, layer, site),
        };
        let layers = match stack {
            Stack::Encoder => self.encoder.layers.len(),
            Stack::Decoder => self.decoder.layers.len(),
        };
        if layer >= layers {
            return Err(HookError {
                point: point.to_string(),
                why: format!("layer {layer} of {layers}"),
            });
        }
        let len = match stack {
            Stack::Encoder => src_len,
            Stack::Decoder => tgt_len,
        };
        let (attention, d_ff): (&MultiHeadAttention, usize) = match stack {
            Stack::Encoder => {
                let l = &self.encoder.layers[layer];
                (&l.self_attn, l.ffn.inner.weight.dims()[1])
            }
            Stack::Decoder => {
                let l = &self.decoder.layers[layer];
                let attention = match site {
                    LayerSite::Attention(AttentionBlock::CrossAttention, _) => &l.cross_attn,
                    _ => &l.self_attn,
                };
                (attention, l.ffn.inner.weight.dims()[1])
            }
        };
        Ok(match site {
            LayerSite::FfnHidden => vec![batch, len, d_ff],
            LayerSite::Attention(block, site) => {
                let k_len = match block {
                    AttentionBlock::SelfAttention => len,
                    AttentionBlock::CrossAttention => src_len,
                };
                let (h, d_k) = (attention.n_heads, attention.d_k);
                match site {
                    AttentionSite::Query | AttentionSite::Z => vec![batch, h, len, d_k],
                    AttentionSite::Key | AttentionSite::Value => vec![batch, h, k_len, d_k],
                    AttentionSite::Pattern => vec![batch, h, len, k_len],
                    AttentionSite::Out => vec![batch, len, d_model],
                }
            }
            _ => vec![batch, len, d_model],
        })
    }

    /// Size of the target vocabulary (the output projection's width).
    pub fn tgt_vocab(&self) -> usize {
        match &self.generator {
            Some(generator) => generator.weight.dims()[1],
            None => self.tgt_embedding().weight().dims()[0],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TransformerConfig;
    use burn::tensor::Device;
    use tf_attention::{Patch, max_abs_diff};
    use tf_layers::NormPosition;

    fn tiny() -> TransformerConfig {
        TransformerConfig::tiny(13, 11).with_max_len(16)
    }

    fn input(device: &Device) -> (Tensor<2, Int>, Tensor<2, Int>) {
        (
            Tensor::from_ints([[3, 4, 5, 6], [7, 8, 9, 10]], device),
            Tensor::from_ints([[1, 6, 7], [1, 3, 2]], device),
        )
    }

    fn point(name: &str) -> HookPoint {
        name.parse().unwrap()
    }

    #[test]
    fn no_hooks_and_caching_everything_change_nothing() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let (src, tgt) = input(&device);
        let plain = model.forward(src.clone(), tgt.clone(), None, None);
        let none = model
            .forward_hooked(src.clone(), tgt.clone(), None, None, &mut Hooks::none())
            .unwrap();
        assert_eq!(
            plain.clone().into_data().try_to_vec::<f32>().unwrap(),
            none.into_data().try_to_vec::<f32>().unwrap()
        );
        let mut all = Hooks::none().cache_all();
        let cached = model
            .forward_hooked(src, tgt, None, None, &mut all)
            .unwrap();
        // Caching forms the patterns (explicit path): equal up to rounding.
        assert!(max_abs_diff(plain.clone(), cached) <= 1e-5);
        let cache = all.into_cache();
        // 2 + 2 layers: embeddings, logits, 11 encoder points and 18 decoder points a layer.
        assert_eq!(cache.len(), 3 + 2 * 11 + 2 * 18);
        let dims = |name: &str| cache[&point(name)].dims();
        assert_eq!(dims("enc.1.attn.pattern"), [2, 2, 4, 4]);
        assert_eq!(dims("dec.0.cross.pattern"), [2, 2, 3, 4]);
        assert_eq!(dims("dec.1.cross.k"), [2, 2, 4, 8]);
        assert_eq!(dims("dec.1.ffn.hidden"), [2, 3, 32]);
        assert_eq!(dims("logits"), [2, 3, 11]);
        let HookValue::Rank3(logits) = cache[&point("logits")].clone() else {
            panic!("logits are rank 3")
        };
        assert!(max_abs_diff(plain, logits) <= 1e-5);
    }

    #[test]
    fn every_hook_shape_is_what_hook_dims_says() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let (src, tgt) = input(&device);
        let mut all = Hooks::none().cache_all();
        model
            .forward_hooked(src, tgt, None, None, &mut all)
            .unwrap();
        for (point, value) in all.into_cache() {
            assert_eq!(
                value.dims(),
                model.hook_dims(&point, 2, 4, 3).unwrap(),
                "{point}"
            );
        }
    }

    #[test]
    fn patching_the_last_residual_stream_restores_the_clean_logits() {
        let device = Device::flex();
        for norm in [NormPosition::Post, NormPosition::Pre] {
            let config = tiny();
            let layer = config.layer.clone().with_norm_position(norm);
            let model = config.with_layer(layer).init(&device);
            let (clean_src, tgt) = input(&device);
            let corrupt_src = Tensor::from_ints([[3, 12, 5, 6], [7, 8, 2, 10]], &device);
            let last = point("dec.1.resid_post");
            let mut clean = Hooks::none().cache(last);
            let clean_logits = model
                .forward_hooked(clean_src, tgt.clone(), None, None, &mut clean)
                .unwrap();
            let clean_resid = clean.cached(&last).unwrap().clone();
            let corrupt = model.forward(corrupt_src.clone(), tgt.clone(), None, None);
            assert!(max_abs_diff(corrupt, clean_logits.clone()) > 1e-3);
            let mut patched =
                Hooks::none().patch(last, Patch::all(Replacement::Value(clean_resid)));
            let restored = model
                .forward_hooked(corrupt_src, tgt, None, None, &mut patched)
                .unwrap();
            assert_eq!(
                restored.into_data().try_to_vec::<f32>().unwrap(),
                clean_logits.into_data().try_to_vec::<f32>().unwrap(),
                "{norm:?}"
            );
        }
    }

    #[test]
    fn zeroing_a_heads_z_equals_gating_it_off() {
        let device = Device::flex();
        let mut model = tiny().init(&device);
        let (src, tgt) = input(&device);
        let mut hooks =
            Hooks::none().patch(point("dec.1.cross.z"), Patch::zeros().with_heads(vec![1]));
        let ablated = model
            .forward_hooked(src.clone(), tgt.clone(), None, None, &mut hooks)
            .unwrap();
        let layer = &mut model.decoder.layers[1];
        layer.cross_attn = layer
            .cross_attn
            .gate_heads(Tensor::from_floats([1.0, 0.0], &device));
        let gated = model.forward(src, tgt, None, None);
        assert!(max_abs_diff(ablated, gated) <= 1e-5);
    }

    #[test]
    fn a_patched_pattern_is_what_the_values_are_mixed_by() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let (src, tgt) = input(&device);
        // Uniform cross-attention over the 4 source positions, in every head of layer 0.
        let uniform = Tensor::<4>::ones([1, 1, 1, 4], &device).div_scalar(4.0);
        let pattern = point("dec.0.cross.pattern");
        let z = point("dec.0.cross.z");
        let mut hooks = Hooks::none()
            .patch(
                pattern,
                Patch::all(Replacement::Value(HookValue::Rank4(uniform))),
            )
            .cache(z);
        model
            .forward_hooked(src.clone(), tgt.clone(), None, None, &mut hooks)
            .unwrap();
        let HookValue::Rank4(z) = hooks.cached(&z).unwrap().clone() else {
            panic!("z is rank 4")
        };
        // Each head's z is then the mean of its values over the source.
        let mut values = Hooks::none().cache(point("dec.0.cross.v"));
        model
            .forward_hooked(src, tgt, None, None, &mut values)
            .unwrap();
        let HookValue::Rank4(v) = values.cached(&point("dec.0.cross.v")).unwrap().clone() else {
            panic!("v is rank 4")
        };
        let mean = v.mean_dim(2).expand([2, 2, 3, 8]);
        assert!(max_abs_diff(z, mean) <= 1e-5);
    }

    #[test]
    fn hooks_that_do_not_fit_are_refused_by_name() {
        let device = Device::flex();
        let model = tiny().init(&device);
        let (src, tgt) = input(&device);
        let cases = [
            (
                Hooks::none().cache(point("enc.2.resid_post")),
                "enc.2.resid_post: layer 2 of 2",
            ),
            (
                Hooks::none().patch(point("dec.0.attn.z"), Patch::zeros().with_heads(vec![2])),
                "head 2 of 2",
            ),
            (
                Hooks::none().patch(point("enc.0.resid_mid"), Patch::zeros().with_heads(vec![0])),
                "has no heads",
            ),
            (
                Hooks::none().patch(point("embed.tgt"), Patch::zeros().with_positions(vec![3])),
                "position 3 of 3",
            ),
            (
                Hooks::none().patch(
                    point("enc.0.resid_pre"),
                    Patch::all(Replacement::Value(HookValue::Rank3(Tensor::zeros(
                        [2, 5, 16],
                        &device,
                    )))),
                ),
                "does not fit",
            ),
        ];
        for (mut hooks, expected) in cases {
            let err = model
                .forward_hooked(src.clone(), tgt.clone(), None, None, &mut hooks)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err}");
        }
    }
}
