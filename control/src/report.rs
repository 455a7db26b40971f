//! The exit report: counters per worker and in total, drops by reason, and
//! per-VIP and per-backend traffic, as a table or (`--json`) one JSON object.
//! The traffic is the ledger's ([`crate::traffic`]), as the API and the
//! metrics show it: a VIP's over every backend it had, a backend's since it
//! took its slot.

use lb_core::drop_reason::DropReason;
use lb_core::packet::MacAddr;
use lb_core::snapshot::Snapshot;
use lb_core::stats::{BackendTotals, Counters, WorkerStats, COUNTERS};

use crate::args::Options;
use crate::traffic::Ledger;

/// The workers' traffic counters and the ledger that reads them.
pub struct Traffic<'a> {
    pub ledger: &'a Ledger,
    pub stats: &'a [WorkerStats],
}

/// Print the report of a run to stdout.
pub fn report(
    opts: &Options,
    lcores: &[u32],
    per_worker: &[Counters],
    mac: MacAddr,
    snap: &Snapshot,
    traffic: &Traffic<'_>,
) {
    let total: Counters = per_worker.iter().copied().sum();
    if opts.json {
        let workers: Vec<serde_json::Value> = lcores
            .iter()
            .zip(per_worker)
            .map(|(l, c)| {
                let mut v = counters_json(c);
                v["lcore"] = (*l).into();
                v
            })
            .collect();
        let out = serde_json::json!({
            "port": opts.port,
            "port_mac": mac.to_string(),
            "total": counters_json(&total),
            "workers": workers,
            "vips": backends_json(snap, traffic)["vips"],
        });
        println!("{out}");
        return;
    }
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10}",
        "worker", "rx", "tx", "forwarded", "new_flows", "arp", "nd", "dropped"
    );
    let rows = lcores
        .iter()
        .map(|l| format!("lcore {l}"))
        .zip(per_worker.iter().copied());
    for (name, c) in rows.chain(std::iter::once(("total".to_string(), total))) {
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10}",
            name,
            c.rx_packets,
            c.tx_packets,
            c.forwarded,
            c.new_flows,
            c.arp_replies,
            c.nd_adverts,
            c.dropped()
        );
    }
    let reasons: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| total.drop_count(**r) > 0)
        .map(|r| format!("{}={}", r.as_str(), total.drop_count(*r)))
        .collect();
    if !reasons.is_empty() {
        println!("drops: {}", reasons.join(" "));
    }
    print_backends(snap, traffic);
}

/// Per-backend traffic since each took its slot.
fn backend_totals(snap: &Snapshot, t: &Traffic<'_>) -> Vec<(u16, BackendTotals)> {
    snap.backends()
        .map(|(slot, _)| (slot, t.ledger.backend(slot, t.stats)))
        .collect()
}

fn backends_json(snap: &Snapshot, traffic: &Traffic<'_>) -> serde_json::Value {
    let totals = backend_totals(snap, traffic);
    let vips: Vec<serde_json::Value> = snap
        .vips()
        .iter()
        .map(|v| {
            let backends: Vec<serde_json::Value> = v
                .backends
                .iter()
                .filter_map(|&slot| {
                    let b = snap.backend(slot)?;
                    let t = totals.iter().find(|(s, _)| *s == slot)?.1;
                    Some(serde_json::json!({
                        "address": b.addr.to_string(),
                        "mac": b.mac.map(|m| m.to_string()),
                        "state": format!("{:?}", b.state).to_lowercase(),
                        "weight": b.weight,
                        "packets": t.packets, "bytes": t.bytes, "new_flows": t.new_flows,
                    }))
                })
                .collect();
            // Over every backend it had, removed ones included.
            let sum = traffic.ledger.vip(&v.key, traffic.stats);
            serde_json::json!({
                "vip": v.key.to_string(),
                "packets": sum.packets, "bytes": sum.bytes, "new_flows": sum.new_flows,
                "backends": backends,
            })
        })
        .collect();
    serde_json::json!({ "vips": vips })
}

fn print_backends(snap: &Snapshot, traffic: &Traffic<'_>) {
    let totals = backend_totals(snap, traffic);
    for v in snap.vips() {
        println!("vip {}", v.key);
        for &slot in &v.backends {
            let (Some(b), Some((_, t))) =
                (snap.backend(slot), totals.iter().find(|(s, _)| *s == slot))
            else {
                continue;
            };
            let mac = b
                .mac
                .map_or_else(|| "unresolved".to_string(), |m| m.to_string());
            println!(
                "  {:<24} {:<18} {:<9} weight {:<4} {:>10} pkts {:>12} bytes {:>8} new flows",
                b.addr.to_string(),
                mac,
                format!("{:?}", b.state).to_lowercase(),
                b.weight,
                t.packets,
                t.bytes,
                t.new_flows
            );
        }
    }
}

/// A worker's (or the total's) counters for `--json`: every counter of
/// `lb_core::for_each_counter!` under its own name, and drops by reason.
pub fn counters_json(c: &Counters) -> serde_json::Value {
    let drops: serde_json::Map<String, serde_json::Value> = DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), c.drop_count(*r).into()))
        .collect();
    let mut out: serde_json::Map<String, serde_json::Value> = COUNTERS
        .iter()
        .zip(c.values())
        .map(|(info, v)| (info.name.to_owned(), v.into()))
        .collect();
    out.insert("drops".into(), drops.into());
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_report_carries_every_counter_under_its_name() {
        let s = WorkerStats::default();
        s.rx_packets.add(1);
        s.tx_failed.add(2);
        s.drop(DropReason::NoBackend).add(3);
        let c = s.read();
        let j = counters_json(&c);
        for (info, v) in COUNTERS.iter().zip(c.values()) {
            assert_eq!(j[info.name].as_u64(), Some(v), "{}", info.name);
        }
        assert_eq!(j["tx_failed"], 2);
        for r in DropReason::ALL {
            assert!(j["drops"][r.as_str()].is_u64(), "{}", r.as_str());
        }
        assert_eq!(j["drops"]["no_backend"], 3);
        assert_eq!(j.as_object().unwrap().len(), COUNTERS.len() + 1);
    }
}
