//! The model's attention heads, addressed one by one: gated (Michel, Levy & Neubig, 2019, "Are
//! Sixteen Heads Really Better than One?") and pruned.

use std::fmt;

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};
use tf_attention::MultiHeadAttention;

use crate::config::{HeadCounts, TransformerConfig};
use crate::transformer::Transformer;

/// The three kinds of attention block of an encoder–decoder model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttentionKind {
    /// Encoder self-attention.
    EncoderSelf,
    /// Decoder (masked) self-attention.
    DecoderSelf,
    /// Decoder cross-attention over the encoder output.
    Cross,
}

impl AttentionKind {
    /// All three, in the order of the model's data flow.
    pub const ALL: [Self; 3] = [Self::EncoderSelf, Self::DecoderSelf, Self::Cross];

    /// `encoder-self`, `decoder-self` or `cross`.
    pub fn name(self) -> &'static str {
        match self {
            Self::EncoderSelf => "encoder-self",
            Self::DecoderSelf => "decoder-self",
            Self::Cross => "cross",
        }
    }
}

impl fmt::Display for AttentionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One attention block: its kind and layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BlockId {
    /// Which attention.
    pub kind: AttentionKind,
    /// Layer index, from 0.
    pub layer: usize,
}

/// One head of one attention block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HeadId {
    /// The block.
    pub block: BlockId,
    /// Head index within the block, from 0.
    pub head: usize,
}

impl fmt::Display for HeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} layer {} head {}",
            self.block.kind, self.block.layer, self.head
        )
    }
}

/// Per-layer values of the three kinds of attention paired with their block, in data-flow
/// order: the encoder layers' self-attention, then the decoder layers' self-attention, then
/// their cross-attention. The one enumeration of blocks that modules, captured weights and
/// statistics share.
pub fn in_block_order<T>(
    encoder_self: impl IntoIterator<Item = T>,
    decoder_self: impl IntoIterator<Item = T>,
    cross: impl IntoIterator<Item = T>,
) -> Vec<(BlockId, T)> {
    let block = |kind| move |(layer, value)| (BlockId { kind, layer }, value);
    encoder_self
        .into_iter()
        .enumerate()
        .map(block(AttentionKind::EncoderSelf))
        .chain(
            decoder_self
                .into_iter()
                .enumerate()
                .map(block(AttentionKind::DecoderSelf)),
        )
        .chain(
            cross
                .into_iter()
                .enumerate()
                .map(block(AttentionKind::Cross)),
        )
        .collect()
}

/// A pruning request the model cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PruneError {
    /// The head is not in the model.
    #[error("the model has no {0}")]
    NoSuchHead(HeadId),
    /// Every head of a block would go; a block keeps at least one.
    #[error("pruning would remove every head of {kind} layer {layer}; a block keeps at least one")]
    EmptyBlock {
        /// Which attention.
        kind: AttentionKind,
        /// Its layer.
        layer: usize,
    },
}

impl Transformer {
    /// Every attention block, in data-flow order: the encoder layers' self-attention, then the
    /// decoder layers' self-attention, then their cross-attention.
    pub fn attention_blocks(&self) -> Vec<(BlockId, &MultiHeadAttention)> {
        in_block_order(
            self.encoder.layers.iter().map(|l| &l.self_attn),
            self.decoder.layers.iter().map(|l| &l.self_attn),
            self.decoder.layers.iter().map(|l| &l.cross_attn),
        )
    }

    /// Every head, in the order of [`attention_blocks`](Self::attention_blocks).
    pub fn heads(&self) -> Vec<HeadId> {
        self.attention_blocks()
            .into_iter()
            .flat_map(|(block, mha)| (0..mha.n_heads).map(move |head| HeadId { block, head }))
            .collect()
    }

    fn attention_block_mut(&mut self, block: BlockId) -> &mut MultiHeadAttention {
        match block.kind {
            AttentionKind::EncoderSelf => &mut self.encoder.layers[block.layer].self_attn,
            AttentionKind::DecoderSelf => &mut self.decoder.layers[block.layer].self_attn,
            AttentionKind::Cross => &mut self.decoder.layers[block.layer].cross_attn,
        }
    }

    /// The same model with each head's output multiplied by `gate(head)` before its block's W^O.
    /// Gates of 1 leave the model unchanged; a gate of 0 silences the head.
    pub fn gate_heads(&self, gate: impl Fn(HeadId) -> f32) -> Self {
        let mut gated = self.clone();
        for (block, mha) in self.attention_blocks() {
            let gates: Vec<f32> = (0..mha.n_heads)
                .map(|head| gate(HeadId { block, head }))
                .collect();
            let device = mha.out_proj.weight.device();
            *gated.attention_block_mut(block) =
                mha.gate_heads(Tensor::from_floats(gates.as_slice(), &device));
        }
        gated
    }

