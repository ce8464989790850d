//! Our models as MarianMT (`transformers`' `MarianMTModel`): a [`MarianConfig`] and the
//! `model.safetensors` that `MarianMTModel.from_pretrained` loads, computing what our model
//! computes. The inverse of [`import_marian`](crate::import_marian).
//!
//! Marian is the paper's post-norm model, so a model trained here maps onto it with one twist:
//! its sinusoids lie as every sine then every cosine, ours interleaved (§3.5). Nothing in the
//! model depends on the order of the residual stream's coordinates (a LayerNorm normalises them
//! all alike, every other layer reads and writes them through matrices), so the export permutes
//! that basis: the embeddings' columns, the columns of each matrix that reads the stream (the
//! query, key, value and first feed-forward projections, the output projection), the rows and
//! biases of each that writes it (attention outputs, second feed-forward projections) and the
//! LayerNorms' gains and biases. The heads' own coordinates stay as they are.
//!
//! A pruned model keeps the configured number of heads in every layer: the kept heads come
//! first, each pruned one is a head whose query, key, value and output weights are zero. Its
//! scores are all zero, so it attends uniformly to values of zero and adds nothing: the model
//! computes what the pruned one does.
//!
//! What Marian cannot express is refused, naming the setting: learned, rotary or no positions,
//! pre-norm layers or final LayerNorms, a LayerNorm epsilon other than 1e-5, heads narrower than
//! `d_model / h`.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::Tensor;
use tf_attention::{ConfigError, MultiHeadAttention};
use tf_layers::{FeedForwardActivation, NormPosition, PositionalEncodingKind, ResidualNorm};

use crate::config::{EmbeddingSharing, TransformerConfig};
use crate::marian_import::{LAYER_NORM_EPS, MarianConfig, serialize_f32};
use crate::torch_import::TorchImportError;
use crate::transformer::Transformer;

const NAME: &str = "MarianMT export";

/// The token ids a MarianMT configuration names: padding, the decoder's first input and EOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarianTokenIds {
    /// `pad_token_id`.
    pub pad: usize,
    /// `decoder_start_token_id` (our BOS).
    pub decoder_start: usize,
    /// `eos_token_id`.
    pub eos: usize,
}

impl MarianConfig {
    /// The MarianMT configuration of a model of `config`, with its special `ids`.
    ///
    /// # Errors
    /// What `MarianMTModel` cannot compute: positions other than fixed sinusoids, pre-norm
    /// layers or final LayerNorms, another LayerNorm epsilon, narrowed heads.
    pub fn from_transformer(
        config: &TransformerConfig,
        ids: MarianTokenIds,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let refuse = |why: String| Err(ConfigError::new(NAME, why));
        let layer = &config.layer;
        match config.positional_encoding {
            PositionalEncodingKind::Sinusoidal | PositionalEncodingKind::SinusoidalHalves => {}
            other => {
                return refuse(format!(
                    "MarianMT adds fixed sinusoids to its embeddings; a model with {other:?} \
                     positions cannot be expressed"
                ));
            }
        }
        if layer.norm_position != NormPosition::Post || config.has_final_norm() {
            return refuse(
                "transformers' MarianMTModel runs post-norm layers without final LayerNorms; \
                 this model is pre-norm or has final LayerNorms"
                    .into(),
            );
        }
        if layer.layer_norm_eps != LAYER_NORM_EPS {
            return refuse(format!(
                "transformers' MarianMTModel's LayerNorms use epsilon {LAYER_NORM_EPS}, this \
                 model {}",
                layer.layer_norm_eps
            ));
        }
        if layer.head_width() * layer.n_heads != layer.d_model {
            return refuse(format!(
                "MarianMT's heads are d_model / heads = {} wide, this model's {}",
                layer.d_model / layer.n_heads,
                layer.head_width()
            ));
        }
        let activation_function = match layer.activation {
            FeedForwardActivation::Relu => "relu",
            FeedForwardActivation::Gelu => "gelu",
            FeedForwardActivation::Silu => "swish",
        };
        let (share_encoder_decoder_embeddings, tie_word_embeddings) = match config.embedding_sharing
        {
            EmbeddingSharing::All => (true, true),
            EmbeddingSharing::TargetOutput => (false, true),
            EmbeddingSharing::Separate => (false, false),
        };
        for (what, id) in [
            ("pad", ids.pad),
            ("decoder start", ids.decoder_start),
            ("EOS", ids.eos),
        ] {
            if id >= config.tgt_vocab {
                return refuse(format!(
                    "the {what} id {id} is outside the target vocabulary of {} tokens",
                    config.tgt_vocab
                ));
            }
        }
        Ok(Self {
            model_type: Some("marian".into()),
            vocab_size: config.src_vocab,
            decoder_vocab_size: Some(config.tgt_vocab),
            max_position_embeddings: config.max_len,
            encoder_layers: config.n_encoder_layers,
            decoder_layers: config.n_decoder_layers,
            encoder_ffn_dim: layer.d_ff,
            decoder_ffn_dim: layer.d_ff,
            encoder_attention_heads: layer.n_heads,
            decoder_attention_heads: layer.n_heads,
            activation_function: activation_function.into(),
            d_model: layer.d_model,
            dropout: layer.dropout,
            attention_dropout: layer.attention_dropout,
            activation_dropout: 0.0,
            decoder_start_token_id: ids.decoder_start,
            scale_embedding: config.scale_embedding,
            pad_token_id: ids.pad,
            eos_token_id: ids.eos,
            share_encoder_decoder_embeddings,
            tie_word_embeddings,
            normalize_before: false,
        })
    }
}

