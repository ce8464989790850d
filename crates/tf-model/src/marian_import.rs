//! MarianMT, the model of the opus-mt translators, from Hugging Face `transformers`
//! (`MarianMTModel.save_pretrained`): its `config.json` read into a [`TransformerConfig`] and its
//! `model.safetensors` loaded into a [`Transformer`].
//!
//! Marian is the paper's post-norm encoder–decoder with a few choices of its own, each a general
//! option of our configs: the sinusoids laid out as every sine then every cosine
//! ([`PositionalEncodingKind::SinusoidalHalves`]), SiLU ("swish") feed-forward layers, a bias on
//! the tied output projection (`final_logits_bias`, [`TransformerConfig::output_bias`]),
//! embeddings scaled by `√d_model` or not ([`TransformerConfig::scale_embedding`]), no final
//! LayerNorms, and the pad token as the decoder's start token ([`MarianConfig::decoder_start`]).
//! `transformers`' Marian layers are post-norm whatever `normalize_before` says; so are ours
//! here, to compute what `transformers` computes.
//!
//! The file's tensors are checked against the configuration first (each missing, unexpected,
//! mis-shaped or non-`float32` tensor is named), then put into our layout: the separate query,
//! key and value projections of each attention are concatenated into our fused `in_proj`, and
//! [`load_state_dict`] loads the result.

use burn::tensor::Device;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tf_attention::ConfigError;
use tf_layers::{
    FeedForwardActivation, NormPosition, PositionalEncodingKind, TransformerLayerConfig,
    sinusoid_halves,
};

use crate::config::{EmbeddingSharing, FinalNorm, TransformerConfig};
use crate::torch_import::{
    Imported, TorchImportError, TorchParameter, checked_file, load_state_dict,
};
use crate::transformer::Transformer;

/// The fields of a MarianMT `config.json` that shape the model, with `MarianConfig`'s own
/// defaults for those `save_pretrained` leaves out (it writes only what differs from them);
/// other fields are ignored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct MarianConfig {
    /// `model_type`; `"marian"` when given.
    #[serde(default)]
    pub model_type: Option<String>,
    /// Source vocabulary (and the target one when shared). Default: 58101.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Target vocabulary of a model with separate vocabularies. Default: `vocab_size`.
    #[serde(default)]
    pub decoder_vocab_size: Option<usize>,
    /// Positions of the sinusoidal tables. Default: 1024.
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Default: 12.
    #[serde(default = "defaults::layers")]
    pub encoder_layers: usize,
    /// Default: 12.
    #[serde(default = "defaults::layers")]
    pub decoder_layers: usize,
    /// Default: 4096.
    #[serde(default = "defaults::ffn_dim")]
    pub encoder_ffn_dim: usize,
    /// Default: 4096.
    #[serde(default = "defaults::ffn_dim")]
    pub decoder_ffn_dim: usize,
    /// Default: 16.
    #[serde(default = "defaults::heads")]
    pub encoder_attention_heads: usize,
    /// Default: 16.
    #[serde(default = "defaults::heads")]
    pub decoder_attention_heads: usize,
    /// `"swish"`/`"silu"`, `"relu"` or `"gelu"`. Default: `"gelu"`.
    #[serde(default = "defaults::activation_function")]
    pub activation_function: String,
    /// Default: 1024.
    #[serde(default = "defaults::d_model")]
    pub d_model: usize,
    /// Default: 0.1.
    #[serde(default = "defaults::dropout")]
    pub dropout: f64,
    /// Default: 0.
    #[serde(default)]
    pub attention_dropout: f64,
    /// Dropout on the feed-forward hidden activations, which our layers do not have: only
    /// training further would notice. Default: 0.
    #[serde(default)]
    pub activation_dropout: f64,
    /// Default: 58100.
    #[serde(default = "defaults::pad_token_id")]
    pub decoder_start_token_id: usize,
    /// Multiply embeddings by `√d_model`. Default: false (opus-mt models set it).
    #[serde(default)]
    pub scale_embedding: bool,
    /// Default: 58100.
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: usize,
    /// Default: 0.
    #[serde(default)]
    pub eos_token_id: usize,
    /// One embedding for source and target. Default: true.
    #[serde(default = "defaults::yes")]
    pub share_encoder_decoder_embeddings: bool,
    /// The output projection is the target embedding. Default: true.
    #[serde(default = "defaults::yes")]
    pub tie_word_embeddings: bool,
    /// Marian-NMT's pre-norm setting, which `transformers`' `MarianMTModel` ignores (its layers
    /// are post-norm); read only to be reported.
    #[serde(default)]
    pub normalize_before: bool,
}

