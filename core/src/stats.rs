//! Per-worker counters. Each worker writes only its own [`WorkerStats`]
//! (cache-line aligned, so workers never share a line); readers on the
//! control side load them with relaxed atomics and add them up. No counter is
//! shared between cores, and a worker publishes once per burst.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::delay::DelayHistogram;

/// Why a packet was dropped; each reason has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum DropReason {
    /// Shorter than its headers.
    Truncated,
    /// IP version differs from the ethertype's.
    BadVersion,
    /// IPv4 IHL or TCP data offset below the minimum.
    BadHeaderLength,
    /// A length field that contradicts itself.
    BadLength,
    /// More IPv6 extension headers than the dataplane walks.
    TooManyExtensionHeaders,
    /// ARP for a hardware or protocol type other than Ethernet/IPv4.
    UnsupportedArp,
    /// Unicast to another MAC (seen in promiscuous mode on a shared segment).
    NotForUs,
    /// To a VIP address, but no VIP on that port and protocol.
    UnknownVipPort,
    /// The VIP has no backend that can take the flow.
    NoBackend,
    /// The flow's backend has no known MAC yet (ARP/ND still resolving).
    BackendUnresolved,
    /// ICMP to a VIP that is not an error about one of its flows.
    IcmpNotForFlow,
    /// For the host, but there is no exception path to the kernel (or it was full).
    NoKernelPath,
}

impl DropReason {
    pub const ALL: [DropReason; 12] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::BadHeaderLength,
        DropReason::BadLength,
        DropReason::TooManyExtensionHeaders,
        DropReason::UnsupportedArp,
        DropReason::NotForUs,
        DropReason::UnknownVipPort,
        DropReason::NoBackend,
        DropReason::BackendUnresolved,
        DropReason::IcmpNotForFlow,
        DropReason::NoKernelPath,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// Stable name, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad_version",
            DropReason::BadHeaderLength => "bad_header_length",
            DropReason::BadLength => "bad_length",
            DropReason::TooManyExtensionHeaders => "too_many_extension_headers",
            DropReason::UnsupportedArp => "unsupported_arp",
            DropReason::NotForUs => "not_for_us",
            DropReason::UnknownVipPort => "unknown_vip_port",
            DropReason::NoBackend => "no_backend",
            DropReason::BackendUnresolved => "backend_unresolved",
            DropReason::IcmpNotForFlow => "icmp_not_for_flow",
            DropReason::NoKernelPath => "no_kernel_path",
        }
    }
}

