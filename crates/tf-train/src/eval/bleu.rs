//! Corpus BLEU exactly as sacreBLEU 2.x computes it by default: the `13a` tokenizer
//! (mteval-v13a's), case-sensitive, one reference per segment, n-grams up to 4, exponential
//! smoothing (mteval's "NIST" method 3), brevity penalty.
//!
//! No crate implements sacreBLEU's `13a` tokenizer to the letter, so it is written here after
//! sacreBLEU's `tokenizer_13a.py` and `tokenizer_re.py`, with the same four regular expressions
//! (the `regex` crate's leftmost, non-overlapping replacement is Python's `re.sub`). The
//! committed fixtures (`tests/fixtures/make_bleu_fixtures.py`) hold both to sacreBLEU.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;

/// The highest n-gram order.
pub const MAX_ORDER: usize = 4;

/// sacreBLEU's four substitutions, in order.
static RULES: LazyLock<[(Regex, &'static str); 4]> = LazyLock::new(|| {
    let rule =
        |pattern: &str, replacement| (Regex::new(pattern).expect("valid pattern"), replacement);
    [
        // Punctuation and symbols of the ASCII range become tokens of their own.
        rule(r"([\{-~\[-` -&\(-\+:-@/])", " $1 "),
        // Period and comma unless preceded by a digit …
        rule(r"([^0-9])([\.,])", "$1 $2 "),
        // … or followed by one.
        rule(r"([\.,])([^0-9])", " $1 $2"),
        // A dash after a digit.
        rule(r"([0-9])(-)", "$1 $2 "),
    ]
});

/// Python's `str.isspace`: Unicode white space, plus the four ASCII information separators.
fn is_python_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The `13a` tokenization of one segment (after sacreBLEU's `rstrip`).
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line
        .trim_end_matches(is_python_space)
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (pattern, replacement) in RULES.iter() {
        line = pattern.replace_all(&line, *replacement).into_owned();
    }
    line.split(is_python_space)
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Matched and total n-grams of each order, and lengths, summed over segments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BleuStats {
    /// Hypothesis tokens.
    pub hyp_len: usize,
    /// Reference tokens.
    pub ref_len: usize,
    /// n-grams of the hypothesis found in the reference (clipped), for n = 1..=4.
    pub correct: [usize; MAX_ORDER],
    /// n-grams of the hypothesis, for n = 1..=4.
    pub total: [usize; MAX_ORDER],
}

impl BleuStats {
    /// The statistics of one tokenized segment pair.
    pub fn segment(hyp: &str, reference: &str) -> Self {
        let hyp: Vec<&str> = hyp.split(' ').filter(|t| !t.is_empty()).collect();
        let reference: Vec<&str> = reference.split(' ').filter(|t| !t.is_empty()).collect();
        let mut stats = Self {
            hyp_len: hyp.len(),
            ref_len: reference.len(),
            ..Self::default()
        };
        for n in 1..=MAX_ORDER {
            let mut ref_counts: HashMap<&[&str], usize> = HashMap::new();
            for gram in reference.windows(n) {
                *ref_counts.entry(gram).or_default() += 1;
            }
            let mut hyp_counts: HashMap<&[&str], usize> = HashMap::new();
            for gram in hyp.windows(n) {
                *hyp_counts.entry(gram).or_default() += 1;
            }
            stats.total[n - 1] = hyp.len().saturating_sub(n - 1);
            stats.correct[n - 1] = hyp_counts
                .iter()
                .map(|(gram, &count)| count.min(ref_counts.get(gram).copied().unwrap_or(0)))
                .sum();
        }
        stats
    }

    fn add(&mut self, other: &Self) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
    }
}

/// A corpus BLEU score with what sacreBLEU prints beside it.
#[derive(Clone, Debug, PartialEq)]
pub struct BleuScore {
    /// BLEU, 0 to 100.
    pub score: f64,
    /// n-gram precisions in percent (smoothed), n = 1..=4.
    pub precisions: [f64; MAX_ORDER],
    /// Brevity penalty.
    pub brevity_penalty: f64,
    /// The summed statistics.
    pub stats: BleuStats,
}

impl BleuScore {
    /// Hypothesis length over reference length.
    pub fn ratio(&self) -> f64 {
        if self.stats.ref_len == 0 {
            0.0
        } else {
            self.stats.hyp_len as f64 / self.stats.ref_len as f64
        }
    }

