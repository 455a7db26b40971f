//! Micro-benchmarks of the forwarding path (criterion): Maglev table builds,
//! flow-table lookups and inserts, and the per-packet decision with rewrite
//! at 1M active flows and 100 backends, the way the worker runs it (bursts
//! of 32, each flow's two candidate entries prefetched) and one packet at a
//! time, for established flows and for new ones.
//!
//! `cargo bench -p lb-bench` (all), or e.g. `cargo bench -p lb-bench -- decide`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lb_bench::{
    burst, client, datagram, established, frame, quic_datagram, snapshot, snapshot_quic,
    snapshot_via, ACK, BURST, PORT_MAC, SYN, VIP,
};
use lb_core::flow::{FlowConfig, FlowKey};
use lb_core::forward::{self, Action, Classified};
use lb_core::maglev::Maglev;
use lb_core::packet::ethernet::MacAddr;
use lb_core::snapshot::BackendRef;
use std::hint::black_box;
use std::time::Duration;

/// A fixed pseudo-random order (splitmix64), so runs compare.
/// The backend every flow-table benchmark pins its flows to.
const SLOT0: BackendRef = BackendRef {
    slot: 0,
    incarnation: 0,
};

fn shuffled(n: u32, seed: u64) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut s = seed;
    for i in (1..v.len()).rev() {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        v.swap(i, (z % (i as u64 + 1)) as usize);
    }
    v
}

fn maglev_build(c: &mut Criterion) {
    let mut g = c.benchmark_group("maglev_build");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    for size in [65_537u32, 655_373] {
        for n in [10u32, 100, 1000] {
            let keys: Vec<[u8; 16]> = (0..n)
                .map(|i| {
                    let mut k = [0u8; 16];
                    k[12..].copy_from_slice(&(0x0a00_0000 | i).to_be_bytes());
                    k
                })
                .collect();
            let backends: Vec<(&[u8], u32)> = keys.iter().map(|k| (&k[..], 1)).collect();
            g.bench_with_input(
                BenchmarkId::new(format!("M={size}"), format!("{n} backends")),
                &backends,
                |b, backends| b.iter(|| Maglev::new(size, black_box(backends)).unwrap()),
            );
        }
    }
    g.finish();
}

fn key(i: u32) -> (FlowKey, u64) {
    let (src, sport) = client(i);
    let k = FlowKey::v4(src.octets(), VIP.octets(), sport, 443, 6);
    let h = forward::flow_hash(&k);
    (k, h)
}

fn flow_table(c: &mut Criterion) {
    let mut g = c.benchmark_group("flow_table");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    for entries in [1usize << 20, 10 << 20] {
        let label = format!("{}M entries", entries >> 20);
        // Half full with established flows, looked up in random order.
        let active = (entries / 2) as u32;
        let mut t = dataplane::dpdk::flow_table(entries, FlowConfig::default());
        for i in 0..active {
            let (k, h) = key(i);
            t.insert(&k, h, 0, SLOT0, 0);
            t.lookup(&k, h, 0); // a second packet: confirmed
        }
        let order: Vec<(FlowKey, u64)> = shuffled(active, 1)
            .into_iter()
            .take(1 << 20)
            .map(key)
            .collect();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("lookup_hit", &label), |b| {
            b.iter(|| {
                let (k, h) = &order[i];
                i = (i + 1) % order.len();
                black_box(t.lookup(k, *h, 1).is_some())
            })
        });
        // New flows into the same table: it fills, then evicts the least
        // recently used unconfirmed entries.
        let mut next = active;
        g.bench_function(BenchmarkId::new("insert_new", &label), |b| {
            b.iter(|| {
                let (k, h) = key(next);
                next = next.wrapping_add(1);
                black_box(t.insert(&k, h, 0, SLOT0, 2))
            })
        });
    }
    g.finish();
}

/// The rewrite put the backend's MAC in each frame: make them arrive at our
/// port again, as fresh packets from the NIC would (6 bytes per packet).
fn arrive(frames: &mut [Vec<u8>]) {
    for f in frames {
        f[..6].copy_from_slice(&PORT_MAC.0);
    }
}

