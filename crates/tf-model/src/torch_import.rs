//! Weights from PyTorch: a `state_dict()` of `torch.nn.Transformer` (`batch_first=True`) or of
//! `torch.nn.MultiheadAttention`, saved with `safetensors.torch.save_file`, loaded into our
//! modules.
//!
//! Every parameter PyTorch's module has is listed with its PyTorch name, our name and its shape
//! ([`TorchParameter`]); the file is checked against that list first (a missing tensor, an
//! unexpected one or a wrong shape is an error naming the tensor and both shapes, nothing is
//! skipped), then burn-store's [`SafetensorsStore`] loads it, renaming each tensor to our path and
//! transposing linear weights with its [`PyTorchToBurnAdapter`] (PyTorch keeps `[out, in]`, burn
//! `[in, out]`).
//!
//! `nn.Transformer` holds the two stacks and their final LayerNorms, not the token embeddings:
//! those may come in the same file as `src_embedding.weight` and `tgt_embedding.weight`
//! (`[vocab, d_model]`; we scale them by `√d_model`, and the target one is also the output
//! projection), or are left as initialised.

use std::collections::BTreeMap;
use std::fmt;

use burn::module::Module;
use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use tf_attention::{ConfigError, MultiHeadAttention, MultiHeadAttentionConfig};
use tf_layers::{FeedForwardActivation, NormPosition, TransformerLayerConfig};

use crate::config::{EmbeddingSharing, FinalNorm, TransformerConfig};
use crate::decoder::Decoder;
use crate::encoder::Encoder;
use crate::transformer::Transformer;

/// What a PyTorch module's JSON description says it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TorchModuleConfig {
    /// `torch.nn.Transformer`.
    Transformer(TorchTransformerConfig),
    /// `torch.nn.MultiheadAttention`.
    Mha(TorchMhaConfig),
}

/// The arguments `torch.nn.Transformer` was built with (its own names).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TorchTransformerConfig {
    /// `d_model`.
    pub d_model: usize,
    /// `nhead`.
    pub nhead: usize,
    /// `num_encoder_layers`.
    pub num_encoder_layers: usize,
    /// `num_decoder_layers`.
    pub num_decoder_layers: usize,
    /// `dim_feedforward`.
    pub dim_feedforward: usize,
    /// `norm_first` (pre-norm). PyTorch's default: false.
    #[serde(default)]
    pub norm_first: bool,
    /// `activation`, `"relu"` or `"gelu"`. PyTorch's default: relu.
    #[serde(default = "default_activation")]
    pub activation: String,
    /// `layer_norm_eps`. PyTorch's default: 1e-5.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// `dropout` (used only if the imported model is trained further). PyTorch's default: 0.1.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
}

fn default_activation() -> String {
    "relu".into()
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

fn default_dropout() -> f64 {
    0.1
}

/// The arguments `torch.nn.MultiheadAttention` was built with (its own names; bias on, no
/// `kdim`/`vdim`, no `add_bias_kv`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TorchMhaConfig {
    /// `embed_dim`.
    pub embed_dim: usize,
    /// `num_heads`.
    pub num_heads: usize,
}

/// One parameter of a PyTorch module and where it goes in ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchParameter {
    /// PyTorch's name, as in `state_dict()`.
    pub torch_name: String,
    /// Our module path.
    pub name: String,
    /// PyTorch's shape (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// Whether the file may leave it out (the module then keeps its initial value).
    pub optional: bool,
}

impl TorchParameter {
    fn required(torch_name: String, name: String, shape: Vec<usize>) -> Self {
        Self {
            torch_name,
            name,
            shape,
            optional: false,
        }
    }
}

/// Why a state dict could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum TorchImportError {
    /// The bytes are not a safetensors file.
    #[error("not a safetensors file: {0}")]
    Format(String),
    /// The configuration describes no working module.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tensors do not fit the configured module.
    #[error("the state dict does not match the configured module:\n{}", .0.join("\n"))]
    Mismatch(Vec<String>),
    /// burn-store refused a tensor after the checks passed.
    #[error("loading the checked tensors failed: {0}")]
    Load(String),
}

