//! A subword vocabulary: byte-pair encoding (Sennrich et al., 2016) learned with Hugging Face's
//! `tokenizers`, NFC-normalised, split at spaces the SentencePiece way (Metaspace: a word starts
//! with `▁`), so that decoding gives back normal text. Saved as `tokenizer.json`, which Python's
//! `tokenizers.Tokenizer.from_file` loads too.
//!
//! Special tokens take the ids the rest of the crate uses: `<pad>` 0 ([`PAD`]), `<s>` 1
//! ([`BOS`]), `</s>` 2 ([`EOS`]), then `<unk>` 3.

use std::path::Path;

use crate::error::{Error, Result, ResultExt, ensure};
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, Tokenizer};

use crate::data::task::{BOS, EOS, PAD};
use crate::store::atomic::write_atomic;

/// The special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<s>", "</s>", "<unk>"];

/// Characters every vocabulary can spell, seen in training or not: printable ASCII and the
/// Latin-1 letters and signs (so an `Ü` or `ñ` that training never met is not `<unk>`).
fn base_alphabet() -> std::collections::HashSet<char> {
    (' '..='~').chain('\u{a1}'..='\u{ff}').collect()
}

/// A trained subword vocabulary.
#[derive(Clone, Debug)]
pub struct SubwordVocab {
    tokenizer: Tokenizer,
}

impl SubwordVocab {
    /// Learns a vocabulary of at most `vocab_size` tokens (specials included) from `sentences`,
    /// keeping merges seen at least `min_frequency` times.
    pub fn train<S: AsRef<str> + Sync>(
        sentences: &[S],
        vocab_size: usize,
        min_frequency: u64,
    ) -> Result<Self> {
        ensure!(
            vocab_size > SPECIAL_TOKENS.len(),
            "the vocabulary needs room beyond its {} special tokens",
            SPECIAL_TOKENS.len()
        );
        ensure!(
            !sentences.is_empty(),
            "no sentences to learn a vocabulary from"
        );
        let model = BPE::builder().unk_token("<unk>".to_string()).build()?;
        let mut tokenizer = Tokenizer::new(model);
        tokenizer.with_normalizer(Some(NFC));
        tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
        tokenizer.with_decoder(Some(MetaspaceDecoder::new(
            '▁',
            PrependScheme::Always,
            true,
        )));
        let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(min_frequency)
            .initial_alphabet(base_alphabet())
            .show_progress(false)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .build()
            .into();
        tokenizer.train(&mut trainer, sentences.iter().map(|s| s.as_ref()))?;
        let vocab = Self { tokenizer };
        vocab.check_specials()?;
        Ok(vocab)
    }

    /// Loads `tokenizer.json`.
    pub fn load(path: &Path) -> Result<Self> {
        // The tokenizers library panics on some malformed files (a broken decoder section):
        // caught, so that a damaged file is an error naming it like any other.
        let tokenizer = std::panic::catch_unwind(|| Tokenizer::from_file(path))
            .map_err(|_| Error::format(path, "is not a tokenizer file", "it cannot be parsed"))?
            .map_err(|err| Error::format(path, "is not a tokenizer file", err))?;
        let vocab = Self { tokenizer };
        vocab
            .check_specials()
            .with_context(|| format!("in {}", path.display()))?;
        Ok(vocab)
    }

