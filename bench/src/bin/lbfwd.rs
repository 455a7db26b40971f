//! lbfwd: the baseline of `bench/harness.sh`, the least work DPDK can do on
//! the load balancer's path: receive a burst, swap the Ethernet addresses,
//! send it back out of the same port. Runs until SIGINT/SIGTERM (or
//! `--seconds`), then prints its counters as one JSON line.
//!
//! `lbfwd [EAL options] -- --port net_memif0 [--seconds S]`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::dpdk::{Burst, Eal, Mempool, Port, PortConfig};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let split = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let ours = argv.get(split + 1..).unwrap_or_default();
    let mut port_name = None;
    let mut seconds = None;
    let mut it = ours.iter();
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("--port", Some(v)) => port_name = Some(v.clone()),
            ("--seconds", Some(v)) => seconds = v.parse::<f64>().ok().map(Duration::from_secs_f64),
            _ => {
                eprintln!("lbfwd: usage: lbfwd [EAL options] -- --port NAME [--seconds S]");
                std::process::exit(2);
            }
        }
    }
    let Some(port_name) = port_name else {
        eprintln!("lbfwd: --port is required");
        std::process::exit(2);
    };
    let eal = Eal::init(&argv[..split]).unwrap_or_else(|e| {
        eprintln!("lbfwd: EAL: {e}");
        std::process::exit(1)
    });
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).expect("signal handler");
    }
    let pool = Mempool::create(eal, "lbfwd", 16383, 256, None).expect("mempool");
    let mut port = Port::open(eal, &port_name, &PortConfig::default(), pool).expect("port");
    port.start().expect("port start");
    let mut q = port.queue(0).expect("queue 0");
    let mut b = Burst::new();
    let (mut rx, mut tx, mut dropped) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if seconds.is_some_and(|s| start.elapsed() >= s) {
            break;
        }
        let n = q.rx(&mut b);
        if n == 0 {
            continue;
        }
        rx += n as u64;
        for i in 0..n {
            if let Some(d) = b.data_mut(i) {
                if d.len() >= 12 {
                    let (dst, src) = d.split_at_mut(6);
                    dst.swap_with_slice(&mut src[..6]);
                }
            }
        }
        let r = q.tx(&mut b);
        tx += r.sent as u64;
        dropped += r.dropped as u64;
    }
    println!("{{\"rx\":{rx},\"tx\":{tx},\"tx_dropped\":{dropped}}}");
}