impl TorchMhaConfig {
    /// Our configuration of the same module.
    pub fn attention(&self) -> MultiHeadAttentionConfig {
        MultiHeadAttentionConfig::new(self.embed_dim, self.num_heads)
    }

    /// Every parameter of `nn.MultiheadAttention`.
    pub fn parameters(&self) -> Vec<TorchParameter> {
        attention_parameters("", "", self.embed_dim)
    }
}

impl TorchTransformerConfig {
    /// Our layer configuration of the same layers.
    pub fn layer(&self) -> Result<TransformerLayerConfig, ConfigError> {
        let activation = match self.activation.as_str() {
            "relu" => FeedForwardActivation::Relu,
            "gelu" => FeedForwardActivation::Gelu,
            other => {
                return Err(ConfigError::new(
                    "TorchTransformerConfig",
                    format!("activation must be \"relu\" or \"gelu\", got {other:?}"),
                ));
            }
        };
        let layer = TransformerLayerConfig::new()
            .with_d_model(self.d_model)
            .with_n_heads(self.nhead)
            .with_d_ff(self.dim_feedforward)
            .with_dropout(self.dropout)
            .with_activation(activation)
            .with_norm_position(if self.norm_first {
                NormPosition::Pre
            } else {
                NormPosition::Post
            })
            .with_layer_norm_eps(self.layer_norm_eps);
        layer.validate()?;
        Ok(layer)
    }

    /// A whole model around these stacks: both final LayerNorms (`nn.Transformer` has them in
    /// either placement) and a tied target embedding / output projection.
    pub fn transformer(
        &self,
        src_vocab: usize,
        tgt_vocab: usize,
    ) -> Result<TransformerConfig, ConfigError> {
        let config = TransformerConfig::new(src_vocab, tgt_vocab)
            .with_layer(self.layer()?)
            .with_n_encoder_layers(self.num_encoder_layers)
            .with_n_decoder_layers(self.num_decoder_layers)
            .with_final_norm(FinalNorm::Always)
            .with_embedding_sharing(EmbeddingSharing::TargetOutput);
        config.validate()?;
        Ok(config)
    }

    /// Every parameter of `nn.Transformer` (`encoder.*`, `decoder.*`), plus the optional
    /// embeddings of a model with `src_vocab` and `tgt_vocab` tokens.
    pub fn parameters(&self, src_vocab: usize, tgt_vocab: usize) -> Vec<TorchParameter> {
        let d = self.d_model;
        let ff = self.dim_feedforward;
        let mut params = Vec::new();
        let norm = |params: &mut Vec<TorchParameter>, torch: &str, ours: &str| {
            for (torch_suffix, our_suffix) in [("weight", "gamma"), ("bias", "beta")] {
                params.push(TorchParameter::required(
                    format!("{torch}.{torch_suffix}"),
                    format!("{ours}.{our_suffix}"),
                    vec![d],
                ));
            }
        };
        let feed_forward = |params: &mut Vec<TorchParameter>, torch: &str, ours: &str| {
            for (linear, inner, shape) in
                [("linear1", "inner", [ff, d]), ("linear2", "outer", [d, ff])]
            {
                params.push(TorchParameter::required(
                    format!("{torch}.{linear}.weight"),
                    format!("{ours}.ffn.{inner}.weight"),
                    shape.to_vec(),
                ));
                params.push(TorchParameter::required(
                    format!("{torch}.{linear}.bias"),
                    format!("{ours}.ffn.{inner}.bias"),
                    vec![shape[0]],
                ));
            }
        };
        // Per stack: its layers' attentions and norms, PyTorch's name → ours.
        let encoder = (
            "encoder",
            self.num_encoder_layers,
            ENCODER_ATTENTIONS,
            ENCODER_NORMS,
        );
        let decoder = (
            "decoder",
            self.num_decoder_layers,
            DECODER_ATTENTIONS,
            DECODER_NORMS,
        );
        for (stack, n_layers, attentions, norms) in [encoder, decoder] {
            for i in 0..n_layers {
                let layer = format!("{stack}.layers.{i}");
                for (torch, ours) in attentions {
                    params.extend(attention_parameters(
                        &format!("{layer}.{torch}."),
                        &format!("{layer}.{ours}."),
                        d,
                    ));
                }
                feed_forward(&mut params, &layer, &layer);
                for (torch, ours) in norms {
                    norm(
                        &mut params,
                        &format!("{layer}.{torch}"),
                        &format!("{layer}.{ours}.norm"),
                    );
                }
            }
            norm(
                &mut params,
                &format!("{stack}.norm"),
                &format!("{stack}.final_norm.norm"),
            );
        }
        for (name, vocab) in [("src_embedding", src_vocab), ("tgt_embedding", tgt_vocab)] {
            params.push(TorchParameter {
                torch_name: format!("{name}.weight"),
                name: format!("{name}.embedding.weight"),
                shape: vec![vocab, d],
                optional: true,
            });
        }
        params
    }
}

