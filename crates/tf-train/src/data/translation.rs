//! Translation as a task: a parallel corpus on disk (Multi30k's layout, [`corpus`]), a joint
//! subword vocabulary learned from its training split ([`SubwordVocab`]), and the pairs as token
//! ids, ready for token-budget batches ([`bucketing`](crate::data::bucketing)).
//!
//! The task records where the data is and how it is cut; the vocabulary itself lives in the
//! model directory (`tokenizer.json`, or an imported MarianMT model's SentencePiece files), so a
//! model carries the exact vocabulary it reads and writes.

use std::path::PathBuf;

use crate::error::{Result, ResultExt, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::data::corpus::{self, ParallelCorpus};
use crate::data::subword::{SPECIAL_TOKENS, SubwordVocab};
use crate::data::task::{Example, SpecialIds};
use crate::data::vocabulary::TranslationVocab;

/// Where a translation model's data is and how it is cut into tokens and batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TranslationTask {
    /// Directory of the corpus: `SPLIT.LANG` or `SPLIT.LANG.gz` files.
    pub data: PathBuf,
    /// Source language suffix (`de`).
    pub src: String,
    /// Target language suffix (`en`).
    pub tgt: String,
    /// Split the model and its vocabulary are trained on.
    pub train_split: String,
    /// Split validation loss and BLEU are measured on.
    pub valid_split: String,
    /// Size of the (joint) subword vocabulary, special tokens included.
    pub vocab_size: usize,
    /// Longest training source or target, in subword tokens; longer pairs are skipped (and
    /// counted in the log).
    pub max_len: usize,
    /// Padded tokens per batch on either side (the token budget of
    /// [`token_batches`](crate::data::bucketing::token_batches)).
    pub batch_tokens: usize,
    /// Where the subword vocabulary comes from. Default: learned here.
    #[serde(default)]
    pub vocabulary: VocabularySource,
}

/// Where a translation model's subword vocabulary comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum VocabularySource {
    /// One BPE vocabulary of both languages, `vocab_size` tokens, learned from the training
    /// split ([`SubwordVocab`], `tokenizer.json`), with our special ids.
    #[default]
    Learned,
    /// A MarianMT tokenizer imported with its model (`tf import-marian`): `vocab_size` source
    /// ids, `tgt_vocab_size` target ids, its own special ids.
    Marian {
        /// Target ids (`vocab_size` when the vocabulary is shared).
        tgt_vocab_size: usize,
        /// Its pad (the decoder's start) and EOS.
        special: SpecialIds,
    },
}

impl VocabularySource {
    /// The special ids of models with this vocabulary.
    pub fn special_ids(&self) -> SpecialIds {
        match self {
            Self::Learned => SpecialIds::OURS,
            Self::Marian { special, .. } => *special,
        }
    }
}

/// Sentence pairs as token ids, and what was left out.
#[derive(Clone, Debug, Default)]
pub struct EncodedPairs {
    /// Pairs whose source and target both fit `max_len` and are not empty.
    pub examples: Vec<Example>,
    /// Line numbers (0-based) of the pairs in `examples`.
    pub lines: Vec<usize>,
    /// Pairs skipped for being longer than `max_len` tokens on either side.
    pub too_long: usize,
    /// Pairs skipped for an empty source or target.
    pub empty: usize,
}

impl TranslationTask {
    /// Checks the sizes and names.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            !self.src.is_empty() && !self.tgt.is_empty(),
            "the source and target languages must be named"
        );
        ensure!(
            self.src != self.tgt,
            "source and target language are both {:?}",
            self.src
        );
        ensure!(
            self.vocab_size > SPECIAL_TOKENS.len(),
            "the vocabulary needs more than its {} special tokens, got {}",
            SPECIAL_TOKENS.len(),
            self.vocab_size
        );
        ensure!(self.max_len > 0, "max_len must be at least 1 token");
        ensure!(
            self.batch_tokens > self.max_len,
            "a batch of {} tokens cannot hold one pair of max_len {} (+ EOS)",
            self.batch_tokens,
            self.max_len
        );
        Ok(())
    }

    /// Source and target vocabulary sizes.
    pub fn vocab_sizes(&self) -> (usize, usize) {
        match self.vocabulary {
            VocabularySource::Learned => (self.vocab_size, self.vocab_size),
            VocabularySource::Marian { tgt_vocab_size, .. } => (self.vocab_size, tgt_vocab_size),
        }
    }

    /// `src→tgt`, for messages.
    pub fn direction(&self) -> String {
        format!("{}→{}", self.src, self.tgt)
    }

    /// Reads one split of the corpus.
    pub fn read(&self, split: &str) -> Result<ParallelCorpus> {
        corpus::read_split(&self.data, split, &self.src, &self.tgt)
    }

    /// Learns a joint BPE vocabulary of `vocab_size` tokens from both sides of `corpus` (the
    /// training split); subwords seen fewer than `min_frequency` times are not merged.
    pub fn learn_vocabulary(
        &self,
        corpus: &ParallelCorpus,
        min_frequency: u64,
    ) -> Result<SubwordVocab> {
        let sentences: Vec<&String> = corpus.source.iter().chain(&corpus.target).collect();
        SubwordVocab::train(&sentences, self.vocab_size, min_frequency)
            .context("cannot learn the subword vocabulary")
    }
}

