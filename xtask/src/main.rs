//! Developer tasks. `cargo xtask bench [--device flex|ndarray|wgpu] [--quick]` times multi-head
//! attention against burn-nn's and a training step of a small encoder–decoder, on one device,
//! and writes the figures to `target/bench/results.json`.

use std::time::Instant;

use anyhow::Result;
use burn::module::Module;
use burn::nn::attention::{MhaInput, MultiHeadAttentionConfig as BurnMhaConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor};
use clap::{Parser, Subcommand};
use tf_attention::{AttentionMask, MultiHeadAttentionConfig};
use tf_model::TransformerConfig;
use tf_train::Backend;
use tf_train::loss::label_smoothed_cross_entropy;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Time attention and a training step.
    Bench {
        /// Device to measure on.
        #[arg(long, value_enum, default_value_t = Backend::Flex)]
        device: Backend,
        /// Fewer repeats.
        #[arg(long)]
        quick: bool,
    },
}

/// Median and spread (min, max) of `repeats` timed runs after `warmup` untimed ones, in ms;
/// the device is synced before each clock read.
fn time_ms(
    device: &Device,
    warmup: usize,
    repeats: usize,
    mut run: impl FnMut(),
) -> (f64, f64, f64) {
    for _ in 0..warmup {
        run();
    }
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            device.sync().expect("sync");
            let start = Instant::now();
            run();
            device.sync().expect("sync");
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[0], times[times.len() - 1])
}

fn main() -> Result<()> {
    let Task::Bench {
        device: backend,
        quick,
    } = Cli::parse().command;
    let device = backend.device();
    let repeats = if quick { 5 } else { 21 };
    let mut results = Vec::new();

    // 1. MHA forward, [batch 8, seq 128, d_model 512], 8 heads: ours vs burn-nn, same weights
    //    shape, alternating so both see the same machine state.
    let [batch, seq, d_model, heads] = [8, 128, 512, 8];
    let ours = MultiHeadAttentionConfig::new(d_model, heads).init(&device);
    let theirs = BurnMhaConfig::new(d_model, heads)
        .with_dropout(0.0)
        .init(&device);
    let x = Tensor::<3>::random([batch, seq, d_model], Distribution::Default, &device);
    let mut ours_ms = Vec::new();
    let mut theirs_ms = Vec::new();
    for _ in 0..3 {
        ours_ms.push(
            time_ms(&device, 2, repeats, || {
                let _ = ours
                    .self_attention(x.clone(), &AttentionMask::none(), None, false)
                    .context
                    .into_data();
            })
            .0,
        );
        theirs_ms.push(
            time_ms(&device, 2, repeats, || {
                let _ = theirs
                    .forward(MhaInput::self_attn(x.clone()))
                    .context
                    .into_data();
            })
            .0,
        );
    }
    ours_ms.sort_by(f64::total_cmp);
    theirs_ms.sort_by(f64::total_cmp);
    let (o, t) = (ours_ms[1], theirs_ms[1]);
    println!(
        "mha forward [8,128,512] h8: tf-attention {o:.2} ms, burn-nn {t:.2} ms, ratio {:.2}x",
        t / o
    );
    results.push(format!(
        "{{\"case\":\"mha_forward\",\"device\":\"{backend:?}\",\"ours_ms\":{o:.3},\"burn_nn_ms\":{t:.3}}}"
    ));

    // 3. One training step of d_model 256, 4 heads, 3+3 layers, d_ff 1024, batch 32 × 32 tokens.
    let train_device = device.clone().autodiff();
    let config = TransformerConfig::new(1000, 1000)
        .with_d_model(256)
        .with_n_heads(4)
        .with_n_encoder_layers(3)
        .with_n_decoder_layers(3)
        .with_d_ff(1024)
        .with_max_len(64);
    let mut model = config.init(&train_device);
    let mut optimizer = burn::optim::AdamConfig::new().init();
    let tokens = |device: &Device| {
        Tensor::<2, Int>::random([32, 32], Distribution::Uniform(3.0, 999.0), device)
    };
    let (src, tgt) = (tokens(&train_device), tokens(&train_device));
    let (median, min, max) = time_ms(&train_device, 2, repeats.min(11), || {
        let logits = model.forward(src.clone(), tgt.clone(), None, None);
        let loss = label_smoothed_cross_entropy(logits, tgt.clone(), 0, 0.1);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-4, model.clone(), grads);
        let _ = model.src_embedding.weight().into_data();
    });
    let tokens_per_sec = 32.0 * 32.0 / (median / 1e3);
    println!(
        "train step d256 h4 3+3 l, 32x32 tokens: {median:.1} ms (min {min:.1}, max {max:.1}), {tokens_per_sec:.0} target tokens/s"
    );
    results.push(format!(
        "{{\"case\":\"train_step\",\"device\":\"{backend:?}\",\"ms\":{median:.3},\"tokens_per_sec\":{tokens_per_sec:.1},\"params\":{}}}",
        model.num_params()
    ));

    std::fs::create_dir_all("target/bench")?;
    std::fs::write(
        "target/bench/results.json",
        format!("[{}]\n", results.join(",\n")),
    )?;
    println!("wrote target/bench/results.json");
    Ok(())
}
