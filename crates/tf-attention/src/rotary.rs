//! Rotary position embedding (RoPE; Su et al. 2021, "RoFormer", §3.4.2): instead of adding a
//! position vector to the embeddings, each query and key is rotated by its own position, pair of
//! coordinates by pair. For coordinates `(2i, 2i + 1)` of a head at position `m`, with
//! `θ_i = base^(-2i/d_k)` (base 10,000, as the sinusoids of §3.5):
//!
//! ```text
//! out[2i]     = x[2i] · cos(m θ_i) − x[2i+1] · sin(m θ_i)
//! out[2i + 1] = x[2i] · sin(m θ_i) + x[2i+1] · cos(m θ_i)
//! ```
//!
//! A rotation keeps lengths, and `⟨R_m q, R_n k⟩ = ⟨q, R_{n−m} k⟩`: the score of a query and a
//! key depends on their positions only through `n − m`. The pairs are adjacent coordinates, as
//! in the paper's equation (34) and burn's `RotaryEncoding` (not the halves `[x_0..x_{d/2} |
//! x_{d/2}..]` some implementations pair).

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{ConfigError, check_nonzero};

/// Configuration of [`RotaryEncoding`].
#[derive(Config, Debug)]
pub struct RotaryEncodingConfig {
    /// Width of one head, `d_k`: the rotated vectors' length; must be even.
    pub head_width: usize,
    /// Positions covered, `0 .. max_len`.
    pub max_len: usize,
    /// Base of the frequencies `θ_i = base^(-2i/d_k)`. Default: 10,000, as the paper.
    #[config(default = 10_000.0)]
    pub base: f64,
}

impl RotaryEncodingConfig {
    /// Checks that the config builds a working module.
    pub fn validate(&self) -> Result<(), ConfigError> {
        const NAME: &str = "RotaryEncodingConfig";
        check_nonzero(NAME, "head_width", self.head_width)?;
        check_nonzero(NAME, "max_len", self.max_len)?;
        if !self.head_width.is_multiple_of(2) {
            return Err(ConfigError::new(
                NAME,
                format!(
                    "head_width must be even to rotate pairs of coordinates, got {}",
                    self.head_width
                ),
            ));
        }
        if !(self.base.is_finite() && self.base > 1.0) {
            return Err(ConfigError::new(
                NAME,
                format!("base must be a number above 1, got {}", self.base),
            ));
        }
        Ok(())
    }

    /// The rotation angle `m θ_i` of coordinate pair `i` at position `m`.
    pub fn angle(&self, position: usize, pair: usize) -> f64 {
        let exponent = (2 * pair) as f64 / self.head_width as f64;
        position as f64 / self.base.powf(exponent)
    }