    /// sacreBLEU's `compute_bleu` with `smooth_method='exp'`, `effective_order=False`.
    pub fn from_stats(stats: BleuStats) -> Self {
        let (hyp_len, ref_len) = (stats.hyp_len as f64, stats.ref_len as f64);
        let brevity_penalty = if hyp_len < ref_len {
            if hyp_len > 0.0 {
                (1.0 - ref_len / hyp_len).exp()
            } else {
                0.0
            }
        } else {
            1.0
        };
        let mut precisions = [0.0; MAX_ORDER];
        if stats.correct.iter().all(|&c| c == 0) {
            return Self {
                score: 0.0,
                precisions,
                brevity_penalty,
                stats,
            };
        }
        let mut smooth = 1.0;
        for ((precision, &correct), &total) in
            precisions.iter_mut().zip(&stats.correct).zip(&stats.total)
        {
            if total == 0 {
                break;
            }
            *precision = if correct == 0 {
                smooth *= 2.0;
                100.0 / (smooth * total as f64)
            } else {
                100.0 * correct as f64 / total as f64
            };
        }
        // sacreBLEU's `my_log`: log(0) is floored to -9999999999.
        let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
        let mean_log = precisions.iter().map(|&p| log(p)).sum::<f64>() / MAX_ORDER as f64;
        Self {
            score: brevity_penalty * mean_log.exp(),
            precisions,
            brevity_penalty,
            stats,
        }
    }
}

impl fmt::Display for BleuScore {
    /// `BLEU = 44.97 78.4/54.0/37.3/25.9 (BP = 1.000 ratio = 1.027 hyp_len = 5373 ref_len = 5231)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let precisions: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        write!(
            f,
            "BLEU = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            precisions.join("/"),
            self.brevity_penalty,
            self.ratio(),
            self.stats.hyp_len,
            self.stats.ref_len
        )
    }
}

/// Why two corpora cannot be scored against each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BleuError {
    /// Line N of one belongs to line N of the other: the counts must agree.
    #[error("{hyps} hypotheses but {refs} references: they must pair up line by line")]
    LineCounts {
        /// Hypothesis lines.
        hyps: usize,
        /// Reference lines.
        refs: usize,
    },
}

/// Corpus BLEU of `hyps` against one reference each, as `sacrebleu.corpus_bleu(hyps, [refs])`.
pub fn corpus_bleu<S: AsRef<str>, T: AsRef<str>>(
    hyps: &[S],
    refs: &[T],
) -> Result<BleuScore, BleuError> {
    if hyps.len() != refs.len() {
        return Err(BleuError::LineCounts {
            hyps: hyps.len(),
            refs: refs.len(),
        });
    }
    let mut stats = BleuStats::default();
    for (hyp, reference) in hyps.iter().zip(refs) {
        stats.add(&BleuStats::segment(
            &tokenize_13a(hyp.as_ref()),
            &tokenize_13a(reference.as_ref()),
        ));
    }
    Ok(BleuScore::from_stats(stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenization_splits_punctuation_but_keeps_numbers() {
        assert_eq!(tokenize_13a("Hello, world!"), "Hello , world !");
        assert_eq!(
            tokenize_13a("It costs 3,50 € or 1.5."),
            "It costs 3,50 € or 1.5 ."
        );
        assert_eq!(
            tokenize_13a("1990-2000 &amp; \"quotes\""),
            "1990 - 2000 & \" quotes \""
        );
        assert_eq!(tokenize_13a("  Straße ist grün.  \n"), "Straße ist grün .");
    }

    #[test]
    fn a_perfect_match_scores_100_and_nothing_scores_0() {
        let line = ["Ein Mann fährt mit dem Fahrrad die Straße entlang ."];
        let score = corpus_bleu(&line, &line).unwrap();
        assert!((score.score - 100.0).abs() < 1e-9);
        assert_eq!(
            score.to_string(),
            "BLEU = 100.00 100.0/100.0/100.0/100.0 (BP = 1.000 ratio = 1.000 hyp_len = 10 ref_len = 10)"
        );
        let empty = corpus_bleu(&[""], &line).unwrap();
        assert_eq!(empty.score, 0.0);
        assert_eq!(empty.brevity_penalty, 0.0);
    }

    #[test]
    fn hand_computed_counts_and_smoothing() {
        // hyp "the cat the" vs ref "the cat sat": unigrams 2 clipped of 3, bigrams 1 of 2,
        // trigrams 0 of 1 (smoothed to 100 / (2 · 1)), no 4-grams (total 0 stops the loop, and
        // the missing order floors the score to 0).
        let s = BleuStats::segment("the cat the", "the cat sat");
        assert_eq!((s.correct, s.total), ([2, 1, 0, 0], [3, 2, 1, 0]));
        let score = BleuScore::from_stats(s);
        assert_eq!(score.precisions[..3], [200.0 / 3.0, 50.0, 50.0]);
        assert_eq!(score.score, 0.0);
    }

    #[test]
    fn different_line_counts_are_an_error() {
        let err = corpus_bleu(&["a"], &["a", "b"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "1 hypotheses but 2 references: they must pair up line by line"
        );
    }
}
