//! A tf-layers encoder layer on its own: the paper's post-norm layer and the pre-norm option,
//! on a padded batch.
//!
//! `cargo run --release --example encoder_layer -p tf-layers`

use burn::tensor::{Device, Distribution, Tensor};
use tf_attention::{Weights, padding_mask_from_lengths};
use tf_layers::{NormPosition, TransformerLayerConfig};

fn main() {
    let device = Device::flex();
    for position in [NormPosition::Post, NormPosition::Pre] {
        let config = TransformerLayerConfig::new()
            .with_d_model(64)
            .with_n_heads(4)
            .with_d_ff(256)
            .with_norm_position(position);
        let layer = config.init_encoder(&device);
        // [batch, src_len, d_model]: sentences of 6 and 4 positions, padded to 6.
        let x = Tensor::<3>::random([2, 6, 64], Distribution::Default, &device);
        let pad_mask = padding_mask_from_lengths(&[6, 4], 6, &device);
        let (y, weights) = layer.forward(x, Some(pad_mask), Weights::Return);
        let weights = weights.expect("asked for");
        println!(
            "{position:?}: output {:?}, attention {:?}",
            y.dims(),
            weights.dims()
        );
        assert_eq!(weights.dims(), [2, 4, 6, 6]); // [batch, n_heads, q_len, k_len]
    }
}
