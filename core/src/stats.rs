//! Per-worker counters. Each worker writes only its own [`WorkerStats`]
//! (cache-line aligned, so workers never share a line); readers on the
//! control side load them with relaxed atomics and add them up. No counter is
//! shared between cores, and a worker publishes once per burst.
//!
//! **Declared once.** The worker's traffic counters are listed in one place,
//! [`for_each_counter!`](crate::for_each_counter): the fields of
//! [`WorkerStats`] and [`Counters`], [`COUNTERS`] (name, kind, help) and
//! [`Counters::values`] derive from it here, and every exporter (the gRPC
//! `WorkerStats` message, the Prometheus families, the exit report) derives
//! its fields from it too, so an exporter that lacks a counter does not
//! compile or fails its test.

use crate::counter::Counter;
use crate::delay::{DelayHistogram, Delays};
use crate::drop_reason::DropReason;
use crate::flow::BackendFlows;
use crate::snapshot::MAX_BACKEND_SLOTS;

/// Calls `$callback! { [name, Kind, "help"], ... }` with every worker
/// counter: the one list of them. `Kind` is `Total` (only goes up; a
/// Prometheus counter) or `Level` (a current value; a gauge). Drops by
/// reason are counted beside these, one per [`DropReason`].
#[macro_export]
macro_rules! for_each_counter {
    ($callback:path) => {
        $callback! {
            [rx_packets, Total, "Packets received by the worker."],
            [rx_bytes, Total, "Bytes received by the worker."],
            [tx_packets, Total, "Packets the worker transmitted."],
            [tx_bytes, Total, "Bytes the worker transmitted."],
            [tx_failed, Total, "Packets the device refused on transmit (freed): lost, but not dropped by the decision."],
            [forwarded, Total, "Packets sent to a backend (ICMP errors included)."],
            [encapsulated, Total, "Packets sent to a backend through its tunnel (IPIP, GUE or VXLAN); also in forwarded."],
            [too_big_sent, Total, "ICMP fragmentation-needed and ICMPv6 packet-too-big sent to clients whose packet would exceed the MTU once encapsulated."],
            [icmp_to_backend, Total, "ICMP errors about a VIP flow sent to that flow's backend."],
            [arp_replies, Total, "ARP replies sent for VIPs and the port's own addresses."],
            [nd_adverts, Total, "Neighbor advertisements sent for VIPs and the port's own addresses."],
            [echo_replies, Total, "ICMP and ICMPv6 echo replies sent for VIPs."],
            [vip_conflicts, Total, "ARP and neighbor advertisements from another MAC claiming a VIP, reported to the control side."],
            [to_kernel, Total, "Packets passed to the host through the exception interface."],
            [from_kernel, Total, "Packets the host sent through the exception interface, out of the port."],
            [host_balanced, Total, "Packets the host sent to a VIP (not health checks), balanced to a backend as a client's."],
            [host_replies, Total, "Echo requests the host sent to a VIP, answered back to it."],
            [host_dropped, Total, "Packets the host sent to a VIP that nothing may take, not sent (also counted in drops by reason: probe_no_backend, backend_unresolved, unknown_vip_port...)."],
            [probes_steered, Total, "Health checks from the host sent along the DR path (checks via the VIP): from the exception interface to the backend their source port names."],
            [neigh_requests, Total, "ARP requests and neighbor solicitations sent to resolve backends."],
            [neigh_learned, Total, "ARP replies and neighbor advertisements reported to the control side."],
            [quic_by_id, Total, "Datagrams to a QUIC VIP sent to the backend their connection ID's server id names."],
            [quic_initial, Total, "QUIC Initial and 0-RTT datagrams without a known server id, placed by Maglev on their destination connection ID."],
            [quic_unknown_id, Total, "Datagrams to a QUIC VIP without a known server id (a connection ID too short for one, or an id no backend has), placed as UDP (flow table, Maglev)."],
            [quic_id_down, Total, "Datagrams to a QUIC VIP whose server id names a backend that keeps no flows now (down), placed afresh as UDP."],
            [quic_unparsed, Total, "Datagrams to a QUIC VIP that are not QUIC version 1 or 2 as far as their header shows, placed as UDP."],
            [new_flows, Total, "Flows that got a backend from Maglev (new, or whose backend went away)."],
            [flow_rejected, Total, "Packets of new flows that found no flow-table slot (forwarded by Maglev without an entry)."],
            [flow_inserted, Total, "Flow-table entries placed for new flows, unconfirmed until the flow's next packet (in a free or expired slot, or displacing another: flow_evicted_*)."],
            [flow_evicted_unconfirmed, Total, "Unconfirmed flow-table entries (one packet seen: a SYN, a first datagram) displaced by a new flow."],
            [flow_evicted_confirmed, Total, "Confirmed flow-table entries (streams) displaced by a new flow after idling at least the eviction threshold; an active stream never is."],
            [flow_expired, Total, "Flow-table entries freed after their idle timeout."],
            [active_flows, Level, "Entries in the worker's flow table."],
            [flow_capacity, Level, "Entries the worker's flow table holds at most (active_flows / flow_capacity: how full it is)."],
        }
    };
}

