//! The forwarder on real worker lcores. Lcore launches must come from the
//! main lcore (the thread that initialised EAL), so this file has a single
//! test that runs its scenarios in order on that thread.

use lb_testkit::eal;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use std::net::{IpAddr, Ipv4Addr};

use dataplane::dpdk::{self, Burst, Eal, Mempool, Port, PortConfig, BURST_SIZE};
use dataplane::worker::Worker;
use lb_core::drop_reason::DropReason;
use lb_core::flow::{FlowConfig, FlowTable};
use lb_core::packet::{build, MacAddr};
use lb_core::snapshot::{
    BackendRef, BackendSpec, BackendState, Proto, Publisher, Snapshot, SnapshotSpec, VipKey,
    VipSpec,
};
use lb_core::stats::{Counters, WorkerStats};

const BACKEND_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xbb]);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

fn publisher(port_mac: MacAddr) -> Publisher {
    let spec = SnapshotSpec {
        generation: 1,
        mac: port_mac,
        local: vec![],
        vips: vec![VipSpec {
            idle: Default::default(),
            key: VipKey {
                addr: IpAddr::V4(VIP),
                port: 443,
                proto: Proto::Tcp,
            },
            table_size: 251,
            quic: None,
            drain: Default::default(),
            backends: vec![BackendSpec {
                id: BackendRef {
                    slot: 0,
                    incarnation: 1,
                },
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
                weight: 1,
                mac: Some(BACKEND_MAC),
                state: BackendState::Up,
                tunnel: None,
                server_id: None,
            }],
        }],
    };
    Publisher::new(Snapshot::build(&spec).unwrap())
}

fn flows() -> FlowTable {
    FlowTable::new(4096, FlowConfig::default())
}

#[test]
fn workers_on_lcores() {
    // Three lcores on the two CPUs these machines have: 0 is main, 1 and 2 are workers.
    let args = eal::eal_args(
        "workers",
        "0@0,1@1,2@1",
        &["net_ring0", "net_null0,size=64"],
    );
    let eal = Eal::init(&args).expect("EAL init");
    assert_eq!(eal.worker_lcores(), vec![1, 2]);
    assert!(eal.on_main_lcore());

    ring_forwarding_counts_every_packet(eal);
    two_workers_each_own_a_queue(eal);
    worker_panic_is_reported_not_hidden(eal);
    scope_refuses_other_threads(eal);
}

/// net_ring loops TX back to RX: N TCP frames for the VIP (at our MAC) are
/// rewritten to the backend's MAC and sent; they come back addressed to
/// another MAC and are dropped as not for us. So rx = 2N, tx = N, N new
/// flows, not_for_us = N, and every mbuf returns to the pool.
fn ring_forwarding_counts_every_packet(eal: &'static Eal) {
    const N: usize = 10 * BURST_SIZE + 5;
    let pool = Mempool::create(eal, "wk_ring", 2047, 32, None).unwrap();
    let mut port = Port::open(eal, "net_ring0", &PortConfig::default(), pool).unwrap();
    port.start().unwrap();
    let port_mac = MacAddr(port.mac());

    let mut seed = port.queue(0).unwrap();
    let mut i = 0u16;
    let mut sent = 0;
    while sent < N {
        let mut b = Burst::new();
        for _ in 0..BURST_SIZE.min(N - sent) {
            let mut m = pool.alloc().unwrap();
            let f = build::tcp4(
                port_mac,
                MacAddr([2, 0, 0, 0, 0, 0xcc]),
                Ipv4Addr::new(203, 0, 113, 7),
                VIP,
                10_000 + i,
                443,
                0x02,
                b"",
            );
            i += 1;
            assert!(m.extend_from_slice(&f));
            b.push(m).unwrap();
        }
        let out = seed.tx(&mut b);
        assert_eq!(out.dropped, 0, "the ring holds the seed");
        sent += out.sent;
    }
    drop(seed);

    let publisher = publisher(port_mac);
    let stats = WorkerStats::default();
    let stop = AtomicBool::new(false);
    let hz = eal.tsc_hz();
    dpdk::scope(eal, |s| {
        let q = port.queue(0).unwrap();
        let (reader, stats, stop) = (publisher.reader(), &stats, &stop);
        s.spawn(1, move || {
            Worker::new(q, reader, flows(), stats, hz).run(stop)
        })
        .unwrap();
        wait_for(
            || stats.read().rx_packets >= 2 * N as u64,
            "the worker to see every frame twice",
        );
        stop.store(true, Ordering::Relaxed);
    })
    .unwrap();

    let c = stats.read();
    assert_eq!(c.rx_packets, 2 * N as u64, "{c:?}");
    assert_eq!(c.tx_packets, N as u64, "{c:?}");
    assert_eq!(c.forwarded, N as u64, "{c:?}");
    assert_eq!(c.new_flows, N as u64, "{c:?}");
    assert_eq!(c.active_flows, N as u64, "{c:?}");
    assert_eq!(c.drop_count(DropReason::NotForUs), N as u64, "{c:?}");
    assert_eq!(c.dropped(), N as u64, "no other drop: {c:?}");
    assert_eq!(c.rx_bytes, 2 * 54 * N as u64);
    assert_eq!(c.tx_bytes, 54 * N as u64);
    assert_eq!(pool.in_use(), 0, "every mbuf back in the pool");
}

