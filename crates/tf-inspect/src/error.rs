//! The error of every fallible tf-inspect function.

use std::path::PathBuf;

/// Result of every fallible tf-inspect function.
pub type Result<T, E = InspectError> = std::result::Result<T, E>;

/// Why an inspection failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// Loading, decoding, evaluating or writing through tf-train failed.
    #[error(transparent)]
    Train(#[from] tf_train::Error),
    /// A picture could not be drawn or written.
    #[error("cannot draw {}: {detail}", path.display())]
    Draw {
        /// The picture's file.
        path: PathBuf,
        /// What the drawing library said.
        detail: String,
    },
    /// A request that does not fit the model (more heads to remove than it can spare).
    #[error("{0}")]
    Invalid(String),
}

impl From<tf_model::DecodeError> for InspectError {
    fn from(err: tf_model::DecodeError) -> Self {
        Self::Train(err.into())
    }
}

impl From<tf_model::PruneError> for InspectError {
    fn from(err: tf_model::PruneError) -> Self {
        Self::Train(err.into())
    }
}

impl From<serde_json::Error> for InspectError {
    fn from(err: serde_json::Error) -> Self {
        Self::Train(err.into())
    }
}

impl From<tf_train::eval::bleu::BleuError> for InspectError {
    fn from(err: tf_train::eval::bleu::BleuError) -> Self {
        Self::Train(err.into())
    }
}
