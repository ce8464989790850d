//! Word alignments read off attributions or cross-attention heads, and their alignment error
//! rate (Och & Ney, 2003) against a reference alignment.
//!
//! An attribution row belongs to the target token it predicts; its source columns are subword
//! tokens. Both sides are grouped into words (a subword vocabulary's token that starts with
//! `▁` starts a word, so the words are the text's whitespace-separated ones), a target word's
//! score for a source word is its tokens' mean row summed over the source word's tokens, and
//! each target word is linked to the source word it scores highest (the argmax extraction of
//! Garg et al., 2019, at the word level). Links are `(source word, target word)`, 0-based, as
//! Pharaoh's `i-j` lines (fast_align, eflomal) write them.

use std::collections::BTreeSet;

use burn::tensor::Device;
use serde::Serialize;
use tf_model::Transformer;

use crate::attention_maps::matrices;
use crate::error::{InspectError, Result};
use crate::forced::{forced, ids};
use tf_train::data::task::SpecialIds;

/// The mark a subword vocabulary puts at the start of a word.
pub const WORD_START: char = '▁';

/// A sentence pair's word alignment: a set of `(source word, target word)` links.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WordAlignment {
    links: BTreeSet<(usize, usize)>,
}

impl WordAlignment {
    /// The alignment of these `(source word, target word)` links.
    pub fn new(links: impl IntoIterator<Item = (usize, usize)>) -> Self {
        Self {
            links: links.into_iter().collect(),
        }
    }

    /// Parses a Pharaoh line, such as `0-0 1-2 2-1` (an empty line: no links).
    ///
    /// # Errors
    /// If a link is not two word indices joined by `-`.
    pub fn parse_pharaoh(line: &str) -> Result<Self> {
        let link = |pair: &str| {
            let parsed = pair
                .split_once('-')
                .and_then(|(s, t)| Some((s.parse().ok()?, t.parse().ok()?)));
            parsed.ok_or_else(|| {
                InspectError::Invalid(format!(
                    "`{pair}` is not an alignment link: write source-target word indices, such as 0-2"
                ))
            })
        };
        Ok(Self {
            links: line.split_whitespace().map(link).collect::<Result<_>>()?,
        })
    }

