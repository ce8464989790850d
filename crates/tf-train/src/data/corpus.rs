//! Parallel text corpora on disk: `DIR/SPLIT.LANG` or `DIR/SPLIT.LANG.gz`, one sentence a line,
//! line N of one language translating line N of the other (Multi30k's layout). Every problem is
//! an error naming the file, and the line where there is one; no line is dropped silently.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result, ResultExt};

/// Sentence pairs: `source[i]` translates to `target[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParallelCorpus {
    /// Source sentences.
    pub source: Vec<String>,
    /// Target sentences.
    pub target: Vec<String>,
}

impl ParallelCorpus {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.source.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
}

/// The file of `split` in `lang`: `DIR/SPLIT.LANG`, else `DIR/SPLIT.LANG.gz`.
pub fn split_path(dir: &Path, split: &str, lang: &str) -> Result<PathBuf> {
    let plain = dir.join(format!("{split}.{lang}"));
    let gz = dir.join(format!("{split}.{lang}.gz"));
    if plain.is_file() {
        Ok(plain)
    } else if gz.is_file() {
        Ok(gz)
    } else {
        Err(Error::invalid(format!(
            "missing file: neither {} nor {} exists",
            plain.display(),
            gz.display()
        )))
    }
}

/// The lines of a UTF-8 text file (gunzipped when its name ends in `.gz`), without line endings.
///
/// # Errors
/// If the file cannot be read or decompressed, holds invalid UTF-8 (naming the line), or is
/// empty.
pub fn read_lines(path: &Path) -> Result<Vec<String>> {
    let bytes = read_maybe_gzipped(path)?;
    if bytes.is_empty() {
        return Err(Error::invalid(format!("{} is empty", path.display())));
    }
    text_lines(bytes).with_context(|| path.display().to_string())
}

/// The content of a file, gunzipped when its name ends in `.gz`.
///
/// # Errors
/// If the file cannot be read or decompressed.
pub fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let file = File::open(path).map_err(|err| Error::io("open", path, err))?;
    if path.extension().is_some_and(|e| e == "gz") {
        MultiGzDecoder::new(file)
            .read_to_end(&mut bytes)
            .map_err(|err| Error::format(path, "is not a valid gzip file", err))?;
    } else {
        let mut file = file;
        file.read_to_end(&mut bytes)
            .map_err(|err| Error::io("read", path, err))?;
    }
    Ok(bytes)
}

/// The lines of UTF-8 text, without line endings (`\n` or `\r\n`); invalid UTF-8 is an error
/// naming its line.
pub fn text_lines(bytes: Vec<u8>) -> Result<Vec<String>> {
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = err.utf8_error().valid_up_to();
        let line = err.as_bytes()[..valid]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        Error::invalid(format!("line {line} is not valid UTF-8"))
    })?;
    Ok(text.lines().map(str::to_string).collect())
}

/// Reads `split` of a corpus in `dir`: source language `src`, target language `tgt`.
///
/// # Errors
/// A missing, unreadable or empty file, invalid UTF-8, or line counts that differ.
pub fn read_split(dir: &Path, split: &str, src: &str, tgt: &str) -> Result<ParallelCorpus> {
    let (src_path, tgt_path) = (split_path(dir, split, src)?, split_path(dir, split, tgt)?);
    let source = read_lines(&src_path)?;
    let target = read_lines(&tgt_path)?;
    if source.len() != target.len() {
        return Err(Error::invalid(format!(
            "{} has {} lines but {} has {}: line N of one must translate line N of the other",
            src_path.display(),
            source.len(),
            tgt_path.display(),
            target.len()
        )));
    }
    Ok(ParallelCorpus { source, target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_dir;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(path: &Path, text: &[u8]) {
        let mut encoder = GzEncoder::new(File::create(path).unwrap(), Compression::default());
        encoder.write_all(text).unwrap();
        encoder.finish().unwrap();
    }

    #[test]
    fn plain_and_gzipped_splits_pair_up() {
        let dir = temp_dir("corpus-ok");
        std::fs::write(dir.join("train.de"), "Ein Mann läuft.\nZwei Mädchen.\n").unwrap();
        gz(
            &dir.join("train.en.gz"),
            "A man runs.\nTwo girls.\n".as_bytes(),
        );
        let corpus = read_split(&dir, "train", "de", "en").unwrap();
        assert_eq!(corpus.len(), 2);
        assert_eq!(corpus.source[0], "Ein Mann läuft.");
        assert_eq!(corpus.target[1], "Two girls.");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_problem_is_an_error_naming_the_file() {
        let dir = temp_dir("corpus-bad");
        std::fs::write(dir.join("a.de"), "eins\nzwei\n").unwrap();
        std::fs::write(dir.join("a.en"), "one\n").unwrap();
        let err = read_split(&dir, "a", "de", "en").unwrap_err().to_string();
        assert!(
            err.contains("a.de has 2 lines but") && err.contains("a.en has 1"),
            "{err}"
        );

        let err = read_split(&dir, "b", "de", "en").unwrap_err().to_string();
        assert!(
            err.contains("missing file") && err.contains("b.de.gz"),
            "{err}"
        );

        std::fs::write(dir.join("c.de"), "").unwrap();
        let err = read_lines(&dir.join("c.de")).unwrap_err().to_string();
        assert!(err.contains("c.de is empty"), "{err}");

        std::fs::write(dir.join("d.de"), b"gut\nauch gut\n\xc3\x28 kaputt\n").unwrap();
        let err = read_lines(&dir.join("d.de")).unwrap_err().to_string();
        assert!(err.contains("d.de: line 3 is not valid UTF-8"), "{err}");

        std::fs::write(dir.join("e.de.gz"), b"not gzip").unwrap();
        let err = read_lines(&dir.join("e.de.gz")).unwrap_err().to_string();
        assert!(err.contains("e.de.gz is not a valid gzip file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn multi30k_reads_when_present() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/multi30k");
        if !dir.is_dir() {
            return; // the shared data is beside the repository on the project's machines only
        }
        let corpus = read_split(&dir, "val", "de", "en").unwrap();
        assert_eq!(corpus.len(), 1014);
        assert!(
            corpus
                .source
                .iter()
                .any(|s| s.contains('ä') || s.contains('ß'))
        );
    }
}
