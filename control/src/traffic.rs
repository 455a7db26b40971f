//! Traffic counters that only go up, per backend and per VIP. Workers
//! count per backend slot (single-writer counters the control side cannot
//! reset), and slots are reused: a backend added after another was removed
//! may take its slot. So the ledger, told of every publication, notes for
//! each backend the slot's count when it took the slot (its baseline) and
//! reports the count since; and when a backend leaves its VIP (removed, or
//! its slot re-incarnated), what it carried is kept in that VIP's retired
//! total, so a VIP's counter is what all its backends ever carried, never
//! less after a removal. The last packets a worker forwards to a removed
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
