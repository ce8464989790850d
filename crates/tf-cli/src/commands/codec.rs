//! Text to token ids and back for the inspection commands, for either kind of model: a
//! synthetic task's symbols or a translator's subwords.

use std::path::Path;

use anyhow::Result;
use burn::tensor::Device;
use tf_model::{OutputLimit, Transformer};
use tf_train::data::task::SpecialIds;
use tf_train::data::vocabulary::TranslationVocab;
use tf_train::store::model_dir::Dropout;
use tf_train::{ModelDir, RunTask, Task};

use crate::commands::predict::{ensure_source_fits, parse_input};

/// How a model's inputs and outputs are written.
pub enum Codec {
    /// A synthetic task's symbols, such as "3 1 4".
    Synthetic(Task),
    /// A translator's subword vocabulary.
    Translation(Box<TranslationVocab>),
}

/// The model in `dir` without dropout, on `device`, and its codec.
pub fn load_inspected(dir: &Path, device: &Device) -> Result<(Transformer, Codec)> {
    let dir = ModelDir::new(dir);
    let (config, model) = dir.load_model(device, Dropout::Off)?;
    let codec = Codec::new(&dir, &config.task)?;
    Ok((model, codec))
}

impl Codec {
    /// The codec of the model in `dir`, trained on `task`.
    pub fn new(dir: &ModelDir, task: &RunTask) -> Result<Self> {
        Ok(match task {
            RunTask::Synthetic(task) => Self::Synthetic(task.clone()),
            RunTask::Translation(_) => Self::Translation(Box::new(dir.load_vocabulary()?)),
        })
    }

    /// A source, refused when empty or longer than `model` takes.
    pub fn source(&self, model: &Transformer, text: &str) -> Result<Vec<usize>> {
        match self {
            Self::Synthetic(task) => parse_input(task, model, text),
            Self::Translation(vocab) => {
                let source = vocab.encode_source(text)?;
                ensure_source_fits(model, &source, "tokens")?;
                Ok(source)
            }
        }
    }

    /// A source and, when given, its translation.
    pub fn source_and_target(
        &self,
        model: &Transformer,
        source: &str,
        target: Option<&str>,
    ) -> Result<(Vec<usize>, Option<Vec<usize>>)> {
        let target = target.map(|t| self.target(t)).transpose()?;
        Ok((self.source(model, source)?, target))
    }

    /// A target (translation), as ids without BOS or EOS.
    pub fn target(&self, text: &str) -> Result<Vec<usize>> {
        Ok(match self {
            Self::Synthetic(task) => task.parse_symbols(text)?,
            Self::Translation(vocab) => vocab.encode_target(text)?,
        })
    }

    /// The longest output to decode for a source of `source_len` tokens: a translation's is
    /// limited by its source, as in `tf translate`.
    pub fn max_output(&self, model: &Transformer, source_len: usize) -> usize {
        match self {
            Self::Synthetic(_) => model.max_len(),
            Self::Translation(_) => OutputLimit::default().clamped(source_len, model.max_len()),
        }
    }

    /// Output ids (without EOS) as text: a synthetic task's sequence, a detokenized sentence.
    pub fn text(&self, ids: &[usize]) -> Result<String> {
        Ok(match self {
            Self::Synthetic(task) => task.format(ids),
            Self::Translation(vocab) => vocab.decode(ids)?,
        })
    }

    /// The ids of padding, the decoder's start and EOS.
    pub fn special_ids(&self) -> SpecialIds {
        match self {
            Self::Synthetic(_) => SpecialIds::OURS,
            Self::Translation(vocab) => vocab.special_ids(),
        }
    }

    /// A source token id as text.
    pub fn source_label(&self, id: usize) -> String {
        match self {
            Self::Synthetic(task) => task.token_label(id),
            Self::Translation(vocab) => vocab.source_token(id),
        }
    }

    /// A target token id as text.
    pub fn label(&self, id: usize) -> String {
        match self {
            Self::Synthetic(task) => task.token_label(id),
            Self::Translation(vocab) => vocab.target_token(id),
        }
    }
}
