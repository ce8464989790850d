//! `tf`: train, run and evaluate encoder–decoder Transformers on built-in tasks and on
//! translation.

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
use tf_train::translate::{TranslateOptions, translate};
use tf_train::translation::TranslationTask;
use tf_train::{Backend, ModelDir, RunConfig, RunTask, Task, TaskKind, eval, plot};

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
    /// Train a model on a built-in task, or on a parallel corpus (--task translation), and write
    /// it to a model directory.
    Train(Box<TrainArgs>),
    /// Translate sentences, one a line, with a translation model (beam search by default).
    Translate(TranslateArgs),
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

/// What a model learns: a built-in synthetic task, or translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TaskChoice {
    /// Copy the symbols.
    Copy,
    /// Reverse the symbols.
    Reverse,
    /// Sort the symbols.
    Sort,
    /// Translate a parallel corpus (--data, --src, --tgt).
    Translation,
}

/// The task a model is for.
#[derive(Args, Debug)]
struct TaskArgs {
    /// The task.
    #[arg(long, value_enum, default_value_t = TaskChoice::Reverse)]
    task: TaskChoice,
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
    /// The synthetic task chosen; translation is an error for commands without a corpus.
    fn task(&self) -> Result<Task> {
        let kind = match self.task {
            TaskChoice::Copy => TaskKind::Copy,
            TaskChoice::Reverse => TaskKind::Reverse,
            TaskChoice::Sort => TaskKind::Sort,
            TaskChoice::Translation => {
                bail!("--task translation is for `tf train`; here choose copy, reverse or sort")
            }
        };
        Ok(Task::new(kind, self.symbols, self.min_len, self.max_len)?)
    }
}

/// The corpus and vocabulary of `--task translation`.
#[derive(Args, Debug)]
struct TranslationArgs {
    /// Directory of the parallel corpus: SPLIT.LANG or SPLIT.LANG.gz, one sentence a line.
    #[arg(long, default_value = "../shared/data/multi30k")]
    data: PathBuf,
    /// Source language (file suffix).
    #[arg(long, default_value = "de")]
    src: String,
    /// Target language (file suffix).
    #[arg(long, default_value = "en")]
    tgt: String,
    /// Split to train on (and learn the vocabulary from).
    #[arg(long, default_value = "train")]
    train_split: String,
    /// Split to validate on (loss and greedy BLEU each epoch; picks the best model).
    #[arg(long, default_value = "val")]
    valid_split: String,
    /// Subword vocabulary size (joint BPE over both languages, special tokens included).
    #[arg(long, default_value_t = 8000)]
    vocab_size: usize,
    /// Subword merges need at least this many occurrences.
    #[arg(long, default_value_t = 2)]
    min_frequency: u64,
    /// Longest training sentence in subword tokens; longer pairs are skipped (and counted).
    #[arg(long, default_value_t = 100)]
    max_tokens: usize,
    /// Padded tokens per batch, on the source and on the target side.
    #[arg(long, default_value_t = 2048)]
    batch_tokens: usize,
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
    #[command(flatten)]
    translation: TranslationArgs,
    /// Model width d_model [default: 128; translation 256].
    #[arg(long)]
    d_model: Option<usize>,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Encoder layers and decoder layers (each) [default: 2; translation 3].
    #[arg(long)]
    layers: Option<usize>,
    /// Feed-forward inner width d_ff [default: 512; translation 1024].
    #[arg(long)]
    d_ff: Option<usize>,
    /// Dropout on sublayer outputs and embeddings.
    #[arg(long, default_value_t = 0.1)]
    dropout: f64,
    /// Dropout on attention weights (the paper uses none; PyTorch's nn.Transformer its dropout).
    #[arg(long, default_value_t = 0.0)]
    attention_dropout: f64,
    #[command(flatten)]
    training: TrainingArgs,
}

/// The model and training defaults that differ between the synthetic tasks and translation.
struct Defaults {
    d_model: usize,
    layers: usize,
    d_ff: usize,
    steps: usize,
    warmup: usize,
}

