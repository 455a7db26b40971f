//! Traffic counters that only go up, per backend and per VIP. Workers
//! count per backend slot (single-writer counters the control side cannot
//! reset), and slots are reused: a backend added after another was removed
//! may take its slot. So the ledger, told of every publication, notes for
//! each backend the slot's count when it took the slot (its baseline) and
//! reports the count since; and when a backend leaves its VIP (removed, or
//! its slot re-incarnated), what it carried is kept in that VIP's retired
//! total, so a VIP's counter is what all its backends ever carried, never
//! less after a removal; a VIP deleted ends its series (created again,
//! it starts from zero, which Prometheus reads as a counter reset). The last packets a worker forwards to a removed
//! backend before it takes the new snapshot count for the removed backend
//! only if they land before the publication; after, they are in the slot
//! and go to the next owner's baseline (a burst at most).

use std::collections::HashMap;

use lb_core::snapshot::{Snapshot, VipKey};
use lb_core::stats::{BackendTotals, WorkerStats};

#[derive(Debug, Clone, Copy)]
struct Live {
    vip: VipKey,
    incarnation: u16,
    /// The slot's count when this backend took it.
    baseline: BackendTotals,
}

#[derive(Debug, Default, Clone)]
pub struct Ledger {
    live: HashMap<u16, Live>,
    retired: HashMap<VipKey, BackendTotals>,
}

fn since(now: BackendTotals, base: BackendTotals) -> BackendTotals {
    BackendTotals {
        packets: now.packets.saturating_sub(base.packets),
        bytes: now.bytes.saturating_sub(base.bytes),
        new_flows: now.new_flows.saturating_sub(base.new_flows),
    }
}

impl Ledger {
    /// `snap` was just published: backends no longer in it (or whose slot
    /// now holds another incarnation) retire into their VIP's total;
    /// newcomers start from their slot's current count.
    pub fn published(&mut self, snap: &Snapshot, stats: &[WorkerStats]) {
        let mut next = HashMap::new();
        for (slot, b) in snap.backends() {
            let Some(vip) = snap.vip(b.vip).map(|v| v.key) else {
                continue;
            };
            let entry = match self.live.get(&slot) {
                Some(l) if l.incarnation == b.incarnation && l.vip == vip => *l,
                _ => Live {
                    vip,
                    incarnation: b.incarnation,
                    baseline: WorkerStats::backend_total(stats, slot),
                },
            };
            next.insert(slot, entry);
        }
        for (slot, old) in &self.live {
            let kept = next
                .get(slot)
                .is_some_and(|n| n.incarnation == old.incarnation && n.vip == old.vip);
            if !kept {
                // Counted up to now, against the baseline it started from;
                // a newcomer in the slot took the same count as its baseline.
                let carried = since(WorkerStats::backend_total(stats, *slot), old.baseline);
                let r = self.retired.entry(old.vip).or_default();
                *r = *r + carried;
            }
        }
        self.live = next;
        // A deleted VIP's series ends (its retired total with it): kept, the
        // map would grow with every VIP ever created and deleted.
        self.retired.retain(|k, _| snap.find_vip(k).is_some());
    }

    /// What the backend in `slot` carried since it took the slot.
    pub fn backend(&self, slot: u16, stats: &[WorkerStats]) -> BackendTotals {
        let base = self.live.get(&slot).map(|l| l.baseline).unwrap_or_default();
        since(WorkerStats::backend_total(stats, slot), base)
    }

    /// What every backend the VIP ever had carried for it.
    pub fn vip(&self, key: &VipKey, stats: &[WorkerStats]) -> BackendTotals {
        let live = self
            .live
            .iter()
            .filter(|(_, l)| l.vip == *key)
            .map(|(slot, _)| self.backend(*slot, stats))
            .fold(BackendTotals::default(), |a, b| a + b);
        live + self.retired.get(key).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::packet::ethernet::MacAddr;
    use lb_core::snapshot::{BackendRef, BackendSpec, BackendState, Proto, SnapshotSpec, VipSpec};
    use std::net::IpAddr;

    fn key(port: u16) -> VipKey {
        VipKey {
            addr: "198.51.100.10".parse().unwrap(),
            port,
            proto: Proto::Tcp,
        }
    }

    /// A snapshot of the VIPs on `ports`, each with the backends in `slots`.
    fn snap(vips: &[(u16, &[u16])]) -> Snapshot {
        let vips = vips
            .iter()
            .map(|&(port, slots)| VipSpec {
                key: key(port),
                table_size: 13,
                quic: None,
                drain: Default::default(),
                idle: Default::default(),
                backends: slots
                    .iter()
                    .map(|&slot| BackendSpec {
                        id: BackendRef {
                            slot,
                            incarnation: 0,
                        },
                        addr: IpAddr::from([10, 0, 0, u8::try_from(slot).unwrap() + 1]),
                        mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
                        state: BackendState::Up,
                        tunnel: None,
                        server_id: None,
                        weight: 1,
                    })
                    .collect(),
            })
            .collect();
        Snapshot::build(&SnapshotSpec {
            generation: 1,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            local: vec![],
            vips,
        })
        .unwrap()
    }

    #[test]
    fn a_vip_keeps_what_removed_backends_carried_until_it_is_deleted() {
        let stats = [WorkerStats::default()];
        let mut ledger = Ledger::default();
        ledger.published(&snap(&[(443, &[0, 1]), (80, &[2])]), &stats);
        stats[0].backends[1].packets.add(7);
        stats[0].backends[2].packets.add(5);
        // Backend 1 leaves 443, backend 2 leaves 80: their packets stay.
        ledger.published(&snap(&[(443, &[0]), (80, &[])]), &stats);
        assert_eq!(ledger.vip(&key(443), &stats).packets, 7);
        assert_eq!(ledger.vip(&key(80), &stats).packets, 5);
        assert_eq!(ledger.retired.len(), 2);
        // VIP 80 deleted: its total goes, and does not come back with it.
        ledger.published(&snap(&[(443, &[0])]), &stats);
        assert_eq!(ledger.retired.len(), 1);
        assert_eq!(ledger.vip(&key(443), &stats).packets, 7);
        ledger.published(&snap(&[(443, &[0]), (80, &[])]), &stats);
        assert_eq!(ledger.vip(&key(80), &stats).packets, 0);
    }
}
