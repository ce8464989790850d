//! `tf distill`: sequence-level knowledge distillation. The teacher translates its training split
//! with beam search (kept in `TEACHER/distilled/beamB-alphaA/`, continued if stopped), then a student is
//! trained on those translations with `tf train`'s loop and flags.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use tf_model::{DEFAULT_ALPHA, DEFAULT_BEAM};
use tf_train::ModelDir;
use tf_train::data::distillation::{distilled_corpus, distilled_dir};
use tf_train::eval::length_penalty::check_alphas;
use tf_train::eval::translate::TranslateOptions;
use tf_train::store::model_dir::Dropout;

use crate::commands::train::{self, SYNTHETIC_FLAGS, TrainArgs};
use crate::progress::bar;

#[derive(Args, Debug)]
pub struct DistillArgs {
    /// The teacher: a translation model directory; its translations of the training split are
    /// kept in TEACHER/distilled/beamB-alphaA/, one folder per beam setting.
    #[arg(long)]
    teacher: PathBuf,
    /// Beams of the teacher's translations (Kim & Rush: 5).
    #[arg(long, default_value_t = DEFAULT_BEAM)]
    teacher_beam: usize,
    /// Length penalty exponent of the teacher's beam search.
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    teacher_alpha: f64,
    /// Sentences the teacher translates at once.
    #[arg(long, default_value_t = 64)]
    teacher_batch: usize,
    /// The student: `tf train`'s flags (its size, training length, ...), on the teacher's
    /// corpus.
    #[command(flatten)]
    student: TrainArgs,
}

/// Refuses flags that would choose the student's data or task: the teacher's corpus is its data.
pub fn refuse_flags(matches: &ArgMatches) -> Result<()> {
    let given = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    for id in [
        "task",
        "data",
        "resume",
        "train_split",
        "valid_split",
        "src",
        "tgt",
    ]
    .into_iter()
    .chain(SYNTHETIC_FLAGS)
    {
        if given(id) {
            bail!(
                "--{} does not apply to tf distill: the student learns translation from the \
                 teacher's corpus (TEACHER/distilled)",
                id.replace('_', "-")
            );
        }
    }
    Ok(())
}

pub fn run(args: DistillArgs, device: &Device) -> Result<()> {
    if args.teacher_beam == 0 || args.teacher_batch == 0 {
        bail!("--teacher-beam and --teacher-batch must be at least 1");
    }
    check_alphas(&[args.teacher_alpha]).context("--teacher-alpha")?;
    // Refuse an occupied student directory and a student config that does not validate before
    // the teacher spends minutes translating.
    ModelDir::new(args.student.out()).ensure_vacant()?;
    args.student.check_translation_preset()?;
    let teacher_dir = ModelDir::new(&args.teacher);
    let (config, teacher) = teacher_dir.load_model(device, Dropout::AsConfigured)?;
    let task = config.task.translation()?.clone();
    let vocab = teacher_dir.load_vocabulary()?;
    let options = TranslateOptions {
        batch_sentences: args.teacher_batch,
        ..TranslateOptions::beam(args.teacher_beam, args.teacher_alpha)
    };
    println!(
        "the teacher {} translates {}.{} (beam {}, length penalty {}) into {}",
        args.teacher.display(),
        task.train_split,
        task.src,
        args.teacher_beam,
        args.teacher_alpha,
        distilled_dir(&args.teacher, &options).display()
    );
    let progress = bar(0);
    let corpus = distilled_corpus(
        &args.teacher,
        &teacher,
        &vocab,
        &task,
        &options,
        device,
        |done, total| {
            progress.set_length(total as u64);
            progress.set_position(done as u64);
        },
    )?;
    progress.finish_and_clear();
    println!("the student learns from {}", corpus.display());
    train::run(args.student.translation_on(corpus), device)
}
