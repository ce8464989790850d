//! Everything a run is made of, saved as the model directory's `config.json`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use tf_layers::PositionalEncodingKind;
use tf_model::{EmbeddingSharing, TransformerConfig};

use crate::data::task::{SpecialIds, Task};
use crate::data::translation::TranslationTask;
use crate::error::{Result, ResultExt, bail};
use crate::eval::length_penalty::{CANDIDATE_ALPHAS, check_alphas};

/// How to train. [`Default`] is the synthetic tasks' recipe
/// ([`Preset::synthetic`](crate::training::preset::Preset::synthetic) adjusts it per task).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingConfig {
    /// Optimizer steps (at most, for runs that also count epochs).
    pub steps: usize,
    /// Passes over the training data (translation); `None` = steps alone decide.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Stop after this much training wall time (then validate and checkpoint as at the end).
    #[serde(default)]
    pub time_limit_secs: Option<f64>,
    /// Sequences per batch (synthetic tasks; translation batches by tokens).
    pub batch_size: usize,
    /// Warm-up steps of the learning-rate schedule.
    pub warmup: usize,
    /// Learning rate at the end of warm-up; `None` is the paper's `d_model^-0.5 · warmup^-0.5`.
    pub peak_lr: Option<f64>,
    /// Label smoothing ε (0.1 in the paper).
    pub label_smoothing: f64,
    /// Clip the global gradient norm to this; `None` = no clipping.
    pub grad_clip: Option<f64>,
    /// Seed of initialisation, dropout and data.
    pub seed: u64,
    /// Log the training loss every this many steps.
    pub log_every: usize,
    /// Validate every this many steps (and at the end).
    pub eval_every: usize,
    /// Validation sequences (translation: validation sentences BLEU is measured on).
    pub eval_samples: usize,
    /// Checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Checkpoints kept on disk.
    pub keep_checkpoints: usize,
    /// Translation: when training ends, the mean of the newest this many checkpoints is
    /// validated too, and becomes the model if its BLEU is at least the best checkpoint's
    /// (§6.1 averaged the last 5; 1 = off).
    #[serde(default = "default_average_last")]
    pub average_last: usize,
    /// Translation: when training ends, the length penalty α that `tf translate` decodes the
    /// model with is chosen among these by beam-search BLEU on the whole validation split
    /// ([`length_penalty`](crate::eval::length_penalty)); empty = none chosen, decode at the
    /// paper's 0.6 (and what runs recorded before the choice existed have).
    #[serde(default)]
    pub length_penalties: Vec<f64>,
}

fn default_average_last() -> usize {
    TrainingConfig::default().average_last
}

impl Default for TrainingConfig {
    /// 3,500 steps of 64 sequences, peak learning rate 1e-3 after 400 warm-up steps, label
    /// smoothing 0.1, gradient norm clipped to 1, seed 42; validation and a checkpoint every 500
    /// steps, 5 checkpoints kept (and averaged at the end of a translation run, whose length
    /// penalty is then chosen among [`CANDIDATE_ALPHAS`]).
    fn default() -> Self {
        Self {
            steps: 3500,
            epochs: None,
            time_limit_secs: None,
            batch_size: 64,
            warmup: 400,
            peak_lr: Some(1e-3),
            label_smoothing: 0.1,
            grad_clip: Some(1.0),
            seed: 42,
            log_every: 50,
            eval_every: 500,
            eval_samples: 500,
            checkpoint_every: 500,
            keep_checkpoints: 5,
            average_last: 5,
            length_penalties: CANDIDATE_ALPHAS.to_vec(),
        }
    }
}

/// What a model learns: a built-in synthetic task, or translation of a parallel corpus.
///
/// In `config.json` the task is one object without a tag: a translation task is the one with a
/// `data` directory.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum RunTask {
    /// Translation between two languages.
    Translation(TranslationTask),
    /// Copy, reverse or sort symbol sequences.
    Synthetic(Task),
}

