//! An imported MarianMT model computes what `transformers` computes: for every fixture directory
//! in `tests/fixtures/marian` (made by `xtask/make_marian_fixtures.py` from random models of
//! different shapes: tied and untied embeddings, separate vocabularies, SiLU/ReLU/GELU, with and
//! without the embedding scale), the saved model is imported and run on the CPU device; the
//! encoder output and the logits must be within 1e-4 of `transformers`', and greedy decoding
//! and beam search (ranked as `generate` ranks) must give `model.generate`'s tokens.

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use serde_json::Value;
use tf_model::{BeamOptions, BeamRanking, GreedyOptions, MarianConfig, OutputLimit, import_marian};
use tf_tests::max_abs_diff;

const TOLERANCE: f32 = 1e-4;

fn fixture_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/marian")
}

fn cases() -> Vec<PathBuf> {
    let root = fixture_root();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", root.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("reference.safetensors").is_file())
        .collect();
    cases.sort();
    assert!(cases.len() >= 3, "too few fixtures in {}", root.display());
    cases
}

/// The reference tensors of one case.
struct Reference {
    bytes: Vec<u8>,
}

impl Reference {
    fn tensor(&self, name: &str) -> (Vec<usize>, Dtype, Vec<u8>) {
        let file = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = file.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        (view.shape().to_vec(), view.dtype(), view.data().to_vec())
    }

