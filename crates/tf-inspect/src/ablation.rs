//! Ablation of any hook point: replace an activation (all of it, some heads, some positions) by
//! zeros, by its mean over a split, or by its value on another sentence of the split
//! (resampling), and measure the change in the teacher-forced log-probability of the
//! references, and optionally ([`BleuDecoding`]) in the BLEU of the model's greedy
//! translations, decoded with the ablation in every step.
//!
//! Sentences are run one at a time (no padding), so that a mean is over real positions only and
//! a resampled activation comes from a sentence of the same length on the point's position axis
//! (the source for encoder points and cross-attention keys and values, the target otherwise).
//! A sentence without such a donor is left out of a resample study, and counted.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde::Serialize;
use tf_attention::hooks::{AttentionSite, LayerSite};
use tf_attention::{HookPoint, HookValue, Hooks, Patch, Replacement};
use tf_model::Transformer;
use tf_train::data::task::{Example, SpecialIds};
use tf_train::eval::bleu::corpus_bleu;

use crate::error::{InspectError, Result};
use crate::forced::ids;

/// What replaces the ablated activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AblationMethod {
    /// Zeros.
    Zero,
    /// Its mean over every real position of every sentence of the split.
    Mean,
    /// Its value on another sentence of the split of the same length, drawn with `seed`.
    Resample {
        /// Seed of the donors.
        seed: u64,
    },
}

impl AblationMethod {
    /// `zero`, `mean` or `resample`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Zero => "zero",
            Self::Mean => "mean",
            Self::Resample { .. } => "resample",
        }
    }
}

/// Which part of the activation is ablated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Only these heads (points with heads); `None` = all.
    pub heads: Option<Vec<usize>>,
    /// Only these positions (those a sentence has); `None` = all.
    pub positions: Option<Vec<usize>>,
}

/// Free-running greedy decoding under the ablation, scored by corpus BLEU against the
/// references. Every step is a whole teacher-forced pass over the prefix (no cache), so that
/// the ablation applies to every position it names at every step: a sentence of `T` tokens
/// costs `T` passes, twice (clean and ablated).
pub struct BleuDecoding<'a> {
    /// The longest output for a source of this many tokens.
    pub max_output: &'a dyn Fn(usize) -> usize,
    /// Output ids (without EOS) as the text BLEU scores; the references are written the same
    /// way.
    pub text: &'a dyn Fn(&[usize]) -> Result<String>,
}

/// Corpus BLEU of the greedy translations of the sentences measured, without and with the
/// ablation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BleuChange {
    /// Unablated.
    pub bleu: f64,
    /// Ablated.
    pub ablated_bleu: f64,
}

/// One ablation's measurement.
#[derive(Clone, Debug, Serialize)]
pub struct AblationResult {
    /// The point ablated.
    pub point: String,
    /// What was ablated of it.
    pub selection: Selection,
    /// How.
    pub method: AblationMethod,
    /// Sentences measured.
    pub sentences: usize,
    /// Sentences left out (resampling without a donor of the same length).
    pub skipped: usize,
    /// Target tokens measured (EOS included).
    pub tokens: usize,
    /// Mean log-probability per reference token, unablated.
    pub log_prob: f64,
    /// The same, ablated.
    pub ablated_log_prob: f64,
    /// BLEU of the greedy translations, when asked for.
    pub bleu: Option<BleuChange>,
}

impl AblationResult {
    /// `ablated_log_prob − log_prob` (negative: the ablation hurts).
    pub fn change(&self) -> f64 {
        self.ablated_log_prob - self.log_prob
    }
}

/// One sentence on the device, teacher-forced.
struct Sentence {
    src: Tensor<2, Int>,
    tgt_in: Tensor<2, Int>,
    tgt_out: Tensor<3, Int>,
    /// Source and decoder lengths.
    lengths: (usize, usize),
}

