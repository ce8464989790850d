//! Developer tasks.
//!
//! `cargo xtask bench [--device flex|ndarray|wgpu] [--quick]` measures, on one device: our
//! multi-head attention against burn-nn's (same weights, alternating) and where its time goes;
//! self-attention from 128 to 16,384 positions on the default (fused) and the explicit path,
//! time and peak memory; a training step of a small encoder–decoder; greedy decoding with and
//! without the key/value cache; and, when `python3 -c "import torch"` works, PyTorch on cases
//! 1, 3 and 4 with the same shapes and threads (`xtask/bench_pytorch.py`). It writes
//! `target/bench/DEVICE.json`, plots under `docs/images/`, and the device's section of
//! `docs/benchmarks.md`.
//!
//! `cargo xtask fused [--quick]` times the fused operations (loss, dropout, attention) against burn's
//! composed ones, each alone and together in a training step of the translation model
//! (docs/benchmarks.md, "Fused operations").
//!
//! `cargo xtask ctranslate2 [--model DIR]` decodes test_2016_flickr with a translation model
//! and with CTranslate2 on the same weights (`xtask/bench_ctranslate2.py`), and writes
//! `target/bench/ctranslate2.json` and its table in `docs/benchmarks.md`; `bench` runs it too
//! as case 6 when the model directory (`--translator`, default `runs/de-en`) exists.
//!
//! `cargo xtask sweep [--budget-minutes 20] [--only a,b] [-- FLAGS]` trains each variant of
//! `xtask/sweep.json` (one change from the default de→en recipe each) under the same wall-clock
//! budget and writes the table and plot of docs/stronger-models.md ([`sweep`]).
//!
//! `cargo xtask hooks [--quick]` times the hooked forward pass with no hooks against the plain
//! one (case 7 of `bench`).
//!
//! `cargo xtask newcomer [--skip-tests] [--max-minutes M]` clones the repository into an empty
//! folder and runs the README's commands in order against a local copy of the data
//! ([`newcomer`]).

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cases;
mod ctranslate2;
mod newcomer;
mod report;
mod sweep;
mod timing;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use clap::{Parser, Subcommand};
use tf_train::Backend;

