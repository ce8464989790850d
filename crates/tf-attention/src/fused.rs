//! What the fused CPU operations of these crates share (the attention of this crate, the dropout
//! of `tf-layers`, the loss of `tf-train`): when they apply, a switch that turns them all off,
//! per-operation call counts that let a test prove a fused path was taken, and an `exp` that
//! vectorises.
//!
//! A fused operation is a burn backend extension with a Flex kernel and a hand-written
//! backward under autodiff; every other device keeps burn's composed operations, which are the
//! reference the fused ones are tested against.

use std::cell::{Cell, RefCell};

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::{Bytes, DType, DispatchDevice, Shape};
use burn::tensor::Device;

thread_local! {
    static ENABLED: Cell<bool> = const { Cell::new(true) };
    static CALLS: RefCell<Vec<(&'static str, Calls)>> = const { RefCell::new(Vec::new()) };
}

/// How often this thread ran one fused operation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Calls {
    /// Forward passes.
    pub forward: usize,
    /// Backward passes.
    pub backward: usize,
}

/// The calls of the fused operation named `op` on this thread so far.
pub fn calls(op: &str) -> Calls {
    CALLS.with(|calls| {
        calls
            .borrow()
            .iter()
            .find(|(name, _)| *name == op)
            .map_or_else(Calls::default, |(_, c)| *c)
    })
}

/// Counts `forward` and `backward` passes of the fused operation `op` (its kernels call this).
pub fn count(op: &'static str, forward: usize, backward: usize) {
    CALLS.with(|calls| {
        let mut calls = calls.borrow_mut();
        let index = match calls.iter().position(|(name, _)| *name == op) {
            Some(index) => index,
            None => {
                calls.push((op, Calls::default()));
                calls.len() - 1
            }
        };
        calls[index].1.forward += forward;
        calls[index].1.backward += backward;
    });
}

/// Runs `f` with every fused operation turned off on this thread: each then runs burn's
/// composed operations, as on any other device (to compare the two, or to rule the fused ones
/// out).
pub fn composed_only<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ENABLED.with(|e| e.set(self.0));
        }
    }
    let _restore = Restore(ENABLED.with(|e| e.replace(false)));
    f()
}

/// Whether a fused operation serves `dtype` tensors on `device`: f32 on Flex, with or without
/// autodiff, unless [`composed_only`] turned the fused operations off.
pub fn applies(device: &Device, dtype: DType) -> bool {
    ENABLED.with(Cell::get)
        && dtype == DType::F32
        && matches!(
            device.clone().without_autodiff().as_dispatch(),
            DispatchDevice::Flex(_)
        )
}

/// Work (multiply-adds, or elements touched) below which a fused operation runs on the calling
/// thread. Handing work to rayon's pool wakes a worker and parks the caller, tens of
/// microseconds: more than a decoding step's small operations take (one sentence, one new
/// position), which would then spend their time switching threads.
pub const SERIAL_WORK: usize = 1 << 15;

/// Whether `work` (in the units of [`SERIAL_WORK`]) is worth rayon's pool.
pub fn worth_threads(work: usize) -> bool {
    work >= SERIAL_WORK
}

/// A contiguous f32 Flex tensor of `shape` owning `data` (no copy): how the fused kernels hand
/// back what they computed.
pub fn f32_tensor(data: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `e^x` for `x ≤ 0` (a value minus at least its row's maximum, in a softmax) without a branch
/// or a call, so that loops over it vectorise: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`,
/// `e^r` by its degree-6 Taylor polynomial (relative error under 2e-7 there, about f32's
/// rounding), and `2^n` built in the exponent bits. Below −87 (where f32 would go subnormal)
/// it returns 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts (Cody & Waite), so that n·ln 2 is subtracted without rounding error.
    const LN_2_HI: f32 = 0.693_145_75;
    const LN_2_LO: f32 = 1.428_606_8e-6;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.max(-87.0);
    let n = (clamped * LOG2_E + ROUND) - ROUND;
    let r = (clamped - n * LN_2_HI) - n * LN_2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let two_to_n = f32::from_bits(((n as i32 + 127) << 23) as u32);
    let value = p * two_to_n;
    if x < -87.0 { 0.0 } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flex_f32_only_and_off_inside_composed_only() {
        let flex = Device::flex();
        assert!(applies(&flex, DType::F32) && applies(&flex.clone().autodiff(), DType::F32));
        assert!(!applies(&flex, DType::F16));
        #[allow(deprecated)]
        let ndarray = Device::ndarray();
        assert!(!applies(&ndarray, DType::F32));
        assert!(!composed_only(|| applies(&flex, DType::F32)));
        let nested = composed_only(|| composed_only(|| 1) + i32::from(applies(&flex, DType::F32)));
        assert_eq!(nested, 1, "still off after an inner composed_only");
        assert!(applies(&flex, DType::F32), "on again");
    }

    #[test]
    fn calls_are_counted_per_operation() {
        let before = (calls("a"), calls("b"));
        count("a", 1, 0);
        count("a", 0, 2);
        assert_eq!(
            calls("a"),
            Calls {
                forward: before.0.forward + 1,
                backward: before.0.backward + 2
            }
        );
        assert_eq!(calls("b"), before.1);
    }

    #[test]
    fn exp_matches_the_library_exp_to_float_rounding() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -90.0 * i as f32 / 200_000.0;
            let (ours, libm) = (f64::from(exp(x)), f64::from(x).exp());
            if x >= -87.0 {
                worst = worst.max((ours - libm).abs() / libm);
            } else {
                assert_eq!(ours, 0.0, "{x}");
            }
        }
        assert!(worst < 3e-7, "relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
    }
}
