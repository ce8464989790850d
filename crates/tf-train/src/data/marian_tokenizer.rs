//! The tokenizer of the MarianMT (opus-mt) translators, as `transformers`' `MarianTokenizer`
//! saves it (`source.spm`, `target.spm`, `vocab.json`, and `target_vocab.json` with separate
//! vocabularies): text split into pieces by the source or target SentencePiece model, pieces
//! numbered by `vocab.json` (not by the SentencePiece models, whose ids differ), EOS appended.
//!
//! What `MarianTokenizer` does, and so this does too:
//! - the special tokens (`</s>`, `<unk>`, `<pad>`) written literally in the text are cut out
//!   first and become their own ids; each stretch between them is tokenized on its own;
//! - a stretch that starts with a language code `>>xx<<` keeps it as one token (the id of that
//!   code in `vocab.json`, `<unk>` if it has none);
//! - a piece `vocab.json` lacks (the characters no piece covers, a run of them as one piece) is
//!   `<unk>`;
//! - decoding drops the special tokens, joins the pieces with the source model when the
//!   vocabulary is shared and the target one otherwise, and trims the ends.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;

use crate::data::sentencepiece::{SPACE_SYMBOL, SentencePiece};
use crate::error::{self, Error, Result, ensure};

/// The files of a saved `MarianTokenizer`.
pub const SOURCE_SPM: &str = "source.spm";
/// The target side's SentencePiece model.
pub const TARGET_SPM: &str = "target.spm";
/// Piece → id, of both sides unless there is a target one.
pub const VOCAB: &str = "vocab.json";
/// Piece → id of the target side, with separate vocabularies.
pub const TARGET_VOCAB: &str = "target_vocab.json";
/// The special tokens' spellings and `separate_vocabs`.
pub const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Every file of a saved tokenizer, the optional ones (`target_vocab.json`,
/// `tokenizer_config.json`) included.
pub const FILES: [&str; 5] = [
    SOURCE_SPM,
    TARGET_SPM,
    VOCAB,
    TARGET_VOCAB,
    TOKENIZER_CONFIG,
];

/// A `vocab.json`: piece → id, and back.
#[derive(Clone, Debug)]
struct Vocab {
    ids: HashMap<String, usize>,
    pieces: HashMap<usize, String>,
}

impl Vocab {
    fn load(path: &Path) -> Result<Self> {
        let text = error::read_to_string(path)?;
        let ids: HashMap<String, usize> = serde_json::from_str(&text).map_err(|err| {
            Error::format(
                path,
                "is not a vocabulary (a JSON object of piece → id)",
                err,
            )
        })?;
        ensure!(!ids.is_empty(), "{} holds no pieces", path.display());
        let pieces = ids.iter().map(|(piece, &id)| (id, piece.clone())).collect();
        Ok(Self { ids, pieces })
    }

    fn id(&self, piece: &str) -> Option<usize> {
        self.ids.get(piece).copied()
    }

    fn len(&self) -> usize {
        self.ids.values().max().map_or(0, |&max| max + 1)
    }
}

/// The ids of the special tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MarianSpecialIds {
    /// `</s>`, appended to every encoded text.
    pub eos: usize,
    /// `<unk>`.
    pub unk: usize,
    /// `<pad>`, also the decoder's start token.
    pub pad: usize,
}

/// A saved `MarianTokenizer`.
#[derive(Debug)]
pub struct MarianTokenizer {
    dir: std::path::PathBuf,
    source: SentencePiece,
    target: SentencePiece,
    vocab: Vocab,
    target_vocab: Option<Vocab>,
    /// The special tokens' spellings: EOS, UNK, PAD.
    specials: [String; 3],
    ids: MarianSpecialIds,
}

