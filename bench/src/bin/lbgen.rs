//! lbgen: the DPDK traffic generator of `bench/harness.sh`. Sends prebuilt
//! frames of many flows (UDP or TCP ACKs, over IPv4 or IPv6, to one or many
//! VIPs) as fast as the port takes them or at a set rate, turns a share of
//! its flows into new ones every second, receives what the system under
//! test sends back, and reports offered and returned packet rates and the
//! round-trip latency (TSC stamped in each payload at send, read at
//! receive) as one JSON line. Nothing is allocated on the send path.
//!
//! `lbgen [EAL options] -- --port net_memif0 --dst-mac MAC [--flows N] [--size B]
//!   [--proto udp|tcp] [--ipv6] [--vips N] [--rate-mpps X] [--new-flows-per-sec N]
//!   [--seconds S] [--warmup S] [--linger S] [--tunnel-overhead B]
//!   [--flood [--flood-seconds S] [--sync DIR]]`
//!
//! `--tunnel-overhead B`: frames come back with B bytes of tunnel headers
//! between the Ethernet header and the packet sent (the system under test
//! forwarded to a tunnelled backend: 20 for IPIP, 28 for GUE, 50 for VXLAN
//! over IPv4); the stamp is read after them.
//!
//! `--flood`: the flood mode (see [`flood`]): establish and confirm every
//! flow (at least three passes, full rate, for `--warmup` at least), send
//! them paced at `--rate-mpps` for `--seconds` and one pass over them at
//! least (the baseline), then the same established traffic with a flood of
//! never-repeating new 5-tuples (TCP SYNs for `--proto tcp`, UDP datagrams
//! for `udp`) filling every burst, as fast as the link takes it, for
//! `--flood-seconds` (default 10). A refused established frame is sent
//! again at the flow's next turn, so every flow gets its packets in turn
//! whatever the link takes. Before
//! each measured phase and at the end it stops sending and drains (until
//! nothing came back for 200 ms); with `--sync DIR` it
//! then creates `DIR/PHASE.ready` (`base`, `flood`) and waits for
//! `DIR/PHASE.go` (the harness reads lbd's counters in between, so each
//! phase's counts are exact). The report has each phase's established
//! packets sent, refused and returned, and the flood's.
//!
//! `--linger S`: after the report, keep the port open, without polling it,
//! until the link goes down (the system under test closed it) or S seconds
//! pass. DPDK 22.11's memif frees a link's rings when the peer closes it,
//! without waiting for its own datapath: a peer still polling when we close
//! can crash on the freed ring. So the harness reads the report, stops the
//! system under test (it stops polling, then closes), and only then do we
//! close.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use dataplane::dpdk::{Burst, Eal, Mempool, Port, PortConfig, BURST_SIZE};
use lb_core::packet::build;
use lb_core::packet::ethernet::MacAddr;
use lb_core::packet::l4::{ACK, SYN};

const MAGIC: u64 = 0x6c62_6765_6e21_7473; // "lbgen!ts"
/// The stamp of a flood frame (`--flood`): counted apart on return.
const MAGIC_FLOOD: u64 = 0x6c62_666c_6f6f_6421; // "lbflood!"
/// How long the link may take to come up.
const LINK_WAIT: Duration = Duration::from_secs(10);
/// How long a connection attempt may take before the port is restarted.
const RECONNECT: Duration = Duration::from_secs(2);

struct Options {
    port: String,
    dst_mac: MacAddr,
    ipv6: bool,
    tcp: bool,
    vips: u32,
    vip_port: u16,
    flows: u32,
    size: usize,
    rate_mpps: f64,
    new_flows_per_sec: f64,
    seconds: f64,
    warmup: f64,
    linger: f64,
    tunnel_overhead: usize,
    flood: bool,
    flood_seconds: f64,
    sync: Option<std::path::PathBuf>,
}

/// Where things are in every frame of a run.
#[derive(Clone, Copy)]
struct Layout {
    ethertype: [u8; 2],
    /// Offset and value of the IP protocol / next header byte.
    proto_at: usize,
    proto: u8,
    /// The L4 header: source port at +0, checksum at `csum_at`.
    l4_at: usize,
    csum_at: usize,
    /// The 16 bytes of magic and TSC stamp.
    stamp_at: usize,
    /// Tunnel headers in front of the packet in frames that come back.
    back_shift: usize,
}

impl Layout {
    fn of(o: &Options) -> Layout {
        let (ethertype, ip_len, proto_at) = if o.ipv6 {
            ([0x86, 0xdd], 40, 14 + 6)
        } else {
            ([0x08, 0x00], 20, 14 + 9)
        };
        let l4_at = 14 + ip_len;
        let (proto, l4_len, csum) = if o.tcp { (6, 20, 16) } else { (17, 8, 6) };
        Layout {
            ethertype,
            proto_at,
            proto,
            l4_at,
            csum_at: l4_at + csum,
            stamp_at: l4_at + l4_len,
            back_shift: o.tunnel_overhead,
        }
    }