impl From<crate::packet::Error> for DropReason {
    fn from(e: crate::packet::Error) -> DropReason {
        use crate::packet::Error;
        match e {
            Error::Truncated => DropReason::Truncated,
            Error::BadVersion => DropReason::BadVersion,
            Error::BadHeaderLength => DropReason::BadHeaderLength,
            Error::BadLength => DropReason::BadLength,
            Error::TooManyExtensionHeaders => DropReason::TooManyExtensionHeaders,
            Error::Unsupported => DropReason::UnsupportedArp,
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
/// Backend slots with counters ([`crate::snapshot::BackendRef::slot`] must be below this).
pub const MAX_BACKEND_SLOTS: usize = 4096;

/// One backend's traffic through one worker. Per-VIP figures are the sums
/// over a VIP's backends, added up on the control side.
#[derive(Debug, Default)]
pub struct BackendCounters {
    pub packets: Counter,
    pub bytes: Counter,
    pub new_flows: Counter,
}

#[derive(Debug)]
#[repr(align(64))]
pub struct WorkerStats {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    /// Packets the driver did not take on transmit (freed).
    pub tx_dropped: Counter,
    /// Sent to a backend (ICMP errors included).
    pub forwarded: Counter,
    pub icmp_to_backend: Counter,
    pub arp_replies: Counter,
    pub nd_adverts: Counter,
    /// Passed to the host through the exception interface.
    pub to_kernel: Counter,
    /// Sent by the host through the exception interface, out of the port.
    pub from_kernel: Counter,
    /// ARP requests / neighbor solicitations sent to resolve backends.
    pub neigh_requests: Counter,
    /// ARP replies / neighbor advertisements reported to the control side.
    pub neigh_learned: Counter,
    /// Flows that got a backend from Maglev (new, or whose backend went away).
    pub new_flows: Counter,
    /// New flows the flow table had no room for (forwarded statelessly).
    pub flow_rejected: Counter,
    /// Entries in the worker's flow table (a level, not a total).
    pub active_flows: Counter,
    /// The snapshot generation the worker used for its last burst.
    pub snapshot_generation: Counter,
    /// From a snapshot's publication to this worker's first burst on it
    /// (snapshots published before the worker started are not counted).
    pub snapshot_adoption: DelayHistogram,
    /// From a snapshot's publication until every worker had it, recorded by
    /// the worker that took it last ([`crate::snapshot::Snapshot::take`]):
    /// summed over workers, one count per snapshot all of them took.
    pub snapshot_all_workers: DelayHistogram,
    /// Advances while the worker polls: the control side's liveness signal.
    pub heartbeat: Counter,
    pub drops: [Counter; DropReason::COUNT],
    /// Indexed by backend slot; allocated once, [`MAX_BACKEND_SLOTS`] long.
    pub backends: Box<[BackendCounters]>,
}

impl Default for WorkerStats {
    fn default() -> Self {
        WorkerStats {
            rx_packets: Counter::default(),
            rx_bytes: Counter::default(),
            tx_packets: Counter::default(),
            tx_bytes: Counter::default(),
            tx_dropped: Counter::default(),
            forwarded: Counter::default(),
            icmp_to_backend: Counter::default(),
            arp_replies: Counter::default(),
            nd_adverts: Counter::default(),
            to_kernel: Counter::default(),
            from_kernel: Counter::default(),
            neigh_requests: Counter::default(),
            neigh_learned: Counter::default(),
            new_flows: Counter::default(),
            flow_rejected: Counter::default(),
            active_flows: Counter::default(),
            snapshot_generation: Counter::default(),
            snapshot_adoption: DelayHistogram::default(),
            snapshot_all_workers: DelayHistogram::default(),
            heartbeat: Counter::default(),
            drops: Default::default(),
            backends: (0..MAX_BACKEND_SLOTS)
                .map(|_| BackendCounters::default())
                .collect(),
        }
    }
}

impl WorkerStats {
    /// The delays until every worker had a snapshot: each worker holds the
    /// counts of the snapshots it took last, so the whole is their sum.
    pub fn all_workers(workers: &[WorkerStats]) -> crate::delay::Delays {
        workers.iter().map(|s| s.snapshot_all_workers.read()).sum()
    }

    /// (packets, bytes, new flows) sent to the backend in `slot` by this worker.
    pub fn backend(&self, slot: u16) -> (u64, u64, u64) {
        self.backends.get(usize::from(slot)).map_or((0, 0, 0), |b| {
            (b.packets.get(), b.bytes.get(), b.new_flows.get())
        })
    }
}

/// A plain copy of a worker's counters, or a sum of several.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_dropped: u64,
    pub forwarded: u64,
    pub icmp_to_backend: u64,
    pub arp_replies: u64,
    pub nd_adverts: u64,
    pub to_kernel: u64,
    pub from_kernel: u64,
    pub neigh_requests: u64,
    pub neigh_learned: u64,
    pub new_flows: u64,
    pub flow_rejected: u64,
    pub active_flows: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Counter {
    /// For levels (not totals): overwrite.
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
}

impl WorkerStats {
    pub fn read(&self) -> Counters {
        Counters {
            rx_packets: self.rx_packets.get(),
            rx_bytes: self.rx_bytes.get(),
            tx_packets: self.tx_packets.get(),
            tx_bytes: self.tx_bytes.get(),
            tx_dropped: self.tx_dropped.get(),
            forwarded: self.forwarded.get(),
            icmp_to_backend: self.icmp_to_backend.get(),
            arp_replies: self.arp_replies.get(),
            nd_adverts: self.nd_adverts.get(),
            to_kernel: self.to_kernel.get(),
            from_kernel: self.from_kernel.get(),
            neigh_requests: self.neigh_requests.get(),
            neigh_learned: self.neigh_learned.get(),
            new_flows: self.new_flows.get(),
            flow_rejected: self.flow_rejected.get(),
            active_flows: self.active_flows.get(),
            drops: std::array::from_fn(|i| self.drops[i].get()),
        }
    }
}

impl Counters {
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Every packet dropped, for any reason, transmit refusals included.
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
            forwarded: self.forwarded + o.forwarded,
            icmp_to_backend: self.icmp_to_backend + o.icmp_to_backend,
            arp_replies: self.arp_replies + o.arp_replies,
            nd_adverts: self.nd_adverts + o.nd_adverts,
            to_kernel: self.to_kernel + o.to_kernel,
            from_kernel: self.from_kernel + o.from_kernel,
            neigh_requests: self.neigh_requests + o.neigh_requests,
            neigh_learned: self.neigh_learned + o.neigh_learned,
            new_flows: self.new_flows + o.new_flows,
            flow_rejected: self.flow_rejected + o.flow_rejected,
            active_flows: self.active_flows + o.active_flows,
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
    fn backend_counters_by_slot() {
        let s = WorkerStats::default();
        s.backends[7].packets.add(2);
        s.backends[7].bytes.add(120);
        assert_eq!(s.backend(7), (2, 120, 0));
        assert_eq!(s.backend(u16::MAX), (0, 0, 0), "out of range reads as zero");
    }

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
        s.drops[DropReason::NoBackend as usize].add(2);
        s.tx_dropped.add(1);
        let c = s.read();
        assert_eq!(c.rx_packets, 7);
        assert_eq!(c.drop_count(DropReason::NoBackend), 2);
        assert_eq!(c.dropped(), 3);
        let total: Counters = [c, c].into_iter().sum();
        assert_eq!(total.rx_packets, 14);
        assert_eq!(total.drop_count(DropReason::NoBackend), 4);
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