mod defaults {
    pub fn vocab_size() -> usize {
        58_101
    }
    pub fn max_position_embeddings() -> usize {
        1024
    }
    pub fn layers() -> usize {
        12
    }
    pub fn ffn_dim() -> usize {
        4096
    }
    pub fn heads() -> usize {
        16
    }
    pub fn activation_function() -> String {
        "gelu".into()
    }
    pub fn d_model() -> usize {
        1024
    }
    pub fn dropout() -> f64 {
        0.1
    }
    pub fn pad_token_id() -> usize {
        58_100
    }
    pub fn yes() -> bool {
        true
    }
}

const NAME: &str = "MarianConfig";

/// A LayerNorm's epsilon in `transformers`' Marian (`nn.LayerNorm`'s default).
pub(crate) const LAYER_NORM_EPS: f64 = 1e-5;

/// Largest difference allowed between a positional table in the file and ours.
const POSITION_TOLERANCE: f32 = 1e-4;

impl MarianConfig {
    /// The target vocabulary's size.
    pub fn tgt_vocab(&self) -> usize {
        if self.share_encoder_decoder_embeddings {
            self.vocab_size
        } else {
            self.decoder_vocab_size.unwrap_or(self.vocab_size)
        }
    }

    /// The token the decoder starts from (MarianMT: the pad token).
    pub fn decoder_start(&self) -> usize {
        self.decoder_start_token_id
    }