    /// The same model without the heads in `remove`, physically: smaller projections in the
    /// blocks concerned, and the config that rebuilds it (its `head_counts`). It computes what
    /// this model computes with those heads' gates at 0.
    ///
    /// # Errors
    /// If a head is not in the model, or a block would lose all its heads.
    pub fn prune_heads(
        &self,
        config: &TransformerConfig,
        remove: &[HeadId],
    ) -> Result<(TransformerConfig, Self), PruneError> {
        let heads = self.heads();
        if let Some(missing) = remove.iter().find(|h| !heads.contains(h)) {
            return Err(PruneError::NoSuchHead(*missing));
        }
        let mut pruned = self.clone();
        let mut counts = HeadCounts::new(vec![], vec![], vec![]);
        for (block, mha) in self.attention_blocks() {
            let keep: Vec<usize> = (0..mha.n_heads)
                .filter(|&head| !remove.contains(&HeadId { block, head }))
                .collect();
            if keep.is_empty() {
                return Err(PruneError::EmptyBlock {
                    kind: block.kind,
                    layer: block.layer,
                });
            }
            if keep.len() < mha.n_heads {
                *pruned.attention_block_mut(block) = mha.prune_heads(&keep);
            }
            match block.kind {
                AttentionKind::EncoderSelf => &mut counts.encoder_self,
                AttentionKind::DecoderSelf => &mut counts.decoder_self,
                AttentionKind::Cross => &mut counts.cross,
            }
            .push(keep.len());
        }
        let config = config.clone().with_head_counts(Some(counts));
        Ok((config, pruned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::store::ModuleRecord;
    use burn::tensor::{Bytes, Device, Int};
    use tf_attention::max_abs_diff;
    use tf_layers::TransformerLayerConfig;

    fn model(device: &Device) -> (TransformerConfig, Transformer) {
        let config = TransformerConfig::tiny(11, 11)
            .with_layer(TransformerLayerConfig::tiny().with_n_heads(4))
            .with_max_len(16);
        device.seed(5);
        let model = config.init(device);
        (config, model)
    }

    fn logits(model: &Transformer, device: &Device) -> Vec<f32> {
        let src = Tensor::<2, Int>::from_ints([[3, 4, 5, 6], [7, 8, 0, 0]], device);
        let tgt = Tensor::<2, Int>::from_ints([[1, 6, 5], [1, 8, 7]], device);
        let pad = src.clone().equal_elem(0);
        model
            .forward(src, tgt, Some(pad), None)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn heads_are_listed_in_data_flow_order() {
        let device = Device::flex();
        let (_, model) = model(&device);
        let heads = model.heads();
        assert_eq!(heads.len(), 3 * 2 * 4);
        assert_eq!(heads[0].to_string(), "encoder-self layer 0 head 0");
        assert_eq!(heads[8].block.kind, AttentionKind::DecoderSelf);
        assert_eq!(heads[23].to_string(), "cross layer 1 head 3");
    }

    #[test]
    fn gates_at_one_reproduce_the_model_and_pruning_equals_a_zero_gate() {
        let device = Device::flex();
        let (config, model) = model(&device);
        let reference = logits(&model, &device);
        assert_eq!(logits(&model.gate_heads(|_| 1.0), &device), reference);

        let removed: Vec<HeadId> = [0, 9, 18, 19].iter().map(|&i| model.heads()[i]).collect();
        let gated = model.gate_heads(|h| if removed.contains(&h) { 0.0 } else { 1.0 });
        let (pruned_config, pruned) = model.prune_heads(&config, &removed).unwrap();
        assert_eq!(pruned.heads().len(), 24 - 4);
        let diff = |a: Vec<f32>, b: &[f32]| {
            let tensor = |v: Vec<f32>| Tensor::<1>::from_floats(v.as_slice(), &device);
            max_abs_diff(tensor(a), tensor(b.to_vec()))
        };
        assert!(diff(logits(&pruned, &device), &logits(&gated, &device)) <= 1e-5);
        assert!(diff(logits(&gated, &device), &reference) > 1e-3);

        // The pruned model is rebuilt from its config and loads its own weights.
        let counts = pruned_config.head_counts.clone().unwrap();
        assert_eq!(counts.encoder_self, [3, 4]);
        assert_eq!(counts.decoder_self, [3, 4]);
        assert_eq!(counts.cross, [2, 4]);
        let bytes = pruned.clone().into_record().into_bytes().unwrap();
        let reloaded = pruned_config
            .init(&device)
            .try_load_record(
                ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).unwrap(),
            )
            .unwrap();
        assert_eq!(logits(&reloaded, &device), logits(&pruned, &device));
    }

    #[test]
    fn pruning_refuses_unknown_heads_and_empty_blocks() {
        let device = Device::flex();
        let (config, model) = model(&device);
        let block = BlockId {
            kind: AttentionKind::Cross,
            layer: 1,
        };
        let missing = HeadId { block, head: 4 };
        assert_eq!(
            model.prune_heads(&config, &[missing]).unwrap_err(),
            PruneError::NoSuchHead(missing)
        );
        let all: Vec<HeadId> = (0..4).map(|head| HeadId { block, head }).collect();
        let err = model.prune_heads(&config, &all).unwrap_err();
        assert!(err.to_string().contains("every head of cross layer 1"));
    }
}