/// Ablates `selections` of `point` by `method` over `examples` (teacher-forced on their
/// references), one measurement per selection, with BLEU when `bleu` says how to decode; the
/// clean pass, the mean, the donors and the clean translations are computed once for all of
/// them.
///
/// # Errors
/// If the point or a selection does not fit the model, `examples` is empty, the method needs
/// token positions and the point is an attention pattern, or BLEU is asked of a resample
/// ablation of a point over target positions (a free-running decoder's prefix has no donor).
// The model, its data and special ids, what to ablate and how, whether to decode: each is its
// own choice of the caller's, none a default.
#[allow(clippy::too_many_arguments)]
pub fn ablation_study(
    model: &Transformer,
    examples: &[Example],
    point: HookPoint,
    method: AblationMethod,
    selections: &[Selection],
    bleu: Option<&BleuDecoding<'_>>,
    special: SpecialIds,
    device: &Device,
) -> Result<Vec<AblationResult>> {
    if examples.is_empty() {
        return Err(InspectError::Invalid("no sentences to ablate over".into()));
    }
    let is_pattern = matches!(
        point,
        HookPoint::Layer {
            site: LayerSite::Attention(_, AttentionSite::Pattern),
            ..
        }
    );
    if is_pattern && method != AblationMethod::Zero {
        return Err(InspectError::Invalid(format!(
            "{point}: {} ablation needs a tensor over token positions; an attention pattern is \
             over pairs of them (zero-ablate it, or ablate the head's z)",
            method.name()
        )));
    }
    let resampled = matches!(method, AblationMethod::Resample { .. });
    if bleu.is_some() && resampled && matches!(point_stack_axis(&point), Axis::Target) {
        return Err(InspectError::Invalid(format!(
            "{point}: resample ablation of a point over target positions has no donor for the \
             prefix a free-running decoder writes; measure it by log-probability alone, or \
             ablate it with zeros or the mean"
        )));
    }
    let sentences: Vec<Sentence> = examples
        .iter()
        .map(|e| sentence(e, special, device))
        .collect();
    let invalid = |err: tf_model::HookError| InspectError::Invalid(err.to_string());
    // The clean translations and the references as text, when BLEU is asked for.
    let decoded = match bleu {
        None => None,
        Some(decoding) => {
            let mut clean = Vec::with_capacity(sentences.len());
            for (s, e) in sentences.iter().zip(examples) {
                let max_output = (decoding.max_output)(e.src.len());
                clean.push((decoding.text)(&greedy(
                    model, s, point, None, max_output, special, device,
                )?)?);
            }
            let references = examples
                .iter()
                .map(|e| (decoding.text)(&e.tgt))
                .collect::<Result<Vec<String>>>()?;
            Some((decoding, clean, references))
        }
    };
    // The clean pass, keeping the point.
    let mut clean = Vec::with_capacity(sentences.len());
    let mut kept = Vec::with_capacity(sentences.len());
    for s in &sentences {
        let mut hooks = Hooks::none().cache(point);
        let logits = model
            .forward_hooked(s.src.clone(), s.tgt_in.clone(), None, None, &mut hooks)
            .map_err(invalid)?;
        clean.push(log_prob(logits, s.tgt_out.clone()));
        kept.push(hooks.cached(&point).expect("kept").clone());
    }
    let axis_len = |s: &Sentence| match point_stack_axis(&point) {
        Axis::Source => s.lengths.0,
        Axis::Target => s.lengths.1,
    };
    let replacements: Vec<Option<Replacement>> = match method {
        AblationMethod::Zero => vec![Some(Replacement::Zeros); sentences.len()],
        AblationMethod::Mean => {
            let mean = mean_over_positions(&kept);
            vec![Some(Replacement::Value(mean)); sentences.len()]
        }
        AblationMethod::Resample { seed } => {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..sentences.len())
                .map(|i| {
                    let donors: Vec<usize> = (0..sentences.len())
                        // Same shape: the same length on the point's position axis.
                        .filter(|&j| j != i && kept[j].dims() == kept[i].dims())
                        .collect();
                    donors
                        .choose(&mut rng)
                        .map(|&j| Replacement::Value(kept[j].clone()))
                })
                .collect()
        }
    };
    let mut results = Vec::with_capacity(selections.len());
    for selection in selections {
        let (mut total, mut ablated_total, mut tokens, mut measured) = (0.0, 0.0, 0, 0);
        let (mut clean_texts, mut ablated_texts, mut references) =
            (Vec::new(), Vec::new(), Vec::new());
        for (i, ((s, with), &(clean_sum, n))) in
            sentences.iter().zip(&replacements).zip(&clean).enumerate()
        {
            let Some(with) = with else { continue };
            let patch = selected(with, selection, axis_len(s));
            let mut hooks = Hooks::none().patch(point, patch);
            let logits = model
                .forward_hooked(s.src.clone(), s.tgt_in.clone(), None, None, &mut hooks)
                .map_err(invalid)?;
            total += clean_sum;
            ablated_total += log_prob(logits, s.tgt_out.clone()).0;
            tokens += n;
            measured += 1;
            if let Some((decoding, clean, refs)) = &decoded {
                let max_output = (decoding.max_output)(examples[i].src.len());
                let ablation = Some((with, selection));
                let ablated = greedy(model, s, point, ablation, max_output, special, device)?;
                ablated_texts.push((decoding.text)(&ablated)?);
                clean_texts.push(clean[i].clone());
                references.push(refs[i].clone());
            }
        }
        let bleu = match decoded {
            None => None,
            Some(_) => {
                let score = |hyps: &[String]| -> Result<f64> {
                    Ok(corpus_bleu(hyps, &references)
                        .map_err(|err| InspectError::Invalid(err.to_string()))?
                        .score)
                };
                Some(BleuChange {
                    bleu: score(&clean_texts)?,
                    ablated_bleu: score(&ablated_texts)?,
                })
            }
        };
        let per_token = |sum: f64| {
            if tokens == 0 {
                0.0
            } else {
                sum / tokens as f64
            }
        };
        results.push(AblationResult {
            point: point.to_string(),
            selection: selection.clone(),
            method,
            sentences: measured,
            skipped: sentences.len() - measured,
            tokens,
            log_prob: per_token(total),
            ablated_log_prob: per_token(ablated_total),
            bleu,
        });
    }
    Ok(results)
}

