//! SentencePiece unigram models (`.spm`/`.model` files, Kudo & Richardson, 2018), as the opus-mt
//! translators ship them: read from their protobuf, text normalised and split into pieces as
//! the `sentencepiece` library does, pieces joined back into text.
//!
//! The file is a `ModelProto`; [`proto`] declares the fields we read (prost skips the rest). The
//! normalisation is SentencePiece's: the model's precompiled character map (`nmt_nfkc` in
//! opus-mt; `tokenizers`' [`Precompiled`], which the Hugging Face converters use for the same
//! files), then its whitespace rules (drop leading, trailing and repeated spaces, spaces as
//! `▁`, a `▁` before the first word). The pieces come from `tokenizers`' [`Unigram`] Viterbi
//! search over the model's normal pieces and scores, consecutive unknown characters fused into
//! one piece as SentencePiece fuses them.

use std::path::Path;

use prost::Message;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::precompiled::Precompiled;
use tokenizers::{NormalizedString, Normalizer};

use crate::error::{self, Error, Result};

/// The word-boundary symbol, `▁` (U+2581), that stands for a space inside pieces.
pub const SPACE_SYMBOL: char = '\u{2581}';

/// The messages of `sentencepiece_model.proto` that tokenizing needs, with their field numbers.
pub mod proto {
    /// A whole model file.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        /// The vocabulary, in id order.
        #[prost(message, repeated, tag = "1")]
        pub pieces: Vec<Piece>,
        /// How the model was trained (its kind, the unknown piece).
        #[prost(message, optional, tag = "2")]
        pub trainer_spec: Option<TrainerSpec>,
        /// How text is normalised before it is split.
        #[prost(message, optional, tag = "3")]
        pub normalizer_spec: Option<NormalizerSpec>,
    }

    /// One vocabulary entry.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Piece {
        /// Its text, `▁` for a space.
        #[prost(string, optional, tag = "1")]
        pub piece: Option<String>,
        /// Its log-probability.
        #[prost(float, optional, tag = "2")]
        pub score: Option<f32>,
        /// [`PieceType`] as a number; normal when absent.
        #[prost(int32, optional, tag = "3")]
        pub r#type: Option<i32>,
    }

    /// The kinds of piece.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum PieceType {
        /// Matched in text.
        Normal = 1,
        /// The unknown piece.
        Unknown = 2,
        /// `<s>`, `</s>`: never matched in text.
        Control = 3,
        /// Always one piece where it occurs.
        UserDefined = 4,
        /// Kept out of tokenization.
        Unused = 5,
        /// `<0xAB>`, for byte fallback.
        Byte = 6,
    }

    /// Training settings that tokenizing depends on.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TrainerSpec {
        /// 1 unigram, 2 BPE, 3 word, 4 char; unigram when absent.
        #[prost(int32, optional, tag = "3")]
        pub model_type: Option<i32>,
        /// Unknown characters as byte pieces instead of the unknown piece.
        #[prost(bool, optional, tag = "35")]
        pub byte_fallback: Option<bool>,
        /// The unknown piece's id; 0 when absent.
        #[prost(int32, optional, tag = "40")]
        pub unk_id: Option<i32>,
    }

    /// Normalisation settings.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NormalizerSpec {
        /// The rule's name (`nmt_nfkc`, `identity`, ...).
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        /// The compiled character map; none for `identity`.
        #[prost(bytes = "vec", optional, tag = "2")]
        pub precompiled_charsmap: Option<Vec<u8>>,
        /// A `▁` before the first word; true when absent.
        #[prost(bool, optional, tag = "3")]
        pub add_dummy_prefix: Option<bool>,
        /// Drop leading, trailing and repeated spaces; true when absent.
        #[prost(bool, optional, tag = "4")]
        pub remove_extra_whitespaces: Option<bool>,
        /// Spaces as `▁`; true when absent.
        #[prost(bool, optional, tag = "5")]
        pub escape_whitespaces: Option<bool>,
    }
}

/// A SentencePiece unigram model, ready to split text.
pub struct SentencePiece {
    pieces: Vec<String>,
    charsmap: Option<Precompiled>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    unigram: Unigram,
}

impl std::fmt::Debug for SentencePiece {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentencePiece")
            .field("pieces", &self.pieces.len())
            .field("charsmap", &self.charsmap.is_some())
            .finish_non_exhaustive()
    }
}

