//! The interactive attention viewer: one self-contained HTML page (data, script and styles
//! inline, nothing fetched) with a head view (a layer's heads as coloured links between two
//! token columns), a model view (every layer × head as a thumbnail), the selected head as an
//! alignment matrix, per-head statistics, SVG export and keyboard use; and, when given
//! ([`ViewerData::with_attributions`]), each output token's attributions by every method
//! asked, beside the attention.
//!
//! The page holds every weight of the decoding once, as integers in ten-thousandths: for `L_e`
//! encoder and `L_d` decoder layers of `H` heads, a source of `S` tokens and `T` decoder steps,
//! `H · (L_e·S² + L_d·(T² + T·S))` numbers of at most 6 bytes each, plus about 30 KB of script
//! and styles: it grows with the square of the sentence length and linearly with layers and
//! heads. A 40-token sentence through the default de→en model (3 + 3 layers, 4 heads, at most
//! 70 steps) stays under 1 MB.
//!
//! The script is `assets/viewer.js`, plain modern JavaScript with no build step; the styles
//! `assets/viewer.css`; the page `assets/viewer.html`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tf_train::store::atomic::write_atomic;
use tf_train::{RunConfig, RunTask};

use crate::attention_maps::AttentionMaps;
use crate::attribution::{Attribution, AttributionMethod};
use crate::error::{InspectError, Result};
use crate::head_stats::sentence_statistics;

const PAGE: &str = include_str!("../assets/viewer.html");
const SCRIPT: &str = include_str!("../assets/viewer.js");
const STYLE: &str = include_str!("../assets/viewer.css");

/// Weights are stored as integers in units of `1 / WEIGHT_SCALE`.
pub const WEIGHT_SCALE: f32 = 10_000.0;

/// The head view draws a link for every (query, key) pair whose weight is above this.
pub const LINK_THRESHOLD: f32 = 0.01;

/// Where the embedded data begins and ends in the page.
const DATA_OPEN: &str = r#"<script type="application/json" id="attention-data">"#;
const DATA_CLOSE: &str = "</script>";

/// What the page shows besides the weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewerInfo {
    /// The page title, e.g. the model directory.
    pub title: String,
    /// One line about the model ("de→en, 3 + 3 layers, d_model 256, 4 heads").
    pub model: String,
    /// Whether the tokens are subwords of a translation model (the page then shows the source
    /// and the decoded output as text, side by side).
    pub translation: bool,
    /// The input as the user gave it.
    pub source_text: String,
    /// The decoded output, detokenized.
    pub output_text: String,
}

/// One head's statistics over this sentence, shown beside the head.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SentenceHeadStats {
    /// Mean entropy of a query's weights, nats.
    pub entropy: f64,
    /// Mean attention-weighted distance between query and key positions.
    pub distance: f64,
    /// Mean largest weight of a query (Voita et al.'s confidence).
    pub confidence: f64,
}

/// One block as the page holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewerBlock {
    /// `encoder-self`, `decoder-self` or `cross`.
    pub kind: String,
    /// Its layer.
    pub layer: usize,
    /// `weights[head][query][key]` in units of `1 / WEIGHT_SCALE`.
    pub weights: Vec<Vec<Vec<u16>>>,
    /// Per head.
    pub stats: Vec<SentenceHeadStats>,
}

/// One attribution method's rows, as the page holds them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewerAttribution {
    /// The method's name (`alti+`, …).
    pub method: String,
    /// Whether each row is a share of one prediction over the source and the prefix together.
    pub shares: bool,
    /// The generated tokens, EOS last (rows).
    pub rows: Vec<String>,
    /// The source tokens (columns of `source`).
    pub source_tokens: Vec<String>,
    /// The decoder input, BOS first (columns of `target`).
    pub prefix_tokens: Vec<String>,
    /// `source[row][source token]` in units of `1 / WEIGHT_SCALE`.
    pub source: Vec<Vec<u16>>,
    /// `target[row][prefix position]` in units of `1 / WEIGHT_SCALE`.
    pub target: Vec<Vec<u16>>,
}

impl ViewerAttribution {
    /// `attribution`, computed by `method`, as the page holds it.
    pub fn new(method: AttributionMethod, attribution: &Attribution) -> Self {
        let quantized = |rows: &[Vec<f32>]| -> Vec<Vec<u16>> {
            rows.iter()
                .map(|row| row.iter().map(|&w| quantize(w)).collect())
                .collect()
        };
        Self {
            method: attribution.method.clone(),
            shares: method.gives_shares(),
            rows: attribution.target_tokens.clone(),
            source_tokens: attribution.source_tokens.clone(),
            prefix_tokens: attribution.prefix_tokens.clone(),
            source: quantized(&attribution.source),
            target: quantized(&attribution.target),
        }
    }
}

