//! Every file the program reads, mutated: truncated at many lengths, bytes flipped at seeded
//! random places, numbers replaced by huge, negative or non-finite ones, emptied. Each case must
//! end in a value or an error: never a panic, a hang or an absurd allocation. A mutation-based
//! property test that runs on stable Rust in CI in seconds (`--nocapture` prints the counts).
//!
//! Inputs that once broke a reader are kept in `tests/fixtures/mutated/` and replayed first.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::Device;
use tf_model::{TorchModuleConfig, import_transformer};
use tf_train::data::corpus::read_lines;
use tf_train::data::subword::SubwordVocab;
use tf_train::eval::bleu::corpus_bleu;
use tf_train::store::checksum::checksum_path;
use tf_train::store::model_dir::Dropout;
use tf_train::training::metrics::MetricsLog;
use tf_train::{ModelDir, RunConfig, Task, TaskKind, TrainingConfig};

/// Mutations of each file; every one is a separate case.
const FLIPS: usize = 60;
/// The slowest a single case may be.
const CASE_LIMIT: Duration = Duration::from_secs(5);

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
}

/// The mutations of `original`: empty, truncations, flipped bytes, and (for text) every number
/// replaced in turn by values a reader must refuse or survive.
fn mutations(original: &[u8], seed: u64) -> Vec<(String, Vec<u8>)> {
    let mut cases = vec![("empty".to_string(), Vec::new())];
    let n = original.len();
    for cut in [
        1,
        2,
        7,
        16,
        64,
        n / 3,
        n / 2,
        n - n / 10,
        n.saturating_sub(1),
    ] {
        if cut < n {
            cases.push((format!("cut at {cut}"), original[..cut].to_vec()));
        }
    }
    let mut rng = Lcg(seed);
    for _ in 0..FLIPS {
        let mut bytes = original.to_vec();
        let at = rng.below(n);
        bytes[at] ^= 1 << rng.below(8);
        cases.push((format!("bit flipped at {at}"), bytes));
    }
    if let Ok(text) = std::str::from_utf8(original) {
        let number = regex::Regex::new(r"-?\d+(\.\d+)?([eE][-+]?\d+)?").unwrap();
        for (i, m) in number.find_iter(text).enumerate().take(40) {
            for value in [
                "1e30",
                "-1",
                "18446744073709551615",
                "100000000000",
                "NaN",
                "0",
            ] {
                let mutated = format!("{}{value}{}", &text[..m.start()], &text[m.end()..]);
                cases.push((format!("number {i} = {value}"), mutated.into_bytes()));
            }
        }
    }
    cases
}

/// Runs `read` on every mutation of `original` written to `path`, and on the kept inputs that
/// once failed; fails on a panic or a slow case. Returns (cases, refused).
fn check(
    format: &str,
    original: &[u8],
    path: &Path,
    read: &dyn Fn(&Path) -> Result<(), String>,
) -> (usize, usize) {
    let kept = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/mutated")
        .join(format);
    let mut cases: Vec<(String, Vec<u8>)> = std::fs::read_dir(&kept)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| {
                    (
                        format!("kept {:?}", e.file_name()),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    cases.extend(mutations(original, format.len() as u64 * 7919));
    let mut refused = 0;
    for (name, bytes) in &cases {
        std::fs::write(path, bytes).unwrap();
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| read(path)));
        let took = started.elapsed();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(_)) => refused += 1,
            Err(_) => {
                // Keep the input, to be committed under fixtures/mutated/FORMAT/.
                let failures = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                    .join("mutated-failures")
                    .join(format);
                std::fs::create_dir_all(&failures).unwrap();
                let file = failures.join(name.replace(' ', "-"));
                std::fs::write(&file, bytes).unwrap();
                panic!(
                    "{format}: {name}: the reader panicked (input kept as {})",
                    file.display()
                )
            }
        }
        assert!(took < CASE_LIMIT, "{format}: {name}: took {took:?}");
    }
    std::fs::write(path, original).unwrap();
    println!(
        "{format}: {} cases, {refused} refused with an error, none panicked",
        cases.len()
    );
    (cases.len(), refused)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = tf_tests::temp_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A trained-looking model directory: config, weights with their checksum, a checkpoint.
fn model_dir(root: &Path) -> (ModelDir, RunConfig) {
    let device = Device::flex();
    let task = Task::new(TaskKind::Reverse, 6, 1, 6).unwrap();
    let config = RunConfig {
        model: task.tiny_model(),
        task: task.into(),
        training: TrainingConfig::default(),
    };
    let dir = ModelDir::new(root.join("model"));
    dir.save_model(&config, &config.model.init(&device))
        .unwrap();
    (dir, config)
}

