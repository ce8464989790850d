//! Built-in synthetic sequence-to-sequence tasks: copy, reverse and sort sequences of symbols.
//!
//! A task's vocabulary is its `n_symbols` symbols, written `0 .. n_symbols-1`, plus three
//! special tokens: token ids are `PAD = 0`, `BOS = 1`, `EOS = 2`, and symbol `s` is `s + 3`.
//! Sources are the symbols alone, or with EOS after them ([`Task::with_source_eos`]), which
//! gives an encoder without absolute positions (RoPE, none) a fixed point to count from.

use std::fmt;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tf_model::TransformerConfig;

/// Padding token id.
pub const PAD: usize = 0;
/// Begin-of-sequence token id: the decoder's first input.
pub const BOS: usize = 1;
/// End-of-sequence token id: the decoder's last output.
pub const EOS: usize = 2;
/// Number of special tokens before the first symbol.
pub const N_SPECIAL: usize = 3;

/// The ids a model reserves: padding, the decoder's first input, the end of a sequence. Models
/// trained here use [`PAD`], [`BOS`], [`EOS`] ([`SpecialIds::OURS`]); an imported MarianMT model
/// starts decoding from its pad token and ends with its own EOS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    /// Padding.
    pub pad: usize,
    /// The decoder's first input.
    pub bos: usize,
    /// The end of a sequence: the decoder's last output.
    pub eos: usize,
    /// A token the decoder never outputs (an imported MarianMT model's pad, as its
    /// `generation_config.json` forbids it); none for ours.
    #[serde(default)]
    pub forbidden: Option<usize>,
}

impl SpecialIds {
    /// The ids of every model trained here.
    pub const OURS: Self = Self {
        pad: PAD,
        bos: BOS,
        eos: EOS,
        forbidden: None,
    };
}

impl Default for SpecialIds {
    fn default() -> Self {
        Self::OURS
    }
}

/// What the target is, given the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// The source itself.
    Copy,
    /// The source backwards.
    Reverse,
    /// The source's symbols in ascending order.
    Sort,
}

impl fmt::Display for TaskKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TaskKind::Copy => "copy",
            TaskKind::Reverse => "reverse",
            TaskKind::Sort => "sort",
        })
    }
}

/// A source and its target, as token ids: no BOS or EOS, except the source's EOS of a task
/// [`with_source_eos`](Task::with_source_eos).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    /// Source token ids.
    pub src: Vec<usize>,
    /// Target token ids.
    pub tgt: Vec<usize>,
}

/// A synthetic task: which transformation, over how many symbols, for which lengths.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The transformation.
    pub kind: TaskKind,
    /// Distinct symbols.
    pub n_symbols: usize,
    /// Shortest sequence (symbols).
    pub min_len: usize,
    /// Longest sequence (symbols).
    pub max_len: usize,
    /// Whether sources end with EOS (targets always do, as the decoder's last output). Off in
    /// the paper's setting and in model directories written before the option existed.
    #[serde(default)]
    pub source_eos: bool,
}

