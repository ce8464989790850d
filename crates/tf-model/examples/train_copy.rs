//! A tf-model Transformer trained for a few hundred steps to copy short sequences, with burn's
//! Adam and cross-entropy: the whole model in a training loop of your own.
//!
//! `cargo run --release --example train_copy -p tf-model`

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Int, Tensor, TensorData};
use tf_model::{GreedyOptions, TransformerConfig};

const BOS: i64 = 1;
const EOS: i64 = 2;

/// `batch` sequences of 4 random symbols (3..10), as source and target-in/target-out.
fn batch(
    step: u64,
    batch: usize,
    device: &Device,
) -> (Tensor<2, Int>, Tensor<2, Int>, Tensor<2, Int>) {
    let mut state = step.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut symbol = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        3 + (state % 7) as i64
    };
    let (mut src, mut tgt_in, mut tgt_out) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..batch {
        let seq: Vec<i64> = (0..4).map(|_| symbol()).collect();
        src.extend(&seq);
        tgt_in.push(BOS);
        tgt_in.extend(&seq);
        tgt_out.extend(&seq);
        tgt_out.push(EOS);
    }
    let tensor =
        |v: Vec<i64>, len| Tensor::<2, Int>::from_data(TensorData::new(v, [batch, len]), device);
    (tensor(src, 4), tensor(tgt_in, 5), tensor(tgt_out, 5))
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(0);
    let config = TransformerConfig::tiny(10, 10);
    let mut model = config.init(&device);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for step in 1..=300 {
        let (src, tgt_in, tgt_out) = batch(step, 32, &device);
        let logits = model.forward(src, tgt_in, None, None); // [batch, 5, vocab]
        let [b, t, v] = logits.dims();
        let loss = loss_fn.forward(logits.reshape([b * t, v]), tgt_out.reshape([b * t]));
        if step % 100 == 0 {
            println!("step {step}: loss {:.4}", loss.clone().into_scalar::<f32>());
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(3e-3, model, grads);
    }
    let model = model.valid();
    let inference = Device::flex();
    let src = Tensor::<2, Int>::from_ints([[3, 9, 4, 7]], &inference);
    let out = model
        .greedy_decode(
            src,
            None,
            &GreedyOptions::new(BOS as usize, EOS as usize, 6),
        )
        .unwrap();
    println!("copy of [3, 9, 4, 7]: {:?}", out[0]);
}
