//! How long an output may grow: the one rule greedy decoding of translations, beam search,
//! `tf translate` and the size of a translation model's positional table all follow.

use serde::{Deserialize, Serialize};

/// The most tokens (EOS included) an output of a source of `n` tokens may have:
/// `⌊per_source_token · n⌋ + extra`, never more than the model's positions. The default,
/// `1.5 · n + 10`, is fairseq's `max_len_a`/`max_len_b` shape with room for German→English
/// length ratios (the paper §6.1 used input length + 50 on WMT).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputLimit {
    /// Tokens allowed per source token.
    pub per_source_token: f64,
    /// Tokens allowed on top.
    pub extra: usize,
}

impl Default for OutputLimit {
    fn default() -> Self {
        Self {
            per_source_token: 1.5,
            extra: 10,
        }
    }
}

impl OutputLimit {
    /// The most output tokens for a source of `src_len` tokens, with no positional limit: what a
    /// model's `max_len` must hold for sources of up to `src_len` tokens.
    pub fn tokens(&self, src_len: usize) -> usize {
        (self.per_source_token * src_len as f64) as usize + self.extra
    }

    /// The most output tokens for a source of `src_len` tokens on a model of `max_positions`
    /// positions (at least 1). The decoder's inputs are BOS and every output token but the
    /// last, so `max_positions` outputs fit.
    pub fn clamped(&self, src_len: usize, max_positions: usize) -> usize {
        self.tokens(src_len).clamp(1, max_positions.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_one_and_a_half_times_plus_ten_within_the_positions() {
        let limit = OutputLimit::default();
        assert_eq!(limit.tokens(0), 10);
        assert_eq!(limit.tokens(7), 20); // ⌊10.5⌋ + 10
        assert_eq!(limit.tokens(100), 160);
        assert_eq!(limit.clamped(100, 64), 64);
        assert_eq!(limit.clamped(0, 64), 10);
        let none = OutputLimit {
            per_source_token: 0.0,
            extra: 0,
        };
        assert_eq!(none.clamped(5, 64), 1, "at least one step");
    }
}
