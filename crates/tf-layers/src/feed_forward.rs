//! The position-wise feed-forward network (§3.3): `FFN(x) = max(0, x W_1 + b_1) W_2 + b_2`,
//! applied to every position separately and identically; GELU or SiLU in place of the ReLU
//! as options, for the models that use them (BERT-style GELU, MarianMT's "swish").

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, silu};
use tf_attention::ConfigError;
use tf_attention::error::check_nonzero;
use tf_attention::fused_linear::{self, Activation};
use tf_attention::hooks::{LayerHooks, LayerSite};

/// The non-linearity between the two projections.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum FeedForwardActivation {
    /// `max(0, x)`, the paper's.
    Relu,
    /// Gaussian error linear unit (exact, erf form), as in BERT and GPT.
    Gelu,
    /// `x · sigmoid(x)` (SiLU, "swish"), as in MarianMT / opus-mt.
    Silu,
}

/// Configuration of [`PositionWiseFeedForward`].
#[derive(Config, Debug)]
pub struct PositionWiseFeedForwardConfig {
    /// Model width `d_model` (input and output).
    pub d_model: usize,
    /// Inner width `d_ff` (2048 in the base model).
    pub d_ff: usize,
    /// Default: ReLU, as in the paper.
    #[config(default = "FeedForwardActivation::Relu")]
    pub activation: FeedForwardActivation,
}

impl PositionWiseFeedForwardConfig {
    /// Checks that the config builds a working module.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_nonzero("PositionWiseFeedForwardConfig", "d_model", self.d_model)?;
        check_nonzero("PositionWiseFeedForwardConfig", "d_ff", self.d_ff)
    }

    /// Builds the module, or says why the config cannot.
    pub fn try_init(
        &self,
        device: &burn::tensor::Device,
    ) -> Result<PositionWiseFeedForward, ConfigError> {
        self.validate()?;
        Ok(PositionWiseFeedForward {
            inner: LinearConfig::new(self.d_model, self.d_ff).init(device),
            outer: LinearConfig::new(self.d_ff, self.d_model).init(device),
            activation: self.activation,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails, with its message.
    pub fn init(&self, device: &burn::tensor::Device) -> PositionWiseFeedForward {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// Two linear maps with a non-linearity between them.
#[derive(Module, Debug)]
pub struct PositionWiseFeedForward {
    /// `W_1, b_1`: `d_model → d_ff`.
    pub inner: Linear,
    /// `W_2, b_2`: `d_ff → d_model`.
    pub outer: Linear,
    /// ReLU (paper), GELU or SiLU.
    #[module(skip)]
    pub activation: FeedForwardActivation,
}

impl PositionWiseFeedForward {
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`
    /// - returns `[batch, seq_len, d_model]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.forward_hooked(x, None)
    }

    /// [`forward`](Self::forward) with the layer's hooks at `ffn.hidden` (after the
    /// non-linearity) and `ffn.out`.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward); `ffn.hidden` is `[batch, seq_len, d_ff]`.
    pub fn forward_hooked(&self, x: Tensor<3>, hooks: Option<&mut LayerHooks<'_>>) -> Tensor<3> {
        // ReLU is fused into the first projection (one pass over the hidden layer).
        let hidden = match self.activation {
            FeedForwardActivation::Relu => fused_linear::apply(&self.inner, x, Activation::Relu),
            FeedForwardActivation::Gelu => {
                gelu(fused_linear::apply(&self.inner, x, Activation::Identity))
            }
            FeedForwardActivation::Silu => {
                silu(fused_linear::apply(&self.inner, x, Activation::Identity))
            }
        }; // [batch, seq_len, d_ff]
        match hooks {
            None => fused_linear::apply(&self.outer, hidden, Activation::Identity),
            Some(hooks) => {
                let hidden = hooks.rank3(LayerSite::FfnHidden, hidden);
                let out = fused_linear::apply(&self.outer, hidden, Activation::Identity);
                hooks.rank3(LayerSite::FfnOut, out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    #[test]
    fn relu_ffn_by_hand() {
        // d_model 1, d_ff 2: W1 = [1, -1], b1 = [0, 0], W2 = [[2], [3]], b2 = [1].
        // x = 2: hidden = relu([2, -2]) = [2, 0]; out = 2·2 + 0·3 + 1 = 5.
        // x = -1: hidden = relu([-1, 1]) = [0, 1]; out = 3 + 1 = 4.
        let device = Device::flex();
        let mut ffn = PositionWiseFeedForwardConfig::new(1, 2).init(&device);
        let weight = |v: Vec<f32>, shape: [usize; 2]| {
            Tensor::<2>::from_data(TensorData::new(v, shape), &device)
        };
        let bias =
            |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &device);
        ffn.inner.weight = ffn.inner.weight.map(|_| weight(vec![1.0, -1.0], [1, 2]));
        ffn.inner.bias = ffn.inner.bias.map(|b| b.map(|_| bias(vec![0.0, 0.0])));
        ffn.outer.weight = ffn.outer.weight.map(|_| weight(vec![2.0, 3.0], [2, 1]));
        ffn.outer.bias = ffn.outer.bias.map(|b| b.map(|_| bias(vec![1.0])));
        let x = Tensor::<3>::from_data(TensorData::new(vec![2.0f32, -1.0], [1, 2, 1]), &device);
        let out = ffn.forward(x).into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(out, [5.0, 4.0]);
    }

    #[test]
    fn silu_ffn_by_hand() {
        // d_model 1, d_ff 1, W1 = 1, b1 = 0, W2 = 1, b2 = 0: out = silu(x) = x / (1 + e^-x).
        // silu(0) = 0, silu(2) = 2 / (1 + e^-2) = 1.761594, silu(-1) = -1 / (1 + e) = -0.268941.
        let device = Device::flex();
        let mut ffn = PositionWiseFeedForwardConfig::new(1, 1)
            .with_activation(FeedForwardActivation::Silu)
            .init(&device);
        let one = |_| Tensor::<2>::ones([1, 1], &device);
        ffn.inner.weight = ffn.inner.weight.map(one);
        ffn.outer.weight = ffn.outer.weight.map(one);
        ffn.inner.bias = ffn.inner.bias.map(|b| b.map(|b| b.zeros_like()));
        ffn.outer.bias = ffn.outer.bias.map(|b| b.map(|b| b.zeros_like()));
        let x =
            Tensor::<3>::from_data(TensorData::new(vec![0.0f32, 2.0, -1.0], [1, 3, 1]), &device);
        let out = ffn.forward(x).into_data().try_to_vec::<f32>().unwrap();
        for (got, want) in out.iter().zip([0.0f32, 1.761_594, -0.268_941]) {
            assert!((got - want).abs() < 1e-5, "{out:?}");
        }
    }

    #[test]
    fn zero_sizes_are_refused() {
        assert!(PositionWiseFeedForwardConfig::new(4, 0).validate().is_err());
        assert!(PositionWiseFeedForwardConfig::new(0, 4).validate().is_err());
    }
}
