//! `tf_train::eval::bleu` against sacreBLEU: every corpus case of `tests/fixtures/bleu/cases.json`
//! (made by `tests/fixtures/make_bleu_fixtures.py`) scores within 0.01 and prints the same line;
//! every tokenizer case tokenizes identically.

use std::path::Path;

use serde_json::Value;
use tf_train::eval::bleu::{corpus_bleu, tokenize_13a};

fn fixtures() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bleu/cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn corpus_bleu_equals_sacrebleu() {
    let fixtures = fixtures();
    let cases = fixtures["corpus"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let score = corpus_bleu(&strings(&case["hyps"]), &strings(&case["refs"])).unwrap();
        let expected = case["score"].as_f64().unwrap();
        println!("{name}: ours {:.4}, sacreBLEU {expected:.4}", score.score);
        assert!(
            (score.score - expected).abs() <= 0.01,
            "{name}: {} vs {expected}",
            score.score
        );
        assert_eq!(
            score.to_string(),
            case["formatted"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn tokenize_13a_equals_sacrebleu() {
    let fixtures = fixtures();
    for pair in fixtures["tokenizer"].as_array().unwrap() {
        let (input, expected) = (pair[0].as_str().unwrap(), pair[1].as_str().unwrap());
        assert_eq!(tokenize_13a(input), expected, "input {input:?}");
    }
}
