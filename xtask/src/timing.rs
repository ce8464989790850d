//! Clock readings that survive a noisy, shared machine: warm-up, repeats, the median and the
//! spread, the device synced around every reading, and competitors alternated in one process.

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

/// How many times each case runs.
#[derive(Clone, Copy, Debug)]
pub struct Repeats {
    /// Untimed runs first.
    pub warmup: usize,
    /// Timed runs.
    pub timed: usize,
}

impl Repeats {
    /// The full (21) or quick (5) count.
    pub fn new(quick: bool) -> Self {
        Self {
            warmup: 2,
            timed: if quick { 5 } else { 21 },
        }
    }

    /// At most `timed` runs (for slow cases).
    pub fn at_most(self, timed: usize) -> Self {
        Self {
            warmup: self.warmup.min(1),
            timed: self.timed.min(timed),
        }
    }
}

/// Median and spread of timed runs, in milliseconds.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Timing {
    /// Median.
    pub median_ms: f64,
    /// Fastest run.
    pub min_ms: f64,
    /// Slowest run.
    pub max_ms: f64,
    /// Timed runs.
    pub runs: usize,
}

impl Timing {
    fn of(mut times: Vec<f64>) -> Self {
        times.sort_by(f64::total_cmp);
        Self {
            median_ms: times[times.len() / 2],
            min_ms: times[0],
            max_ms: times[times.len() - 1],
            runs: times.len(),
        }
    }

    /// `median (min–max)`.
    pub fn cell(&self) -> String {
        format!(
            "{} ({}–{})",
            ms(self.median_ms),
            ms(self.min_ms),
            ms(self.max_ms)
        )
    }
}

/// A duration in milliseconds with sensible precision.
pub fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

/// One synced clock reading of `run`, in ms.
fn read(device: &Device, run: &mut impl FnMut()) -> f64 {
    device.sync().expect("device sync");
    let start = Instant::now();
    run();
    device.sync().expect("device sync");
    start.elapsed().as_secs_f64() * 1e3
}

/// Times `run` alone.
pub fn time(device: &Device, repeats: Repeats, mut run: impl FnMut()) -> Timing {
    for _ in 0..repeats.warmup {
        run();
    }
    Timing::of((0..repeats.timed).map(|_| read(device, &mut run)).collect())
}

/// Times `a` and `b` in turns (a, b, a, b, …), so both see the same machine state; returns
/// their timings.
pub fn alternate(
    device: &Device,
    repeats: Repeats,
    mut a: impl FnMut(),
    mut b: impl FnMut(),
) -> (Timing, Timing) {
    for _ in 0..repeats.warmup {
        a();
        b();
    }
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..repeats.timed {
        ta.push(read(device, &mut a));
        tb.push(read(device, &mut b));
    }
    (Timing::of(ta), Timing::of(tb))
}