/// Our model in MarianMT's terms.
#[derive(Debug)]
pub struct ExportedMarian {
    /// Its `config.json` fields.
    pub config: MarianConfig,
    /// Its `model.safetensors`, `float32`, under `transformers`' names.
    pub safetensors: Vec<u8>,
}

/// `model` (of `config`) as a `MarianMTModel` with the special `ids`.
///
/// # Errors
/// What [`MarianConfig::from_transformer`] refuses; a tensor that cannot be read back.
pub fn export_marian(
    config: &TransformerConfig,
    model: &Transformer,
    ids: MarianTokenIds,
) -> Result<ExportedMarian, TorchImportError> {
    let marian = MarianConfig::from_transformer(config, ids)?;
    let order = residual_order(config.d_model(), config.positional_encoding);
    let mut file = MarianTensors {
        order,
        width: config.layer.d_model,
        tensors: Vec::new(),
    };
    for (i, layer) in model.encoder.layers.iter().enumerate() {
        let at = format!("model.encoder.layers.{i}");
        file.attention(&format!("{at}.self_attn"), &layer.self_attn)?;
        file.norm(
            &format!("{at}.self_attn_layer_norm"),
            &layer.self_attn_residual,
        )?;
        file.feed_forward(&at, &layer.ffn.inner, &layer.ffn.outer)?;
        file.norm(&format!("{at}.final_layer_norm"), &layer.ffn_residual)?;
    }
    for (i, layer) in model.decoder.layers.iter().enumerate() {
        let at = format!("model.decoder.layers.{i}");
        file.attention(&format!("{at}.self_attn"), &layer.self_attn)?;
        file.norm(
            &format!("{at}.self_attn_layer_norm"),
            &layer.self_attn_residual,
        )?;
        file.attention(&format!("{at}.encoder_attn"), &layer.cross_attn)?;
        file.norm(
            &format!("{at}.encoder_attn_layer_norm"),
            &layer.cross_attn_residual,
        )?;
        file.feed_forward(&at, &layer.ffn.inner, &layer.ffn.outer)?;
        file.norm(&format!("{at}.final_layer_norm"), &layer.ffn_residual)?;
    }

    // The embeddings, under the names `save_pretrained` writes for each sharing.
    let source = file.reads_stream(matrix(&model.src_embedding.embedding.weight)?);
    match config.embedding_sharing {
        EmbeddingSharing::All => file.push("model.shared.weight", source),
        EmbeddingSharing::TargetOutput | EmbeddingSharing::Separate => {
            let target = file.reads_stream(matrix(&model.tgt_embedding().embedding.weight)?);
            file.push("model.encoder.embed_tokens.weight", source);
            file.push("model.decoder.embed_tokens.weight", target);
        }
    }
    let mut logits_bias = vec![0.0; config.tgt_vocab];
    if let Some(generator) = &model.generator {
        let (weight, bias) = linear(generator)?;
        file.push("lm_head.weight", file.reads_stream(weight));
        add(&mut logits_bias, &bias.values);
    }
    if let Some(bias) = &model.output_bias {
        add(&mut logits_bias, &values(bias)?);
    }
    file.push(
        "final_logits_bias",
        Matrix {
            rows: 1,
            cols: config.tgt_vocab,
            values: logits_bias,
        },
    );
    Ok(ExportedMarian {
        config: marian,
        safetensors: serialize_f32(&file.tensors)?,
    })
}

