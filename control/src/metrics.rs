//! The Prometheus exposition at `/metrics`, in the OpenMetrics text format
//! (prometheus-client's encoder; every value is read at the scrape, by one
//! [`Collector`]): per worker packets and drops by reason, per VIP and
//! backend traffic, flows, weights, state and health, the port's own
//! counters, the mbuf pool, control-plane gauges and the process.
//!
//! Counters only go up: per-VIP and per-backend traffic comes from the
//! control side's ledger ([`crate::traffic`]), so a removal lowers nothing
//! and a newcomer in a reused slot starts at zero. Labels: `worker`,
//! `reason`; a VIP's `vip` ("198.51.100.10:443/tcp") and its parts
//! `address`, `port`, `protocol` (`address` joins `lb_route_announced`);
//! `backend`; `port` for the DPDK port. Sizes in bytes, times in seconds.

use std::fmt;
use std::sync::{Arc, Mutex};

use lb_core::delay::Delays;
use lb_core::drop_reason::DropReason;
use lb_core::snapshot::{BackendState, VipKey};
use lb_core::stats::{BackendTotals, CounterInfo, Kind, WorkerStats, COUNTERS};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::hub::Control;

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

impl fmt::Debug for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("lcores", &self.lcores)
            .finish_non_exhaustive()
    }
}

/// The whole exposition, `# EOF` included.
pub fn render(source: &Source) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(source.clone()));
    let mut out = String::new();
    // Writing to a String cannot fail; an encoder error (a bad name) would
    // be ours, and shows as a cut exposition Prometheus refuses.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding the metrics");
    }
    out
}

impl Collector for Source {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut out = Out(encoder);
        workers(&mut out, self)?;
        if let Ok(control) = self.control.lock() {
            vips_and_backends(&mut out, self, &control)?;
            control_plane(&mut out, &control)?;
        }
        if let Some((name, reader)) = &self.port {
            port(&mut out, name, reader)?;
        }
        if let Some(pool) = self.pool {
            out.gauge(
                "lb_mbufs",
                "Mbufs in the pool (--mbufs).",
                [(vec![], pool.size())],
            )?;
            out.gauge(
                "lb_mbufs_in_use",
                "Mbufs taken (in descriptor rings, bursts, caches): near lb_mbufs, receive fails (rx_nombuf).",
                [(vec![], pool.in_use())],
            )?;
        }
        process(&mut out)
    }
}

/// A sample's labels: (name, value) pairs, in order.
type Labels = Vec<(&'static str, String)>;

/// One family at a time, every sample with its labels.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    /// A counter family; its samples are `name_total`.
    fn counter(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, u64)>,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, v) in samples {
            labelled(&mut m, &labels, |m| {
                m.encode_counter::<NoLabelSet, u64, u64>(&v, None)
            })?;
        }
        Ok(())
    }

    /// An unlabelled counter of a fractional value (seconds).
    fn counter_f64(&mut self, name: &str, help: &str, v: f64) -> fmt::Result {
        self.0
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, f64, f64>(&v, None)
    }

    fn gauge<V: EncodeGaugeValue>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, V)>,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, v) in samples {
            labelled(&mut m, &labels, |m| m.encode_gauge(&v))?;
        }
        Ok(())
    }

    /// A histogram family at the delay histogram's own bucket bounds,
    /// powers of two of microseconds up to 2^26 µs (67 s; its last bucket
    /// also holds longer delays).
    fn histogram(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, Delays)>,
    ) -> fmt::Result {
        let mut m = self
            .0
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, d) in samples {
            // The encoder takes each bucket's own count and accumulates.
            let mut below = 0;
            let mut buckets: Vec<(f64, u64)> = (0..=26)
                .map(|k| {
                    let cumulative = d.below_pow2(k);
                    let own = cumulative - below;
                    below = cumulative;
                    ((1u64 << k) as f64 / 1e6, own)
                })
                .collect();
            buckets.push((f64::MAX, d.count() - below));
            labelled(&mut m, &labels, |m| {
                m.encode_histogram::<NoLabelSet>(d.sum_us as f64 / 1e6, d.count(), &buckets, None)
            })?;
        }
        Ok(())
    }
}

