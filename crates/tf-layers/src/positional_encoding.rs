//! Position information added to the embeddings (§3.5): the paper's fixed sinusoids, or learned
//! position embeddings (which the paper found to perform nearly identically, Table 3 row E), or
//! the same sinusoids laid out as MarianMT lays them out (every sine, then every cosine). A
//! model with rotary positions (or none) adds nothing here: its self-attentions rotate queries
//! and keys instead ([`tf_attention::rotary`]).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use tf_attention::ConfigError;
use tf_attention::error::check_nonzero;

/// `PE(pos, 2i) = sin(pos / 10000^(2i/d_model))`, `PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))`.
///
/// `dim` is the embedding coordinate: `2i` or `2i + 1`.
pub fn sinusoid(pos: usize, dim: usize, d_model: usize) -> f64 {
    let two_i = (dim - dim % 2) as f64;
    let angle = pos as f64 / 10_000f64.powf(two_i / d_model as f64);
    if dim.is_multiple_of(2) {
        angle.sin()
    } else {
        angle.cos()
    }
}

/// [`sinusoid`]'s values in MarianMT's layout (`transformers`'
/// `MarianSinusoidalPositionalEmbedding`): coordinate `k < ⌈d_model/2⌉` holds the sine of
/// frequency `k`, coordinate `⌈d_model/2⌉ + i` the cosine of frequency `i`, where the paper
/// interleaves them (`2i`, `2i + 1`).
pub fn sinusoid_halves(pos: usize, dim: usize, d_model: usize) -> f64 {
    let sines = d_model.div_ceil(2);
    if dim < sines {
        sinusoid(pos, 2 * dim, d_model)
    } else {
        sinusoid(pos, 2 * (dim - sines) + 1, d_model)
    }
}

/// Which position information a model adds to its embeddings.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum PositionalEncodingKind {
    /// The paper's fixed sinusoids (§3.5), extrapolating to any length up to `max_len`.
    Sinusoidal,
    /// A learned embedding per position (Table 3, row E).
    Learned,
    /// The paper's sinusoids with the sines in the first half of the coordinates and the
    /// cosines in the second ([`sinusoid_halves`]): MarianMT's (opus-mt) layout, for its
    /// imported models. The same information, permuted.
    SinusoidalHalves,
    /// Rotary position embedding (Su et al., 2021): nothing added to the embeddings; every
    /// self-attention rotates its queries and keys by their positions, so that scores depend
    /// on relative positions. Cross-attention does not rotate (source and target positions are
    /// not one axis), as T5 keeps its relative positions to self-attention (Raffel et al., 2020).
    Rotary,
    /// No position information at all: the encoder sees a bag of tokens, and only the decoder's
    /// causal mask tells its positions apart.
    None,
}

impl PositionalEncodingKind {
    /// Whether the self-attentions rotate queries and keys.
    pub fn is_rotary(self) -> bool {
        self == Self::Rotary
    }
}

/// Configuration of [`PositionalEncoding`].
#[derive(Config, Debug)]
pub struct PositionalEncodingConfig {
    /// Model width `d_model`.
    pub d_model: usize,
    /// Longest sequence the encoding covers. Default: 1024.
    #[config(default = 1024)]
    pub max_len: usize,
    /// Sinusoidal (paper, or in Marian's layout), learned, or nothing added (rotary, none).
    /// Default: sinusoidal.
    #[config(default = "PositionalEncodingKind::Sinusoidal")]
    pub kind: PositionalEncodingKind,
}

