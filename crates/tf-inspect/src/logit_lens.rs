//! The logit lens (nostalgebraist, 2020) for the decoder: each layer's residual stream through
//! the final LayerNorm and the output projection, as if the decoder ended there, and the rank
//! the finally chosen token has at each layer and position.

use burn::tensor::Device;
use burn::tensor::activation::softmax;
use serde::Serialize;
use tf_attention::hooks::{LayerSite, Stack};
use tf_attention::{HookPoint, HookValue, Hooks};
use tf_model::Transformer;

use crate::error::{InspectError, Result};
use crate::forced::{Forced, forced, ids};
use crate::tokens::Tokens;

/// What each decoder layer would predict.
#[derive(Clone, Debug, Serialize)]
pub struct LogitLens {
    /// The source tokens.
    pub source: Vec<String>,
    /// The decoder's input: BOS, then the translation.
    pub decoder_input: Vec<String>,
    /// The token finally chosen at each position: the translation, then EOS.
    pub output: Vec<String>,
    /// The point read in each row: `dec.{l}.resid_post` for every layer.
    pub layers: Vec<String>,
    /// `[layer][position]`: how many tokens score above the finally chosen one (0 = top).
    pub ranks: Vec<Vec<usize>>,
    /// `[layer][position]`: the finally chosen token's probability.
    pub probability: Vec<Vec<f32>>,
    /// `[layer][position]`: the layer's own top token.
    pub top: Vec<Vec<String>>,
}

/// The logit lens over `source`'s translation: `target` if given, else the greedy one (at most
/// `max_output` tokens); `labels` write token ids as text.
///
/// # Errors
/// If the source is empty or the translation does not fit the model's positions.
pub fn logit_lens(
    model: &Transformer,
    source: &[usize],
    target: Option<&[usize]>,
    max_output: usize,
    tokens: Tokens<'_>,
    device: &Device,
) -> Result<LogitLens> {
    let Forced { prefix, output, .. } =
        forced(model, source, target, max_output, tokens.special, device)?;
    let n_layers = model.decoder.layers.len();
    let points: Vec<HookPoint> = (0..n_layers)
        .map(|l| HookPoint::layer(Stack::Decoder, l, LayerSite::ResidPost))
        .collect();
    let mut hooks = points.iter().fold(Hooks::none(), |h, p| h.cache(*p));
    model
        .forward_hooked(
            ids(source, device),
            ids(&prefix, device),
            None,
            None,
            &mut hooks,
        )
        .map_err(|err| InspectError::Invalid(err.to_string()))?;
    let (mut ranks, mut probability, mut top) = (Vec::new(), Vec::new(), Vec::new());
    for point in &points {
        let Some(HookValue::Rank3(residual)) = hooks.cached(point).cloned() else {
            unreachable!("a residual stream is kept as rank 3")
        };
        let logits = model.unembed(residual); // [1, tgt_len, vocab]
        let vocab = logits.dims()[2];
        let probs = softmax(logits.clone(), 2)
            .into_data()
            .try_to_vec::<f32>()
            .expect("f32 probabilities");
        let logits = logits.into_data().try_to_vec::<f32>().expect("f32 logits");
        let (mut layer_ranks, mut layer_probs, mut layer_top) =
            (Vec::new(), Vec::new(), Vec::new());
        for (t, &chosen) in output.iter().enumerate() {
            let row = &logits[t * vocab..(t + 1) * vocab];
            layer_ranks.push(row.iter().filter(|&&x| x > row[chosen]).count());
            layer_probs.push(probs[t * vocab + chosen]);
            let best = (0..vocab)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .expect("a vocabulary");
            layer_top.push((tokens.target)(best));
        }
        ranks.push(layer_ranks);
        probability.push(layer_probs);
        top.push(layer_top);
    }
    Ok(LogitLens {
        source: tokens.sources(source),
        decoder_input: tokens.targets(&prefix),
        output: tokens.targets(&output),
        layers: points.iter().map(ToString::to_string).collect(),
        ranks,
        probability,
        top,
    })
}

impl LogitLens {
    /// A table: one row per layer, one column per position, each cell `rank:top token`.
    pub fn table(&self) -> String {
        let mut lines = vec![format!(
            "{:<18} {}",
            "chosen →",
            self.output
                .iter()
                .map(|t| format!("{t:>12}"))
                .collect::<String>()
        )];
        for (l, layer) in self.layers.iter().enumerate() {
            let cells: String = self.ranks[l]
                .iter()
                .zip(&self.top[l])
                .map(|(rank, top)| format!("{:>12}", format!("{rank}:{top}")))
                .collect();
            lines.push(format!("{layer:<18} {cells}"));
        }
        lines.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tf_model::TransformerConfig;

    #[test]
    fn the_last_layer_ranks_the_greedy_choice_first() {
        let device = Device::flex();
        device.seed(5);
        let model = TransformerConfig::tiny(12, 12)
            .with_max_len(16)
            .init(&device);
        let lens = logit_lens(
            &model,
            &[3, 4, 5],
            None,
            6,
            Tokens::ours(&|id| id.to_string()),
            &device,
        )
        .unwrap();
        assert_eq!(lens.layers, ["dec.0.resid_post", "dec.1.resid_post"]);
        let last = lens.ranks.last().unwrap();
        assert_eq!(last.len(), lens.output.len());
        // Greedy decoding chose the top token of the last layer at every position (the EOS
        // position only if EOS was generated).
        let generated = if lens.output.len() <= 6 {
            last.len()
        } else {
            last.len() - 1
        };
        assert!(last[..generated].iter().all(|&r| r == 0), "{last:?}");
        assert_eq!(lens.top.last().unwrap()[0], lens.output[0]);
        for row in &lens.probability {
            assert!(row.iter().all(|p| (0.0..=1.0).contains(p)));
        }
        assert!(lens.table().contains("dec.1.resid_post"));
    }
}