impl SentencePiece {
    /// Reads a model file.
    ///
    /// # Errors
    /// If the file cannot be read, is not a SentencePiece model, or is one we cannot run (BPE,
    /// word or char models, byte fallback), naming the file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = error::read(path)?;
        Self::from_bytes(&bytes)
            .map_err(|detail| Error::format(path, "is not a SentencePiece unigram model", detail))
    }

    /// A model from the bytes of its file.
    ///
    /// # Errors
    /// As [`load`](Self::load), without the file's name.
    pub fn from_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        use proto::PieceType;
        let model = proto::ModelProto::decode(bytes).map_err(|err| err.to_string())?;
        if model.pieces.is_empty() {
            return Err("it has no pieces".into());
        }
        let trainer = model.trainer_spec.unwrap_or_default();
        match trainer.model_type.unwrap_or(1) {
            1 => {}
            kind => {
                return Err(format!(
                    "its model_type is {kind} (2 BPE, 3 word, 4 char); only unigram (1) models \
                     are supported"
                ));
            }
        }
        if trainer.byte_fallback.unwrap_or(false) {
            return Err("it uses byte fallback, which is not supported".into());
        }
        let normalizer = model.normalizer_spec.unwrap_or_default();
        let charsmap = match normalizer
            .precompiled_charsmap
            .filter(|map| !map.is_empty())
        {
            Some(map) => Some(
                Precompiled::from(&map)
                    .map_err(|err| format!("its precompiled_charsmap is damaged: {err}"))?,
            ),
            None => None,
        };

        // The pieces text can match: normal and user-defined ones (ids do not matter here, the
        // caller maps piece texts to its own ids). The unknown piece goes last, for `Unigram`.
        let unk_id = trainer.unk_id.unwrap_or(0);
        let unknown = usize::try_from(unk_id)
            .ok()
            .and_then(|id| model.pieces.get(id))
            .ok_or_else(|| format!("its unk_id {unk_id} is not a piece"))?;
        let text = |p: &proto::Piece| p.piece.clone().unwrap_or_default();
        let mut matched: Vec<(String, f64)> = model
            .pieces
            .iter()
            .filter(|p| {
                let kind = p.r#type.unwrap_or(PieceType::Normal as i32);
                kind == PieceType::Normal as i32 || kind == PieceType::UserDefined as i32
            })
            .map(|p| (text(p), f64::from(p.score.unwrap_or(0.0))))
            .collect();
        matched.push((text(unknown), 0.0));
        let unk = matched.len() - 1;
        let unigram = Unigram::from(matched, Some(unk), false).map_err(|err| err.to_string())?;
        Ok(Self {
            pieces: model.pieces.iter().map(text).collect(),
            charsmap,
            add_dummy_prefix: normalizer.add_dummy_prefix.unwrap_or(true),
            remove_extra_whitespaces: normalizer.remove_extra_whitespaces.unwrap_or(true),
            escape_whitespaces: normalizer.escape_whitespaces.unwrap_or(true),
            unigram,
        })
    }

    /// Every piece's text, in id order.
    pub fn pieces(&self) -> &[String] {
        &self.pieces
    }

    /// `text` as SentencePiece normalises it: the character map, then the whitespace rules.
    pub fn normalize(&self, text: &str) -> String {
        let mapped = match &self.charsmap {
            Some(charsmap) => {
                let mut normalized = NormalizedString::from(text);
                // `Precompiled::normalize` cannot fail.
                let _ = charsmap.normalize(&mut normalized);
                normalized.get().to_string()
            }
            None => text.to_string(),
        };
        let mut out = String::with_capacity(mapped.len() + 3);
        if mapped.is_empty() {
            return out;
        }
        let space = if self.escape_whitespaces {
            SPACE_SYMBOL
        } else {
            ' '
        };
        let words: Vec<&str> = if self.remove_extra_whitespaces {
            mapped.split(' ').filter(|word| !word.is_empty()).collect()
        } else {
            vec![mapped.as_str()]
        };
        if words.is_empty() {
            return out;
        }
        if self.add_dummy_prefix {
            out.push(space);
        }
        for (i, word) in words.iter().enumerate() {
            if i > 0 {
                out.push(space);
            }
            if self.escape_whitespaces {
                out.extend(
                    word.chars()
                        .map(|c| if c == ' ' { SPACE_SYMBOL } else { c }),
                );
            } else {
                out.push_str(word);
            }
        }
        out
    }

    /// `text` split into pieces, as `sentencepiece`'s `encode(text, out_type=str)`: a run of
    /// characters no piece covers comes out as one piece of those characters.
    pub fn encode(&self, text: &str) -> Vec<String> {
        let normalized = self.normalize(text);
        if normalized.is_empty() {
            return Vec::new();
        }
        // The lattice always has a path (unknown characters are nodes of their own).
        self.unigram.encode(&normalized).unwrap_or_default()
    }

    /// Pieces joined back into text, as `sentencepiece`'s `decode_pieces`: `▁` becomes a space
    /// and the first word's leading space is dropped.
    pub fn decode(&self, pieces: &[impl AsRef<str>]) -> String {
        let joined: String = pieces.iter().map(AsRef::as_ref).collect();
        let text = joined.replace(SPACE_SYMBOL, " ");
        match text.strip_prefix(' ') {
            Some(rest) if self.add_dummy_prefix => rest.to_string(),
            _ => text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model file of the given pieces (normal, with scores), no character map.
    fn model_bytes(pieces: &[(&str, f32)], normalizer: proto::NormalizerSpec) -> Vec<u8> {
        let mut all = vec![proto::Piece {
            piece: Some("<unk>".into()),
            score: Some(0.0),
            r#type: Some(proto::PieceType::Unknown as i32),
        }];
        all.extend(pieces.iter().map(|&(piece, score)| proto::Piece {
            piece: Some(piece.into()),
            score: Some(score),
            r#type: None,
        }));
        proto::ModelProto {
            pieces: all,
            trainer_spec: Some(proto::TrainerSpec::default()),
            normalizer_spec: Some(normalizer),
        }
        .encode_to_vec()
    }

    fn model(pieces: &[(&str, f32)]) -> SentencePiece {
        SentencePiece::from_bytes(&model_bytes(pieces, proto::NormalizerSpec::default())).unwrap()
    }

    #[test]
    fn whitespace_is_collapsed_trimmed_and_escaped() {
        let sp = model(&[("a", -1.0)]);
        assert_eq!(sp.normalize("  a   b c  "), "▁a▁b▁c");
        assert_eq!(sp.normalize("   "), "");
        let kept = proto::NormalizerSpec {
            remove_extra_whitespaces: Some(false),
            add_dummy_prefix: Some(false),
            ..Default::default()
        };
        let sp = SentencePiece::from_bytes(&model_bytes(&[("a", -1.0)], kept)).unwrap();
        assert_eq!(sp.normalize(" a  b"), "▁a▁▁b");
    }

    #[test]
    fn the_most_probable_segmentation_wins() {
        // "▁ab" as one piece (-3) beats "▁a" + "b" (-2 + -2 = -4) and loses to nothing else.
        let sp = model(&[("▁a", -2.0), ("b", -2.0), ("▁ab", -3.0), ("▁", -1.0)]);
        assert_eq!(sp.encode("ab"), ["▁ab"]);
        // With "▁ab" dearer than the split, the split wins.
        let sp = model(&[("▁a", -2.0), ("b", -2.0), ("▁ab", -5.0), ("▁", -1.0)]);
        assert_eq!(sp.encode("ab"), ["▁a", "b"]);
    }

    #[test]
    fn a_run_of_unknown_characters_is_one_piece() {
        let sp = model(&[("▁", -1.0), ("a", -1.0)]);
        assert_eq!(sp.encode("a☃☃a ☃"), ["▁", "a", "☃☃", "a", "▁", "☃"]);
        assert_eq!(sp.decode(&sp.encode("a☃☃a ☃")), "a☃☃a ☃");
    }

    #[test]
    fn control_pieces_are_never_matched_in_text() {
        let mut bytes = proto::ModelProto::decode(
            model_bytes(&[("▁", -1.0), ("x", -1.0)], Default::default()).as_slice(),
        )
        .unwrap();
        bytes.pieces.push(proto::Piece {
            piece: Some("x</s>".into()),
            score: Some(0.0),
            r#type: Some(proto::PieceType::Control as i32),
        });
        let sp = SentencePiece::from_bytes(&bytes.encode_to_vec()).unwrap();
        assert_eq!(sp.encode("x</s>"), ["▁", "x", "</s>"]);
    }

    #[test]
    fn files_we_cannot_run_are_refused_with_the_reason() {
        let err = SentencePiece::from_bytes(b"\xff\xff\xff").unwrap_err();
        assert!(!err.is_empty());
        let mut bpe =
            proto::ModelProto::decode(model_bytes(&[("a", -1.0)], Default::default()).as_slice())
                .unwrap();
        bpe.trainer_spec = Some(proto::TrainerSpec {
            model_type: Some(2),
            ..Default::default()
        });
        let err = SentencePiece::from_bytes(&bpe.encode_to_vec()).unwrap_err();
        assert!(err.contains("only unigram"), "{err}");
        let err = SentencePiece::load(Path::new("/nonexistent/source.spm")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/source.spm"), "{err}");
    }
}
