//! The forwarder on real worker lcores. Lcore launches must come from the
//! main lcore (the thread that initialised EAL), so this file has a single
//! test that runs its scenarios in order on that thread.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::dpdk::{self, Burst, Eal, Mempool, Port, PortConfig, BURST_SIZE};
use dataplane::mac_table::MacTable;
use dataplane::stats::{Counters, DropReason, WorkerStats};
use dataplane::worker::Worker;

const VIP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

#[test]
fn workers_on_lcores() {
    // Three lcores on the two CPUs these machines have: 0 is main, 1 and 2 are workers.
    let args = common::eal::eal_args(
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

/// net_ring loops TX back to RX: N frames for the VIP MAC are rewritten to
/// the backend MAC and sent; they come back for the backend MAC, which has no
/// route, and are dropped. So rx = 2N, tx = N, no_route = N, and every mbuf
/// returns to the pool.
fn ring_forwarding_counts_every_packet(eal: &'static Eal) {
    const N: usize = 10 * BURST_SIZE + 5;
    let pool = Mempool::create(eal, "wk_ring", 2047, 32, None).unwrap();
    let mut port = Port::open(eal, "net_ring0", &PortConfig::default(), pool).unwrap();
    port.start().unwrap();
    let port_mac = port.mac();

    let mut seed = port.queue(0).unwrap();
    let mut sent = 0;
    while sent < N {
        let mut b = Burst::new();
        for _ in 0..BURST_SIZE.min(N - sent) {
            let mut m = pool.alloc().unwrap();
            let mut f = [0u8; 60];
            f[..6].copy_from_slice(&VIP_MAC);
            f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xcc]);
            f[12..14].copy_from_slice(&[0x08, 0x00]);
            assert!(m.extend_from_slice(&f));
            b.push(m).unwrap();
        }
        let out = seed.tx(&mut b);
        assert_eq!(out.dropped, 0, "the ring holds the seed");
        sent += out.sent;
    }
    drop(seed);

    let table = MacTable::new([(VIP_MAC, BACKEND_MAC)]);
    let stats = WorkerStats::default();
    let stop = AtomicBool::new(false);
    dpdk::scope(eal, |s| {
        let q = port.queue(0).unwrap();
        let (table, stats, stop) = (&table, &stats, &stop);
        s.spawn(1, move || Worker::new(q, table, port_mac, stats).run(stop))
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
    assert_eq!(c.drop_count(DropReason::NoRoute), N as u64, "{c:?}");
    assert_eq!(c.drop_count(DropReason::Runt), 0);
    assert_eq!(c.tx_dropped, 0);
    assert_eq!(c.rx_bytes, 2 * 60 * N as u64);
    assert_eq!(c.tx_bytes, 60 * N as u64);
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
    let port_mac = port.mac();
    // net_null's bytes are not initialised: route nothing, so every packet is a
    // counted drop, and the test does not depend on their content.
    let table = MacTable::default();
    let stats = [WorkerStats::default(), WorkerStats::default()];
    let stop = AtomicBool::new(false);
    dpdk::scope(eal, |s| {
        for (i, lcore) in [1u32, 2].into_iter().enumerate() {
            let q = port.queue(i as u16).unwrap();
            let (table, st, stop) = (&table, &stats[i], &stop);
            s.spawn(lcore, move || Worker::new(q, table, port_mac, st).run(stop))
                .unwrap();
        }
        wait_for(
            || stats.iter().all(|s| s.read().rx_packets > 100_000),
            "both workers to receive",
        );
        stop.store(true, Ordering::Relaxed);
    })
    .unwrap();
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
    assert_eq!(total.drop_count(DropReason::NoRoute), total.rx_packets);
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
