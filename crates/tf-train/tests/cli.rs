//! The `tf` program end to end: train, predict, eval, and its errors.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn tf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(args)
        .output()
        .expect("tf runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn trained_model(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let out = tf(&[
        "train",
        "--task",
        "copy",
        "--out",
        dir.to_str().unwrap(),
        "--steps",
        "30",
        "--symbols",
        "5",
        "--max-len",
        "5",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--layers",
        "1",
        "--d-ff",
        "32",
        "--batch-size",
        "16",
        "--eval-every",
        "30",
        "--eval-samples",
        "16",
    ]);
    assert!(out.status.success(), "train failed: {}", stderr(&out));
    assert!(stdout(&out).contains("done: 30 steps"), "{}", stdout(&out));
    dir
}

fn model_arg(dir: &Path) -> &str {
    dir.to_str().unwrap()
}

#[test]
fn train_then_predict_and_eval() {
    let dir = trained_model("flow");
    for file in ["config.json", "model.bpk", "metrics.csv", "latest"] {
        assert!(dir.join(file).is_file(), "{file} missing");
    }

    let out = tf(&["predict", "--model", model_arg(&dir), "3 1 4", "0 2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "one output line per input: {lines:?}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_tf"))
        .args(["predict", "--model", model_arg(&dir)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"3 1 4\n0 2\n1\n")
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success());
    assert_eq!(stdout(&piped).lines().count(), 3);
    assert_eq!(stdout(&piped).lines().take(2).collect::<Vec<_>>(), lines);

    let out = tf(&["eval", "--model", model_arg(&dir), "--samples", "20"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("exact match"), "{}", stdout(&out));
    assert!(stdout(&out).contains("token accuracy"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_a_clear_error_with_a_nonzero_exit() {
    let dir = trained_model("errors");
    let out = tf(&["predict", "--model", model_arg(&dir), "3 9 4"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("'9' is not a symbol of this task"),
        "{}",
        stderr(&out)
    );

    let out = tf(&["predict", "--model", model_arg(&dir), "1 2 3 4 1 2 3 4"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("at most 5"), "{}", stderr(&out));

    let out = tf(&["eval", "--model", "/nonexistent/model"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a model directory"),
        "{}",
        stderr(&out)
    );

    let out = tf(&["train", "--out", model_arg(&dir), "--steps", "5"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--resume"), "{}", stderr(&out));

    let out = tf(&["train", "--out", "/tmp/never", "--heads", "3"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("divisible"), "{}", stderr(&out));
    assert!(
        !std::path::Path::new("/tmp/never").exists(),
        "nothing written for a bad config"
    );

    let out = tf(&[
        "predict",
        "--model",
        model_arg(&dir),
        "--device",
        "tpu",
        "1",
    ]);
    assert!(!out.status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The state dict of a PyTorch parity fixture (its inputs and outputs left out), with
/// `extra` tensors added, written to `path`.
fn torch_state_dict(path: &Path, extra: &[(&str, Vec<usize>)]) {
    use safetensors::tensor::{Dtype, TensorView};
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pytorch/transformer_post_relu_2x2.safetensors");
    let bytes = std::fs::read(fixture).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let extra_data: Vec<Vec<u8>> = extra
        .iter()
        .map(|(_, shape)| {
            (0..shape.iter().product::<usize>())
                .flat_map(|i| ((i % 7) as f32 * 0.1).to_le_bytes())
                .collect()
        })
        .collect();
    let mut tensors: Vec<(String, TensorView<'_>)> = file
        .iter()
        .filter(|(name, _)| !name.starts_with("input.") && *name != "output")
        .map(|(name, view)| (name.to_string(), view))
        .collect();
    for ((name, shape), data) in extra.iter().zip(&extra_data) {
        tensors.push((
            name.to_string(),
            TensorView::new(Dtype::F32, shape.clone(), data).unwrap(),
        ));
    }
    std::fs::write(path, safetensors::serialize(tensors, None).unwrap()).unwrap();
}

#[test]
fn import_torch_writes_a_model_directory_the_other_commands_run() {
    let dir = std::env::temp_dir().join(format!("tf-cli-import-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/pytorch/transformer_post_relu_2x2.json");
    let config = config.to_str().unwrap();
    // reverse with 10 symbols: 13 tokens; the fixture's d_model is 32.
    let with_embeddings = dir.join("with.safetensors");
    torch_state_dict(
        &with_embeddings,
        &[
            ("src_embedding.weight", vec![13, 32]),
            ("tgt_embedding.weight", vec![13, 32]),
        ],
    );
    let model = dir.join("model");
    let args = |state: &Path, out: &Path| {
        vec![
            "import-torch".to_string(),
            "--state-dict".into(),
            state.to_str().unwrap().into(),
            "--config".into(),
            config.into(),
            "--out".into(),
            out.to_str().unwrap().into(),
        ]
    };
    let run = |args: Vec<String>| tf(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = run(args(&with_embeddings, &model));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("2 encoder + 2 decoder layers, d_model 32, 4 heads"));
    assert!(!stdout(&out).contains("note:"), "{}", stdout(&out));
    let predicted = tf(&["predict", "--model", model_arg(&model), "3 1 4"]);
    assert!(predicted.status.success(), "{}", stderr(&predicted));
    assert_eq!(stdout(&predicted).lines().count(), 1);

    // Without embeddings the directory is written, and the output says what is missing.
    let stacks_only = dir.join("stacks.safetensors");
    torch_state_dict(&stacks_only, &[]);
    let out = run(args(&stacks_only, &dir.join("stacks")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("no src_embedding.weight or tgt_embedding.weight"),
        "{}",
        stdout(&out)
    );

    // The same directory again, a file with other tensors, an attention module: errors.
    let again = run(args(&with_embeddings, &model));
    assert!(!again.status.success());
    assert!(stderr(&again).contains("already holds a model"));
    let fixture = Path::new(config).with_extension("safetensors");
    let extra = run(args(&fixture, &dir.join("extra")));
    assert!(!extra.status.success());
    assert!(
        stderr(&extra).contains("unexpected tensor `input.src` of shape [3, 7, 32]"),
        "{}",
        stderr(&extra)
    );
    assert!(!dir.join("extra").join("config.json").exists());
    let mha_config = config.replace("transformer_post_relu_2x2", "mha_self_e32_h4");
    let mut mha_args = args(&with_embeddings, &dir.join("mha"));
    mha_args[4] = mha_config;
    let mha = run(mha_args);
    assert!(!mha.status.success());
    assert!(
        stderr(&mha).contains("nn.MultiheadAttention"),
        "{}",
        stderr(&mha)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
