//! Our modules compute what PyTorch computes: for every fixture pair `NAME.safetensors` +
//! `NAME.json` (made by `tests/fixtures/make_pytorch_fixtures.py`), PyTorch's weights are
//! imported, PyTorch's inputs are run on the CPU device, and the outputs (and, for attention, the
//! weights) must be within 1e-5 of PyTorch's.
//!
//! `TF_PARITY_DIR` names another fixture directory (default `tests/fixtures/pytorch`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Tensor, TensorData};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use tf_attention::{AttentionMask, Weights};
use tf_model::{
    DecoderOptions, TorchMhaConfig, TorchModuleConfig, TorchTransformerConfig,
    import_multi_head_attention, import_transformer_stacks,
};
use tf_tests::max_abs_diff;

const TOLERANCE: f32 = 1e-5;

/// A fixture's tensors: the state dict (re-serialised alone) and the named inputs and outputs.
struct Fixture {
    state_dict: Vec<u8>,
    data: BTreeMap<String, (Vec<usize>, Dtype, Vec<u8>)>,
}

impl Fixture {
    fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let file = SafeTensors::deserialize(&bytes).expect("a safetensors file");
        let is_data =
            |name: &str| name.starts_with("input.") || name == "output" || name == "weights";
        let params: Vec<(String, TensorView<'_>)> = file
            .iter()
            .filter(|(name, _)| !is_data(name))
            .map(|(name, view)| (name.to_string(), view))
            .collect();
        let data = file
            .iter()
            .filter(|(name, _)| is_data(name))
            .map(|(name, v)| {
                (
                    name.to_string(),
                    (v.shape().to_vec(), v.dtype(), v.data().to_vec()),
                )
            })
            .collect();
        Self {
            state_dict: safetensors::serialize(params, None).unwrap(),
            data,
        }
    }

    fn has(&self, name: &str) -> bool {
        self.data.contains_key(name)
    }

    fn float<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (shape, dtype, bytes) = &self.data[name];
        assert_eq!(*dtype, Dtype::F32, "{name}");
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(values, shape.clone()), device)
    }

    /// A uint8 mask (1 = padding / blocked), in our polarity (`true` = blocked).
    fn mask<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D, Bool> {
        let (shape, dtype, bytes) = &self.data[name];
        assert_eq!(*dtype, Dtype::U8, "{name}");
        let blocked: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
        Tensor::from_data(TensorData::new(blocked, shape.clone()), device)
    }
}

/// Max |ours − PyTorch| of each compared tensor.
fn transformer_errors(
    config: &TorchTransformerConfig,
    fixture: &Fixture,
    device: &Device,
) -> Vec<(&'static str, f32)> {
    let stacks = import_transformer_stacks(config, &fixture.state_dict, device).unwrap();
    let src_pad = fixture.mask::<2>("input.src_key_padding_mask", device);
    let tgt_pad = fixture.mask::<2>("input.tgt_key_padding_mask", device);
    let (memory, _) = stacks.encoder.forward(
        fixture.float("input.src", device),
        Some(src_pad.clone()),
        Weights::Omit,
    );
    let memory = stacks.decoder.memory(memory, Some(src_pad));
    let (output, _) = stacks.decoder.forward(
        fixture.float("input.tgt", device),
        &memory,
        DecoderOptions {
            tgt_pad_mask: Some(tgt_pad),
            ..Default::default()
        },
    );
    vec![(
        "output",
        max_abs_diff(output, fixture.float("output", device)),
    )]
}

fn mha_errors(
    config: &TorchMhaConfig,
    fixture: &Fixture,
    device: &Device,
) -> Vec<(&'static str, f32)> {
    let mha = import_multi_head_attention(config, &fixture.state_dict, device).unwrap();
    let pairs = fixture
        .has("input.attn_mask")
        .then(|| fixture.mask::<2>("input.attn_mask", device));
    let mask =
        AttentionMask::padding(fixture.mask("input.key_padding_mask", device)).with_pairs(pairs);
    let out = mha.forward(
        fixture.float("input.query", device),
        fixture.float("input.key", device),
        fixture.float("input.value", device),
        &mask,
        Weights::Return,
    );
    vec![
        (
            "output",
            max_abs_diff(out.context, fixture.float("output", device)),
        ),
        (
            "weights",
            max_abs_diff(out.weights.unwrap(), fixture.float("weights", device)),
        ),
    ]
}

fn fixture_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    match std::env::var_os("TF_PARITY_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            // Relative names are read from the workspace root, where `cargo test` is typed.
            if dir.is_relative() {
                workspace.join(dir)
            } else {
                dir
            }
        }
        None => workspace.join("tests/fixtures/pytorch"),
    }
}

#[test]
fn pytorch_parity() {
    let dir = fixture_dir();
    let device = Device::flex();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the fixture directory {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    cases.sort();
    assert!(
        !cases.is_empty(),
        "no *.safetensors fixture in {}",
        dir.display()
    );

    let mut failures = Vec::new();
    for path in &cases {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let json_path = path.with_extension("json");
        let json = std::fs::read_to_string(&json_path)
            .unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
        let config: TorchModuleConfig =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
        let fixture = Fixture::read(path);
        let errors = match &config {
            TorchModuleConfig::Transformer(c) => transformer_errors(c, &fixture, &device),
            TorchModuleConfig::Mha(c) => mha_errors(c, &fixture, &device),
        };
        let line: Vec<String> = errors
            .iter()
            .map(|(what, e)| format!("{what} {e:.2e}"))
            .collect();
        println!(
            "pytorch_parity {name}: max |ours - PyTorch| {}",
            line.join(", ")
        );
        for (what, error) in errors {
            if error.is_nan() || error > TOLERANCE {
                failures.push(format!("{name} {what}: {error:e} > {TOLERANCE:e}"));
            }
        }
    }
    assert!(failures.is_empty(), "outside tolerance: {failures:#?}");
}
