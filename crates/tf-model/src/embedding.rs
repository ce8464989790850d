//! Token embeddings scaled by `√d_model` (§3.4), or unscaled as some imported models have them.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Initializer};
use burn::tensor::{Device, Int, Tensor};

/// A learned embedding whose output is multiplied by `√d_model` (§3.4), or by 1 for models
/// trained without the scaling (`transformers`' `scale_embedding = false`).
///
/// Initialised from `N(0, d_model^-1/2)`, so that after the scaling each coordinate has unit
/// variance like the positional encoding it is added to (and, when tied, the output projection
/// starts with logits of unit scale), as fairseq and tensor2tensor do.
#[derive(Module, Debug)]
pub struct ScaledEmbedding {
    /// `[vocab, d_model]` table.
    pub embedding: Embedding,
    /// `√d_model`, or 1 when unscaled.
    pub scale: f64,
}

impl ScaledEmbedding {
    /// A new embedding of `vocab` tokens into `d_model` dimensions, its output multiplied by
    /// `√d_model` when `scaled` (the paper's) and left as looked up otherwise.
    pub fn new(vocab: usize, d_model: usize, scaled: bool, device: &Device) -> Self {
        let std = (d_model as f64).powf(-0.5);
        Self {
            embedding: EmbeddingConfig::new(vocab, d_model)
                .with_initializer(Initializer::Normal { mean: 0.0, std })
                .init(device),
            scale: if scaled { (d_model as f64).sqrt() } else { 1.0 },
        }
    }

    /// The embedding table, `[vocab, d_model]`; the output projection when weights are tied.
    pub fn weight(&self) -> Tensor<2> {
        self.embedding.weight.val()
    }

    /// # Shapes
    /// - `tokens`: `[batch, seq_len]`
    /// - returns `[batch, seq_len, d_model]`
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        self.embedding.forward(tokens).mul_scalar(self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_the_table_row_times_sqrt_d_model() {
        let device = Device::flex();
        let emb = ScaledEmbedding::new(5, 4, true, &device);
        let table = emb.weight().into_data().try_to_vec::<f32>().unwrap();
        let out = emb
            .forward(Tensor::from_ints([[3]], &device))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for dim in 0..4 {
            assert!((out[dim] - 2.0 * table[3 * 4 + dim]).abs() < 1e-6);
        }
    }

    #[test]
    fn an_unscaled_embedding_returns_the_table_row() {
        let device = Device::flex();
        let emb = ScaledEmbedding::new(5, 4, false, &device);
        let table = emb.weight().into_data().try_to_vec::<f32>().unwrap();
        let out = emb
            .forward(Tensor::from_ints([[2]], &device))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(out, table[2 * 4..3 * 4]);
    }
}