    /// Writes `tokenizer.json` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.tokenizer.to_string(false)?;
        write_atomic(path, json.as_bytes())
    }

    fn check_specials(&self) -> Result<()> {
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            ensure!(
                self.tokenizer.token_to_id(token) == Some(id as u32),
                "special token {token} must have id {id}"
            );
        }
        debug_assert_eq!((PAD, BOS, EOS), (0, 1, 2));
        Ok(())
    }

    /// Tokens in the vocabulary.
    pub fn len(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Whether the vocabulary is empty (never, once trained or loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The token ids of `text`, without BOS or EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        let encoding = self.tokenizer.encode(text, false)?;
        Ok(encoding.get_ids().iter().map(|&id| id as usize).collect())
    }

    /// The text of `ids`, special tokens left out, subwords joined into words.
    pub fn decode(&self, ids: &[usize]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&id| id as u32).collect();
        Ok(self.tokenizer.decode(&ids, true)?)
    }

    /// One token as text (`▁Mann`), for labels; `<?>` for an id outside the vocabulary.
    pub fn token(&self, id: usize) -> String {
        self.tokenizer
            .id_to_token(id as u32)
            .unwrap_or_else(|| "<?>".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn german() -> Vec<String> {
        [
            "Ein Mann fährt mit dem Fahrrad über die Straße.",
            "Zwei Mädchen spielen im Schnee und lachen.",
            "Eine Frau in einem grünen Kleid läuft über die Brücke.",
            "Männer arbeiten an einer großen Straße in der Stadt.",
            "Ein Junge springt über einen Zaun.",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn german_text_round_trips_with_umlauts_and_eszett() {
        let vocab = SubwordVocab::train(&german(), 400, 1).unwrap();
        assert!(vocab.len() <= 400 && vocab.len() > 200);
        for sentence in german()
            .iter()
            .chain(["Über Straßen fährt ein Mädchen.".to_string()].iter())
        {
            let ids = vocab.encode(sentence).unwrap();
            assert!(!ids.is_empty() && ids.iter().all(|&id| id >= SPECIAL_TOKENS.len() || id == 3));
            assert_eq!(&vocab.decode(&ids).unwrap(), sentence);
        }
        assert_eq!(vocab.token(0), "<pad>");
        assert_eq!(
            vocab.decode(&[BOS, 10, EOS]).unwrap(),
            vocab.decode(&[10]).unwrap()
        );
    }

    #[test]
    fn saved_vocabularies_load_and_encode_alike() {
        let vocab = SubwordVocab::train(&german(), 300, 1).unwrap();
        let path = std::env::temp_dir().join(format!("tf-tokenizer-{}.json", std::process::id()));
        vocab.save(&path).unwrap();
        let loaded = SubwordVocab::load(&path).unwrap();
        let text = "Zwei Männer fahren Fahrrad.";
        assert_eq!(loaded.encode(text).unwrap(), vocab.encode(text).unwrap());
        std::fs::write(&path, "{}").unwrap();
        assert!(
            SubwordVocab::load(&path)
                .unwrap_err()
                .to_string()
                .contains("not a tokenizer file")
        );
        let _ = std::fs::remove_file(&path);
        assert!(SubwordVocab::train(&german(), 3, 1).is_err());
    }

    /// A joint 8,000-token vocabulary of Multi30k's training split, loaded by Python's
    /// `tokenizers`, encodes validation sentences to the same ids. Needs the shared data and
    /// `pip install tokenizers`: `cargo test --release --workspace --lib -- --ignored python`.
    #[test]
    #[ignore = "trains on Multi30k and runs Python's tokenizers"]
    fn python_tokenizers_load_a_multi30k_vocabulary_and_agree() {
        use crate::data::corpus::read_split;
        let data =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/multi30k");
        let train = read_split(&data, "train", "de", "en").unwrap();
        let sentences: Vec<&String> = train.source.iter().chain(&train.target).collect();
        let start = std::time::Instant::now();
        let vocab = SubwordVocab::train(&sentences, 8000, 2).unwrap();
        println!(
            "trained {} tokens in {:.1} s",
            vocab.len(),
            start.elapsed().as_secs_f64()
        );
        let dir = std::env::temp_dir().join(format!("tf-tok-py-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tokenizer.json");
        vocab.save(&path).unwrap();
        let val = read_split(&data, "val", "de", "en").unwrap();
        let lines: Vec<&String> = val
            .source
            .iter()
            .take(100)
            .chain(val.target.iter().take(100))
            .collect();
        std::fs::write(
            dir.join("lines.txt"),
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        let script = r#"
import sys, tokenizers
t = tokenizers.Tokenizer.from_file(sys.argv[1])
for line in open(sys.argv[2], encoding="utf-8").read().splitlines():
    print(" ".join(map(str, t.encode(line, add_special_tokens=False).ids)))
"#;
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                script,
                path.to_str().unwrap(),
                dir.join("lines.txt").to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let python = String::from_utf8(out.stdout).unwrap();
        for (line, ids) in lines.iter().zip(python.lines()) {
            let ours: Vec<String> = vocab
                .encode(line)
                .unwrap()
                .iter()
                .map(|i| i.to_string())
                .collect();
            assert_eq!(ours.join(" "), ids, "{line}");
            assert_eq!(&vocab.decode(&vocab.encode(line).unwrap()).unwrap(), *line);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
