//! The one error type of tf-train: what went wrong, naming the file, setting or input it is
//! about. Every message is whole on its own ("in runs/x/config.json: cannot read …: No such
//! file or directory"): `to_string()` is what a program prints, and [`Error::root`] gives the
//! typed cause under any added context.

use std::path::{Path, PathBuf};

use tf_attention::ConfigError;
use tf_model::{DecodeError, PruneError, TorchImportError};

use crate::data::task::TaskError;
use crate::eval::bleu::BleuError;

/// Result of every fallible tf-train function.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a tf-train operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, written, created or listed.
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        /// What was being done: "read", "write", "create", ...
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What the operating system said.
        cause: std::io::Error,
    },
    /// A file was read but its content is not what it must be (JSON, weights, vocabulary).
    #[error("{} {expected}: {detail}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What it should have been, e.g. "is not a valid run configuration".
        expected: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A model or layer configuration that builds no working module.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A synthetic task that cannot generate examples, or input it cannot read.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A decoding request the model cannot serve.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A pruning request the model cannot serve.
    #[error(transparent)]
    Prune(#[from] PruneError),
    /// A PyTorch state dict that does not fit.
    #[error(transparent)]
    TorchImport(#[from] TorchImportError),
    /// Corpora that cannot be scored against each other.
    #[error(transparent)]
    Bleu(#[from] BleuError),
    /// Settings or input that are out of range or contradict each other.
    #[error("{0}")]
    Invalid(String),
    /// The tokenizer library refused an operation.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// burn could not encode or decode a record (weights or optimizer state).
    #[error("{0}")]
    Record(String),
    /// JSON that could not be written (reading JSON is [`Error::Format`], naming the file).
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Training went wrong in a way no setting check could foresee (a non-finite loss).
    #[error("{0}")]
    Training(String),
    /// What was being done when `cause` happened (a file, a line, a step).
    #[error("{context}: {cause}")]
    Context {
        /// Where or what.
        context: String,
        /// The error itself.
        cause: Box<Error>,
    },
}

impl Error {
    /// Settings or input that are out of range: `message` says which and why.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    /// An I/O failure while doing `action` to `path`.
    pub fn io(action: &'static str, path: &Path, cause: std::io::Error) -> Self {
        Self::Io {
            action,
            path: path.to_path_buf(),
            cause,
        }
    }

    /// A file whose content is wrong.
    pub fn format(path: &Path, expected: &'static str, detail: impl ToString) -> Self {
        Self::Format {
            path: path.to_path_buf(),
            expected,
            detail: detail.to_string(),
        }
    }

    /// The innermost error, past every [`Error::Context`].
    pub fn root(&self) -> &Error {
        match self {
            Self::Context { cause, .. } => cause.root(),
            other => other,
        }
    }
}

/// Returns an [`Error::Invalid`] with a formatted message (tf-train's `bail!`).
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::invalid(format!($($arg)*)))
    };
}

/// Returns an [`Error::Invalid`] unless the condition holds (tf-train's `ensure!`).
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            $crate::error::bail!($($arg)*);
        }
    };
}

pub(crate) use {bail, ensure};

impl From<tokenizers::Error> for Error {
    fn from(err: tokenizers::Error) -> Self {
        Self::Tokenizer(err.to_string())
    }
}

impl From<burn::store::RecordError> for Error {
    fn from(err: burn::store::RecordError) -> Self {
        Self::Record(format!("{err:?}"))
    }
}

/// Adds what was being done to an error, as `anyhow::Context` does, keeping the type.
pub trait ResultExt<T> {
    /// Wraps the error in [`Error::Context`] with `context`.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Wraps the error in [`Error::Context`] with the context `f` makes (only on error).
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|err| Error::Context {
            context: context.into(),
            cause: Box::new(err.into()),
        })
    }

    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|err| Error::Context {
            context: f().into(),
            cause: Box::new(err.into()),
        })
    }
}

/// Reads a whole file, naming it on failure.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|err| Error::io("read", path, err))
}

/// Reads a whole UTF-8 file, naming it on failure.
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|err| Error::io("read", path, err))
}

/// Creates a directory and its parents, naming it on failure.
pub fn create_dir_all(path: &Path) -> Result<()> {
    std::fs::create_dir_all(path).map_err(|err| Error::io("create", path, err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chain_keeps_every_level_and_the_root() {
        let missing = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let err: Result<()> = Err(Error::io("read", Path::new("a/b.json"), missing));
        let err = err.context("loading the model").unwrap_err();
        assert_eq!(
            err.to_string(),
            "loading the model: cannot read a/b.json: gone"
        );
        assert!(matches!(err.root(), Error::Io { action: "read", .. }));
    }
}
