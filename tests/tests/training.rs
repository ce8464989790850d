//! End-to-end training on the built-in tasks: the loss falls, checkpoints resume.

use burn::tensor::Device;
use tf_model::{EmbeddingSharing, TransformerConfig};
use tf_train::{ModelDir, RunConfig, Task, TaskKind, TrainingConfig};

fn run(task: Task, steps: usize, checkpoint_every: usize) -> RunConfig {
    let vocab = task.vocab_size();
    RunConfig {
        model: TransformerConfig::new(vocab, vocab)
            .with_d_model(32)
            .with_n_heads(2)
            .with_n_encoder_layers(1)
            .with_n_decoder_layers(1)
            .with_d_ff(64)
            .with_dropout(0.0)
            .with_max_len(task.max_len + 1)
            .with_embedding_sharing(EmbeddingSharing::All),
        task: task.into(),
        training: TrainingConfig {
            steps,
            epochs: None,
            time_limit_secs: None,
            batch_size: 32,
            warmup: 30,
            peak_lr: Some(3e-3),
            label_smoothing: 0.1,
            grad_clip: Some(1.0),
            seed: 1,
            log_every: 10,
            eval_every: steps,
            eval_samples: 32,
            checkpoint_every,
            keep_checkpoints: 2,
            average_last: 1,
        },
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tf-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_short_copy_run_lowers_the_loss_substantially() {
    let task = Task::new(TaskKind::Copy, 6, 2, 6).unwrap();
    let dir = temp_dir("copy");
    let summary = tf_train::train(
        &run(task, 150, 150),
        &ModelDir::new(&dir),
        &Device::flex(),
        false,
        false,
    )
    .unwrap();
    println!(
        "copy: loss {:.3} -> {:.3}",
        summary.first_loss, summary.last_loss
    );
    assert!(
        summary.last_loss < 0.5 * summary.first_loss,
        "loss fell only from {} to {}",
        summary.first_loss,
        summary.last_loss
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn resuming_continues_from_the_checkpoint_and_keeps_what_was_there() {
    let task = Task::new(TaskKind::Reverse, 5, 1, 4).unwrap();
    let dir = temp_dir("resume");
    let model_dir = ModelDir::new(&dir);
    let device = Device::flex();
    let first = tf_train::train(
        &run(task.clone(), 20, 10),
        &model_dir,
        &device,
        false,
        false,
    )
    .unwrap();
    assert_eq!(first.steps, 20);

    // A second fresh run into the same directory is refused: nothing is overwritten.
    let weights = std::fs::read(dir.join("model.bpk")).unwrap();
    let err = tf_train::train(
        &run(task.clone(), 20, 10),
        &model_dir,
        &device,
        false,
        false,
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    assert_eq!(std::fs::read(dir.join("model.bpk")).unwrap(), weights);

    // Resuming keeps the saved settings, so it stops at once at step 20...
    let again =
        tf_train::train(&run(task.clone(), 40, 10), &model_dir, &device, true, false).unwrap();
    assert_eq!(again.steps, 20);
    // ...and with more steps saved in the config it continues from 20.
    let mut longer = model_dir.load_config().unwrap();
    longer.training.steps = 30;
    model_dir.save_config(&longer).unwrap();
    let resumed = tf_train::train(&longer, &model_dir, &device, true, false).unwrap();
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
