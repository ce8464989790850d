//! Helpers shared by the cross-crate integration tests in `tests/tests/`.

use burn::tensor::Tensor;

/// The values of a float tensor.
pub fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor
        .into_data()
        .try_to_vec::<f32>()
        .expect("float tensor")
}

pub use tf_attention::max_abs_diff;

/// A fresh, empty directory under the system's temporary directory, named for the test and
/// this process (not created: the code under test creates what it writes).
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A toy German–English corpus in `dir`: 20 training pairs (`train.de`, `train.en`, four
/// subjects × five actions) and the first 6 of them as `val.{de,en}.gz`; for runs of a few
/// seconds that exercise translation end to end.
pub fn write_toy_corpus(dir: &std::path::Path) {
    use std::fmt::Write as _;
    use std::io::Write as _;
    let subjects = [
        ("Ein Mann", "A man"),
        ("Eine Frau", "A woman"),
        ("Ein Mädchen", "A girl"),
        ("Zwei Hunde", "Two dogs"),
    ];
    let actions = [
        ("läuft über die Straße.", "walks across the street."),
        ("spielt im Schnee.", "plays in the snow."),
        ("sitzt auf einer Bank.", "sits on a bench."),
        ("isst einen Apfel.", "eats an apple."),
        ("fährt Fahrrad.", "rides a bike."),
    ];
    let (mut de, mut en) = (String::new(), String::new());
    for (s_de, s_en) in subjects {
        for (a_de, a_en) in actions {
            writeln!(de, "{s_de} {a_de}").unwrap();
            writeln!(en, "{s_en} {a_en}").unwrap();
        }
    }
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("train.de"), &de).unwrap();
    std::fs::write(dir.join("train.en"), &en).unwrap();
    for (lang, text) in [("de", &de), ("en", &en)] {
        let file = std::fs::File::create(dir.join(format!("val.{lang}.gz"))).unwrap();
        let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        gz.write_all(
            text.lines()
                .take(6)
                .collect::<Vec<_>>()
                .join("\n")
                .as_bytes(),
        )
        .unwrap();
        gz.finish().unwrap();
    }
}
