//! What `tf train` promises about its model directory: killed with SIGKILL at any moment and
//! resumed, a run ends with the weights of the uninterrupted run, bit for bit, and the same
//! losses in its metrics log, and no kill leaves weights that do not load; two runs started on
//! one directory at once cannot both write it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use tf_train::ModelDir;
use tf_train::store::average::parameter_values;
use tf_train::store::model_dir::Dropout;

const TRIALS: u64 = 10;

fn tf() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tf"))
}

/// A small copy run with dropout (so that the random stream matters), a checkpoint every 25
/// steps, into `out`.
fn train_args(out: &Path) -> Vec<String> {
    [
        "train",
        "--task",
        "copy",
        "--symbols",
        "6",
        "--max-len",
        "6",
        "--d-model",
        "16",
        "--heads",
        "2",
        "--layers",
        "1",
        "--d-ff",
        "32",
        "--steps",
        "150",
        "--batch-size",
        "16",
        "--checkpoint-every",
        "25",
        "--eval-every",
        "50",
        "--eval-samples",
        "16",
        "--seed",
        "7",
        "--keep-checkpoints",
        "2",
        "--out",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([out.display().to_string()])
    .collect()
}

fn run(args: &[String]) -> Output {
    tf().args(args).output().expect("tf runs")
}

/// The (step, split, loss) of every row of a metrics log: what a resumed run must reproduce
/// (throughput and wall time differ between runs).
fn losses(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').take(3).collect::<Vec<_>>().join(","))
        .collect()
}

/// Every parameter of the directory's model, to compare bit for bit.
fn parameters(dir: &Path) -> Vec<Vec<f32>> {
    let (_, model) = ModelDir::new(dir)
        .load_model(&Device::flex(), Dropout::AsConfigured)
        .unwrap();
    parameter_values(&model)
}

/// A small deterministic generator for the kill times.
fn next(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

#[test]
fn runs_killed_at_random_moments_resume_to_the_uninterrupted_result() {
    let root = std::env::temp_dir().join(format!("tf-killed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    let reference = root.join("reference");
    let started = Instant::now();
    let out = run(&train_args(&reference));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let duration = started.elapsed();
    let weights = parameters(&reference);
    let reference_losses = losses(&reference);

    let mut state = 2024;
    let mut resumed_mid_run = 0;
    for trial in 0..TRIALS {
        let dir: PathBuf = root.join(format!("trial-{trial}"));
        let wait = Duration::from_millis(next(&mut state) % (duration.as_millis() as u64).max(1));
        let mut child = tf()
            .args(train_args(&dir))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(wait);
        let finished_first = child.try_wait().unwrap().is_some();
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        // Whatever the moment, the weights on disk load.
        if dir.join("model.bpk").is_file() {
            ModelDir::new(&dir)
                .load_model(&Device::flex(), Dropout::AsConfigured)
                .unwrap_or_else(|err| panic!("trial {trial}: killed after {wait:?}: {err}"));
        }
        if !finished_first && dir.join("config.json").is_file() {
            resumed_mid_run += 1;
        }
        let args = if dir.join("config.json").is_file() {
            vec![
                "train".into(),
                "--resume".into(),
                "--out".into(),
                dir.display().to_string(),
            ]
        } else {
            train_args(&dir) // killed before it wrote anything: start it again
        };
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "trial {trial}, killed after {wait:?}: {stderr}"
        );
        // Restoring the optimizer state on a CPU run must not start the GPU backend (whose
        // Vulkan drivers print an error of their own on a machine without a display).
        assert!(
            !stderr.contains("XDG_RUNTIME_DIR"),
            "trial {trial}: {stderr}"
        );
        assert!(
            parameters(&dir) == weights,
            "trial {trial}, killed after {wait:?}: weights differ from the uninterrupted run"
        );
        assert_eq!(
            losses(&dir),
            reference_losses,
            "trial {trial}, killed after {wait:?}"
        );
    }
    println!("{TRIALS} kills, {resumed_mid_run} of them mid-run; every resume bit-exact");
    assert!(
        resumed_mid_run >= TRIALS / 2,
        "too few kills landed inside a run"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn two_runs_started_at_once_on_one_directory_cannot_both_write_it() {
    let root = std::env::temp_dir().join(format!("tf-two-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let dir = root.join("run");
    for attempt in 0..3 {
        let _ = std::fs::remove_dir_all(&dir);
        let spawn = || {
            tf().args(train_args(&dir))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let (first, second) = (spawn(), spawn());
        let outputs = [
            first.wait_with_output().unwrap(),
            second.wait_with_output().unwrap(),
        ];
        let succeeded = outputs.iter().filter(|o| o.status.success()).count();
        assert_eq!(
            succeeded, 1,
            "attempt {attempt}: exactly one run may write the directory"
        );
        let refused = outputs.iter().find(|o| !o.status.success()).unwrap();
        let message = String::from_utf8_lossy(&refused.stderr);
        assert!(
            message.contains("another program is writing") || message.contains("already holds"),
            "attempt {attempt}: {message}"
        );
    }
    std::fs::remove_dir_all(&root).unwrap();
}

/// Unmounts the small file system of a test when it ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_full_disk_while_checkpointing_keeps_the_last_checkpoint_loadable_and_says_so() {
    let mount = std::env::temp_dir().join(format!("tf-full-disk-{}", std::process::id()));
    std::fs::create_dir_all(&mount).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mount)
        .stderr(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        let _ = std::fs::remove_dir_all(&mount);
        eprintln!("skipped: cannot mount a small tmpfs here (it needs root)");
        return;
    }
    let _unmount = Mounted(mount.clone());
    let dir = mount.join("run");
    let out = run(&train_args(&dir));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Ask for more steps, fill the disk, and resume: the next checkpoint cannot be written.
    let config_path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["training"]["steps"] = serde_json::json!(300);
    std::fs::write(&config_path, config.to_string()).unwrap();
    {
        use std::io::Write;
        let mut filler = std::fs::File::create(mount.join("filler")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        let _ = filler.sync_all();
    }
    let out = run(&[
        "train".into(),
        "--resume".into(),
        "--out".into(),
        dir.display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("No space left on device"), "{stderr}");

    // What was there still loads: the model and the last complete checkpoint.
    let model_dir = ModelDir::new(&dir);
    model_dir
        .load_model(&Device::flex(), Dropout::AsConfigured)
        .unwrap();
    let names = model_dir.checkpoint_names().unwrap();
    assert_eq!(
        names.last().map(String::as_str),
        Some("step-00000150"),
        "{names:?}"
    );
    model_dir
        .load_checkpoint_model("step-00000150", &Device::flex())
        .unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "half-written files left: {leftovers:?}"
    );
}