/// For each of MarianMT's residual coordinates, ours: the sines then the cosines of the
/// interleaved layout, or the identity for a model already in Marian's.
pub fn residual_order(d_model: usize, positions: PositionalEncodingKind) -> Vec<usize> {
    if positions != PositionalEncodingKind::Sinusoidal {
        return (0..d_model).collect();
    }
    let sines = d_model.div_ceil(2);
    (0..d_model)
        .map(|m| {
            if m < sines {
                2 * m
            } else {
                2 * (m - sines) + 1
            }
        })
        .collect()
}

/// A matrix in PyTorch's layout (`[out, in]` for a linear layer), row-major.
#[derive(Clone, Debug, PartialEq)]
struct Matrix {
    rows: usize,
    cols: usize,
    values: Vec<f32>,
}

impl Matrix {
    fn vector(values: Vec<f32>) -> Self {
        Self {
            rows: values.len(),
            cols: 1,
            values,
        }
    }

    /// Row `r` of the result is row `order[r]` of this.
    fn rows_in(&self, order: &[usize]) -> Self {
        let values = order
            .iter()
            .flat_map(|&r| &self.values[r * self.cols..(r + 1) * self.cols])
            .copied()
            .collect();
        Self {
            values,
            ..self.clone()
        }
    }

    /// Column `c` of the result is column `order[c]` of this.
    fn cols_in(&self, order: &[usize]) -> Self {
        let values = (0..self.rows)
            .flat_map(|r| order.iter().map(move |&c| self.values[r * self.cols + c]))
            .collect();
        Self {
            values,
            ..self.clone()
        }
    }

    /// This with zero rows after its own, `rows` in all.
    fn padded_rows(mut self, rows: usize) -> Self {
        self.values.resize(rows * self.cols, 0.0);
        self.rows = rows;
        self
    }

    /// This with zero columns after its own, `cols` in all.
    fn padded_cols(&self, cols: usize) -> Self {
        let values = (0..self.rows)
            .flat_map(|r| {
                let row = &self.values[r * self.cols..(r + 1) * self.cols];
                row.iter()
                    .copied()
                    .chain(std::iter::repeat_n(0.0, cols - self.cols))
            })
            .collect();
        Self {
            rows: self.rows,
            cols,
            values,
        }
    }

    /// Rows `start..end`.
    fn row_range(&self, start: usize, end: usize) -> Self {
        Self {
            rows: end - start,
            cols: self.cols,
            values: self.values[start * self.cols..end * self.cols].to_vec(),
        }
    }
}