    /// The Pharaoh line of the links, in order.
    pub fn to_pharaoh(&self) -> String {
        self.links
            .iter()
            .map(|(s, t)| format!("{s}-{t}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The links, `(source word, target word)`, in order.
    pub fn links(&self) -> &BTreeSet<(usize, usize)> {
        &self.links
    }

    /// Links shared with `other`.
    pub fn common(&self, other: &Self) -> usize {
        self.links.intersection(&other.links).count()
    }
}

/// The word each token belongs to, from the tokens' labels: a label that starts with
/// [`WORD_START`] starts a new word, and so does the first token. Without any such mark (a
/// synthetic task's symbols) every token is a word.
pub fn words_of_tokens<S: AsRef<str>>(tokens: &[S]) -> Vec<usize> {
    let marked = tokens.iter().any(|t| t.as_ref().starts_with(WORD_START));
    let mut word = 0;
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| {
            if i > 0 && (!marked || token.as_ref().starts_with(WORD_START)) {
                word += 1;
            }
            word
        })
        .collect()
}

/// Links each target word to the source word it scores highest in `scores`
/// (`[target token][source token]`; rows past `target_words.len()`, such as EOS's, are left
/// out), the words given per token as [`words_of_tokens`] gives them.
///
/// # Errors
/// If there are fewer rows than target tokens, or a row is not as long as the source.
pub fn align_words(
    scores: &[Vec<f32>],
    source_words: &[usize],
    target_words: &[usize],
) -> Result<WordAlignment> {
    if scores.len() < target_words.len() {
        return Err(InspectError::Invalid(format!(
            "{} attribution rows for {} target tokens",
            scores.len(),
            target_words.len()
        )));
    }
    if let Some(row) = scores.iter().find(|row| row.len() != source_words.len()) {
        return Err(InspectError::Invalid(format!(
            "an attribution row of {} columns for {} source tokens",
            row.len(),
            source_words.len()
        )));
    }
    let source_count = source_words.iter().max().map_or(0, |w| w + 1);
    let target_count = target_words.iter().max().map_or(0, |w| w + 1);
    // [target word][source word]: summed over both words' tokens; the mean over the target
    // word's tokens has the same argmax.
    let mut word_scores = vec![vec![0.0f32; source_count]; target_count];
    for (row, &target_word) in scores.iter().zip(target_words) {
        for (&score, &source_word) in row.iter().zip(source_words) {
            word_scores[target_word][source_word] += score;
        }
    }
    Ok(WordAlignment::new(
        word_scores
            .iter()
            .enumerate()
            .filter_map(|(target_word, row)| {
                let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
                Some((best.0, target_word))
            }),
    ))
}

/// An alignment's agreement with a reference, over a corpus.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct AlignmentScore {
    /// Alignment error rate, `1 − 2|A ∩ R| / (|A| + |R|)` (Och & Ney's with the reference's
    /// links both sure and possible).
    pub aer: f64,
    /// `|A ∩ R| / |A|`.
    pub precision: f64,
    /// `|A ∩ R| / |R|`.
    pub recall: f64,
    /// Sentence pairs scored.
    pub sentences: usize,
}

/// Scores `predicted` against `reference`, pair by pair, counts summed over the corpus.
///
/// # Errors
/// If the two hold different numbers of sentence pairs, or neither has any link.
pub fn alignment_error_rate(
    predicted: &[WordAlignment],
    reference: &[WordAlignment],
) -> Result<AlignmentScore> {
    if predicted.len() != reference.len() {
        return Err(InspectError::Invalid(format!(
            "{} predicted alignments for {} reference ones",
            predicted.len(),
            reference.len()
        )));
    }
    let (mut common, mut links, mut reference_links) = (0usize, 0usize, 0usize);
    for (a, r) in predicted.iter().zip(reference) {
        common += a.common(r);
        links += a.links.len();
        reference_links += r.links.len();
    }
    if links + reference_links == 0 {
        return Err(InspectError::Invalid("no alignment links to score".into()));
    }
    let ratio = |n: usize, d: usize| if d == 0 { 0.0 } else { n as f64 / d as f64 };
    Ok(AlignmentScore {
        aer: 1.0 - ratio(2 * common, links + reference_links),
        precision: ratio(common, links),
        recall: ratio(common, reference_links),
        sentences: predicted.len(),
    })
}

/// Every cross-attention head's weights while `target` is teacher-forced after `source`:
/// `[layer][head][target token][source token]`, a row per predicted token (EOS last).
///
/// # Errors
/// If the source is empty or the target does not fit the model's positions.
pub fn cross_attention_heads(
    model: &Transformer,
    source: &[usize],
    target: &[usize],
    special: SpecialIds,
    device: &Device,
) -> Result<Vec<Vec<Vec<Vec<f32>>>>> {
    let prefix = forced(
        model,
        source,
        Some(target),
        model.max_len(),
        special,
        device,
    )?
    .prefix;
    let out = model.forward_with_attention(ids(source, device), ids(&prefix, device), None, None);
    Ok(out.attention.cross.into_iter().map(matrices).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokens::Tokens;

    #[test]
    fn words_start_at_the_word_mark_or_at_every_symbol() {
        assert_eq!(
            words_of_tokens(&["▁Ein", "▁Mann", "▁mit", "▁Hut", ","]),
            [0, 1, 2, 3, 3]
        );
        assert_eq!(
            words_of_tokens(&["▁orange", "far", "ben", "▁Hut"]),
            [0, 0, 0, 1]
        );
        assert_eq!(words_of_tokens(&["3", "1", "4"]), [0, 1, 2]);
        assert!(words_of_tokens::<&str>(&[]).is_empty());
    }

    #[test]
    fn pharaoh_lines_round_trip_and_bad_links_are_refused() {
        let a = WordAlignment::parse_pharaoh("2-1 0-0  1-2\n").unwrap();
        assert_eq!(a.to_pharaoh(), "0-0 1-2 2-1");
        assert_eq!(
            WordAlignment::parse_pharaoh("").unwrap(),
            WordAlignment::default()
        );
        for bad in ["0-", "a-1", "1:2", "0-1-2"] {
            let err = WordAlignment::parse_pharaoh(bad).unwrap_err().to_string();
            assert!(err.contains("not an alignment link"), "{bad}: {err}");
        }
    }

    #[test]
    fn each_target_word_links_to_its_highest_scoring_source_word() {
        // Source words: "▁orange far ben" (0) and "▁Hut" (1); target words: "▁orange" (0),
        // "▁h at" (1); the last row (EOS) is left out.
        let scores = vec![
            vec![0.2, 0.2, 0.2, 0.4], // word 0 sums 0.6 against 0.4
            vec![0.1, 0.1, 0.1, 0.7], // target word 1, first token
            vec![0.3, 0.3, 0.3, 0.1], // its second: the word sums 1.2 against 0.8
            vec![0.0, 0.0, 0.0, 1.0],
        ];
        let a = align_words(&scores, &[0, 0, 0, 1], &[0, 1, 1]).unwrap();
        assert_eq!(a, WordAlignment::new([(0, 0), (0, 1)]));
        assert!(align_words(&scores[..2], &[0, 0, 0, 1], &[0, 1, 1]).is_err());
        assert!(align_words(&scores, &[0, 1], &[0]).is_err());
    }

    #[test]
    fn alignment_error_rate_counts_links_over_the_corpus() {
        let reference = [
            WordAlignment::new([(0, 0), (1, 1), (2, 2)]),
            WordAlignment::new([(0, 0)]),
        ];
        let predicted = [
            WordAlignment::new([(0, 0), (2, 1)]),
            WordAlignment::new([(0, 0), (1, 0)]),
        ];
        let score = alignment_error_rate(&predicted, &reference).unwrap();
        // 2 common links of 4 predicted and 4 reference: AER 1 - 4/8.
        assert!((score.aer - 0.5).abs() < 1e-12);
        assert!((score.precision - 0.5).abs() < 1e-12);
        assert!((score.recall - 0.5).abs() < 1e-12);
        assert_eq!(score.sentences, 2);
        let perfect = alignment_error_rate(&reference, &reference).unwrap();
        assert_eq!(perfect.aer, 0.0);
        assert!(alignment_error_rate(&predicted[..1], &reference).is_err());
        assert!(
            alignment_error_rate(&[WordAlignment::default()], &[WordAlignment::default()]).is_err()
        );
    }

    #[test]
    fn cross_attention_heads_average_to_the_attention_attribution() {
        use crate::attribution::{AttributionMethod, attribute};
        use tf_model::TransformerConfig;
        let device = Device::flex();
        device.seed(9);
        let model = TransformerConfig::tiny(12, 12)
            .with_max_len(16)
            .init(&device);
        let (source, target) = ([3, 4, 5], [6, 7]);
        let heads =
            cross_attention_heads(&model, &source, &target, SpecialIds::OURS, &device).unwrap();
        let label = |id: usize| id.to_string();
        let method = AttributionMethod::Attention;
        let last = attribute(
            &model,
            &source,
            Some(&target),
            6,
            method,
            Tokens::ours(&label),
            &device,
        )
        .unwrap();
        let layer = heads.last().unwrap();
        for (t, row) in last.source.iter().enumerate() {
            for (s, &weight) in row.iter().enumerate() {
                let mean = layer.iter().map(|h| h[t][s]).sum::<f32>() / layer.len() as f32;
                assert!((mean - weight).abs() < 1e-6, "{t},{s}: {mean} vs {weight}");
            }
        }
        for head in heads.iter().flatten() {
            assert_eq!(head.len(), target.len() + 1);
            for row in head {
                assert_eq!(row.len(), source.len());
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            }
        }
    }
}
