//! `cargo xtask sweep`: the paper's Table 3 for the default de→en recipe. Each variant of
//! `xtask/sweep.json` changes one thing (heads, `d_k`, layers, width, dropout, label smoothing,
//! positions, norm placement, embedding sharing) and trains with `tf train --task translation`
//! under the same wall-clock budget; then its model translates the test split with beam search
//! (the length penalty its run chose on `val`) and is scored with BLEU.
//!
//! Writes, under `--out` (default `runs/sweep`): one directory and one log per variant, the
//! table as `sweep.md` and `sweep.csv`, and `sweep.png`/`.svg` (test BLEU against parameters,
//! validation BLEU against minutes). Resumable: a variant whose `sweep.json` exists is not run
//! again; an interrupted one resumes from its newest checkpoint (`tf train --resume`, whose
//! budget counts the minutes already spent); one that finished training but not its scoring is
//! only scored.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use burn::module::Module;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tf_inspect::plot::{Axes, Panel, Series, panels_plot};
use tf_model::DEFAULT_BEAM;
use tf_train::ModelDir;
use tf_train::data::corpus::{read_lines, split_path};
use tf_train::eval::bleu::corpus_bleu;
use tf_train::eval::translate::{TranslateOptions, translate};
use tf_train::store::model_dir::Dropout;
use tf_train::training::metrics::read_metrics;

use crate::report;

/// What to run.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The variants (`xtask/sweep.json`).
    pub variants: PathBuf,
    /// Run only these variants (by name), in the file's order.
    pub only: Option<Vec<String>>,
    /// Wall-clock minutes of training per variant.
    pub budget_minutes: f64,
    /// Where the variants' directories and the table go.
    pub out: PathBuf,
    /// The corpus folder (`tf train --data`).
    pub data: PathBuf,
    /// The split scored with beam search at the end.
    pub test_split: String,
    /// The `tf` program.
    pub tf: PathBuf,
    /// Flags given to every variant's `tf train` before its own (a smaller corpus, say); a
    /// variant's own flag replaces the same flag here.
    pub extra_flags: Vec<String>,
}

/// One variant: a name, what it changes, and the `tf train` flags that change it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Variant {
    /// Its name, also its directory's.
    pub name: String,
    /// What it changes from the default recipe, in words.
    pub change: String,
    /// The `tf train` flags that make it.
    pub flags: Vec<String>,
}

#[derive(Deserialize)]
struct VariantFile {
    variants: Vec<Variant>,
}

/// The variants of `path`, checked: names unique and usable as directory names.
pub fn read_variants(path: &Path) -> Result<Vec<Variant>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: VariantFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a list of variants", path.display()))?;
    let mut seen = std::collections::BTreeSet::new();
    for variant in &file.variants {
        let name = &variant.name;
        ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !name.starts_with('.'),
            "{}: variant name {name:?} is not a plain directory name",
            path.display()
        );
        ensure!(
            seen.insert(name.clone()),
            "{}: variant {name:?} appears twice",
            path.display()
        );
    }
    Ok(file.variants)
}

/// One variant's figures: a row of the table.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct SweepRow {
    /// The variant.
    pub variant: Variant,
    /// Trained parameters.
    pub parameters: usize,
    /// Epochs completed.
    pub epochs: usize,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Minutes of training (the run's own clock, across resumes).
    pub minutes: f64,
    /// Median training throughput, target tokens/s.
    pub tokens_per_sec: f64,
    /// The kept model's validation BLEU (greedy; the run's validation sentences).
    pub val_bleu: f64,
    /// Test BLEU, beam search with the length penalty chosen on `val`.
    pub test_bleu: f64,
    /// That length penalty.
    pub alpha: f64,
    /// Largest resident memory of the variant's `tf train` processes, MiB (Linux).
    pub peak_memory_mib: Option<f64>,
    /// Validation BLEU after each epoch: `(minutes, BLEU)`.
    pub curve: Vec<(f64, f64)>,
    /// The command that trained it.
    pub command: String,
}

