//! Sentences in, sentences out: encode with the model's subword vocabulary, decode greedily or
//! with beam search in length-sorted batches, detokenize, and return the translations in the
//! input's order. What validation BLEU and `tf translate` both use.

use burn::tensor::Device;
use tf_model::{BeamOptions, BeamRanking, OutputLimit, Transformer};

use crate::data::batch::Seq2SeqBatch;
use crate::data::task::SpecialIds;
use crate::data::vocabulary::TranslationVocab;
use crate::error::Result;

/// How to decode.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TranslateOptions {
    /// Beams per sentence; 1 is greedy decoding.
    pub beam_size: usize,
    /// Length penalty exponent α of `ranking` (beam search only).
    pub alpha: f64,
    /// Most output tokens, from the source's length (and the model's positions).
    pub max_output: OutputLimit,
    /// Sentences decoded together (each with `beam_size` beams).
    pub batch_sentences: usize,
    /// The decoder's start token and EOS (and padding). Default: ours; [`translate`] uses its
    /// vocabulary's.
    pub special: SpecialIds,
    /// How beam search ranks and stops. Default: GNMT's; [`translate`] uses `transformers`'
    /// (with EOS forced at the length limit) for an imported MarianMT model, as its `generate`
    /// decodes.
    pub ranking: BeamRanking,
}

impl TranslateOptions {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            beam_size: 1,
            ..Self::beam(1, 0.0)
        }
    }

    /// Beam search with `beam_size` beams and length penalty `alpha`.
    pub fn beam(beam_size: usize, alpha: f64) -> Self {
        Self {
            beam_size,
            alpha,
            max_output: OutputLimit::default(),
            batch_sentences: 64,
            special: SpecialIds::OURS,
            ranking: BeamRanking::Gnmt,
        }
    }
}

/// Translations, in the order of the input.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translations {
    /// One per input sentence; empty for an empty input.
    pub sentences: Vec<String>,
    /// Inputs (0-based) that had more tokens than the model takes
    /// ([`max_source_len`](tf_model::Transformer::max_source_len)) and were cut to fit.
    pub truncated: Vec<usize>,
}

/// Translates `sentences` with `model` (in inference mode, `model.valid()`); `on_batch` hears the
/// number of sentences each finished batch held (for a progress bar).
pub fn translate(
    model: &Transformer,
    vocab: &TranslationVocab,
    sentences: &[String],
    options: &TranslateOptions,
    device: &Device,
    on_batch: impl FnMut(usize),
) -> Result<Translations> {
    let max_source = model.max_source_len();
    let mut truncated = Vec::new();
    let mut sources: Vec<Vec<usize>> = Vec::with_capacity(sentences.len());
    for (i, sentence) in sentences.iter().enumerate() {
        let mut ids = vocab.encode_source(sentence)?;
        if ids.len() > max_source {
            ids.truncate(max_source);
            truncated.push(i);
        }
        sources.push(ids);
    }
    let options = TranslateOptions {
        special: vocab.special_ids(),
        ranking: vocab.beam_ranking(),
        ..*options
    };
    let outputs = translate_ids(model, &sources, &options, device, on_batch)?;
    let sentences = outputs
        .iter()
        .map(|tokens| vocab.decode(tokens))
        .collect::<Result<_>>()?;
    Ok(Translations {
        sentences,
        truncated,
    })
}

/// The decoding behind [`translate`], on token ids: each source's output ids (without BOS and
/// EOS), in the input's order; an empty source gets an empty output. Sources must fit the model
/// ([`max_source_len`](tf_model::Transformer::max_source_len)).
pub fn translate_ids(
    model: &Transformer,
    sources: &[Vec<usize>],
    options: &TranslateOptions,
    device: &Device,
    mut on_batch: impl FnMut(usize),
) -> Result<Vec<Vec<usize>>> {
    let mut out = vec![Vec::new(); sources.len()];
    // Similar lengths together: little padding, and beams that finish together.
    let mut order: Vec<usize> = (0..sources.len())
        .filter(|&i| !sources[i].is_empty())
        .collect();
    order.sort_by_key(|&i| sources[i].len());
    for chunk in order.chunks(options.batch_sentences.max(1)) {
        let ids: Vec<Vec<usize>> = chunk.iter().map(|&i| sources[i].clone()).collect();
        let (src, src_pad_mask) = Seq2SeqBatch::sources(&ids, device);
        // Beam search at beam 1 is greedy decoding, with each sentence's own length limit and
        // finished sentences leaving the batch.
        let beam = BeamOptions {
            beam_size: options.beam_size.max(1),
            alpha: options.alpha,
            max_output: options.max_output,
            ranking: options.ranking,
            forbidden: options.special.forbidden,
            ..BeamOptions::new(options.special.bos, options.special.eos)
        };
        let outputs: Vec<Vec<usize>> = model
            .beam_search(src, Some(src_pad_mask), &beam)?
            .into_iter()
            .map(|hypotheses| {
                hypotheses
                    .into_iter()
                    .next()
                    .map(|h| h.tokens)
                    .unwrap_or_default()
            })
            .collect();
        for (&i, mut tokens) in chunk.iter().zip(outputs) {
            if let Some(end) = tokens.iter().position(|&t| t == options.special.eos) {
                tokens.truncate(end);
            }
            out[i] = tokens;
        }
        on_batch(chunk.len());
    }
    on_batch(sources.len() - order.len()); // the empty ones
    Ok(out)
}