/// Encodes every pair of `corpus`, keeping those of 1 to `max_len` tokens on both sides.
pub fn encode_pairs(
    vocab: &TranslationVocab,
    corpus: &ParallelCorpus,
    max_len: usize,
) -> Result<EncodedPairs> {
    let mut pairs = EncodedPairs::default();
    for (line, (source, target)) in corpus.source.iter().zip(&corpus.target).enumerate() {
        let src = vocab
            .encode_source(source)
            .with_context(|| format!("source line {}", line + 1))?;
        let tgt = vocab
            .encode_target(target)
            .with_context(|| format!("target line {}", line + 1))?;
        if src.is_empty() || tgt.is_empty() {
            pairs.empty += 1;
        } else if src.len() > max_len || tgt.len() > max_len {
            pairs.too_long += 1;
        } else {
            pairs.examples.push(Example { src, tgt });
            pairs.lines.push(line);
        }
    }
    Ok(pairs)
}

/// A translation run's data, tokenized: the training pairs, the validation pairs (for the loss)
/// and the first validation sentences with their raw references (for BLEU).
#[derive(Clone, Debug)]
pub struct TranslationData {
    /// Training pairs.
    pub train: EncodedPairs,
    /// Validation pairs within `max_len`.
    pub valid: EncodedPairs,
    /// Source sentences BLEU is measured on.
    pub bleu_sources: Vec<String>,
    /// Their references, untokenized.
    pub bleu_references: Vec<String>,
}

impl TranslationData {
    /// Reads and encodes the task's splits with `vocab`; BLEU uses the first `bleu_sentences`
    /// validation pairs (all of them, whatever their length).
    pub fn load(
        task: &TranslationTask,
        vocab: &TranslationVocab,
        bleu_sentences: usize,
    ) -> Result<Self> {
        let train_corpus = task.read(&task.train_split)?;
        let train = encode_pairs(vocab, &train_corpus, task.max_len)?;
        if train.examples.is_empty() {
            bail!(
                "no training pair of {} has 1 to {} tokens on both sides",
                task.train_split,
                task.max_len
            );
        }
        let valid_corpus = task.read(&task.valid_split)?;
        let valid = encode_pairs(vocab, &valid_corpus, task.max_len)?;
        let n = bleu_sentences.min(valid_corpus.len());
        Ok(Self {
            train,
            valid,
            bleu_sources: valid_corpus.source[..n].to_vec(),
            bleu_references: valid_corpus.target[..n].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{temp_dir, translation_task as task};

    #[test]
    fn pairs_stay_paired_and_over_long_or_empty_ones_are_counted() {
        let dir = temp_dir("translation-pairs");
        std::fs::write(
            dir.join("train.de"),
            "Ein Hund läuft.\n\nZwei Männer gehen über die große Straße und sehen viele Häuser.\nDie Frau lacht.\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("train.en"),
            "A dog runs.\nNothing.\nTwo men walk.\nThe woman laughs.\n",
        )
        .unwrap();
        let task = task(dir.clone());
        let corpus = task.read("train").unwrap();
        let vocab = TranslationVocab::from(task.learn_vocabulary(&corpus, 1).unwrap());
        let pairs = encode_pairs(&vocab, &corpus, 8).unwrap();
        assert_eq!(pairs.lines, [0, 3]);
        assert_eq!((pairs.empty, pairs.too_long), (1, 1));
        for (example, &line) in pairs.examples.iter().zip(&pairs.lines) {
            assert_eq!(vocab.decode(&example.src).unwrap(), corpus.source[line]);
            assert_eq!(vocab.decode(&example.tgt).unwrap(), corpus.target[line]);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn broken_corpora_are_errors_naming_the_file() {
        let dir = temp_dir("translation-errors");
        let task = task(dir.clone());
        let err = task.read("train").unwrap_err().to_string();
        assert!(
            err.contains("missing file") && err.contains("train.de"),
            "{err}"
        );

        std::fs::write(dir.join("train.de"), "eins\nzwei\n").unwrap();
        std::fs::write(dir.join("train.en"), "one\n").unwrap();
        let err = task.read("train").unwrap_err().to_string();
        assert!(err.contains("train.de has 2 lines but"), "{err}");

        std::fs::write(dir.join("train.en"), "").unwrap();
        let err = task.read("train").unwrap_err().to_string();
        assert!(err.contains("train.en is empty"), "{err}");

        std::fs::write(dir.join("train.en"), b"one\n\xff\n").unwrap();
        let err = task.read("train").unwrap_err().to_string();
        assert!(err.contains("train.en: line 2 is not valid UTF-8"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn invalid_tasks_are_refused() {
        let good = task(PathBuf::from("."));
        assert!(good.validate().is_ok());
        let same = TranslationTask {
            tgt: "de".into(),
            ..good.clone()
        };
        assert!(same.validate().is_err());
        let tiny_batch = TranslationTask {
            batch_tokens: 5,
            ..good.clone()
        };
        assert!(tiny_batch.validate().is_err());
        let tiny_vocab = TranslationTask {
            vocab_size: 4,
            ..good
        };
        assert!(tiny_vocab.validate().is_err());
    }
}
