//! `lbctl diagnose`: one row per backend from what `lbd` already reports
//! (its VIPs, health, VIP conflicts and two stats samples), and for each
//! failure the likely cause and the fix, in an operator's words. Pure: the
//! caller fetches, this judges.

use lb_proto::v1 as pb;
use serde_json::{json, Value};

/// What was found about one backend.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub vip: String,
    pub address: String,
    /// The MAC in use; empty while unresolved.
    pub mac: String,
    /// Since when (Unix ms); 0 while unresolved.
    pub mac_since_ms: u64,
    pub state: &'static str,
    /// "none", or the check's kind and path ("http:/ via vip").
    pub check: String,
    pub health: &'static str,
    pub detail: String,
    /// The last check of each path: "ok", "failed", or "-" (not checked).
    pub real: &'static str,
    pub vip_path: &'static str,
    /// ARP/ND claims of this VIP seen from this backend's MAC.
    pub conflicts: u64,
    /// Over the sampling interval.
    pub packets: u64,
    pub new_flows: u64,
    /// Likely causes and fixes; empty when nothing is wrong.
    pub problems: Vec<String>,
}

/// A claim of a VIP by a MAC that is no backend's.
#[derive(Debug, Clone, PartialEq)]
pub struct Stranger {
    pub vip: String,
    pub mac: String,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub strangers: Vec<Stranger>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.rows.iter().map(|r| r.problems.len()).sum::<usize>() + self.strangers.len()
    }
}

const ARP_FIX: &str = "sysctl -w net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
                       (and in /etc/sysctl.d/ to keep it)";

fn backend_traffic(stats: &pb::Stats, vip: &Option<pb::VipKey>, addr: &str) -> (u64, u64) {
    stats
        .vips
        .iter()
        .filter(|v| v.key == *vip)
        .flat_map(|v| &v.backends)
        .find(|b| b.address == addr)
        .map_or((0, 0), |b| (b.packets, b.new_flows))
}

