//! What an inspection needs to know of a model's tokens: its special ids (where decoding starts
//! and ends), and how a token id is written as text, with the source's vocabulary for source
//! tokens and the target's for the decoder's (one and the same when the vocabulary is shared).

use tf_train::data::task::SpecialIds;

/// A model's special ids and token labellers.
#[derive(Clone, Copy)]
pub struct Tokens<'a> {
    /// The decoder's start, EOS and padding.
    pub special: SpecialIds,
    /// A source token id as text.
    pub source: &'a dyn Fn(usize) -> String,
    /// A target token id as text.
    pub target: &'a dyn Fn(usize) -> String,
}

impl<'a> Tokens<'a> {
    /// A model trained here ([`SpecialIds::OURS`]) with one labeller for both sides (a shared
    /// vocabulary, a synthetic task's symbols).
    pub fn ours(label: &'a dyn Fn(usize) -> String) -> Self {
        Self {
            special: SpecialIds::OURS,
            source: label,
            target: label,
        }
    }

    /// Source tokens as text.
    pub fn sources(&self, ids: &[usize]) -> Vec<String> {
        ids.iter().map(|&id| (self.source)(id)).collect()
    }

    /// Target tokens as text.
    pub fn targets(&self, ids: &[usize]) -> Vec<String> {
        ids.iter().map(|&id| (self.target)(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_side_is_written_with_its_own_vocabulary() {
        let source = |id: usize| format!("s{id}");
        let target = |id: usize| format!("t{id}");
        let tokens = Tokens {
            special: SpecialIds::OURS,
            source: &source,
            target: &target,
        };
        assert_eq!(tokens.sources(&[1, 2]), ["s1", "s2"]);
        assert_eq!(tokens.targets(&[3]), ["t3"]);
        assert_eq!(Tokens::ours(&source).targets(&[3]), ["s3"]);
    }
}
