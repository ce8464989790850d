//! Helpers shared by the cross-crate integration tests in `tests/tests/`.

use burn::tensor::Tensor;

/// The values of a float tensor.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_to_vec::<f32>()
        .expect("float tensor")
}

pub use tf_attention::max_abs_diff;

/// A fresh, empty directory under the system's temporary directory, named for the test and
/// this process (not created: the code under test creates what it writes).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
