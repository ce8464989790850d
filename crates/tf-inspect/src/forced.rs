//! The teacher-forced decoding the hook-based inspections read: a given translation or the
//! model's greedy one, with the decoder input (BOS first) and the tokens predicted (EOS last).

use burn::tensor::{Device, Int, Tensor, TensorData};
use tf_model::{GreedyOptions, Transformer};
use tf_train::data::task::SpecialIds;

use crate::error::{InspectError, Result};

/// One translation, ready for a teacher-forced pass.
#[derive(Clone, Debug)]
pub struct Forced {
    /// The translation, without BOS or EOS.
    pub translation: Vec<usize>,
    /// The decoder input: BOS, then the translation.
    pub prefix: Vec<usize>,
    /// What each decoder position predicts: the translation, then EOS.
    pub output: Vec<usize>,
}

/// `tokens` as a `[1, len]` id tensor.
pub fn ids(tokens: &[usize], device: &Device) -> Tensor<2, Int> {
    repeated_ids(tokens, 1, device)
}

/// `tokens` as `rows` identical rows: a `[rows, len]` id tensor.
pub fn repeated_ids(tokens: &[usize], rows: usize, device: &Device) -> Tensor<2, Int> {
    let ids: Vec<i64> = (0..rows)
        .flat_map(|_| tokens.iter().map(|&t| t as i64))
        .collect();
    Tensor::from_data(TensorData::new(ids, [rows, tokens.len()]), device)
}

/// The greedy translation of `source` from `special.bos` to `special.eos`, at most
/// `max_output` tokens and one fewer than the model's positions (BOS needs one).
///
/// # Errors
/// If decoding fails.
pub fn greedy(
    model: &Transformer,
    source: &[usize],
    max_output: usize,
    special: SpecialIds,
    device: &Device,
) -> Result<Vec<usize>> {
    let max_output = max_output.min(model.max_len().saturating_sub(1));
    let options =
        GreedyOptions::new(special.bos, special.eos, max_output).with_forbidden(special.forbidden);
    Ok(model
        .greedy_decode(ids(source, device), None, &options)?
        .remove(0))
}

/// `target`, or `source`'s greedy translation, teacher-forced after `special.bos` and ending
/// in `special.eos`.
///
/// # Errors
/// If the source is empty, decoding fails, or the translation does not fit the model's
/// positions.
pub fn forced(
    model: &Transformer,
    source: &[usize],
    target: Option<&[usize]>,
    max_output: usize,
    special: SpecialIds,
    device: &Device,
) -> Result<Forced> {
    if source.is_empty() {
        return Err(InspectError::Invalid("an empty source".into()));
    }
    let translation = match target {
        Some(target) => target.to_vec(),
        None => greedy(model, source, max_output, special, device)?,
    };
    let prefix: Vec<usize> = std::iter::once(special.bos)
        .chain(translation.iter().copied())
        .collect();
    if prefix.len() > model.max_len() {
        return Err(InspectError::Invalid(format!(
            "the translation has {} tokens, more than the model's {} positions allow",
            translation.len(),
            model.max_len()
        )));
    }
    let output = translation.iter().copied().chain([special.eos]).collect();
    Ok(Forced {
        translation,
        prefix,
        output,
    })
}