/// Two workers on two queue pairs of one port, each with its own counters.
fn two_workers_each_own_a_queue(eal: &'static Eal) {
    let pool = Mempool::create(eal, "wk_null", 4095, 32, None).unwrap();
    let cfg = PortConfig {
        queues: 2,
        ..PortConfig::default()
    };
    let mut port = Port::open(eal, "net_null0", &cfg, pool).unwrap();
    port.start().unwrap();
    // net_null's bytes are not initialised: whatever they hold, every packet
    // must be accounted for, and nothing may leak or panic.
    let mac = MacAddr(port.mac());
    let mut publisher = publisher(mac);
    let stats = [WorkerStats::default(), WorkerStats::default()];
    let stop = AtomicBool::new(false);
    let hz = eal.tsc_hz();
    dpdk::scope(eal, |s| {
        for (i, lcore) in [1u32, 2].into_iter().enumerate() {
            let q = port.queue(i as u16).unwrap();
            let (reader, st, stop) = (publisher.reader(), &stats[i], &stop);
            s.spawn(lcore, move || {
                Worker::new(q, reader, flows(), st, hz).run(stop)
            })
            .unwrap();
        }
        wait_for(
            || stats.iter().all(|s| s.read().rx_packets > 100_000),
            "both workers to receive",
        );
        // Five new snapshots, each taken by both workers before the next.
        for generation in 2..=6 {
            let spec = SnapshotSpec {
                generation,
                mac,
                ..SnapshotSpec::default()
            };
            publisher.publish(Snapshot::build(&spec).unwrap(), dpdk::rdtsc());
            wait_for(
                || {
                    stats
                        .iter()
                        .all(|s| s.snapshot_generation.get() == generation)
                },
                "both workers on the new snapshot",
            );
        }
        stop.store(true, Ordering::Relaxed);
    })
    .unwrap();
    // Each worker timed each snapshot; each snapshot completed once, at the
    // worker that took it last.
    for s in &stats {
        assert_eq!(s.snapshot_adoption.read().count(), 5);
    }
    let completed: u64 = stats
        .iter()
        .map(|s| s.snapshot_all_workers.read().count())
        .sum();
    assert_eq!(completed, 5, "one count per snapshot, over both workers");
    for s in &stats {
        let c = s.read();
        assert_eq!(
            c.rx_packets % BURST_SIZE as u64,
            0,
            "net_null gives whole bursts"
        );
        assert_eq!(
            c.rx_packets,
            c.tx_packets + c.dropped(),
            "every packet accounted for: {c:?}"
        );
    }
    let total: Counters = stats.iter().map(WorkerStats::read).sum();
    assert!(total.rx_packets > 200_000);
    assert_eq!(pool.in_use(), 0);
}

fn worker_panic_is_reported_not_hidden(eal: &'static Eal) {
    let r = dpdk::scope(eal, |s| {
        s.spawn(2, || panic!("deliberate worker panic")).unwrap();
    });
    let e = r.expect_err("a panicking worker makes the scope fail");
    assert!(e.to_string().contains("lcore(s) [2]"), "{e}");
    // The lcore is usable again.
    let ran = AtomicBool::new(false);
    dpdk::scope(eal, |s| {
        s.spawn(2, || ran.store(true, Ordering::SeqCst)).unwrap()
    })
    .unwrap();
    assert!(ran.load(Ordering::SeqCst));
}

fn scope_refuses_other_threads(eal: &'static Eal) {
    let r = std::thread::spawn(move || dpdk::scope(eal, |_| ()).map_err(|e| e.to_string()))
        .join()
        .unwrap();
    assert!(r.unwrap_err().contains("main lcore"));
}

fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}