/// The file being written: `transformers`' names, tensors in MarianMT's residual basis.
struct MarianTensors {
    order: Vec<usize>,
    /// Every attention's heads together: `d_model`.
    width: usize,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl MarianTensors {
    fn push(&mut self, name: &str, matrix: Matrix) {
        let shape = vec![matrix.rows, matrix.cols];
        self.tensors.push((name.to_string(), shape, matrix.values));
    }

    /// A one-dimensional tensor (a bias, a LayerNorm's gain), kept as a one-column matrix.
    fn push_vector(&mut self, name: &str, vector: Matrix) {
        self.tensors
            .push((name.to_string(), vec![vector.rows], vector.values));
    }

    /// A matrix whose columns are residual coordinates (it reads the stream).
    fn reads_stream(&self, matrix: Matrix) -> Matrix {
        matrix.cols_in(&self.order)
    }

    /// A matrix or bias whose rows are residual coordinates (it writes the stream).
    fn writes_stream(&self, matrix: Matrix) -> Matrix {
        matrix.rows_in(&self.order)
    }

    /// Our fused `[q; k; v]` projection split into Marian's three, then its output projection;
    /// the heads a pruned attention lacks added back as zeros.
    fn attention(
        &mut self,
        at: &str,
        attention: &MultiHeadAttention,
    ) -> Result<(), TorchImportError> {
        let (weight, bias) = linear(&attention.in_proj)?;
        let kept = weight.rows / 3;
        for (k, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
            let rows = (k * kept, (k + 1) * kept);
            let part = weight.row_range(rows.0, rows.1).padded_rows(self.width);
            let part = self.reads_stream(part);
            self.push(&format!("{at}.{name}.weight"), part);
            let part = bias.row_range(rows.0, rows.1).padded_rows(self.width);
            self.push_vector(&format!("{at}.{name}.bias"), part);
        }
        let (weight, bias) = linear(&attention.out_proj)?;
        let weight = weight.padded_cols(self.width);
        self.push(&format!("{at}.out_proj.weight"), self.writes_stream(weight));
        self.push_vector(&format!("{at}.out_proj.bias"), self.writes_stream(bias));
        Ok(())
    }

    /// The feed-forward layer's `fc1` (reads the stream) and `fc2` (writes it).
    fn feed_forward(
        &mut self,
        at: &str,
        inner: &Linear,
        outer: &Linear,
    ) -> Result<(), TorchImportError> {
        let (weight, bias) = linear(inner)?;
        self.push(&format!("{at}.fc1.weight"), self.reads_stream(weight));
        self.push_vector(&format!("{at}.fc1.bias"), bias);
        let (weight, bias) = linear(outer)?;
        self.push(&format!("{at}.fc2.weight"), self.writes_stream(weight));
        self.push_vector(&format!("{at}.fc2.bias"), self.writes_stream(bias));
        Ok(())
    }

    fn norm(&mut self, at: &str, residual: &ResidualNorm) -> Result<(), TorchImportError> {
        let gamma = Matrix::vector(values(&residual.norm.gamma)?);
        let beta = match &residual.norm.beta {
            Some(beta) => values(beta)?,
            None => vec![0.0; gamma.rows],
        };
        self.push_vector(&format!("{at}.weight"), self.writes_stream(gamma));
        self.push_vector(
            &format!("{at}.bias"),
            self.writes_stream(Matrix::vector(beta)),
        );
        Ok(())
    }
}

/// A linear layer's weight in PyTorch's layout (`[out, in]`; burn keeps `[in, out]`) and its
/// bias (zeros for a layer without one).
fn linear(linear: &Linear) -> Result<(Matrix, Matrix), TorchImportError> {
    let burn = matrix(&linear.weight)?;
    let transposed = (0..burn.cols)
        .flat_map(|o| (0..burn.rows).map(move |i| (o, i)))
        .map(|(o, i)| burn.values[i * burn.cols + o])
        .collect();
    let weight = Matrix {
        rows: burn.cols,
        cols: burn.rows,
        values: transposed,
    };
    let bias = match &linear.bias {
        Some(bias) => values(bias)?,
        None => vec![0.0; weight.rows],
    };
    Ok((weight, Matrix::vector(bias)))
}

fn matrix(param: &Param<Tensor<2>>) -> Result<Matrix, TorchImportError> {
    let tensor = param.val();
    let [rows, cols] = tensor.dims();
    Ok(Matrix {
        rows,
        cols,
        values: read(tensor.into_data())?,
    })
}

fn values(param: &Param<Tensor<1>>) -> Result<Vec<f32>, TorchImportError> {
    read(param.val().into_data())
}

fn read(data: burn::tensor::TensorData) -> Result<Vec<f32>, TorchImportError> {
    data.convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|err| TorchImportError::Load(format!("reading a parameter: {err:?}")))
}