/// The patch of `selection` with `with`, for an input whose point has `len` positions (the
/// positions past them left out).
fn selected(with: &Replacement, selection: &Selection, len: usize) -> Patch {
    let mut patch = Patch::all(with.clone());
    patch.heads = selection.heads.clone();
    if let Some(positions) = &selection.positions {
        patch.positions = Some(positions.iter().copied().filter(|&p| p < len).collect());
    }
    patch
}

/// Greedy decoding of `s`'s source, at most `max_output` tokens and one fewer than the model's
/// positions, every step a whole pass over the prefix with `ablation` (a replacement and what
/// of `point` it replaces) applied.
fn greedy(
    model: &Transformer,
    s: &Sentence,
    point: HookPoint,
    ablation: Option<(&Replacement, &Selection)>,
    max_output: usize,
    special: SpecialIds,
    device: &Device,
) -> Result<Vec<usize>> {
    let steps = max_output.min(model.max_len().saturating_sub(1));
    let mut output = Vec::new();
    for _ in 0..steps {
        let prefix: Vec<usize> = std::iter::once(special.bos)
            .chain(output.iter().copied())
            .collect();
        let mut hooks = match ablation {
            None => Hooks::none(),
            Some((with, selection)) => {
                let len = match point_stack_axis(&point) {
                    Axis::Source => s.lengths.0,
                    Axis::Target => prefix.len(),
                };
                Hooks::none().patch(point, selected(with, selection, len))
            }
        };
        let logits = model
            .forward_hooked(s.src.clone(), ids(&prefix, device), None, None, &mut hooks)
            .map_err(|err| InspectError::Invalid(err.to_string()))?;
        let [_, _, vocab] = logits.dims();
        let last = logits.narrow(1, prefix.len() - 1, 1).reshape([1, vocab]);
        let last = match special.forbidden {
            Some(token) => tf_model::next_token::without_token(last, token),
            None => last,
        };
        let next = last.argmax(1).into_scalar::<i64>() as usize;
        if next == special.eos {
            break;
        }
        output.push(next);
    }
    Ok(output)
}

/// Which input a point's positions are tokens of.
enum Axis {
    Source,
    Target,
}

fn point_stack_axis(point: &HookPoint) -> Axis {
    use tf_attention::hooks::{AttentionBlock, Stack};
    match point {
        HookPoint::EmbedSource => Axis::Source,
        HookPoint::EmbedTarget | HookPoint::Logits => Axis::Target,
        HookPoint::Layer {
            stack: Stack::Encoder,
            ..
        } => Axis::Source,
        HookPoint::Layer {
            site:
                LayerSite::Attention(
                    AttentionBlock::CrossAttention,
                    AttentionSite::Key | AttentionSite::Value,
                ),
            ..
        } => Axis::Source,
        HookPoint::Layer { .. } => Axis::Target,
    }
}

