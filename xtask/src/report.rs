//! What a benchmark run writes: JSON under `target/bench/`, plots under `docs/images/`, and its
//! device's section of `docs/benchmarks.md` (between `<!-- bench:DEVICE begin -->` and
//! `<!-- bench:DEVICE end -->`; the rest of the file is prose kept as it is).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;
use tf_inspect::plot::{Axes, Series, line_plot};

use crate::cases::{Decoding, HooksOverhead, MhaBreakdown, MhaComparison, ScalingPoint, TrainStep};
use crate::ctranslate2::Ctranslate2Comparison;
use crate::timing::ms;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    /// Device name (`flex`, `ndarray`, `wgpu`).
    pub device: String,
    /// The machine, in words.
    pub machine: String,
    /// UTC date of the run.
    pub date: String,
    /// The command that made it.
    pub command: String,
    /// Case 1.
    pub mha: Vec<MhaComparison>,
    /// Where MHA time goes.
    pub mha_breakdown: MhaBreakdown,
    /// Case 2.
    pub scaling: Vec<ScalingPoint>,
    /// Case 3.
    pub train_step: TrainStep,
    /// Case 4.
    pub decoding: Vec<Decoding>,
    /// Case 5: PyTorch's figures, or why there are none.
    pub pytorch: std::result::Result<Value, String>,
    /// Case 6: decoding beside CTranslate2, or why it was not measured.
    #[serde(serialize_with = "measured_or_why")]
    pub ctranslate2: std::result::Result<Ctranslate2Comparison, String>,
    /// Case 7: the cost of the hooked forward pass.
    pub hooks: HooksOverhead,
}

/// A case's figures as its object, or `{"not_measured": why}`.
fn measured_or_why<S: serde::Serializer, T: Serialize>(
    value: &std::result::Result<T, String>,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    match value {
        Ok(figures) => figures.serialize(serializer),
        Err(why) => serde_json::json!({ "not_measured": why }).serialize(serializer),
    }
}

