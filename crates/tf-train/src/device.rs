//! Choosing the burn device, and so the backend, at run time, by name.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// The backends a model runs on; each builds a burn [`Device`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Every backend, by the name [`FromStr`] takes.
    pub const ALL: [(&'static str, Backend); 3] = [
        ("flex", Backend::Flex),
        ("ndarray", Backend::Ndarray),
        ("wgpu", Backend::Wgpu),
    ];

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

    /// Its name: `flex`, `ndarray` or `wgpu`.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, backend)| *backend == self)
            .map(|(name, _)| *name)
            .expect("every backend is named")
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, backend)| *backend)
            .ok_or_else(|| format!("unknown device {name:?}: choose flex, ndarray or wgpu"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, backend) in Backend::ALL {
            assert_eq!(name.parse::<Backend>().unwrap(), backend);
            assert_eq!(backend.to_string(), name);
        }
        assert!("cuda".parse::<Backend>().unwrap_err().contains("flex"));
    }
}
