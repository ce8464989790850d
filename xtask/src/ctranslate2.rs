//! Decoding beside CTranslate2 (`cargo xtask ctranslate2`, and case 6 of `cargo xtask bench`):
//! a translation model's weights exported for `xtask/bench_ctranslate2.py`, which converts them
//! to a CTranslate2 `TransformerSpec`; then the same tokenized sentences decoded by both, at
//! beam 1 and 5, batch 1 and 64, float32 (and int8 for CTranslate2), with the greedy outputs
//! compared token for token and BLEU of each side against the references.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tf_model::{Transformer, TransformerConfig};
use tf_train::ModelDir;
use tf_train::data::corpus::{read_lines, split_path};
use tf_train::eval::bleu::corpus_bleu;
use tf_train::eval::translate::{TranslateOptions, translate_ids};
use tf_train::store::model_dir::Dropout;

use crate::report;

/// What to compare.
#[derive(Clone, Debug)]
pub struct Ctranslate2Options {
    /// A translation model directory (`tf train --task translation`).
    pub model: PathBuf,
    /// The Multi30k folder (test_2016_flickr is read from it).
    pub data: PathBuf,
    /// Sentences of test_2016_flickr to decode (from its start).
    pub sentences: usize,
    /// Timed runs per case (after one warm-up on the first batch).
    pub repeats: usize,
    /// Threads of both programs (CTranslate2's intra_threads; rayon's pool is the machine's).
    pub threads: usize,
    /// Where the export and CTranslate2's converted model go.
    pub work_dir: PathBuf,
}

/// One way of decoding.
#[derive(Clone, Copy, Debug)]
struct Case {
    name: &'static str,
    beam: usize,
    batch: usize,
    /// `float32` for both, or `int8` for CTranslate2 alone.
    compute_type: &'static str,
}

const CASES: [Case; 6] = [
    Case {
        name: "greedy_batch1",
        beam: 1,
        batch: 1,
        compute_type: "float32",
    },
    Case {
        name: "greedy_batch64",
        beam: 1,
        batch: 64,
        compute_type: "float32",
    },
    Case {
        name: "beam5_batch1",
        beam: 5,
        batch: 1,
        compute_type: "float32",
    },
    Case {
        name: "beam5_batch64",
        beam: 5,
        batch: 64,
        compute_type: "float32",
    },
    Case {
        name: "int8_greedy_batch1",
        beam: 1,
        batch: 1,
        compute_type: "int8",
    },
    Case {
        name: "int8_beam5_batch64",
        beam: 5,
        batch: 64,
        compute_type: "int8",
    },
];

/// One program's figures on one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Side {
    /// Median wall-clock seconds for all the sentences.
    pub seconds: f64,
    /// Target tokens produced (EOS not counted).
    pub target_tokens: usize,
    /// `target_tokens / seconds`.
    pub tokens_per_sec: f64,
    /// Corpus BLEU of the detokenized outputs against the references.
    pub bleu: f64,
}

/// Both programs on one case.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CaseResult {
    /// `greedy_batch1`, …, `int8_beam5_batch64`.
    pub name: String,
    /// Beams per sentence.
    pub beam: usize,
    /// Sentences decoded together.
    pub batch: usize,
    /// CTranslate2's compute type.
    pub compute_type: String,
    /// `tf translate`'s decoding (float32); none for CTranslate2's int8 cases.
    pub ours: Option<Side>,
    /// CTranslate2's.
    pub ctranslate2: Side,
    /// Our tokens/s over CTranslate2's (> 1: we are faster); against our float32 figure of the
    /// same beam and batch for the int8 cases.
    pub ratio: f64,
}

/// The comparison, as `target/bench/*.json` holds it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Ctranslate2Comparison {
    /// The model directory.
    pub model: String,
    /// CTranslate2's version.
    pub version: String,
    /// Threads of each program.
    pub threads: usize,
    /// Sentences decoded in every case.
    pub sentences: usize,
    /// Greedy outputs (batch 1, where both limit each sentence's length alike) equal token for
    /// token between the two programs.
    pub identical_greedy: usize,
    /// Every case.
    pub cases: Vec<CaseResult>,
    /// Ours over CTranslate2's tokens/s, float32, beam 5, batch 64.
    pub ratio_beam5_batch64: f64,
    /// CTranslate2's time per sentence over ours, greedy, batch 1 (> 1: our latency is lower).
    pub ratio_greedy_batch1: f64,
    /// Our tokens/s over CTranslate2 int8's, beam 5, batch 64 (ours in float32).
    pub ratio_int8: f64,
}