impl PositionalEncodingConfig {
    /// Checks that the config builds a working module.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_nonzero("PositionalEncodingConfig", "d_model", self.d_model)?;
        check_nonzero("PositionalEncodingConfig", "max_len", self.max_len)
    }

    /// Builds the module, or says why the config cannot.
    pub fn try_init(&self, device: &Device) -> Result<PositionalEncoding, ConfigError> {
        self.validate()?;
        let table = match self.kind {
            PositionalEncodingKind::Rotary | PositionalEncodingKind::None => None,
            PositionalEncodingKind::Sinusoidal | PositionalEncodingKind::SinusoidalHalves => {
                let value = if self.kind == PositionalEncodingKind::Sinusoidal {
                    sinusoid
                } else {
                    sinusoid_halves
                };
                let values: Vec<f32> = (0..self.max_len)
                    .flat_map(|pos| {
                        (0..self.d_model).map(move |dim| value(pos, dim, self.d_model) as f32)
                    })
                    .collect();
                Some(PositionTable::Sinusoidal(Tensor::from_data(
                    TensorData::new(values, [self.max_len, self.d_model]),
                    device,
                )))
            }
            PositionalEncodingKind::Learned => Some(PositionTable::Learned(
                EmbeddingConfig::new(self.max_len, self.d_model).init(device),
            )),
        };
        Ok(PositionalEncoding {
            table,
            max_len: self.max_len,
        })
    }

    /// Builds the module.
    ///
    /// # Panics
    /// If [`validate`](Self::validate) fails, with its message.
    pub fn init(&self, device: &Device) -> PositionalEncoding {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// The positions' vectors: a constant table or trained parameters.
#[derive(Module, Debug)]
pub enum PositionTable {
    /// `[max_len, d_model]`, fixed (not a parameter, not saved).
    Sinusoidal(Tensor<2>),
    /// A trained embedding of `max_len` positions.
    Learned(Embedding),
}

/// Adds position information to a sequence of embeddings.
#[derive(Module, Debug)]
pub struct PositionalEncoding {
    /// The vectors added per position; none with rotary positions or none.
    pub table: Option<PositionTable>,
    /// Longest sequence covered.
    pub max_len: usize,
}

impl PositionalEncoding {
    /// Adds the vectors of positions `offset .. offset + seq_len` to `x`; the offset is the
    /// number of positions already decoded when `x` is the new part of a cached sequence.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq_len, d_model]`
    /// - returns `[batch, seq_len, d_model]`
    ///
    /// # Panics
    /// If `offset + seq_len > max_len`; callers check lengths against
    /// [`max_len`](Self::max_len) first.
    pub fn forward(&self, x: Tensor<3>, offset: usize) -> Tensor<3> {
        let [_, seq_len, d_model] = x.dims();
        assert!(
            offset + seq_len <= self.max_len,
            "positions {offset}..{} exceed the positional encoding's max_len {}",
            offset + seq_len,
            self.max_len
        );
        let positions = match &self.table {
            None => return x,
            Some(PositionTable::Sinusoidal(table)) => table.clone().narrow(0, offset, seq_len),
            Some(PositionTable::Learned(embedding)) => {
                let ids =
                    Tensor::<1, Int>::arange(offset as i64..(offset + seq_len) as i64, &x.device());
                embedding
                    .forward(ids.reshape([1, seq_len])) // [1, seq_len, d_model]
                    .reshape([seq_len, d_model])
            }
        };
        x + positions.unsqueeze::<3>() // [1, seq_len, d_model] broadcast over batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_matches_the_paper_formula_by_hand() {
        // pos 0: sin 0 = 0, cos 0 = 1.
        assert_eq!(sinusoid(0, 0, 4), 0.0);
        assert_eq!(sinusoid(0, 1, 4), 1.0);
        // pos 1, i = 0: sin(1), cos(1).
        assert!((sinusoid(1, 0, 4) - 0.841_470_984_8).abs() < 1e-9);
        assert!((sinusoid(1, 1, 4) - 0.540_302_305_9).abs() < 1e-9);
        // pos 3, i = 1, d_model 4: 10000^(2/4) = 100, sin(0.03), cos(0.03).
        assert!((sinusoid(3, 2, 4) - 0.029_995_500_2).abs() < 1e-9);
        assert!((sinusoid(3, 3, 4) - 0.999_550_033_7).abs() < 1e-9);
        // pos 50, dim 6 of d_model 8: 10000^(6/8) = 1000, sin(0.05).
        assert!((sinusoid(50, 6, 8) - 0.049_979_169_3).abs() < 1e-9);
    }

    #[test]
    fn sinusoidal_table_adds_the_formula_at_an_offset() {
        let device = Device::flex();
        let pe = PositionalEncodingConfig::new(6)
            .with_max_len(10)
            .init(&device);
        let zeros = Tensor::<3>::zeros([2, 3, 6], &device);
        let out = pe
            .forward(zeros, 4)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        for batch in 0..2 {
            for t in 0..3 {
                for dim in 0..6 {
                    let got = out[(batch * 3 + t) * 6 + dim] as f64;
                    assert!((got - sinusoid(4 + t, dim, 6)).abs() < 1e-6);
                }
            }
        }
    }

    #[test]
    fn marian_layout_puts_the_sines_first_and_the_cosines_after() {
        // d_model 4, pos 1: frequencies 1 and 1/100: [sin 1, sin 0.01, cos 1, cos 0.01].
        let want = [
            0.841_470_984_8,
            0.009_999_833_3,
            0.540_302_305_9,
            0.999_950_000_4,
        ];
        for (dim, want) in want.into_iter().enumerate() {
            assert!(
                (sinusoid_halves(1, dim, 4) - want).abs() < 1e-9,
                "dim {dim}"
            );
        }
        // Odd width (5): three sines (frequencies 0, 1, 2 of 10000^(2i/5)), then two cosines.
        assert!((sinusoid_halves(2, 2, 5) - sinusoid(2, 4, 5)).abs() < 1e-12);
        assert!((sinusoid_halves(2, 3, 5) - sinusoid(2, 1, 5)).abs() < 1e-12);
        assert!((sinusoid_halves(2, 4, 5) - sinusoid(2, 3, 5)).abs() < 1e-12);
        let device = Device::flex();
        let pe = PositionalEncodingConfig::new(4)
            .with_max_len(3)
            .with_kind(PositionalEncodingKind::SinusoidalHalves)
            .init(&device);
        assert_eq!(pe.num_params(), 0);
        let out = pe.forward(Tensor::zeros([1, 1, 4], &device), 1);
        let out = out.into_data().try_to_vec::<f32>().unwrap();
        for (got, want) in out.iter().zip(want) {
            assert!((*got as f64 - want).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn learned_encoding_is_a_parameter_and_sinusoidal_is_not() {
        let device = Device::flex();
        let learned = PositionalEncodingConfig::new(4)
            .with_max_len(8)
            .with_kind(PositionalEncodingKind::Learned)
            .init(&device);
        assert_eq!(learned.num_params(), 32);
        let fixed = PositionalEncodingConfig::new(4)
            .with_max_len(8)
            .init(&device);
        assert_eq!(fixed.num_params(), 0);
        assert_eq!(
            learned.forward(Tensor::zeros([1, 8, 4], &device), 0).dims(),
            [1, 8, 4]
        );
    }

    #[test]
    #[should_panic(expected = "exceed the positional encoding's max_len 8")]
    fn positions_past_max_len_panic_with_values() {
        let device = Device::flex();
        let pe = PositionalEncodingConfig::new(4)
            .with_max_len(8)
            .init(&device);
        pe.forward(Tensor::zeros([1, 3, 4], &device), 6);
    }

    #[test]
    fn rotary_and_no_positions_add_nothing_but_keep_the_bound() {
        let device = Device::flex();
        for kind in [PositionalEncodingKind::Rotary, PositionalEncodingKind::None] {
            let pe = PositionalEncodingConfig::new(4)
                .with_max_len(8)
                .with_kind(kind)
                .init(&device);
            assert!(pe.table.is_none());
            assert_eq!(pe.num_params(), 0);
            let x = Tensor::<3>::random([2, 3, 4], burn::tensor::Distribution::Default, &device);
            let out = pe.forward(x.clone(), 5);
            assert_eq!(out.into_data(), x.into_data());
        }
        assert!(PositionalEncodingKind::Rotary.is_rotary());
        assert!(!PositionalEncodingKind::Learned.is_rotary());
    }
}
