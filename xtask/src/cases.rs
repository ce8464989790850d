//! The benchmark cases, each returning what it measured.

use std::process::Command;

use anyhow::{Context, Result, bail};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::nn::attention::{
    MhaInput, MultiHeadAttention as BurnMha, MultiHeadAttentionConfig as BurnMhaConfig,
};
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};
use tf_attention::{
    AttentionMask, MultiHeadAttention, MultiHeadAttentionConfig, Weights, fused_attention,
};
use tf_model::{GreedyOptions, Steps, Transformer, TransformerConfig};
use tf_train::data::batch::Seq2SeqBatch;
use tf_train::data::task::Example;
use tf_train::training::config::TrainingConfig;
use tf_train::training::loss::label_smoothed_cross_entropy;
use tf_train::training::optimizer::adam;
use tf_train::training::preset::Preset;
use tf_train::training::trainer::training_step;

use crate::timing::{Repeats, Timing, alternate, time};

/// Case 1: our MHA forward against burn-nn's, same weights, alternating.
#[derive(Clone, Debug, Serialize)]
pub struct MhaComparison {
    /// `[batch, seq, d_model]`.
    pub shape: [usize; 3],
    /// Heads.
    pub heads: usize,
    /// Ours (default, fused path).
    pub ours: Timing,
    /// burn-nn's `MultiHeadAttention`.
    pub burn_nn: Timing,
    /// burn-nn time / our time (> 1: ours is faster).
    pub speedup: f64,
    /// max |ours − burn-nn| of the outputs.
    pub max_abs_diff: f32,
}

/// burn-nn's attention holding the same W^Q, W^K, W^V, W^O as `ours`.
fn burn_nn_copy(ours: &MultiHeadAttention, device: &Device) -> BurnMha {
    let d = ours.heads_width();
    let mut theirs = BurnMhaConfig::new(d, ours.n_heads)
        .with_dropout(0.0)
        .init(device);
    let part = |i: usize| Linear {
        weight: Param::from_tensor(ours.in_proj.weight.val().narrow(1, i * d, d)),
        bias: ours
            .in_proj
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(b.val().narrow(0, i * d, d))),
    };
    theirs.query = part(0);
    theirs.key = part(1);
    theirs.value = part(2);
    theirs.output = ours.out_proj.clone();
    theirs
}

pub fn mha_comparison(
    device: &Device,
    repeats: Repeats,
    shape: [usize; 3],
    heads: usize,
) -> MhaComparison {
    let [batch, seq, d_model] = shape;
    device.seed(1);
    let ours = MultiHeadAttentionConfig::new(d_model, heads).init(device);
    let theirs = burn_nn_copy(&ours, device);
    let x = Tensor::<3>::random(
        [batch, seq, d_model],
        Distribution::Normal(0.0, 1.0),
        device,
    );
    let mask = AttentionMask::none();
    let run_ours = || {
        ours.self_attention(x.clone(), &mask, None, Weights::Omit)
            .context
    };
    let run_theirs = || theirs.forward(MhaInput::self_attn(x.clone())).context;
    let max_abs_diff = (run_ours() - run_theirs()).abs().max().into_scalar::<f32>();
    let (ours_t, theirs_t) = alternate(
        device,
        repeats,
        || {
            let _ = run_ours().into_data();
        },
        || {
            let _ = run_theirs().into_data();
        },
    );
    MhaComparison {
        shape,
        heads,
        speedup: theirs_t.median_ms / ours_t.median_ms,
        ours: ours_t,
        burn_nn: theirs_t,
        max_abs_diff,
    }
}

/// Where one MHA forward spends its time.
#[derive(Clone, Debug, Serialize)]
pub struct MhaBreakdown {
    /// `[batch, seq, d_model]`.
    pub shape: [usize; 3],
    /// Each step's name and timing.
    pub steps: Vec<(String, Timing)>,
    /// The plain matmul of the Q|K|V projection, `[batch·seq, d] × [d, 3d]`, for comparison.
    pub qkv_matmul_2d: Timing,
    /// GFLOP/s of that matmul.
    pub qkv_matmul_gflops: f64,
}