use crate::report::Report;
use crate::timing::Repeats;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the benchmark suite and write docs/benchmarks.md, target/bench/, docs/images/.
    Bench {
        /// Device to measure on.
        #[arg(long, default_value = "flex", value_parser = backend_parser())]
        device: Backend,
        /// Fewer repeats (5 instead of 21).
        #[arg(long)]
        quick: bool,
        /// Skip PyTorch even if it is installed.
        #[arg(long)]
        no_pytorch: bool,
        /// The translation model of case 6 (decoding beside CTranslate2); skipped if absent.
        #[arg(long, default_value = "runs/de-en")]
        translator: PathBuf,
    },
    /// Decode test_2016_flickr with a translation model and with CTranslate2 on its weights
    /// (greedy and beam 5, batch 1 and 64, float32 and int8); write
    /// target/bench/ctranslate2.json and the table in docs/benchmarks.md.
    Ctranslate2 {
        /// A translation model directory.
        #[arg(long, default_value = "runs/de-en")]
        model: PathBuf,
        /// The Multi30k files [default: $TF_MULTI30K, else data/multi30k, else
        /// ../shared/data/multi30k].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Sentences of test_2016_flickr (from its start).
        #[arg(long, default_value_t = 1000)]
        sentences: usize,
        /// Timed runs of each case.
        #[arg(long, default_value_t = 1)]
        repeats: usize,
    },
    /// Clone the repository into an empty folder and run the README's commands in order,
    /// with Multi30k served from a local HTTP server; fails on the first that does not work.
    Newcomer {
        /// The Multi30k files to serve [default: $TF_MULTI30K, else ../shared/data/multi30k].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Wall-clock minutes each training run may take (TF_MAX_MINUTES).
        #[arg(long, default_value_t = 2.0)]
        max_minutes: f64,
        /// Skip the README's `cargo test` command.
        #[arg(long)]
        skip_tests: bool,
        /// Keep the clone afterwards.
        #[arg(long)]
        keep: bool,
    },
    /// Train each variant of the default de→en recipe (xtask/sweep.json) under one wall-clock
    /// budget, score it on the test split, and write the table (Markdown, CSV) and plot.
    /// Resumable: finished variants are kept, an interrupted one resumes.
    Sweep {
        /// Minutes of training per variant.
        #[arg(long, default_value_t = 20.0)]
        budget_minutes: f64,
        /// Only these variants (comma-separated names).
        #[arg(long, value_delimiter = ',')]
        only: Option<Vec<String>>,
        /// The variants file.
        #[arg(long, default_value = "xtask/sweep.json")]
        variants: PathBuf,
        /// Where the variants' model directories and the table go.
        #[arg(long, default_value = "runs/sweep")]
        out: PathBuf,
        /// The Multi30k files [default: $TF_MULTI30K, else data/multi30k, else
        /// ../shared/data/multi30k].
        #[arg(long)]
        data: Option<PathBuf>,
        /// The split scored with beam search.
        #[arg(long, default_value = "test_2016_flickr")]
        test_split: String,
        /// The `tf` program [default: built now with `cargo build --release -p tf-cli` when
        /// run by cargo, else `tf` beside this program or on PATH].
        #[arg(long)]
        tf: Option<PathBuf>,
        /// Flags for every variant's `tf train`, before its own (after `--`); a variant's own
        /// flag replaces the same flag here.
        #[arg(last = true)]
        extra_flags: Vec<String>,
    },
    /// The training-step case alone (JSON on the last line).
    TrainStep {
        /// Device to measure on.
        #[arg(long, default_value = "flex", value_parser = backend_parser())]
        device: Backend,
        /// Dropout of the model (0.1 in the bench).
        #[arg(long, default_value_t = 0.1)]
        dropout: f64,
        /// Fewer repeats.
        #[arg(long)]
        quick: bool,
    },
    /// The fused operations against burn's composed ones, each alone and together in the
    /// translation model's training step (JSON on the last line).
    Fused {
        /// Device to measure on (the fused operations serve Flex).
        #[arg(long, default_value = "flex", value_parser = backend_parser())]
        device: Backend,
        /// Sentences per batch.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Target tokens per sentence.
        #[arg(long, default_value_t = 32)]
        len: usize,
        /// Vocabulary (the translation default: 8,000).
        #[arg(long, default_value_t = 8000)]
        vocab: usize,
        /// Fewer repeats.
        #[arg(long)]
        quick: bool,
    },
    /// The hooked forward pass with no hooks against the plain one, and keeping every
    /// activation, on the translation model (JSON on the last line).
    Hooks {
        /// Device to measure on.
        #[arg(long, default_value = "flex", value_parser = backend_parser())]
        device: Backend,
        /// Fewer repeats.
        #[arg(long)]
        quick: bool,
    },
    /// The decoding case alone (JSON on the last line).
    #[command(hide = true)]
    Decoding {
        #[arg(long, value_parser = backend_parser())]
        device: Backend,
        #[arg(long)]
        quick: bool,
    },
    /// One point of the scaling case, in its own process (used by `bench`).
    #[command(hide = true)]
    AttentionPoint {
        #[arg(long, value_parser = backend_parser())]
        device: Backend,
        #[arg(long)]
        seq: usize,
        #[arg(long)]
        path: String,
        #[arg(long)]
        timed: usize,
    },
}

/// Accepts the names of [`Backend::ALL`], listing them in `--help`.
fn backend_parser() -> impl clap::builder::TypedValueParser<Value = Backend> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Backend::ALL.map(|(name, _)| name))
        .map(|name| name.parse::<Backend>().expect("a listed backend"))
}

/// A backend's name, as `--device` takes it.
fn backend_name(backend: Backend) -> String {
    backend.name().to_string()
}

