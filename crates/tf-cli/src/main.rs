//! `tf`: train, run, evaluate and inspect encoder–decoder Transformers on built-in tasks and on
//! translation. Argument parsing, progress bars and the allocator live here; everything a
//! library user needs is in `tf-train` and `tf-inspect`.

mod args;
mod commands;
mod progress;

use std::process::ExitCode;

use anyhow::Result;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use tf_train::Backend;

use crate::commands::{
    ablate, align, attention, attribute, average, bleu, data, distill, eval, export_marian, heads,
    import_marian, import_torch, length_penalty, lens, patch, plot, predict, prune, train,
    translate,
};

// burn allocates and frees large tensors every step; glibc's malloc serves them with fresh
// mmap()s, paying page faults on every touch, where mimalloc reuses memory (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tells mimalloc to keep the memory it frees for the next allocation rather than return it to
/// the system a second later: a training step frees and allocates the same large tensors every
/// step, and returned memory comes back as page faults and pages the kernel zeroes (9 % of the
/// bench's training step in `perf`). The peak stays the peak; only the memory
/// between steps is kept.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide option before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// `mi_option_purge_delay` of mimalloc.h, which the Rust bindings do not name: the option
/// before `mi_option_use_numa_nodes` (in mimalloc v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t =
    libmimalloc_sys::mi_option_use_numa_nodes - 1;

/// Train, run and evaluate encoder–decoder Transformers ("Attention Is All You Need").
#[derive(Parser, Debug)]
#[command(name = "tf", version, about)]
struct Cli {
    /// Where the tensors live: a CPU backend (flex, ndarray) or the GPU (wgpu).
    #[arg(long, default_value = "flex", global = true, value_parser = backend_parser())]
    device: Backend,
    #[command(subcommand)]
    command: Command,
}