pub fn mha_breakdown(
    device: &Device,
    repeats: Repeats,
    shape: [usize; 3],
    heads: usize,
) -> MhaBreakdown {
    let [batch, seq, d] = shape;
    let mha = MultiHeadAttentionConfig::new(d, heads).init(device);
    let x = Tensor::<3>::random([batch, seq, d], Distribution::Normal(0.0, 1.0), device);
    let d_k = d / heads;
    let split = |t: Tensor<3>| t.reshape([batch, seq, heads, d_k]).swap_dims(1, 2);
    let qkv = mha.in_proj.forward(x.clone());
    let [q, k, v]: [Tensor<3>; 3] = qkv.clone().chunk(3, 2).try_into().unwrap();
    let (q, k, v) = (split(q), split(k), split(v));
    let heads_out = fused_attention(q.clone(), k.clone(), v.clone(), &AttentionMask::none());
    let merged = heads_out.clone().swap_dims(1, 2).reshape([batch, seq, d]);
    let steps = vec![
        (
            "in_proj (x W_qkv + b)".to_string(),
            time(device, repeats, || {
                let _ = mha.in_proj.forward(x.clone()).into_data();
            }),
        ),
        (
            "fused attention on the split heads (views)".to_string(),
            time(device, repeats, || {
                let _ = fused_attention(q.clone(), k.clone(), v.clone(), &AttentionMask::none())
                    .into_data();
            }),
        ),
        (
            "merge heads (swap + reshape copy)".to_string(),
            time(device, repeats, || {
                let _ = heads_out
                    .clone()
                    .swap_dims(1, 2)
                    .reshape([batch, seq, d])
                    .into_data();
            }),
        ),
        (
            "out_proj".to_string(),
            time(device, repeats, || {
                let _ = mha.out_proj.forward(merged.clone()).into_data();
            }),
        ),
        (
            "whole forward".to_string(),
            time(device, repeats, || {
                let _ = mha
                    .self_attention(x.clone(), &AttentionMask::none(), None, Weights::Omit)
                    .context
                    .into_data();
            }),
        ),
    ];
    let a = Tensor::<2>::random([batch * seq, d], Distribution::Normal(0.0, 1.0), device);
    let w = mha.in_proj.weight.val();
    let qkv_matmul_2d = time(device, repeats, || {
        let _ = a.clone().matmul(w.clone()).into_data();
    });
    let flops = 2.0 * (batch * seq * d * 3 * d) as f64;
    MhaBreakdown {
        shape,
        steps,
        qkv_matmul_gflops: flops / (qkv_matmul_2d.median_ms * 1e6),
        qkv_matmul_2d,
    }
}

/// Case 2: one self-attention of `[1, seq, 512]`, 8 heads, on one path, in a fresh process.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// Sequence length.
    pub seq: usize,
    /// `fused` (our default) or `explicit` (weights materialised).
    pub path: String,
    /// Median time, ms.
    pub ms: f64,
    /// Peak resident memory above the process's before the first call, MiB.
    pub peak_mib: f64,
}

/// Resident memory now and at its peak so far, in KiB (Linux `/proc/self/status`).
fn memory_kib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Runs in the child process: measures one point and prints it as JSON.
pub fn scaling_point(
    device: &Device,
    seq: usize,
    path: &str,
    timed: usize,
) -> Result<ScalingPoint> {
    let explicit = match path {
        "fused" => false,
        "explicit" => true,
        other => bail!("unknown path {other:?}"),
    };
    let mha = MultiHeadAttentionConfig::new(512, 8).init(device);
    let x = Tensor::<3>::random([1, seq, 512], Distribution::Normal(0.0, 1.0), device);
    device.sync()?;
    let (before, _) = memory_kib();
    let run = || {
        let weights = if explicit {
            Weights::Return
        } else {
            Weights::Omit
        };
        let out = mha.self_attention(x.clone(), &AttentionMask::none(), None, weights);
        let _ = out.context.into_data();
    };
    let timing = time(device, Repeats { warmup: 1, timed }, run);
    let (_, peak) = memory_kib();
    Ok(ScalingPoint {
        seq,
        path: path.into(),
        ms: timing.median_ms,
        peak_mib: (peak - before) / 1024.0,
    })
}

