//! End-to-end training on the built-in tasks: the loss falls, checkpoints resume.

use burn::tensor::Device;
use tf_layers::TransformerLayerConfig;
use tf_model::{EmbeddingSharing, TransformerConfig};
use tf_tests::temp_dir;
use tf_train::training::observer::Silent;
use tf_train::{ModelDir, RunConfig, Start, Task, TaskKind, TrainSummary, TrainingConfig};

fn run(task: Task, steps: usize, checkpoint_every: usize) -> RunConfig {
    let vocab = task.vocab_size();
    RunConfig {
        model: TransformerConfig::new(vocab, vocab)
            .with_layer(
                TransformerLayerConfig::tiny()
                    .with_d_model(32)
                    .with_d_ff(64),
            )
            .with_n_encoder_layers(1)
            .with_n_decoder_layers(1)
            .with_max_len(task.max_len + 1)
            .with_embedding_sharing(EmbeddingSharing::All),
        task: task.into(),
        training: TrainingConfig {
            steps,
            batch_size: 32,
            warmup: 30,
            peak_lr: Some(3e-3),
            seed: 1,
            log_every: 10,
            eval_every: steps,
            eval_samples: 64,
            checkpoint_every,
            keep_checkpoints: 2,
            ..TrainingConfig::default()
        },
    }
}

fn new_run(config: &RunConfig, dir: &ModelDir) -> tf_train::Result<TrainSummary> {
    let start = Start::New {
        config,
        vocabulary: None,
    };
    tf_train::train(dir, start, &Device::flex(), &mut Silent)
}

fn resume(dir: &ModelDir) -> TrainSummary {
    tf_train::train(dir, Start::Resume, &Device::flex(), &mut Silent).unwrap()
}

/// Steps of the copy run: enough for a one-layer model to copy sequences of 2 to 6 symbols.
const COPY_STEPS: usize = 300;

#[test]
fn a_short_copy_run_learns_to_copy() {
    let task = Task::new(TaskKind::Copy, 6, 2, 6).unwrap();
    let dir = temp_dir("copy");
    let summary = new_run(&run(task, COPY_STEPS, COPY_STEPS), &ModelDir::new(&dir)).unwrap();
    println!(
        "copy: loss {:.3} -> {:.3}, exact match {:.3}",
        summary.first_loss, summary.last_loss, summary.validation.exact_match
    );
    assert!(
        summary.validation.exact_match >= 0.9,
        "exact match {} after {COPY_STEPS} steps",
        summary.validation.exact_match
    );
    assert!(summary.last_loss < 0.5 * summary.first_loss);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_continues_from_the_checkpoint_and_keeps_what_was_there() {
    let task = Task::new(TaskKind::Reverse, 5, 1, 4).unwrap();
    let dir = temp_dir("resume");
    let model_dir = ModelDir::new(&dir);
    let first = new_run(&run(task.clone(), 20, 10), &model_dir).unwrap();
    assert_eq!(first.steps, 20);

    // A second fresh run into the same directory is refused: nothing is overwritten.
    let weights = std::fs::read(dir.join("model.bpk")).unwrap();
    let err = new_run(&run(task.clone(), 40, 10), &model_dir).unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(std::fs::read(dir.join("model.bpk")).unwrap(), weights);

    // Resuming keeps the saved settings, so it stops at once at step 20...
    let again = resume(&model_dir);
    assert_eq!(again.steps, 20);
    // ...and with more steps saved in the config it continues from 20.
    let mut longer = model_dir.load_config().unwrap();
    longer.training.steps = 30;
    model_dir.save_config(&longer).unwrap();
    let resumed = resume(&model_dir);
    assert_eq!(resumed.steps, 30);
    let checkpoints: Vec<_> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .collect();
    assert_eq!(checkpoints.len(), 2, "keeps the newest two");
    let metrics = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(metrics.matches("step,split").count(), 1, "one header");
    assert!(metrics.lines().any(|l| l.starts_with("30,valid,")));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The mean loss of `model` on `examples`, without dropout (a plain device).
fn loss_on(model: &tf_model::Transformer, examples: &[tf_train::data::task::Example]) -> f32 {
    let device = Device::flex();
    tf_train::data::batch::Seq2SeqBatch::new(examples, &device)
        .loss(model, 0.0)
        .into_scalar::<f32>()
}

#[test]
fn a_fine_tune_starts_from_the_given_weights() {
    let task = Task::new(TaskKind::Copy, 6, 2, 6).unwrap();
    let mut config = run(task.clone(), 1, 1);
    // A rate so small that one step leaves every weight where it was.
    config.training.peak_lr = Some(1e-12);
    config.training.warmup = 1;
    let device = Device::flex();
    device.seed(999);
    let weights = config.model.init(&device);
    device.seed(config.training.seed);
    let fresh = config.model.init(&device);

    let dir = ModelDir::new(temp_dir("fine-tune"));
    let start = Start::FineTune {
        config: &config,
        vocabulary: None,
        weights: &weights,
    };
    tf_train::train(&dir, start, &device, &mut Silent).unwrap();
    let (_, tuned) = dir
        .load_model(&device, tf_train::store::model_dir::Dropout::Off)
        .unwrap();
    let examples = task.samples(64, 3);
    let (given, tuned, fresh) = (
        loss_on(&weights, &examples),
        loss_on(&tuned, &examples),
        loss_on(&fresh, &examples),
    );
    assert!((tuned - given).abs() < 1e-5, "{tuned} vs the given {given}");
    assert!(
        (fresh - given).abs() > 1e-3,
        "{fresh} vs {given}: pick another seed"
    );

    // Weights of another shape are refused before anything is written.
    let other = ModelDir::new(temp_dir("fine-tune-other"));
    let wider = config
        .model
        .clone()
        .with_layer(config.model.layer.clone().with_d_ff(128));
    let start = Start::FineTune {
        config: &config,
        vocabulary: None,
        weights: &wider.init(&device),
    };
    let err = tf_train::train(&other, start, &device, &mut Silent).unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot start from the given model"),
        "{err}"
    );
    assert!(!other.path().exists());
    let _ = std::fs::remove_dir_all(dir.path());
    let _ = std::fs::remove_dir_all(other.path());
}
