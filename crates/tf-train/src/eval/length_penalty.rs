//! The length penalty a translation model decodes with, chosen on held-out data.
//!
//! Beam search ranks finished hypotheses by log-probability divided by GNMT's penalty
//! `((5 + length) / 6)^α` (Wu et al., 2016). Without it (α = 0) short hypotheses win; how much
//! length to buy back depends on the model: the paper took α = 0.6 for WMT after trying values on
//! its development set (§6.1), and the small Multi30k models of this project stay short at 0.6
//! (docs/inspection.md, "Length penalty chosen on `val`"). So a trained model's α is chosen the
//! same way: beam search over a held-out split with each candidate α, keeping the one with the
//! best corpus BLEU. The choice is stored beside the weights it was made for
//! (`DIR/length_penalty.json`, with their SHA-256), and `tf translate` decodes with it unless
//! told otherwise; once the weights change, the record no longer applies.

use std::path::Path;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};
use tf_model::Transformer;

use crate::data::corpus::read_split;
use crate::data::vocabulary::TranslationVocab;
use crate::error::{Result, ResultExt, bail, ensure};
use crate::eval::bleu::corpus_bleu;
use crate::eval::translate::{TranslateOptions, translate};
use crate::store::model_dir::{Dropout, ModelDir};

/// The α tried at the end of a translation run: the paper's 0.6 and longer-preferring values.
pub const CANDIDATE_ALPHAS: [f64; 5] = [0.6, 1.0, 1.5, 2.0, 3.0];

/// Corpus BLEU of beam search at one α.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlphaBleu {
    /// The length penalty exponent.
    pub alpha: f64,
    /// Corpus BLEU of the split decoded with it.
    pub bleu: f64,
}

/// The length penalty chosen for one set of weights (`DIR/length_penalty.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LengthPenalty {
    /// The chosen α: the best BLEU of `tried`, the first of equals.
    pub alpha: f64,
    /// Beams per sentence of the search it was chosen with.
    pub beam_size: usize,
    /// The split it was chosen on.
    pub split: String,
    /// Sentences of that split decoded.
    pub sentences: usize,
    /// Every α tried, in the order tried.
    pub tried: Vec<AlphaBleu>,
    /// SHA-256 of the weights file (`model.bpk`) it was chosen for.
    pub weights_sha256: String,
}

impl LengthPenalty {
    /// BLEU at the chosen α.
    pub fn bleu(&self) -> f64 {
        self.tried
            .iter()
            .find(|t| t.alpha == self.alpha)
            .map_or(f64::NAN, |t| t.bleu)
    }
}

/// Checks a list of candidate α: at least one, each finite, non-negative and listed once.
pub fn check_alphas(alphas: &[f64]) -> Result<()> {
    ensure!(!alphas.is_empty(), "no length penalty α to choose from");
    if let Some(bad) = alphas.iter().find(|a| !(a.is_finite() && **a >= 0.0)) {
        bail!("a length penalty α must be a non-negative number, got {bad}");
    }
    if let Some((_, twice)) = alphas
        .iter()
        .enumerate()
        .find(|(i, a)| alphas[..*i].contains(a))
    {
        bail!("length penalty α {twice} is listed twice");
    }
    Ok(())
}

/// Whether `choice` was made on `split` with `beam_size` beams among exactly `alphas`: what
/// lets a finished run that is resumed keep it instead of decoding again.
pub fn made_on(choice: &LengthPenalty, split: &str, beam_size: usize, alphas: &[f64]) -> bool {
    choice.split == split
        && choice.beam_size == beam_size
        && choice
            .tried
            .iter()
            .map(|t| t.alpha)
            .eq(alphas.iter().copied())
}

