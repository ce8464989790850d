//! `tf train`: a new run on a synthetic task or a parallel corpus, or `--resume` of one.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use tf_inspect::curves::write_curves;
use tf_layers::{NormPosition, PositionalEncodingKind};
use tf_model::EmbeddingSharing;
use tf_train::data::corpus::split_path;
use tf_train::data::multi30k;
use tf_train::data::translation::TranslationTask;
use tf_train::training::preset::Preset;
use tf_train::{ModelDir, RunConfig, RunTask, Start, TrainingConfig, train};

use crate::args::{Alphas, TaskArgs, TaskChoice, parse_alphas};
use crate::progress::TrainingProgress;

#[derive(Args, Debug)]
pub struct TrainArgs {
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
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    training: TrainingArgs,
}

/// The corpus and vocabulary of `--task translation`.
#[derive(Args, Debug)]
#[command(next_help_heading = "Translation (--task translation)")]
struct TranslationArgs {
    /// Directory of the parallel corpus: SPLIT.LANG or SPLIT.LANG.gz, one sentence a line
    /// (`tf data multi30k` downloads Multi30k into the default).
    #[arg(long, env = multi30k::DIR_VARIABLE, default_value = multi30k::DEFAULT_DIR)]
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

impl TranslationArgs {
    /// Refuses a corpus directory that lacks the training or validation files, saying how to
    /// get Multi30k there.
    fn ensure_data_present(&self) -> Result<()> {
        let missing: Vec<String> = [&self.train_split, &self.valid_split]
            .into_iter()
            .flat_map(|split| [(split, &self.src), (split, &self.tgt)])
            .filter(|(split, lang)| split_path(&self.data, split, lang).is_err())
            .map(|(split, lang)| format!("{split}.{lang}"))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let out = if self.data == Path::new(multi30k::DEFAULT_DIR) {
            String::new()
        } else {
            format!(" --out {}", self.data.display())
        };
        bail!(
            "{} holds no {} (nor .gz): run `tf data multi30k{out}` to download Multi30k there, \
             or point --data (or {}) at a directory that has the files",
            self.data.display(),
            missing.join(", "),
            multi30k::DIR_VARIABLE
        )
    }

    fn task(&self) -> TranslationTask {
        TranslationTask {
            data: self.data.clone(),
            src: self.src.clone(),
            tgt: self.tgt.clone(),
            train_split: self.train_split.clone(),
            valid_split: self.valid_split.clone(),
            vocab_size: self.vocab_size,
            max_len: self.max_tokens,
            batch_tokens: self.batch_tokens,
            vocabulary: Default::default(),
        }
    }
}

/// The model's size; each flag overrides the task's preset.
#[derive(Args, Debug)]
#[command(next_help_heading = "Model")]
struct ModelArgs {
    /// Model width d_model [default: 128; translation 256].
    #[arg(long)]
    d_model: Option<usize>,
    /// Attention heads [default: 4].
    #[arg(long)]
    heads: Option<usize>,
    /// Width of one head, d_k [default: d_model / heads]; smaller, all heads together are
    /// narrower than d_model.
    #[arg(long)]
    head_width: Option<usize>,
    /// Encoder layers and decoder layers (each) [default: 2; translation 3].
    #[arg(long)]
    layers: Option<usize>,
    /// Decoder layers, when not as many as --layers (a shallow decoder decodes faster).
    #[arg(long)]
    decoder_layers: Option<usize>,
    /// Feed-forward inner width d_ff [default: 512; translation 1024].
    #[arg(long)]
    d_ff: Option<usize>,
    /// Dropout on sublayer outputs and embeddings [default: 0.1; translation 0.3].
    #[arg(long)]
    dropout: Option<f64>,
    /// Dropout on attention weights (the paper uses none; PyTorch's nn.Transformer its dropout)
    /// [default: 0].
    #[arg(long)]
    attention_dropout: Option<f64>,
    /// Position information: the paper's sinusoids added to the embeddings, learned position
    /// embeddings, rotary (queries and keys of every self-attention rotated by their positions),
    /// or none [default: sinusoidal].
    #[arg(long, value_enum)]
    positional: Option<PositionalChoice>,
    /// LayerNorm after each residual sum (the paper's post-norm) or before each sublayer
    /// [default: post].
    #[arg(long, value_enum)]
    norm: Option<NormChoice>,
    /// Which embedding matrices are one: source, target and output (all), target and output,
    /// or none [default: all].
    #[arg(long, value_enum)]
    embedding_sharing: Option<SharingChoice>,
}

/// `--positional`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PositionalChoice {
    Sinusoidal,
    Learned,
    Rope,
    None,
}