/// A task that cannot generate examples.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskError {
    /// The task's sizes are unusable.
    #[error("invalid task: {0}")]
    Invalid(String),
    /// A symbol in user input is not a number below `n_symbols`.
    #[error("'{token}' is not a symbol of this task: symbols are the integers 0 to {max}")]
    UnknownSymbol {
        /// The offending input.
        token: String,
        /// The largest symbol.
        max: usize,
    },
    /// User input has more symbols than the model was trained for.
    #[error("sequence of {len} symbols is longer than the model's limit of {max}")]
    TooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl Task {
    /// A task, checked.
    pub fn new(
        kind: TaskKind,
        n_symbols: usize,
        min_len: usize,
        max_len: usize,
    ) -> Result<Self, TaskError> {
        let task = Self {
            kind,
            n_symbols,
            min_len,
            max_len,
            source_eos: false,
        };
        task.validate()?;
        Ok(task)
    }

    /// The task with sources that end in EOS (`true`) or not: what [`sample`](Self::sample)
    /// and [`parse`](Self::parse) produce. Targets and alignments are the same either way.
    pub fn with_source_eos(mut self, source_eos: bool) -> Self {
        self.source_eos = source_eos;
        self
    }

    /// Tokens of the longest source: `max_len` symbols, and the EOS with source EOS.
    pub fn longest_source(&self) -> usize {
        self.max_len + usize::from(self.source_eos)
    }

    /// The symbols of a source: all of it, less the EOS a task with source EOS ends it with.
    pub fn symbols<'a>(&self, src: &'a [usize]) -> &'a [usize] {
        match src.split_last() {
            Some((&EOS, symbols)) if self.source_eos => symbols,
            _ => src,
        }
    }

    /// Checks the sizes.
    pub fn validate(&self) -> Result<(), TaskError> {
        if self.n_symbols < 2 {
            return Err(TaskError::Invalid(format!(
                "n_symbols must be at least 2, got {}",
                self.n_symbols
            )));
        }
        if self.min_len == 0 || self.min_len > self.max_len {
            return Err(TaskError::Invalid(format!(
                "lengths must satisfy 1 <= min_len <= max_len, got min_len {} and max_len {}",
                self.min_len, self.max_len
            )));
        }
        Ok(())
    }

    /// The smallest model for this task's tokens ([`TransformerConfig::tiny`]), with positions
    /// for its longest target and EOS (and source and EOS): for tests and examples.
    pub fn tiny_model(&self) -> TransformerConfig {
        TransformerConfig::tiny(self.vocab_size(), self.vocab_size())
            .with_max_len(self.longest_source() + 2)
    }

    /// Vocabulary size: the symbols and the special tokens.
    pub fn vocab_size(&self) -> usize {
        self.n_symbols + N_SPECIAL
    }

    /// The target for a source (token ids; a source EOS is no symbol and stays out).
    pub fn target(&self, src: &[usize]) -> Vec<usize> {
        let mut tgt = self.symbols(src).to_vec();
        match self.kind {
            TaskKind::Copy => {}
            TaskKind::Reverse => tgt.reverse(),
            TaskKind::Sort => tgt.sort_unstable(),
        }
        tgt
    }

    /// For each target position, the source position whose symbol it is: `i` for copy,
    /// `n − 1 − i` for reverse, and for sort the position of the `i`-th smallest symbol (ties
    /// in source order). The ground truth that cross-attention alignment is scored against.
    pub fn alignment(&self, src: &[usize]) -> Vec<usize> {
        let src = self.symbols(src);
        let n = src.len();
        match self.kind {
            TaskKind::Copy => (0..n).collect(),
            TaskKind::Reverse => (0..n).rev().collect(),
            TaskKind::Sort => {
                let mut order: Vec<usize> = (0..n).collect();
                order.sort_by_key(|&i| src[i]); // stable: ties keep source order
                order
            }
        }
    }

    /// One random example: `min_len` to `max_len` symbols (and EOS with source EOS).
    pub fn sample(&self, rng: &mut StdRng) -> Example {
        let len = rng.random_range(self.min_len..=self.max_len);
        let mut src: Vec<usize> = (0..len)
            .map(|_| rng.random_range(0..self.n_symbols) + N_SPECIAL)
            .collect();
        let tgt = self.target(&src);
        if self.source_eos {
            src.push(EOS);
        }
        Example { src, tgt }
    }

    /// `count` random examples from `seed`: the same seed gives the same examples.
    pub fn samples(&self, count: usize, seed: u64) -> Vec<Example> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..count).map(|_| self.sample(&mut rng)).collect()
    }

    /// Parses whitespace-separated symbols (`"3 1 4 1 5"`) into source token ids: EOS after
    /// them with source EOS, except after none (an empty line stays empty, for the caller to
    /// refuse).
    pub fn parse(&self, line: &str) -> Result<Vec<usize>, TaskError> {
        let mut ids = self.parse_symbols(line)?;
        if self.source_eos && !ids.is_empty() {
            ids.push(EOS);
        }
        Ok(ids)
    }

    /// Parses whitespace-separated symbols into their token ids, and nothing else: a target.
    pub fn parse_symbols(&self, line: &str) -> Result<Vec<usize>, TaskError> {
        line.split_whitespace()
            .map(|token| match token.parse::<usize>() {
                Ok(symbol) if symbol < self.n_symbols => Ok(symbol + N_SPECIAL),
                _ => Err(TaskError::UnknownSymbol {
                    token: token.to_string(),
                    max: self.n_symbols - 1,
                }),
            })
            .collect()
    }

    /// Writes token ids as symbols; special tokens (which a model may emit) by name.
    pub fn format(&self, ids: &[usize]) -> String {
        ids.iter()
            .map(|&id| self.token_label(id))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// One token id as text: its symbol, or `<pad>`, `<bos>`, `<eos>`.
    pub fn token_label(&self, id: usize) -> String {
        match id {
            PAD => "<pad>".to_string(),
            BOS => "<bos>".to_string(),
            EOS => "<eos>".to_string(),
            id => (id - N_SPECIAL).to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_copied_reversed_and_sorted() {
        let src = [5, 3, 4];
        let task = |kind| Task::new(kind, 5, 1, 4).unwrap();
        assert_eq!(task(TaskKind::Copy).target(&src), [5, 3, 4]);
        assert_eq!(task(TaskKind::Reverse).target(&src), [4, 3, 5]);
        assert_eq!(task(TaskKind::Sort).target(&src), [3, 4, 5]);
    }

    #[test]
    fn samples_respect_lengths_and_symbols_and_repeat_by_seed() {
        let task = Task::new(TaskKind::Reverse, 4, 2, 5).unwrap();
        let examples = task.samples(200, 7);
        for ex in &examples {
            assert!((2..=5).contains(&ex.src.len()));
            assert!(
                ex.src
                    .iter()
                    .all(|&id| (N_SPECIAL..N_SPECIAL + 4).contains(&id))
            );
            assert_eq!(ex.tgt, task.target(&ex.src));
        }
        assert_eq!(examples, task.samples(200, 7));
        assert_ne!(examples, task.samples(200, 8));
    }

    #[test]
    fn parse_and_format_round_trip_and_bad_symbols_are_named() {
        let task = Task::new(TaskKind::Copy, 10, 1, 8).unwrap();
        let ids = task.parse(" 3 1  4 1 5 ").unwrap();
        assert_eq!(ids, [6, 4, 7, 4, 8]);
        assert_eq!(task.format(&ids), "3 1 4 1 5");
        let err = task.parse("3 x 4").unwrap_err();
        assert_eq!(
            err.to_string(),
            "'x' is not a symbol of this task: symbols are the integers 0 to 9"
        );
        assert!(task.parse("10").is_err());
    }

    #[test]
    fn invalid_tasks_are_refused() {
        assert!(Task::new(TaskKind::Copy, 1, 1, 4).is_err());
        assert!(Task::new(TaskKind::Copy, 5, 0, 4).is_err());
        assert!(Task::new(TaskKind::Copy, 5, 5, 4).is_err());
    }

    #[test]
    fn alignments_point_at_the_source_symbol_each_target_position_holds() {
        for kind in [TaskKind::Copy, TaskKind::Reverse, TaskKind::Sort] {
            let task = Task::new(kind, 10, 1, 12).unwrap();
            for example in task.samples(20, 3) {
                let alignment = task.alignment(&example.src);
                let pointed: Vec<usize> = alignment.iter().map(|&j| example.src[j]).collect();
                assert_eq!(pointed, example.tgt, "{kind:?}");
            }
        }
        let reverse = Task::new(TaskKind::Reverse, 10, 1, 12).unwrap();
        assert_eq!(reverse.alignment(&[5, 6, 7]), [2, 1, 0]);
        let sort = Task::new(TaskKind::Sort, 10, 1, 12).unwrap();
        assert_eq!(sort.alignment(&[7, 5, 7, 3]), [3, 1, 0, 2]);
    }

    #[test]
    fn source_eos_ends_sources_and_changes_no_target_or_alignment() {
        let plain = Task::new(TaskKind::Reverse, 10, 1, 12).unwrap();
        let with_eos = plain.clone().with_source_eos(true);
        assert_eq!(with_eos.parse("3 1 4").unwrap(), [6, 4, 7, EOS]);
        assert_eq!(with_eos.parse_symbols("3 1 4").unwrap(), [6, 4, 7]);
        assert!(with_eos.parse(" ").unwrap().is_empty());
        assert_eq!(with_eos.target(&[6, 4, 7, EOS]), [7, 4, 6]);
        assert_eq!(with_eos.alignment(&[6, 4, 7, EOS]), [2, 1, 0]);
        // Without the option an EOS is not stripped: it is no symbol of a plain source.
        assert_eq!(plain.symbols(&[6, EOS]), [6, EOS]);
        // The same draws: the sources differ by the EOS alone.
        for (a, b) in plain.samples(50, 9).iter().zip(with_eos.samples(50, 9)) {
            assert_eq!([a.src.as_slice(), &[EOS]].concat(), b.src);
            assert_eq!(a.tgt, b.tgt);
        }
        // Saved before the option existed: no source EOS.
        let old = r#"{"kind":"copy","n_symbols":5,"min_len":1,"max_len":4}"#;
        let task: Task = serde_json::from_str(old).unwrap();
        assert!(!task.source_eos);
    }
}
