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