/// Accepts the names of [`Backend::ALL`], listing them in `--help`.
fn backend_parser() -> impl TypedValueParser<Value = Backend> {
    PossibleValuesParser::new(Backend::ALL.map(|(name, _)| name))
        .map(|name| name.parse::<Backend>().expect("a listed backend"))
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Download a data set the translation task reads (Multi30k), verified against the SHA-256
    /// recorded for each file.
    Data(data::DataArgs),
    /// Train a model on a built-in task, or on a parallel corpus (--task translation), and write
    /// it to a model directory.
    Train(Box<train::TrainArgs>),
    /// Sequence-level knowledge distillation: the teacher translates its training split with
    /// beam search, and a student (tf train's flags) learns from those translations.
    Distill(Box<distill::DistillArgs>),
    /// Translate sentences, one a line, with a translation model (beam search by default).
    Translate(translate::TranslateArgs),
    /// Choose the beam search length penalty α of a translation model by BLEU on a held-out
    /// split (what `tf train` does at the end of a run), for `tf translate` to decode with.
    LengthPenalty(length_penalty::LengthPenaltyArgs),
    /// Print the model's output for each input sequence (arguments, or one per line on stdin).
    Predict(predict::PredictArgs),
    /// Print exact-match and token accuracy on fresh samples of the model's task.
    Eval(eval::EvalArgs),
    /// Import a PyTorch nn.Transformer state dict (safetensors) into a model directory.
    ///
    /// The file holds `model.state_dict()` under PyTorch's names, as written by
    /// `safetensors.torch.save_file`; the JSON holds the module's arguments (d_model, nhead,
    /// num_encoder_layers, num_decoder_layers, dim_feedforward, norm_first, activation,
    /// layer_norm_eps). nn.Transformer has no token embeddings: add `src_embedding.weight` and
    /// `tgt_embedding.weight` ([vocab, d_model], scaled by sqrt(d_model); the target one is also the
    /// output projection) to the file, or the model directory keeps freshly initialised ones.
    ImportTorch(import_torch::ImportTorchArgs),
    /// Import a Hugging Face MarianMT model (an opus-mt translator) and its tokenizer into a
    /// model directory: what `save_pretrained` writes (config.json, model.safetensors,
    /// source.spm, target.spm, vocab.json). Every translation command then reads it.
    ImportMarian(import_marian::ImportMarianArgs),
    /// Export a translation model as Hugging Face MarianMT: config.json, generation_config.json,
    /// model.safetensors and the tokenizer, for MarianMTModel.from_pretrained and
    /// AutoTokenizer.from_pretrained, translating greedily as `tf translate --beam 1` does.
    ExportMarian(export_marian::ExportMarianArgs),
    /// Decode one input and draw its attention: a heatmap per layer and head (PNG and SVG) with
    /// token labels, a layers × heads grid per attention kind, and the weights as JSON.
    Attention(attention::AttentionArgs),
    /// Per-head statistics over task samples: entropy, attention distance, max weight,
    /// cross-attention alignment with the task's ground truth, and importance.
    Heads(heads::HeadsArgs),
    /// Remove the least important heads (Michel et al., 2019) into a new model directory, or
    /// sweep accuracy against the number of heads removed.
    Prune(prune::PruneArgs),
    /// Zero, mean or resample ablation of any activation (all of it, some heads or positions):
    /// the change in the references' log-probability, and in BLEU with --bleu.
    Ablate(ablate::AblateArgs),
    /// Attributions of each generated token over the source and the target prefix: attention,
    /// rollout, norm-based, ALTI+, value zeroing, gradient, gradient × input, integrated
    /// gradients.
    Attribute(attribute::AttributeArgs),
    /// Word alignments of a parallel file read off each attribution method (and each
    /// cross-attention head with --heads), and their alignment error rate against a reference
    /// alignment such as eflomal's.
    Align(align::AlignArgs),
    /// The logit lens: each decoder layer's residual stream through the output projection, and
    /// the rank of the finally chosen token there.
    Lens(lens::LensArgs),
    /// Activation patching: rerun a corrupted source (one word swapped, say) with each layer ×
    /// position of the residual stream, and each head's output, taken from the clean source's
    /// run, and measure how much of the clean translation comes back.
    Patch(patch::PatchArgs),
    /// Average the weights of the last N checkpoints into a new model directory (the paper
    /// averaged its last 5).
    Average(average::AverageArgs),
    /// Learning curves (losses, validation BLEU or exact match, learning rate) of one run or
    /// several on one picture.
    Plot(plot::PlotArgs),
    /// Corpus BLEU of a hypothesis file against a reference file, one segment a line, exactly
    /// as sacreBLEU's default (13a tokenizer, case-sensitive, exponential smoothing).
    Bleu(bleu::BleuArgs),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    let refused = match matches.subcommand() {
        Some(("train", train)) => train::refuse_other_tasks_flags(train),
        Some(("distill", distill)) => distill::refuse_flags(distill),
        _ => Ok(()),
    };
    if let Err(err) = refused {
        eprintln!("tf: error: {err:#}");
        return ExitCode::FAILURE;
    }
    make_the_chosen_device_the_default(cli.device);
    if cli.device == Backend::Wgpu {
        give_graphics_libraries_a_runtime_dir();
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Named, so that our errors are told apart from what a system library prints.
            eprintln!("tf: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// burn materialises some tensors on its default device, which is the GPU backend whenever one
/// is compiled in: a resumed run's optimizer state, for one (burn-optim's `load_record`). On a
/// CPU run that started WGPU, and with it the Vulkan drivers and what they print. `BURN_DEVICE`
/// names burn's default device; unless the user set it, it becomes the device chosen here.
fn make_the_chosen_device_the_default(device: Backend) {
    if std::env::var_os("BURN_DEVICE").is_none() {
        // SAFETY: at the start of `main`, before any thread is spawned, nothing else reads or
        // writes the environment.
        unsafe { std::env::set_var("BURN_DEVICE", device.name()) };
    }
}

/// The Vulkan drivers WGPU loads may connect to a Wayland display, and libwayland prints
/// "error: XDG_RUNTIME_DIR is invalid or not set" on a machine with no display server,
/// though nothing fails. Where the variable is unset, it gets a private directory of this
/// user's, as a login would provide.
fn give_graphics_libraries_a_runtime_dir() {
    #[cfg(unix)]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let uid = std::fs::metadata("/proc/self").map_or(0, |m| m.uid());
        let dir = std::env::temp_dir().join(format!("tf-runtime-{uid}"));
        let private = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)));
        if private.is_ok() {
            // SAFETY: at the start of `main`, before any thread is spawned, nothing else reads
            // or writes the environment.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let device = cli.device.device();
    match cli.command {
        Command::Data(args) => data::run(args),
        Command::Train(args) => train::run(*args, &device),
        Command::Distill(args) => distill::run(*args, &device),
        Command::Translate(args) => translate::run(args, &device),
        Command::LengthPenalty(args) => length_penalty::run(args, &device),
        Command::Predict(args) => predict::run(args, &device),
        Command::Eval(args) => eval::run(args, &device),
        Command::ImportTorch(args) => import_torch::run(args, &device),
        Command::ImportMarian(args) => import_marian::run(args, &device),
        Command::ExportMarian(args) => export_marian::run(args, &device),
        Command::Attention(args) => attention::run(args, &device),
        Command::Heads(args) => heads::run(args, &device),
        Command::Prune(args) => prune::run(args, &device),
        Command::Patch(args) => patch::run(args, &device),
        Command::Ablate(args) => ablate::run(args, &device),
        Command::Attribute(args) => attribute::run(args, &device),
        Command::Align(args) => align::run(args, &device),
        Command::Lens(args) => lens::run(args, &device),
        Command::Bleu(args) => bleu::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Average(args) => average::run(args, &device),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc v3's default for mi_option_purge_delay is 1000 (ms; options.c), v2's 10;
        // its neighbours' are 0 (use_numa_nodes) and 0 or 1 (eager_commit_delay).
        let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!([10, 1000, -1].contains(&value), "{value}");
        super::keep_freed_memory();
        let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(value, -1);
    }
}
