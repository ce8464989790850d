//! Comparing tensors: the largest absolute difference between two of the same shape, the
//! figure the workspace's parity tests, fused-versus-reference checks and benchmarks report.

use burn::tensor::Tensor;

/// `max |a − b|` over all elements (0 for empty tensors).
///
/// # Panics
/// If the shapes differ.
///
/// # Shapes
/// - `a`, `b`: the same `[d_0, …, d_{D-1}]`
pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let values = |t: Tensor<D>| {
        t.into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .expect("floats")
    };
    values(a)
        .iter()
        .zip(values(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Asserts `|a − e| ≤ tol · (1 + max(|a|, |e|))` element by element: relative where values are
/// large, absolute near zero. The fused operations' tests hold them to their references with it.
///
/// # Panics
/// At the first element outside the tolerance (named with `what`), or if the lengths differ.
pub fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (a - e).abs() <= tol * (1.0 + a.abs().max(e.abs())),
            "{what} at {i}: {a} vs {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn the_largest_absolute_difference() {
        let device = Device::flex();
        let a = Tensor::<2>::from_floats([[1.0, -2.0], [3.0, 4.0]], &device);
        let b = Tensor::<2>::from_floats([[1.5, -2.0], [2.0, 4.25]], &device);
        assert_eq!(max_abs_diff(a.clone(), b), 1.0);
        assert_eq!(max_abs_diff(a.clone(), a), 0.0);
    }
}