fn main() -> Result<()> {
    // As `tf` does, freed memory is kept for the next step: mi_option_purge_delay (mimalloc.h,
    // the option before use_numa_nodes) set to -1 (crates/tf-cli/src/main.rs).
    // SAFETY: sets a process-wide option before any thread is started.
    unsafe { libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_use_numa_nodes - 1, -1) };
    match Cli::parse().command {
        Task::AttentionPoint {
            device,
            seq,
            path,
            timed,
        } => {
            let point = cases::scaling_point(&device.device(), seq, &path, timed)?;
            println!("{}", serde_json::to_string(&point)?);
            Ok(())
        }
        Task::Bench {
            device,
            quick,
            no_pytorch,
            translator,
        } => bench(device, quick, no_pytorch, &translator),
        Task::Ctranslate2 {
            model,
            data,
            sentences,
            repeats,
        } => {
            let command = format!(
                "cargo xtask ctranslate2 --model {} --sentences {sentences} --repeats {repeats}",
                model.display()
            );
            let options = ctranslate2_options(model, data, sentences, repeats);
            println!("{command}");
            let comparison = ctranslate2::compare(&options, &Backend::Flex.device())?
                .map_err(|why| anyhow::anyhow!("CTranslate2 not measured: {why}"))?;
            let root = repository();
            std::fs::create_dir_all(root.join("target/bench"))?;
            let json = root.join("target/bench/ctranslate2.json");
            std::fs::write(&json, serde_json::to_string_pretty(&comparison)?)?;
            println!("wrote {}", json.display());
            report::replace_section(
                &root.join("docs/benchmarks.md"),
                "ctranslate2",
                &comparison.markdown(&command),
            )
        }
        Task::Sweep {
            budget_minutes,
            only,
            variants,
            out,
            data,
            test_split,
            tf,
            extra_flags,
        } => {
            let root = repository();
            let tf = match tf {
                // A path (not a name to look up on PATH) is taken from here, not from the
                // repository where `tf train` runs.
                Some(tf) if tf.components().count() > 1 => std::path::absolute(tf)?,
                Some(tf) => tf,
                None => tf_program()?,
            };
            let options = sweep::SweepOptions {
                variants: root.join(variants),
                only,
                budget_minutes,
                out: root.join(out),
                data: root.join(multi30k_dir(data)),
                test_split,
                tf,
                extra_flags,
            };
            sweep::run(&options, &Backend::Flex.device()).map(|_| ())
        }
        Task::TrainStep {
            device,
            dropout,
            quick,
        } => {
            let small = cases::small_model_config(64);
            let layer = small.layer.clone().with_dropout(dropout);
            let config = small.with_layer(layer);
            let repeats = Repeats::new(quick).at_most(11);
            let t = cases::train_step_with(&device.device(), repeats, config);
            eprintln!(
                "train step {} = {:.0} target tokens/s; forward + backward {}",
                t.step.cell(),
                t.tokens_per_sec,
                t.forward_backward.cell()
            );
            println!("{}", serde_json::to_string(&t)?);
            Ok(())
        }
        Task::Newcomer {
            data,
            max_minutes,
            skip_tests,
            keep,
        } => {
            let repository = repository();
            let data = data
                .or_else(|| std::env::var_os("TF_MULTI30K").map(PathBuf::from))
                .unwrap_or_else(|| repository.join("../shared/data/multi30k"));
            newcomer::Newcomer {
                data,
                max_minutes,
                skip_tests,
                keep,
            }
            .run(&repository)
        }
        Task::Fused {
            device,
            batch,
            len,
            vocab,
            quick,
        } => {
            let repeats = Repeats::new(quick).at_most(11);
            let l = cases::fused_comparison(&device.device(), repeats, batch, len, vocab);
            eprintln!(
                "loss {:?}: fused {}, composed {}\ndropout {:?}: fused {}, composed {}\n\
                 self-attention {:?}: fused {}, composed {}\ntraining step: fused {}, composed {}",
                l.loss_shape,
                l.loss_fused.cell(),
                l.loss_composed.cell(),
                l.dropout_shape,
                l.dropout_fused.cell(),
                l.dropout_composed.cell(),
                l.attention_shape,
                l.attention_fused.cell(),
                l.attention_composed.cell(),
                l.step_fused.cell(),
                l.step_composed.cell()
            );
            println!("{}", serde_json::to_string(&l)?);
            Ok(())
        }
        Task::Hooks { device, quick } => {
            let h = cases::hooks_overhead(&device.device(), Repeats::new(quick), 32, 24, 8000);
            eprintln!("{}", h.summary());
            println!("{}", serde_json::to_string(&h)?);
            Ok(())
        }
        Task::Decoding { device, quick } => {
            let repeats = Repeats::new(quick).at_most(5);
            let d = cases::decoding(&device.device(), repeats, &[32, 128, 512]);
            println!("{}", serde_json::to_string(&d)?);
            Ok(())
        }
    }
}

