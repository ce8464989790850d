//! Sequence-level knowledge distillation (Kim & Rush, 2016): a student learns from the teacher's
//! beam-search translations of the training split instead of the references. The teacher's
//! translations are kept in its model directory (`TEACHER/distilled/beam5-alpha0.6/`, one folder
//! per beam size and length penalty, so that other settings never reuse them), beside copies of
//! the source side and the validation split, so that the folder is a corpus a student trains on
//! (`--data TEACHER/distilled/beam5-alpha0.6`) and a later student need not translate again.
//!
//! Translating 29,000 sentences with beam 5 takes minutes: the output grows chunk by chunk in
//! `SPLIT.TGT.part`, synced after each chunk, and a run that was stopped continues after the
//! last whole line; the finished file is renamed into place.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tf_model::Transformer;

use crate::data::corpus::{read_lines, split_path};
use crate::data::download::part_path;
use crate::data::translation::TranslationTask;
use crate::data::vocabulary::TranslationVocab;
use crate::error::{Error, Result};
use crate::eval::translate::{TranslateOptions, translate};
use crate::store::atomic::write_atomic;

/// The folder of a teacher's model directory that holds its distilled corpora.
pub const DISTILLED_DIR: &str = "distilled";

/// Where the corpus the teacher in `teacher_dir` makes with `options` is kept:
/// `teacher_dir/distilled/beam{B}-alpha{A}`. The beam size and the length penalty change the
/// translations, so each setting has its own folder.
pub fn distilled_dir(teacher_dir: &Path, options: &TranslateOptions) -> PathBuf {
    teacher_dir
        .join(DISTILLED_DIR)
        .join(format!("beam{}-alpha{}", options.beam_size, options.alpha))
}

/// Sentences translated between two syncs of the output.
pub const CHUNK_SENTENCES: usize = 512;

/// The teacher's corpus for a student: [`distilled_dir`], holding the training split's
/// source side, the teacher's translations of it, and the validation split, all under the
/// names of `task` (the teacher's). Translates what is missing, continuing a stopped run;
/// `progress` hears `(sentences done, sentences in the split)`.
///
/// # Errors
/// A corpus file that cannot be read, a translation that fails, or a folder that cannot be
/// written.
pub fn distilled_corpus(
    teacher_dir: &Path,
    teacher: &Transformer,
    vocab: &TranslationVocab,
    task: &TranslationTask,
    options: &TranslateOptions,
    device: &Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<PathBuf> {
    let out = distilled_dir(teacher_dir, options);
    fs::create_dir_all(&out).map_err(|err| Error::io("create", &out, err))?;
    for (split, lang) in [
        (&task.train_split, &task.src),
        (&task.valid_split, &task.src),
        (&task.valid_split, &task.tgt),
    ] {
        let from = split_path(&task.data, split, lang)?;
        let to = out.join(from.file_name().expect("a corpus file has a name"));
        if !to.exists() {
            write_atomic(
                &to,
                &fs::read(&from).map_err(|err| Error::io("read", &from, err))?,
            )?;
        }
    }
    let target = out.join(format!("{}.{}", task.train_split, task.tgt));
    let sources = read_lines(&split_path(&task.data, &task.train_split, &task.src)?)?;
    if target.exists() {
        progress(sources.len(), sources.len());
        return Ok(out);
    }
    let part = part_path(&target);
    let mut done = whole_lines(&part)?;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .map_err(|err| Error::io("write", &part, err))?;
    progress(done, sources.len());
    while done < sources.len() {
        let chunk = &sources[done..(done + CHUNK_SENTENCES).min(sources.len())];
        let translations = translate(teacher, vocab, chunk, options, device, |_| {})?;
        let mut text = String::new();
        for sentence in &translations.sentences {
            text.push_str(sentence);
            text.push('\n');
        }
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|err| Error::io("write", &part, err))?;
        done += chunk.len();
        progress(done, sources.len());
    }
    fs::rename(&part, &target)
        .and_then(|()| File::open(&out)?.sync_all())
        .map_err(|err| Error::io("write", &target, err))?;
    Ok(out)
}

/// The whole lines of a partly written file (0 if there is none); a line cut short by an
/// interruption is removed from it.
fn whole_lines(path: &Path) -> Result<usize> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(Error::io("read", path, err)),
    };
    let whole = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(whole as u64))
            .map_err(|err| Error::io("write", path, err))?;
    }
    Ok(bytes[..whole].iter().filter(|&&b| b == b'\n').count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::temp_dir;

    #[test]
    fn each_beam_setting_has_its_own_corpus_folder() {
        let teacher = Path::new("runs/de-en");
        assert_eq!(
            distilled_dir(teacher, &TranslateOptions::beam(5, 0.6)),
            Path::new("runs/de-en/distilled/beam5-alpha0.6")
        );
        assert_eq!(
            distilled_dir(teacher, &TranslateOptions::beam(5, 1.0)),
            Path::new("runs/de-en/distilled/beam5-alpha1")
        );
        assert_ne!(
            distilled_dir(teacher, &TranslateOptions::beam(4, 0.6)),
            distilled_dir(teacher, &TranslateOptions::beam(5, 0.6))
        );
    }

    #[test]
    fn a_line_cut_short_is_dropped_and_whole_lines_counted() {
        let dir = temp_dir("distill-lines");
        let path = dir.join("train.en.part");
        assert_eq!(whole_lines(&path).unwrap(), 0);
        fs::write(&path, "A dog.\nTwo men.\nA wo").unwrap();
        assert_eq!(whole_lines(&path).unwrap(), 2);
        assert_eq!(fs::read_to_string(&path).unwrap(), "A dog.\nTwo men.\n");
        fs::write(&path, "\n\n").unwrap();
        assert_eq!(
            whole_lines(&path).unwrap(),
            2,
            "empty translations are lines too"
        );
    }
}
