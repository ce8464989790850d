//! Choosing the burn device, and so the backend, at run time.

use burn::tensor::Device;

/// The backends the `tf` program can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// burn's NdArray CPU backend.
    Ndarray,
    /// burn's Flex CPU backend (pure Rust, SIMD, multi-threaded): the faster CPU backend here,
    /// so the default (docs/benchmarks.md).
    Flex,
    /// WGPU: the GPU through Vulkan, Metal or DirectX (on a machine without a GPU, Vulkan's
    /// lavapipe runs it on the CPU).
    Wgpu,
}

impl Backend {
    /// The device of this backend.
    pub fn device(self) -> Device {
        match self {
            // burn marks NdArray deprecated in favour of Flex; it is still a supported backend
            // of this project (and the baseline Flex is measured against).
            #[allow(deprecated)]
            Backend::Ndarray => Device::ndarray(),
            Backend::Flex => Device::flex(),
            Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        }
    }
}
