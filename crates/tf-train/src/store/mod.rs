//! The model directory on disk: atomic writes, the configuration and weights, checkpoints,
//! and checkpoint averaging.

pub mod atomic;
pub mod average;
pub mod checkpoint;
pub mod checksum;
pub mod model_dir;
