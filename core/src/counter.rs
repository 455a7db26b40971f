//! A counter with exactly one writer: the building block of every worker
//! statistic and of the delay histograms.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// `add` is a plain load and store (no locked instruction): correct only
/// because one worker owns the counter. Readers on other threads load it
/// with relaxed ordering and may see it a burst late.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// For levels (not totals): overwrite.
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}