    /// What this configuration sets that the imported model does not carry, one line each
    /// (nothing that changes a translation).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.normalize_before {
            notes.push(
                "normalize_before is true, but transformers' MarianMTModel ignores it and runs \
                 post-norm layers; so does the imported model"
                    .to_string(),
            );
        }
        if self.activation_dropout > 0.0 {
            notes.push(format!(
                "activation_dropout {} (on the feed-forward hidden activations) has no \
                 counterpart here; it only matters when training further",
                self.activation_dropout
            ));
        }
        notes
    }

    /// Our configuration of the same model.
    ///
    /// # Errors
    /// What we cannot represent: encoder and decoder layers of different widths or head counts,
    /// an activation other than SiLU/ReLU/GELU, one embedding for both sides but an untied
    /// output projection, token ids outside the vocabularies.
    pub fn transformer(&self) -> Result<TransformerConfig, ConfigError> {
        if let Some(kind) = &self.model_type
            && kind != "marian"
        {
            return Err(ConfigError::new(
                NAME,
                format!("model_type must be \"marian\", got {kind:?}"),
            ));
        }
        for (what, encoder, decoder) in [
            (
                "attention_heads",
                self.encoder_attention_heads,
                self.decoder_attention_heads,
            ),
            ("ffn_dim", self.encoder_ffn_dim, self.decoder_ffn_dim),
        ] {
            if encoder != decoder {
                return Err(ConfigError::new(
                    NAME,
                    format!(
                        "encoder_{what} ({encoder}) and decoder_{what} ({decoder}) differ; every \
                         layer here has the same shape"
                    ),
                ));
            }
        }
        let activation = match self.activation_function.as_str() {
            "swish" | "silu" => FeedForwardActivation::Silu,
            "relu" => FeedForwardActivation::Relu,
            "gelu" => FeedForwardActivation::Gelu,
            other => {
                return Err(ConfigError::new(
                    NAME,
                    format!(
                        "activation_function must be \"swish\", \"silu\", \"relu\" or \"gelu\", \
                         got {other:?}"
                    ),
                ));
            }
        };
        let sharing = match (
            self.share_encoder_decoder_embeddings,
            self.tie_word_embeddings,
        ) {
            (true, true) => EmbeddingSharing::All,
            (false, true) => EmbeddingSharing::TargetOutput,
            (false, false) => EmbeddingSharing::Separate,
            (true, false) => {
                return Err(ConfigError::new(
                    NAME,
                    "share_encoder_decoder_embeddings with tie_word_embeddings false (one \
                     embedding, a separate output projection) is not supported",
                ));
            }
        };
        let tgt_vocab = self.tgt_vocab();
        for (what, id) in [
            ("pad_token_id", self.pad_token_id),
            ("eos_token_id", self.eos_token_id),
            ("decoder_start_token_id", self.decoder_start_token_id),
        ] {
            if id >= tgt_vocab {
                return Err(ConfigError::new(
                    NAME,
                    format!("{what} {id} is outside the target vocabulary of {tgt_vocab} tokens"),
                ));
            }
        }
        let layer = TransformerLayerConfig::new()
            .with_d_model(self.d_model)
            .with_n_heads(self.encoder_attention_heads)
            .with_d_ff(self.encoder_ffn_dim)
            .with_dropout(self.dropout)
            .with_attention_dropout(self.attention_dropout)
            .with_activation(activation)
            .with_norm_position(NormPosition::Post)
            .with_layer_norm_eps(LAYER_NORM_EPS);
        let config = TransformerConfig::new(self.vocab_size, tgt_vocab)
            .with_layer(layer)
            .with_n_encoder_layers(self.encoder_layers)
            .with_n_decoder_layers(self.decoder_layers)
            .with_final_norm(FinalNorm::Never)
            .with_positional_encoding(PositionalEncodingKind::SinusoidalHalves)
            .with_max_len(self.max_position_embeddings)
            .with_embedding_sharing(sharing)
            .with_scale_embedding(self.scale_embedding)
            .with_output_bias(sharing != EmbeddingSharing::Separate);
        config.validate()?;
        Ok(config)
    }

    /// Every tensor a `MarianMTModel` file may hold, under `transformers`' names. The tied
    /// copies of an embedding (`save_pretrained` keeps one of them) and the positional tables
    /// (not saved by recent versions) are optional; [`import_marian`] checks that each of our
    /// matrices has a source.
    pub fn parameters(&self) -> Vec<TorchParameter> {
        let d = self.d_model;
        let ff = self.encoder_ffn_dim;
        let tensor = |name: String, shape: Vec<usize>, optional| TorchParameter {
            torch_name: name.clone(),
            name,
            shape,
            optional,
        };
        let mut params = Vec::new();
        let linear = |params: &mut Vec<TorchParameter>, name: &str, out, input| {
            params.push(tensor(format!("{name}.weight"), vec![out, input], false));
            params.push(tensor(format!("{name}.bias"), vec![out], false));
        };
        let norm = |params: &mut Vec<TorchParameter>, name: &str| {
            for part in ["weight", "bias"] {
                params.push(tensor(format!("{name}.{part}"), vec![d], false));
            }
        };
        for (stack, n_layers, attentions) in [
            ("encoder", self.encoder_layers, &["self_attn"][..]),
            (
                "decoder",
                self.decoder_layers,
                &["self_attn", "encoder_attn"][..],
            ),
        ] {
            for i in 0..n_layers {
                let layer = format!("model.{stack}.layers.{i}");
                for attention in attentions {
                    for projection in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                        linear(
                            &mut params,
                            &format!("{layer}.{attention}.{projection}"),
                            d,
                            d,
                        );
                    }
                    norm(&mut params, &format!("{layer}.{attention}_layer_norm"));
                }
                linear(&mut params, &format!("{layer}.fc1"), ff, d);
                linear(&mut params, &format!("{layer}.fc2"), d, ff);
                norm(&mut params, &format!("{layer}.final_layer_norm"));
            }
            params.push(tensor(
                format!("model.{stack}.embed_positions.weight"),
                vec![self.max_position_embeddings, d],
                true,
            ));
        }
        let (src, tgt) = (self.vocab_size, self.tgt_vocab());
        if self.share_encoder_decoder_embeddings {
            params.push(tensor("model.shared.weight".into(), vec![src, d], true));
        }
        for (name, vocab) in [
            ("model.encoder.embed_tokens.weight", src),
            ("model.decoder.embed_tokens.weight", tgt),
            ("lm_head.weight", tgt),
        ] {
            params.push(tensor(name.into(), vec![vocab, d], true));
        }
        params.push(tensor("final_logits_bias".into(), vec![1, tgt], true));
        params
    }
}

/// A MarianMT model in our modules, with what its configuration set that the model does not
/// carry.
#[derive(Debug)]
pub struct ImportedMarian {
    /// Our configuration of the model.
    pub config: TransformerConfig,
    /// The model, with the file's weights.
    pub model: Transformer,
    /// [`MarianConfig::notes`].
    pub notes: Vec<String>,
}