/// Judge every backend of `vips` (or only of `only`, a VIP's text form).
#[allow(clippy::too_many_lines)]
pub fn diagnose(
    vips: &[pb::Vip],
    health: &pb::HealthResponse,
    before: &pb::Stats,
    after: &pb::Stats,
    only: Option<&str>,
    vip_text: impl Fn(&Option<pb::VipKey>) -> String,
) -> Report {
    let mut report = Report::default();
    for v in vips {
        let name = vip_text(&v.key);
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let vip_addr = v.key.as_ref().map_or("", |k| k.address.as_str());
        let port = v.key.as_ref().map_or(0, |k| k.port);
        for b in &v.backends {
            let h = health
                .backends
                .iter()
                .find(|h| h.vip == v.key && h.address == b.address);
            let (p1, n1) = backend_traffic(before, &v.key, &b.address);
            let (p2, n2) = backend_traffic(after, &v.key, &b.address);
            let behind_gateway = !b.next_hop.is_empty() && b.next_hop != b.address;
            let conflicts: u64 = health
                .conflicts
                .iter()
                .filter(|c| {
                    // A gateway's MAC is many backends': a claim from it is
                    // none of theirs.
                    c.vip == vip_addr
                        && (c.backend == b.address
                            || (!b.effective_mac.is_empty()
                                && !behind_gateway
                                && c.mac == b.effective_mac))
                })
                .map(|c| c.count)
                .sum();
            // The path taken as the checker resolved it (auto: vip when
            // lbd has an exception interface); the configured one before.
            let via_vip = match h {
                Some(h) if !h.via.is_empty() => h.via == "vip",
                _ => b.check.as_ref().is_some_and(|c| c.via == "vip"),
            };
            let check = b.check.as_ref().map_or("none".to_string(), |c| {
                format!("{} via {}", c.kind, if via_vip { "vip" } else { "real" })
            });
            let path = |p: Option<&pb::PathResult>| match p {
                None => "-",
                Some(p) if p.ok => "ok",
                Some(_) => "failed",
            };
            let real = path(h.and_then(|h| h.real.as_ref()));
            let vip_path = path(h.and_then(|h| h.vip_path.as_ref()));
            let healthy = match pb::Health::try_from(b.health) {
                Ok(pb::Health::Healthy) => "healthy",
                Ok(pb::Health::Unhealthy) => "unhealthy",
                _ => "unchecked",
            };
            let state = match pb::BackendState::try_from(b.state) {
                Ok(pb::BackendState::Up) => "up",
                Ok(pb::BackendState::Draining) => "draining",
                Ok(pb::BackendState::Down) => "down",
                _ => "unknown",
            };
            let mut problems = Vec::new();
            if b.effective_mac.is_empty() && behind_gateway {
                problems.push(format!(
                    "{addr}'s next hop {hop} unresolved: the gateway of lbd's route to {addr} \
                     does not answer ARP/ND. Is {hop} up and on the balancer's segment (same VLAN \
                     and subnet), and is the route right (`lbctl info` lists the routes)? Until it \
                     answers, {addr} takes no traffic.",
                    addr = b.address,
                    hop = b.next_hop
                ));
            } else if b.effective_mac.is_empty() {
                problems.push(format!(
                    "{addr}'s MAC is unresolved: it does not answer the balancer's ARP/ND. Is it up, \
                     on the balancer's segment (same VLAN and subnet), and is {addr} its address? \
                     Until it answers it takes no traffic.",
                    addr = b.address
                ));
            }
            if healthy == "unhealthy" {
                let check_port = b.check.as_ref().map_or(0, |c| c.port);
                let check_port = if check_port == 0 { port } else { check_port };
                let detail = h.map_or("", |h| h.detail.as_str());
                let addr = &b.address;
                let vip = vip_addr;
                problems.push(match (via_vip, real) {
                    // A refusal comes from the backend's own stack: the packet
                    // reached it and it owns the VIP, but nothing listens there.
                    (true, "ok") if detail.contains("refused") => format!(
                        "{addr} answers on its own address but refuses the VIP ({detail}): its \
                         server listens on {addr} only. Make it listen on {vip}:{check_port} or \
                         0.0.0.0:{check_port} (`ss -ltnu` on the backend shows where it listens)."
                    ),
                    (true, "ok") => format!(
                        "{addr} answers on its own address but not on the VIP ({detail}). Is \
                         {vip}/32 on its lo (`ip addr add {vip}/32 dev lo`)? Does its server \
                         listen on {vip}:{check_port} or 0.0.0.0, not only on {addr}?"
                    ),
                    (true, "failed") => format!(
                        "{addr} fails its check on its own address and through the VIP \
                         ({detail}): is its server running and listening on port {check_port}, \
                         and does a firewall let lbd's host in?"
                    ),
                    (true, _) => format!(
                        "{addr} fails its check through the VIP ({detail}). Is {vip}/32 on its lo \
                         (`ip addr add {vip}/32 dev lo`)? Does its server listen on {vip}:{check_port} \
                         or 0.0.0.0, not only on {addr}? (`ss -ltnu` on the backend)"
                    ),
                    (false, _) => format!(
                        "{addr} fails its check on its own address ({detail}): is its server running \
                         and listening on port {check_port}, and does a firewall let lbd's host in?"
                    ),
                });
            }
            // Load feedback: what keeps it from new flows, or makes its
            // weight the configured one against its agent's wish.
            if let Some(a) = &b.agent_status {
                let agent_port = b.agent.as_ref().map_or(0, |a| a.port);
                if !a.answered && a.detail.contains("configured weight in force") {
                    problems.push(format!(
                        "{addr}'s load agent does not answer ({detail}): its configured weight is                          in force. Is the agent running and listening on port {agent_port}                          (`ss -ltn` on the backend), and does a firewall let lbd's host in?",
                        addr = b.address,
                        detail = a.detail,
                    ));
                } else if a.state == "maint" || a.state == "drain" || (a.answered && a.percent == 0)
                {
                    problems.push(format!(
                        "{addr}'s load agent keeps it from new flows ({detail}); it says `ready`                          (and a percentage above 0) to take them again.",
                        addr = b.address,
                        detail = a.detail,
                    ));
                }
            }
            if b.capped {
                problems.push(format!(
                    "{addr} is at its cap ({flows} active flows, max_flows {max}): no new flows                      until below {min}. Raise it (`lbctl backend set-load ... --max-flows`) or add                      backends.",
                    addr = b.address,
                    flows = b.active_flows,
                    max = b.max_flows,
                    min = b.min_flows,
                ));
            }
            if conflicts > 0 {
                problems.push(format!(
                    "{addr} ({mac}) answers ARP/ND for the VIP {vip}: it takes the VIP's traffic \
                     from the balancer. On {addr}: {ARP_FIX}",
                    addr = b.address,
                    mac = b.effective_mac,
                    vip = vip_addr,
                ));
            }
            report.rows.push(Row {
                vip: name.clone(),
                address: b.address.clone(),
                mac: b.effective_mac.clone(),
                mac_since_ms: b.mac_since_unix_ms,
                state,
                check,
                health: healthy,
                detail: h.map_or(String::new(), |h| h.detail.clone()),
                real,
                vip_path,
                conflicts,
                packets: p2.saturating_sub(p1),
                new_flows: n2.saturating_sub(n1),
                problems,
            });
        }
    }
    let backend_macs: Vec<(&str, &str)> = vips
        .iter()
        .flat_map(|v| {
            let a = v.key.as_ref().map_or("", |k| k.address.as_str());
            v.backends
                .iter()
                .filter(|b| b.next_hop.is_empty() || b.next_hop == b.address)
                .map(move |b| (a, b.effective_mac.as_str()))
        })
        .collect();
    for c in &health.conflicts {
        let known =
            !c.backend.is_empty() || backend_macs.iter().any(|&(a, m)| a == c.vip && m == c.mac);
        // The VIP's address exactly: "198.51.100.1" must not match "198.51.100.10:80/tcp".
        let shown = only.is_none_or(|o| {
            o.starts_with(&format!("{}:", c.vip)) || o.starts_with(&format!("[{}]:", c.vip))
        });
        if !known && shown {
            report.strangers.push(Stranger {
                vip: c.vip.clone(),
                mac: c.mac.clone(),
                count: c.count,
            });
        }
    }
    report
}

