//! `tf`: train, run and evaluate encoder–decoder Transformers on built-in tasks.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use tf_model::{EmbeddingSharing, TorchModuleConfig, TransformerConfig, import_transformer};
use tf_train::attention_maps::AttentionMaps;
use tf_train::checkpoint::write_atomic;
use tf_train::config::TrainingConfig;
use tf_train::head_stats::{format_csv, format_table, head_statistics};
use tf_train::importance::{head_importance, least_important};
use tf_train::{Backend, ModelDir, RunConfig, Task, TaskKind, eval, plot};

// burn allocates and frees large tensors every step; glibc's malloc serves them with fresh
// mmap()s, paying page faults on every touch, where mimalloc reuses memory (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Train, run and evaluate encoder–decoder Transformers ("Attention Is All You Need").
#[derive(Parser, Debug)]
#[command(name = "tf", version, about)]
struct Cli {
    /// Where the tensors live: a CPU backend (flex, ndarray) or the GPU (wgpu).
    #[arg(long, value_enum, default_value_t = Backend::Flex, global = true)]
    device: Backend,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on a built-in task and write it to a model directory.
    Train(TrainArgs),
    /// Print the model's output for each input sequence (arguments, or one per line on stdin).
    Predict(PredictArgs),
    /// Print exact-match and token accuracy on fresh samples of the model's task.
    Eval(EvalArgs),
    /// Import a PyTorch nn.Transformer state dict (safetensors) into a model directory.
    ///
    /// The file holds `model.state_dict()` under PyTorch's names, as written by
    /// `safetensors.torch.save_file`; the JSON holds the module's arguments (d_model, nhead,
    /// num_encoder_layers, num_decoder_layers, dim_feedforward, norm_first, activation,
    /// layer_norm_eps). nn.Transformer has no token embeddings: add `src_embedding.weight` and
    /// `tgt_embedding.weight` ([vocab, d_model], scaled by sqrt(d_model); the target one is also the
    /// output projection) to the file, or the model directory keeps freshly initialised ones.
    ImportTorch(ImportTorchArgs),
    /// Decode one input and draw its attention: a heatmap per layer and head (PNG and SVG) with
    /// token labels, a layers × heads grid per attention kind, and the weights as JSON.
    Attention(AttentionArgs),
    /// Per-head statistics over task samples: entropy, attention distance, max weight,
    /// cross-attention alignment with the task's ground truth, and importance.
    Heads(HeadsArgs),
    /// Remove the least important heads (Michel et al., 2019) into a new model directory, or
    /// sweep accuracy against the number of heads removed.
    Prune(PruneArgs),
    /// Average the weights of the last N checkpoints into a new model directory (the paper
    /// averaged its last 5).
    Average(AverageArgs),
    /// Corpus BLEU of a hypothesis file against a reference file, one segment a line, exactly
    /// as sacreBLEU's default (13a tokenizer, case-sensitive, exponential smoothing).
    Bleu(BleuArgs),
}

#[derive(Args, Debug)]
struct AverageArgs {
    /// Model directory written by `tf train` (its checkpoints/).
    #[arg(long)]
    model: PathBuf,
    /// How many of the newest checkpoints to average.
    #[arg(long, default_value_t = 5)]
    last: usize,
    /// Model directory to write the averaged model to.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct BleuArgs {
    /// Reference translations, one a line (UTF-8).
    #[arg(long = "ref")]
    reference: PathBuf,
    /// Hypotheses, one a line, line N translating the same source as reference line N.
    #[arg(long)]
    hyp: PathBuf,
}

/// The built-in task a model is for.
#[derive(Args, Debug)]
struct TaskArgs {
    /// The task.
    #[arg(long, value_enum, default_value_t = TaskKind::Reverse)]
    task: TaskKind,
    /// Distinct symbols in the task's sequences.
    #[arg(long, default_value_t = 10)]
    symbols: usize,
    /// Shortest training sequence.
    #[arg(long, default_value_t = 1)]
    min_len: usize,
    /// Longest training sequence.
    #[arg(long, default_value_t = 12)]
    max_len: usize,
}

impl TaskArgs {
    fn task(&self) -> Result<Task> {
        Ok(Task::new(
            self.task,
            self.symbols,
            self.min_len,
            self.max_len,
        )?)
    }
}

#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Model directory to write (config, checkpoints, metrics, weights).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its newest checkpoint (its saved settings apply).
    #[arg(long)]
    resume: bool,
    /// Model width d_model.
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Encoder layers and decoder layers (each).
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Feed-forward inner width d_ff.
    #[arg(long, default_value_t = 512)]
    d_ff: usize,
    /// Dropout on sublayer outputs and embeddings.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    #[command(flatten)]
    training: TrainingArgs,
}