fn decide(c: &mut Criterion) {
    const FLOWS: u32 = 1 << 20;
    let snap = snapshot(100, 65_537);
    // Established flows never time out here: the new-flow case below moves
    // the clock on by hours.
    let config = FlowConfig {
        established_timeout: u32::MAX,
        ..FlowConfig::default()
    };
    let mut flows = established(&snap, 2 << 20, FLOWS, config);
    // Packets of random established flows, more than the caches hold
    // together with the table.
    let mut frames: Vec<Vec<u8>> = shuffled(FLOWS, 2)
        .into_iter()
        .take(1 << 18)
        .map(|i| frame(i, ACK))
        .collect();
    let mut g = c.benchmark_group("decide_rewrite");
    g.sample_size(30);
    g.throughput(Throughput::Elements(BURST as u64));
    let mut at = 0;
    g.bench_function("1M flows, 100 backends, burst of 32 with prefetch", |b| {
        b.iter(|| {
            let chunk = &mut frames[at..at + BURST];
            at = (at + BURST) % (1 << 18);
            let n = burst(chunk, &snap, &mut flows, 1, |e| {
                dataplane::dpdk::prefetch(e)
            });
            assert_eq!(n, BURST);
            arrive(chunk);
        })
    });
    g.bench_function("1M flows, 100 backends, one at a time", |b| {
        b.iter(|| {
            for f in &mut frames[at..at + BURST] {
                black_box(forward::decide(f, &snap, &mut flows, 1));
            }
            arrive(&mut frames[at..at + BURST]);
            at = (at + BURST) % (1 << 18);
        })
    });
    // The decision's own cost: 32 flows, table and packets in L1/L2.
    let mut hot: Vec<Vec<u8>> = frames[..BURST].to_vec();
    g.bench_function("32 flows in cache", |b| {
        b.iter(|| {
            let n = burst(&mut hot, &snap, &mut flows, 1, |e| {
                dataplane::dpdk::prefetch(e)
            });
            arrive(&mut hot);
            n
        })
    });
    // New flows: first packets (TCP SYNs, then UDP datagrams) of flows the
    // table has not seen, into the same table (1M established flows, room
    // for 1M more), decided in bursts as above.
    // Each pass over the frames gives them other source addresses and
    // moves the clock past the SYN timeout, so every packet is a new flow
    // and the previous pass's entries have expired: the steady state of a
    // stream of new flows, where each takes the slot of one that ended.
    // Setting up 1M flows at half the capacity leaves a few without a
    // slot (their buckets full); what is asserted is that new flows find one.
    let rejected_before = flows.stats().rejected;
    let mut pass = 0u32;
    let mut now = 1u32;
    let mut new_flows = |name: &str, frames: &mut [Vec<u8>]| {
        g.bench_function(name, |b| {
            b.iter(|| {
                if at == 0 {
                    pass += 1;
                    now += config.new_timeout + 1;
                }
                let chunk = &mut frames[at..at + BURST];
                at = (at + BURST) % (1 << 18);
                // The source address's first octet: 101..=200, never an
                // established flow's (100).
                let octet = 101 + (pass % 100) as u8;
                for f in chunk.iter_mut() {
                    f[..6].copy_from_slice(&PORT_MAC.0);
                    f[SRC_OCTET] = octet;
                }
                let n = burst(chunk, &snap, &mut flows, now, |e| {
                    dataplane::dpdk::prefetch(e)
                });
                assert_eq!(n, BURST);
            })
        });
    };
    let mut syns: Vec<Vec<u8>> = (FLOWS..FLOWS + (1 << 18)).map(|i| frame(i, SYN)).collect();
    new_flows(
        "1M flows, 100 backends, new flows (SYN), burst of 32 with prefetch",
        &mut syns,
    );
    // UDP (QUIC, SRT): nothing tells a new flow's first datagram, so only
    // its two candidate entries are prefetched.
    let mut datagrams: Vec<Vec<u8>> = (FLOWS..FLOWS + (1 << 18)).map(datagram).collect();
    new_flows(
        "1M flows, 100 backends, new UDP flows, burst of 32 with prefetch",
        &mut datagrams,
    );
    let s = flows.stats();
    assert_eq!(s.rejected, rejected_before, "new flows found room: {s:?}");
    g.finish();
}

/// Room before each frame, as DPDK's RTE_PKTMBUF_HEADROOM leaves.
const HEADROOM: usize = 128;