/// Decodes `sources` with `beam_size` beams at each of `alphas` and scores each against
/// `references`; returns the scores in the order of `alphas` and the α of the best (the first
/// of equals, so the smaller when `alphas` ascend). `on_batch` hears the sentences of each
/// decoded batch, `alphas.len() × sources.len()` in all.
#[allow(clippy::too_many_arguments)]
pub fn choose_alpha(
    model: &Transformer,
    vocab: &TranslationVocab,
    sources: &[String],
    references: &[String],
    beam_size: usize,
    alphas: &[f64],
    device: &Device,
    mut on_batch: impl FnMut(usize),
) -> Result<(f64, Vec<AlphaBleu>)> {
    check_alphas(alphas)?;
    ensure!(beam_size >= 1, "the beam needs at least one hypothesis");
    ensure!(
        !sources.is_empty() && sources.len() == references.len(),
        "choosing α needs sentences and as many references, got {} and {}",
        sources.len(),
        references.len()
    );
    let mut tried = Vec::with_capacity(alphas.len());
    for &alpha in alphas {
        let options = TranslateOptions::beam(beam_size, alpha);
        let hyps = translate(model, vocab, sources, &options, device, &mut on_batch)?;
        let bleu = corpus_bleu(&hyps.sentences, references)?.score;
        tried.push(AlphaBleu { alpha, bleu });
    }
    let best = best_of(&tried);
    Ok((best.alpha, tried))
}

/// Chooses α for the translation model in `dir` on `split` of the corpus in `data`, with
/// `beam_size` beams (see [`choose_alpha`]), and records the choice beside its weights
/// ([`ModelDir::length_penalty`]). `on_batch(sentences, total)` hears each decoded batch, and
/// the sentences all decodes hold together.
pub fn tune_length_penalty(
    dir: &ModelDir,
    data: &Path,
    split: &str,
    beam_size: usize,
    alphas: &[f64],
    device: &Device,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<LengthPenalty> {
    check_alphas(alphas)?;
    let config = dir.load_config()?;
    let task = config.task.translation()?;
    let corpus = read_split(data, split, &task.src, &task.tgt)
        .with_context(|| format!("reading the {split} split to choose the length penalty on"))?;
    let weights_sha256 = dir.weights_sha256()?;
    let (_, model) = dir.load_model(device, Dropout::AsConfigured)?;
    let vocab = dir.load_vocabulary()?;
    let total = alphas.len() * corpus.source.len();
    let (alpha, tried) = choose_alpha(
        &model,
        &vocab,
        &corpus.source,
        &corpus.target,
        beam_size,
        alphas,
        device,
        |n| on_batch(n, total),
    )?;
    let choice = LengthPenalty {
        alpha,
        beam_size,
        split: split.to_string(),
        sentences: corpus.source.len(),
        tried,
        weights_sha256,
    };
    dir.save_length_penalty(&choice)?;
    Ok(choice)
}

/// The entry with the highest BLEU, the first of equals.
fn best_of(tried: &[AlphaBleu]) -> AlphaBleu {
    tried
        .iter()
        .copied()
        .reduce(|best, t| if t.bleu > best.bleu { t } else { best })
        .expect("at least one α")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(pairs: &[(f64, f64)]) -> Vec<AlphaBleu> {
        pairs
            .iter()
            .map(|&(alpha, bleu)| AlphaBleu { alpha, bleu })
            .collect()
    }

    #[test]
    fn the_best_bleu_wins_and_a_tie_goes_to_the_first() {
        let tried = scores(&[(0.6, 38.72), (1.0, 39.12), (1.5, 39.48), (2.0, 39.45)]);
        assert_eq!(best_of(&tried).alpha, 1.5);
        let tied = scores(&[(0.6, 30.0), (1.0, 31.0), (2.0, 31.0)]);
        assert_eq!(best_of(&tied).alpha, 1.0);
        let record = LengthPenalty {
            alpha: 1.5,
            beam_size: 5,
            split: "val".into(),
            sentences: 1014,
            tried,
            weights_sha256: String::new(),
        };
        assert_eq!(record.bleu(), 39.48);
        assert!(made_on(&record, "val", 5, &[0.6, 1.0, 1.5, 2.0]));
        assert!(!made_on(&record, "val", 5, &[0.6, 1.0, 1.5]));
        assert!(!made_on(&record, "test", 5, &[0.6, 1.0, 1.5, 2.0]));
        assert!(!made_on(&record, "val", 4, &[0.6, 1.0, 1.5, 2.0]));
    }

    #[test]
    fn candidates_must_be_non_negative_numbers() {
        assert!(check_alphas(&CANDIDATE_ALPHAS).is_ok());
        assert!(check_alphas(&[0.0]).is_ok());
        for bad in [
            &[][..],
            &[0.6, -1.0],
            &[f64::NAN],
            &[f64::INFINITY],
            &[1.0, 2.0, 1.0],
        ] {
            assert!(check_alphas(bad).is_err(), "{bad:?}");
        }
    }
}