/// Runs (or resumes) every variant asked for, then writes the table and the plot of every
/// variant finished under `--out` (those of earlier sittings too, so a sweep run a few
/// variants at a time builds one table); returns the table's rows in the file's order.
pub fn run(options: &SweepOptions, device: &Device) -> Result<Vec<SweepRow>> {
    let all = read_variants(&options.variants)?;
    let mut variants = all.clone();
    if let Some(only) = &options.only {
        for name in only {
            ensure!(
                variants.iter().any(|v| &v.name == name),
                "no variant {name:?} in {} (there are: {})",
                options.variants.display(),
                variants
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        variants.retain(|v| only.contains(&v.name));
    }
    ensure!(
        options.budget_minutes.is_finite() && options.budget_minutes > 0.0,
        "--budget-minutes must be positive, got {}",
        options.budget_minutes
    );
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    for (i, variant) in variants.iter().enumerate() {
        println!(
            "[{}/{}] {}: {}",
            i + 1,
            variants.len(),
            variant.name,
            variant.change
        );
        run_variant(options, variant, device)?;
    }
    let mut rows = Vec::new();
    for variant in &all {
        if let Some(row) = finished_row(&options.out, variant)? {
            rows.push(row);
        }
    }
    write_outputs(options, &rows)?;
    Ok(rows)
}

/// The record `OUT/NAME/sweep.json` of a variant that was trained and scored, if there is one.
fn finished_row(out: &Path, variant: &Variant) -> Result<Option<SweepRow>> {
    let record = out.join(&variant.name).join("sweep.json");
    if !record.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&record)
        .with_context(|| format!("cannot read {}", record.display()))?;
    let row = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a sweep record", record.display()))?;
    Ok(Some(row))
}

/// The `tf train` arguments of a fresh run of `variant`.
fn train_arguments(options: &SweepOptions, variant: &Variant, dir: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--task",
        "translation",
        "--data",
        &report::shown(&options.data),
        "--out",
        &report::shown(dir),
        "--max-minutes",
        &options.budget_minutes.to_string(),
    ]
    .map(String::from)
    .into();
    args.extend(without_flags(&options.extra_flags, &variant.flags));
    args.extend(variant.flags.iter().cloned());
    args
}

/// The name of a flag argument (`--layers` of `--layers` or `--layers=2`), or `None` for a value.
fn flag_name(arg: &str) -> Option<&str> {
    arg.starts_with("--")
        .then(|| arg.split_once('=').map_or(arg, |(name, _)| name))
}

/// `extra` without the flags `own` sets (each with its value): a variant's own flag replaces the
/// one given to every variant, where `tf train` would refuse the flag given twice.
fn without_flags(extra: &[String], own: &[String]) -> Vec<String> {
    let own: Vec<&str> = own.iter().filter_map(|a| flag_name(a)).collect();
    let mut kept = Vec::new();
    let mut dropping = false;
    for arg in extra {
        match flag_name(arg) {
            Some(name) => {
                dropping = own.contains(&name);
                if !dropping {
                    kept.push(arg.clone());
                }
            }
            None if dropping => {}
            None => kept.push(arg.clone()),
        }
    }
    kept
}

/// A command line as a user types it (arguments with spaces quoted).
fn shell_line(program: &str, args: &[String]) -> String {
    std::iter::once(program.to_string())
        .chain(args.iter().map(|a| {
            if a.is_empty() || a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a.clone()
            }
        }))
        .collect::<Vec<_>>()
        .join(" ")
}

fn run_variant(options: &SweepOptions, variant: &Variant, device: &Device) -> Result<SweepRow> {
    let dir = options.out.join(&variant.name);
    let record = dir.join("sweep.json");
    if let Some(row) = finished_row(&options.out, variant)? {
        println!("  done before: test BLEU {:.2}", row.test_bleu);
        return Ok(row);
    }
    let fresh = train_arguments(options, variant, &dir);
    let model_dir = ModelDir::new(&dir);
    let trained = model_dir.has_length_penalty_record();
    if !trained {
        let has_checkpoint = dir.join("latest").is_file();
        if dir.exists() && !has_checkpoint {
            // Stopped before its first checkpoint: nothing in it to keep.
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        let args = if has_checkpoint {
            println!("  resuming from its newest checkpoint");
            ["train", "--resume", "--out", &dir.to_string_lossy()]
                .map(String::from)
                .into()
        } else {
            fresh.clone()
        };
        let peak = run_tf(
            &options.tf,
            &args,
            &options.out.join(format!("{}.log", variant.name)),
        )?;
        record_peak(&options.out, &variant.name, peak)?;
        ensure!(
            model_dir.has_length_penalty_record(),
            "{} has no length_penalty.json after training: see {}",
            dir.display(),
            options.out.join(format!("{}.log", variant.name)).display()
        );
    }
    let row = score(
        options,
        variant,
        &model_dir,
        shell_line("tf", &fresh),
        device,
    )?;
    std::fs::write(&record, serde_json::to_string_pretty(&row)?)
        .with_context(|| format!("cannot write {}", record.display()))?;
    println!(
        "  {} epochs in {:.1} min, {:.0} tok/s; val BLEU {:.2}, {} BLEU {:.2}",
        row.epochs,
        row.minutes,
        row.tokens_per_sec,
        row.val_bleu,
        options.test_split,
        row.test_bleu
    );
    Ok(row)
}

/// Runs `tf args`, output appended to `log`; returns the largest resident memory seen (MiB),
/// read from `/proc` while it runs (Linux; `None` elsewhere).
fn run_tf(tf: &Path, args: &[String], log: &Path) -> Result<Option<f64>> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot write {}", log.display()))?;
    {
        use std::io::Write as _;
        writeln!(file, "$ {}", shell_line(&tf.to_string_lossy(), args))?;
    }
    // The arguments name paths inside the repository relative to it.
    let mut child = Command::new(tf)
        .args(args)
        .current_dir(crate::repository())
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot run {}", tf.display()))?;
    let status_path = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak: Option<f64> = None;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|status| vm_hwm_kib(&status))
        {
            peak = Some(peak.unwrap_or(0.0).max(kib as f64 / 1024.0));
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        bail!(
            "`{}` failed ({status}); its output is in {}",
            shell_line("tf", args),
            log.display()
        );
    }
    Ok(peak)
}