impl From<PositionalChoice> for PositionalEncodingKind {
    fn from(choice: PositionalChoice) -> Self {
        match choice {
            PositionalChoice::Sinusoidal => Self::Sinusoidal,
            PositionalChoice::Learned => Self::Learned,
            PositionalChoice::Rope => Self::Rotary,
            PositionalChoice::None => Self::None,
        }
    }
}

/// `--norm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum NormChoice {
    Post,
    Pre,
}

/// `--embedding-sharing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum SharingChoice {
    All,
    TargetOutput,
    Separate,
}

/// The peak learning rate: a value, or `None` for the paper's own.
#[derive(Clone, Copy, Debug)]
struct PeakLr(Option<f64>);

impl fmt::Display for PeakLr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(lr) => write!(f, "{lr:e}"),
            None => f.write_str("paper"),
        }
    }
}

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

/// How a model is trained (recorded in the model directory). Defaults are
/// [`TrainingConfig::default`]'s; where the task changes one, the flag says so.
#[derive(Args, Debug)]
#[command(next_help_heading = "Training")]
struct TrainingArgs {
    /// Optimizer steps [default: 3500; translation: as many as --epochs take].
    #[arg(long)]
    steps: Option<usize>,
    /// Passes over the training data [default: 60, or fewer in --max-minutes].
    #[arg(long, help_heading = "Translation (--task translation)")]
    epochs: Option<usize>,
    /// Stop training after this many minutes of wall time, validating and checkpointing first;
    /// a budget, so a slower machine trains fewer epochs [default: none; translation 85].
    #[arg(long, env = "TF_MAX_MINUTES")]
    max_minutes: Option<f64>,
    /// Sequences per batch (synthetic tasks; translation batches by --batch-tokens).
    #[arg(long, default_value_t = TrainingConfig::default().batch_size, help_heading = "Synthetic tasks (copy, reverse, sort)")]
    batch_size: usize,
    /// Peak learning rate, reached at the end of warm-up; the schedule keeps the paper's shape
    /// (linear warm-up, inverse square root decay). "paper" gives the paper's own peak,
    /// d_model^-0.5 · warmup^-0.5 (4.4e-3 for d_model 128 and 400 warm-up steps: too high for
    /// these small models, whose exact match then wavers).
    #[arg(long, default_value_t = PeakLr(TrainingConfig::default().peak_lr), value_parser = parse_lr)]
    lr: PeakLr,
    /// Warm-up steps [default: 400; translation 800].
    #[arg(long)]
    warmup: Option<usize>,
    /// Label smoothing epsilon.
    #[arg(long, default_value_t = TrainingConfig::default().label_smoothing)]
    label_smoothing: f64,
    /// Clip the gradient norm to this (0 = off).
    #[arg(long, default_value_t = TrainingConfig::default().grad_clip.unwrap_or(0.0))]
    grad_clip: f64,
    /// Seed of initialisation, dropout and data.
    #[arg(long, default_value_t = TrainingConfig::default().seed)]
    seed: u64,
    /// Validate every this many steps (synthetic tasks; translation validates each epoch).
    #[arg(long, default_value_t = TrainingConfig::default().eval_every, help_heading = "Synthetic tasks (copy, reverse, sort)")]
    eval_every: usize,
    /// Validation sequences (translation: the first N validation sentences, for BLEU).
    #[arg(long, default_value_t = TrainingConfig::default().eval_samples)]
    eval_samples: usize,
    /// Checkpoint every this many steps (synthetic tasks; translation checkpoints each epoch).
    #[arg(long, default_value_t = TrainingConfig::default().checkpoint_every, help_heading = "Synthetic tasks (copy, reverse, sort)")]
    checkpoint_every: usize,
    /// Checkpoints kept on disk (the newest); `tf average` averages some of them.
    #[arg(long, default_value_t = TrainingConfig::default().keep_checkpoints)]
    keep_checkpoints: usize,
    /// Translation: at the end, also validate the mean of the newest N checkpoints, and keep it
    /// as the model if its BLEU is at least the best checkpoint's (1 = off).
    #[arg(long, default_value_t = TrainingConfig::default().average_last, help_heading = "Translation (--task translation)")]
    average_last: usize,
    /// Translation: at the end, choose the length penalty α that `tf translate` decodes the model
    /// with among these, by beam-5 BLEU on the whole validation split ("none": no choice,
    /// decode at 0.6).
    #[arg(long, default_value_t = Alphas(TrainingConfig::default().length_penalties), value_parser = parse_alphas, help_heading = "Translation (--task translation)")]
    alphas: Alphas,
}