/// Exports `model`'s weights for the script: its config, every parameter in PyTorch's layout,
/// and the sources with what to run.
fn export(
    config: &TransformerConfig,
    model: &Transformer,
    work_dir: &Path,
    job: serde_json::Value,
) -> Result<()> {
    std::fs::create_dir_all(work_dir)?;
    std::fs::write(
        work_dir.join("config.json"),
        serde_json::to_vec_pretty(config)?,
    )?;
    let weights = work_dir.join("weights.safetensors");
    let mut store = SafetensorsStore::from_file(&weights)
        .with_to_adapter(BurnToPyTorchAdapter)
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|err| anyhow::anyhow!("writing {}: {err}", weights.display()))?;
    std::fs::write(work_dir.join("sources.json"), serde_json::to_vec(&job)?)?;
    Ok(())
}

/// What `bench_ctranslate2.py` printed of one case.
#[derive(Deserialize)]
struct ScriptCase {
    name: String,
    seconds: f64,
    target_tokens: usize,
    outputs: Vec<Vec<usize>>,
}

#[derive(Deserialize)]
struct ScriptOutput {
    #[serde(default)]
    skipped: Option<String>,
    #[serde(default)]
    ctranslate2: String,
    #[serde(default)]
    cases: Vec<ScriptCase>,
}