    fn float<const D: usize>(&self, name: &str, device: &Device) -> Tensor<D> {
        let (shape, dtype, bytes) = self.tensor(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        let values: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn ints(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let (shape, dtype, bytes) = self.tensor(name);
        assert_eq!(dtype, Dtype::I64, "{name}");
        let values = bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (shape, values)
    }

    fn int_tensor(&self, name: &str, device: &Device) -> Tensor<2, Int> {
        let (shape, values) = self.ints(name);
        Tensor::from_data(TensorData::new(values, shape), device)
    }

    fn mask(&self, name: &str, device: &Device) -> Tensor<2, Bool> {
        let (shape, dtype, bytes) = self.tensor(name);
        assert_eq!(dtype, Dtype::U8, "{name}");
        let blocked: Vec<bool> = bytes.iter().map(|&b| b != 0).collect();
        Tensor::from_data(TensorData::new(blocked, shape), device)
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn imported_marian_models_compute_what_transformers_computes() {
    let device = Device::flex();
    let mut failures = Vec::new();
    for dir in cases() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let marian: MarianConfig = serde_json::from_value(read_json(&dir.join("config.json")))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let weights = std::fs::read(dir.join("model.safetensors")).unwrap();
        let imported =
            import_marian(&marian, &weights, &device).unwrap_or_else(|e| panic!("{name}: {e}"));
        let model = imported.model;
        let reference = Reference {
            bytes: std::fs::read(dir.join("reference.safetensors")).unwrap(),
        };
        let src = reference.int_tensor("input.src", &device);
        let src_mask = reference.mask("input.src_mask", &device);
        let tgt = reference.int_tensor("input.tgt", &device);

        let memory = model.encode(src.clone(), Some(src_mask.clone()));
        let encoder_error = max_abs_diff(
            memory.output,
            reference.float::<3>("encoder_output", &device),
        );
        let logits = model.forward(src.clone(), tgt, Some(src_mask.clone()), None);
        let logits_error = max_abs_diff(logits, reference.float::<3>("logits", &device));
        println!("marian_parity {name}: encoder {encoder_error:.2e}, logits {logits_error:.2e}");
        for (what, error) in [("encoder output", encoder_error), ("logits", logits_error)] {
            if error.is_nan() || error > TOLERANCE {
                failures.push(format!("{name} {what}: {error:e} > {TOLERANCE:e}"));
            }
        }

        // `generate` with max_length L returns the start token and at most L - 1 more, the
        // last forced to EOS (forced_eos_token_id): at most L - 2 free tokens before it.
        let generated = read_json(&dir.join("generate.json"));
        let max_length = generated["max_length"].as_u64().unwrap() as usize;
        let eos = marian.eos_token_id as i64;
        let expected = |key: &str| -> Vec<Vec<usize>> {
            generated[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    row.as_array().unwrap()[1..]
                        .iter()
                        .map(|id| id.as_i64().unwrap())
                        .take_while(|&id| id != eos)
                        .map(|id| id as usize)
                        .collect()
                })
                .collect()
        };
        let options =
            GreedyOptions::new(marian.decoder_start(), marian.eos_token_id, max_length - 2);
        let ours = model
            .greedy_decode(src.clone(), Some(src_mask.clone()), &options)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        if ours != expected("greedy") {
            failures.push(format!(
                "{name} greedy: ours {ours:?}, transformers {:?}",
                expected("greedy")
            ));
        }
        // Beam 5 as generate searches: score log p / len^length_penalty, its stopping rule,
        // and EOS forced at max_length (the start token counts in max_length). GNMT's ranking
        // gives other translations of these sentences.
        let beam = BeamOptions {
            beam_size: 5,
            alpha: generated["length_penalty"].as_f64().unwrap(),
            max_output: OutputLimit {
                per_source_token: 0.0,
                extra: max_length - 1,
            },
            ranking: BeamRanking::Transformers { forced_eos: true },
            ..BeamOptions::new(marian.decoder_start(), marian.eos_token_id)
        };
        let ours: Vec<Vec<usize>> = model
            .beam_search(src, Some(src_mask), &beam)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_iter()
            .map(|hypotheses| hypotheses[0].tokens.clone())
            .collect();
        if ours != expected("beam5") {
            failures.push(format!(
                "{name} beam 5: ours {ours:?}, transformers {:?}",
                expected("beam5")
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn damaged_marian_files_are_refused_naming_the_tensor() {
    let device = Device::flex();
    let dir = &cases()[0];
    let marian: MarianConfig = serde_json::from_value(read_json(&dir.join("config.json"))).unwrap();
    let weights = std::fs::read(dir.join("model.safetensors")).unwrap();

    let err = import_marian(&marian, &weights[..weights.len() / 2], &device).unwrap_err();
    assert!(err.to_string().contains("not a safetensors file"), "{err}");

    let wider = MarianConfig {
        encoder_ffn_dim: marian.encoder_ffn_dim + 1,
        decoder_ffn_dim: marian.decoder_ffn_dim + 1,
        ..marian.clone()
    };
    let err = import_marian(&wider, &weights, &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tensor `model.encoder.layers.0.fc1.weight` has shape"),
        "{err}"
    );

    let unknown = MarianConfig {
        activation_function: "gelu_new".into(),
        ..marian.clone()
    };
    let err = import_marian(&unknown, &weights, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"gelu_new\""), "{err}");

    let uneven = MarianConfig {
        decoder_attention_heads: 1,
        ..marian
    };
    let err = import_marian(&uneven, &weights, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("decoder_attention_heads"), "{err}");
}

#[test]
fn the_tokenizer_gives_marian_tokenizers_ids_and_text() {
    use std::io::Read as _;
    use tf_train::data::marian_tokenizer::MarianTokenizer;
    let dir = fixture_root().join("tokenizer");
    let tokenizer = MarianTokenizer::load(&dir).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(dir.join("reference.json.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let ids = tokenizer.special_ids();
    assert_eq!(
        (ids.pad, ids.eos, ids.unk),
        (
            reference["pad_id"].as_u64().unwrap() as usize,
            reference["eos_id"].as_u64().unwrap() as usize,
            reference["unk_id"].as_u64().unwrap() as usize
        )
    );
    let as_ids = |value: &Value| -> Vec<usize> {
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|id| id.as_u64().unwrap() as usize)
            .collect()
    };
    let sentences = reference["sentences"].as_array().unwrap();
    assert!(sentences.len() >= 1000);
    let mut failures = Vec::new();
    let mut unknown = 0;
    for row in sentences {
        let text = row["text"].as_str().unwrap();
        let source = as_ids(&row["source_ids"]);
        let target = as_ids(&row["target_ids"]);
        unknown += source.iter().filter(|&&id| id == ids.unk).count();
        let ours = tokenizer.encode_source(text);
        if ours != source {
            failures.push(format!("source {text:?}: ours {ours:?}, Marian {source:?}"));
        }
        let ours = tokenizer.encode_target(text);
        if ours != target {
            failures.push(format!("target {text:?}: ours {ours:?}, Marian {target:?}"));
        }
        let decoded = tokenizer.decode_target(&target);
        if decoded != row["decoded"].as_str().unwrap() {
            failures.push(format!(
                "decode {text:?}: ours {decoded:?}, Marian {:?}",
                row["decoded"]
            ));
        }
    }
    assert!(
        unknown > 100,
        "the fixture should exercise unknown characters"
    );
    assert!(
        failures.is_empty(),
        "{} of {} differ: {:#?}",
        failures.len(),
        3 * sentences.len(),
        &failures[..failures.len().min(20)]
    );
}
