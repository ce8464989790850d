//! Arguments several commands share: the task a model is for, where input lines come from, a
//! split of a translator's corpus, and lists of length penalties.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use tf_train::data::corpus::{ParallelCorpus, read_split};
use tf_train::data::task::Example;
use tf_train::data::translation::{TranslationTask, encode_pairs};
use tf_train::data::vocabulary::TranslationVocab;
use tf_train::eval::length_penalty::check_alphas;
use tf_train::{Task, TaskKind};

/// What a model learns: a built-in synthetic task, or translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskChoice {
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
pub struct TaskArgs {
    /// The task.
    #[arg(long, value_enum, default_value_t = TaskChoice::Reverse)]
    pub task: TaskChoice,
    /// Distinct symbols in the task's sequences.
    #[arg(
        long,
        default_value_t = 10,
        help_heading = "Synthetic tasks (copy, reverse, sort)"
    )]
    pub symbols: usize,
    /// Shortest training sequence.
    #[arg(
        long,
        default_value_t = 1,
        help_heading = "Synthetic tasks (copy, reverse, sort)"
    )]
    pub min_len: usize,
    /// Longest training sequence.
    #[arg(
        long,
        default_value_t = 12,
        help_heading = "Synthetic tasks (copy, reverse, sort)"
    )]
    pub max_len: usize,
    /// End every source with EOS, a fixed point an encoder without absolute positions (RoPE,
    /// none) can count from; saved with the model, so its other commands do the same.
    #[arg(long, help_heading = "Synthetic tasks (copy, reverse, sort)")]
    pub source_eos: bool,
}

impl TaskArgs {
    /// The synthetic task chosen; translation is an error for commands without a corpus.
    pub fn synthetic(&self) -> Result<Task> {
        let kind = match self.task {
            TaskChoice::Copy => TaskKind::Copy,
            TaskChoice::Reverse => TaskKind::Reverse,
            TaskChoice::Sort => TaskKind::Sort,
            TaskChoice::Translation => {
                bail!("--task translation is for `tf train`; here choose copy, reverse or sort")
            }
        };
        Ok(Task::new(kind, self.symbols, self.min_len, self.max_len)?
            .with_source_eos(self.source_eos))
    }
}

/// Every line of a UTF-8 file (gunzipped when its name ends in `.gz`), or of stdin when `path`
/// is `None` (none for empty input); invalid UTF-8 is an error naming its line.
pub fn read_input_lines(path: Option<&Path>) -> Result<Vec<String>> {
    use tf_train::data::corpus::{read_maybe_gzipped, text_lines};
    let (bytes, what) = match path {
        Some(path) => (read_maybe_gzipped(path)?, path.display().to_string()),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut bytes)
                .context("cannot read stdin")?;
            (bytes, "stdin".to_string())
        }
    };
    text_lines(bytes).with_context(|| format!("reading {what}"))
}

/// A split of a translator's corpus and its first pairs as token ids.
pub struct TranslatorSplit {
    /// The corpus directory read.
    pub data: PathBuf,
    /// The split's name.
    pub split: String,
    /// Its sentences.
    pub corpus: ParallelCorpus,
    /// Its first pairs (at most the limit asked for) within the task's length, encoded.
    pub pairs: Vec<Example>,
}

/// Reads `split` (default: the task's validation split) of the corpus in `data` (default: the
/// one the model was trained on) and encodes its first `limit` pairs with `vocab`.
pub fn translator_split(
    task: &TranslationTask,
    vocab: &TranslationVocab,
    data: Option<&Path>,
    split: Option<&str>,
    limit: usize,
) -> Result<TranslatorSplit> {
    let data = data.map_or_else(|| task.data.clone(), Path::to_path_buf);
    let split = split.unwrap_or(&task.valid_split).to_string();
    let corpus = read_split(&data, &split, &task.src, &task.tgt)
        .with_context(|| format!("reading the {split} split (--data, --split)"))?;
    let mut pairs = encode_pairs(vocab, &corpus, task.max_len)?.examples;
    pairs.truncate(limit);
    if pairs.is_empty() {
        bail!(
            "no sentence pair of {split} fits the model's {} tokens",
            task.max_len
        );
    }
    Ok(TranslatorSplit {
        data,
        split,
        corpus,
        pairs,
    })
}

/// Length penalty exponents α to choose among, written `0.6,1,1.5` (`none`: no choice).
#[derive(Clone, Debug, PartialEq)]
pub struct Alphas(pub Vec<f64>);

impl fmt::Display for Alphas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let alphas: Vec<String> = self.0.iter().map(f64::to_string).collect();
        f.write_str(&alphas.join(","))
    }
}

/// Parses [`Alphas`]: non-negative numbers separated by commas, or `none`.
pub fn parse_alphas(text: &str) -> std::result::Result<Alphas, String> {
    if text.trim() == "none" {
        return Ok(Alphas(Vec::new()));
    }
    let alphas = text
        .split(',')
        .map(|a| {
            a.trim()
                .parse::<f64>()
                .map_err(|_| format!("expected numbers separated by commas, got {a:?}"))
        })
        .collect::<std::result::Result<Vec<f64>, String>>()?;
    check_alphas(&alphas).map_err(|err| err.to_string())?;
    Ok(Alphas(alphas))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphas_are_non_negative_numbers_separated_by_commas_or_none() {
        assert_eq!(parse_alphas("0.6, 1,1.5"), Ok(Alphas(vec![0.6, 1.0, 1.5])));
        assert_eq!(parse_alphas("none"), Ok(Alphas(Vec::new())));
        assert_eq!(parse_alphas("0.6,1,1.5").unwrap().to_string(), "0.6,1,1.5");
        assert_eq!(Alphas(Vec::new()).to_string(), "none");
        for bad in ["", "0.6,,1", "fast", "-1", "NaN", "inf"] {
            assert!(parse_alphas(bad).is_err(), "{bad:?}");
        }
    }
}