    /// Builds the module, or says why the config cannot.
    pub fn try_init(&self, device: &Device) -> Result<RotaryEncoding, ConfigError> {
        self.validate()?;
        let d = self.head_width;
        let mut cos = Vec::with_capacity(self.max_len * d);
        let mut signed_sin = Vec::with_capacity(self.max_len * d);
        for position in 0..self.max_len {
            for pair in 0..d / 2 {
                let (sin, cos_value) = self.angle(position, pair).sin_cos();
                cos.extend([cos_value as f32; 2]);
                signed_sin.extend([-sin as f32, sin as f32]);
            }
        }
        let table = |values| Tensor::from_data(TensorData::new(values, [self.max_len, d]), device);
        Ok(RotaryEncoding {
            cos: table(cos),
            signed_sin: table(signed_sin),
            max_len: self.max_len,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails, with its message.
    pub fn init(&self, device: &Device) -> RotaryEncoding {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// Rotates queries or keys by their positions. Its tables are constants, computed from the
/// config (in f64) when the module is built: nothing is trained or saved.
#[derive(Module, Debug)]
pub struct RotaryEncoding {
    /// `cos(m θ_i)` at both coordinates of pair `i`, row `m`.
    ///
    /// # Shapes
    /// `[max_len, d_k]`
    pub cos: Tensor<2>,
    /// `−sin(m θ_i)` at coordinate `2i`, `+sin(m θ_i)` at `2i + 1`.
    ///
    /// # Shapes
    /// `[max_len, d_k]`
    pub signed_sin: Tensor<2>,
    /// Positions covered.
    pub max_len: usize,
}

impl RotaryEncoding {
    /// Rotates the vectors of positions `offset .. offset + seq_len`; the offset is the number of
    /// positions already cached when `x` holds only the new ones, so that a cached key stays
    /// rotated by its own position.
    ///
    /// `x · cos + swap(x) · signed_sin`, where `swap` exchanges the coordinates of each pair.
    ///
    /// # Shapes
    /// - `x`: `[batch, n_heads, seq_len, d_k]`
    /// - returns `[batch, n_heads, seq_len, d_k]`
    ///
    /// # Panics
    /// If `offset + seq_len > max_len` (callers check lengths against the model's `max_len`)
    /// or `d_k` is not the configured head width.
    pub fn apply(&self, x: Tensor<4>, offset: usize) -> Tensor<4> {
        let [batch, n_heads, seq_len, d_k] = x.dims();
        assert!(
            offset + seq_len <= self.max_len,
            "positions {offset}..{} exceed the rotary encoding's max_len {}",
            offset + seq_len,
            self.max_len
        );
        assert_eq!(
            d_k,
            self.cos.dims()[1],
            "the rotary encoding rotates heads of width {}",
            self.cos.dims()[1]
        );
        let rows = |table: &Tensor<2>| {
            table
                .clone()
                .narrow(0, offset, seq_len)
                .reshape([1, 1, seq_len, d_k]) // broadcast over batch and heads
        };
        let swapped = x
            .clone()
            .reshape([batch, n_heads, seq_len, d_k / 2, 2])
            .flip([4]) // (x[2i+1], x[2i])
            .reshape([batch, n_heads, seq_len, d_k]);
        x * rows(&self.cos) + swapped * rows(&self.signed_sin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::max_abs_diff;
    use burn::tensor::Distribution;

    fn values(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    fn config(head_width: usize, max_len: usize) -> RotaryEncodingConfig {
        RotaryEncodingConfig::new(head_width, max_len)
    }

    #[test]
    fn rotates_pairs_by_the_formula_by_hand() {
        let device = Device::flex();
        let rope = config(4, 8).init(&device);
        // One vector (1, 2, 3, 4) at position 2. Pair 0: θ_0 = 1, angle 2; pair 1:
        // θ_1 = 10000^(-2/4) = 0.01, angle 0.02.
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0, 3.0, 4.0]]]], &device);
        let (s0, c0) = 2f64.sin_cos();
        let (s1, c1) = 0.02f64.sin_cos();
        let expected = [
            c0 - 2.0 * s0,
            s0 + 2.0 * c0,
            3.0 * c1 - 4.0 * s1,
            3.0 * s1 + 4.0 * c1,
        ];
        let got = values(rope.apply(x, 2));
        for (g, e) in got.iter().zip(expected) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?} against {expected:?}");
        }
    }

    #[test]
    fn position_zero_is_the_identity_and_lengths_are_kept() {
        let device = Device::flex();
        let rope = config(6, 16).init(&device);
        let x = Tensor::<4>::random([2, 3, 16, 6], Distribution::Normal(0.0, 1.0), &device);
        let rotated = rope.apply(x.clone(), 0);
        assert!(max_abs_diff(rotated.clone().narrow(2, 0, 1), x.clone().narrow(2, 0, 1)) < 1e-7);
        let norms = |t: Tensor<4>| t.powi_scalar(2).sum_dim(3);
        assert!(max_abs_diff(norms(rotated), norms(x)) < 1e-4);
    }

    #[test]
    fn scores_depend_on_relative_positions_only() {
        let device = Device::flex();
        let rope = config(8, 32).init(&device);
        let q = Tensor::<4>::random([1, 1, 1, 8], Distribution::Normal(0.0, 1.0), &device);
        let k = Tensor::<4>::random([1, 1, 1, 8], Distribution::Normal(0.0, 1.0), &device);
        let score = |m: usize, n: usize| {
            let rq = rope.apply(q.clone(), m);
            let rk = rope.apply(k.clone(), n);
            values(rq.matmul(rk.swap_dims(2, 3)))[0]
        };
        // Distance 3 at three offsets, distance −5 at two.
        let at_3 = score(2, 5);
        assert!((score(10, 13) - at_3).abs() < 1e-4);
        assert!((score(27, 30) - at_3).abs() < 1e-4);
        assert!((score(20, 15) - score(6, 1)).abs() < 1e-4);
        // And a different distance scores differently.
        assert!((score(2, 6) - at_3).abs() > 1e-3);
    }

    #[test]
    fn an_offset_rotates_as_the_full_sequence_does() {
        let device = Device::flex();
        let rope = config(4, 10).init(&device);
        let x = Tensor::<4>::random([2, 2, 6, 4], Distribution::Normal(0.0, 1.0), &device);
        let full = rope.apply(x.clone(), 0);
        let tail = rope.apply(x.narrow(2, 4, 2), 4);
        assert!(max_abs_diff(full.narrow(2, 4, 2), tail) < 1e-6);
    }

    #[test]
    fn equals_burns_rotary_encoding() {
        let device = Device::flex();
        let (d_k, max_len) = (8, 64);
        let ours = config(d_k, max_len).init(&device);
        let burns = burn::nn::RotaryEncodingConfig::new(max_len, d_k).init(&device);
        let x = Tensor::<4>::random([2, 3, 20, d_k], Distribution::Normal(0.0, 1.0), &device);
        // burn computes θ in f32; positions up to 39 keep the two within f32 rounding.
        assert!(max_abs_diff(ours.apply(x.clone(), 0), burns.forward(x.clone())) < 1e-4);
        assert!(max_abs_diff(ours.apply(x.clone(), 19), burns.apply(x, 19)) < 1e-4);
    }

    #[test]
    fn odd_widths_and_bad_bases_are_refused() {
        let err = config(5, 8).validate().unwrap_err().to_string();
        assert!(
            err.contains("head_width must be even") && err.contains('5'),
            "{err}"
        );
        assert!(config(4, 0).validate().is_err());
        assert!(config(4, 8).with_base(1.0).validate().is_err());
        assert!(config(4, 8).with_base(f64::NAN).validate().is_err());
    }

    #[test]
    #[should_panic(expected = "exceed the rotary encoding's max_len 8")]
    fn positions_past_max_len_panic_with_values() {
        let device = Device::flex();
        config(4, 8)
            .init(&device)
            .apply(Tensor::zeros([1, 1, 3, 4], &device), 6);
    }
}