/// How a model is trained (recorded in the model directory).
#[derive(Parser, Debug)]
struct TrainingArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 3500)]
    steps: usize,
    /// Sequences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate, reached at the end of warm-up; the schedule keeps the paper's shape
    /// (linear warm-up, inverse square root decay). "paper" gives the paper's own peak,
    /// d_model^-0.5 · warmup^-0.5 (4.4e-3 for d_model 128 and 400 warm-up steps: too high for
    /// these small models, whose exact match then wavers).
    #[arg(long, default_value = "1e-3", value_parser = parse_lr)]
    lr: PeakLr,
    /// Warm-up steps.
    #[arg(long, default_value_t = 400)]
    warmup: usize,
    /// Label smoothing epsilon.
    #[arg(long, default_value_t = 0.1)]
    label_smoothing: f64,
    /// Clip the gradient norm to this (0 = off).
    #[arg(long, default_value_t = 1.0)]
    grad_clip: f64,
    /// Seed of initialisation, dropout and data.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Validate every this many steps.
    #[arg(long, default_value_t = 500)]
    eval_every: usize,
    /// Validation sequences.
    #[arg(long, default_value_t = 500)]
    eval_samples: usize,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Checkpoints kept on disk (the newest); `tf average` averages some of them.
    #[arg(long, default_value_t = 5)]
    keep_checkpoints: usize,
}

impl TrainingArgs {
    fn config(&self) -> TrainingConfig {
        TrainingConfig {
            steps: self.steps,
            batch_size: self.batch_size,
            warmup: self.warmup,
            peak_lr: self.lr.0,
            label_smoothing: self.label_smoothing,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
            seed: self.seed,
            log_every: 50,
            eval_every: self.eval_every,
            eval_samples: self.eval_samples,
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
        }
    }
}

#[derive(Args, Debug)]
struct ImportTorchArgs {
    /// The state dict, as `safetensors.torch.save_file(model.state_dict(), PATH)` writes it.
    #[arg(long)]
    state_dict: PathBuf,
    /// The module's arguments as JSON: {"kind": "transformer", "d_model": .., "nhead": .., ...}.
    #[arg(long)]
    config: PathBuf,
    /// Model directory to write (must not hold a model yet).
    #[arg(long)]
    out: PathBuf,
    /// The task whose vocabulary the model reads and writes.
    #[command(flatten)]
    task: TaskArgs,
    /// Seed of the parameters the file does not hold (the embeddings, if absent).
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

#[derive(Args, Debug)]
struct PredictArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// Input sequences, e.g. "3 1 4 1 5"; none = read one per line from stdin.
    sequences: Vec<String>,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// Fresh sequences to evaluate on.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Seed of the evaluation samples (different from training's by default).
    #[arg(long, default_value_t = EVAL_SEED)]
    seed: u64,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
}

/// Seed of the fresh samples `tf eval` and `tf prune` measure accuracy on (not training's).
const EVAL_SEED: u64 = 20_251_125;

#[derive(Args, Debug)]
struct AttentionArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// The input sequence, e.g. "3 1 4 1 5".
    input: String,
    /// Directory to write the pictures and attention.json into (created if missing).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct HeadsArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// Task samples to measure over (teacher-forced).
    #[arg(long, default_value_t = 500)]
    samples: usize,
    /// Seed of the samples.
    #[arg(long, default_value_t = EVAL_SEED)]
    seed: u64,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Skip head importance (one backward pass per sample).
    #[arg(long)]
    no_importance: bool,
    /// Also write the table as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Also write the statistics as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["heads", "sweep"])))]
struct PruneArgs {
    /// Model directory written by `tf train`.
    #[arg(long)]
    model: PathBuf,
    /// Remove this many heads (the least important) and write the model to --out.
    #[arg(long, requires = "out")]
    heads: Option<usize>,
    /// Model directory to write the pruned model to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Instead: accuracy for every number of heads removed, as a table and a plot.
    #[arg(long)]
    sweep: bool,
    /// Where the sweep's plot goes (PNG and SVG; default: DIR/prune-sweep).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Task samples head importance is measured over.
    #[arg(long, default_value_t = 500)]
    importance_samples: usize,
    /// Seed of those samples (different from the evaluation's).
    #[arg(long, default_value_t = 1)]
    importance_seed: u64,
    /// Fresh samples accuracy is measured on.
    #[arg(long, default_value_t = 1000)]
    eval_samples: usize,
    /// Sequences decoded at once.
    #[arg(long, default_value_t = 250)]
    batch_size: usize,
}