/// The worker's path for tunnelled backends beside DR's, at 1M flows and
/// 100 backends, in bursts of 32: classify, prefetch, decide, then
/// `forward::egress` (which encapsulates for a tunnelled backend and does
/// nothing for DR). Each frame is first copied back into its buffer after
/// the headroom (a fresh packet from the NIC), the same 60 bytes for every
/// method, so the difference between two lines is what the method costs.
fn encapsulate(c: &mut Criterion) {
    use lb_core::frame::Frame;
    use lb_core::tunnel::{Encap, DEFAULT_GUE_PORT, DEFAULT_VXLAN_PORT};
    const FLOWS: u32 = 1 << 20;
    const FRAMES: usize = 1 << 18;
    let config = FlowConfig {
        established_timeout: u32::MAX,
        ..FlowConfig::default()
    };
    let vxlan = Encap::Vxlan {
        port: DEFAULT_VXLAN_PORT,
        vni: 100,
        inner_mac: MacAddr([2, 0, 0, 0, 5, 1]),
    };
    let methods = [
        ("dr", None, false),
        ("ipip", Some(Encap::Ipip), false),
        (
            "gue",
            Some(Encap::Gue {
                port: DEFAULT_GUE_PORT,
            }),
            false,
        ),
        ("vxlan", Some(vxlan), false),
        ("ipip over IPv6", Some(Encap::Ipip), true),
        (
            "gue over IPv6 (UDP checksum)",
            Some(Encap::Gue {
                port: DEFAULT_GUE_PORT,
            }),
            true,
        ),
        ("vxlan over IPv6 (UDP checksum)", Some(vxlan), true),
    ];
    let originals: Vec<Vec<u8>> = shuffled(FLOWS, 3)
        .into_iter()
        .take(FRAMES)
        .map(|i| frame(i, ACK))
        .collect();
    let len = originals[0].len();
    let mut bufs: Vec<Vec<u8>> = vec![vec![0u8; HEADROOM + len]; FRAMES];
    // One table per backend family: the IPv4 ones share their Maglev tables.
    let mut v4 = established(&snapshot(100, 65_537), 2 << 20, FLOWS, config);
    let mut v6 = established(
        &snapshot_via(100, 65_537, None, true),
        2 << 20,
        FLOWS,
        config,
    );
    let mut g = c.benchmark_group("encapsulate");
    g.sample_size(30);
    g.throughput(Throughput::Elements(BURST as u64));
    let mut at = 0;
    // Over the 1M flows (cache misses dominate), and over the same 32 flows
    // (in cache: what encapsulation itself costs).
    for (span, what) in [(FRAMES, "1M flows"), (BURST, "32 flows in cache")] {
        for (name, encap, over_v6) in methods {
            let snap = snapshot_via(100, 65_537, encap, over_v6);
            let flows = if over_v6 { &mut v6 } else { &mut v4 };
            g.bench_function(format!("{what}, 100 backends, burst of 32: {name}"), |b| {
                b.iter(|| {
                    let chunk = at..at + BURST;
                    at = (at + BURST) % span;
                    let mut classified = [Classified::ToKernel; BURST];
                    for ((c, buf), o) in classified
                        .iter_mut()
                        .zip(&mut bufs[chunk.clone()])
                        .zip(&originals[chunk.clone()])
                    {
                        buf[HEADROOM..].copy_from_slice(o);
                        // As the worker does: with tunnels, the line
                        // before the packet, where the outer headers go.
                        if snap.tunnels() {
                            dataplane::dpdk::prefetch(&buf[HEADROOM - 64]);
                        }
                        *c = forward::classify(&buf[HEADROOM..], &snap);
                        c.prefetch_entries(flows, dataplane::dpdk::prefetch);
                    }
                    let mut sent = 0;
                    for (c, buf) in classified.iter().zip(&mut bufs[chunk]) {
                        let mut f = Frame::new(buf, HEADROOM, len).expect("inside");
                        if let Action::Forward { slot, .. } =
                            forward::apply(*c, &mut f, &snap, flows, 1)
                        {
                            if forward::egress(&mut f, &snap, slot, || c.hash()).is_ok() {
                                sent += f.len();
                            }
                        }
                    }
                    black_box(sent)
                })
            });
        }
    }
    g.finish();
}