/// PyTorch's submodule name → ours, within one layer.
type Renames = &'static [(&'static str, &'static str)];

const ENCODER_ATTENTIONS: Renames = &[("self_attn", "self_attn")];
const ENCODER_NORMS: Renames = &[("norm1", "self_attn_residual"), ("norm2", "ffn_residual")];
const DECODER_ATTENTIONS: Renames = &[("self_attn", "self_attn"), ("multihead_attn", "cross_attn")];
const DECODER_NORMS: Renames = &[
    ("norm1", "self_attn_residual"),
    ("norm2", "cross_attn_residual"),
    ("norm3", "ffn_residual"),
];

/// The parameters of one `nn.MultiheadAttention` under the prefixes given (ending in `.`).
fn attention_parameters(torch: &str, ours: &str, d: usize) -> Vec<TorchParameter> {
    [
        ("in_proj_weight", "in_proj.weight", vec![3 * d, d]),
        ("in_proj_bias", "in_proj.bias", vec![3 * d]),
        ("out_proj.weight", "out_proj.weight", vec![d, d]),
        ("out_proj.bias", "out_proj.bias", vec![d]),
    ]
    .into_iter()
    .map(|(t, o, shape)| {
        TorchParameter::required(format!("{torch}{t}"), format!("{ours}{o}"), shape)
    })
    .collect()
}

/// The encoder and decoder stacks of an `nn.Transformer`, under its names `encoder` and
/// `decoder`: what [`import_transformer_stacks`] returns, ready to go into a
/// [`Transformer`](crate::Transformer).
#[derive(Module, Debug)]
pub struct TransformerStacks {
    /// The encoder stack, with its final LayerNorm.
    pub encoder: Encoder,
    /// The decoder stack, with its final LayerNorm.
    pub decoder: Decoder,
}

/// A module with PyTorch's weights, and the optional parameters the file did not have.
#[derive(Debug)]
pub struct Imported<M> {
    /// The module.
    pub module: M,
    /// PyTorch names of the optional parameters left as initialised.
    pub left_as_initialised: Vec<String>,
}

/// Loads an `nn.Transformer` state dict (safetensors bytes), with or without
/// `src_embedding.weight` and `tgt_embedding.weight`, into a whole model built from
/// `config.transformer(src_vocab, tgt_vocab)` (and, say, a `max_len` of one's own).
///
/// # Errors
/// If `model` is not such a config (final LayerNorms, tied target embedding) or the file does not
/// fit it.
pub fn import_transformer(
    torch: &TorchTransformerConfig,
    model: &TransformerConfig,
    safetensors: &[u8],
    device: &Device,
) -> Result<Imported<Transformer>, TorchImportError> {
    let expected = torch.transformer(model.src_vocab, model.tgt_vocab)?;
    let structure = |c: &TransformerConfig| {
        (
            c.layer.to_string(),
            c.n_encoder_layers,
            c.n_decoder_layers,
            c.has_final_norm(),
            c.embedding_sharing,
        )
    };
    if structure(model) != structure(&expected) {
        return Err(TorchImportError::Config(ConfigError::new(
            "TransformerConfig",
            "import into a config made by TorchTransformerConfig::transformer",
        )));
    }
    load_state_dict(
        model.try_init(device)?,
        safetensors,
        &torch.parameters(model.src_vocab, model.tgt_vocab),
    )
}