/// `path` as a report shows it: relative to the repository when inside it (`REPO/../shared/x`
/// reads `../shared/x`).
pub fn shown(path: &Path) -> String {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR")).parent();
    repository
        .and_then(|root| path.strip_prefix(root).ok())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Replaces the part of the markdown file `path` between `<!-- KEY begin -->` and
/// `<!-- KEY end -->` with `body` (appending the section when it is not there yet).
pub fn replace_section(path: &Path, key: &str, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let (begin, end) = (
        format!("<!-- {key} begin -->"),
        format!("<!-- {key} end -->"),
    );
    let section = format!("{begin}\n{body}{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &old[..b], &old[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The machine: CPU model, cores, memory (Linux).
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_string(), |m| m.trim().to_string());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {mem_gib:.0} GiB")
}

impl Report {
    fn torch(&self) -> Option<&Value> {
        self.pytorch.as_ref().ok()
    }

    fn torch_median(&self, pointer: &str) -> Option<f64> {
        self.torch()?.pointer(pointer)?.as_f64()
    }

    /// A PyTorch figure as a cell, or "not measured".
    fn torch_cell(&self, pointer: &str, ours_ms: f64) -> (String, String) {
        match self.torch_median(pointer) {
            Some(theirs) => (ms(theirs), format!("{:.2}×", ours_ms / theirs)),
            None => ("not measured".into(), "not measured".into()),
        }
    }

    /// Writes the JSON, the plots and the markdown section.
    pub fn write(&self, docs: &Path, json_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(json_dir)?;
        let json_path = json_dir.join(format!("{}.json", self.device));
        std::fs::write(&json_path, serde_json::to_string_pretty(self)?)?;
        println!("wrote {}", json_path.display());
        let images = docs.join("images");
        std::fs::create_dir_all(&images)?;
        self.plot(&images)?;
        let md_path = docs.join("benchmarks.md");
        replace_section(
            &md_path,
            &format!("bench:{}", self.device),
            &self.markdown(),
        )
    }

    fn plot(&self, images: &Path) -> Result<()> {
        let series = |path: &str, value: fn(&ScalingPoint) -> f64| Series {
            name: format!("{path} path"),
            points: self
                .scaling
                .iter()
                .filter(|p| p.path == path)
                .map(|p| (p.seq as f64, value(p)))
                .collect(),
        };
        let max =
            |value: fn(&ScalingPoint) -> f64| self.scaling.iter().map(value).fold(1.0, f64::max);
        let device = &self.device;
        for (what, unit, value) in [
            (
                "time",
                "ms",
                (|p: &ScalingPoint| p.ms) as fn(&ScalingPoint) -> f64,
            ),
            ("memory", "peak MiB above baseline", |p: &ScalingPoint| {
                p.peak_mib
            }),
        ] {
            let axes = Axes {
                x_label: "sequence length".into(),
                y_label: unit.into(),
                log2_x: true,
                y_max: Some(max(value)),
            };
            line_plot(
                &images.join(format!("bench-{device}-scaling-{what}")),
                &format!("Self-attention [1, seq, 512], 8 heads, {device}: {what}"),
                &axes,
                &[series("fused", value), series("explicit", value)],
            )?;
        }
        let decode = |name: &str, value: fn(&Decoding) -> f64| Series {
            name: name.into(),
            points: self
                .decoding
                .iter()
                .map(|d| (d.tokens as f64, value(d)))
                .collect(),
        };
        let per_token = [
            decode("cached", |d| d.cached.median_ms / d.tokens as f64),
            decode("uncached", |d| d.uncached.median_ms / d.tokens as f64),
        ];
        let y_max = per_token
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(1.0, f64::max);
        line_plot(
            &images.join(format!("bench-{device}-decoding")),
            &format!("Greedy decoding, ms per token, {device}"),
            &Axes {
                x_label: "tokens generated".into(),
                y_label: "ms per token".into(),
                log2_x: true,
                y_max: Some(y_max),
            },
            &per_token,
        )?;
        Ok(())
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let torch = match &self.pytorch {
            Ok(v) => format!(
                "PyTorch {} on {} threads",
                v["torch_version"].as_str().unwrap_or("?"),
                v["threads"]
            ),
            Err(why) => format!("PyTorch not measured ({why})"),
        };
        let _ = writeln!(
            md,
            "## Device `{}`\n\n{}; {}, {torch}. Command: `{}`. Each figure is the median of timed runs after warm-up, with (min–max); the device is synced around every reading.\n",
            self.device, self.date, self.machine, self.command
        );

        let _ = writeln!(
            md,
            "### 1. Multi-head attention forward (inference), ours vs burn-nn vs PyTorch\n"
        );
        let _ = writeln!(
            md,
            "Same weights in ours and burn-nn's `MultiHeadAttention` (outputs agree to the max difference shown), timed in turns in one process. PyTorch: `nn.MultiheadAttention(need_weights=False)` under `inference_mode`, same shapes and threads.\n"
        );
        let _ = writeln!(
            md,
            "| shape | ours | burn-nn | burn-nn / ours | PyTorch | ours / PyTorch | max diff |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- |");
        for (i, m) in self.mha.iter().enumerate() {
            let (torch, ratio) = self.torch_cell(
                &format!("/mha_forward/{i}/timing/median_ms"),
                m.ours.median_ms,
            );
            let _ = writeln!(
                md,
                "| `{:?}`, {} heads | {} | {} | {:.2}× | {torch} | {ratio} | {:.1e} |",
                m.shape,
                m.heads,
                m.ours.cell(),
                m.burn_nn.cell(),
                m.speedup,
                m.max_abs_diff
            );
        }
        let b = &self.mha_breakdown;
        let _ = writeln!(
            md,
            "\nWhere one forward of `{:?}` spends its time (each step timed alone):\n",
            b.shape
        );
        let _ = writeln!(md, "| step | time |");
        let _ = writeln!(md, "| --- | --- |");
        for (name, t) in &b.steps {
            let _ = writeln!(md, "| {name} | {} |", t.cell());
        }
        let _ = writeln!(
            md,
            "| for scale: the Q/K/V projection as one 2-D matmul | {} = {:.0} GFLOP/s |",
            b.qkv_matmul_2d.cell(),
            b.qkv_matmul_gflops
        );

        let _ = writeln!(
            md,
            "\n### 2. Self-attention scaling, `[1, seq, 512]`, 8 heads, inference\n"
        );
        let _ = writeln!(
            md,
            "Default path (the fused attention: on Flex this crate's kernel, `fused_sdpa`) vs the explicit path that materialises the `[heads, seq, seq]` weights. Each point runs in a fresh process; peak = high-water resident memory above the process's before the first call.\n"
        );
        let _ = writeln!(
            md,
            "| seq | fused time | fused peak | explicit time | explicit peak |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- |");
        let mut seqs: Vec<usize> = self.scaling.iter().map(|p| p.seq).collect();
        seqs.dedup();
        for seq in seqs {
            let cell = |path: &str| {
                self.scaling
                    .iter()
                    .find(|p| p.seq == seq && p.path == path)
                    .map_or(("not run".to_string(), "—".to_string()), |p| {
                        (ms(p.ms), format!("{:.0} MiB", p.peak_mib))
                    })
            };
            let (ft, fm) = cell("fused");
            let (et, em) = cell("explicit");
            let _ = writeln!(md, "| {seq} | {ft} | {fm} | {et} | {em} |");
        }
        let d = &self.device;
        let _ = writeln!(
            md,
            "\n![time](images/bench-{d}-scaling-time.png)\n![memory](images/bench-{d}-scaling-memory.png)\n"
        );

        let t = &self.train_step;
        let (torch, ratio) = self.torch_cell("/train_step/timing/median_ms", t.step.median_ms);
        let torch_tps = self
            .torch_median("/train_step/tokens_per_sec")
            .map_or("not measured".to_string(), |v| format!("{v:.0}"));
        let _ = writeln!(
            md,
            "### 3. Training step: forward + backward + Adam, `d_model` 256, 4 heads, 3 + 3 layers, `d_ff` 1024, 32 × 32 tokens ({:.1}M parameters)\n",
            t.params as f64 / 1e6
        );
        let _ = writeln!(
            md,
            "`tf train`'s own step function (label smoothing 0.1, dropout 0.1, gradient norm clipped to 1), {} on {} threads. PyTorch: `nn.Transformer` with the same sizes, dropout, smoothing and clipping.\n",
            t.dtype, t.threads
        );
        let _ = writeln!(md, "| | ours | PyTorch | ours / PyTorch (time) |");
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        let _ = writeln!(md, "| step | {} | {torch} | {ratio} |", t.step.cell());
        let _ = writeln!(
            md,
            "| target tokens/s | {:.0} | {torch_tps} | |",
            t.tokens_per_sec
        );
        let _ = writeln!(
            md,
            "\nForward + loss + backward alone: {} (the rest of the step is Adam).",
            t.forward_backward.cell()
        );

        let _ = writeln!(
            md,
            "\n### 4. Greedy decoding, batch 1, 32-token source, the model of case 3\n"
        );
        let _ = writeln!(
            md,
            "EOS disabled, so every run generates exactly the tokens asked for. PyTorch: the same math by hand with per-layer caches (`nn.Transformer` has none), and `nn.TransformerDecoder` on the whole prefix for uncached.\n"
        );
        let _ = writeln!(
            md,
            "| tokens | cached | uncached | uncached / cached | ms/token cached | PyTorch cached | PyTorch uncached | ours / PyTorch (cached) |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for (i, dec) in self.decoding.iter().enumerate() {
            let (tc, ratio) = self.torch_cell(
                &format!("/decoding/{i}/cached/median_ms"),
                dec.cached.median_ms,
            );
            let (tu, _) = self.torch_cell(
                &format!("/decoding/{i}/uncached/median_ms"),
                dec.uncached.median_ms,
            );
            let _ = writeln!(
                md,
                "| {} | {} | {} | {:.1}× | {:.2} | {tc} | {tu} | {ratio} |",
                dec.tokens,
                dec.cached.cell(),
                dec.uncached.cell(),
                dec.speedup,
                dec.cached.median_ms / dec.tokens as f64
            );
        }
        let _ = writeln!(md, "\n![decoding](images/bench-{d}-decoding.png)\n");
        match &self.ctranslate2 {
            Ok(comparison) => md.push_str(&comparison.markdown(&self.command)),
            Err(why) => {
                let _ = writeln!(
                    md,
                    "### 6. Decoding beside CTranslate2\n\nNot measured: {why}.\n"
                );
            }
        }
        let h = &self.hooks;
        let _ = writeln!(
            md,
            "### 7. The hooked forward pass\n\nThe translation model's teacher-forced forward pass (inference), batch {} × {} tokens, random weights: `forward` against `forward_hooked` with `Hooks::none()` (timed in turns), and `forward_hooked` keeping every activation (which forms every attention pattern).\n\n| plain | no hooks | no hooks / plain | keeping everything |\n| --- | --- | --- | --- |\n| {} | {} | {:.3}× | {} |\n",
            h.shape[0],
            h.shape[1],
            h.plain.cell(),
            h.no_hooks.cell(),
            h.ratio,
            h.cache_all.cell()
        );
        md
    }
}
