//! The LayerNorm a stack may end with (pre-norm stacks need one; PyTorch's `nn.Transformer`
//! has one in both placements).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig};
use burn::tensor::{Device, Tensor};
use tf_layers::TransformerLayerConfig;

/// An optional LayerNorm over a stack's output.
#[derive(Module, Debug)]
pub struct FinalLayerNorm {
    /// The norm, when the stack has one.
    pub norm: Option<LayerNorm>,
}

impl FinalLayerNorm {
    /// A norm of the layers' width and epsilon, or none.
    pub fn new(layer: &TransformerLayerConfig, enabled: bool, device: &Device) -> Self {
        Self {
            norm: enabled.then(|| {
                LayerNormConfig::new(layer.d_model)
                    .with_epsilon(layer.layer_norm_eps)
                    .init(device)
            }),
        }
    }

    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`
    /// - returns `[batch, seq_len, d_model]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.norm {
            Some(norm) => norm.forward(x),
            None => x,
        }
    }
}
