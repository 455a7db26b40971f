//! Instructions per decision for a datagram to a UDP VIP, QUIC mode on and
//! off, counted rather than timed (this VM's clock moves by 20-30% between
//! runs; instruction counts do not):
//!
//! ```sh
//! cargo build --release -p lb-bench --example quic_instructions
//! for n in 100000 200000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/quic_instructions quic-id $n 2>&1 | grep refs; done
//! ```
//!
//! Each run decides one QUIC short-header datagram `n` times, the flow
//! table and snapshot in cache (`udp`: the VIP without QUIC mode, a flow
//! table hit; `udp-beside`: the same with a QUIC VIP in the snapshot;
//! `quic-id`: QUIC mode, the id naming a backend; `quic-unknown`: QUIC
//! mode, an id no backend has, so the parse and then the flow table;
//! `quic-initial`: a version-1 Initial without a known id, by Maglev on its
//! DCID). The difference between two runs, divided by the difference of
//! `n`, is the cost of one, set-up excluded.

use std::hint::black_box;

use lb_bench::{quic_datagram, snapshot, snapshot_quic, snapshot_quic_beside, PORT_MAC, VIP};
use lb_core::flow::{FlowConfig, FlowTable};
use lb_core::forward::{self, Action};
use lb_core::packet::build;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(mode), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: quic_instructions udp|udp-beside|quic-id|quic-unknown|quic-initial N");
        std::process::exit(2);
    };
    let (snap, frame) = match mode.as_str() {
        "udp" => (snapshot(100, 65_537), quic_datagram(7, 1000)),
        "udp-beside" => (snapshot_quic_beside(100, 65_537), quic_datagram(7, 1000)),
        "quic-id" => (snapshot_quic(100, 65_537), quic_datagram(7, 42)),
        "quic-unknown" => (snapshot_quic(100, 65_537), quic_datagram(7, 1000)),
        "quic-initial" => {
            let mut p = vec![0xc0, 0, 0, 0, 1, 8, 0, 0xff, 0xff, 1, 2, 3, 4, 5, 0];
            p.resize(1200, 0);
            let f = build::udp4(
                PORT_MAC,
                lb_bench::CLIENT_MAC,
                "100.0.0.1".parse().expect("an address"),
                VIP,
                5000,
                443,
                &p,
            );
            (snapshot_quic(100, 65_537), f)
        }
        other => {
            eprintln!("quic_instructions: unknown mode {other}");
            std::process::exit(2);
        }
    };
    let config = FlowConfig {
        udp_timeout: u32::MAX,
        ..FlowConfig::default()
    };
    let mut flows = FlowTable::new(1024, config);
    let mut buf = frame.clone();
    let mut out = 0u64;
    for _ in 0..n {
        buf[..6].copy_from_slice(&PORT_MAC.0);
        if let Action::Forward { slot, .. } =
            forward::decide(black_box(&mut buf), &snap, &mut flows, 1)
        {
            out = out.wrapping_add(u64::from(slot));
        }
    }
    println!("{mode} {n} {out}");
}
