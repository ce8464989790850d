//! The residual connection around every sublayer, with its dropout and layer normalisation
//! (§3.1, §5.4), in the paper's post-norm placement or the pre-norm one.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig};
use burn::tensor::Tensor;

use crate::fused_dropout::dropout;
use crate::fused_layer_norm::layer_norm;

/// Where the layer normalisation sits relative to the residual connection.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum NormPosition {
    /// `LayerNorm(x + Dropout(Sublayer(x)))`, the paper's (§3.1).
    Post,
    /// `x + Dropout(Sublayer(LayerNorm(x)))` (Xiong et al., 2020): trains without warm-up
    /// trouble in deep stacks; the stack then needs a final LayerNorm.
    Pre,
}

/// Configuration of [`ResidualNorm`].
#[derive(Config, Debug)]
pub struct ResidualNormConfig {
    /// Model width `d_model`.
    pub d_model: usize,
    /// Dropout on the sublayer output, `P_drop` (0.1 in the base model).
    pub dropout: f64,
    /// Post-norm (paper) or pre-norm.
    pub position: NormPosition,
    /// LayerNorm epsilon. Default: 1e-5 (PyTorch's).
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl ResidualNormConfig {
    /// Builds the module; the caller has validated the sizes and the dropout.
    pub fn init(&self, device: &burn::tensor::Device) -> ResidualNorm {
        ResidualNorm {
            norm: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_eps)
                .init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            position: self.position,
            epsilon: self.layer_norm_eps,
        }
    }
}

/// Residual connection, dropout and LayerNorm around one sublayer.
#[derive(Module, Debug)]
pub struct ResidualNorm {
    /// The layer normalisation.
    pub norm: LayerNorm,
    /// Dropout on the sublayer's output.
    pub dropout: Dropout,
    /// Post-norm or pre-norm.
    #[module(skip)]
    pub position: NormPosition,
    /// The layer normalisation's epsilon (burn-nn's `LayerNorm` keeps its own private).
    #[module(skip)]
    pub epsilon: f64,
}

impl ResidualNorm {
    /// Runs `sublayer` with its residual connection; whatever else the sublayer returns (its
    /// attention weights, say) is passed through.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`
    /// - `sublayer`: `[batch, seq_len, d_model] -> [batch, seq_len, d_model]`
    /// - returns `[batch, seq_len, d_model]`
    pub fn forward<T>(
        &self,
        x: Tensor<3>,
        sublayer: impl FnOnce(Tensor<3>) -> (Tensor<3>, T),
    ) -> (Tensor<3>, T) {
        match self.position {
            NormPosition::Post => {
                let (out, extra) = sublayer(x.clone());
                let sum = x + dropout(&self.dropout, out);
                (layer_norm(&self.norm, self.epsilon, sum), extra)
            }
            NormPosition::Pre => {
                let (out, extra) = sublayer(layer_norm(&self.norm, self.epsilon, x.clone()));
                (x + dropout(&self.dropout, out), extra)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn post_norm_normalises_the_sum_and_pre_norm_keeps_the_residual() {
        let device = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, 3.0], [1, 1, 2]), &device);
        let config = |position| ResidualNormConfig::new(2, 0.0, position);
        // Post: LayerNorm([1,3] + [1,3]) = LayerNorm([2, 6]) = [-1, 1] (up to epsilon).
        let (post, ()) = config(NormPosition::Post)
            .init(&device)
            .forward(x.clone(), |h| (h, ()));
        let post = post.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            (post[0] + 1.0).abs() < 1e-4 && (post[1] - 1.0).abs() < 1e-4,
            "{post:?}"
        );
        // Pre: [1,3] + LayerNorm([1,3]) = [1,3] + [-1,1] = [0, 4].
        let (pre, ()) = config(NormPosition::Pre)
            .init(&device)
            .forward(x, |h| (h, ()));
        let pre = pre.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            pre[0].abs() < 1e-4 && (pre[1] - 4.0).abs() < 1e-4,
            "{pre:?}"
        );
    }
}
