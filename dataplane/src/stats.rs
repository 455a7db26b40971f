//! Per-worker counters. Each worker writes only its own [`WorkerStats`]
//! (cache-line aligned, so workers never share a line); readers on the
//! control side load them with relaxed atomics and add them up. No counter is
//! shared between cores, and a worker publishes once per burst.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a packet was dropped; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt,
    /// No entry for its destination in the forwarding table.
    NoRoute,
}

impl DropReason {
    pub const ALL: [DropReason; 2] = [DropReason::Runt, DropReason::NoRoute];
    pub const COUNT: usize = Self::ALL.len();

    /// Stable name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::NoRoute => "no_route",
        }
    }
}

/// A counter with exactly one writer. `add` is a plain load and store (no
/// locked instruction): correct only because one worker owns it.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// One worker's counters, written only by that worker.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct WorkerStats {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Packets the driver did not take on transmit (freed).
    pub tx_dropped: Counter,
    pub drops: [Counter; DropReason::COUNT],
}

/// A plain copy of a worker's counters, or a sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl WorkerStats {
    pub fn read(&self) -> Counters {
        Counters {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            tx_dropped: self.tx_dropped.get(),
            drops: std::array::from_fn(|i| self.drops[i].get()),
        }
    }
}

impl Counters {
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum::<u64>() + self.tx_dropped
    }
}

impl std::ops::Add for Counters {
    type Output = Counters;
    fn add(self, o: Counters) -> Counters {
        Counters {
            rx_packets: self.rx_packets + o.rx_packets,
            rx_bytes: self.rx_bytes + o.rx_bytes,
            tx_packets: self.tx_packets + o.tx_packets,
            tx_bytes: self.tx_bytes + o.tx_bytes,
            tx_dropped: self.tx_dropped + o.tx_dropped,
            drops: std::array::from_fn(|i| self.drops[i] + o.drops[i]),
        }
    }
}

impl std::iter::Sum for Counters {
    fn sum<I: Iterator<Item = Counters>>(iter: I) -> Counters {
        iter.fold(Counters::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_stats_own_their_cache_lines() {
        assert_eq!(std::mem::align_of::<WorkerStats>(), 64);
        assert_eq!(std::mem::size_of::<WorkerStats>() % 64, 0);
    }

    #[test]
    fn counters_add_up() {
        let s = WorkerStats::default();
        s.rx_packets.add(3);
        s.rx_packets.add(4);
        s.drops[DropReason::NoRoute as usize].add(2);
        s.tx_dropped.add(1);
        let c = s.read();
        assert_eq!(c.rx_packets, 7);
        assert_eq!(c.drop_count(DropReason::NoRoute), 2);
        assert_eq!(c.dropped(), 3);
        let total: Counters = [c, c].into_iter().sum();
        assert_eq!(total.rx_packets, 14);
        assert_eq!(total.drop_count(DropReason::NoRoute), 4);
    }

    #[test]
    fn drop_reason_names_are_distinct() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