/// Everything the page embeds, as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ViewerData {
    /// Titles and texts.
    pub info: ViewerInfo,
    /// Encoder positions (cross-attention keys).
    pub source: Vec<String>,
    /// Decoder positions: `<bos>` then the generated tokens.
    pub decoder_input: Vec<String>,
    /// Weights are `weights / scale`.
    pub scale: f32,
    /// Links under this weight are not drawn.
    pub threshold: f32,
    /// Encoder self-attention per layer, then decoder self-attention, then cross-attention.
    pub blocks: Vec<ViewerBlock>,
    /// Attributions of the same decoding, by method (none unless asked).
    #[serde(default)]
    pub attributions: Vec<ViewerAttribution>,
}

impl ViewerData {
    /// The page's data for `maps`.
    pub fn new(maps: &AttentionMaps, info: ViewerInfo) -> Self {
        let stats = sentence_statistics(maps);
        let mut stats = stats.iter();
        let blocks = maps
            .blocks
            .iter()
            .map(|block| ViewerBlock {
                kind: block.block.kind.name().to_string(),
                layer: block.block.layer,
                weights: block
                    .heads
                    .iter()
                    .map(|rows| {
                        rows.iter()
                            .map(|row| row.iter().map(|&w| quantize(w)).collect())
                            .collect()
                    })
                    .collect(),
                // The statistics come head by head in block order: this block's are next.
                stats: stats
                    .by_ref()
                    .take(block.heads.len())
                    .map(|s| SentenceHeadStats {
                        entropy: round3(s.entropy),
                        distance: round3(s.distance),
                        confidence: round3(s.max_weight),
                    })
                    .collect(),
            })
            .collect();
        Self {
            info,
            source: maps.source.clone(),
            decoder_input: maps.decoder_input.clone(),
            scale: WEIGHT_SCALE,
            threshold: LINK_THRESHOLD,
            blocks,
            attributions: Vec::new(),
        }
    }

    /// The page with these attributions of the same decoding shown beside the attention.
    pub fn with_attributions(mut self, attributions: Vec<ViewerAttribution>) -> Self {
        self.attributions = attributions;
        self
    }

    /// The whole page: the template with the styles, the script and this data inlined.
    pub fn page(&self) -> Result<String> {
        // `</` inside the JSON would end the script element early.
        let json = serde_json::to_string(self)?.replace("</", r"<\/");
        Ok(PAGE
            .replace("{{TITLE}}", &escape_html(&self.info.title))
            .replace("{{STYLE}}", STYLE)
            .replace("{{SCRIPT}}", SCRIPT)
            .replace("{{DATA}}", &format!("{DATA_OPEN}{json}{DATA_CLOSE}")))
    }

    /// Writes the page to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(write_atomic(path, self.page()?.as_bytes())?)
    }

    /// The data embedded in a page this module wrote.
    pub fn from_page(page: &str) -> Result<Self> {
        let missing = || InspectError::Invalid("the page embeds no attention data".into());
        let start = page.find(DATA_OPEN).ok_or_else(missing)? + DATA_OPEN.len();
        let end = start + page[start..].find(DATA_CLOSE).ok_or_else(missing)?;
        let json = page[start..end].replace(r"<\/", "</");
        serde_json::from_str(&json)
            .map_err(|err| InspectError::Invalid(format!("the page's attention data: {err}")))
    }

    /// The number of links the head view draws for `head` of the block of `kind` and `layer`:
    /// its (query, key) pairs above the threshold.
    pub fn links(&self, kind: &str, layer: usize, head: usize) -> Option<usize> {
        let block = self
            .blocks
            .iter()
            .find(|b| b.kind == kind && b.layer == layer)?;
        let threshold = (self.threshold * self.scale) as u16;
        let rows = block.weights.get(head)?;
        Some(rows.iter().flatten().filter(|&&w| w > threshold).count())
    }
}

/// One line about a run's model, for the page: "`reverse` task: 2 + 2 layers, d_model 128,
/// 4 heads, d_ff 512".
pub fn model_summary(config: &RunConfig) -> String {
    let m = &config.model;
    let task = match &config.task {
        RunTask::Synthetic(task) => format!("`{}` task", task.kind),
        RunTask::Translation(task) => format!("{} translation", task.direction()),
    };
    format!(
        "{task}: {} + {} layers, d_model {}, {} heads, d_ff {}",
        m.n_encoder_layers, m.n_decoder_layers, m.layer.d_model, m.layer.n_heads, m.layer.d_ff
    )
}

/// A weight in `[0, 1]` as ten-thousandths.
fn quantize(weight: f32) -> u16 {
    (weight.clamp(0.0, 1.0) * WEIGHT_SCALE).round() as u16
}

fn round3(value: f64) -> f64 {
    (value * 1e3).round() / 1e3
}