impl<'de> Deserialize<'de> for RunTask {
    /// Chooses the kind by the `data` field, so that a broken task is reported with what is
    /// wrong with it ("translation task: missing field `src`") rather than as matching no kind.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        if value.get("data").is_some() {
            serde_json::from_value(value)
                .map(Self::Translation)
                .map_err(|err| D::Error::custom(format!("translation task: {err}")))
        } else {
            serde_json::from_value(value)
                .map(Self::Synthetic)
                .map_err(|err| D::Error::custom(format!("synthetic task: {err}")))
        }
    }
}

impl From<Task> for RunTask {
    fn from(task: Task) -> Self {
        Self::Synthetic(task)
    }
}

impl From<TranslationTask> for RunTask {
    fn from(task: TranslationTask) -> Self {
        Self::Translation(task)
    }
}

impl RunTask {
    /// The synthetic task, or an error saying this model translates, for commands that need
    /// task samples.
    pub fn synthetic(&self) -> Result<&Task> {
        match self {
            Self::Synthetic(task) => Ok(task),
            Self::Translation(task) => bail!(
                "this model translates {} (a translation model); this command works on models \
                 of the synthetic tasks: use `tf translate`",
                task.direction()
            ),
        }
    }

    /// The translation task, or an error saying this model is for a synthetic task.
    pub fn translation(&self) -> Result<&TranslationTask> {
        match self {
            Self::Translation(task) => Ok(task),
            Self::Synthetic(task) => bail!(
                "this model was trained on the synthetic `{}` task, not on translation: use \
                 `tf predict`",
                task.kind
            ),
        }
    }

    /// Source and target vocabulary sizes, special tokens included.
    pub fn vocab_sizes(&self) -> (usize, usize) {
        match self {
            Self::Synthetic(task) => (task.vocab_size(), task.vocab_size()),
            Self::Translation(task) => task.vocab_sizes(),
        }
    }

    /// The ids of padding, the decoder's start and the end of a sequence.
    pub fn special_ids(&self) -> SpecialIds {
        match self {
            Self::Synthetic(_) => SpecialIds::OURS,
            Self::Translation(task) => task.vocabulary.special_ids(),
        }
    }

    /// Longest source or target the task trains on (tokens, without BOS/EOS).
    pub fn max_len(&self) -> usize {
        match self {
            Self::Synthetic(task) => task.max_len,
            Self::Translation(task) => task.max_len,
        }
    }

    /// Tokens of the longest source the task trains on: [`max_len`](Self::max_len), and the
    /// EOS of a synthetic task [`with_source_eos`](Task::with_source_eos).
    pub fn longest_source(&self) -> usize {
        match self {
            Self::Synthetic(task) => task.longest_source(),
            Self::Translation(task) => task.max_len,
        }
    }

    /// Checks the task.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Synthetic(task) => Ok(task.validate()?),
            Self::Translation(task) => task.validate(),
        }
    }
}

/// The model, the task, and the training settings of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunConfig {
    /// The Transformer's configuration.
    pub model: TransformerConfig,
    /// The task it learns.
    pub task: RunTask,
    /// How it is trained.
    pub training: TrainingConfig,
}

