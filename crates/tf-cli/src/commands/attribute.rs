//! `tf attribute`: what each generated token draws on, over the source tokens and the target
//! prefix, by one attribution method; JSON with `--json`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use burn::tensor::Device;
use clap::{Args, ValueEnum};
use tf_inspect::attribution::{Attribution, AttributionMethod, attribute};
use tf_inspect::tokens::Tokens;
use tf_train::store::atomic::write_atomic;

use crate::commands::codec::load_inspected;

/// An attribution method as the command line names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// The last layer's attention weights, heads averaged.
    Attention,
    /// Attention rollout (0.5·A + 0.5·I per layer).
    Rollout,
    /// Norm-based: ‖α f(x)‖ of the last layer (Kobayashi et al., 2020).
    Norm,
    /// ALTI+: each prediction's source and prefix shares through every layer (Ferrando et al., 2022).
    #[value(name = "alti+", alias = "alti")]
    AltiPlus,
    /// Value zeroing: how far each layer's output moves without one position's values
    /// (Mohebbi et al., 2023), composed through the layers.
    ValueZeroing,
    /// Gradient norm w.r.t. the scaled token embeddings.
    Gradient,
    /// ‖gradient ⊙ input‖.
    GradientXInput,
    /// Integrated gradients from zero token embeddings (--steps).
    IntegratedGradients,
}

#[derive(Args, Debug)]
pub struct AttributeArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// The attribution method.
    #[arg(long, value_enum)]
    method: Method,
    /// The input: a sentence for a translation model, a sequence such as "3 1 4" for a
    /// synthetic task.
    input: String,
    /// The translation to attribute [default: the model's greedy one].
    #[arg(long)]
    target: Option<String>,
    /// Steps of integrated gradients.
    #[arg(long, default_value_t = 32)]
    steps: usize,
    /// Write {"method", "source_tokens", "target_tokens", "source", "target"} to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl Method {
    /// Every method but integrated gradients (the one that takes seconds).
    pub const QUICK: [Method; 7] = [
        Method::Attention,
        Method::Rollout,
        Method::Norm,
        Method::AltiPlus,
        Method::ValueZeroing,
        Method::Gradient,
        Method::GradientXInput,
    ];

    /// The library's method; `steps` for integrated gradients.
    pub fn with_steps(self, steps: usize) -> AttributionMethod {
        match self {
            Method::Attention => AttributionMethod::Attention,
            Method::Rollout => AttributionMethod::Rollout,
            Method::Norm => AttributionMethod::Norm,
            Method::AltiPlus => AttributionMethod::AltiPlus,
            Method::ValueZeroing => AttributionMethod::ValueZeroing,
            Method::Gradient => AttributionMethod::Gradient,
            Method::GradientXInput => AttributionMethod::GradientTimesInput,
            Method::IntegratedGradients => AttributionMethod::IntegratedGradients { steps },
        }
    }
}

pub fn run(args: AttributeArgs, device: &Device) -> Result<()> {
    let method = args.method.with_steps(args.steps);
    let device = if method.needs_gradients() {
        device.clone().autodiff()
    } else {
        device.clone()
    };
    let (model, codec) = load_inspected(&args.model, &device)?;
    let (source, target) = codec.source_and_target(&model, &args.input, args.target.as_deref())?;
    let started = Instant::now();
    let attribution = attribute(
        &model,
        &source,
        target.as_deref(),
        codec.max_output(&model, source.len()),
        method,
        Tokens {
            special: codec.special_ids(),
            source: &|id| codec.source_label(id),
            target: &|id| codec.label(id),
        },
        &device,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    print_table(&attribution, method.gives_shares());
    println!("{} in {seconds:.2} s", attribution.method);
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&attribution)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// One row per generated token: the source token it draws on most and, for the methods whose
/// rows are shares of one prediction, the source's share.
fn print_table(a: &Attribution, shares: bool) {
    println!("{:<14} {:>12}  most from", "token", "source share");
    for (t, token) in a.target_tokens.iter().enumerate() {
        let source: f32 = a.source[t].iter().sum();
        let prefix: f32 = a.target[t].iter().sum();
        let best = a.source[t]
            .iter()
            .enumerate()
            .max_by(|x, y| x.1.total_cmp(y.1))
            .map_or("", |(s, _)| a.source_tokens[s].as_str());
        let share = if shares {
            format!("{:.3}", source / (source + prefix).max(f32::MIN_POSITIVE))
        } else {
            // Source and prefix are normalised apart: no share of one to tell.
            "-".to_string()
        };
        println!("{token:<14} {share:>12}  {best}");
    }
}