impl TrainArgs {
    fn defaults(&self) -> Defaults {
        match self.task.task {
            TaskChoice::Translation => Defaults {
                d_model: 256,
                layers: 3,
                d_ff: 1024,
                steps: usize::MAX,
                warmup: 800,
            },
            _ => Defaults {
                d_model: 128,
                layers: 2,
                d_ff: 512,
                steps: 3500,
                warmup: 400,
            },
        }
    }

    /// The model's configuration for vocabularies of `vocab` tokens and `max_len` positions.
    fn model(&self, vocab: usize, max_len: usize) -> TransformerConfig {
        let defaults = self.defaults();
        let layers = self.layers.unwrap_or(defaults.layers);
        TransformerConfig::new(vocab, vocab)
            .with_d_model(self.d_model.unwrap_or(defaults.d_model))
            .with_n_heads(self.heads)
            .with_n_encoder_layers(layers)
            .with_n_decoder_layers(layers)
            .with_d_ff(self.d_ff.unwrap_or(defaults.d_ff))
            .with_dropout(self.dropout)
            .with_attention_dropout(self.attention_dropout)
            .with_max_len(max_len)
            .with_embedding_sharing(EmbeddingSharing::All)
    }

    fn training(&self) -> TrainingConfig {
        let defaults = self.defaults();
        let mut config = self.training.config();
        config.steps = self.training.steps.unwrap_or(defaults.steps);
        config.warmup = self.training.warmup.unwrap_or(defaults.warmup);
        if self.task.task == TaskChoice::Translation {
            config.epochs = Some(self.training.epochs);
            config.time_limit_secs = Some(self.training.max_minutes.unwrap_or(85.0) * 60.0);
        }
        config
    }
}

/// How a model is trained (recorded in the model directory).
#[derive(Parser, Debug)]
struct TrainingArgs {
    /// Optimizer steps [default: 3500; translation: as many as --epochs take].
    #[arg(long)]
    steps: Option<usize>,
    /// Passes over the training data (translation).
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Stop training after this many minutes of wall time, validating and checkpointing first
    /// [default: none; translation 85].
    #[arg(long)]
    max_minutes: Option<f64>,
    /// Sequences per batch.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Peak learning rate, reached at the end of warm-up; the schedule keeps the paper's shape
    /// (linear warm-up, inverse square root decay). "paper" gives the paper's own peak,
    /// d_model^-0.5 · warmup^-0.5 (4.4e-3 for d_model 128 and 400 warm-up steps: too high for
    /// these small models, whose exact match then wavers).
    #[arg(long, default_value = "1e-3", value_parser = parse_lr)]
    lr: PeakLr,
    /// Warm-up steps [default: 400; translation 800].
    #[arg(long)]
    warmup: Option<usize>,
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
    /// Validation sequences (translation: the first N validation sentences, for BLEU).
    #[arg(long, default_value_t = 500)]
    eval_samples: usize,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Checkpoints kept on disk (the newest); `tf average` averages some of them.
    #[arg(long, default_value_t = 5)]
    keep_checkpoints: usize,
    /// Translation: at the end, also validate the mean of the newest N checkpoints, and keep it
    /// as the model if its BLEU is at least the best checkpoint's (1 = off).
    #[arg(long, default_value_t = 5)]
    average_last: usize,
}