/// Loads an `nn.Transformer` state dict (safetensors bytes) into our stacks.
pub fn import_transformer_stacks(
    config: &TorchTransformerConfig,
    safetensors: &[u8],
    device: &Device,
) -> Result<TransformerStacks, TorchImportError> {
    let layer = config.layer()?;
    let stacks = TransformerStacks {
        encoder: Encoder::new(&layer, config.num_encoder_layers, true, device),
        decoder: Decoder::new(&layer, config.num_decoder_layers, true, device),
    };
    // The stacks alone hold no embeddings: any in the file are a mismatch here.
    let params: Vec<TorchParameter> = config
        .parameters(0, 0)
        .into_iter()
        .filter(|p| !p.optional)
        .collect();
    Ok(load_state_dict(stacks, safetensors, &params)?.module)
}

/// Loads an `nn.MultiheadAttention` state dict (safetensors bytes) into our module.
pub fn import_multi_head_attention(
    config: &TorchMhaConfig,
    safetensors: &[u8],
    device: &Device,
) -> Result<MultiHeadAttention, TorchImportError> {
    let module = config.attention().try_init(device)?;
    Ok(load_state_dict(module, safetensors, &config.parameters())?.module)
}

/// Checks the file against `params`, then loads it into `module` through burn-store.
///
/// Every tensor of the file must be one of `params`, with its shape and as `float32`; every
/// required parameter must be there. All problems are reported at once.
pub fn load_state_dict<M: Module>(
    mut module: M,
    safetensors: &[u8],
    params: &[TorchParameter],
) -> Result<Imported<M>, TorchImportError> {
    let (_, found) = checked_file(safetensors, params)?;
    let remapper = KeyRemapper::from_patterns(
        params
            .iter()
            .filter(|p| found.contains_key(&p.torch_name))
            .map(|p| {
                (
                    format!("^{}$", p.torch_name.replace('.', r"\.")),
                    p.name.clone(),
                )
            })
            .collect(),
    )
    .map_err(|err| TorchImportError::Load(err.to_string()))?;
    let mut store = SafetensorsStore::from_bytes(Some(safetensors.to_vec()))
        .remap(remapper)
        .with_from_adapter(PyTorchToBurnAdapter)
        .allow_partial(true)
        .validate(false);
    let result = module
        .load_from(&mut store)
        .map_err(|err| TorchImportError::Load(err.to_string()))?;
    let optional_missing = |path: &String| {
        params
            .iter()
            .any(|p| p.optional && &p.name == path && !found.contains_key(&p.torch_name))
    };
    let missing: Vec<&String> = result
        .missing
        .iter()
        .map(|(path, _)| path)
        .filter(|path| !optional_missing(path))
        .collect();
    if !result.errors.is_empty() || !missing.is_empty() || !result.unused.is_empty() {
        return Err(TorchImportError::Load(format!(
            "errors {:?}, not loaded {missing:?}, unused {:?}",
            result
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            result.unused
        )));
    }
    let left_as_initialised = params
        .iter()
        .filter(|p| !found.contains_key(&p.torch_name))
        .map(|p| p.torch_name.clone())
        .collect();
    Ok(Imported {
        module,
        left_as_initialised,
    })
}

/// Each tensor's shape and dtype, by name.
pub(crate) type FoundTensors = BTreeMap<String, (Vec<usize>, Dtype)>;