/// The mean of the kept activations over sentences and positions: `[1, 1, width]` for rank 3,
/// `[1, heads, 1, d_k]` for rank 4 (positions on axis 1 and 2).
fn mean_over_positions(kept: &[HookValue]) -> HookValue {
    let positions: usize = kept
        .iter()
        .map(|v| match v {
            HookValue::Rank3(t) => t.dims()[1],
            HookValue::Rank4(t) => t.dims()[2],
        })
        .sum();
    let scale = 1.0 / positions.max(1) as f64;
    match &kept[0] {
        HookValue::Rank3(_) => {
            let sums = kept.iter().map(|v| match v {
                HookValue::Rank3(t) => t.clone().sum_dim(1),
                HookValue::Rank4(_) => unreachable!("one point, one rank"),
            });
            let sum = sums.reduce(|a, b| a + b).expect("at least one sentence");
            HookValue::Rank3(sum.mul_scalar(scale))
        }
        HookValue::Rank4(_) => {
            let sums = kept.iter().map(|v| match v {
                HookValue::Rank4(t) => t.clone().sum_dim(2),
                HookValue::Rank3(_) => unreachable!("one point, one rank"),
            });
            let sum = sums.reduce(|a, b| a + b).expect("at least one sentence");
            HookValue::Rank4(sum.mul_scalar(scale))
        }
    }
}

fn sentence(example: &Example, special: SpecialIds, device: &Device) -> Sentence {
    let tgt_in: Vec<usize> = std::iter::once(special.bos)
        .chain(example.tgt.iter().copied())
        .collect();
    let tgt_out: Vec<usize> = example.tgt.iter().copied().chain([special.eos]).collect();
    let lengths = (example.src.len(), tgt_in.len());
    let n = tgt_out.len();
    Sentence {
        src: ids(&example.src, device),
        tgt_in: ids(&tgt_in, device),
        tgt_out: ids(&tgt_out, device).reshape([1, n, 1]),
        lengths,
    }
}