/// Text safe inside HTML elements and attributes.
fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention_maps::{BlockWeights, tiny_maps};
    use tf_model::{AttentionKind, BlockId};

    fn info() -> ViewerInfo {
        ViewerInfo {
            title: "runs/<reverse>".into(),
            model: "reverse, 2 + 2 layers".into(),
            translation: false,
            source_text: "3 1 4".into(),
            output_text: "4 1 3".into(),
        }
    }

    #[test]
    fn attributions_go_in_quantized_and_come_back() {
        let attribution = Attribution {
            method: "alti+".into(),
            source_tokens: vec!["3".into(), "1".into()],
            target_tokens: vec!["1".into(), "<eos>".into()],
            prefix_tokens: vec!["<bos>".into(), "1".into()],
            source: vec![vec![0.75, 0.125], vec![0.5, 0.25]],
            target: vec![vec![0.125, 0.0], vec![0.0625, 0.1875]],
        };
        let shown = ViewerAttribution::new(AttributionMethod::AltiPlus, &attribution);
        assert!(shown.shares);
        assert_eq!(shown.source, [[7500, 1250], [5000, 2500]]);
        assert_eq!(shown.target, [[1250, 0], [625, 1875]]);
        let page = ViewerData::new(&tiny_maps(), info())
            .with_attributions(vec![shown.clone()])
            .page()
            .unwrap();
        assert_eq!(ViewerData::from_page(&page).unwrap().attributions, [shown]);
        // A page written without attributions reads back with none.
        let page = ViewerData::new(&tiny_maps(), info()).page().unwrap();
        assert!(
            ViewerData::from_page(&page)
                .unwrap()
                .attributions
                .is_empty()
        );
    }

    #[test]
    fn the_page_embeds_the_captured_weights_and_gives_them_back() {
        let maps = tiny_maps();
        let page = ViewerData::new(&maps, info()).page().unwrap();
        assert!(page.contains("<title>runs/&lt;reverse&gt;</title>"));
        // Nothing is fetched: no external script, style, font or request; the one address is
        // the SVG namespace, a name rather than a download.
        for loader in [
            "<link",
            " src=",
            "@import",
            "url(",
            "fetch(",
            "XMLHttpRequest",
        ] {
            assert!(!page.contains(loader), "{loader}");
        }
        let addresses = page.matches("http").count();
        assert_eq!(
            addresses,
            page.matches("http://www.w3.org/2000/svg").count()
        );

        let data = ViewerData::from_page(&page).unwrap();
        assert_eq!(data.source, maps.source);
        assert_eq!(data.decoder_input, maps.decoder_input);
        assert_eq!(data.blocks.len(), maps.blocks.len());
        for (embedded, captured) in data.blocks.iter().zip(&maps.blocks) {
            assert_eq!(embedded.kind, captured.block.kind.name());
            assert_eq!(embedded.layer, captured.block.layer);
            let embedded_values = embedded.weights.iter().flatten().flatten();
            let captured_values = captured.heads.iter().flatten().flatten();
            assert_eq!(
                embedded_values.clone().count(),
                captured_values.clone().count()
            );
            for (&e, &c) in embedded_values.zip(captured_values) {
                // Rounding is off by at most half a unit; a weight at exactly half a unit
                // (0.46205 → 4621) is that far in decimal but a hair further in f32.
                assert!(
                    (e as f32 / data.scale - c).abs() <= 0.5 / WEIGHT_SCALE + 1e-6,
                    "{e} vs {c}"
                );
            }
            assert_eq!(embedded.stats.len(), captured.heads.len());
        }
    }

    #[test]
    fn json_that_would_close_the_script_is_escaped() {
        let maps = AttentionMaps {
            source: vec!["</script>".into()],
            decoder_input: vec!["<bos>".into()],
            output: vec!["<eos>".into()],
            output_ids: Vec::new(),
            blocks: Vec::new(),
        };
        let page = ViewerData::new(&maps, info()).page().unwrap();
        assert_eq!(
            page.matches("</script>").count(),
            2,
            "the script and the data only"
        );
        assert_eq!(ViewerData::from_page(&page).unwrap().source, ["</script>"]);
    }

    /// The size the module doc promises: a 40-token sentence through the default de→en model
    /// (3 + 3 layers, 4 heads) decoded to its longest output (1.5 · 40 + 10 = 70 steps).
    #[test]
    fn a_forty_token_sentence_through_the_translation_model_stays_under_one_megabyte() {
        let (src, steps, heads) = (40, 70, 4);
        let uniform = |q: usize, k: usize| vec![vec![vec![1.0 / k as f32; k]; q]; heads];
        let block = |kind, layer, q, k| BlockWeights {
            block: BlockId { kind, layer },
            heads: uniform(q, k),
        };
        let mut blocks = Vec::new();
        for layer in 0..3 {
            blocks.push(block(AttentionKind::EncoderSelf, layer, src, src));
        }
        for layer in 0..3 {
            blocks.push(block(AttentionKind::DecoderSelf, layer, steps, steps));
        }
        for layer in 0..3 {
            blocks.push(block(AttentionKind::Cross, layer, steps, src));
        }
        let maps = AttentionMaps {
            source: vec!["▁Straße".into(); src],
            decoder_input: vec!["▁street".into(); steps],
            output: vec!["▁street".into(); steps],
            output_ids: vec![7; steps],
            blocks,
        };
        let page = ViewerData::new(&maps, info()).page().unwrap();
        println!("page of a 40-token sentence: {} bytes", page.len());
        assert!(page.len() < 1_000_000, "{} bytes", page.len());
    }
}