    /// Is `d` a frame of this run (that came back)?
    fn matches(&self, d: &[u8]) -> bool {
        self.magic(d) == Some(MAGIC)
    }

    /// The magic stamped in `d`, if it is a frame of this run's kind.
    fn magic(&self, d: &[u8]) -> Option<u64> {
        let (proto_at, stamp_at) = (self.proto_at + self.back_shift, self.back_stamp());
        (d.len() >= stamp_at + 16 && d[12..14] == self.ethertype && d[proto_at] == self.proto)
            .then(|| u64::from_le_bytes(d[stamp_at..stamp_at + 8].try_into().expect("8 bytes")))
    }

    /// Where the stamp is in a frame that came back.
    fn back_stamp(&self) -> usize {
        self.stamp_at + self.back_shift
    }
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        port: String::new(),
        dst_mac: MacAddr::ZERO,
        ipv6: false,
        tcp: false,
        vips: 1,
        vip_port: 443,
        flows: 1 << 20,
        size: 64,
        rate_mpps: 0.0,
        new_flows_per_sec: 0.0,
        seconds: 5.0,
        warmup: 1.0,
        linger: 0.0,
        tunnel_overhead: 0,
        flood: false,
        flood_seconds: 10.0,
        sync: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--ipv6" {
            o.ipv6 = true;
            continue;
        }
        if a == "--flood" {
            o.flood = true;
            continue;
        }
        let mut v = || it.next().ok_or(format!("{a}: needs a value"));
        match a.as_str() {
            "--port" => o.port = v()?.clone(),
            "--dst-mac" => o.dst_mac = v()?.parse().map_err(|e| format!("--dst-mac: {e}"))?,
            "--proto" => {
                o.tcp = match v()?.as_str() {
                    "tcp" => true,
                    "udp" => false,
                    p => return Err(format!("--proto {p}: tcp or udp")),
                }
            }
            "--vips" => o.vips = v()?.parse().map_err(|e| format!("--vips: {e}"))?,
            "--vip-port" => o.vip_port = v()?.parse().map_err(|e| format!("--vip-port: {e}"))?,
            "--flows" => o.flows = v()?.parse().map_err(|e| format!("--flows: {e}"))?,
            "--size" => o.size = v()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--rate-mpps" => o.rate_mpps = v()?.parse().map_err(|e| format!("--rate-mpps: {e}"))?,
            "--new-flows-per-sec" => {
                o.new_flows_per_sec = v()?
                    .parse()
                    .map_err(|e| format!("--new-flows-per-sec: {e}"))?
            }
            "--seconds" => o.seconds = v()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--warmup" => o.warmup = v()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--linger" => o.linger = v()?.parse().map_err(|e| format!("--linger: {e}"))?,
            "--flood-seconds" => {
                o.flood_seconds = v()?.parse().map_err(|e| format!("--flood-seconds: {e}"))?
            }
            "--sync" => o.sync = Some(v()?.into()),
            "--tunnel-overhead" => {
                o.tunnel_overhead = v()?
                    .parse()
                    .map_err(|e| format!("--tunnel-overhead: {e}"))?
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if o.port.is_empty() || o.dst_mac == MacAddr::ZERO {
        return Err("--port and --dst-mac are required".into());
    }
    let min = Layout::of(&o).stamp_at + 16;
    if !(min.max(60)..=1514).contains(&o.size) {
        return Err(format!(
            "--size {}: {} to 1514 bytes (without FCS) for these headers and the stamp",
            o.size,
            min.max(60)
        ));
    }
    if o.flows == 0 || o.flows > 10_000_000 {
        return Err(format!("--flows {}: 1 to 10,000,000", o.flows));
    }
    if o.vips == 0 || o.vips > 1000 {
        return Err(format!("--vips {}: 1 to 1000", o.vips));
    }
    if !(o.rate_mpps >= 0.0 && o.new_flows_per_sec >= 0.0) {
        return Err("--rate-mpps and --new-flows-per-sec: 0 or more".into());
    }
    for (name, v) in [
        ("--seconds", o.seconds),
        ("--warmup", o.warmup),
        ("--linger", o.linger),
        ("--flood-seconds", o.flood_seconds),
    ] {
        if !(0.0..=86_400.0).contains(&v) {
            return Err(format!("{name} {v}: 0 to 86400 seconds"));
        }
    }
    if o.flood && !(o.rate_mpps > 0.0 && o.new_flows_per_sec == 0.0) {
        return Err("--flood: the established flows need a pace (--rate-mpps above 0), and no --new-flows-per-sec".into());
    }
    Ok(o)
}

/// VIP number `i`: 198.51.100.10 + i, or 2001:db8::10 + i (what the
/// harness configures).
fn vip(o: &Options, i: u32) -> IpAddr {
    if o.ipv6 {
        IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | (0x10 + u128::from(i)),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::from(0xc633_640a + i))
    }
}