/// `VmHWM` (peak resident set) of a `/proc/PID/status` text, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Keeps the largest peak of a variant's processes (a resumed run is several) in `NAME.peak`.
fn record_peak(out: &Path, name: &str, peak: Option<f64>) -> Result<()> {
    let Some(peak) = peak else { return Ok(()) };
    let path = out.join(format!("{name}.peak"));
    let before = read_peak(out, name).unwrap_or(0.0);
    std::fs::write(&path, format!("{:.1}\n", before.max(peak)))
        .with_context(|| format!("cannot write {}", path.display()))
}

fn read_peak(out: &Path, name: &str) -> Option<f64> {
    std::fs::read_to_string(out.join(format!("{name}.peak")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The figures of a trained variant: its log, its kept model, and the test split translated
/// with beam search.
fn score(
    options: &SweepOptions,
    variant: &Variant,
    dir: &ModelDir,
    command: String,
    device: &Device,
) -> Result<SweepRow> {
    let metrics = read_metrics(&dir.metrics_path())?;
    let (config, model) = dir.load_model(device, Dropout::Off)?;
    let vocab = dir.load_vocabulary()?;
    let task = config
        .task
        .translation()
        .context("the sweep trains translation models")?;
    let sources = read_lines(&split_path(&options.data, &options.test_split, &task.src)?)?;
    let references = read_lines(&split_path(&options.data, &options.test_split, &task.tgt)?)?;
    let alpha = dir
        .length_penalty()?
        .context("no length penalty chosen")?
        .alpha;
    let translations = translate(
        &model.valid(),
        &vocab,
        &sources,
        &TranslateOptions::beam(DEFAULT_BEAM, alpha),
        device,
        |_| {},
    )?;
    let test_bleu = corpus_bleu(&translations.sentences, &references)?.score;
    let valid: Vec<_> = metrics.iter().filter(|r| r.split == "valid").collect();
    let mut throughput: Vec<f64> = metrics
        .iter()
        .filter_map(|r| r.target_tokens_per_sec)
        .collect();
    throughput.sort_by(f64::total_cmp);
    Ok(SweepRow {
        variant: variant.clone(),
        parameters: model.num_params(),
        epochs: valid.iter().filter_map(|r| r.epoch).max().unwrap_or(0),
        steps: metrics.iter().map(|r| r.step).max().unwrap_or(0),
        minutes: metrics.iter().map(|r| r.elapsed_secs).fold(0.0, f64::max) / 60.0,
        tokens_per_sec: throughput.get(throughput.len() / 2).copied().unwrap_or(0.0),
        val_bleu: dir.best()?.map_or(f64::NAN, |best| best.bleu),
        test_bleu,
        alpha,
        peak_memory_mib: read_peak(&options.out, &variant.name),
        curve: valid
            .iter()
            .filter_map(|r| Some((r.elapsed_secs / 60.0, r.bleu?)))
            .collect(),
        command,
    })
}

/// The table as Markdown: one row per variant, the command that trained it beside it.
pub fn markdown(rows: &[SweepRow], test_split: &str) -> String {
    let mut text = format!(
        "| variant | change | parameters | epochs | minutes | target tok/s | val BLEU (greedy) | {test_split} BLEU (beam {DEFAULT_BEAM}, α) | peak MiB | command |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n"
    );
    for r in rows {
        let peak = r.peak_memory_mib.map_or("—".into(), |m| format!("{m:.0}"));
        let _ = writeln!(
            text,
            "| {} | {} | {:.2}M | {} | {:.1} | {:.0} | {:.2} | **{:.2}** (α {}) | {peak} | `{}` |",
            r.variant.name,
            r.variant.change,
            r.parameters as f64 / 1e6,
            r.epochs,
            r.minutes,
            r.tokens_per_sec,
            r.val_bleu,
            r.test_bleu,
            r.alpha,
            r.command
        );
    }
    text
}

/// The table as CSV.
pub fn csv(rows: &[SweepRow]) -> String {
    let mut text = String::from(
        "variant,parameters,epochs,steps,minutes,target_tokens_per_sec,val_bleu,test_bleu,alpha,peak_memory_mib,command\n",
    );
    for r in rows {
        let _ = writeln!(
            text,
            "{},{},{},{},{:.2},{:.0},{:.2},{:.2},{},{},\"{}\"",
            r.variant.name,
            r.parameters,
            r.epochs,
            r.steps,
            r.minutes,
            r.tokens_per_sec,
            r.val_bleu,
            r.test_bleu,
            r.alpha,
            r.peak_memory_mib
                .map_or(String::new(), |m| format!("{m:.0}")),
            r.command.replace('"', "\"\"")
        );
    }
    text
}

fn write_outputs(options: &SweepOptions, rows: &[SweepRow]) -> Result<()> {
    let write = |name: &str, text: String| -> Result<()> {
        let path = options.out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
        Ok(())
    };
    write("sweep.md", markdown(rows, &options.test_split))?;
    write("sweep.csv", csv(rows))?;
    let top = |values: &mut dyn Iterator<Item = f64>| values.fold(1.0, f64::max) * 1.1;
    let by_size = Panel {
        title: format!("{} BLEU against parameters", options.test_split),
        axes: Axes {
            y_max: Some(top(&mut rows.iter().map(|r| r.test_bleu))),
            ..Axes::unit("parameters (millions)", "BLEU")
        },
        series: rows
            .iter()
            .map(|r| Series {
                name: r.variant.name.clone(),
                points: vec![(r.parameters as f64 / 1e6, r.test_bleu)],
            })
            .collect(),
        labelled: true,
    };
    let by_time = Panel {
        title: "validation BLEU (greedy) against minutes".into(),
        axes: Axes {
            y_max: Some(top(&mut rows
                .iter()
                .flat_map(|r| r.curve.iter().map(|p| p.1)))),
            ..Axes::unit("minutes of training", "BLEU")
        },
        series: rows
            .iter()
            .map(|r| Series {
                name: r.variant.name.clone(),
                points: r.curve.clone(),
            })
            .collect(),
        labelled: false,
    };
    for path in panels_plot(
        &options.out.join("sweep"),
        "one change at a time from the default de→en recipe",
        &[by_size, by_time],
    )? {
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_variants_are_valid_and_change_one_thing_each() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sweep.json");
        let variants = read_variants(&path).unwrap();
        assert!(variants.len() >= 16, "{} variants", variants.len());
        assert_eq!(variants[0].name, "default");
        assert!(variants[0].flags.is_empty());
        for v in &variants[1..] {
            assert!(!v.flags.is_empty(), "{} changes nothing", v.name);
            assert!(v.flags[0].starts_with("--"), "{}: {:?}", v.name, v.flags);
        }
        for name in ["heads-8", "rope", "dk-half", "pre-norm", "no-positions"] {
            assert!(variants.iter().any(|v| v.name == name), "{name}");
        }
    }

    #[test]
    fn bad_variant_files_are_refused_with_the_reason() {
        let dir = std::env::temp_dir().join(format!("tf-sweep-variants-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v.json");
        let write = |text: &str| std::fs::write(&path, text).unwrap();
        write(
            r#"{"variants": [{"name": "a", "change": "x", "flags": []}, {"name": "a", "change": "y", "flags": []}]}"#,
        );
        assert!(
            read_variants(&path)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        write(r#"{"variants": [{"name": "../up", "change": "x", "flags": []}]}"#);
        assert!(
            read_variants(&path)
                .unwrap_err()
                .to_string()
                .contains("plain directory name")
        );
        write("[1, 2]");
        assert!(
            read_variants(&path)
                .unwrap_err()
                .to_string()
                .contains("not a list of variants")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn peak_memory_is_read_from_proc_status() {
        let status = "Name:\ttf\nVmPeak:\t  900000 kB\nVmHWM:\t  655360 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(655_360));
        assert_eq!(vm_hwm_kib("Name:\ttf\n"), None);
    }

    #[test]
    fn a_variants_own_flag_replaces_the_one_given_to_all() {
        let strings = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let extra = strings(&[
            "--layers",
            "1",
            "--epochs",
            "2",
            "--d-model=64",
            "--norm",
            "pre",
        ]);
        assert_eq!(
            without_flags(&extra, &strings(&["--layers", "4", "--d-model", "128"])),
            strings(&["--epochs", "2", "--norm", "pre"])
        );
        assert_eq!(without_flags(&extra, &[]), extra);
    }

    #[test]
    fn command_lines_quote_what_has_spaces() {
        let args = ["train", "--data", "my corpus"].map(String::from);
        assert_eq!(shell_line("tf", &args), "tf train --data 'my corpus'");
    }
}
