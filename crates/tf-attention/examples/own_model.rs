//! tf-attention inside your own burn model: a sentence classifier whose tokens attend to each
//! other with our multi-head attention, then are pooled and classified.
//!
//! `cargo run --release --example own_model -p tf-attention` (the README's snippet).

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::tensor::{Bool, Device, Int, Tensor};
use tf_attention::{
    AttentionMask, MultiHeadAttention, MultiHeadAttentionConfig, Weights, padding_mask_from_lengths,
};

/// Your model: embeddings, one self-attention, mean pooling, a linear classifier.
#[derive(Module, Debug)]
struct Classifier {
    embedding: Embedding,
    attention: MultiHeadAttention,
    output: Linear,
}

impl Classifier {
    fn new(vocab: usize, d_model: usize, n_heads: usize, classes: usize, device: &Device) -> Self {
        Self {
            embedding: EmbeddingConfig::new(vocab, d_model).init(device),
            attention: MultiHeadAttentionConfig::new(d_model, n_heads).init(device),
            output: LinearConfig::new(d_model, classes).init(device),
        }
    }

    /// # Shapes
    /// - `tokens`: `[batch, seq_len]`
    /// - `pad_mask`: `[batch, seq_len]`, `true` = padding
    /// - returns `[batch, classes]`
    fn forward(&self, tokens: Tensor<2, Int>, pad_mask: Tensor<2, Bool>) -> Tensor<2> {
        let x = self.embedding.forward(tokens); // [batch, seq_len, d_model]
        let mask = AttentionMask::none().with_key_padding(Some(pad_mask));
        let attended = self.attention.self_attention(x, &mask, None, Weights::Omit);
        let pooled = attended.context.mean_dim(1).squeeze_dim::<2>(1); // [batch, d_model]
        self.output.forward(pooled)
    }
}

fn main() {
    let device = Device::flex();
    let model = Classifier::new(100, 32, 4, 3, &device);
    // Two sentences of 5 and 3 tokens, padded with 0.
    let tokens = Tensor::<2, Int>::from_ints([[5, 8, 13, 21, 34], [7, 11, 2, 0, 0]], &device);
    let pad_mask = padding_mask_from_lengths(&[5, 3], 5, &device);
    let logits = model.forward(tokens, pad_mask);
    println!("logits {:?}", logits.dims()); // [2, 3]
    assert_eq!(logits.dims(), [2, 3]);
}