/// Encode one sample with `labels` (none: the family's bare name).
fn labelled(
    m: &mut MetricEncoder<'_>,
    labels: &Labels,
    encode: impl FnOnce(&mut MetricEncoder<'_>) -> fmt::Result,
) -> fmt::Result {
    if labels.is_empty() {
        encode(m)
    } else {
        encode(&mut m.encode_family(labels)?)
    }
}

/// A VIP's labels: the whole key and its parts.
fn vip_labels(k: &VipKey) -> Labels {
    vec![
        ("vip", k.to_string()),
        ("address", k.addr.to_string()),
        ("port", k.port.to_string()),
        ("protocol", k.proto.to_string()),
    ]
}

/// The Prometheus family of a worker counter: `lb_worker_<name>`, a counter
/// (its samples `lb_worker_<name>_total`) or, for a level, a gauge.
pub fn worker_family(info: &CounterInfo) -> (String, MetricType) {
    let kind = match info.kind {
        Kind::Total => MetricType::Counter,
        Kind::Level => MetricType::Gauge,
    };
    (format!("lb_worker_{}", info.name), kind)
}

fn workers(out: &mut Out<'_>, source: &Source) -> fmt::Result {
    let workers: Vec<(String, lb_core::stats::Counters)> = source
        .lcores
        .iter()
        .zip(source.stats.iter())
        .map(|(l, s)| (l.to_string(), s.read()))
        .collect();
    let worker = |w: &String| vec![("worker", w.clone())];
    for (i, info) in COUNTERS.iter().enumerate() {
        let (name, kind) = worker_family(info);
        let samples = workers.iter().map(|(w, c)| (worker(w), c.values()[i]));
        match kind {
            MetricType::Counter => out.counter(&name, info.help, samples)?,
            _ => out.gauge(&name, info.help, samples)?,
        }
    }
    out.counter(
        "lb_worker_drops",
        "Packets dropped, by reason.",
        workers.iter().flat_map(|(w, c)| {
            DropReason::ALL.iter().map(move |&r| {
                (
                    vec![("worker", w.clone()), ("reason", r.as_str().to_string())],
                    c.drop_count(r),
                )
            })
        }),
    )?;
    out.histogram(
        "lb_worker_snapshot_adoption_seconds",
        "From a snapshot's publication to the worker's first burst on it.",
        source
            .lcores
            .iter()
            .zip(source.stats.iter())
            .map(|(l, s)| (vec![("worker", l.to_string())], s.snapshot_adoption.read())),
    )?;
    out.histogram(
        "lb_snapshot_all_workers_seconds",
        "From a snapshot's publication until every worker had it.",
        [(vec![], WorkerStats::all_workers(&source.stats))],
    )
}

struct BackendRow {
    labels: Labels,
    traffic: BackendTotals,
    active_flows: u64,
    up: bool,
    drained: bool,
    weight: u32,
    effective_weight: u32,
    agent_percent: Option<u8>,
    capped: bool,
    healthy: Option<bool>,
    /// The last check of each path: ("real" | "vip", ok).
    paths: Vec<(&'static str, bool)>,
    /// How its packets reach it (dr, ipip, gue, vxlan) and through which
    /// neighbour (itself, or its route's gateway).
    forward: String,
    next_hop: String,
}

fn vips_and_backends(out: &mut Out<'_>, source: &Source, control: &Control) -> fmt::Result {
    let snap = control.snapshot();
    let mut rows = Vec::new();
    for v in snap.vips() {
        for &slot in &v.backends {
            let Some(b) = snap.backend(slot) else {
                continue;
            };
            let health = control.health(&v.key, &b.addr);
            let configured = control
                .state()
                .vips()
                .get(&v.key)
                .and_then(|d| d.backends.get(&b.addr))
                .map(|d| &d.settings);
            let mut labels = vip_labels(&v.key);
            labels.push(("backend", b.addr.to_string()));
            rows.push(BackendRow {
                labels,
                traffic: control.traffic().backend(slot, &source.stats),
                active_flows: WorkerStats::backend_active_flows(&source.stats, slot, b.incarnation),
                up: b.state == BackendState::Up && b.mac.is_some(),
                // Drained by the operator (not by an agent or a cap).
                drained: configured.is_some_and(|d| d.drain && !d.down),
                // The snapshot's weight is the one in force (scaled by the
                // agent); the configured one is the state's.
                weight: configured.map_or(b.weight, |d| d.weight),
                effective_weight: if b.state == BackendState::Up && b.mac.is_some() {
                    b.weight
                } else {
                    0
                },
                agent_percent: control.feedback(&v.key, &b.addr).map(|f| f.percent),
                capped: control.capped(&v.key, &b.addr),
                healthy: health.map(|h| h.healthy),
                paths: health
                    .map(|h| {
                        [("real", &h.real), ("vip", &h.vip_path)]
                            .into_iter()
                            .filter_map(|(p, r)| r.as_ref().map(|r| (p, r.ok)))
                            .collect()
                    })
                    .unwrap_or_default(),
                forward: configured.map_or("dr".into(), |d| d.forward.to_string()),
                next_hop: configured
                    .map_or(b.addr, |d| control.state().next_hop(&b.addr, d).0)
                    .to_string(),
            });
        }
    }
    // Over every backend a VIP ever had (crate::traffic): never less
    // after a removal.
    let vips: Vec<(Labels, BackendTotals)> = snap
        .vips()
        .iter()
        .map(|v| {
            (
                vip_labels(&v.key),
                control.traffic().vip(&v.key, &source.stats),
            )
        })
        .collect();
    type Get = fn(&BackendTotals) -> u64;
    let traffic: [(&str, &str, Get); 3] = [
        ("packets", "Packets forwarded", |t| t.packets),
        ("bytes", "Bytes forwarded", |t| t.bytes),
        ("new_flows", "New flows", |t| t.new_flows),
    ];
    for (what, help, get) in traffic {
        out.counter(
            &format!("lb_vip_{what}"),
            &format!("{help} for a VIP (over every backend it had)."),
            vips.iter().map(|(l, t)| (l.clone(), get(t))),
        )?;
    }
    for (what, help, get) in traffic {
        out.counter(
            &format!("lb_backend_{what}"),
            &format!("{help} to a backend (from zero when it was added)."),
            rows.iter().map(|r| (r.labels.clone(), get(&r.traffic))),
        )?;
    }
    {
        let mut m = out.0.encode_descriptor(
            "lb_backend",
            "How the backend's packets reach it (the labels): forward dr (its MAC), ipip, gue or \
             vxlan (a tunnel), through next_hop (itself, or the gateway of its route).",
            None,
            MetricType::Info,
        )?;
        for r in &rows {
            let mut l = r.labels.clone();
            l.push(("forward", r.forward.clone()));
            l.push(("next_hop", r.next_hop.clone()));
            m.encode_info(&l)?;
        }
    }
    out.gauge(
        "lb_backend_active_flows",
        "Flows pinned to the backend in the workers' flow tables (idle ones until they expire).",
        rows.iter().map(|r| (r.labels.clone(), r.active_flows)),
    )?;
    out.gauge(
        "lb_backend_up",
        "1 when the backend takes new flows (up and reachable), else 0.",
        rows.iter().map(|r| (r.labels.clone(), u64::from(r.up))),
    )?;
    out.gauge(
        "lb_backend_drained",
        "1 while the backend is drained (keeps its flows, takes no new ones, on purpose), else 0.",
        rows.iter()
            .map(|r| (r.labels.clone(), u64::from(r.drained))),
    )?;
    out.gauge(
        "lb_backend_weight",
        "The backend's configured weight (its share of new flows relative to its VIP's others).",
        rows.iter().map(|r| (r.labels.clone(), u64::from(r.weight))),
    )?;
    out.gauge(
        "lb_backend_effective_weight",
        "The weight new flows follow now: the configured weight scaled by the agent's percentage while the backend takes new flows, else 0.",
        rows.iter()
            .map(|r| (r.labels.clone(), u64::from(r.effective_weight))),
    )?;
    out.gauge(
        "lb_backend_agent_percent",
        "The load-feedback agent's percentage in force (backends with an agent only; 100 while it says none or is silent).",
        rows.iter()
            .filter_map(|r| r.agent_percent.map(|p| (r.labels.clone(), u64::from(p)))),
    )?;
    out.gauge(
        "lb_backend_capped",
        "1 while the backend is over its cap of active flows (max_flows) and takes no new ones, else 0.",
        rows.iter().map(|r| (r.labels.clone(), u64::from(r.capped))),
    )?;
    out.gauge(
        "lb_backend_healthy",
        "Health check verdict: 1 healthy, 0 failing (absent when unchecked).",
        rows.iter()
            .filter_map(|r| r.healthy.map(|h| (r.labels.clone(), u64::from(h)))),
    )?;
    out.gauge(
        "lb_backend_check_ok",
        "The last health check along each path: 1 passed, 0 failed. path=\"real\": to the backend's \
         own address; path=\"vip\": along the DR path, to VIP:port at the backend's MAC (checks via \
         the VIP only). Real 1 and vip 0: the server is up, the VIP path is broken.",
        rows.iter().flat_map(|r| {
            r.paths.iter().map(|&(path, ok)| {
                let mut l = r.labels.clone();
                l.push(("path", path.to_string()));
                (l, u64::from(ok))
            })
        }),
    )
}

fn control_plane(out: &mut Out<'_>, control: &Control) -> fmt::Result {
    let mut m = out.0.encode_descriptor(
        "lb_build",
        "Which build of lbd this is (the labels).",
        None,
        MetricType::Info,
    )?;
    m.encode_info(&[
        ("version", env!("CARGO_PKG_VERSION")),
        ("revision", lb_proto::GIT_REVISION),
    ])?;
    out.gauge(
        "lb_snapshot_generation",
        "Generation of the forwarding snapshot published to workers.",
        [(vec![], control.generation())],
    )?;
    out.gauge(
        "lb_vips",
        "Configured VIPs.",
        [(vec![], control.state().vips().len() as u64)],
    )?;
    out.gauge(
        "lb_workers_stalled",
        "Workers whose heartbeat stopped for over a second (a stuck worker: /healthz fails, the routes are withdrawn).",
        [(vec![], control.stalled_workers() as u64)],
    )?;
    out.counter(
        "lb_vip_conflicts",
        "ARP/ND claims on a VIP address from another MAC, by VIP address and MAC.",
        control
            .vip_conflicts()
            .into_iter()
            .map(|c| (vec![("address", c.vip), ("mac", c.mac)], c.count)),
    )?;
    if control.announcing() {
        let announced = control.announced();
        let addrs: std::collections::BTreeSet<_> =
            control.state().vips().keys().map(|k| k.addr).collect();
        out.gauge(
            "lb_route_announced",
            "1 while the VIP address is announced to the routers (--bgp-routes), else 0.",
            addrs.into_iter().map(|a| {
                (
                    vec![("address", a.to_string())],
                    u64::from(announced.contains(&a)),
                )
            }),
        )?;
    }
    Ok(())
}

/// The port's own counters (the device's, not the workers'): what it
/// missed for want of room (`imissed`: the workers did not keep up), its
/// receive errors and mbuf shortages, and its link.
fn port(out: &mut Out<'_>, name: &str, reader: &dataplane::dpdk::PortReader) -> fmt::Result {
    let labels = || vec![("port", name.to_string())];
    if let Ok(s) = reader.stats() {
        let counters: [(&str, &str, u64); 8] = [
            ("lb_port_rx_packets", "Packets the port received.", s.rx_packets),
            ("lb_port_tx_packets", "Packets the port sent.", s.tx_packets),
            ("lb_port_rx_bytes", "Bytes the port received.", s.rx_bytes),
            ("lb_port_tx_bytes", "Bytes the port sent.", s.tx_bytes),
            (
                "lb_port_rx_missed",
                "Packets the port dropped because its receive queues were full (imissed): the workers did not keep up.",
                s.rx_missed,
            ),
            ("lb_port_rx_errors", "Erroneous packets the port received (ierrors).", s.rx_errors),
            ("lb_port_tx_errors", "Packets the port failed to send (oerrors).", s.tx_errors),
            (
                "lb_port_rx_nombuf",
                "Receive failures for want of an mbuf (rx_nombuf): the pool is too small (--mbufs).",
                s.rx_nombuf,
            ),
        ];
        for (family, help, v) in counters {
            out.counter(family, help, [(labels(), v)])?;
        }
    }
    if let Ok(link) = reader.link() {
        out.gauge(
            "lb_port_link_up",
            "1 when the port's link is up.",
            [(labels(), u64::from(link.up))],
        )?;
        out.gauge(
            "lb_port_link_speed_bits_per_second",
            "The port's link speed (0 when unknown).",
            [(labels(), u64::from(link.speed_mbps) * 1_000_000)],
        )?;
    }
    Ok(())
}

/// The process's own metrics, under the names every Prometheus client
/// library uses (`process_*`), from /proc.
fn process(out: &mut Out<'_>) -> fmt::Result {
    let Ok(me) = procfs::process::Process::myself() else {
        return Ok(());
    };
    if let Ok(stat) = me.stat() {
        let ticks = procfs::ticks_per_second() as f64;
        out.counter_f64(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds.",
            (stat.utime + stat.stime) as f64 / ticks,
        )?;
        if let Ok(boot) = procfs::boot_time_secs() {
            out.gauge(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch, in seconds.",
                [(vec![], boot as f64 + stat.starttime as f64 / ticks)],
            )?;
        }
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes (hugepages mapped by DPDK included).",
            [(vec![], stat.vsize)],
        )?;
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            [(vec![], stat.rss * procfs::page_size())],
        )?;
        out.gauge(
            "process_threads",
            "Threads of the process (workers, the control side's, DPDK's).",
            [(vec![], stat.num_threads)],
        )?;
    }
    if let Ok(n) = me.fd_count() {
        out.gauge(
            "process_open_fds",
            "Open file descriptors.",
            [(vec![], n as u64)],
        )?;
    }
    if let Ok(limits) = me.limits() {
        if let procfs::process::LimitValue::Value(max) = limits.max_open_files.soft_limit {
            out.gauge(
                "process_max_fds",
                "The most open file descriptors allowed.",
                [(vec![], max)],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DesiredState;
    use lb_core::packet::MacAddr;
    use lb_testkit::exposition::value;

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
        let types = lb_testkit::exposition::types(&text);
        for (w, (lcore, s)) in [1, 2].iter().zip(stats.iter()).enumerate() {
            let values = s.read().values();
            for (info, v) in COUNTERS.iter().zip(values) {
                let (family, kind) = worker_family(info);
                let (sample, kind) = match kind {
                    MetricType::Counter => (format!("{family}_total"), "counter"),
                    _ => (family.clone(), "gauge"),
                };
                assert!(
                    types.contains(&(family.clone(), kind.into())),
                    "{family} {kind}"
                );
                assert_eq!(
                    value(&text, &format!("{sample}{{worker=\"{lcore}\"}}")),
                    Some(v as f64),
                    "{sample} of worker {w}"
                );
            }
            for r in DropReason::ALL {
                let v = s.read().drop_count(r);
                let selector = format!(
                    "lb_worker_drops_total{{worker=\"{lcore}\",reason=\"{}\"}}",
                    r.as_str()
                );
                assert_eq!(value(&text, &selector), Some(v as f64), "{selector}");
            }
        }
        assert!(text.contains("lb_worker_rx_packets_total{worker=\"2\"} 11\n"));
        assert!(text.contains("# TYPE lb_worker_active_flows gauge\n"));
        assert!(text.contains("lb_worker_neigh_learned_total{worker=\"1\"} 20\n"));
        assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
        // The process's own: its threads are at least this one.
        assert!(
            value(&text, "process_threads").is_some_and(|n| n >= 1.0),
            "{text}"
        );
        assert!(
            value(&text, "process_cpu_seconds_total").is_some(),
            "{text}"
        );
    }
}