/// Whether a counter only goes up or is a current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Total,
    Level,
}

/// A counter's name (the same in every exporter), kind and meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterInfo {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

macro_rules! declare_counters {
    ($([$name:ident, $kind:ident, $help:literal]),+ $(,)?) => {
        /// Every worker counter, in the order of [`Counters::values`].
        pub const COUNTERS: [CounterInfo; [$(stringify!($name)),+].len()] = [
            $(CounterInfo { name: stringify!($name), kind: Kind::$kind, help: $help },)+
        ];

        /// One worker's counters, written only by that worker.
        #[derive(Debug)]
        #[repr(align(64))]
        pub struct WorkerStats {
            $(#[doc = $help] pub $name: Counter,)+
            /// Drops by reason, indexed by `DropReason as usize`.
            pub drops: [Counter; DropReason::COUNT],
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
            /// Indexed by backend slot; allocated once, [`MAX_BACKEND_SLOTS`] long.
            pub backends: Box<[BackendCounters]>,
        }

        impl Default for WorkerStats {
            fn default() -> Self {
                WorkerStats {
                    $($name: Counter::default(),)+
                    drops: Default::default(),
                    snapshot_generation: Counter::default(),
                    snapshot_adoption: DelayHistogram::default(),
                    snapshot_all_workers: DelayHistogram::default(),
                    heartbeat: Counter::default(),
                    backends: (0..MAX_BACKEND_SLOTS)
                        .map(|_| BackendCounters::default())
                        .collect(),
                }
            }
        }

        /// A plain copy of a worker's counters, or a sum of several.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Counters {
            $(#[doc = $help] pub $name: u64,)+
            /// Indexed by `DropReason as usize`.
            pub drops: [u64; DropReason::COUNT],
        }

        impl WorkerStats {
            pub fn read(&self) -> Counters {
                Counters {
                    $($name: self.$name.get(),)+
                    drops: std::array::from_fn(|i| self.drops[i].get()),
                }
            }
        }

        impl Counters {
            /// The values in the order of [`COUNTERS`].
            pub fn values(&self) -> [u64; COUNTERS.len()] {
                [$(self.$name),+]
            }
        }

        impl std::ops::Add for Counters {
            type Output = Counters;
            fn add(self, o: Counters) -> Counters {
                Counters {
                    $($name: self.$name + o.$name,)+
                    drops: std::array::from_fn(|i| self.drops[i] + o.drops[i]),
                }
            }
        }
    };
}

for_each_counter!(declare_counters);

/// One backend's traffic through one worker. Per-VIP figures are the sums
/// over a VIP's backends, added up on the control side.
#[derive(Debug, Default)]
pub struct BackendCounters {
    pub packets: Counter,
    pub bytes: Counter,
    pub new_flows: Counter,
    /// The worker's flow-table entries pinned to the backend, as the table
    /// counts them ([`BackendFlows`]): incarnation << 32 | count, so a
    /// reader can tell a newcomer in the slot from its predecessor.
    /// Published by the worker a few slots per poll.
    pub active_flows: Counter,
}

impl BackendCounters {
    #[inline]
    pub fn publish_flows(&self, f: BackendFlows) {
        self.active_flows
            .set(u64::from(f.incarnation) << 32 | u64::from(f.active));
    }

    /// The flows of this incarnation of the slot's backend (0 while the
    /// worker still counts a predecessor's).
    pub fn flows_of(&self, incarnation: u16) -> u64 {
        let v = self.active_flows.get();
        if v >> 32 == u64::from(incarnation) {
            v & u64::from(u32::MAX)
        } else {
            0
        }
    }
}

/// A backend's traffic summed over workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BackendTotals {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

impl std::ops::Add for BackendTotals {
    type Output = BackendTotals;
    fn add(self, o: BackendTotals) -> BackendTotals {
        BackendTotals {
            packets: self.packets + o.packets,
            bytes: self.bytes + o.bytes,
            new_flows: self.new_flows + o.new_flows,
        }
    }
}

impl WorkerStats {
    #[inline(always)]
    pub fn drop(&self, reason: DropReason) -> &Counter {
        &self.drops[reason as usize]
    }

    /// The delays until every worker had a snapshot: each worker holds the
    /// counts of the snapshots it took last, so the whole is their sum.
    pub fn all_workers(workers: &[WorkerStats]) -> Delays {
        workers.iter().map(|s| s.snapshot_all_workers.read()).sum()
    }

    /// What this worker sent to the backend in `slot`.
    pub fn backend(&self, slot: u16) -> BackendTotals {
        self.backends
            .get(usize::from(slot))
            .map_or(BackendTotals::default(), |b| BackendTotals {
                packets: b.packets.get(),
                bytes: b.bytes.get(),
                new_flows: b.new_flows.get(),
            })
    }

    /// The flows all `workers` hold pinned to the backend in `slot`, of
    /// `incarnation`.
    pub fn backend_active_flows(workers: &[WorkerStats], slot: u16, incarnation: u16) -> u64 {
        workers
            .iter()
            .filter_map(|w| w.backends.get(usize::from(slot)))
            .map(|b| b.flows_of(incarnation))
            .sum()
    }

    /// What all `workers` sent to the backend in `slot`: the one sum every
    /// exporter of per-backend (and so per-VIP) traffic uses.
    pub fn backend_total(workers: &[WorkerStats], slot: u16) -> BackendTotals {
        workers
            .iter()
            .map(|w| w.backend(slot))
            .fold(BackendTotals::default(), |a, b| a + b)
    }
}

impl Counters {
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Every packet dropped, for any reason, transmit refusals included.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum::<u64>() + self.tx_failed
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
        let want = BackendTotals {
            packets: 2,
            bytes: 120,
            new_flows: 0,
        };
        assert_eq!(s.backend(7), want);
        assert_eq!(
            s.backend(u16::MAX),
            BackendTotals::default(),
            "out of range reads as zero"
        );
        let two = [WorkerStats::default(), WorkerStats::default()];
        two[0].backends[7].packets.add(2);
        two[1].backends[7].packets.add(3);
        two[1].backends[7].new_flows.add(1);
        assert_eq!(WorkerStats::backend_total(&two, 7).packets, 5);
        assert_eq!(WorkerStats::backend_total(&two, 7).new_flows, 1);
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
        s.drop(DropReason::NoBackend).add(2);
        s.tx_failed.add(1);
        let c = s.read();
        assert_eq!(c.rx_packets, 7);
        assert_eq!(c.drop_count(DropReason::NoBackend), 2);
        assert_eq!(c.dropped(), 3);
        let total: Counters = [c, c].into_iter().sum();
        assert_eq!(total.rx_packets, 14);
        assert_eq!(total.drop_count(DropReason::NoBackend), 4);
    }

    #[test]
    fn the_table_names_every_counter_once_in_field_order() {
        let mut names: Vec<_> = COUNTERS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len());
        // Each field lands at its own index of `values`.
        let s = WorkerStats::default();
        s.rx_packets.add(1);
        s.tx_failed.add(5);
        s.active_flows.set(9);
        let v = s.read().values();
        let at = |n: &str| v[COUNTERS.iter().position(|c| c.name == n).unwrap()];
        assert_eq!(
            (at("rx_packets"), at("tx_failed"), at("active_flows")),
            (1, 5, 9)
        );
        assert_eq!(v.iter().sum::<u64>(), 15);
        let levels: Vec<&str> = COUNTERS
            .iter()
            .filter(|c| c.kind == Kind::Level)
            .map(|c| c.name)
            .collect();
        assert_eq!(levels, ["active_flows", "flow_capacity"]);
    }
}