/// Runs this program with `args` in a fresh process (so that no case inherits another's heap
/// or peak) and parses the JSON line it prints last.
pub fn in_child<T: serde::de::DeserializeOwned>(args: &[String]) -> Result<T> {
    let exe = std::env::current_exe()?;
    let output = Command::new(exe)
        .args(args)
        .output()
        .with_context(|| format!("running xtask {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            "xtask {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{') || l.starts_with('['))
        .context("no JSON from the child")?;
    Ok(serde_json::from_str(line)?)
}

/// The small encoder–decoder of cases 3 and 4: `d_model` 256, 4 heads, 3 + 3 layers, `d_ff` 1024,
/// a vocabulary of 1,000.
pub fn small_model_config(max_len: usize) -> TransformerConfig {
    let preset = Preset::translation();
    TransformerConfig::new(1000, 1000)
        .with_layer(preset.layer)
        .with_n_encoder_layers(preset.layers)
        .with_n_decoder_layers(preset.layers)
        .with_max_len(max_len)
}

/// Case 3: the training step of `tf train` (`tf_train::training::trainer::training_step`:
/// forward, label-smoothed loss, backward, Adam with the default gradient clipping) on the small
/// model and a batch of 32 × 32 target tokens, dropout as configured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainStep {
    /// Timing of one step.
    pub step: Timing,
    /// Target tokens per second (32 · 32 per step).
    pub tokens_per_sec: f64,
    /// Parameters.
    pub params: usize,
    /// Forward, loss and backward (a forward alone is not timed: burn's autodiff keeps a
    /// graph that no backward consumes).
    pub forward_backward: Timing,
    /// The parameters' float type.
    #[serde(default)]
    pub dtype: String,
    /// Threads of rayon's pool, which Flex and the fused operations share.
    #[serde(default)]
    pub threads: usize,
}

/// `n` sentence pairs of random ids in `3..vocab` (above PAD, BOS and EOS), sources of
/// `src_len` and targets of `tgt_len` ids.
fn random_examples(
    n: usize,
    [src_len, tgt_len]: [usize; 2],
    vocab: usize,
    device: &Device,
) -> Vec<Example> {
    let rows = |len: usize| -> Vec<Vec<usize>> {
        let ids =
            Tensor::<2, Int>::random([n, len], Distribution::Uniform(3.0, vocab as f64), device)
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .expect("ids");
        ids.chunks(len.max(1))
            .map(|row| row.iter().map(|&id| id as usize).collect())
            .collect()
    };
    rows(src_len)
        .into_iter()
        .zip(rows(tgt_len))
        .map(|(src, tgt)| Example { src, tgt })
        .collect()
}

/// Case 3 on `config` (the bench uses [`small_model_config`]; a vocabulary of 1,000 and 32
/// positions at least).
pub fn train_step_with(device: &Device, repeats: Repeats, config: TransformerConfig) -> TrainStep {
    let train_device = device.clone().autodiff();
    train_device.seed(1);
    let mut model: Transformer = config.init(&train_device);
    let training = TrainingConfig::default(); // label smoothing 0.1, gradient norm clipped to 1
    let mut optimizer = adam(training.grad_clip);
    // 32 sentences: a source of 32 ids, a target of 31 and EOS (the decoder reads BOS and 31).
    let examples = random_examples(32, [32, 31], 1000, device);
    let forward_backward = time(&train_device, repeats, || {
        let batch = Seq2SeqBatch::new(&examples, &train_device);
        let grads = batch.loss(&model, training.label_smoothing).backward();
        let _ = model
            .src_embedding
            .embedding
            .weight
            .grad(&grads)
            .map(|g| g.into_data());
    });
    let step = time(&train_device, repeats, || {
        let batch = Seq2SeqBatch::new(&examples, &train_device);
        let (updated, _) = training_step(
            model.clone(),
            &mut optimizer,
            batch,
            1e-4,
            training.label_smoothing,
        );
        model = updated;
        let _ = model.src_embedding.weight().into_data();
    });
    TrainStep {
        tokens_per_sec: 32.0 * 32.0 / (step.median_ms / 1e3),
        step,
        params: model.num_params(),
        forward_backward,
        dtype: format!("{:?}", model.src_embedding.weight().dtype()).to_lowercase(),
        threads: rayon::current_num_threads(),
    }
}

/// Case 4: greedy decoding of `tokens` tokens (EOS disabled) from a 32-token source, batch 1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Decoding {
    /// Tokens generated.
    pub tokens: usize,
    /// With the key/value cache.
    pub cached: Timing,
    /// Recomputing the prefix each step.
    pub uncached: Timing,
    /// Tokens per second, cached.
    pub cached_tokens_per_sec: f64,
    /// Tokens per second, uncached.
    pub uncached_tokens_per_sec: f64,
    /// Uncached time / cached time.
    pub speedup: f64,
}

pub fn decoding(device: &Device, repeats: Repeats, lengths: &[usize]) -> Vec<Decoding> {
    device.seed(2);
    let model = small_model_config(lengths.iter().max().copied().unwrap_or(32) + 1)
        .without_dropout()
        .init(device);
    let src = Tensor::<2, Int>::random([1, 32], Distribution::Uniform(3.0, 999.0), device);
    lengths
        .iter()
        .map(|&n| {
            // EOS = u32::MAX: never produced, so every run generates exactly n tokens.
            let options = |steps| GreedyOptions {
                steps,
                ..GreedyOptions::new(1, u32::MAX as usize, n)
            };
            let decode = |steps| {
                let tokens = model
                    .greedy_decode(src.clone(), None, &options(steps))
                    .unwrap();
                assert_eq!(tokens[0].len(), n);
            };
            let cached = time(device, repeats, || decode(Steps::Cached));
            // Uncached decoding is quadratic: fewer runs at length.
            let slow = if n >= 256 {
                repeats.at_most(3)
            } else {
                repeats
            };
            let uncached = time(device, slow, || decode(Steps::Recomputed));
            Decoding {
                tokens: n,
                cached_tokens_per_sec: n as f64 / (cached.median_ms / 1e3),
                uncached_tokens_per_sec: n as f64 / (uncached.median_ms / 1e3),
                speedup: uncached.median_ms / cached.median_ms,
                cached,
                uncached,
            }
        })
        .collect()
}

/// The fused operations against burn's composed ones, each alone and together in the
/// translation model's training step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FusedComparison {
    /// Rows of logits (target tokens) and vocabulary of the loss.
    pub loss_shape: [usize; 2],
    /// Loss forward + backward, fused.
    pub loss_fused: Timing,
    /// Loss forward + backward, composed.
    pub loss_composed: Timing,
    /// Shape of the dropout case (target tokens × `d_model`).
    pub dropout_shape: [usize; 2],
    /// Dropout 0.1 forward + backward, fused.
    pub dropout_fused: Timing,
    /// Dropout 0.1 forward + backward, burn-nn's.
    pub dropout_composed: Timing,
    /// Shape of the attention case (`[batch, len, d_model]`, the translation model's heads).
    pub attention_shape: [usize; 3],
    /// Causal self-attention with key padding, forward + backward, fused.
    pub attention_fused: Timing,
    /// The same with burn's composed attention.
    pub attention_composed: Timing,
    /// Training step of the translation model (forward, loss, backward, Adam; dropout 0.1),
    /// every fused operation.
    pub step_fused: Timing,
    /// The same step with burn's composed operations.
    pub step_composed: Timing,
}

/// The fused case on `device` with `batch × len` target tokens, a vocabulary of `vocab` and the
/// translation model's width.
pub fn fused_comparison(
    device: &Device,
    repeats: Repeats,
    batch: usize,
    len: usize,
    vocab: usize,
) -> FusedComparison {
    let train_device = device.clone().autodiff();
    train_device.seed(1);
    let logits = Tensor::<3>::random(
        [batch, len, vocab],
        Distribution::Normal(0.0, 3.0),
        &train_device,
    )
    .require_grad();
    let ids = |d: &Device| {
        Tensor::<2, Int>::random([batch, len], Distribution::Uniform(3.0, vocab as f64), d)
    };
    let targets = ids(&train_device);
    let loss_pass = || {
        let loss = label_smoothed_cross_entropy(logits.clone(), targets.clone(), 0, 0.1);
        let _ = logits.grad(&loss.backward()).map(|g| g.into_data());
    };
    let (loss_fused, loss_composed) = alternate(&train_device, repeats, loss_pass, || {
        tf_attention::fused::composed_only(loss_pass)
    });

    let preset = Preset::translation();
    let d_model = preset.layer.d_model;
    let hidden = Tensor::<2>::random([batch * len, d_model], Distribution::Default, &train_device)
        .require_grad();
    let module = burn::nn::DropoutConfig::new(0.1).init();
    let dropout_pass = || {
        let out = tf_layers::fused_dropout::dropout(&module, hidden.clone());
        let _ = hidden.grad(&out.sum().backward()).map(|g| g.into_data());
    };
    let (dropout_fused, dropout_composed) = alternate(&train_device, repeats, dropout_pass, || {
        tf_attention::fused::composed_only(dropout_pass)
    });

    let mha = MultiHeadAttentionConfig::new(d_model, preset.layer.n_heads).init(&train_device);
    let x = Tensor::<3>::random([batch, len, d_model], Distribution::Default, &train_device)
        .require_grad();
    // A quarter of the sequences padded to three quarters of their length.
    let lengths: Vec<usize> = (0..batch)
        .map(|b| if b % 4 == 0 { len * 3 / 4 } else { len })
        .collect();
    let mask = AttentionMask::causal().with_key_padding(Some(
        tf_attention::padding_mask_from_lengths(&lengths, len, &train_device),
    ));
    let attention_pass = || {
        let out = mha.self_attention(x.clone(), &mask, None, Weights::Omit);
        let _ = x.grad(&out.context.sum().backward()).map(|g| g.into_data());
    };
    let (attention_fused, attention_composed) =
        alternate(&train_device, repeats, attention_pass, || {
            tf_attention::fused::composed_only(attention_pass)
        });

    let config = preset.model(vocab, len + 1);
    let mut model: Transformer = config.init(&train_device);
    let mut optimizer = adam(preset.training.grad_clip);
    let examples = random_examples(batch, [len, len.saturating_sub(1)], vocab, device);
    // One model trained on by both: each step's timing is the same work, with the operations
    // taken one way or the other.
    let step = std::cell::RefCell::new(|| {
        let batch = Seq2SeqBatch::new(&examples, &train_device);
        let smoothing = preset.training.label_smoothing;
        (model, _) = training_step(model.clone(), &mut optimizer, batch, 1e-4, smoothing);
        let _ = model.src_embedding.weight().into_data();
    });
    let (step_fused, step_composed) = alternate(
        &train_device,
        repeats.at_most(7),
        || (step.borrow_mut())(),
        || tf_attention::fused::composed_only(|| (step.borrow_mut())()),
    );
    FusedComparison {
        loss_shape: [batch * len, vocab],
        loss_fused,
        loss_composed,
        dropout_shape: [batch * len, d_model],
        dropout_fused,
        dropout_composed,
        attention_shape: [batch, len, d_model],
        attention_fused,
        attention_composed,
        step_fused,
        step_composed,
    }
}

/// Case 7: the hooked forward pass with no hooks against the plain one, and with every
/// activation kept, on the translation model (inference, teacher-forced).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HooksOverhead {
    /// `[batch, source and target length]`.
    pub shape: [usize; 2],
    /// `Transformer::forward`.
    pub plain: Timing,
    /// `Transformer::forward_hooked` with `Hooks::none()`.
    pub no_hooks: Timing,
    /// `no_hooks / plain`.
    pub ratio: f64,
    /// `forward_hooked` keeping every activation (explicit attention path).
    pub cache_all: Timing,
}

impl HooksOverhead {
    /// One line: the three timings and the ratio.
    pub fn summary(&self) -> String {
        format!(
            "forward {:?}: plain {}, hooked with no hooks {} ({:.3}x), keeping everything {}",
            self.shape,
            self.plain.cell(),
            self.no_hooks.cell(),
            self.ratio,
            self.cache_all.cell()
        )
    }
}

/// Case 7 on `device` with `batch` sentences of `len` tokens and a vocabulary of `vocab`.
pub fn hooks_overhead(
    device: &Device,
    repeats: Repeats,
    batch: usize,
    len: usize,
    vocab: usize,
) -> HooksOverhead {
    device.seed(1);
    let model: Transformer = Preset::translation()
        .model(vocab, len + 1)
        .without_dropout()
        .init(device);
    let examples = random_examples(batch, [len, len], vocab, device);
    let b = Seq2SeqBatch::new(&examples, device);
    let plain = || {
        let logits = model.forward(b.src.clone(), b.tgt_in.clone(), None, None);
        let _ = logits.into_data();
    };
    let hooked = |hooks: &mut tf_attention::Hooks| {
        let logits = model
            .forward_hooked(b.src.clone(), b.tgt_in.clone(), None, None, hooks)
            .expect("no hook to refuse");
        let _ = logits.into_data();
    };
    let (plain, no_hooks) = alternate(device, repeats, plain, || {
        hooked(&mut tf_attention::Hooks::none())
    });
    let cache_all = time(device, repeats.at_most(5), || {
        hooked(&mut tf_attention::Hooks::none().cache_all())
    });
    HooksOverhead {
        shape: [batch, len],
        ratio: no_hooks.median_ms / plain.median_ms,
        plain,
        no_hooks,
        cache_all,
    }
}