/// The summed log-probability of the reference tokens, and their count.
///
/// # Shapes
/// - `logits`: `[1, tgt_len, vocab]`; `tgt_out`: `[1, tgt_len, 1]`
fn log_prob(logits: Tensor<3>, tgt_out: Tensor<3, Int>) -> (f64, usize) {
    let n = tgt_out.dims()[1];
    let picked = log_softmax(logits, 2).gather(2, tgt_out);
    (f64::from(picked.sum().into_scalar::<f32>()), n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_model::TransformerConfig;
    use tf_train::data::task::{BOS, EOS};

    fn model(device: &Device) -> Transformer {
        device.seed(3);
        TransformerConfig::tiny(12, 12)
            .with_max_len(16)
            .init(device)
    }

    fn example(src: &[usize], tgt: &[usize]) -> Example {
        Example {
            src: src.to_vec(),
            tgt: tgt.to_vec(),
        }
    }

    fn point(name: &str) -> HookPoint {
        name.parse().unwrap()
    }

    fn study(
        examples: &[Example],
        name: &str,
        method: AblationMethod,
        selections: &[Selection],
    ) -> Result<Vec<AblationResult>> {
        let device = Device::flex();
        ablation_study(
            &model(&device),
            examples,
            point(name),
            method,
            selections,
            None,
            SpecialIds::OURS,
            &device,
        )
    }

    /// Ids as text, for BLEU: "3 4 5".
    fn text(ids: &[usize]) -> Result<String> {
        Ok(ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" "))
    }

    #[test]
    fn bleu_decodes_greedily_and_ablating_nothing_keeps_it() {
        let device = Device::flex();
        let model = model(&device);
        let examples = [example(&[3, 4, 5], &[6, 7, 8]), example(&[8, 9], &[10, 11])];
        // The hooked greedy decoding is the model's own.
        for e in &examples {
            let s = sentence(e, SpecialIds::OURS, &device);
            let ours = greedy(
                &model,
                &s,
                HookPoint::Logits,
                None,
                6,
                SpecialIds::OURS,
                &device,
            )
            .unwrap();
            let options = tf_model::GreedyOptions::new(BOS, EOS, 6);
            let theirs = model.greedy_decode(s.src.clone(), None, &options).unwrap();
            assert_eq!(ours, theirs[0]);
        }
        let decoding = BleuDecoding {
            max_output: &|_| 6,
            text: &text,
        };
        let nothing = Selection {
            heads: None,
            positions: Some(vec![]),
        };
        let everything = Selection::default();
        let results = ablation_study(
            &model,
            &examples,
            point("dec.1.cross.z"),
            AblationMethod::Zero,
            &[nothing, everything],
            Some(&decoding),
            SpecialIds::OURS,
            &device,
        )
        .unwrap();
        let unchanged = results[0].bleu.unwrap();
        assert_eq!(unchanged.bleu, unchanged.ablated_bleu);
        assert_eq!(results[1].bleu.unwrap().bleu, unchanged.bleu);
        // Zeroing the last cross-attention's every head decodes without the source: other
        // translations (ablated log-probability changes; BLEU need not, on an untrained model).
        assert!(results[1].change().abs() > 1e-5);
    }

    #[test]
    fn bleu_of_a_resampled_decoder_point_is_refused() {
        let device = Device::flex();
        let decoding = BleuDecoding {
            max_output: &|_| 4,
            text: &text,
        };
        let examples = [example(&[3, 4], &[5]), example(&[6, 7], &[8])];
        let resample = AblationMethod::Resample { seed: 1 };
        let run = |name: &str| {
            ablation_study(
                &model(&device),
                &examples,
                point(name),
                resample,
                &[Selection::default()],
                Some(&decoding),
                SpecialIds::OURS,
                &device,
            )
        };
        let err = run("dec.0.attn.z").unwrap_err().to_string();
        assert!(err.contains("no donor"), "{err}");
        // Over source positions there is one: the other sentence of the same length.
        assert!(run("enc.0.resid_post").unwrap()[0].bleu.is_some());
    }

    #[test]
    fn zero_logits_are_uniform_and_ablating_nothing_changes_nothing() {
        let examples = [example(&[3, 4, 5], &[6, 7]), example(&[8, 9], &[10])];
        let all = Selection::default();
        let nothing = Selection {
            heads: None,
            positions: Some(vec![]),
        };
        let results = study(&examples, "logits", AblationMethod::Zero, &[all, nothing]).unwrap();
        // Zero logits: every token has probability 1/12.
        assert!((results[0].ablated_log_prob + 12f64.ln()).abs() <= 1e-5);
        assert_eq!((results[0].sentences, results[0].tokens), (2, 5));
        assert!(results[0].log_prob < 0.0);
        assert_eq!(results[1].change(), 0.0);
    }

    #[test]
    fn the_mean_of_one_position_is_that_position() {
        // One sentence with one decoder position: the mean of its last residual is itself.
        let examples = [example(&[3, 4, 5], &[])];
        let results = study(
            &examples,
            "dec.1.resid_post",
            AblationMethod::Mean,
            &[Selection::default()],
        )
        .unwrap();
        assert!(results[0].change().abs() <= 1e-5, "{}", results[0].change());
        // Zeroing a head of the cross-attention does change it.
        let heads = Selection {
            heads: Some(vec![0]),
            positions: None,
        };
        let zeroed = study(&examples, "dec.0.cross.z", AblationMethod::Zero, &[heads]).unwrap();
        assert!(zeroed[0].change().abs() > 1e-5);
    }

    #[test]
    fn resampling_takes_a_same_length_donor_or_skips() {
        // Sources 0 and 1 are the same sentence: resampling the embeddings changes nothing for
        // them; source 2 has no donor of its length.
        let examples = [
            example(&[3, 4, 5], &[6]),
            example(&[3, 4, 5], &[7, 8]),
            example(&[9, 10], &[6]),
        ];
        let results = study(
            &examples,
            "embed.src",
            AblationMethod::Resample { seed: 1 },
            &[Selection::default()],
        )
        .unwrap();
        assert_eq!((results[0].sentences, results[0].skipped), (2, 1));
        assert!(results[0].change().abs() <= 1e-6);
    }

    #[test]
    fn bad_requests_are_refused() {
        let examples = [example(&[3, 4], &[5])];
        let err = study(
            &examples,
            "enc.0.attn.pattern",
            AblationMethod::Mean,
            &[Selection::default()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("over pairs"), "{err}");
        let heads = Selection {
            heads: Some(vec![5]),
            positions: None,
        };
        let err = study(&examples, "enc.0.attn.z", AblationMethod::Zero, &[heads])
            .unwrap_err()
            .to_string();
        assert!(err.contains("head 5 of 2"), "{err}");
        let err = study(
            &examples,
            "enc.4.attn.z",
            AblationMethod::Zero,
            &[Selection::default()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("layer 4 of 2"), "{err}");
        assert!(study(&[], "logits", AblationMethod::Zero, &[]).is_err());
    }
}