/// `tunnel::encapsulate` alone on one frame in cache, per method, beside
/// the same frame copied back into its buffer without it ("copy only"):
/// the difference is encapsulation's own cost per packet.
fn encapsulate_alone(c: &mut Criterion) {
    use lb_core::frame::Frame;
    use lb_core::tunnel::{encapsulate, Encap, Tunnel, DEFAULT_GUE_PORT, DEFAULT_VXLAN_PORT};
    use std::net::IpAddr;
    /// The next hop's MAC (a gateway's).
    const HOP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
    let original = frame(7, ACK);
    let len = original.len();
    let mut buf = vec![0u8; HEADROOM + len];
    let v4: IpAddr = "10.20.0.15".parse().expect("an address");
    let v6: IpAddr = "2001:db8:20::15".parse().expect("an address");
    let src4: IpAddr = "192.0.2.1".parse().expect("an address");
    let src6: IpAddr = "2001:db8::1".parse().expect("an address");
    let vxlan = Encap::Vxlan {
        port: DEFAULT_VXLAN_PORT,
        vni: 100,
        inner_mac: MacAddr([2, 0, 0, 0, 5, 1]),
    };
    let gue = Encap::Gue {
        port: DEFAULT_GUE_PORT,
    };
    // The flow's hash, which the classifier computed already (the
    // worker's path hands it in).
    let flow = 0x9e37_79b9_7f4a_7c15_u64;
    let mut g = c.benchmark_group("encapsulate_alone");
    g.throughput(Throughput::Elements(1));
    g.bench_function("copy only", |b| {
        b.iter(|| {
            buf[HEADROOM..].copy_from_slice(&original);
            black_box(&mut buf);
        })
    });
    for (name, encap, remote, source) in [
        ("ipip", Encap::Ipip, v4, src4),
        ("gue", gue, v4, src4),
        ("vxlan", vxlan, v4, src4),
        ("ipip over IPv6", Encap::Ipip, v6, src6),
        ("gue over IPv6", gue, v6, src6),
        ("vxlan over IPv6", vxlan, v6, src6),
    ] {
        let w = Tunnel { encap, source }.wrap(remote, PORT_MAC, HOP_MAC);
        g.bench_function(name, |b| {
            b.iter(|| {
                buf[HEADROOM..].copy_from_slice(&original);
                let mut f = Frame::new(&mut buf, HEADROOM, len).expect("inside");
                black_box(encapsulate(&mut f, black_box(&w), 1500, black_box(flow)))
                    .expect("wrapped");
            })
        });
    }
    g.finish();
}

/// The first octet of the IPv4 source address in an untagged frame.
const SRC_OCTET: usize = 14 + 12;

/// QUIC mode against plain UDP, at 1M established UDP flows and 100
/// backends, in bursts of 32 as the worker runs them. The same QUIC
/// short-header datagrams (random flows of the table) go to:
/// - the UDP VIP of a snapshot without QUIC mode (the baseline: flow table);
/// - the same VIP with a QUIC VIP beside it (`quic_vips` is set, this VIP
///   is not in QUIC mode: what a plain UDP VIP pays for QUIC existing);
/// - the VIP in QUIC mode, the ids naming its backends (no flow table);
/// - the VIP in QUIC mode, ids no backend has (the parse, then the flow
///   table: QUIC mode's most expensive path).
fn quic(c: &mut Criterion) {
    const FLOWS: u32 = 1 << 20;
    let plain = snapshot(100, 65_537);
    let quic = snapshot_quic(100, 65_537);
    let beside = lb_bench::snapshot_quic_beside(100, 65_537);
    let config = FlowConfig {
        udp_timeout: u32::MAX,
        established_timeout: u32::MAX,
        ..FlowConfig::default()
    };
    let mut flows = lb_bench::established_udp(&plain, 2 << 20, FLOWS, config);
    let order: Vec<u32> = shuffled(FLOWS, 3).into_iter().take(1 << 18).collect();
    let known: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| quic_datagram(i, (i % 100) as u16))
        .collect();
    let unknown: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| quic_datagram(i, 1000 + (i % 100) as u16))
        .collect();
    let mut g = c.benchmark_group("quic");
    g.sample_size(30);
    g.throughput(Throughput::Elements(BURST as u64));
    let mut at = 0;
    let mut run = |name: &str,
                   snap: &lb_core::snapshot::Snapshot,
                   frames: &[Vec<u8>],
                   flows: &mut lb_core::flow::FlowTable| {
        let mut frames = frames.to_vec();
        g.bench_function(name, |b| {
            b.iter(|| {
                let chunk = &mut frames[at..at + BURST];
                at = (at + BURST) % (1 << 18);
                let n = burst(chunk, snap, flows, 1, dataplane::dpdk::prefetch);
                assert_eq!(n, BURST);
                arrive(chunk);
            })
        });
    };
    run(
        "plain UDP VIP, no QUIC VIP: flow table",
        &plain,
        &unknown,
        &mut flows,
    );
    run(
        "plain UDP VIP, a QUIC VIP beside it: flow table",
        &beside,
        &unknown,
        &mut flows,
    );
    run("QUIC VIP, known ids: by id", &quic, &known, &mut flows);
    run(
        "QUIC VIP, unknown ids: parse, then flow table",
        &quic,
        &unknown,
        &mut flows,
    );
    g.finish();
}

criterion_group!(
    benches,
    maglev_build,
    flow_table,
    decide,
    encapsulate,
    encapsulate_alone,
    quic
);
criterion_main!(benches);