/// Runs the comparison; `Ok(Err(why))` when CTranslate2 is not installed.
pub fn compare(
    options: &Ctranslate2Options,
    device: &Device,
) -> Result<std::result::Result<Ctranslate2Comparison, String>> {
    let dir = ModelDir::new(&options.model);
    let (config, model) = dir.load_model(device, Dropout::Off)?;
    let vocab = dir.load_vocabulary()?;
    let read = |lang: &str| -> Result<Vec<String>> {
        let path = split_path(&options.data, "test_2016_flickr", lang)?;
        let mut lines = read_lines(&path)?;
        lines.truncate(options.sentences);
        Ok(lines)
    };
    let task = config.task.translation()?;
    let sources_text = read(&task.src)?;
    let references = read(&task.tgt)?;
    let max_source = model.max_source_len();
    let sources: Vec<Vec<usize>> = sources_text
        .iter()
        .map(|s| {
            vocab.encode_source(s).map(|mut ids| {
                ids.truncate(max_source);
                ids
            })
        })
        .collect::<tf_train::Result<_>>()?;
    // Each source's own length limit, as `translate_ids` applies it.
    let limit = TranslateOptions::greedy().max_output;
    let max_decoding_lengths: Vec<usize> = sources
        .iter()
        .map(|s| limit.clamped(s.len(), model.max_len()))
        .collect();
    let cases: Vec<_> = CASES
        .iter()
        .map(|c| json!({"name": c.name, "beam": c.beam, "batch": c.batch, "compute_type": c.compute_type}))
        .collect();
    let job = json!({
        "sources": sources,
        "max_decoding_lengths": max_decoding_lengths,
        "cases": cases,
        "repeats": options.repeats,
    });
    export(&config.model, &model, &options.work_dir, job)?;

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench_ctranslate2.py");
    let out = match Command::new("python3")
        .arg(&script)
        .arg("--export")
        .arg(&options.work_dir)
        .args(["--threads", &options.threads.to_string()])
        .output()
    {
        Ok(out) => out,
        Err(err) => return Ok(Err(format!("python3: {err}"))),
    };
    if !out.status.success() {
        bail!(
            "bench_ctranslate2.py failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .context("no JSON from bench_ctranslate2.py")?;
    let theirs: ScriptOutput = serde_json::from_str(line)?;
    if let Some(why) = theirs.skipped {
        return Ok(Err(why));
    }

    let bleu = |outputs: &[Vec<usize>]| -> Result<f64> {
        let text = outputs
            .iter()
            .map(|ids| vocab.decode(ids))
            .collect::<tf_train::Result<Vec<_>>>()?;
        Ok(corpus_bleu(&text, &references)?.score)
    };
    let alpha = dir
        .length_penalty()?
        .map_or(tf_model::DEFAULT_ALPHA, |c| c.alpha);
    let mut results: Vec<CaseResult> = Vec::new();
    let mut identical_greedy = 0;
    for (case, their) in CASES.iter().zip(&theirs.cases) {
        assert_eq!(case.name, their.name, "the script runs the cases in order");
        let ctranslate2 = Side {
            seconds: their.seconds,
            target_tokens: their.target_tokens,
            tokens_per_sec: their.target_tokens as f64 / their.seconds,
            bleu: bleu(&their.outputs)?,
        };
        let ours = if case.compute_type == "float32" {
            let translate = TranslateOptions {
                batch_sentences: case.batch,
                ..TranslateOptions::beam(case.beam, alpha)
            };
            let run =
                |sources: &[Vec<usize>]| translate_ids(&model, sources, &translate, device, |_| {});
            run(&sources[..sources.len().min(case.batch)])?; // warm-up
            let mut seconds = Vec::with_capacity(options.repeats);
            let mut outputs = Vec::new();
            for _ in 0..options.repeats.max(1) {
                let start = Instant::now();
                outputs = run(&sources)?;
                seconds.push(start.elapsed().as_secs_f64());
            }
            seconds.sort_by(f64::total_cmp);
            let seconds = seconds[seconds.len() / 2];
            let target_tokens = outputs.iter().map(Vec::len).sum();
            if case.name == "greedy_batch1" {
                identical_greedy = outputs
                    .iter()
                    .zip(&their.outputs)
                    .filter(|(a, b)| a == b)
                    .count();
            }
            Some(Side {
                seconds,
                target_tokens,
                tokens_per_sec: target_tokens as f64 / seconds,
                bleu: bleu(&outputs)?,
            })
        } else {
            None
        };
        let ours_f32 = ours.clone().or_else(|| {
            results
                .iter()
                .find(|r| r.beam == case.beam && r.batch == case.batch)
                .and_then(|r| r.ours.clone())
        });
        let ratio = ours_f32.map_or(f64::NAN, |o| o.tokens_per_sec / ctranslate2.tokens_per_sec);
        println!(
            "6. {}: ours {} · ctranslate2 {:.2} s, {:.0} tok/s, BLEU {:.2} · ratio {ratio:.2}",
            case.name,
            ours.as_ref().map_or("-".to_string(), |o| format!(
                "{:.2} s, {:.0} tok/s, BLEU {:.2}",
                o.seconds, o.tokens_per_sec, o.bleu
            )),
            ctranslate2.seconds,
            ctranslate2.tokens_per_sec,
            ctranslate2.bleu,
        );
        results.push(CaseResult {
            name: case.name.to_string(),
            beam: case.beam,
            batch: case.batch,
            compute_type: case.compute_type.to_string(),
            ours,
            ctranslate2,
            ratio,
        });
    }
    let ratio = |name: &str| {
        results
            .iter()
            .find(|r| r.name == name)
            .map_or(f64::NAN, |r| r.ratio)
    };
    // Batch 1 greedy: time per sentence, theirs over ours.
    let latency = results
        .iter()
        .find(|r| r.name == "greedy_batch1")
        .and_then(|r| r.ours.as_ref().map(|o| r.ctranslate2.seconds / o.seconds))
        .unwrap_or(f64::NAN);
    Ok(Ok(Ctranslate2Comparison {
        model: report::shown(&options.model),
        version: theirs.ctranslate2,
        threads: options.threads,
        sentences: sources.len(),
        identical_greedy,
        ratio_beam5_batch64: ratio("beam5_batch64"),
        ratio_greedy_batch1: latency,
        ratio_int8: ratio("int8_beam5_batch64"),
        cases: results,
    }))
}

impl Ctranslate2Comparison {
    /// The table of docs/benchmarks.md.
    pub fn markdown(&self, command: &str) -> String {
        use std::fmt::Write;
        let mut md = String::new();
        let _ = writeln!(
            md,
            "### 6. Decoding beside CTranslate2 {}, `{}`\n",
            self.version, self.model
        );
        let _ = writeln!(
            md,
            "{} sentences of test_2016_flickr (from its start), tokenized once and decoded by `tf translate`'s decoding (`translate_ids`) and by `ctranslate2.Translator.translate_batch` on the same weights, {} threads each. Each sentence's output is limited to `1.5 · source + 10` tokens on both sides (CTranslate2 takes one limit per call: at batch 64 the group's longest). Greedy outputs at batch 1 equal token for token: {} of {}. Beam search ranks by GNMT's `((5 + len) / 6)^α` here (the model's α) and by `len^1` there (CTranslate2's default), so beam outputs and their token counts differ a little; tokens/s counts each program's own outputs (EOS not counted). Command: `{command}`.\n",
            self.sentences, self.threads, self.identical_greedy, self.sentences
        );
        let _ = writeln!(
            md,
            "| case | ours | ours tok/s | ours BLEU | CTranslate2 | CTranslate2 tok/s | CTranslate2 BLEU | ours / CTranslate2 (tok/s) |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for c in &self.cases {
            let (t, tps, bleu) = c.ours.as_ref().map_or(
                ("(float32 above)".to_string(), String::new(), String::new()),
                |o| {
                    (
                        format!("{:.2} s", o.seconds),
                        format!("{:.0}", o.tokens_per_sec),
                        format!("{:.2}", o.bleu),
                    )
                },
            );
            let _ = writeln!(
                md,
                "| {} ({}) | {t} | {tps} | {bleu} | {:.2} s | {:.0} | {:.2} | {:.2}× |",
                c.name,
                c.compute_type,
                c.ctranslate2.seconds,
                c.ctranslate2.tokens_per_sec,
                c.ctranslate2.bleu,
                c.ratio
            );
        }
        md
    }
}
