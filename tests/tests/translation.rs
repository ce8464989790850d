//! Translation end to end on real Multi30k sentences: a tiny model overfits 20 pairs of the
//! training file within a few hundred steps, keeps its best checkpoint by validation BLEU, and
//! then translates them exactly, greedily and with beam search.
//!
//! Reads `../shared/data/multi30k` beside the repository, or the directory in `TF_MULTI30K`;
//! without either it says so and checks nothing.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use tf_layers::TransformerLayerConfig;
use tf_model::{EmbeddingSharing, OutputLimit, TransformerConfig};
use tf_train::data::translation::TranslationTask;
use tf_train::data::vocabulary::TranslationVocab;
use tf_train::eval::translate::{TranslateOptions, translate};
use tf_train::store::model_dir::Dropout;
use tf_train::training::observer::PrintReports;
use tf_train::{ModelDir, RunConfig, Start, TrainingConfig};

fn multi30k() -> Option<PathBuf> {
    let dir = std::env::var_os("TF_MULTI30K")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/multi30k")
        });
    dir.is_dir().then_some(dir)
}

#[test]
fn a_tiny_model_learns_twenty_real_pairs_and_translates_them_exactly() {
    let Some(data) = multi30k() else {
        eprintln!("skipped: no Multi30k beside the repository and TF_MULTI30K unset");
        return;
    };
    let root = std::env::temp_dir().join(format!("tf-tests-overfit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    // The first 20 training pairs of at most 10 German words, as their own train and val split.
    let full = tf_train::data::corpus::read_split(&data, "train", "de", "en").unwrap();
    let chosen: Vec<usize> = (0..full.len())
        .filter(|&i| full.source[i].split_whitespace().count() <= 10)
        .take(20)
        .collect();
    assert_eq!(chosen.len(), 20);
    for split in ["train", "val"] {
        for (lang, side) in [("de", &full.source), ("en", &full.target)] {
            let lines: String = chosen.iter().map(|&i| format!("{}\n", side[i])).collect();
            std::fs::write(root.join(format!("{split}.{lang}")), lines).unwrap();
        }
    }

    let mut task = TranslationTask {
        data: root.clone(),
        src: "de".into(),
        tgt: "en".into(),
        train_split: "train".into(),
        valid_split: "val".into(),
        vocab_size: 400,
        max_len: 80,
        batch_tokens: 240,
        vocabulary: Default::default(),
    };
    let pairs = task.read("train").unwrap();
    let vocab = task.learn_vocabulary(&pairs, 1).unwrap();
    task.vocab_size = vocab.len();
    let dir = ModelDir::new(root.join("model"));

    let config = RunConfig {
        model: TransformerConfig::new(task.vocab_size, task.vocab_size)
            .with_layer(
                TransformerLayerConfig::tiny()
                    .with_d_model(64)
                    .with_n_heads(4)
                    .with_d_ff(128),
            )
            .with_n_encoder_layers(2)
            .with_n_decoder_layers(2)
            .with_max_len(OutputLimit::default().tokens(task.max_len))
            .with_embedding_sharing(EmbeddingSharing::All),
        task: task.into(),
        training: TrainingConfig {
            steps: 400,
            epochs: Some(100),
            warmup: 60,
            peak_lr: Some(3e-3),
            seed: 7,
            eval_samples: 20,
            keep_checkpoints: 1,
            average_last: 1,
            ..TrainingConfig::default()
        },
    };
    let device = Device::flex();
    let start = Start::New {
        config: &config,
        vocabulary: Some(&vocab),
    };
    let summary = tf_train::train(&dir, start, &device, &mut PrintReports).unwrap();
    let best = summary.best.expect("a best model by validation BLEU");
    println!(
        "{} steps, loss {:.3} -> {:.3}, best BLEU {:.2} at step {}",
        summary.steps, summary.first_loss, summary.last_loss, best.bleu, best.step
    );
    assert!(summary.steps <= 400);
    assert!(best.bleu > 99.99, "best validation BLEU {}", best.bleu);

    let (_, model) = dir.load_model(&device, Dropout::AsConfigured).unwrap();
    let learned = TranslationVocab::from(vocab);
    for options in [TranslateOptions::greedy(), TranslateOptions::beam(4, 0.6)] {
        let out = translate(&model, &learned, &pairs.source, &options, &device, |_| {}).unwrap();
        assert!(out.truncated.is_empty());
        assert_eq!(out.sentences, pairs.target, "beam {}", options.beam_size);
    }
    std::fs::remove_dir_all(&root).unwrap();
}