#[test]
fn mutated_files_are_read_or_refused_never_a_panic() {
    let root = temp_dir("mutated");
    let device = Device::flex();
    let (dir, _) = model_dir(&root);
    let mut total = 0;
    let mut tally = |(cases, _refused): (usize, usize)| total += cases;

    // config.json
    let config_path = dir.path().join("config.json");
    let config = std::fs::read(&config_path).unwrap();
    let reader = |_: &Path| dir.load_config().map(|_| ()).map_err(|e| e.to_string());
    tally(check("config.json", &config, &config_path, &reader));

    // model.bpk, checked against its checksum, and without one (the parser itself).
    let weights_path = dir.path().join("model.bpk");
    let weights = std::fs::read(&weights_path).unwrap();
    let load = |_: &Path| {
        dir.load_model(&device, Dropout::AsConfigured)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tally(check("model.bpk", &weights, &weights_path, &load));
    std::fs::remove_file(checksum_path(&weights_path)).unwrap();
    tally(check("model.bpk-unchecked", &weights, &weights_path, &load));

    // metrics.csv as a resumed run opens it.
    let metrics_path = root.join("metrics.csv");
    let metrics = b"step,split,loss,lr,token_accuracy,exact_match,target_tokens_per_sec,elapsed_secs,epoch,bleu\n1,train,2.500000,1.000000e-4,,,5000,0.1,,\n50,valid,1.200000,5.000000e-4,0.500000,0.100000,,3.0,,\n";
    let open = |path: &Path| {
        MetricsLog::open_after(path, 25)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tally(check("metrics.csv", metrics, &metrics_path, &open));

    // best.json
    let best_path = dir.path().join("best.json");
    let best = br#"{"step": 452, "bleu": 31.25, "averaged": ["step-00000226", "step-00000452"]}"#;
    let read_best = |_: &Path| dir.best().map(|_| ()).map_err(|e| e.to_string());
    tally(check("best.json", best, &best_path, &read_best));

    // tokenizer.json
    let sentences = [
        "Ein Mann fährt Rad.",
        "Zwei Hunde spielen im Schnee.",
        "A man rides.",
    ];
    let vocab = SubwordVocab::train(&sentences, 120, 1).unwrap();
    let tokenizer_path = root.join("tokenizer.json");
    vocab.save(&tokenizer_path).unwrap();
    let tokenizer = std::fs::read(&tokenizer_path).unwrap();
    let load_vocab = |path: &Path| {
        SubwordVocab::load(path)
            .and_then(|v| v.encode("Ein Hund."))
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tally(check(
        "tokenizer.json",
        &tokenizer,
        &tokenizer_path,
        &load_vocab,
    ));

    // A PyTorch state dict, imported into a model.
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/pytorch");
    let torch_json =
        std::fs::read_to_string(fixtures.join("transformer_post_relu_2x2.json")).unwrap();
    let TorchModuleConfig::Transformer(torch) = serde_json::from_str(&torch_json).unwrap() else {
        panic!("a transformer fixture")
    };
    let model_config = torch.transformer(11, 11).unwrap().with_max_len(16);
    // The fixture also holds the parity test's inputs and outputs: keep the state dict alone.
    let fixture = std::fs::read(fixtures.join("transformer_post_relu_2x2.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&fixture).unwrap();
    let parameters: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| !name.starts_with("input.") && !name.starts_with("output"))
        .collect();
    let state_dict = safetensors::serialize(parameters, None).unwrap();
    let safetensors_path = root.join("state.safetensors");
    let import = |path: &Path| {
        let bytes = std::fs::read(path).unwrap();
        import_transformer(&torch, &model_config, &bytes, &device)
            .map(|m| assert!(m.module.num_params() > 0))
            .map_err(|e| e.to_string())
    };
    tally(check(
        "safetensors",
        &state_dict,
        &safetensors_path,
        &import,
    ));

    // A corpus or BLEU file: lines of UTF-8 text, gzipped or not.
    let text_path = root.join("val.de");
    let text = "Ein Mann läuft.\nZwei Mädchen spielen.\nDie Straße ist nass.\n".as_bytes();
    let bleu = |path: &Path| {
        let lines = read_lines(path).map_err(|e| e.to_string())?;
        corpus_bleu(&lines, &lines)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    tally(check("corpus", text, &text_path, &bleu));

    println!("{total} mutated files read or refused; none panicked");
    std::fs::remove_dir_all(&root).unwrap();
}