impl RunConfig {
    /// Checks every part, so that nothing is built from a broken configuration.
    pub fn validate(&self) -> Result<()> {
        // Sizes first: a config.json may ask for anything, and nothing may be allocated for a
        // model that cannot fit.
        check_ceilings(&self.model)?;
        self.task.validate()?;
        self.model.validate()?;
        let (src_vocab, tgt_vocab) = self.task.vocab_sizes();
        if (self.model.src_vocab, self.model.tgt_vocab) != (src_vocab, tgt_vocab) {
            bail!(
                "the model's vocabularies ({}, {}) do not match the task's ({src_vocab}, \
                 {tgt_vocab}) tokens",
                self.model.src_vocab,
                self.model.tgt_vocab,
            );
        }
        // BOS + target + EOS must fit the positional encoding, and so must the longest
        // source with a position to spare (the output of a source that long, and its EOS).
        let longest = self.task.longest_source().max(self.task.max_len());
        if longest + 1 > self.model.max_len {
            bail!(
                "task sequences of up to {longest} tokens need max_len >= {}, the model has {}",
                longest + 1,
                self.model.max_len
            );
        }
        let t = &self.training;
        for (name, value) in [
            ("steps", t.steps),
            ("batch_size", t.batch_size),
            ("log_every", t.log_every),
            ("eval_every", t.eval_every),
            ("eval_samples", t.eval_samples),
            ("checkpoint_every", t.checkpoint_every),
            ("keep_checkpoints", t.keep_checkpoints),
        ] {
            if value == 0 {
                bail!("{name} must be at least 1, got 0");
            }
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            bail!(
                "label_smoothing must be in [0, 1), got {}",
                t.label_smoothing
            );
        }
        if let Some(lr) = t.peak_lr
            && !(lr.is_finite() && lr > 0.0)
        {
            bail!("the learning rate must be positive, got {lr}");
        }
        if let RunTask::Translation(_) = self.task
            && t.average_last > t.keep_checkpoints
        {
            bail!(
                "cannot average the last {} checkpoints when only {} are kept",
                t.average_last,
                t.keep_checkpoints
            );
        }
        if !t.length_penalties.is_empty() {
            check_alphas(&t.length_penalties).context("length_penalties")?;
        }
        if t.epochs == Some(0) {
            bail!("epochs must be at least 1, got 0");
        }
        if let Some(limit) = t.time_limit_secs
            && !(limit.is_finite() && limit > 0.0)
        {
            bail!("the time limit must be positive, got {limit} s");
        }
        if let Some(clip) = t.grad_clip
            && !(clip.is_finite() && clip > 0.0)
        {
            bail!("the gradient clipping norm must be positive, got {clip}");
        }
        Ok(())
    }
}

/// The largest sizes a run may have: far above any model this project trains (the paper's big
/// model has `d_model` 1024, `d_ff` 4096, 16 heads, 6 + 6 layers, a 37k vocabulary), and low
/// enough that a configuration read from a file cannot ask for an absurd allocation.
pub mod ceilings {
    /// Tokens in a vocabulary.
    pub const VOCAB: usize = 1 << 20;
    /// Model width.
    pub const D_MODEL: usize = 16_384;
    /// Feed-forward width.
    pub const D_FF: usize = 65_536;
    /// Attention heads of a block.
    pub const HEADS: usize = 256;
    /// Encoder or decoder layers.
    pub const LAYERS: usize = 128;
    /// Positions of the positional table.
    pub const MAX_LEN: usize = 65_536;
    /// Parameters and positional-table entries together (f32): 8 GiB.
    pub const PARAMETERS: u128 = 1 << 31;
}

/// Parameters (and positional-table entries) a model of `config` holds, counted from its
/// sizes without building it (pruned heads are not subtracted: an upper bound then).
pub fn estimated_parameters(config: &TransformerConfig) -> u128 {
    let n = |v: usize| v as u128;
    let (d, d_ff) = (n(config.layer.d_model), n(config.layer.d_ff));
    // W^Q, W^K, W^V: d → h·d_k; W^O: h·d_k → d; biases.
    let width = n(config.layer.n_heads * config.layer.head_width());
    let attention = 4 * d * width + 3 * width + d;
    let feed_forward = 2 * d * d_ff + d_ff + d;
    let norm = 2 * d;
    let encoder = n(config.n_encoder_layers) * (attention + feed_forward + 2 * norm);
    let decoder = n(config.n_decoder_layers) * (2 * attention + feed_forward + 3 * norm);
    let output_bias = if config.output_bias {
        n(config.tgt_vocab)
    } else {
        0
    };
    let embeddings = output_bias
        + match config.embedding_sharing {
            EmbeddingSharing::All => n(config.src_vocab) * d,
            EmbeddingSharing::TargetOutput => n(config.src_vocab + config.tgt_vocab) * d,
            // The output projection has a bias.
            EmbeddingSharing::Separate => {
                n(config.src_vocab + 2 * config.tgt_vocab) * d + n(config.tgt_vocab)
            }
        };
    let positions = match config.positional_encoding {
        PositionalEncodingKind::Sinusoidal
        | PositionalEncodingKind::SinusoidalHalves
        | PositionalEncodingKind::Learned => n(config.max_len) * d,
        // A cosine and a sine table per self-attention, each `max_len × d_k`.
        PositionalEncodingKind::Rotary => {
            let d_k = n(config.layer.head_width());
            2 * n(config.max_len) * d_k * n(config.n_encoder_layers + config.n_decoder_layers)
        }
        PositionalEncodingKind::None => 0,
    };
    let final_norms = if config.has_final_norm() { 2 * norm } else { 0 };
    encoder + decoder + embeddings + positions + final_norms
}

