//! `cargo xtask sweep` end to end on a toy corpus: two variants trained, scored, tabled and
//! plotted; run again, nothing is trained twice, and a sweep of one of them still tables both.

use std::path::Path;
use std::process::Command;

use tf_tests::{temp_dir, write_toy_corpus};

#[test]
fn sweep_trains_scores_tables_and_plots_and_resumes_without_retraining() {
    let root = temp_dir("sweep");
    let data = root.join("data");
    write_toy_corpus(&data);
    let out = root.join("sweep");
    let xtask = Path::new(env!("CARGO_BIN_EXE_xtask"));
    let tf = xtask.with_file_name(format!("tf{}", std::env::consts::EXE_SUFFIX));
    assert!(
        tf.is_file(),
        "{} is missing: build the workspace (`cargo test --workspace` builds it)",
        tf.display()
    );
    let sweep_only = |only: &str| {
        Command::new(xtask)
            .args(["sweep", "--budget-minutes", "1", "--only", only])
            .arg("--out")
            .arg(&out)
            .arg("--data")
            .arg(&data)
            .args(["--test-split", "val"])
            .arg("--tf")
            .arg(&tf)
            .args([
                "--",
                "--vocab-size",
                "300",
                "--min-frequency",
                "1",
                "--max-tokens",
                "20",
                "--batch-tokens",
                "64",
                "--epochs",
                "2",
                "--eval-samples",
                "4",
                "--d-model",
                "32",
                "--d-ff",
                "64",
                "--layers",
                "1",
                "--alphas",
                "0.6,1",
            ])
            .output()
            .unwrap()
    };
    let sweep = || sweep_only("heads-8,rope");
    let first = sweep();
    let log = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{log}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for file in ["sweep.md", "sweep.csv", "sweep.png", "sweep.svg"] {
        assert!(out.join(file).is_file(), "{file} missing: {log}");
    }
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(
        rows[0].starts_with("heads-8,") && rows[1].starts_with("rope,"),
        "{csv}"
    );
    let config = std::fs::read_to_string(out.join("rope/config.json")).unwrap();
    assert!(config.contains("\"Rotary\""), "{config}");
    let table = std::fs::read_to_string(out.join("sweep.md")).unwrap();
    assert!(
        table.contains("--heads 8") && table.contains("--max-minutes 1"),
        "every row names its command: {table}"
    );
    for row in rows {
        let fields: Vec<&str> = row.split(',').collect();
        let epochs: usize = fields[2].parse().unwrap();
        let bleu: f64 = fields[7].parse().unwrap();
        assert_eq!(epochs, 2, "{row}");
        assert!((0.0..=100.0).contains(&bleu), "{row}");
    }

    // Again: both variants are done, so nothing trains; the table is the same.
    let again = sweep();
    assert!(again.status.success());
    let log = String::from_utf8_lossy(&again.stdout);
    assert_eq!(log.matches("done before").count(), 2, "{log}");
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap(), csv);

    // A sweep of one of them tables every variant finished under --out, not only that one.
    let one = sweep_only("rope");
    assert!(one.status.success());
    assert_eq!(std::fs::read_to_string(out.join("sweep.csv")).unwrap(), csv);

    // An unknown variant is refused with the names there are.
    let unknown = Command::new(xtask)
        .args(["sweep", "--only", "heads-3"])
        .arg("--out")
        .arg(&out)
        .arg("--tf")
        .arg(&tf)
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("no variant \"heads-3\"") && err.contains("heads-8"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