/// Loads a `MarianMTModel`'s `model.safetensors` (bytes) into a model of
/// [`config.transformer()`](MarianConfig::transformer) on `device`.
///
/// # Errors
/// If the configuration cannot be represented, or the file is not safetensors, lacks a tensor,
/// has one we do not know, of the wrong shape or not `float32`, or holds positional tables that
/// are not Marian's sinusoids.
pub fn import_marian(
    marian: &MarianConfig,
    safetensors: &[u8],
    device: &Device,
) -> Result<ImportedMarian, TorchImportError> {
    let config = marian.transformer()?;
    let (file, _) = checked_file(safetensors, &marian.parameters())?;
    let ours = OurTensors::from_marian(marian, &config, &file)?;
    let bytes = serialize_f32(&ours.tensors)?;
    let Imported { module, .. } = load_state_dict(config.try_init(device)?, &bytes, &ours.params)?;
    Ok(ImportedMarian {
        config,
        model: module,
        notes: marian.notes(),
    })
}

/// The file's tensors renamed to our module paths, in PyTorch's layout (`[out, in]`), `float32`.
struct OurTensors {
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    params: Vec<TorchParameter>,
}

impl OurTensors {
    fn from_marian(
        marian: &MarianConfig,
        config: &TransformerConfig,
        file: &SafeTensors<'_>,
    ) -> Result<Self, TorchImportError> {
        let mut ours = Self {
            tensors: Vec::new(),
            params: Vec::new(),
        };
        let read = |name: &str| file.tensor(name).ok().map(|view| floats(&view));
        let required = |name: &str| {
            read(name)
                .ok_or_else(|| TorchImportError::Mismatch(vec![format!("missing tensor `{name}`")]))
        };
        let d = marian.d_model;
        for (stack, n_layers) in [
            ("encoder", marian.encoder_layers),
            ("decoder", marian.decoder_layers),
        ] {
            let attentions: &[(&str, &str)] = if stack == "encoder" {
                &[("self_attn", "self_attn")]
            } else {
                &[("self_attn", "self_attn"), ("encoder_attn", "cross_attn")]
            };
            for i in 0..n_layers {
                let theirs = format!("model.{stack}.layers.{i}");
                let layer = format!("{stack}.layers.{i}");
                for (attention, our_attention) in attentions {
                    let projection =
                        |p: &str, part: &str| format!("{theirs}.{attention}.{p}.{part}");
                    // Our fused projection is `[q; k; v]` in PyTorch's layout.
                    let mut weight = Vec::with_capacity(3 * d * d);
                    let mut bias = Vec::with_capacity(3 * d);
                    for p in ["q_proj", "k_proj", "v_proj"] {
                        weight.extend(required(&projection(p, "weight"))?);
                        bias.extend(required(&projection(p, "bias"))?);
                    }
                    let ours_at = format!("{layer}.{our_attention}");
                    ours.push(format!("{ours_at}.in_proj.weight"), vec![3 * d, d], weight);
                    ours.push(format!("{ours_at}.in_proj.bias"), vec![3 * d], bias);
                    for part in ["weight", "bias"] {
                        let shape = if part == "weight" {
                            vec![d, d]
                        } else {
                            vec![d]
                        };
                        let values = required(&projection("out_proj", part))?;
                        ours.push(format!("{ours_at}.out_proj.{part}"), shape, values);
                    }
                    let residual = format!("{layer}.{our_attention}_residual.norm");
                    ours.norm(
                        &required,
                        &format!("{theirs}.{attention}_layer_norm"),
                        &residual,
                        d,
                    )?;
                }
                let ff = marian.encoder_ffn_dim;
                for (fc, ours_at, out, input) in [("fc1", "inner", ff, d), ("fc2", "outer", d, ff)]
                {
                    let ours_at = format!("{layer}.ffn.{ours_at}");
                    let weight = required(&format!("{theirs}.{fc}.weight"))?;
                    ours.push(format!("{ours_at}.weight"), vec![out, input], weight);
                    let bias = required(&format!("{theirs}.{fc}.bias"))?;
                    ours.push(format!("{ours_at}.bias"), vec![out], bias);
                }
                let residual = format!("{layer}.ffn_residual.norm");
                ours.norm(
                    &required,
                    &format!("{theirs}.final_layer_norm"),
                    &residual,
                    d,
                )?;
            }
            if let Some(table) = read(&format!("model.{stack}.embed_positions.weight")) {
                check_positions(&table, stack, marian)?;
            }
        }

        // Each of our embedding matrices from the first of its tied copies the file holds.
        let first_of = |names: &[&str]| -> Result<Vec<f32>, TorchImportError> {
            names.iter().find_map(|name| read(name)).ok_or_else(|| {
                TorchImportError::Mismatch(vec![format!(
                    "missing tensor: none of {names:?} is in the file"
                )])
            })
        };
        let (src, tgt) = (config.src_vocab, config.tgt_vocab);
        const SHARED: &str = "model.shared.weight";
        const ENCODER: &str = "model.encoder.embed_tokens.weight";
        const DECODER: &str = "model.decoder.embed_tokens.weight";
        const LM_HEAD: &str = "lm_head.weight";
        let source = if marian.share_encoder_decoder_embeddings {
            first_of(&[SHARED, ENCODER, DECODER, LM_HEAD])?
        } else {
            first_of(&[ENCODER])?
        };
        ours.push(
            "src_embedding.embedding.weight".into(),
            vec![src, d],
            source,
        );
        let bias = read("final_logits_bias").unwrap_or_else(|| vec![0.0; tgt]);
        match config.embedding_sharing {
            EmbeddingSharing::All => {}
            EmbeddingSharing::TargetOutput => {
                let target = first_of(&[DECODER, LM_HEAD])?;
                ours.push(
                    "tgt_embedding.embedding.weight".into(),
                    vec![tgt, d],
                    target,
                );
            }
            EmbeddingSharing::Separate => {
                let target = first_of(&[DECODER])?;
                ours.push(
                    "tgt_embedding.embedding.weight".into(),
                    vec![tgt, d],
                    target,
                );
                ours.push(
                    "generator.weight".into(),
                    vec![tgt, d],
                    first_of(&[LM_HEAD])?,
                );
                ours.push("generator.bias".into(), vec![tgt], bias.clone());
            }
        }
        if config.output_bias {
            ours.push("output_bias".into(), vec![tgt], bias);
        }
        Ok(ours)
    }