/// The repository's root (xtask's parent folder).
fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the repository")
        .to_path_buf()
}

/// The Multi30k folder: `data` as given, else $TF_MULTI30K, `data/multi30k` or
/// `../shared/data/multi30k` (relative to the repository when relative).
fn multi30k_dir(data: Option<PathBuf>) -> PathBuf {
    let root = repository();
    let data = data
        .or_else(|| std::env::var_os("TF_MULTI30K").map(PathBuf::from))
        .unwrap_or_else(|| {
            let local = root.join("data/multi30k");
            if local.is_dir() {
                local
            } else {
                root.join("../shared/data/multi30k")
            }
        });
    root.join(data)
}

/// The `tf` program for the sweep: built now when this runs under cargo (so that it is the
/// checkout's), else the one beside this program, else `tf` on PATH.
fn tf_program() -> Result<PathBuf> {
    let beside =
        std::env::current_exe()?.with_file_name(format!("tf{}", std::env::consts::EXE_SUFFIX));
    if let Some(cargo) = std::env::var_os("CARGO") {
        let status = Command::new(cargo)
            .args(["build", "--release", "--package", "tf-cli"])
            .current_dir(repository())
            .status()?;
        anyhow::ensure!(status.success(), "cannot build the tf program");
    }
    Ok(if beside.is_file() {
        beside
    } else {
        PathBuf::from("tf")
    })
}

/// Case 6's options: `model` and `data` as given (relative to the repository when relative),
/// the data defaulting as [`multi30k_dir`] says.
fn ctranslate2_options(
    model: PathBuf,
    data: Option<PathBuf>,
    sentences: usize,
    repeats: usize,
) -> ctranslate2::Ctranslate2Options {
    let root = repository();
    ctranslate2::Ctranslate2Options {
        model: root.join(model),
        data: multi30k_dir(data),
        sentences,
        repeats,
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        work_dir: root.join("target/bench/ctranslate2"),
    }
}