/// The parsed file, once its tensors are checked against `params` (every problem at once).
pub(crate) fn checked_file<'a>(
    safetensors: &'a [u8],
    params: &[TorchParameter],
) -> Result<(SafeTensors<'a>, FoundTensors), TorchImportError> {
    let file = SafeTensors::deserialize(safetensors)
        .map_err(|err| TorchImportError::Format(err.to_string()))?;
    let found: FoundTensors = file
        .iter()
        .map(|(name, view)| (name.to_string(), (view.shape().to_vec(), view.dtype())))
        .collect();
    let problems = mismatches(&found, params);
    if !problems.is_empty() {
        return Err(TorchImportError::Mismatch(problems));
    }
    Ok((file, found))
}

/// Each way the file's tensors differ from `params`, one line each.
fn mismatches(found: &FoundTensors, params: &[TorchParameter]) -> Vec<String> {
    let mut problems = Vec::new();
    for param in params {
        match found.get(&param.torch_name) {
            None if param.optional => {}
            None => problems.push(format!(
                "missing tensor `{}` (expected shape {})",
                param.torch_name,
                Shape(&param.shape)
            )),
            Some((shape, _)) if shape != &param.shape => problems.push(format!(
                "tensor `{}` has shape {}, expected {}",
                param.torch_name,
                Shape(shape),
                Shape(&param.shape)
            )),
            Some((_, dtype)) if *dtype != Dtype::F32 => problems.push(format!(
                "tensor `{}` is {dtype:?}, expected F32 (save the model after `.float()`)",
                param.torch_name
            )),
            Some(_) => {}
        }
    }
    for (name, (shape, _)) in found {
        if !params.iter().any(|p| &p.torch_name == name) {
            problems.push(format!(
                "unexpected tensor `{name}` of shape {} (not a parameter of the configured module)",
                Shape(shape)
            ));
        }
    }
    problems
}

/// A shape printed as `[2, 3]`.
struct Shape<'a>(&'a [usize]);

