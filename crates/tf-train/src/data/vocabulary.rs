//! A translation model's text ↔ ids, whichever vocabulary it has: one learned here
//! ([`SubwordVocab`]) or an imported MarianMT tokenizer ([`MarianTokenizer`]). What the
//! programs translate, score and inspect with.

use std::path::Path;

use tf_model::BeamRanking;

use crate::data::marian_tokenizer::{self, MarianTokenizer};
use crate::data::subword::SubwordVocab;
use crate::data::task::SpecialIds;
use crate::error::{self, Result};
use crate::store::atomic::write_atomic;

/// A translation model's vocabulary.
#[derive(Debug)]
pub enum TranslationVocab {
    /// Our joint BPE vocabulary (`tokenizer.json`); sources carry no EOS.
    Learned(Box<SubwordVocab>),
    /// A MarianMT tokenizer; sources end in its EOS, as `MarianTokenizer` writes them.
    Marian {
        /// The tokenizer.
        tokenizer: Box<MarianTokenizer>,
        /// The model's special ids: the pad token starts decoding; `forbidden` as its
        /// `generation_config.json`'s `bad_words_ids` say.
        special: SpecialIds,
    },
}

impl From<SubwordVocab> for TranslationVocab {
    fn from(vocab: SubwordVocab) -> Self {
        Self::Learned(Box::new(vocab))
    }
}

impl From<MarianTokenizer> for TranslationVocab {
    /// The tokenizer with MarianMT's special ids: decoding starts from its pad token.
    fn from(tokenizer: MarianTokenizer) -> Self {
        let ids = tokenizer.special_ids();
        let special = SpecialIds {
            pad: ids.pad,
            bos: ids.pad,
            eos: ids.eos,
            forbidden: None,
        };
        Self::marian(tokenizer, special)
    }
}

impl TranslationVocab {
    /// A MarianMT tokenizer with the special ids its model's configuration gives.
    pub fn marian(tokenizer: MarianTokenizer, special: SpecialIds) -> Self {
        Self::Marian {
            tokenizer: Box::new(tokenizer),
            special,
        }
    }

    /// The ids of a source sentence, as the model reads them.
    pub fn encode_source(&self, text: &str) -> Result<Vec<usize>> {
        match self {
            Self::Learned(vocab) => vocab.encode(text),
            Self::Marian { tokenizer, .. } => Ok(tokenizer.encode_source(text)),
        }
    }

    /// The ids of a target sentence, without BOS or EOS.
    pub fn encode_target(&self, text: &str) -> Result<Vec<usize>> {
        match self {
            Self::Learned(vocab) => vocab.encode(text),
            Self::Marian { tokenizer, .. } => {
                let mut ids = tokenizer.encode_target(text);
                ids.pop(); // its EOS
                Ok(ids)
            }
        }
    }

    /// Output ids as text, special tokens left out.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        match self {
            Self::Learned(vocab) => vocab.decode(ids),
            Self::Marian { tokenizer, .. } => Ok(tokenizer.decode_target(ids)),
        }
    }

    /// A source token as text, for labels.
    pub fn source_token(&self, id: usize) -> String {
        match self {
            Self::Learned(vocab) => vocab.token(id),
            Self::Marian { tokenizer, .. } => tokenizer.source_piece(id),
        }
    }

    /// A target token as text, for labels.
    pub fn target_token(&self, id: usize) -> String {
        match self {
            Self::Learned(vocab) => vocab.token(id),
            Self::Marian { tokenizer, .. } => tokenizer.target_piece(id),
        }
    }

    /// The vocabulary learned here, which training needs; an error for an imported one.
    pub fn learned(&self) -> Result<&SubwordVocab> {
        match self {
            Self::Learned(vocab) => Ok(vocab.as_ref()),
            Self::Marian { .. } => Err(crate::error::Error::invalid(
                "the model's vocabulary is an imported MarianMT tokenizer: training it further \
                 is not supported (translate, score and inspect it instead)",
            )),
        }
    }

    /// Whether source and target tokens share one set of ids.
    pub fn shares_ids(&self) -> bool {
        match self {
            Self::Learned(_) => true,
            Self::Marian { tokenizer, .. } => !tokenizer.has_target_vocab(),
        }
    }

    /// Ids on the larger side: every source and target id is below it.
    pub fn len(&self) -> usize {
        match self {
            Self::Learned(vocab) => vocab.len(),
            Self::Marian { tokenizer, .. } => tokenizer
                .source_vocab_size()
                .max(tokenizer.target_vocab_size()),
        }
    }

    /// Whether it has no ids (never, once loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ids of padding, the decoder's start and EOS.
    pub fn special_ids(&self) -> SpecialIds {
        match self {
            Self::Learned(_) => SpecialIds::OURS,
            Self::Marian { special, .. } => *special,
        }
    }

    /// How beam search ranks hypotheses for models with this vocabulary: GNMT's for ours,
    /// `transformers`' (EOS forced at the length limit, as opus-mt's `forced_eos_token_id`) for
    /// an imported MarianMT model, so that `tf translate` decodes as `generate` does.
    pub fn beam_ranking(&self) -> BeamRanking {
        match self {
            Self::Learned(_) => BeamRanking::Gnmt,
            Self::Marian { .. } => BeamRanking::Transformers { forced_eos: true },
        }
    }

    /// Writes the vocabulary's files into the model directory `dir` (which exists).
    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Self::Learned(vocab) => vocab.save(&dir.join(crate::store::model_dir::TOKENIZER_FILE)),
            Self::Marian { tokenizer, .. } => {
                for name in marian_tokenizer::FILES {
                    let source = tokenizer.dir().join(name);
                    if source.is_file() {
                        write_atomic(&dir.join(name), &error::read(&source)?)?;
                    }
                }
                Ok(())
            }
        }
    }
}