impl TrainingArgs {
    /// `preset` with every flag given applied.
    fn apply(&self, preset: TrainingConfig) -> TrainingConfig {
        TrainingConfig {
            steps: self.steps.unwrap_or(preset.steps),
            epochs: self.epochs.or(preset.epochs),
            time_limit_secs: self
                .max_minutes
                .map(|m| m * 60.0)
                .or(preset.time_limit_secs),
            batch_size: self.batch_size,
            warmup: self.warmup.unwrap_or(preset.warmup),
            peak_lr: self.lr.0,
            label_smoothing: self.label_smoothing,
            grad_clip: (self.grad_clip > 0.0).then_some(self.grad_clip),
            seed: self.seed,
            log_every: preset.log_every,
            eval_every: self.eval_every,
            eval_samples: self.eval_samples,
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            average_last: self.average_last,
            length_penalties: self.alphas.0.clone(),
        }
    }
}

impl TrainArgs {
    /// The model directory to write.
    pub fn out(&self) -> &Path {
        &self.out
    }

    /// These arguments as a translation run on the corpus in `data` (`tf distill`'s student).
    pub fn translation_on(mut self, data: PathBuf) -> Self {
        self.task.task = TaskChoice::Translation;
        self.translation.data = data;
        self
    }

    /// Checks that these arguments make a valid translation run, before any data is read.
    pub fn check_translation_preset(&self) -> Result<()> {
        let preset = Self::preset_for(TaskChoice::Translation, &self.model, &self.training);
        preset.translation_config(self.translation.task())?;
        Ok(())
    }

    /// The task's preset with the model and training flags applied.
    fn preset(&self) -> Preset {
        Self::preset_for(self.task.task, &self.model, &self.training)
    }

    fn preset_for(task: TaskChoice, m: &ModelArgs, training: &TrainingArgs) -> Preset {
        let mut preset = match task {
            TaskChoice::Translation => Preset::translation(),
            _ => Preset::synthetic(),
        };
        let layer = &mut preset.layer;
        layer.d_model = m.d_model.unwrap_or(layer.d_model);
        layer.n_heads = m.heads.unwrap_or(layer.n_heads);
        layer.head_width = m.head_width.or(layer.head_width);
        layer.d_ff = m.d_ff.unwrap_or(layer.d_ff);
        layer.dropout = m.dropout.unwrap_or(layer.dropout);
        layer.attention_dropout = m.attention_dropout.unwrap_or(layer.attention_dropout);
        if let Some(norm) = m.norm {
            layer.norm_position = match norm {
                NormChoice::Post => NormPosition::Post,
                NormChoice::Pre => NormPosition::Pre,
            };
        }
        if let Some(positional) = m.positional {
            preset.positional = positional.into();
        }
        if let Some(sharing) = m.embedding_sharing {
            preset.embedding_sharing = match sharing {
                SharingChoice::All => EmbeddingSharing::All,
                SharingChoice::TargetOutput => EmbeddingSharing::TargetOutput,
                SharingChoice::Separate => EmbeddingSharing::Separate,
            };
        }
        preset.layers = m.layers.unwrap_or(preset.layers);
        preset.decoder_layers = m.decoder_layers.or(preset.decoder_layers);
        preset.training = training.apply(preset.training);
        preset
    }
}

/// Flags that only the synthetic tasks read.
pub const SYNTHETIC_FLAGS: [&str; 7] = [
    "symbols",
    "min_len",
    "max_len",
    "source_eos",
    "batch_size",
    "eval_every",
    "checkpoint_every",
];

/// Flags that only translation reads.
const TRANSLATION_FLAGS: [&str; 12] = [
    "data",
    "src",
    "tgt",
    "train_split",
    "valid_split",
    "vocab_size",
    "min_frequency",
    "max_tokens",
    "batch_tokens",
    "epochs",
    "average_last",
    "alphas",
];