fn add(sum: &mut [f32], terms: &[f32]) {
    for (s, t) in sum.iter_mut().zip(terms) {
        *s += t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::import_marian;
    use burn::tensor::{Device, Distribution, Int, TensorData};
    use tf_layers::TransformerLayerConfig;

    const IDS: MarianTokenIds = MarianTokenIds {
        pad: 0,
        decoder_start: 1,
        eos: 2,
    };

    #[test]
    fn the_interleaved_sinusoids_become_every_sine_then_every_cosine() {
        assert_eq!(
            residual_order(6, PositionalEncodingKind::Sinusoidal),
            [0, 2, 4, 1, 3, 5]
        );
        assert_eq!(
            residual_order(5, PositionalEncodingKind::Sinusoidal),
            [0, 2, 4, 1, 3]
        );
        assert_eq!(
            residual_order(4, PositionalEncodingKind::SinusoidalHalves),
            [0, 1, 2, 3]
        );
        // Our coordinate `order[m]` carries Marian's coordinate `m`'s sinusoid.
        let d = 8;
        let order = residual_order(d, PositionalEncodingKind::Sinusoidal);
        for pos in 0..5 {
            for (m, &ours) in order.iter().enumerate() {
                let interleaved = tf_layers::sinusoid(pos, ours, d);
                let halves = tf_layers::sinusoid_halves(pos, m, d);
                assert!((interleaved - halves).abs() < 1e-12, "pos {pos}, m {m}");
            }
        }
    }

    #[test]
    fn a_matrix_permutes_its_rows_and_columns() {
        let m = Matrix {
            rows: 2,
            cols: 3,
            values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        assert_eq!(m.rows_in(&[1, 0]).values, [4.0, 5.0, 6.0, 1.0, 2.0, 3.0]);
        assert_eq!(m.cols_in(&[2, 0, 1]).values, [3.0, 1.0, 2.0, 6.0, 4.0, 5.0]);
        assert_eq!(m.row_range(1, 2).values, [4.0, 5.0, 6.0]);
        assert_eq!(
            m.clone().padded_rows(3).values,
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0, 0.0]
        );
        assert_eq!(
            m.padded_cols(4).values,
            [1.0, 2.0, 3.0, 0.0, 4.0, 5.0, 6.0, 0.0]
        );
    }

    /// A random model of ours, exported then imported back as MarianMT, gives the same logits.
    fn round_trip(config: TransformerConfig) {
        let device = Device::flex();
        let config = config.without_dropout();
        round_trip_model(&config, config.init(&device));
    }

    fn round_trip_model(config: &TransformerConfig, model: Transformer) {
        let device = Device::flex();
        // Give the zero-initialised biases and the LayerNorms values, so that a bias or gain
        // written in the wrong basis shows.
        let model = randomised(model, &device);
        let exported = export_marian(config, &model, IDS).unwrap();
        let imported = import_marian(&exported.config, &exported.safetensors, &device).unwrap();
        assert_eq!(
            imported.config.positional_encoding,
            PositionalEncodingKind::SinusoidalHalves
        );
        let src =
            Tensor::<2, Int>::from_data(TensorData::from([[3, 4, 5, 6], [7, 8, 0, 0]]), &device);
        let tgt = Tensor::<2, Int>::from_data(TensorData::from([[1, 5, 4], [1, 9, 3]]), &device);
        let src_pad = Some(src.clone().equal_elem(0));
        let ours = model.forward(src.clone(), tgt.clone(), src_pad.clone(), None);
        let theirs = imported.model.forward(src, tgt, src_pad, None);
        let worst = (ours - theirs).abs().max().into_scalar::<f32>();
        assert!(worst < 1e-4, "logits differ by {worst}");
    }

    /// `model` with every bias and LayerNorm parameter drawn at random.
    fn randomised(model: Transformer, device: &Device) -> Transformer {
        use burn::module::{Module, ModuleMapper};
        struct Noise<'a>(&'a Device);
        impl ModuleMapper for Noise<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                let (id, tensor, mapper) = param.consume();
                let noise = Tensor::random(tensor.shape(), Distribution::Normal(0.0, 0.5), self.0);
                Param::from_mapped_value(id, tensor + noise, mapper)
            }
        }
        model.map(&mut Noise(device))
    }

    #[test]
    fn an_exported_model_imports_back_to_the_same_logits() {
        let layer = TransformerLayerConfig::tiny();
        for (sharing, src, tgt) in [
            (EmbeddingSharing::All, 12, 12),
            (EmbeddingSharing::TargetOutput, 12, 10),
            (EmbeddingSharing::Separate, 11, 13),
        ] {
            for activation in [FeedForwardActivation::Relu, FeedForwardActivation::Silu] {
                let config = TransformerConfig::tiny(src, tgt)
                    .with_layer(layer.clone().with_activation(activation))
                    .with_embedding_sharing(sharing)
                    .with_output_bias(sharing != EmbeddingSharing::Separate);
                round_trip(config);
            }
        }
        // A model already in Marian's layout, without scaled embeddings.
        round_trip(
            TransformerConfig::tiny(12, 12)
                .with_positional_encoding(PositionalEncodingKind::SinusoidalHalves)
                .with_scale_embedding(false),
        );
    }

    #[test]
    fn a_pruned_model_exports_with_its_pruned_heads_as_zeros() {
        let device = Device::flex();
        let config = TransformerConfig::tiny(12, 12).without_dropout();
        let model = config.init(&device);
        let heads = model.heads();
        // Of the 2 + 2 layers' 2 heads: the first encoder layer's first head (a kept head
        // moves), the first decoder self-attention's first, the first cross-attention's last.
        let n = config.layer.n_heads;
        let removed = [0, 2 * n, 4 * n + n - 1].map(|i| heads[i]);
        let (pruned_config, pruned) = model.prune_heads(&config, &removed).unwrap();
        assert!(pruned_config.head_counts.is_some());
        round_trip_model(&pruned_config, pruned);
    }

    #[test]
    fn what_marian_cannot_compute_is_refused_naming_it() {
        let base = TransformerConfig::tiny(12, 12);
        let pre_norm = base
            .clone()
            .with_layer(TransformerLayerConfig::tiny().with_norm_position(NormPosition::Pre));
        let narrow = base
            .clone()
            .with_layer(TransformerLayerConfig::tiny().with_head_width(Some(2)));
        let eps = base
            .clone()
            .with_layer(TransformerLayerConfig::tiny().with_layer_norm_eps(1e-6));
        for (config, expected) in [
            (
                base.clone()
                    .with_positional_encoding(PositionalEncodingKind::Learned),
                "Learned positions",
            ),
            (
                base.clone()
                    .with_positional_encoding(PositionalEncodingKind::Rotary),
                "Rotary positions",
            ),
            (pre_norm, "post-norm"),
            (narrow, "wide"),
            (eps, "epsilon"),
        ] {
            let err = MarianConfig::from_transformer(&config, IDS).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let err =
            MarianConfig::from_transformer(&base, MarianTokenIds { eos: 12, ..IDS }).unwrap_err();
        assert!(err.to_string().contains("EOS id 12"), "{err}");
    }
}