impl MarianTokenizer {
    /// Reads the tokenizer files in `dir`.
    ///
    /// # Errors
    /// If a file is missing or damaged (naming it), or a special token is not in the
    /// vocabulary.
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join(TOKENIZER_CONFIG);
        let config = if config_path.is_file() {
            serde_json::from_str::<Value>(&error::read_to_string(&config_path)?)
                .map_err(|err| Error::format(&config_path, "is not JSON", err))?
        } else {
            Value::Null
        };
        let spelling = |key: &str, default: &str| match &config[key] {
            Value::String(text) => text.clone(),
            Value::Object(token) => token["content"].as_str().unwrap_or(default).to_string(),
            _ => default.to_string(),
        };
        let specials = [
            spelling("eos_token", "</s>"),
            spelling("unk_token", "<unk>"),
            spelling("pad_token", "<pad>"),
        ];
        let separate = config["separate_vocabs"].as_bool().unwrap_or(false);
        let vocab = Vocab::load(&dir.join(VOCAB))?;
        let target_vocab = if separate {
            Some(Vocab::load(&dir.join(TARGET_VOCAB))?)
        } else {
            None
        };
        let id = |vocab: &Vocab, token: &str| {
            vocab.id(token).ok_or_else(|| {
                Error::invalid(format!(
                    "the special token {token:?} is not in {}",
                    dir.join(VOCAB).display()
                ))
            })
        };
        let ids = MarianSpecialIds {
            eos: id(&vocab, &specials[0])?,
            unk: id(&vocab, &specials[1])?,
            pad: id(&vocab, &specials[2])?,
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            source: SentencePiece::load(&dir.join(SOURCE_SPM))?,
            target: SentencePiece::load(&dir.join(TARGET_SPM))?,
            vocab,
            target_vocab,
            specials,
            ids,
        })
    }

    /// The directory its files were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The special tokens' ids.
    pub fn special_ids(&self) -> MarianSpecialIds {
        self.ids
    }

    /// Ids of the source side (the size of `vocab.json`).
    pub fn source_vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// Ids of the target side.
    pub fn target_vocab_size(&self) -> usize {
        self.target_vocab.as_ref().unwrap_or(&self.vocab).len()
    }

    /// Whether the target side has a vocabulary of its own (`target_vocab.json`).
    pub fn has_target_vocab(&self) -> bool {
        self.target_vocab.is_some()
    }

    /// A source sentence's ids, EOS last.
    pub fn encode_source(&self, text: &str) -> Vec<usize> {
        self.encode(text, &self.source, &self.vocab)
    }

    /// A target sentence's ids, EOS last (the labels of a training pair).
    pub fn encode_target(&self, text: &str) -> Vec<usize> {
        let vocab = self.target_vocab.as_ref().unwrap_or(&self.vocab);
        self.encode(text, &self.target, vocab)
    }

    /// A source id's piece (`<unk>`'s for an id `vocab.json` lacks).
    pub fn source_piece(&self, id: usize) -> String {
        self.piece(&self.vocab, id)
    }

    /// A target id's piece.
    pub fn target_piece(&self, id: usize) -> String {
        self.piece(self.target_vocab.as_ref().unwrap_or(&self.vocab), id)
    }

    fn piece(&self, vocab: &Vocab, id: usize) -> String {
        vocab
            .pieces
            .get(&id)
            .cloned()
            .unwrap_or_else(|| self.specials[1].clone())
    }

    /// Target ids back to text, special tokens dropped.
    pub fn decode_target(&self, ids: &[usize]) -> String {
        let (vocab, model) = match &self.target_vocab {
            Some(vocab) => (vocab, &self.target),
            None => (&self.vocab, &self.source),
        };
        let special = [self.ids.eos, self.ids.unk, self.ids.pad];
        let pieces: Vec<String> = ids
            .iter()
            .filter(|id| !special.contains(id))
            .map(|id| match vocab.pieces.get(id) {
                Some(piece) => piece.clone(),
                // Ids past `vocab.json` name SentencePiece pieces, as `MarianTokenizer` reads
                // them.
                None => model.pieces().get(*id).cloned().unwrap_or_default(),
            })
            .collect();
        model
            .decode(&pieces)
            .replace(SPACE_SYMBOL, " ")
            .trim()
            .to_string()
    }

    fn encode(&self, text: &str, model: &SentencePiece, vocab: &Vocab) -> Vec<usize> {
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            // The earliest special token written in the text, if any.
            let next = self
                .specials
                .iter()
                .filter_map(|token| rest.find(token.as_str()).map(|at| (at, token)))
                .min_by_key(|&(at, token)| (at, std::cmp::Reverse(token.len())));
            let (stretch, special) = match next {
                Some((at, token)) => (&rest[..at], Some(token)),
                None => (rest, None),
            };
            self.encode_stretch(stretch, model, vocab, &mut ids);
            match special {
                Some(token) => {
                    ids.push(vocab.id(token).unwrap_or(self.ids.unk));
                    rest = &rest[stretch.len() + token.len()..];
                }
                None => break,
            }
        }
        ids.push(self.ids.eos);
        ids
    }

    fn encode_stretch(
        &self,
        text: &str,
        model: &SentencePiece,
        vocab: &Vocab,
        ids: &mut Vec<usize>,
    ) {
        let mut text = text;
        if let Some(after) = text.strip_prefix(">>")
            && let Some(end) = after.find("<<")
        {
            let code = &text[..end + 4];
            ids.push(vocab.id(code).unwrap_or(self.ids.unk));
            text = &text[end + 4..];
        }
        ids.extend(
            model
                .encode(text)
                .iter()
                .map(|piece| vocab.id(piece).unwrap_or(self.ids.unk)),
        );
    }
}
