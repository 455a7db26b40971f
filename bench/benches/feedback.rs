//! The control side's cost of load feedback: 1,000 backends whose agents
//! report every second, each report a new load (the worst case: every
//! answer a whole step from the last). One iteration is one second of it:
//! 1,000 answers taken in (`Control::set_feedback`) and one evaluation
//! (`Control::flush_feedback`, the clock a second on), which rebuilds the
//! tables of the VIPs whose feedback is due (each at most every 2 s) in one
//! snapshot. The time per iteration over one second is the share of a core
//! it takes. Two farms: 10 VIPs of 100 backends (tables of 65537), and one
//! VIP of 1,000 (655373). Polling the agents (a TCP connection each) is
//! the other part: `poll` against an agent on loopback, per poll.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use control::feedback::{self, Report};
use control::hub::Control;
use control::state::{AgentCheck, AgentKind, BackendSettings, DesiredState, LoadSettings};
use criterion::{criterion_group, criterion_main, Criterion};
use lb_core::packet::MacAddr;
use lb_core::snapshot::{Proto, VipKey};

fn farm(vips: u16, per_vip: u16, table_size: u32) -> (Control, Vec<(VipKey, IpAddr)>) {
    let mut s = DesiredState::default();
    let mut backends = Vec::new();
    for v in 0..vips {
        let key = VipKey {
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1 + v as u8)),
            port: 443,
            proto: Proto::Tcp,
        };
        s.create_vip(key, Some(table_size)).unwrap();
        for b in 0..per_vip {
            let addr = IpAddr::V4(Ipv4Addr::new(10, v as u8, (b >> 8) as u8, b as u8 + 1));
            let settings = BackendSettings {
                weight: 100,
                mac: Some(MacAddr([2, 0, v as u8, (b >> 8) as u8, b as u8, 1])),
                load: LoadSettings {
                    agent: Some(AgentCheck::new(AgentKind::Tcp)),
                    ..LoadSettings::default()
                },
                ..BackendSettings::default()
            };
            s.add_backend(&key, addr, settings).unwrap();
            backends.push((key, addr));
        }
    }
    let c = Control::new(s, MacAddr([2, 0, 0, 0, 0, 1]), || 0).unwrap();
    (c, backends)
}

fn one_second_of_reports(c: &mut Criterion) {
    let mut g = c.benchmark_group("feedback");
    g.sample_size(20);
    for (name, vips, per_vip, table) in [
        (
            "1000 backends reporting, 10 VIPs of 100 (M = 65537), one second",
            10,
            100,
            65537,
        ),
        (
            "1000 backends reporting, 1 VIP of 1000 (M = 655373), one second",
            1,
            1000,
            655_373,
        ),
    ] {
        let (mut control, backends) = farm(vips, per_vip, table);
        let mut now = Instant::now();
        let mut tick = 0u32;
        g.bench_function(name, |b| {
            b.iter(|| {
                tick += 1;
                for (i, (vip, addr)) in backends.iter().enumerate() {
                    // 40..=95%, a different step each second.
                    let p = 40 + ((i as u32 + tick) % 12) * 5;
                    control.set_feedback(
                        *vip,
                        *addr,
                        Ok(Report {
                            percent: Some(p as u8),
                            state: None,
                        }),
                    );
                }
                now += Duration::from_secs(1);
                control.flush_feedback(now)
            })
        });
    }
    g.finish();
}

fn polls(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let agent: SocketAddr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(b"ready 75%\n").await;
            }
        });
        addr
    });
    let mut g = c.benchmark_group("feedback");
    g.bench_function("one agent poll over TCP on loopback (both ends)", |b| {
        b.iter(|| {
            rt.block_on(feedback::poll(
                agent,
                &AgentKind::Tcp,
                Duration::from_secs(1),
            ))
            .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, one_second_of_reports, polls);
criterion_main!(benches);
