//! A histogram of delays in microseconds with one writer (a worker), read
//! from the control side like the other counters. Log-linear buckets: exact
//! below 8 µs, then 8 per power of two, so a bucket's bounds are within
//! 12.5% of each other, up to 2^27 µs (134 s); longer delays count in the
//! last bucket. 200 buckets: fixed size, nothing allocated on record.

use crate::counter::Counter;

pub const BUCKETS: usize = 8 + 24 * 8;
/// Bucket `i` of the first 8 holds exactly `i` µs; above, 8 per octave.
const EXACT: u64 = 8;
const TOP_OCTAVE: u32 = 26;

/// The bucket a delay of `us` microseconds falls in.
pub fn bucket(us: u64) -> usize {
    if us < EXACT {
        return (us & (EXACT - 1)) as usize; // = us: the mask shows the bound
    }
    let octave = 63 - us.leading_zeros(); // >= 3
    if octave > TOP_OCTAVE {
        return BUCKETS - 1;
    }
    let sub = (us >> (octave - 3)) & 7;
    8 + (octave as usize - 3) * 8 + sub as usize
}

/// The largest delay (µs) bucket `i` holds (the last also holds more).
pub fn bucket_max(i: usize) -> u64 {
    if (i as u64) < EXACT {
        return i as u64;
    }
    let octave = 3 + (i - 8) / 8;
    let sub = ((i - 8) % 8) as u64;
    ((9 + sub) << (octave - 3)) - 1
}

/// The worker's side: record, never read on the packet path.
#[derive(Debug)]
pub struct DelayHistogram {
    counts: [Counter; BUCKETS],
    sum_us: Counter,
}

impl Default for DelayHistogram {
    fn default() -> Self {
        DelayHistogram {
            counts: std::array::from_fn(|_| Counter::default()),
            sum_us: Counter::default(),
        }
    }
}

impl DelayHistogram {
    pub fn record(&self, us: u64) {
        self.counts[bucket(us)].add(1);
        self.sum_us.add(us);
    }

    pub fn read(&self) -> Delays {
        Delays {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A plain copy of a histogram, or a sum of several.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delays {
    pub counts: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Default for Delays {
    fn default() -> Self {
        Delays {
            counts: [0; BUCKETS],
            sum_us: 0,
        }
    }
}

impl Delays {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// How many delays were below `2^k` µs: the cumulative count at a
    /// bucket boundary (for Prometheus' `le`); exact for `k` up to 26 (at
    /// 27 it counts the longer delays of the last bucket too).
    pub fn below_pow2(&self, k: u32) -> u64 {
        let last = if k < 3 {
            (1usize << k) - 1
        } else {
            (7 + (k as usize - 3) * 8).min(BUCKETS - 1)
        };
        self.counts[..=last].iter().sum()
    }

    /// (largest delay in the bucket, count) for every bucket with a count,
    /// in increasing order (the API's form; `lb_proto::delay_quantile`
    /// reads quantiles from it).
    pub fn nonzero(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c != 0)
            .map(|(i, &c)| (bucket_max(i), c))
    }
}

impl std::ops::Add for Delays {
    type Output = Delays;
    fn add(self, o: Delays) -> Delays {
        Delays {
            counts: std::array::from_fn(|i| self.counts[i] + o.counts[i]),
            sum_us: self.sum_us + o.sum_us,
        }
    }
}

impl std::iter::Sum for Delays {
    fn sum<I: Iterator<Item = Delays>>(iter: I) -> Delays {
        iter.fold(Delays::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_tile_the_range() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket_max(BUCKETS - 1), (1 << 27) - 1);
        for i in 1..BUCKETS {
            assert_eq!(
                bucket(bucket_max(i - 1) + 1),
                i,
                "bucket {i} starts after {}",
                i - 1
            );
            assert_eq!(bucket(bucket_max(i)), i);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    proptest! {
        #[test]
        fn a_delay_lies_within_an_eighth_of_its_bucket_max(us in 0u64..(1 << 27)) {
            let max = bucket_max(bucket(us));
            prop_assert!(max >= us);
            prop_assert!(max - us <= us / 8, "{us} in a bucket up to {max}");
        }
    }

    #[test]
    fn counts_sums_and_cumulative_counts() {
        let h = DelayHistogram::default();
        assert_eq!(h.read().count(), 0);
        for us in 1..=100 {
            h.record(us);
        }
        h.record(5_000);
        let d = h.read();
        assert_eq!(d.count(), 101);
        assert_eq!(d.sum_us, 5050 + 5000);
        let buckets: Vec<(u64, u64)> = d.nonzero().collect();
        assert_eq!(buckets[0], (1, 1));
        assert_eq!(*buckets.last().unwrap(), (bucket_max(bucket(5_000)), 1));
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0), "{buckets:?}");
        assert_eq!(d.below_pow2(0), 0);
        assert_eq!(d.below_pow2(1), 1);
        assert_eq!(d.below_pow2(3), 7);
        assert_eq!(d.below_pow2(7), 100, "1..=100 are below 128");
        assert_eq!(d.below_pow2(13), 101);
        assert_eq!(d.below_pow2(27), 101);
        let twice: Delays = [d, d].into_iter().sum();
        assert_eq!(twice.count(), 202);
        assert_eq!(twice.nonzero().map(|(_, c)| c).sum::<u64>(), 202);
    }
}
