//! lbgen: the DPDK traffic generator of `bench/harness.sh`. Sends prebuilt
//! UDP/IPv4 frames of many flows to a VIP as fast as the port takes them,
//! receives what the system under test sends back, and reports offered and
//! returned packet rates and the round-trip latency (TSC stamped in each
//! payload at send, read at receive) as one JSON line.
//!
//! `lbgen [EAL options] -- --port net_memif0 --dst-mac MAC [--flows N] [--size B] [--seconds S] [--warmup S]`

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use dataplane::dpdk::{Burst, Eal, Mempool, Port, PortConfig, BURST_SIZE};
use dataplane::packet::build;
use dataplane::packet::ethernet::MacAddr;

const MAGIC: u64 = 0x6c62_6765_6e21_7473; // "lbgen!ts"
const UDP_PAYLOAD_AT: usize = 14 + 20 + 8;

struct Options {
    port: String,
    dst_mac: MacAddr,
    vip: Ipv4Addr,
    vip_port: u16,
    flows: u32,
    size: usize,
    seconds: f64,
    warmup: f64,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        port: String::new(),
        dst_mac: MacAddr::ZERO,
        vip: Ipv4Addr::new(198, 51, 100, 10),
        vip_port: 443,
        flows: 1 << 20,
        size: 64,
        seconds: 5.0,
        warmup: 1.0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut v = || it.next().ok_or(format!("{a}: needs a value"));
        match a.as_str() {
            "--port" => o.port = v()?.clone(),
            "--dst-mac" => o.dst_mac = v()?.parse().map_err(|e| format!("--dst-mac: {e}"))?,
            "--vip" => o.vip = v()?.parse().map_err(|e| format!("--vip: {e}"))?,
            "--vip-port" => o.vip_port = v()?.parse().map_err(|e| format!("--vip-port: {e}"))?,
            "--flows" => o.flows = v()?.parse().map_err(|e| format!("--flows: {e}"))?,
            "--size" => o.size = v()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--seconds" => o.seconds = v()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--warmup" => o.warmup = v()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.port.is_empty() || o.dst_mac == MacAddr::ZERO {
        return Err("--port and --dst-mac are required".into());
    }
    if !(60..=1514).contains(&o.size) {
        return Err(format!("--size {}: 60 to 1514 bytes (without FCS)", o.size));
    }
    if o.flows == 0 || o.flows > 10_000_000 {
        return Err(format!("--flows {}: 1 to 10,000,000", o.flows));
    }
    Ok(o)
}

/// Frames of all flows, one after the other in one buffer (cycled at send).
fn frames(o: &Options, src_mac: MacAddr) -> Vec<u8> {
    let payload = vec![0u8; o.size - UDP_PAYLOAD_AT];
    let mut all = Vec::with_capacity(o.size * o.flows as usize);
    for i in 0..o.flows {
        let src = Ipv4Addr::from(0x6400_0000 | (i >> 6));
        let sport = 1024 + (i & 0x3f) as u16 * 997;
        let f = build::udp4(o.dst_mac, src_mac, src, o.vip, sport, o.vip_port, &payload);
        debug_assert_eq!(f.len(), o.size);
        all.extend_from_slice(&f);
    }
    all
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let split = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let o = match parse(argv.get(split + 1..).unwrap_or_default()) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lbgen: {e}");
            std::process::exit(2);
        }
    };
    let eal = Eal::init(&argv[..split]).unwrap_or_else(|e| {
        eprintln!("lbgen: EAL: {e}");
        std::process::exit(1)
    });
    let pool = Mempool::create(eal, "lbgen", 16383, 256, None).expect("mempool");
    let mut port = Port::open(eal, &o.port, &PortConfig::default(), pool).expect("port");
    port.start().expect("port start");
    let src_mac = MacAddr(port.mac());
    let all = frames(&o, src_mac);
    let mut q = port.queue(0).expect("queue 0");
    let hz = eal.tsc_hz() as f64;
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();

    let (mut tx, mut rx, mut tx_full) = (0u64, 0u64, 0u64);
    let mut next = 0usize;
    let n = all.len() / o.size;
    let mut out = Burst::new();
    let mut back = Burst::new();
    let start = Instant::now();
    let warm = Duration::from_secs_f64(o.warmup);
    let end = warm + Duration::from_secs_f64(o.seconds);
    let mut measuring = false;
    loop {
        let t = start.elapsed();
        if t >= end {
            break;
        }
        if !measuring && t >= warm {
            measuring = true;
            (tx, rx, tx_full) = (0, 0, 0);
            hist.reset();
        }
        if pool.alloc_bulk(&mut out, BURST_SIZE) {
            let now = dataplane::dpdk::rdtsc();
            for i in 0..out.len() {
                let f = &all[next * o.size..(next + 1) * o.size];
                next = if next + 1 == n { 0 } else { next + 1 };
                if !out.extend_at(i, f) {
                    continue;
                }
                let d = out.data_mut(i).expect("in burst");
                d[UDP_PAYLOAD_AT..UDP_PAYLOAD_AT + 8].copy_from_slice(&MAGIC.to_le_bytes());
                d[UDP_PAYLOAD_AT + 8..UDP_PAYLOAD_AT + 16].copy_from_slice(&now.to_le_bytes());
            }
            let r = q.tx(&mut out);
            tx += r.sent as u64;
            tx_full += r.dropped as u64;
        }
        let got = q.rx(&mut back);
        if got > 0 {
            let now = dataplane::dpdk::rdtsc();
            for i in 0..got {
                let Some(d) = back.data(i) else { continue };
                if d.len() < UDP_PAYLOAD_AT + 16 {
                    continue;
                }
                let magic =
                    u64::from_le_bytes(d[UDP_PAYLOAD_AT..UDP_PAYLOAD_AT + 8].try_into().unwrap());
                if magic != MAGIC {
                    continue;
                }
                rx += 1;
                let sent = u64::from_le_bytes(
                    d[UDP_PAYLOAD_AT + 8..UDP_PAYLOAD_AT + 16]
                        .try_into()
                        .unwrap(),
                );
                let ns = (now.wrapping_sub(sent) as f64 / hz * 1e9) as u64;
                let _ = hist.record(ns.max(1));
            }
            back.clear();
        }
    }
    let secs = o.seconds;
    println!(
        "{{\"offered_mpps\":{:.4},\"returned_mpps\":{:.4},\"tx\":{tx},\"rx\":{rx},\"tx_refused\":{tx_full},\"lat_p50_us\":{:.2},\"lat_p99_us\":{:.2},\"lat_p999_us\":{:.2},\"flows\":{},\"size\":{}}}",
        tx as f64 / secs / 1e6,
        rx as f64 / secs / 1e6,
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.value_at_quantile(0.999) as f64 / 1e3,
        o.flows,
        o.size
    );
}