impl fmt::Display for Shape<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Tensor, TensorData};
    use safetensors::tensor::TensorView;

    fn config() -> TorchTransformerConfig {
        serde_json::from_str(
            r#"{"kind_is_ignored": 1, "d_model": 8, "nhead": 2, "num_encoder_layers": 1,
                "num_decoder_layers": 1, "dim_feedforward": 12}"#,
        )
        .unwrap()
    }

    /// A safetensors file of the given (name, shape) tensors, each filled with `0, 1, 2, …`.
    fn file(tensors: &[(String, Vec<usize>)]) -> Vec<u8> {
        let data: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, shape)| {
                (0..shape.iter().product::<usize>())
                    .flat_map(|i| (i as f32).to_le_bytes())
                    .collect()
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .zip(&data)
            .map(|((name, shape), bytes)| {
                (
                    name.clone(),
                    TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn all_of(params: &[TorchParameter]) -> Vec<(String, Vec<usize>)> {
        params
            .iter()
            .filter(|p| !p.optional)
            .map(|p| (p.torch_name.clone(), p.shape.clone()))
            .collect()
    }

    #[test]
    fn a_transformer_has_the_parameter_count_of_pytorch() {
        // nn.Transformer(8, 2, 1, 1, 12): encoder layer 12 tensors, decoder layer 18, 2 norms × 2.
        let params = config().parameters(5, 5);
        assert_eq!(params.iter().filter(|p| !p.optional).count(), 12 + 18 + 4);
        let numel: usize = params
            .iter()
            .filter(|p| !p.optional)
            .map(|p| p.shape.iter().product::<usize>())
            .sum();
        // Per attention 4·8² + 4·8, FFN 2·8·12 + 12 + 8, norms 2·8 each.
        let attention = 4 * 64 + 4 * 8;
        let ffn = 2 * 8 * 12 + 12 + 8;
        assert_eq!(
            numel,
            (attention + ffn + 2 * 16) + (2 * attention + ffn + 3 * 16) + 2 * 16
        );
    }

    #[test]
    fn linear_weights_arrive_transposed_and_norms_by_name() {
        let device = Device::flex();
        let torch = TorchMhaConfig {
            embed_dim: 4,
            num_heads: 2,
        };
        let bytes = file(&all_of(&torch.parameters()));
        let mha = import_multi_head_attention(&torch, &bytes, &device).unwrap();
        // PyTorch out_proj.weight[o][i] = 4·o + i; ours is [in, out].
        let w = mha
            .out_proj
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(w[1], 4.0); // ours[0][1] = PyTorch[1][0]
        assert_eq!(w[4], 1.0); // ours[1][0] = PyTorch[0][1]
        assert_eq!(mha.in_proj.weight.dims(), [4, 12]);

        let torch = config();
        let bytes = file(&all_of(&torch.parameters(0, 0)));
        let stacks = import_transformer_stacks(&torch, &bytes, &device).unwrap();
        let gamma = stacks.decoder.final_norm.norm.as_ref().unwrap().gamma.val();
        let expected = Tensor::<1>::from_data(
            TensorData::new((0..8).map(|i| i as f32).collect(), [8]),
            &device,
        );
        assert_eq!(gamma.into_data(), expected.into_data());
    }

    #[test]
    fn mismatches_name_the_tensor_and_both_shapes() {
        let device = Device::flex();
        let torch = config();
        let mut tensors = all_of(&torch.parameters(0, 0));
        let removed = tensors.remove(3); // self_attn.out_proj.bias
        tensors[0].1 = vec![24, 7];
        tensors.push(("encoder.layers.0.extra".into(), vec![2]));
        let err = import_transformer_stacks(&torch, &file(&tensors), &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!(
                "missing tensor `{}` (expected shape [8])",
                removed.0
            )),
            "{err}"
        );
        assert!(
            err.contains("tensor `encoder.layers.0.self_attn.in_proj_weight` has shape [24, 7], expected [24, 8]"),
            "{err}"
        );
        assert!(
            err.contains("unexpected tensor `encoder.layers.0.extra` of shape [2]"),
            "{err}"
        );
        assert!(import_transformer_stacks(&torch, b"not safetensors", &device).is_err());
    }

    #[test]
    fn a_whole_model_takes_the_embeddings_when_the_file_has_them() {
        let device = Device::flex();
        let torch = config();
        let model = torch.transformer(5, 6).unwrap().with_max_len(16);
        let stacks_only = file(&all_of(&torch.parameters(5, 6)));
        let imported = import_transformer(&torch, &model, &stacks_only, &device).unwrap();
        assert_eq!(
            imported.left_as_initialised,
            ["src_embedding.weight", "tgt_embedding.weight"]
        );
        let mut with_embeddings = all_of(&torch.parameters(5, 6));
        with_embeddings.push(("src_embedding.weight".into(), vec![5, 8]));
        with_embeddings.push(("tgt_embedding.weight".into(), vec![6, 8]));
        let imported =
            import_transformer(&torch, &model, &file(&with_embeddings), &device).unwrap();
        assert!(imported.left_as_initialised.is_empty());
        let table = imported
            .module
            .src_embedding
            .weight()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(table[..3], [0.0, 1.0, 2.0]);
        // A vocabulary that does not fit the file is refused with both shapes.
        let other = torch.transformer(7, 6).unwrap();
        let err = import_transformer(&torch, &other, &file(&with_embeddings), &device).unwrap_err();
        assert!(
            err.to_string()
                .contains("`src_embedding.weight` has shape [5, 8], expected [7, 8]"),
            "{err}"
        );
        // A model of another structure is refused.
        let wrong = model.with_final_norm(FinalNorm::Never);
        assert!(import_transformer(&torch, &wrong, &stacks_only, &device).is_err());
    }

    #[test]
    fn unknown_activations_are_refused() {
        let mut torch = config();
        torch.activation = "swish".into();
        assert!(torch.layer().unwrap_err().to_string().contains("\"swish\""));
    }
}