    fn push(&mut self, name: String, shape: Vec<usize>, values: Vec<f32>) {
        self.params.push(TorchParameter {
            torch_name: name.clone(),
            name: name.clone(),
            shape: shape.clone(),
            optional: false,
        });
        self.tensors.push((name, shape, values));
    }

    /// A LayerNorm: `transformers`' `weight` and `bias` are our `gamma` and `beta`.
    fn norm(
        &mut self,
        required: &impl Fn(&str) -> Result<Vec<f32>, TorchImportError>,
        theirs: &str,
        ours: &str,
        d: usize,
    ) -> Result<(), TorchImportError> {
        self.push(
            format!("{ours}.gamma"),
            vec![d],
            required(&format!("{theirs}.weight"))?,
        );
        self.push(
            format!("{ours}.beta"),
            vec![d],
            required(&format!("{theirs}.bias"))?,
        );
        Ok(())
    }
}

/// Named `float32` tensors (shape, row-major values) as a safetensors file.
pub(crate) fn serialize_f32(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<Vec<u8>, TorchImportError> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape, values)| {
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), shape.clone(), bytes)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|err| TorchImportError::Load(format!("{name}: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, None).map_err(|err| TorchImportError::Load(err.to_string()))
}

/// A tensor's values; the caller has checked that it is `float32`.
fn floats(view: &TensorView<'_>) -> Vec<f32> {
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Refuses a positional table that is not the sinusoids our model adds in their place.
fn check_positions(
    table: &[f32],
    stack: &str,
    marian: &MarianConfig,
) -> Result<(), TorchImportError> {
    let d = marian.d_model;
    let worst = table
        .iter()
        .enumerate()
        .map(|(i, &value)| (value - sinusoid_halves(i / d, i % d, d) as f32).abs())
        .fold(0.0f32, f32::max);
    if worst > POSITION_TOLERANCE {
        return Err(TorchImportError::Mismatch(vec![format!(
            "tensor `model.{stack}.embed_positions.weight` is not Marian's sinusoidal table \
             (differs by up to {worst})"
        )]));
    }
    Ok(())
}
