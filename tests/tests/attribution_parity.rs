//! Our attributions and activation patching compute what an independent PyTorch implementation
//! computes on the same weights: for every fixture pair `NAME.safetensors` + `NAME.json` made by
//! `xtask/attribution_reference.py` (a random `nn.Transformer` with token embeddings, and every
//! method's result), the weights are imported as `tf import-torch` imports them and every
//! `tf attribute` method and `tf patch` result must be within 1e-4 of PyTorch's.
//!
//! The committed fixtures are always checked. Where `python3` (or `TF_PYTHON`) has torch and
//! safetensors, the reference is also rerun into a fresh directory and checked; elsewhere that
//! part says it is skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::Device;
use safetensors::SafeTensors;
use serde_json::Value;
use tf_inspect::attribution::{AttributionMethod, attribute};
use tf_inspect::patching::activation_patching;
use tf_inspect::tokens::Tokens;
use tf_model::{AttentionKind, TorchModuleConfig, Transformer, import_transformer};

const TOLERANCE: f32 = 1e-4;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/attribution")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no fixtures in {}", dir.display());
    cases
}

fn ids(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .expect("a list of ids")
        .iter()
        .map(|id| id.as_u64().expect("an id") as usize)
        .collect()
}

fn matrix(value: &Value) -> Vec<Vec<f32>> {
    value
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            row.as_array()
                .expect("a row")
                .iter()
                .map(|x| x.as_f64().expect("a number") as f32)
                .collect()
        })
        .collect()
}

/// Asserts every value is within the tolerance; returns the largest difference.
fn assert_close(ours: &[Vec<f32>], theirs: &[Vec<f32>], what: &str) -> f32 {
    assert_eq!(ours.len(), theirs.len(), "{what}: rows");
    let mut largest = 0f32;
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert_eq!(a.len(), b.len(), "{what}: row {i}");
        for (j, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= TOLERANCE * y.abs().max(1.0),
                "{what} [{i}][{j}]: ours {x}, PyTorch {y}"
            );
            largest = largest.max((x - y).abs());
        }
    }
    largest
}

/// The fixture's model, imported on `device`.
fn model(json: &Value, weights: &[u8], device: &Device) -> Transformer {
    let torch = match serde_json::from_value(json["config"].clone()).expect("a module config") {
        TorchModuleConfig::Transformer(torch) => torch,
        TorchModuleConfig::Mha(_) => panic!("a transformer fixture"),
    };
    let file = SafeTensors::deserialize(weights).expect("a safetensors file");
    let vocab = file.tensor("src_embedding.weight").unwrap().shape()[0];
    let config = torch.transformer(vocab, vocab).unwrap().with_max_len(16);
    import_transformer(&torch, &config, weights, device)
        .expect("the fixture's weights")
        .module
}

fn check_case(json_path: &Path) {
    let name = json_path.file_stem().unwrap().to_string_lossy().to_string();
    let json: Value = serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    let weights = std::fs::read(json_path.with_extension("safetensors")).unwrap();
    let device = Device::flex().autodiff();
    let model = model(&json, &weights, &device);
    let (source, target) = (ids(&json["source"]), ids(&json["target"]));
    let max_output = json["max_output"].as_u64().unwrap() as usize;
    let steps = json["ig_steps"].as_u64().unwrap() as usize;
    let label = |id: usize| id.to_string();

    for (method, expected) in json["attributions"].as_object().expect("methods") {
        let method = match method.as_str() {
            "attention" => AttributionMethod::Attention,
            "rollout" => AttributionMethod::Rollout,
            "norm" => AttributionMethod::Norm,
            "alti+" => AttributionMethod::AltiPlus,
            "value-zeroing" => AttributionMethod::ValueZeroing,
            "gradient" => AttributionMethod::Gradient,
            "gradient-x-input" => AttributionMethod::GradientTimesInput,
            "integrated-gradients" => AttributionMethod::IntegratedGradients { steps },
            other => panic!("{name}: unknown method {other}"),
        };
        let ours = attribute(
            &model,
            &source,
            Some(&target),
            max_output,
            method,
            Tokens::ours(&label),
            &device,
        )
        .unwrap();
        let what = format!("{name} {}", method.name());
        let source = assert_close(&ours.source, &matrix(&expected["source"]), &what);
        let target = assert_close(&ours.target, &matrix(&expected["target"]), &what);
        eprintln!("{what}: max error {:.1e}", source.max(target));
    }

    let expected = &json["patching"];
    let corrupt = ids(&json["corrupt"]);
    let ours = activation_patching(
        &model,
        &source,
        &corrupt,
        Some(&target),
        max_output,
        Tokens::ours(&label),
        &device,
    )
    .unwrap();
    let corrupt_translation: Vec<String> = ids(&expected["corrupt_translation"])
        .into_iter()
        .map(label)
        .collect();
    assert_eq!(ours.corrupt_translation, corrupt_translation, "{name}");
    let scores = [
        (ours.clean_score, &expected["clean_score"]),
        (ours.corrupt_score, &expected["corrupt_score"]),
    ];
    let mut largest = 0f32;
    for (ours, theirs) in scores {
        let theirs = theirs.as_f64().unwrap() as f32;
        largest = largest.max(assert_close(&[vec![ours]], &[vec![theirs]], &name));
    }
    largest = largest.max(assert_close(
        &ours.encoder_residual.effect,
        &matrix(&expected["encoder_residual"]),
        &format!("{name} encoder residual"),
    ));
    largest = largest.max(assert_close(
        &ours.decoder_residual.effect,
        &matrix(&expected["decoder_residual"]),
        &format!("{name} decoder residual"),
    ));
    for heads in &ours.heads {
        let key = match heads.kind {
            AttentionKind::EncoderSelf => "encoder_self",
            AttentionKind::DecoderSelf => "decoder_self",
            AttentionKind::Cross => "cross",
        };
        let what = format!("{name} heads {key}");
        largest = largest.max(assert_close(
            &heads.effect,
            &matrix(&expected["heads"][key]),
            &what,
        ));
    }
    eprintln!("{name} patching: max error {largest:.1e}");
}

#[test]
fn attributions_and_patching_match_the_committed_pytorch_reference() {
    for case in cases(&fixture_dir()) {
        check_case(&case);
    }
}

#[test]
fn attributions_and_patching_match_a_fresh_run_of_the_pytorch_reference() {
    let python = std::env::var("TF_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_torch = Command::new(&python)
        .args(["-c", "import torch, safetensors"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_torch {
        eprintln!("skipped: {python} has no torch and safetensors (set TF_PYTHON to one that has)");
        return;
    }
    let out_dir = std::env::temp_dir().join(format!("tf-attribution-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../xtask/attribution_reference.py");
    let run = Command::new(&python)
        .arg(&script)
        .arg(&out_dir)
        .output()
        .expect("the reference runs");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for case in cases(&out_dir) {
        check_case(&case);
    }
    std::fs::remove_dir_all(&out_dir).ok();
}