/// The peak learning rate: a value, or `None` for the paper's own.
#[derive(Clone, Copy, Debug)]
struct PeakLr(Option<f64>);

/// A positive learning rate, or "paper" for the paper's own peak.
fn parse_lr(text: &str) -> Result<PeakLr, String> {
    if text == "paper" {
        return Ok(PeakLr(None));
    }
    match text.parse::<f64>() {
        Ok(lr) if lr.is_finite() && lr > 0.0 => Ok(PeakLr(Some(lr))),
        _ => Err(format!(
            "expected a positive number or \"paper\", got {text:?}"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.device.device();
    match cli.command {
        Command::Train(args) => train(args, &device),
        Command::Predict(args) => predict(args, &device),
        Command::Eval(args) => evaluate(args, &device),
        Command::ImportTorch(args) => import_torch(args, &device),
        Command::Attention(args) => attention(args, &device),
        Command::Heads(args) => heads(args, &device),
        Command::Prune(args) => prune(args, &device),
        Command::Bleu(args) => bleu(args),
        Command::Average(args) => average(args, &device),
    }
}

fn train(args: TrainArgs, device: &burn::tensor::Device) -> Result<()> {
    let task = args.task.task()?;
    let vocab = task.vocab_size();
    let model = TransformerConfig::new(vocab, vocab)
        .with_d_model(args.d_model)
        .with_n_heads(args.heads)
        .with_n_encoder_layers(args.layers)
        .with_n_decoder_layers(args.layers)
        .with_d_ff(args.d_ff)
        .with_dropout(args.dropout)
        .with_max_len(task.max_len + 1)
        .with_embedding_sharing(EmbeddingSharing::All);
    let config = RunConfig {
        model,
        task,
        training: args.training.config(),
    };
    config.validate()?;
    let dir = ModelDir::new(&args.out);
    if args.resume {
        println!("resuming {} (its saved settings apply)", args.out.display());
    } else {
        println!(
            "training a {}-parameter-class model on `{}` (symbols {}, lengths {}..={}) for {} steps into {}",
            format_params(&config),
            config.task.kind,
            config.task.n_symbols,
            config.task.min_len,
            config.task.max_len,
            config.training.steps,
            args.out.display()
        );
    }
    let summary = tf_train::train(
        &config,
        &dir,
        device,
        args.resume,
        std::io::stderr().is_terminal(),
    )?;
    println!(
        "done: {} steps in {:.0} s; train loss {:.4} -> {:.4}; validation exact match {:.4}, token accuracy {:.4}",
        summary.steps,
        summary.elapsed_secs,
        summary.first_loss,
        summary.last_loss,
        summary.validation.exact_match,
        summary.validation.token_accuracy
    );
    println!("model written to {}", args.out.display());
    Ok(())
}

/// Parameter count of the model a config builds, e.g. "0.9M".
fn format_params(config: &RunConfig) -> String {
    use burn::module::Module;
    let n = config
        .model
        .init(&burn::tensor::Device::flex())
        .num_params();
    format!("{:.1}M", n as f64 / 1e6)
}

fn import_torch(args: ImportTorchArgs, device: &burn::tensor::Device) -> Result<()> {
    let dir = ModelDir::new(&args.out);
    if dir.has_config() {
        bail!(
            "{} already holds a model; choose another --out",
            args.out.display()
        );
    }
    let json = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let torch = match serde_json::from_str(&json)
        .with_context(|| format!("{} is not a module description", args.config.display()))?
    {
        TorchModuleConfig::Transformer(torch) => torch,
        TorchModuleConfig::Mha(_) => bail!(
            "{} describes an nn.MultiheadAttention; a model directory needs an nn.Transformer \
             (import attention alone with tf_model::import_multi_head_attention)",
            args.config.display()
        ),
    };
    let state_dict = std::fs::read(&args.state_dict)
        .with_context(|| format!("cannot read {}", args.state_dict.display()))?;
    let task = args.task.task()?;
    let model_config = torch
        .transformer(task.vocab_size(), task.vocab_size())?
        .with_max_len(task.max_len + 1);
    device.seed(args.seed);
    let imported = import_transformer(&torch, &model_config, &state_dict, device)
        .with_context(|| format!("importing {}", args.state_dict.display()))?;
    let config = RunConfig {
        model: model_config,
        task,
        training: TrainingArgs::parse_from(["tf"]).config(),
    };
    config.validate()?;
    dir.save_model(&config, &imported.module)?;
    println!(
        "imported {} ({} encoder + {} decoder layers, d_model {}, {} heads) into {}",
        args.state_dict.display(),
        torch.num_encoder_layers,
        torch.num_decoder_layers,
        torch.d_model,
        torch.nhead,
        args.out.display()
    );
    if !imported.left_as_initialised.is_empty() {
        println!(
            "note: the file has no {}: the model keeps freshly initialised ones (seed {}), so its \
             outputs mean nothing until they are trained or imported",
            imported.left_as_initialised.join(" or "),
            args.seed
        );
    }
    Ok(())
}

fn predict(args: PredictArgs, device: &burn::tensor::Device) -> Result<()> {
    let (config, model) = ModelDir::new(&args.model).load_model(device)?;
    let lines: Vec<String> = if args.sequences.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .collect::<std::io::Result<_>>()
            .context("cannot read stdin")?
    } else {
        args.sequences
    };
    let task = &config.task;
    let sources = lines
        .iter()
        .enumerate()
        .map(|(number, line)| {
            parse_input(&config, line).with_context(|| format!("input {}", number + 1))
        })
        .collect::<Result<Vec<_>>>()?;
    let predictions = eval::predict(&model, &sources, config.model.max_len, 256, device)?;
    for prediction in predictions {
        println!("{}", task.format(&prediction));
    }
    Ok(())
}

/// One input sequence as token ids, refusing unknown symbols, empty and over-long sequences.
fn parse_input(config: &RunConfig, line: &str) -> Result<Vec<usize>> {
    let ids = config
        .task
        .parse(line)
        .with_context(|| format!("{line:?}"))?;
    if ids.is_empty() {
        bail!("empty sequence");
    }
    if ids.len() + 1 > config.model.max_len {
        bail!(
            "{} symbols, but this model handles at most {}",
            ids.len(),
            config.model.max_len - 1
        );
    }
    Ok(ids)
}

fn attention(args: AttentionArgs, device: &burn::tensor::Device) -> Result<()> {
    let (config, model) = ModelDir::new(&args.model).load_model(device)?;
    let source = parse_input(&config, &args.input)?;
    let task = &config.task;
    let maps = AttentionMaps::capture(
        &model,
        &source,
        config.model.max_len,
        |id| task.token_label(id),
        device,
    )?;
    let written = maps.write(&args.out)?;
    println!("input   {}", maps.source.join(" "));
    println!("output  {}", maps.output.join(" "));
    println!(
        "wrote {} files into {} (per head: encoder-self/, decoder-self/, cross/; grids: encoder-self.png, decoder-self.png, cross.png; weights: attention.json)",
        written.len(),
        args.out.display()
    );
    Ok(())
}

fn heads(args: HeadsArgs, device: &burn::tensor::Device) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device)?;
    let examples = config.task.samples(args.samples, args.seed);
    let mut stats = head_statistics(&model, &config.task, &examples, args.batch_size, device);
    if !args.no_importance {
        let gradient_device = device.clone().autodiff();
        let (_, model) = dir.load_model_without_dropout(&gradient_device)?;
        for (s, i) in stats
            .iter_mut()
            .zip(head_importance(&model, &examples, &gradient_device))
        {
            s.importance = Some(i.normalized);
        }
    }
    println!(
        "{} heads over {} samples of `{}` (seed {}); importance normalized per block",
        stats.len(),
        examples.len(),
        config.task.kind,
        args.seed
    );
    print!("{}", format_table(&stats));
    if let Some(path) = &args.csv {
        write_atomic(path, format_csv(&stats).as_bytes())?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.json {
        write_atomic(path, serde_json::to_string_pretty(&stats)?.as_bytes())?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn prune(args: PruneArgs, device: &burn::tensor::Device) -> Result<()> {
    if args.importance_samples == 0 || args.eval_samples == 0 {
        bail!("--importance-samples and --eval-samples must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device)?;
    if let Some(out) = &args.out
        && ModelDir::new(out).has_config()
    {
        bail!(
            "{} already holds a model; choose another --out",
            out.display()
        );
    }
    let gradient_device = device.clone().autodiff();
    let (_, gradient_model) = dir.load_model_without_dropout(&gradient_device)?;
    let importance_examples = config
        .task
        .samples(args.importance_samples, args.importance_seed);
    let importance = head_importance(&gradient_model, &importance_examples, &gradient_device);
    let eval_examples = config.task.samples(args.eval_samples, EVAL_SEED);
    let measure = |model: &tf_model::Transformer| {
        eval::accuracy(
            model,
            &eval_examples,
            config.task.max_len + 1,
            args.batch_size,
            device,
        )
    };
    let before = measure(&model)?;
    println!(
        "importance over {} samples (seed {}); accuracy over {} fresh samples (seed {EVAL_SEED})",
        importance_examples.len(),
        args.importance_seed,
        eval_examples.len()
    );
    if let Some(count) = args.heads {
        let remove = least_important(&importance, count)?;
        let (pruned_config, pruned) = model.prune_heads(&config.model, &remove)?;
        let after = measure(&pruned)?;
        for head in &remove {
            println!("removed {head}");
        }
        let out = args.out.as_ref().expect("clap requires --out with --heads");
        let pruned_run = RunConfig {
            model: pruned_config,
            ..config.clone()
        };
        ModelDir::new(out).save_model(&pruned_run, &pruned)?;
        println!(
            "heads {} -> {}; exact match {:.4} -> {:.4}; token accuracy {:.4} -> {:.4}",
            model.heads().len(),
            pruned.heads().len(),
            before.exact_match,
            after.exact_match,
            before.token_accuracy,
            after.token_accuracy
        );
        println!("pruned model written to {}", out.display());
        return Ok(());
    }
    let total = model.heads().len();
    let removable = total - model.attention_blocks().len();
    println!(
        "{:>13} {:>11} {:>14}",
        "heads removed", "exact match", "token accuracy"
    );
    let mut exact = Vec::new();
    let mut token = Vec::new();
    for count in 0..=removable {
        let accuracy = if count == 0 {
            before
        } else {
            let (_, pruned) =
                model.prune_heads(&config.model, &least_important(&importance, count)?)?;
            measure(&pruned)?
        };
        println!(
            "{count:>13} {:>11.4} {:>14.4}",
            accuracy.exact_match, accuracy.token_accuracy
        );
        exact.push((count as f64, accuracy.exact_match));
        token.push((count as f64, accuracy.token_accuracy));
    }
    let stem = args
        .plot
        .clone()
        .unwrap_or_else(|| args.model.join("prune-sweep"));
    let written = plot::line_plot(
        &stem,
        &format!(
            "Pruning heads by importance ({total} heads, `{}`)",
            config.task.kind
        ),
        &plot::Axes::unit("heads removed", "accuracy"),
        &[
            plot::Series {
                name: "exact match".into(),
                points: exact,
            },
            plot::Series {
                name: "token accuracy".into(),
                points: token,
            },
        ],
    )?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn average(args: AverageArgs, device: &burn::tensor::Device) -> Result<()> {
    if args.last == 0 {
        bail!("--last must be at least 1");
    }
    let dir = ModelDir::new(&args.model);
    let config = dir.load_config()?;
    let out = ModelDir::new(&args.out);
    if out.has_config() {
        bail!(
            "{} already holds a model; choose another --out",
            args.out.display()
        );
    }
    let names = dir.checkpoint_names()?;
    if names.len() < args.last {
        bail!(
            "{} has {} checkpoint(s), fewer than --last {} (train with --keep-checkpoints {} or more)",
            args.model.display(),
            names.len(),
            args.last,
            args.last
        );
    }
    let chosen = &names[names.len() - args.last..];
    let models = chosen
        .iter()
        .map(|name| dir.load_checkpoint_model(name, device))
        .collect::<Result<Vec<_>>>()?;
    let averaged = tf_train::average::average_models(models)?;
    out.save_model(&config, &averaged)?;
    println!("averaged {} into {}", chosen.join(", "), args.out.display());
    Ok(())
}

fn bleu(args: BleuArgs) -> Result<()> {
    let references = tf_train::corpus::read_lines(&args.reference)?;
    let hypotheses = tf_train::corpus::read_lines(&args.hyp)?;
    let score = tf_train::bleu::corpus_bleu(&hypotheses, &references).with_context(|| {
        format!(
            "{} against {}",
            args.hyp.display(),
            args.reference.display()
        )
    })?;
    println!("{score}");
    Ok(())
}

fn evaluate(args: EvalArgs, device: &burn::tensor::Device) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let (config, model) = ModelDir::new(&args.model).load_model(device)?;
    let examples = config.task.samples(args.samples, args.seed);
    let accuracy = eval::accuracy(
        &model,
        &examples,
        config.task.max_len + 1,
        args.batch_size,
        device,
    )?;
    println!(
        "task {} (symbols {}, lengths {}..={}), {} fresh samples (seed {})",
        config.task.kind,
        config.task.n_symbols,
        config.task.min_len,
        config.task.max_len,
        accuracy.sequences,
        args.seed
    );
    println!("exact match     {:.4}", accuracy.exact_match);
    println!("token accuracy  {:.4}", accuracy.token_accuracy);
    Ok(())
}