fn bench(backend: Backend, quick: bool, no_pytorch: bool, translator: &Path) -> Result<()> {
    let device = backend.device();
    let name = backend_name(backend);
    let repeats = Repeats::new(quick);
    let command = format!(
        "cargo xtask bench --device {name}{}",
        if quick { " --quick" } else { "" }
    );
    println!("{command}");

    let mut mha = Vec::new();
    for (shape, reps) in [
        ([8, 128, 512], repeats),
        ([8, 1024, 512], repeats.at_most(5)),
    ] {
        let m = cases::mha_comparison(&device, reps, shape, 8);
        println!(
            "1. mha {:?}: ours {}, burn-nn {}, burn-nn/ours {:.2}x (max diff {:.1e})",
            m.shape,
            m.ours.cell(),
            m.burn_nn.cell(),
            m.speedup,
            m.max_abs_diff
        );
        mha.push(m);
    }
    let mha_breakdown = cases::mha_breakdown(&device, repeats, [8, 128, 512], 8);
    for (step, t) in &mha_breakdown.steps {
        println!("   {step}: {}", t.cell());
    }
    println!(
        "   qkv as a 2-D matmul: {} ({:.0} GFLOP/s)",
        mha_breakdown.qkv_matmul_2d.cell(),
        mha_breakdown.qkv_matmul_gflops
    );

    let mut scaling = Vec::new();
    for seq in [128, 256, 512, 1024, 2048, 4096, 8192, 16384] {
        let timed = if seq >= 4096 { 1 } else { 3 };
        for path in ["fused", "explicit"] {
            // The explicit path at 16,384 would hold several 8.6 GB score tensors at once.
            if path == "explicit" && seq > 8192 {
                continue;
            }
            let args = [
                "attention-point",
                "--device",
                &name,
                "--seq",
                &seq.to_string(),
            ]
            .into_iter()
            .chain(["--path", path, "--timed", &timed.to_string()])
            .map(String::from)
            .collect::<Vec<_>>();
            let point: cases::ScalingPoint = cases::in_child(&args)?;
            println!(
                "2. self-attention seq {seq} {path}: {:.1} ms, peak {:.0} MiB",
                point.ms, point.peak_mib
            );
            scaling.push(point);
        }
    }

    let quick_flag: &[&str] = if quick { &["--quick"] } else { &[] };
    let child_args = |case: &str| {
        [case, "--device", &name]
            .iter()
            .chain(quick_flag)
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let train_step: cases::TrainStep = cases::in_child(&child_args("train-step"))?;
    println!(
        "3. train step: {} = {:.0} target tokens/s (forward + backward {})",
        train_step.step.cell(),
        train_step.tokens_per_sec,
        train_step.forward_backward.cell()
    );

    let decoding: Vec<cases::Decoding> = cases::in_child(&child_args("decoding"))?;
    for d in &decoding {
        println!(
            "4. decode {} tokens: cached {} ({:.0} tok/s), uncached {} ({:.0} tok/s), {:.1}x",
            d.tokens,
            d.cached.cell(),
            d.cached_tokens_per_sec,
            d.uncached.cell(),
            d.uncached_tokens_per_sec,
            d.speedup
        );
    }

    let pytorch = if no_pytorch {
        Err("--no-pytorch".to_string())
    } else {
        pytorch(repeats)
    };
    match &pytorch {
        Ok(v) => println!("5. pytorch: {v}"),
        Err(why) => println!("5. pytorch not measured: {why}"),
    }

    let ctranslate2 = if !repository().join(translator).join("config.json").is_file() {
        Err(format!(
            "no translation model in {} (`tf train --task translation --out {}`)",
            translator.display(),
            translator.display()
        ))
    } else if backend != Backend::Flex {
        Err("measured on Flex only".to_string())
    } else {
        let options = ctranslate2_options(translator.to_path_buf(), None, 1000, 1);
        ctranslate2::compare(&options, &device)?
    };
    if let Err(why) = &ctranslate2 {
        println!("6. ctranslate2 not measured: {why}");
    }

    let hooks: cases::HooksOverhead = cases::in_child(&child_args("hooks"))?;
    println!("7. {}", hooks.summary());

    let report = Report {
        device: name,
        machine: report::machine(),
        date: utc_date(),
        command,
        mha,
        mha_breakdown,
        scaling,
        train_step,
        decoding,
        pytorch,
        ctranslate2,
        hooks,
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    report.write(&root.join("docs"), &root.join("target/bench"))
}

/// PyTorch's figures from `xtask/bench_pytorch.py`, or why there are none.
fn pytorch(repeats: Repeats) -> std::result::Result<serde_json::Value, String> {
    let probe = Command::new("python3")
        .args(["-c", "import torch"])
        .output();
    match probe {
        Ok(out) if out.status.success() => {}
        _ => return Err("`python3 -c \"import torch\"` fails".into()),
    }
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench_pytorch.py");
    let out = Command::new("python3")
        .arg(&script)
        .args([
            "--threads",
            &threads.to_string(),
            "--repeats",
            &repeats.timed.to_string(),
            // The training step's, so that both sides drop the same share.
            "--dropout",
            &cases::small_model_config(64).layer.dropout.to_string(),
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "bench_pytorch.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .ok_or("no JSON from bench_pytorch.py")?;
    serde_json::from_str(line).map_err(|e| e.to_string())
}

/// Today's date, UTC, as `YYYY-MM-DD` (from `date`, falling back to the Unix day count).
fn utc_date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| {
            let days = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() / 86_400);
            format!("day {days} since 1970-01-01")
        })
}
