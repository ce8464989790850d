//! The attention behind one decoded input, labelled with its tokens: captured during greedy
//! decoding, then written as heatmaps (one per layer and head, and one grid per attention kind)
//! and as JSON.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Serialize;
use tf_model::{AttentionKind, BlockId, GreedyOptions, Transformer};
use tf_train::store::atomic::write_atomic;

use crate::tokens::Tokens;

use crate::error::Result;
use crate::plot::{self, Heatmap};

/// One attention block's weights: `heads[h][query][key]`.
#[derive(Clone, Debug, Serialize)]
pub struct BlockWeights {
    /// Which block.
    pub block: BlockId,
    /// Per head, per query, per key.
    pub heads: Vec<Vec<Vec<f32>>>,
}

/// Every attention weight behind decoding one source, with the tokens on both axes.
#[derive(Clone, Debug, Serialize)]
pub struct AttentionMaps {
    /// The source tokens (encoder positions, cross-attention keys).
    pub source: Vec<String>,
    /// The decoder's input at each step: `<bos>` then the generated tokens (decoder positions).
    pub decoder_input: Vec<String>,
    /// The generated tokens, `<eos>` included when generated.
    pub output: Vec<String>,
    /// Their ids, without `<eos>` (what a vocabulary decodes into text).
    pub output_ids: Vec<usize>,
    /// Encoder self-attention per layer, then decoder self-attention, then cross-attention.
    pub blocks: Vec<BlockWeights>,
}

impl AttentionMaps {
    /// Greedy-decodes `source` (token ids, at most `max_len` output tokens) between the
    /// model's special ids and keeps every layer's and head's weights; `tokens` also write the
    /// token ids as text.
    pub fn capture(
        model: &Transformer,
        source: &[usize],
        max_len: usize,
        tokens: Tokens<'_>,
        device: &Device,
    ) -> Result<Self> {
        let ids: Vec<i64> = source.iter().map(|&t| t as i64).collect();
        let src = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, source.len()]), device);
        let (decoded, attention) = model.greedy_decode_with_attention(
            src,
            None,
            &GreedyOptions::new(tokens.special.bos, tokens.special.eos, max_len)
                .with_forbidden(tokens.special.forbidden),
        )?;
        let steps = attention.cross.first().map_or(0, |w| w.dims()[2]);
        let mut output: Vec<usize> = decoded[0].clone();
        if output.len() < steps {
            output.push(tokens.special.eos); // the last step generated EOS
        }
        let decoder_input: Vec<usize> = std::iter::once(tokens.special.bos)
            .chain(output.iter().copied())
            .take(steps)
            .collect();
        let blocks = attention
            .into_blocks()
            .into_iter()
            .map(|(block, w)| BlockWeights {
                block,
                heads: matrices(w),
            })
            .collect();
        Ok(Self {
            source: tokens.sources(source),
            decoder_input: tokens.targets(&decoder_input),
            output: tokens.targets(&output),
            output_ids: decoded[0].clone(),
            blocks,
        })
    }

    /// The query and key labels of a kind of block.
    pub fn labels(&self, kind: AttentionKind) -> (&[String], &[String]) {
        match kind {
            AttentionKind::EncoderSelf => (&self.source, &self.source),
            AttentionKind::DecoderSelf => (&self.decoder_input, &self.decoder_input),
            AttentionKind::Cross => (&self.decoder_input, &self.source),
        }
    }

    /// Writes into `dir`: `KIND/layer-L-head-H.{png,svg}` for every head, `KIND.{png,svg}`
    /// (layers × heads) for every kind, and `attention.json`. Returns the paths written.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for kind in AttentionKind::ALL {
            let kind_dir = dir.join(kind.name());
            tf_train::error::create_dir_all(&kind_dir)?;
            let (queries, keys) = self.labels(kind);
            let mut grid = Vec::new();
            for block in self.blocks.iter().filter(|b| b.block.kind == kind) {
                let layer = block.block.layer;
                let mut row = Vec::new();
                for (head, rows) in block.heads.iter().enumerate() {
                    let map = Heatmap {
                        rows,
                        query_labels: queries,
                        key_labels: keys,
                        title: format!("{kind} layer {layer} head {head}"),
                    };
                    written.extend(plot::heatmap(
                        &kind_dir.join(format!("layer-{layer}-head-{head}")),
                        &map,
                    )?);
                    row.push(Heatmap {
                        title: format!("L{layer} H{head}"),
                        ..map
                    });
                }
                grid.push(row);
            }
            let title = format!("{kind} attention: layers (rows) × heads (columns)");
            written.extend(plot::heatmap_grid(&dir.join(kind.name()), &title, &grid)?);
        }
        let json_path = dir.join("attention.json");
        let json = serde_json::to_string(self)?;
        write_atomic(&json_path, json.as_bytes())?;
        written.push(json_path);
        Ok(written)
    }
}

/// `[1, n_heads, q_len, k_len]` weights as `heads[h][query][key]`.
///
/// # Shapes
/// - `weights`: `[1, n_heads, q_len, k_len]`
pub(crate) fn matrices(weights: Tensor<4>) -> Vec<Vec<Vec<f32>>> {
    let [_, n_heads, q_len, k_len] = weights.dims();
    let values = weights
        .into_data()
        .try_to_vec::<f32>()
        .expect("float weights");
    (0..n_heads)
        .map(|h| {
            (0..q_len)
                .map(|i| {
                    let start = (h * q_len + i) * k_len;
                    values[start..start + k_len].to_vec()
                })
                .collect()
        })
        .collect()
}

/// The maps of an untrained tiny `reverse` model decoding `3 1 4`: 2 + 2 layers of 2 heads.
#[cfg(test)]
pub(crate) fn tiny_maps() -> AttentionMaps {
    let device = Device::flex();
    let task = tf_train::Task::new(tf_train::TaskKind::Reverse, 6, 1, 6).unwrap();
    let model = task.tiny_model().init(&device);
    let source = task.parse("3 1 4").unwrap();
    let label = |id| task.token_label(id);
    AttentionMaps::capture(&model, &source, 7, Tokens::ours(&label), &device).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_have_the_tokens_shapes_and_files_they_promise() {
        let maps = tiny_maps();
        assert_eq!(maps.source, ["3", "1", "4"]);
        assert_eq!(maps.decoder_input[0], "<bos>");
        assert_eq!(maps.blocks.len(), 6);
        for block in &maps.blocks {
            let (queries, keys) = maps.labels(block.block.kind);
            assert_eq!(block.heads.len(), 2);
            for rows in &block.heads {
                assert_eq!(rows.len(), queries.len());
                for row in rows {
                    assert_eq!(row.len(), keys.len());
                    assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("tf-maps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = maps.write(&dir).unwrap();
        // 6 blocks × 2 heads + 3 grids, each PNG + SVG, and the JSON.
        assert_eq!(written.len(), (12 + 3) * 2 + 1);
        assert!(dir.join("cross/layer-1-head-1.png").is_file());
        assert!(dir.join("encoder-self.svg").is_file());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("attention.json")).unwrap())
                .unwrap();
        assert_eq!(json["blocks"][5]["block"]["kind"], "cross");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