/// Refuses a flag given on the command line that the chosen task would ignore, naming the task
/// it belongs to (a resumed run's settings are its saved ones: no model or task flag applies).
pub fn refuse_other_tasks_flags(matches: &ArgMatches) -> Result<()> {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    let flag = |id: &str| format!("--{}", id.replace('_', "-"));
    if matches.get_flag("resume") {
        let ignored: Vec<String> = matches
            .ids()
            .map(|id| id.as_str())
            // Flags only: clap also lists each flattened struct as a group (`TrainingArgs`).
            .filter(|id| id.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .filter(|&id| id != "out" && id != "resume" && id != "device" && given(id))
            .map(flag)
            .collect();
        if !ignored.is_empty() {
            bail!(
                "--resume continues with the run's saved settings; {} would be ignored",
                ignored.join(", ")
            );
        }
        return Ok(());
    }
    let translation = matches.get_one::<TaskChoice>("task") == Some(&TaskChoice::Translation);
    let (foreign, owner) = if translation {
        (
            &SYNTHETIC_FLAGS[..],
            "the synthetic tasks (copy, reverse, sort)",
        )
    } else {
        (&TRANSLATION_FLAGS[..], "--task translation")
    };
    if let Some(id) = foreign.iter().find(|id| given(id)) {
        bail!(
            "{} is for {owner}, not for --task {}",
            flag(id),
            matches
                .get_one::<TaskChoice>("task")
                .map_or("reverse".into(), |t| format!("{t:?}").to_lowercase())
        );
    }
    Ok(())
}

pub fn run(args: TrainArgs, device: &Device) -> Result<()> {
    let dir = ModelDir::new(&args.out);
    let mut progress = TrainingProgress::new();
    let (config, summary) = if args.resume {
        println!("resuming {} (its saved settings apply)", args.out.display());
        let summary = train(&dir, Start::Resume, device, &mut progress)?;
        (dir.load_config()?, summary)
    } else {
        // Refuse an occupied directory before spending minutes on a vocabulary.
        dir.ensure_vacant()?;
        let preset = args.preset();
        if args.task.task == TaskChoice::Translation {
            args.translation.ensure_data_present()?;
            let started = std::time::Instant::now();
            let prepared =
                preset.translation_run(args.translation.task(), args.translation.min_frequency)?;
            let config = prepared.config;
            let task = config.task.translation()?;
            println!(
                "learned a joint BPE vocabulary of {} tokens from {} {} pairs in {:.1} s",
                prepared.vocabulary.len(),
                prepared.corpus.len(),
                task.train_split,
                started.elapsed().as_secs_f64(),
            );
            let training = &config.training;
            println!(
                "training a {}-parameter model to translate {} for {} epochs{} into {}",
                format_params(&config),
                task.direction(),
                training.epochs.unwrap_or_default(),
                training
                    .time_limit_secs
                    .map(|s| format!(" (at most {:.0} minutes of wall time)", s / 60.0))
                    .unwrap_or_default(),
                dir.path().display()
            );
            let start = Start::New {
                config: &config,
                vocabulary: Some(&prepared.vocabulary),
            };
            let summary = train(&dir, start, device, &mut progress)?;
            (config, summary)
        } else {
            let task = args.task.synthetic()?;
            let config = preset.synthetic_run(task.clone())?;
            println!(
                "training a {}-parameter model on `{}` (symbols {}, lengths {}..={}{}) for {} steps into {}",
                format_params(&config),
                task.kind,
                task.n_symbols,
                task.min_len,
                task.max_len,
                if task.source_eos {
                    ", sources end in EOS"
                } else {
                    ""
                },
                config.training.steps,
                args.out.display()
            );
            let start = Start::New {
                config: &config,
                vocabulary: None,
            };
            let summary = train(&dir, start, device, &mut progress)?;
            (config, summary)
        }
    };
    let losses = if summary.steps_this_run == 0 {
        "; nothing left to train".to_string()
    } else if summary.first_loss.is_nan() {
        format!("; {} steps trained", summary.steps_this_run)
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
    draw_curves(&args.out);
    Ok(())
}

/// Draws the learning curves of the run in `dir` into `dir/curves.png` and `.svg`.
pub fn draw_curves(dir: &Path) {
    let curves = crate::commands::plot::metrics_of(dir).and_then(|run| {
        let title = format!("{}", dir.display());
        Ok(write_curves(&dir.join("curves"), &title, &[run])?)
    });
    match curves {
        Ok(paths) => println!("learning curves: {}", paths[0].display()),
        // The model is written; a picture that cannot be drawn is worth a warning only.
        Err(err) => eprintln!("warning: no learning curves: {err:#}"),
    }
}

/// Parameter count of the model a config builds, e.g. "0.9M".
fn format_params(config: &RunConfig) -> String {
    let n = config.model.init(&Device::flex()).num_params();
    format!("{:.1}M", n as f64 / 1e6)
}