/// Frames of all flows, one after the other in one buffer (cycled at send).
/// Flow i: source address i / 64, source port 1024 + (i % 64) x 997, VIP
/// i % vips.
fn frames(o: &Options, src_mac: MacAddr, at: Layout) -> Vec<u8> {
    let payload = vec![0u8; o.size - at.stamp_at];
    let mut all = Vec::with_capacity(o.size * o.flows as usize);
    for i in 0..o.flows {
        let src = if o.ipv6 {
            IpAddr::V6(Ipv6Addr::from(
                (0x2001_0db8_0100_u128 << 80) | u128::from(i >> 6),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(0x6400_0000 | (i >> 6)))
        };
        let dst = vip(o, i % o.vips);
        let sport = 1024 + (i & 0x3f) as u16 * 997;
        let f = if o.tcp {
            build::tcp_frame(
                o.dst_mac, src_mac, src, dst, sport, o.vip_port, ACK, &payload,
            )
        } else {
            build::udp_frame(o.dst_mac, src_mac, src, dst, sport, o.vip_port, &payload)
        };
        debug_assert_eq!(f.len(), o.size);
        all.extend_from_slice(&f);
    }
    all
}

/// Make `frame` a new flow: the next source port, with the L4 checksum
/// updated incrementally (RFC 1624). Ports of one source address are 997
/// apart, so a bumped port meets no other flow's for a long while.
fn renew(frame: &mut [u8], at: Layout, udp4: bool) {
    let old = u16::from_be_bytes([frame[at.l4_at], frame[at.l4_at + 1]]);
    let new = if old == u16::MAX { 1024 } else { old + 1 };
    frame[at.l4_at..at.l4_at + 2].copy_from_slice(&new.to_be_bytes());
    let csum = u16::from_be_bytes([frame[at.csum_at], frame[at.csum_at + 1]]);
    if udp4 && csum == 0 {
        return; // no checksum
    }
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let mut updated = !(sum as u16);
    if !at_tcp(at) && updated == 0 {
        updated = 0xffff; // UDP sends 0 as all ones
    }
    frame[at.csum_at..at.csum_at + 2].copy_from_slice(&updated.to_be_bytes());
}

fn at_tcp(at: Layout) -> bool {
    at.proto == 6
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
    // The link is up once the memif server has accepted us (or a NIC has
    // negotiated): warm-up and measurement start from there, not from a
    // link that refuses every frame. A memif client connects once, when its
    // port starts: if the server refuses (or is not listening yet), the
    // start fails or the link stays down for good. CI once saw the latter
    // with dpdk-testpmd as the server, so start the port again, which
    // connects again, until the link is up or LINK_WAIT has passed.
    let up_by = Instant::now() + LINK_WAIT;
    loop {
        if let Err(e) = port.start() {
            if Instant::now() >= up_by {
                eprintln!("lbgen: {}: {e}", o.port);
                std::process::exit(1);
            }
            eprintln!("lbgen: {}: {e}; trying again", o.port);
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        let attempt_by = (Instant::now() + RECONNECT).min(up_by);
        while !port.link().is_ok_and(|l| l.up) && Instant::now() < attempt_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        if port.link().is_ok_and(|l| l.up) {
            break;
        }
        if Instant::now() >= up_by {
            eprintln!("lbgen: {}: link not up after {LINK_WAIT:?}", o.port);
            std::process::exit(1);
        }
        eprintln!("lbgen: {}: link still down, restarting the port", o.port);
        port.stop().expect("port stop");
    }
    let src_mac = MacAddr(port.mac());
    let at = Layout::of(&o);
    let mut all = frames(&o, src_mac, at);
    let mut q = port.queue(0).expect("queue 0");
    let hz = eal.tsc_hz() as f64;
    if o.flood {
        let tpl = flood::Template::new(&o, src_mac, at);
        println!("{}", flood::run(&o, &mut q, pool, &all, at, hz, &tpl));
        linger(&port, o.linger);
        return;
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).unwrap();

    // Pacing in TSC cycles: per burst sent, and per flow renewed (0: off).
    let burst_cycles = if o.rate_mpps > 0.0 {
        (hz * BURST_SIZE as f64 / (o.rate_mpps * 1e6)) as u64
    } else {
        0
    };
    let renew_cycles = if o.new_flows_per_sec > 0.0 {
        ((hz / o.new_flows_per_sec) as u64).max(1)
    } else {
        0
    };
    let udp4 = !o.ipv6 && !o.tcp;
    let (mut tx, mut rx, mut tx_full, mut renewed) = (0u64, 0u64, 0u64, 0u64);
    let mut next = 0usize;
    let mut next_renew = 0usize;
    let n = all.len() / o.size;
    let mut out = Burst::new();
    let mut back = Burst::new();
    let start = Instant::now();
    let warm = Duration::from_secs_f64(o.warmup);
    let end = warm + Duration::from_secs_f64(o.seconds);
    let mut measuring = false;
    let mut measured_from = start;
    let t0 = dataplane::dpdk::rdtsc();
    let (mut send_at, mut renew_at) = (t0, t0);
    loop {
        let t = start.elapsed();
        if t >= end {
            break;
        }
        if !measuring && t >= warm {
            measuring = true;
            measured_from = Instant::now();
            (tx, rx, tx_full, renewed) = (0, 0, 0, 0);
            hist.reset();
        }
        let now = dataplane::dpdk::rdtsc();
        // New flows: a bounded number per turn, so sending never starves.
        let mut budget = BURST_SIZE;
        while renew_cycles > 0 && now >= renew_at && budget > 0 {
            let f = &mut all[next_renew * o.size..(next_renew + 1) * o.size];
            renew(f, at, udp4);
            next_renew = if next_renew + 1 == n {
                0
            } else {
                next_renew + 1
            };
            renew_at += renew_cycles;
            renewed += 1;
            budget -= 1;
        }
        let due = burst_cycles == 0 || now >= send_at;
        if due && pool.alloc_bulk(&mut out, BURST_SIZE) {
            if burst_cycles > 0 {
                // Behind by more than a burst: do not catch up in a rush.
                send_at = send_at.max(now.saturating_sub(burst_cycles)) + burst_cycles;
            }
            for i in 0..out.len() {
                let f = &all[next * o.size..(next + 1) * o.size];
                next = if next + 1 == n { 0 } else { next + 1 };
                if !out.extend_at(i, f) {
                    continue;
                }
                let d = out.data_mut(i).expect("in burst");
                d[at.stamp_at..at.stamp_at + 8].copy_from_slice(&MAGIC.to_le_bytes());
                d[at.stamp_at + 8..at.stamp_at + 16].copy_from_slice(&now.to_le_bytes());
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
                if !at.matches(d) {
                    continue;
                }
                rx += 1;
                let sent = u64::from_le_bytes(
                    d[at.back_stamp() + 8..at.back_stamp() + 16]
                        .try_into()
                        .expect("8 bytes"),
                );
                let ns = (now.wrapping_sub(sent) as f64 / hz * 1e9) as u64;
                let _ = hist.record(ns.max(1));
            }
            back.clear();
        }
    }
    // Rates over the window as it really ran: a descheduled generator checks
    // the clock late, and pacing is by the clock, not by the asked length.
    let secs = measured_from.elapsed().as_secs_f64().max(1e-9);
    let total_secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"offered_mpps\":{:.4},\"returned_mpps\":{:.4},\"tx\":{tx},\"rx\":{rx},\"tx_refused\":{tx_full},\"lat_p50_us\":{:.2},\"lat_p99_us\":{:.2},\"lat_p999_us\":{:.2},\"flows\":{},\"size\":{},\"proto\":\"{}\",\"ip\":{},\"vips\":{},\"rate_mpps\":{},\"new_flows\":{renewed},\"new_flows_per_s\":{:.1},\"measured_s\":{secs:.4},\"total_s\":{total_secs:.4}}}",
        tx as f64 / secs / 1e6,
        rx as f64 / secs / 1e6,
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        hist.value_at_quantile(0.999) as f64 / 1e3,
        o.flows,
        o.size,
        if o.tcp { "tcp" } else { "udp" },
        if o.ipv6 { 6 } else { 4 },
        o.vips,
        o.rate_mpps,
        renewed as f64 / secs,
    );
    linger(&port, o.linger);
}

/// Wait, not polling, until `port`'s link is down or `secs` have passed
/// (see `--linger`).
fn linger(port: &Port, secs: f64) {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until && port.link().is_ok_and(|l| l.up) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `--flood`: established flows, then the same with a flood of new 5-tuples.
mod flood {
    use super::*;
    use dataplane::dpdk::Queue;
    use std::path::Path;

    /// Flood tuples per source address: ports 1024 to 65535.
    const PORTS: u64 = 65536 - 1024;

    /// The flood's frame: copied into each mbuf, then given the next
    /// 5-tuple (source address and port) with its checksums patched.
    pub struct Template {
        frame: Vec<u8>,
        /// The source address's last four bytes (all of it for IPv4).
        src_at: usize,
        /// The IPv4 header checksum (none in IPv6).
        ip_csum_at: Option<usize>,
        at: Layout,
        udp4: bool,
    }

    impl Template {
        /// Sources 172.16.0.0/12 or 2001:db8:f100::/48, apart from the
        /// established flows' (100.0.0.0/8, 2001:db8:100::/48).
        pub fn new(o: &Options, src_mac: MacAddr, at: Layout) -> Template {
            let payload = vec![0u8; o.size - at.stamp_at];
            let src = if o.ipv6 {
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8_f100_u128 << 80))
            } else {
                IpAddr::V4(Ipv4Addr::from(0xac10_0000))
            };
            let dst = vip(o, 0);
            let frame = if o.tcp {
                build::tcp_frame(
                    o.dst_mac, src_mac, src, dst, 1024, o.vip_port, SYN, &payload,
                )
            } else {
                build::udp_frame(o.dst_mac, src_mac, src, dst, 1024, o.vip_port, &payload)
            };
            let (src_at, ip_csum_at) = if o.ipv6 {
                (14 + 8 + 12, None)
            } else {
                (14 + 12, Some(14 + 10))
            };
            Template {
                frame,
                src_at,
                ip_csum_at,
                at,
                udp4: !o.ipv6 && !o.tcp,
            }
        }

        /// Write tuple number `k` (never repeated in a run) into `d`, a copy
        /// of the template. The checksums are patched for the changed
        /// words (RFC 1624), from the template's own values.
        pub fn write(&self, d: &mut [u8], k: u64) {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "2^32 addresses of 64512 ports"
            )]
            let (addr, port) = (
                (self.base() + (k / PORTS) as u32),
                (1024 + k % PORTS) as u16,
            );
            let word = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
            let t = &self.frame;
            let old = [word(t, self.src_at), word(t, self.src_at + 2)];
            let new = [(addr >> 16) as u16, addr as u16];
            d[self.src_at..self.src_at + 4].copy_from_slice(&addr.to_be_bytes());
            d[self.at.l4_at..self.at.l4_at + 2].copy_from_slice(&port.to_be_bytes());
            if let Some(c) = self.ip_csum_at {
                let sum = adjust(adjust(word(t, c), old[0], new[0]), old[1], new[1]);
                d[c..c + 2].copy_from_slice(&sum.to_be_bytes());
            }
            let c = self.at.csum_at;
            let l4 = word(t, c);
            if self.udp4 && l4 == 0 {
                return; // no checksum
            }
            let mut sum = adjust(adjust(l4, old[0], new[0]), old[1], new[1]);
            sum = adjust(sum, word(t, self.at.l4_at), port);
            if !at_tcp(self.at) && sum == 0 {
                sum = 0xffff;
            }
            d[c..c + 2].copy_from_slice(&sum.to_be_bytes());
        }

        fn base(&self) -> u32 {
            let t = &self.frame;
            u32::from_be_bytes(t[self.src_at..self.src_at + 4].try_into().expect("4 bytes"))
        }
    }

    /// A one's-complement checksum with one 16-bit word changed (RFC 1624).
    fn adjust(csum: u16, old: u16, new: u16) -> u16 {
        let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        #[allow(clippy::cast_possible_truncation, reason = "folded to 16 bits")]
        !(sum as u16)
    }

    /// What one phase sent and got back.
    #[derive(Default)]
    struct Phase {
        est_tx: u64,
        est_refused: u64,
        est_rx: u64,
        flood_tx: u64,
        flood_refused: u64,
        flood_rx: u64,
        secs: f64,
    }

    struct Run<'a, 'q> {
        o: &'a Options,
        q: &'a mut Queue<'q>,
        pool: &'static Mempool,
        all: &'a [u8],
        n: usize,
        next: usize,
        at: Layout,
        hz: f64,
        back: Burst,
        out: Burst,
        /// Established round trips of the phase.
        hist: hdrhistogram::Histogram<u64>,
        p: Phase,
    }

    impl Run<'_, '_> {
        fn poll(&mut self) {
            let got = self.q.rx(&mut self.back);
            if got == 0 {
                return;
            }
            let now = dataplane::dpdk::rdtsc();
            let s = self.at.back_stamp();
            for i in 0..got {
                let Some(d) = self.back.data(i) else { continue };
                match self.at.magic(d) {
                    Some(MAGIC) => {
                        self.p.est_rx += 1;
                        let sent =
                            u64::from_le_bytes(d[s + 8..s + 16].try_into().expect("8 bytes"));
                        let ns = (now.wrapping_sub(sent) as f64 / self.hz * 1e9) as u64;
                        let _ = self.hist.record(ns.max(1));
                    }
                    Some(MAGIC_FLOOD) => self.p.flood_rx += 1,
                    _ => {}
                }
            }
            self.back.clear();
        }

        /// One burst: `est` established frames spread evenly over `total`
        /// (the rest flood frames, numbered from `*k`). The link takes a
        /// prefix: what it refused is counted by kind.
        fn send(&mut self, est: usize, total: usize, tpl: Option<&Template>, k: &mut u64) {
            if total == 0 || !self.pool.alloc_bulk(&mut self.out, total) {
                return;
            }
            let now = dataplane::dpdk::rdtsc();
            let at = self.at;
            let mut is_est = [false; BURST_SIZE];
            for (i, e) in is_est.iter_mut().enumerate().take(self.out.len()) {
                *e = (i + 1) * est / total != i * est / total;
                let (magic, ok) = if *e {
                    let f = &self.all[self.next * self.o.size..(self.next + 1) * self.o.size];
                    self.next = if self.next + 1 == self.n {
                        0
                    } else {
                        self.next + 1
                    };
                    (MAGIC, self.out.extend_at(i, f))
                } else {
                    let t = tpl.expect("flood frames need the template");
                    let ok = self.out.extend_at(i, &t.frame);
                    if ok {
                        t.write(self.out.data_mut(i).expect("in burst"), *k);
                        *k += 1;
                    }
                    (MAGIC_FLOOD, ok)
                };
                if !ok {
                    continue;
                }
                let d = self.out.data_mut(i).expect("in burst");
                d[at.stamp_at..at.stamp_at + 8].copy_from_slice(&magic.to_le_bytes());
                d[at.stamp_at + 8..at.stamp_at + 16].copy_from_slice(&now.to_le_bytes());
            }
            let len = self.out.len();
            let r = self.q.tx(&mut self.out);
            let est_sent = is_est[..r.sent].iter().filter(|&&e| e).count() as u64;
            let est_all = is_est[..len].iter().filter(|&&e| e).count() as u64;
            // A refused flow's turn comes again (the refused are the last
            // established frames taken): every flow gets its packets in turn.
            let refused = usize::try_from(est_all - est_sent).expect("a burst");
            self.next = (self.next + self.n - refused % self.n) % self.n;
            self.p.est_tx += est_sent;
            self.p.est_refused += est_all - est_sent;
            self.p.flood_tx += r.sent as u64 - est_sent;
            self.p.flood_refused += (len - r.sent) as u64 - (est_all - est_sent);
        }

        /// Stop sending, drain what comes back, then (with `--sync`) say
        /// `name` is next and wait for the harness's go.
        fn gap(&mut self, name: &str) {
            self.drain();
            let Some(dir) = &self.o.sync else { return };
            let _ = std::fs::write(dir.join(format!("{name}.ready")), b"");
            let go = dir.join(format!("{name}.go"));
            let by = Instant::now() + Duration::from_secs(60);
            while !Path::new(&go).exists() {
                if Instant::now() >= by {
                    eprintln!("lbgen: no {} within 60 s", go.display());
                    std::process::exit(1);
                }
                self.poll();
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        /// Poll until nothing has come back for 200 ms (at most 5 s): the
        /// system under test has then handled every frame sent (it sends
        /// each back), so its counters cover them all.
        fn drain(&mut self) {
            let by = Instant::now() + Duration::from_secs(5);
            let mut quiet_since = Instant::now();
            while Instant::now() < by && quiet_since.elapsed() < Duration::from_millis(200) {
                let before = self.p.est_rx + self.p.flood_rx;
                self.poll();
                if self.p.est_rx + self.p.flood_rx != before {
                    quiet_since = Instant::now();
                }
            }
        }

        /// Established frames paced at `--rate-mpps` (each burst takes
        /// those due; behind by more than a burst, it does not catch up),
        /// with flood frames filling every burst when `tpl` is given.
        /// Without the flood, it lasts at least one pass over the flows (so
        /// every flow placed late is confirmed before the flood).
        fn paced(&mut self, secs: f64, tpl: Option<&Template>, k: &mut u64) -> Phase {
            self.p = Phase::default();
            self.hist.reset();
            let per_frame = self.hz / (self.o.rate_mpps * 1e6);
            let start = Instant::now();
            let mut due_at = dataplane::dpdk::rdtsc() as f64;
            let pass = if tpl.is_none() { self.n as u64 } else { 0 };
            while start.elapsed().as_secs_f64() < secs || self.p.est_tx < pass {
                if start.elapsed() > Duration::from_secs(600) {
                    eprintln!("lbgen: {} of {pass} frames in 600 s", self.p.est_tx);
                    std::process::exit(1);
                }
                let now = dataplane::dpdk::rdtsc() as f64;
                due_at = due_at.max(now - BURST_SIZE as f64 * per_frame);
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "0 to a burst"
                )]
                let due = (((now - due_at) / per_frame).max(0.0) as usize).min(BURST_SIZE);
                if tpl.is_some() {
                    self.send(due, BURST_SIZE, tpl, k);
                    due_at += due as f64 * per_frame;
                } else if due == BURST_SIZE {
                    self.send(due, due, None, k);
                    due_at += due as f64 * per_frame;
                }
                self.poll();
            }
            self.p.secs = start.elapsed().as_secs_f64();
            // What comes back after the phase is still the phase's.
            self.drain();
            std::mem::take(&mut self.p)
        }
    }

    fn phase_json(p: &Phase, hist: &hdrhistogram::Histogram<u64>) -> String {
        let m = |x: u64| x as f64 / p.secs.max(1e-9) / 1e6;
        let q = |x: f64| hist.value_at_quantile(x) as f64 / 1e3;
        format!(
            "{{\"seconds\":{:.4},\"est_tx\":{},\"est_refused\":{},\"est_rx\":{},\"est_tx_mpps\":{:.4},\"est_rx_mpps\":{:.4},\
             \"flood_tx\":{},\"flood_refused\":{},\"flood_rx\":{},\"flood_tx_mpps\":{:.4},\"flood_offered_mpps\":{:.4},\
             \"lat_p50_us\":{:.2},\"lat_p99_us\":{:.2},\"lat_p999_us\":{:.2}}}",
            p.secs,
            p.est_tx,
            p.est_refused,
            p.est_rx,
            m(p.est_tx),
            m(p.est_rx),
            p.flood_tx,
            p.flood_refused,
            p.flood_rx,
            m(p.flood_tx),
            m(p.flood_tx + p.flood_refused),
            q(0.5),
            q(0.99),
            q(0.999),
        )
    }

    /// Warm-up, baseline, flood; the report as one JSON line.
    pub fn run(
        o: &Options,
        q: &mut Queue<'_>,
        pool: &'static Mempool,
        all: &[u8],
        at: Layout,
        hz: f64,
        tpl: &Template,
    ) -> String {
        let mut r = Run {
            o,
            q,
            pool,
            all,
            n: all.len() / o.size,
            next: 0,
            at,
            hz,
            back: Burst::new(),
            out: Burst::new(),
            hist: hdrhistogram::Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("bounds"),
            p: Phase::default(),
        };
        // Establish and confirm: every flow's second packet confirms its
        // entry (TCP: an ACK after the first segment; UDP: a second
        // datagram). Three passes, so flows placed late get their second.
        let start = Instant::now();
        let mut k = 0u64;
        let passes = 3 * r.n as u64;
        while r.p.est_tx < passes || start.elapsed().as_secs_f64() < o.warmup {
            if start.elapsed() > Duration::from_secs(300) {
                eprintln!(
                    "lbgen: warm-up: {} of {passes} frames sent in 300 s",
                    r.p.est_tx
                );
                std::process::exit(1);
            }
            r.send(BURST_SIZE, BURST_SIZE, None, &mut k);
            r.poll();
        }
        let warm = start.elapsed().as_secs_f64();
        let warm_tx = r.p.est_tx;
        r.gap("base");
        let base = r.paced(o.seconds, None, &mut k);
        let base_json = phase_json(&base, &r.hist);
        r.gap("flood");
        let flood = r.paced(o.flood_seconds, Some(tpl), &mut k);
        let flood_json = phase_json(&flood, &r.hist);
        format!(
            "{{\"mode\":\"flood\",\"flows\":{},\"size\":{},\"proto\":\"{}\",\"ip\":{},\"vips\":{},\"rate_mpps\":{},\
             \"flood_kind\":\"{}\",\"warmup_s\":{warm:.3},\"warmup_tx\":{warm_tx},\"flood_tuples\":{k},\
             \"base\":{base_json},\"flood\":{flood_json}}}",
            o.flows,
            o.size,
            if o.tcp { "tcp" } else { "udp" },
            if o.ipv6 { 6 } else { 4 },
            o.vips,
            o.rate_mpps,
            if o.tcp { "syn" } else { "udp" },
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn flood_tuples_never_repeat_and_keep_their_checksums() {
            for (ipv6, tcp) in [(false, false), (false, true), (true, false), (true, true)] {
                let mut o = super::super::tests::options(ipv6, tcp);
                o.vips = 1;
                let at = Layout::of(&o);
                let mac = MacAddr([2, 0, 0, 0, 0, 2]);
                let t = Template::new(&o, mac, at);
                let mut seen = std::collections::HashSet::new();
                for k in [0, 1, PORTS - 1, PORTS, 3 * PORTS + 7, 50_000_000] {
                    let mut d = t.frame.clone();
                    t.write(&mut d, k);
                    let tuple = [&d[t.src_at..t.src_at + 4], &d[at.l4_at..at.l4_at + 2]].concat();
                    assert!(seen.insert(tuple), "k {k} repeats a tuple");
                    // The frame built from scratch with that tuple.
                    let a = t.base() + (k / PORTS) as u32;
                    let port = (1024 + k % PORTS) as u16;
                    let src = if ipv6 {
                        IpAddr::V6(Ipv6Addr::from(
                            (0x2001_0db8_f100_u128 << 80) | u128::from(a - t.base()),
                        ))
                    } else {
                        IpAddr::V4(Ipv4Addr::from(a))
                    };
                    let payload = vec![0u8; o.size - at.stamp_at];
                    let want = if tcp {
                        build::tcp_frame(o.dst_mac, mac, src, vip(&o, 0), port, 443, SYN, &payload)
                    } else {
                        build::udp_frame(o.dst_mac, mac, src, vip(&o, 0), port, 443, &payload)
                    };
                    assert_eq!(d, want, "ipv6 {ipv6} tcp {tcp} k {k}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn options(ipv6: bool, tcp: bool) -> Options {
        let mut o = parse(
            &[
                "--port",
                "p",
                "--dst-mac",
                "02:00:00:00:00:01",
                "--size",
                "128",
            ]
            .map(String::from),
        )
        .unwrap();
        (o.ipv6, o.tcp, o.flows, o.vips) = (ipv6, tcp, 130, 3);
        o
    }

    #[test]
    fn a_renewed_flow_is_the_frame_built_with_the_next_port() {
        for (ipv6, tcp) in [(false, false), (false, true), (true, false), (true, true)] {
            let o = options(ipv6, tcp);
            let at = Layout::of(&o);
            let mac = MacAddr([2, 0, 0, 0, 0, 2]);
            let mut all = frames(&o, mac, at);
            let before = all.clone();
            for i in 0..130 {
                renew(&mut all[i * o.size..(i + 1) * o.size], at, !ipv6 && !tcp);
            }
            for i in 0..130usize {
                let f = &all[i * o.size..(i + 1) * o.size];
                let src = if ipv6 {
                    IpAddr::V6(Ipv6Addr::from(
                        (0x2001_0db8_0100_u128 << 80) | (i as u128 >> 6),
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::from(0x6400_0000 | (i as u32 >> 6)))
                };
                let sport = 1024 + (i & 0x3f) as u16 * 997 + 1;
                let payload = vec![0u8; o.size - at.stamp_at];
                let dst = vip(&o, i as u32 % 3);
                let want = if tcp {
                    build::tcp_frame(o.dst_mac, mac, src, dst, sport, 443, ACK, &payload)
                } else {
                    build::udp_frame(o.dst_mac, mac, src, dst, sport, 443, &payload)
                };
                assert_eq!(f, &want[..], "ipv6 {ipv6} tcp {tcp} flow {i}");
                assert!(at.matches(&{
                    let mut g = f.to_vec();
                    g[at.stamp_at..at.stamp_at + 8].copy_from_slice(&MAGIC.to_le_bytes());
                    g
                }));
                assert_ne!(f, &before[i * o.size..(i + 1) * o.size]);
            }
        }
    }

    #[test]
    fn sizes_too_small_for_the_headers_are_refused() {
        let args = |extra: &[&str]| -> Vec<String> {
            ["--port", "p", "--dst-mac", "02:00:00:00:00:01"]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect()
        };
        assert!(parse(&args(&["--size", "64"])).is_ok());
        let e = parse(&args(&["--size", "64", "--ipv6", "--proto", "tcp"]))
            .err()
            .unwrap();
        assert!(e.contains("90 to 1514"), "{e}");
        assert!(parse(&args(&["--proto", "sctp"])).is_err());
    }

    #[test]
    fn times_must_be_seconds_from_zero() {
        let args = |k: &str, v: &str| -> Vec<String> {
            ["--port", "p", "--dst-mac", "02:00:00:00:00:01", k, v]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(parse(&args("--linger", "5")).unwrap().linger, 5.0);
        for k in ["--seconds", "--warmup", "--linger"] {
            for bad in ["-1", "NaN", "1e9"] {
                let e = parse(&args(k, bad)).err().unwrap();
                assert!(e.starts_with(k) && e.contains("0 to 86400"), "{e}");
            }
        }
    }
}