/// How long ago `since_ms` was, at `now_ms` (Unix ms): "3d4h", "5m12s", "40s".
pub fn age(since_ms: u64, now_ms: u64) -> String {
    let s = now_ms.saturating_sub(since_ms) / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

pub fn print_table(r: &Report, now_ms: u64) {
    println!(
        "{:<26} {:<16} {:<18} {:>9} {:<9} {:<16} {:<10} {:<6} {:<8} {:>9} {:>9} {:>9}",
        "VIP",
        "BACKEND",
        "MAC",
        "MAC SINCE",
        "STATE",
        "CHECK",
        "HEALTH",
        "REAL",
        "VIP PATH",
        "CONFLICTS",
        "PACKETS",
        "NEW FLOWS"
    );
    for row in &r.rows {
        let (mac, since) = if row.mac.is_empty() {
            ("(unresolved)", "-".to_string())
        } else {
            (row.mac.as_str(), age(row.mac_since_ms, now_ms))
        };
        println!(
            "{:<26} {:<16} {:<18} {:>9} {:<9} {:<16} {:<10} {:<6} {:<8} {:>9} {:>9} {:>9}",
            row.vip,
            row.address,
            mac,
            since,
            row.state,
            row.check,
            row.health,
            row.real,
            row.vip_path,
            row.conflicts,
            row.packets,
            row.new_flows
        );
    }
    for row in r.rows.iter().filter(|r| !r.problems.is_empty()) {
        println!();
        println!("{} {}:", row.vip, row.address);
        for p in &row.problems {
            println!("  - {p}");
        }
    }
    for s in &r.strangers {
        println!();
        println!(
            "{} is claimed by {} ({} ARP/ND messages), which is no backend: find that host \
             (`ip neigh` on the segment's router) and remove the VIP from it, or set {ARP_FIX}",
            s.vip, s.mac, s.count
        );
    }
    if r.problems() == 0 {
        println!();
        println!("no problem found");
    }
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "backends": r.rows.iter().map(|row| json!({
            "vip": row.vip, "address": row.address, "mac": row.mac,
            "mac_since_unix_ms": row.mac_since_ms, "state": row.state,
            "check": row.check, "health": row.health, "detail": row.detail,
            "real": row.real, "vip_path": row.vip_path,
            "conflicts": row.conflicts, "packets": row.packets, "new_flows": row.new_flows,
            "problems": row.problems,
        })).collect::<Vec<_>>(),
        "claims_by_others": r.strangers.iter().map(|s| json!({"vip": s.vip, "mac": s.mac, "count": s.count})).collect::<Vec<_>>(),
        "problems": r.problems(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Option<pb::VipKey> {
        Some(pb::VipKey {
            address: "198.51.100.10".into(),
            port: 80,
            protocol: pb::Protocol::Tcp as i32,
        })
    }

    fn text(k: &Option<pb::VipKey>) -> String {
        k.as_ref()
            .map_or(String::new(), |k| format!("{}:{}/tcp", k.address, k.port))
    }

    fn backend(addr: &str, mac: &str, health: pb::Health, via: &str) -> pb::Backend {
        pb::Backend {
            address: addr.into(),
            weight: 1,
            effective_mac: mac.into(),
            state: pb::BackendState::Up as i32,
            check: Some(pb::HealthCheck {
                kind: "http:/".into(),
                via: via.into(),
                ..Default::default()
            }),
            health: health as i32,
            ..Default::default()
        }
    }

    fn stats(packets: u64) -> pb::Stats {
        pb::Stats {
            vips: vec![pb::VipStats {
                key: key(),
                backends: vec![pb::BackendStats {
                    address: "192.0.2.11".into(),
                    packets,
                    new_flows: packets / 10,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_healthy_farm_has_no_problem() {
        let vips = vec![pb::Vip {
            key: key(),
            backends: vec![backend(
                "192.0.2.11",
                "02:00:00:00:00:11",
                pb::Health::Healthy,
                "vip",
            )],
            ..Default::default()
        }];
        let r = diagnose(
            &vips,
            &pb::HealthResponse::default(),
            &stats(100),
            &stats(250),
            None,
            text,
        );
        assert_eq!(r.problems(), 0, "{r:?}");
        assert_eq!(
            (r.rows[0].packets, r.rows[0].new_flows),
            (150, 15),
            "the interval's traffic"
        );
        assert_eq!(r.rows[0].check, "http:/ via vip");
    }

    #[test]
    fn a_backend_behind_an_unresolved_gateway_names_its_next_hop() {
        let mut behind = backend("10.20.0.11", "", pb::Health::Healthy, "vip");
        behind.forward = pb::ForwardMethod::Gue as i32;
        behind.next_hop = "192.0.2.254".into();
        let mut near = backend("192.0.2.21", "", pb::Health::Healthy, "vip");
        near.forward = pb::ForwardMethod::Ipip as i32;
        near.next_hop = "192.0.2.21".into();
        let mut fine = backend(
            "10.20.0.12",
            "02:00:00:00:00:fe",
            pb::Health::Healthy,
            "vip",
        );
        fine.forward = pb::ForwardMethod::Vxlan as i32;
        fine.next_hop = "192.0.2.254".into();
        let vips = vec![pb::Vip {
            key: key(),
            backends: vec![behind, near, fine],
            ..Default::default()
        }];
        // The gateway claims the VIP: none of its backends' doing.
        let health = pb::HealthResponse {
            conflicts: vec![pb::VipConflict {
                vip: "198.51.100.10".into(),
                mac: "02:00:00:00:00:fe".into(),
                count: 3,
                ..Default::default()
            }],
            ..Default::default()
        };
        let r = diagnose(&vips, &health, &stats(0), &stats(0), None, text);
        let p = &r.rows[0].problems;
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("next hop 192.0.2.254 unresolved"), "{p:?}");
        assert!(p[0].contains("takes no traffic"), "{p:?}");
        assert!(r.rows[1].problems[0].contains("192.0.2.21's MAC is unresolved"));
        assert!(r.rows[2].problems.is_empty(), "{:?}", r.rows[2].problems);
        assert_eq!(r.rows[2].conflicts, 0);
        assert_eq!(r.strangers.len(), 1, "the gateway's claim: a stranger's");
    }

    #[test]
    fn load_feedback_and_caps_name_their_cause() {
        let with = |addr: &str, f: fn(&mut pb::Backend)| {
            let mut b = backend(addr, "02:00:00:00:00:11", pb::Health::Healthy, "vip");
            b.agent = Some(pb::AgentCheck {
                kind: "tcp".into(),
                port: 10999,
                ..Default::default()
            });
            f(&mut b);
            b
        };
        let vips = vec![pb::Vip {
            key: key(),
            backends: vec![
                with("192.0.2.11", |b| {
                    b.agent_status = Some(pb::AgentStatus {
                        answered: false,
                        percent: 100,
                        state: "ready".into(),
                        detail: "no answer: connecting: refused (configured weight in force)"
                            .into(),
                        since_unix_ms: 0,
                    })
                }),
                with("192.0.2.12", |b| {
                    b.agent_status = Some(pb::AgentStatus {
                        answered: true,
                        percent: 100,
                        state: "drain".into(),
                        detail: "drain (in force: 100% drain)".into(),
                        since_unix_ms: 0,
                    })
                }),
                with("192.0.2.13", |b| {
                    b.agent = None;
                    (b.capped, b.active_flows, b.max_flows, b.min_flows) = (true, 120, 100, 90);
                }),
                with("192.0.2.14", |b| {
                    b.agent_status = Some(pb::AgentStatus {
                        answered: true,
                        percent: 50,
                        state: "ready".into(),
                        detail: "50% (in force: 50% ready)".into(),
                        since_unix_ms: 0,
                    })
                }),
            ],
            ..Default::default()
        }];
        let r = diagnose(
            &vips,
            &pb::HealthResponse::default(),
            &stats(0),
            &stats(0),
            None,
            text,
        );
        let problems: Vec<&Vec<String>> = r.rows.iter().map(|row| &row.problems).collect();
        assert!(
            problems[0][0].contains("does not answer") && problems[0][0].contains("port 10999"),
            "{problems:?}"
        );
        assert!(
            problems[1][0].contains("keeps it from new flows"),
            "{problems:?}"
        );
        assert!(
            problems[2][0].contains("at its cap (120 active flows, max_flows 100)"),
            "{problems:?}"
        );
        assert!(
            problems[3].is_empty(),
            "a loaded backend taking flows is fine: {problems:?}"
        );
    }

    #[test]
    fn each_failure_names_its_cause_and_fix() {
        let vips = vec![pb::Vip {
            key: key(),
            backends: vec![
                backend(
                    "192.0.2.11",
                    "02:00:00:00:00:11",
                    pb::Health::Unhealthy,
                    "vip",
                ),
                backend("192.0.2.12", "", pb::Health::Unspecified, "real"),
                backend(
                    "192.0.2.13",
                    "02:00:00:00:00:13",
                    pb::Health::Unhealthy,
                    "real",
                ),
                backend(
                    "192.0.2.14",
                    "02:00:00:00:00:14",
                    pb::Health::Healthy,
                    "real",
                ),
                // "auto" in the configuration, "vip" as the checker resolved it.
                backend("192.0.2.15", "02:00:00:00:00:15", pb::Health::Unhealthy, ""),
            ],
            ..Default::default()
        }];
        let path = |ok: bool, detail: &str| {
            Some(pb::PathResult {
                ok,
                detail: detail.into(),
            })
        };
        let health = pb::HealthResponse {
            backends: vec![
                pb::BackendHealth {
                    vip: key(),
                    address: "192.0.2.11".into(),
                    detail: "http:/ via vip failed: no answer within 500 ms".into(),
                    via: "vip".into(),
                    real: path(true, "http:/ ok"),
                    vip_path: path(false, "http:/ via vip failed: no answer within 500 ms"),
                    ..Default::default()
                },
                pb::BackendHealth {
                    vip: key(),
                    address: "192.0.2.15".into(),
                    detail: "http:/ via vip failed: connection refused".into(),
                    via: "vip".into(),
                    real: path(true, "http:/ ok"),
                    vip_path: path(false, "http:/ via vip failed: connection refused"),
                    ..Default::default()
                },
            ],
            conflicts: vec![
                pb::VipConflict {
                    vip: "198.51.100.10".into(),
                    mac: "02:00:00:00:00:14".into(),
                    count: 3,
                    backend: "192.0.2.14".into(),
                    last_seen_ms: 1,
                },
                pb::VipConflict {
                    vip: "198.51.100.10".into(),
                    mac: "02:00:00:00:00:66".into(),
                    count: 1,
                    ..Default::default()
                },
            ],
        };
        let r = diagnose(&vips, &health, &stats(0), &stats(0), None, text);
        let p = |i: usize| r.rows[i].problems.join(" | ");
        assert!(
            p(0).contains("answers on its own address but not on the VIP")
                && p(0).contains("Is 198.51.100.10/32 on its lo")
                && p(0).contains("no answer within 500 ms"),
            "{}",
            p(0)
        );
        assert_eq!((r.rows[0].real, r.rows[0].vip_path), ("ok", "failed"));
        assert!(p(0).contains("not only on 192.0.2.11"), "{}", p(0));
        assert!(
            p(4).contains("refuses the VIP") && p(4).contains("listens on 192.0.2.15 only"),
            "{}",
            p(4)
        );
        assert_eq!(r.rows[4].check, "http:/ via vip");
        assert!(p(1).contains("MAC is unresolved"), "{}", p(1));
        assert!(
            p(2).contains("fails its check on its own address"),
            "{}",
            p(2)
        );
        assert_eq!(r.rows[3].conflicts, 3);
        assert!(
            p(3).contains("answers ARP/ND for the VIP") && p(3).contains("arp_ignore=1"),
            "{}",
            p(3)
        );
        assert_eq!(r.strangers.len(), 1, "the claim by no backend's MAC");
        assert_eq!(r.strangers[0].mac, "02:00:00:00:00:66");
        assert_eq!(r.problems(), 6);
        let j = to_json(&r);
        assert_eq!(j["problems"], 6);
        assert_eq!(j["backends"][0]["real"], "ok");
        assert_eq!(j["backends"][0]["vip_path"], "failed");
        assert_eq!(j["backends"][3]["conflicts"], 3);
    }

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(age(1_000, 41_000), "40s");
        assert_eq!(age(0, 312_000), "5m12s");
        assert_eq!(age(0, 3_600_000 * 5 + 60_000 * 7), "5h7m");
        assert_eq!(age(0, 86_400_000 * 3 + 3_600_000 * 4), "3d4h");
        assert_eq!(age(5_000, 1_000), "0s", "a clock behind is no age");
    }

    #[test]
    fn one_vip_only() {
        let mut other = key();
        if let Some(k) = other.as_mut() {
            k.port = 443;
        }
        let vips = vec![
            pb::Vip {
                key: key(),
                backends: vec![backend("192.0.2.11", "", pb::Health::Unspecified, "real")],
                ..Default::default()
            },
            pb::Vip {
                key: other,
                backends: vec![backend(
                    "192.0.2.11",
                    "02:00:00:00:00:11",
                    pb::Health::Healthy,
                    "real",
                )],
                ..Default::default()
            },
        ];
        let r = diagnose(
            &vips,
            &pb::HealthResponse::default(),
            &stats(0),
            &stats(0),
            Some("198.51.100.10:443/tcp"),
            text,
        );
        assert_eq!(r.rows.len(), 1);
        assert_eq!(
            r.problems(),
            0,
            "the unresolved backend is on the other VIP"
        );
        // A claim of 198.51.100.1 is not one of 198.51.100.10.
        let claims = pb::HealthResponse {
            conflicts: vec![pb::VipConflict {
                vip: "198.51.100.1".into(),
                mac: "02:00:00:00:00:66".into(),
                count: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let only = Some("198.51.100.10:443/tcp");
        assert!(diagnose(&vips, &claims, &stats(0), &stats(0), only, text)
            .strangers
            .is_empty());
        assert_eq!(
            diagnose(&vips, &claims, &stats(0), &stats(0), None, text)
                .strangers
                .len(),
            1
        );
    }
}