/// Refuses sizes above [`ceilings`], and models whose parameters would not fit them or the
/// memory this machine has free.
pub fn check_ceilings(config: &TransformerConfig) -> Result<()> {
    let layer = &config.layer;
    for (name, value, ceiling) in [
        ("src_vocab", config.src_vocab, ceilings::VOCAB),
        ("tgt_vocab", config.tgt_vocab, ceilings::VOCAB),
        ("d_model", layer.d_model, ceilings::D_MODEL),
        ("d_ff", layer.d_ff, ceilings::D_FF),
        ("n_heads", layer.n_heads, ceilings::HEADS),
        (
            "n_encoder_layers",
            config.n_encoder_layers,
            ceilings::LAYERS,
        ),
        (
            "n_decoder_layers",
            config.n_decoder_layers,
            ceilings::LAYERS,
        ),
        ("max_len", config.max_len, ceilings::MAX_LEN),
    ] {
        if value > ceiling {
            bail!("{name} {value} is above the ceiling of {ceiling} (docs/reliability.md)");
        }
    }
    let parameters = estimated_parameters(config);
    if parameters > ceilings::PARAMETERS {
        bail!(
            "the model would hold {parameters} parameters, above the ceiling of {}",
            ceilings::PARAMETERS
        );
    }
    if let Some(available) = available_memory()
        && parameters * 4 > available
    {
        bail!(
            "the model's {parameters} parameters need {:.1} GiB, more than the {:.1} GiB of \
             memory free",
            (parameters * 4) as f64 / (1u64 << 30) as f64,
            available as f64 / (1u64 << 30) as f64
        );
    }
    Ok(())
}

/// Bytes of memory free for a new allocation (`MemAvailable` on Linux; `None` elsewhere).
fn available_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::tensor::Device;

    #[test]
    fn the_estimate_counts_what_the_model_holds() {
        use tf_layers::NormPosition;
        use tf_model::EmbeddingSharing::{All, Separate, TargetOutput};
        for (sharing, norm) in [(All, NormPosition::Post), (Separate, NormPosition::Pre)]
            .into_iter()
            .chain([(TargetOutput, NormPosition::Post)])
        {
            let tiny = TransformerConfig::tiny(13, 11);
            let config = tiny
                .clone()
                .with_layer(tiny.layer.clone().with_norm_position(norm))
                .with_embedding_sharing(sharing)
                .with_output_bias(sharing != Separate)
                .with_max_len(20);
            let config = if sharing == All {
                TransformerConfig {
                    tgt_vocab: 13,
                    ..config
                }
            } else {
                config
            };
            let built = config.init(&Device::flex()).num_params() as u128;
            // The sinusoidal table is not a parameter; everything else is counted exactly.
            let table = 20 * config.layer.d_model as u128;
            assert_eq!(estimated_parameters(&config) - table, built, "{sharing:?}");
        }
    }

    #[test]
    fn absurd_sizes_are_refused_before_anything_is_built() {
        let base = TransformerConfig::tiny(13, 13);
        for (config, what) in [
            (base.clone().with_max_len(100_000_000), "max_len 100000000"),
            (
                TransformerConfig::tiny(100_000_000_000, 13),
                "src_vocab 100000000000",
            ),
            (
                base.clone()
                    .with_layer(base.layer.clone().with_d_model(10_000_000)),
                "d_model 10000000",
            ),
        ] {
            let err = check_ceilings(&config).unwrap_err().to_string();
            assert!(err.contains(what) && err.contains("ceiling"), "{err}");
        }
        let wide = base
            .clone()
            .with_layer(base.layer.clone().with_d_model(16_384).with_d_ff(65_536))
            .with_n_encoder_layers(64);
        let err = check_ceilings(&wide).unwrap_err().to_string();
        assert!(err.contains("parameters"), "{err}");
        assert!(check_ceilings(&TransformerConfig::big(37_000, 37_000)).is_ok());
    }
}
