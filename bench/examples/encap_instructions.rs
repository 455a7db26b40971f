//! Instructions per encapsulation, counted rather than timed (this VM's
//! clock moves by 20-30% between runs; instruction counts do not):
//!
//! ```sh
//! cargo build --release -p lb-bench --example encap_instructions
//! for n in 100000 200000; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/encap_instructions vxlan $n 2>&1 | grep refs; done
//! ```
//!
//! Each run copies one 60-byte frame into its buffer and encapsulates it
//! `n` times (`dr`: the copy alone); the difference between the two runs,
//! divided by the difference of `n`, is the cost of one, set-up excluded.

use std::hint::black_box;
use std::net::IpAddr;

use lb_bench::{frame, ACK, PORT_MAC};
use lb_core::frame::Frame;
use lb_core::packet::ethernet::MacAddr;
use lb_core::tunnel::{encapsulate, Encap, Tunnel, DEFAULT_GUE_PORT, DEFAULT_VXLAN_PORT};

const HEADROOM: usize = 128;
/// The next hop's MAC (a gateway's).
const HOP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(method), Some(n)) = (args.get(1), args.get(2).and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: encap_instructions dr|ipip|gue|vxlan|ipip6|gue6|vxlan6 N");
        std::process::exit(2);
    };
    let v6 = method.ends_with('6');
    let encap = match method.trim_end_matches('6') {
        "dr" => None,
        "ipip" => Some(Encap::Ipip),
        "gue" => Some(Encap::Gue {
            port: DEFAULT_GUE_PORT,
        }),
        "vxlan" => Some(Encap::Vxlan {
            port: DEFAULT_VXLAN_PORT,
            vni: 100,
            inner_mac: MacAddr([2, 0, 0, 0, 5, 1]),
        }),
        other => {
            eprintln!("encap_instructions: unknown method {other}");
            std::process::exit(2);
        }
    };
    let (remote, source): (IpAddr, IpAddr) = if v6 {
        (
            "2001:db8:20::15".parse().expect("an address"),
            "2001:db8::1".parse().expect("an address"),
        )
    } else {
        (
            "10.20.0.15".parse().expect("an address"),
            "192.0.2.1".parse().expect("an address"),
        )
    };
    let wrap = encap.map(|encap| Tunnel { encap, source }.wrap(remote, PORT_MAC, HOP_MAC));
    let original = frame(7, ACK);
    let len = original.len();
    let mut buf = vec![0u8; HEADROOM + len];
    // The flow's hash, which the classifier computed (handed in, as the
    // worker's path does).
    let flow = black_box(0x9e37_79b9_7f4a_7c15_u64);
    let mut out = 0usize;
    for _ in 0..n {
        buf[HEADROOM..].copy_from_slice(black_box(&original));
        let mut f = Frame::new(&mut buf, HEADROOM, len).expect("inside");
        if let Some(w) = &wrap {
            encapsulate(&mut f, black_box(w), 1500, flow).expect("wrapped");
        }
        out = out.wrapping_add(black_box(f.len()));
    }
    println!("{method} {n} {out}");
}
