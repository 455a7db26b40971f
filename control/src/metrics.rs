//! Prometheus text exposition (format 0.0.4) at `/metrics`: per worker
//! packets and drops by reason, per VIP and backend packets, bytes and new
//! flows, backend state and health, and control-plane gauges. Counters are
//! `_total`, sizes in bytes; labels `worker`, `reason`, `vip`, `backend`.

use std::fmt::Write;
use std::sync::{Arc, Mutex};

use lb_core::delay::Delays;
use lb_core::drop_reason::DropReason;
use lb_core::snapshot::BackendState;
use lb_core::stats::{BackendTotals, CounterInfo, Kind, WorkerStats, COUNTERS};

use crate::hub::Control;

/// What the exposition reads.
#[derive(Clone)]
pub struct Source {
    pub control: Arc<Mutex<Control>>,
    pub stats: Arc<[WorkerStats]>,
    pub lcores: Vec<u32>,
    /// The port, by name, read live (lbd's; tests without EAL have none).
    pub port: Option<(String, dataplane::dpdk::PortReader)>,
    /// The mbuf pool every queue draws from (lbd's; none in tests without EAL).
    pub pool: Option<&'static dataplane::dpdk::Mempool>,
}

/// The port's own counters (the device's, not the workers'): what it
/// missed for want of room (`imissed`: the workers did not keep up), its
/// receive errors and mbuf shortages, and its link.
fn port_families(f: &mut Family<'_>, name: &str, reader: &dataplane::dpdk::PortReader) {
    let labels = [("port", name)];
    if let Ok(s) = reader.stats() {
        let counters: [(&str, &str, u64); 8] = [
            ("lb_port_rx_packets_total", "Packets the port received.", s.rx_packets),
            ("lb_port_tx_packets_total", "Packets the port sent.", s.tx_packets),
            ("lb_port_rx_bytes_total", "Bytes the port received.", s.rx_bytes),
            ("lb_port_tx_bytes_total", "Bytes the port sent.", s.tx_bytes),
            (
                "lb_port_rx_missed_total",
                "Packets the port dropped because its receive queues were full (imissed): the workers did not keep up.",
                s.rx_missed,
            ),
            ("lb_port_rx_errors_total", "Erroneous packets the port received (ierrors).", s.rx_errors),
            ("lb_port_tx_errors_total", "Packets the port failed to send (oerrors).", s.tx_errors),
            (
                "lb_port_rx_nombuf_total",
                "Receive failures for want of an mbuf (rx_nombuf): the pool is too small (--mbufs).",
                s.rx_nombuf,
            ),
        ];
        for (family, help, v) in counters {
            f.header(family, "counter", help);
            f.sample(family, &labels, v);
        }
    }
    if let Ok(link) = reader.link() {
        f.header("lb_port_link_up", "gauge", "1 when the port's link is up.");
        f.sample("lb_port_link_up", &labels, u64::from(link.up));
        f.header(
            "lb_port_link_speed_bits_per_second",
            "gauge",
            "The port's link speed (0 when unknown).",
        );
        f.sample(
            "lb_port_link_speed_bits_per_second",
            &labels,
            u64::from(link.speed_mbps) * 1_000_000,
        );
    }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let inner: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            let _ = write!(self.out, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A histogram's samples at the delay histogram's own bucket bounds,
    /// powers of two of microseconds, up to 2^26 µs (67 s: its last bucket
    /// also holds longer delays).
    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], d: &Delays) {
        let bucket = format!("{name}_bucket");
        for k in 0..=26 {
            let le = format!("{}", (1u64 << k) as f64 / 1e6);
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&bucket, &l, d.below_pow2(k));
        }
        let mut l = labels.to_vec();
        l.push(("le", "+Inf"));
        self.sample(&bucket, &l, d.count());
        self.sample(&format!("{name}_sum"), labels, d.sum_us as f64 / 1e6);
        self.sample(&format!("{name}_count"), labels, d.count());
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct BackendRow {
    vip: String,
    backend: String,
    packets: u64,
    bytes: u64,
    new_flows: u64,
    up: bool,
    weight: u32,
    healthy: Option<bool>,
    /// The last check of each path: ("real" | "vip", ok).
    paths: Vec<(&'static str, bool)>,
}

type RowValue = fn(&BackendRow) -> u64;

/// The Prometheus family of a worker counter: `lb_worker_<name>_total`, a
/// counter, or `lb_worker_<name>`, a gauge, for a level.
pub fn worker_family(info: &CounterInfo) -> (String, &'static str) {
    match info.kind {
        Kind::Total => (format!("lb_worker_{}_total", info.name), "counter"),
        Kind::Level => (format!("lb_worker_{}", info.name), "gauge"),
    }
}

pub fn render(source: &Source) -> String {
    let mut out = String::new();
    let mut f = Family { out: &mut out };
    let workers: Vec<(String, lb_core::stats::Counters)> = source
        .lcores
        .iter()
        .zip(source.stats.iter())
        .map(|(l, s)| (l.to_string(), s.read()))
        .collect();

    for (i, info) in COUNTERS.iter().enumerate() {
        let (name, kind) = worker_family(info);
        f.header(&name, kind, info.help);
        for (w, c) in &workers {
            f.sample(&name, &[("worker", w)], c.values()[i]);
        }
    }
    f.header(
        "lb_worker_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for (w, c) in &workers {
        for r in DropReason::ALL {
            f.sample(
                "lb_worker_drops_total",
                &[("worker", w), ("reason", r.as_str())],
                c.drop_count(r),
            );
        }
    }

    const ADOPTION: &str = "lb_worker_snapshot_adoption_seconds";
    f.header(
        ADOPTION,
        "histogram",
        "From a snapshot's publication to the worker's first burst on it.",
    );
    for (l, s) in source.lcores.iter().zip(source.stats.iter()) {
        let w = l.to_string();
        f.histogram(ADOPTION, &[("worker", &w)], &s.snapshot_adoption.read());
    }
    const ALL: &str = "lb_snapshot_all_workers_seconds";
    f.header(
        ALL,
        "histogram",
        "From a snapshot's publication until every worker had it.",
    );
    f.histogram(ALL, &[], &WorkerStats::all_workers(&source.stats));

    let Ok(control) = source.control.lock() else {
        return out;
    };
    let snap = control.snapshot();
    let mut rows = Vec::new();
    for v in snap.vips() {
        for &slot in &v.backends {
            let Some(b) = snap.backend(slot) else {
                continue;
            };
            let mut row = BackendRow {
                vip: v.key.to_string(),
                backend: b.addr.to_string(),
                packets: 0,
                bytes: 0,
                new_flows: 0,
                up: b.state == BackendState::Up && b.mac.is_some(),
                weight: b.weight,
                healthy: control.health(&v.key, &b.addr).map(|h| h.healthy),
                paths: control
                    .health(&v.key, &b.addr)
                    .map(|h| {
                        [("real", &h.real), ("vip", &h.vip_path)]
                            .into_iter()
                            .filter_map(|(p, r)| r.as_ref().map(|r| (p, r.ok)))
                            .collect()
                    })
                    .unwrap_or_default(),
            };
            let t = control.traffic().backend(slot, &source.stats);
            (row.packets, row.bytes, row.new_flows) = (t.packets, t.bytes, t.new_flows);
            rows.push(row);
        }
    }
    // Over every backend a VIP ever had (crate::traffic): never less
    // after a removal.
    let vips: Vec<(String, BackendTotals)> = snap
        .vips()
        .iter()
        .map(|v| {
            (
                v.key.to_string(),
                control.traffic().vip(&v.key, &source.stats),
            )
        })
        .collect();
    type VipValue = fn(&BackendTotals) -> u64;
    let per_vip: [(&str, &str, VipValue); 3] = [
        (
            "lb_vip_packets_total",
            "Packets forwarded for a VIP.",
            |t| t.packets,
        ),
        ("lb_vip_bytes_total", "Bytes forwarded for a VIP.", |t| {
            t.bytes
        }),
        ("lb_vip_new_flows_total", "New flows of a VIP.", |t| {
            t.new_flows
        }),
    ];
    for (name, help, get) in per_vip {
        f.header(name, "counter", help);
        for (vip, t) in &vips {
            f.sample(name, &[("vip", vip)], get(t));
        }
    }
    let per_backend: [(&str, &str, &str, RowValue); 5] = [
        (
            "lb_backend_packets_total",
            "counter",
            "Packets forwarded to a backend.",
            |b| b.packets,
        ),
        (
            "lb_backend_bytes_total",
            "counter",
            "Bytes forwarded to a backend.",
            |b| b.bytes,
        ),
        (
            "lb_backend_new_flows_total",
            "counter",
            "New flows given to a backend.",
            |b| b.new_flows,
        ),
        (
            "lb_backend_up",
            "gauge",
            "1 when the backend takes new flows (up and reachable), else 0.",
            |b| u64::from(b.up),
        ),
        (
            "lb_backend_weight",
            "gauge",
            "The backend's configured weight (its share of new flows relative to its VIP's others).",
            |b| u64::from(b.weight),
        ),
    ];
    for (name, kind, help, get) in per_backend {
        f.header(name, kind, help);
        for r in &rows {
            f.sample(name, &[("vip", &r.vip), ("backend", &r.backend)], get(r));
        }
    }
    f.header(
        "lb_backend_healthy",
        "gauge",
        "Health check verdict: 1 healthy, 0 failing (absent when unchecked).",
    );
    for r in &rows {
        if let Some(h) = r.healthy {
            f.sample(
                "lb_backend_healthy",
                &[("vip", &r.vip), ("backend", &r.backend)],
                u64::from(h),
            );
        }
    }
    f.header(
        "lb_backend_check_ok",
        "gauge",
        "The last health check along each path: 1 passed, 0 failed. path=\"real\": to the backend's \
         own address; path=\"vip\": along the DR path, to VIP:port at the backend's MAC (checks via \
         the VIP only). Real 1 and vip 0: the server is up, the VIP path is broken.",
    );
    for r in &rows {
        for &(path, ok) in &r.paths {
            f.sample(
                "lb_backend_check_ok",
                &[("vip", &r.vip), ("backend", &r.backend), ("path", path)],
                u64::from(ok),
            );
        }
    }
    if let Some((name, reader)) = &source.port {
        port_families(&mut f, name, reader);
    }
    if let Some(pool) = source.pool {
        f.header("lb_mbufs", "gauge", "Mbufs in the pool (--mbufs).");
        f.sample("lb_mbufs", &[], pool.size());
        f.header(
            "lb_mbufs_in_use",
            "gauge",
            "Mbufs taken (in descriptor rings, bursts, caches): near lb_mbufs, receive fails (rx_nombuf).",
        );
        f.sample("lb_mbufs_in_use", &[], pool.in_use());
    }
    f.header(
        "lb_build_info",
        "gauge",
        "Always 1; the labels say which build of lbd this is.",
    );
    f.sample(
        "lb_build_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("revision", lb_proto::GIT_REVISION),
        ],
        1,
    );
    f.header(
        "lb_snapshot_generation",
        "gauge",
        "Generation of the forwarding snapshot published to workers.",
    );
    f.sample("lb_snapshot_generation", &[], control.generation());
    f.header("lb_vips", "gauge", "Configured VIPs.");
    f.sample("lb_vips", &[], control.state().vips().len() as u64);
    f.header(
        "lb_vip_conflicts_total",
        "counter",
        "ARP/ND claims on a VIP address from another MAC, by VIP and MAC.",
    );
    for c in control.vip_conflicts() {
        f.sample(
            "lb_vip_conflicts_total",
            &[("vip", &c.vip), ("mac", &c.mac)],
            c.count,
        );
    }
    if control.announcing() {
        f.header(
            "lb_route_announced",
            "gauge",
            "1 while the VIP address is announced to the routers (--bgp-routes), else 0.",
        );
        let announced = control.announced();
        let addrs: std::collections::BTreeSet<_> =
            control.state().vips().keys().map(|k| k.addr).collect();
        for a in addrs {
            f.sample(
                "lb_route_announced",
                &[("address", &a.to_string())],
                u64::from(announced.contains(&a)),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DesiredState;
    use lb_core::packet::MacAddr;

    #[test]
    fn the_exposition_carries_every_counter_under_its_name() {
        let control =
            Control::new(DesiredState::default(), MacAddr([2, 0, 0, 0, 0, 1]), || 1).unwrap();
        let stats: Arc<[WorkerStats]> = vec![WorkerStats::default(), WorkerStats::default()].into();
        // A distinct value per counter and worker, so a family reading the
        // wrong field shows.
        for (w, s) in stats.iter().enumerate() {
            s.rx_packets.add(10 + w as u64);
            s.neigh_learned.add(20 + w as u64);
            s.active_flows.set(30 + w as u64);
            s.drop(DropReason::Truncated).add(40 + w as u64);
        }
        let source = Source {
            control: Arc::new(Mutex::new(control)),
            stats: stats.clone(),
            lcores: vec![1, 2],
            port: None,
            pool: None,
        };
        let text = render(&source);
        for (w, (lcore, s)) in [1, 2].iter().zip(stats.iter()).enumerate() {
            let values = s.read().values();
            for (info, v) in COUNTERS.iter().zip(values) {
                let (name, kind) = worker_family(info);
                assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
                assert!(
                    text.contains(&format!("{name}{{worker=\"{lcore}\"}} {v}\n")),
                    "{name} of worker {w}: want {v}"
                );
            }
            for r in DropReason::ALL {
                let v = s.read().drop_count(r);
                let line = format!(
                    "lb_worker_drops_total{{worker=\"{lcore}\",reason=\"{}\"}} {v}\n",
                    r.as_str()
                );
                assert!(text.contains(&line), "{line}");
            }
        }
        assert!(text.contains("lb_worker_rx_packets_total{worker=\"2\"} 11\n"));
        assert!(text.contains("# TYPE lb_worker_active_flows gauge\n"));
        assert!(text.contains("lb_worker_neigh_learned_total{worker=\"1\"} 20\n"));
    }
}