impl TrainingArgs {
    fn config(&self) -> TrainingConfig {
        TrainingConfig {
            steps: self.steps.unwrap_or(3500),
            epochs: None,
            time_limit_secs: self.max_minutes.map(|m| m * 60.0),
            batch_size: self.batch_size,
            warmup: self.warmup.unwrap_or(400),
            peak_lr: self.lr.0,
            label_smoothing: self.label_smoothing,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
            seed: self.seed,
            log_every: 50,
            eval_every: self.eval_every,
            eval_samples: self.eval_samples,
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            average_last: self.average_last,
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
struct TranslateArgs {
    /// Model directory written by `tf train --task translation`.
    #[arg(long)]
    model: PathBuf,
    /// Source sentences, one a line [default: stdin].
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where the translations go, one a line, line N for input line N [default: stdout].
    #[arg(long)]
    output: Option<PathBuf>,
    /// Beams per sentence (1 = greedy decoding).
    #[arg(long, default_value_t = 5)]
    beam: usize,
    /// Length penalty exponent alpha of GNMT's ((5 + length) / 6)^alpha.
    #[arg(long, default_value_t = 0.6)]
    alpha: f64,
    /// Sentences decoded together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
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
        Command::Train(args) => train(*args, &device),
        Command::Translate(args) => translate_lines(args, &device),
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
    let dir = ModelDir::new(&args.out);
    let config = if args.resume {
        println!("resuming {} (its saved settings apply)", args.out.display());
        dir.load_config()?
    } else if args.task.task == TaskChoice::Translation {
        translation_run(&args, &dir)?
    } else {
        let task = args.task.task()?;
        let config = RunConfig {
            model: args.model(task.vocab_size(), task.max_len + 1),
            task: task.clone().into(),
            training: args.training(),
        };
        config.validate()?;
        println!(
            "training a {}-parameter-class model on `{}` (symbols {}, lengths {}..={}) for {} steps into {}",
            format_params(&config),
            task.kind,
            task.n_symbols,
            task.min_len,
            task.max_len,
            config.training.steps,
            args.out.display()
        );
        config
    };
    let summary = tf_train::train(
        &config,
        &dir,
        device,
        args.resume,
        std::io::stderr().is_terminal(),
    )?;
    let losses = if summary.first_loss.is_nan() {
        "; nothing left to train".to_string()
    } else {
        format!(
            "; train loss {:.4} -> {:.4}",
            summary.first_loss, summary.last_loss
        )
    };
    match (&config.task, summary.best) {
        (RunTask::Translation(_), Some(best)) => println!(
            "done: {} steps in {:.0} s{losses}; best validation BLEU {:.2} ({}), kept as the model",
            summary.steps,
            summary.elapsed_secs,
            best.bleu,
            match best.averaged.len() {
                0 => format!("step {}", best.step),
                n => format!("the mean of {n} checkpoints up to step {}", best.step),
            }
        ),
        _ => println!(
            "done: {} steps in {:.0} s{losses}; validation exact match {:.4}, token accuracy {:.4}",
            summary.steps,
            summary.elapsed_secs,
            summary.validation.exact_match,
            summary.validation.token_accuracy
        ),
    }
    println!("model written to {}", args.out.display());
    Ok(())
}

/// A new translation run: learns the subword vocabulary from the training split into the model
/// directory, and sizes the model to it.
fn translation_run(args: &TrainArgs, dir: &ModelDir) -> Result<RunConfig> {
    if dir.has_config() {
        bail!(
            "{} already holds a trained run; pass --resume to continue it, or choose another --out",
            dir.path().display()
        );
    }
    let t = &args.translation;
    let mut task = TranslationTask {
        data: t.data.clone(),
        src: t.src.clone(),
        tgt: t.tgt.clone(),
        train_split: t.train_split.clone(),
        valid_split: t.valid_split.clone(),
        vocab_size: t.vocab_size,
        max_len: t.max_tokens,
        batch_tokens: t.batch_tokens,
    };
    task.validate()?;
    let corpus = task.read(&task.train_split)?;
    let started = std::time::Instant::now();
    let vocab = task.learn_vocabulary(&corpus, t.min_frequency)?;
    task.vocab_size = vocab.len();
    std::fs::create_dir_all(dir.path())
        .with_context(|| format!("cannot create {}", dir.path().display()))?;
    vocab.save(&dir.tokenizer_path())?;
    println!(
        "learned a joint BPE vocabulary of {} tokens from {} {} pairs in {:.1} s: {}",
        vocab.len(),
        corpus.len(),
        task.train_split,
        started.elapsed().as_secs_f64(),
        dir.tokenizer_path().display()
    );
    // Room for the longest output beam search allows a training-length source (1.5 n + 10).
    let max_positions = task.max_len * 3 / 2 + 16;
    let config = RunConfig {
        model: args.model(task.vocab_size, max_positions),
        task: task.into(),
        training: args.training(),
    };
    config.validate()?;
    let training = &config.training;
    println!(
        "training a {}-parameter model to translate {} for {} epochs{} into {}",
        format_params(&config),
        config.task.translation()?.direction(),
        training.epochs.unwrap_or_default(),
        training
            .time_limit_secs
            .map(|s| format!(" (at most {:.0} minutes)", s / 60.0))
            .unwrap_or_default(),
        dir.path().display()
    );
    Ok(config)
}

fn translate_lines(args: TranslateArgs, device: &burn::tensor::Device) -> Result<()> {
    if args.beam == 0 || args.batch_size == 0 {
        bail!("--beam and --batch-size must be at least 1");
    }
    if !(args.alpha.is_finite() && args.alpha >= 0.0) {
        bail!("--alpha must be a non-negative number, got {}", args.alpha);
    }
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device)?;
    config.task.translation()?;
    let vocab = dir.load_vocabulary()?;
    let lines = match &args.input {
        Some(path) => read_text_lines(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )
        .with_context(|| format!("reading {}", path.display()))?,
        None => read_text_lines(std::io::stdin().lock()).context("reading stdin")?,
    };
    let options = TranslateOptions {
        batch_sentences: args.batch_size,
        ..TranslateOptions::beam(args.beam, args.alpha)
    };
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(lines.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let translations = translate(&model, &vocab, &lines, &options, device, |n| {
        progress.inc(n as u64)
    })?;
    progress.finish_and_clear();
    for line in &translations.truncated {
        eprintln!(
            "warning: line {} has more than the model's {} tokens; translated its beginning",
            line + 1,
            model.max_len()
        );
    }
    let mut text = String::new();
    for sentence in &translations.sentences {
        text.push_str(sentence);
        text.push('\n');
    }
    match &args.output {
        Some(path) => write_atomic(path, text.as_bytes())?,
        None => {
            use std::io::Write;
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("cannot write stdout")?;
        }
    }
    Ok(())
}

/// Every line of `reader`'s UTF-8 text (none for empty input).
fn read_text_lines(mut reader: impl std::io::Read) -> Result<Vec<String>> {
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes)?;
    tf_train::corpus::text_lines(bytes)
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
        task: task.into(),
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
    let task = config.task.synthetic()?;
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
        .synthetic()?
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
    let dir = ModelDir::new(&args.model);
    let (config, model) = dir.load_model(device)?;
    let maps = match &config.task {
        RunTask::Synthetic(task) => {
            let source = parse_input(&config, &args.input)?;
            AttentionMaps::capture(
                &model,
                &source,
                config.model.max_len,
                |id| task.token_label(id),
                device,
            )?
        }
        RunTask::Translation(_) => {
            let vocab = dir.load_vocabulary()?;
            let source = vocab.encode(&args.input)?;
            if source.is_empty() {
                bail!("empty sentence");
            }
            if source.len() > config.model.max_len {
                bail!(
                    "{} tokens, but this model handles at most {}",
                    source.len(),
                    config.model.max_len
                );
            }
            AttentionMaps::capture(
                &model,
                &source,
                config.model.max_len,
                |id| vocab.token(id),
                device,
            )?
        }
    };
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
    let task = config.task.synthetic()?;
    let examples = task.samples(args.samples, args.seed);
    let mut stats = head_statistics(&model, task, &examples, args.batch_size, device);
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
        task.kind,
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
    let task = config.task.synthetic()?;
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
    let importance_examples = task.samples(args.importance_samples, args.importance_seed);
    let importance = head_importance(&gradient_model, &importance_examples, &gradient_device);
    let eval_examples = task.samples(args.eval_samples, EVAL_SEED);
    let measure = |model: &tf_model::Transformer| {
        eval::accuracy(
            model,
            &eval_examples,
            task.max_len + 1,
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
            task.kind
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
    if let RunTask::Translation(_) = config.task {
        dir.load_vocabulary()?.save(&out.tokenizer_path())?;
    }
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
    let task = config.task.synthetic()?;
    let examples = task.samples(args.samples, args.seed);
    let accuracy = eval::accuracy(&model, &examples, task.max_len + 1, args.batch_size, device)?;
    println!(
        "task {} (symbols {}, lengths {}..={}), {} fresh samples (seed {})",
        task.kind, task.n_symbols, task.min_len, task.max_len, accuracy.sequences, args.seed
    );
    println!("exact match     {:.4}", accuracy.exact_match);
    println!("token accuracy  {:.4}", accuracy.token_accuracy);
    Ok(())
}
