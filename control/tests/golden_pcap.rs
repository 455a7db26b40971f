//! Golden-pcap test of `lbd` as a process: a committed pcap of crafted frames
//! (TCP/UDP flows to VIPs over IPv4 and IPv6, ARP and ND for VIPs, ICMP
//! errors, fragments, VLAN, unknown VIP port, a VIP whose backends are all
//! down, malformed frames) goes in through DPDK's net_pcap; what lbd sends
//! comes out and must equal the committed expected pcap frame by frame, byte
//! by byte. Independently of the golden file, every forwarded frame must be
//! its input with only the Ethernet addresses changed, each flow must keep
//! one backend, and lbd's counters must account for every frame by reason.
//!
//! `LB_BLESS=1 cargo test -p control --test golden_pcap` rewrites the golden
//! files (then read them with `tcpdump -e -n -r`).

use lb_testkit::eal;
mod pcap;

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use lb_core::packet::{build, MacAddr};

/// net_pcap's port MAC: 02:70:63:61:70:<port index> ("pcap").
const PORT: MacAddr = MacAddr([0x02, 0x70, 0x63, 0x61, 0x70, 0x00]);
const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xc1]);
const ROUTER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xee]);
const BACKENDS: [MacAddr; 5] = [
    MacAddr([2, 0, 0, 0, 0, 0x11]),
    MacAddr([2, 0, 0, 0, 0, 0x12]),
    MacAddr([2, 0, 0, 0, 0, 0x13]),
    MacAddr([2, 0, 0, 0, 0, 0x21]),
    MacAddr([2, 0, 0, 0, 0, 0x22]),
];
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const VIP_DOWN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 20);
const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

const CONFIG: &str = r#"
local_addresses = ["192.0.2.1"]

[[vip]]
address = "198.51.100.10"
port = 443
protocol = "tcp"
table_size = 1009
[[vip.backend]]
address = "192.0.2.11"
mac = "02:00:00:00:00:11"
[[vip.backend]]
address = "192.0.2.12"
mac = "02:00:00:00:00:12"
[[vip.backend]]
address = "192.0.2.13"
mac = "02:00:00:00:00:13"
weight = 2

[[vip]]
address = "2001:db8::10"
port = 5000
protocol = "udp"
[[vip.backend]]
address = "2001:db8::21"
mac = "02:00:00:00:00:21"
[[vip.backend]]
address = "2001:db8::22"
mac = "02:00:00:00:00:22"

[[vip]]
address = "2001:db8::10"
port = 443
protocol = "tcp"
[[vip.backend]]
address = "2001:db8::21"
mac = "02:00:00:00:00:21"
[[vip.backend]]
address = "2001:db8::22"
mac = "02:00:00:00:00:22"

[[vip]]
address = "198.51.100.10"
port = 9000
protocol = "udp"
[[vip.backend]]
address = "192.0.2.11"
mac = "02:00:00:00:00:11"

[[vip]]
address = "198.51.100.20"
port = 443
protocol = "tcp"
[[vip.backend]]
address = "192.0.2.31"
mac = "02:00:00:00:00:31"
state = "down"
"#;

/// What lbd must do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// To a backend; frames with the same flow id must reach the same one.
    Forward(u32),
    Icmp(u32),
    Arp,
    Nd,
    Drop(&'static str),
    ToKernel,
}

fn vip6() -> Ipv6Addr {
    "2001:db8::10".parse().unwrap()
}

fn client6(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 1, i)
}

fn client4(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, i)
}

fn cases() -> Vec<(&'static str, Vec<u8>, Want)> {
    let mut c: Vec<(&'static str, Vec<u8>, Want)> = Vec::new();
    for i in 0..6u8 {
        let sport = 40000 + u16::from(i);
        c.push((
            "tcp4 syn",
            build::tcp4(PORT, CLIENT, client4(i + 1), VIP4, sport, 443, SYN, b""),
            Want::Forward(u32::from(i)),
        ));
    }
    for i in 0..6u8 {
        let sport = 40000 + u16::from(i);
        c.push((
            "tcp4 data",
            build::tcp4(
                PORT,
                CLIENT,
                client4(i + 1),
                VIP4,
                sport,
                443,
                ACK | 0x08,
                b"GET /live/stream.m3u8 HTTP/1.1\r\n\r\n",
            ),
            Want::Forward(u32::from(i)),
        ));
    }
    for i in 0..3u16 {
        c.push((
            "udp6",
            build::udp6(
                PORT,
                CLIENT,
                client6(i),
                vip6(),
                50000 + i,
                5000,
                &[0x47; 188],
            ),
            Want::Forward(100 + u32::from(i)),
        ));
        c.push((
            "udp6 again",
            build::udp6(
                PORT,
                CLIENT,
                client6(i),
                vip6(),
                50000 + i,
                5000,
                &[0x47; 1316],
            ),
            Want::Forward(100 + u32::from(i)),
        ));
    }
    c.push((
        "tcp6 syn to a udp-only vip address",
        build::tcp6(PORT, CLIENT, client6(9), vip6(), 50009, 5000, SYN, b""),
        Want::Drop("unknown_vip_port"),
    ));
    c.push((
        "tcp6 syn",
        build::tcp6(PORT, CLIENT, client6(10), vip6(), 50010, 443, SYN, b""),
        Want::Forward(400),
    ));
    c.push((
        "tcp6 data",
        build::tcp6(
            PORT,
            CLIENT,
            client6(10),
            vip6(),
            50010,
            443,
            ACK,
            b"GET /vod/seg1.ts HTTP/1.1\r\n\r\n",
        ),
        Want::Forward(400),
    ));
    c.push((
        "udp4 (SRT) to a udp vip",
        build::udp4(PORT, CLIENT, client4(70), VIP4, 40300, 9000, &[0x80; 188]),
        Want::Forward(500),
    ));
    c.push((
        "arp for vip",
        build::arp_request(CLIENT, client4(1), VIP4),
        Want::Arp,
    ));
    c.push((
        "arp for local",
        build::arp_request(CLIENT, client4(1), LOCAL4),
        Want::Arp,
    ));
    c.push((
        "arp for other",
        build::arp_request(CLIENT, client4(1), Ipv4Addr::new(192, 0, 2, 99)),
        Want::ToKernel,
    ));
    c.push((
        "ns for vip6",
        build::neighbor_solicit(CLIENT, client6(0), vip6()),
        Want::Nd,
    ));
    let reply = build::ipv4(
        VIP4,
        client4(1),
        6,
        &build::tcp(443, 40000, ACK, &[0; 1400], 0),
    );
    c.push((
        "icmp frag needed",
        build::icmp4_frag_needed(PORT, ROUTER, Ipv4Addr::new(203, 0, 113, 254), &reply, 1400),
        Want::Icmp(0),
    ));
    let reply6 = build::ipv6(
        vip6(),
        client6(1),
        17,
        &build::udp(5000, 50001, &[0; 1400], 0),
    );
    c.push((
        "icmp6 packet too big",
        build::icmp6_packet_too_big(PORT, ROUTER, "2001:db8::fe".parse().unwrap(), &reply6, 1280),
        Want::Icmp(101),
    ));
    let first = build::tcp(40100, 443, ACK, &[0; 32], 0);
    c.push((
        "fragment 1",
        build::ethernet(
            PORT,
            CLIENT,
            0x0800,
            &build::ipv4_fragment(client4(50), VIP4, 6, 0x2000, 9, &first),
        ),
        Want::Forward(200),
    ));
    c.push((
        "fragment 2",
        build::ethernet(
            PORT,
            CLIENT,
            0x0800,
            &build::ipv4_fragment(client4(50), VIP4, 6, 0x2005, 9, &[1; 40]),
        ),
        Want::Forward(200),
    ));
    c.push((
        "fragment 3",
        build::ethernet(
            PORT,
            CLIENT,
            0x0800,
            &build::ipv4_fragment(client4(50), VIP4, 6, 0x000a, 9, &[2; 8]),
        ),
        Want::Forward(200),
    ));
    let syn = build::tcp4(PORT, CLIENT, client4(60), VIP4, 40200, 443, SYN, b"");
    let mut tagged = syn[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
    tagged.extend_from_slice(&syn[12..]);
    c.push(("vlan 100 syn", tagged, Want::Forward(300)));
    c.push((
        "full-size segment",
        build::tcp4(
            PORT,
            CLIENT,
            client4(1),
            VIP4,
            40000,
            443,
            ACK,
            &[0x5a; 1460],
        ),
        Want::Forward(0),
    ));
    // 9000-byte jumbo frame: net_pcap hands it over in several mbuf segments.
    c.push((
        "jumbo segment",
        build::tcp4(
            PORT,
            CLIENT,
            client4(1),
            VIP4,
            40000,
            443,
            ACK,
            &[0x4a; 8900],
        ),
        Want::Forward(0),
    ));
    c.push((
        "unknown vip port",
        build::tcp4(PORT, CLIENT, client4(1), VIP4, 40000, 80, SYN, b""),
        Want::Drop("unknown_vip_port"),
    ));
    c.push((
        "vip with every backend down",
        build::tcp4(PORT, CLIENT, client4(1), VIP_DOWN, 40000, 443, SYN, b""),
        Want::Drop("no_backend"),
    ));
    c.push((
        "not for us",
        build::tcp4(CLIENT, PORT, VIP4, client4(1), 443, 40000, ACK, b""),
        Want::Drop("not_for_us"),
    ));
    c.push((
        "to the host",
        build::tcp4(PORT, CLIENT, client4(1), LOCAL4, 40000, 22, SYN, b""),
        Want::ToKernel,
    ));
    let good = build::tcp4(PORT, CLIENT, client4(1), VIP4, 40000, 443, ACK, b"");
    c.push(("runt", good[..10].to_vec(), Want::Drop("truncated")));
    c.push(("ipv4 cut", good[..30].to_vec(), Want::Drop("truncated")));
    c.push((
        "bad ihl",
        with(&good, 14, 0x44),
        Want::Drop("bad_header_length"),
    ));
    c.push((
        "bad version",
        with(&good, 14, 0x65),
        Want::Drop("bad_version"),
    ));
    c.push((
        "total length beyond frame",
        with(&good, 17, 0xff),
        Want::Drop("truncated"),
    ));
    c.push((
        "total length below header",
        with(&with(&good, 16, 0), 17, 10),
        Want::Drop("bad_length"),
    ));
    c.push((
        "tcp offset 4",
        with(&good, 46, 0x40),
        Want::Drop("bad_header_length"),
    ));
    c.push((
        "udp length beyond the datagram",
        with(
            &build::udp4(PORT, CLIENT, client4(70), VIP4, 40300, 9000, b"x"),
            39,
            0xff,
        ),
        Want::Drop("truncated"),
    ));
    c
}

fn with(f: &[u8], at: usize, v: u8) -> Vec<u8> {
    let mut f = f.to_vec();
    f[at] = v;
    f
}

#[test]
fn lbd_forwards_golden_pcap_byte_for_byte() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = golden.join("vip-in.pcap");
    let expected = golden.join("vip-expected.pcap");
    let cases = cases();
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, f, _)| f.clone()).collect();
    let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
    if bless {
        pcap::write(&input, &frames);
    }
    let golden_in = pcap::read(&input);
    assert_eq!(
        golden_in.len(),
        frames.len(),
        "golden input frame count (LB_BLESS=1 to regenerate)"
    );
    for (i, (g, f)) in golden_in.iter().zip(&frames).enumerate() {
        assert!(
            g == f,
            "golden input frame {i} ({}) differs from the case list (LB_BLESS=1 to regenerate)",
            cases[i].0
        );
    }

    let (got, report, stderr) = run_lbd("golden", &input, CONFIG, &[]);

    // Independent of the golden file: what each sent frame must be.
    let sent: Vec<&(&str, Vec<u8>, Want)> = cases
        .iter()
        .filter(|(_, _, w)| matches!(w, Want::Forward(_) | Want::Icmp(_) | Want::Arp | Want::Nd))
        .collect();
    assert_eq!(got.len(), sent.len(), "frames sent\n{stderr}");
    let mut flow_backend: HashMap<u32, MacAddr> = HashMap::new();
    for ((what, input, want), out) in sent.iter().zip(&got) {
        match want {
            Want::Forward(flow) | Want::Icmp(flow) => {
                let to = MacAddr(out[..6].try_into().unwrap());
                assert!(
                    BACKENDS.contains(&to),
                    "{what}: sent to {to}, not a backend"
                );
                assert_eq!(&out[6..12], &PORT.0, "{what}: source is the port");
                assert_eq!(&out[12..], &input[12..], "{what}: IP packet untouched");
                let first = *flow_backend.entry(*flow).or_insert(to);
                assert_eq!(first, to, "{what}: flow {flow} keeps its backend");
            }
            Want::Arp => {
                assert_eq!(&out[..6], &CLIENT.0, "{what}");
                assert_eq!(&out[20..22], &[0, 2], "{what}: an ARP reply");
                assert_eq!(&out[22..28], &PORT.0, "{what}: our MAC answers");
            }
            Want::Nd => {
                assert_eq!(&out[..6], &CLIENT.0, "{what}");
                assert_eq!(out[54], 136, "{what}: a neighbor advertisement");
            }
            _ => unreachable!(),
        }
    }
    let vip4_backends: Vec<MacAddr> = (0..6).map(|f| flow_backend[&f]).collect();
    assert!(vip4_backends.iter().all(|m| BACKENDS[..3].contains(m)));
    assert!(
        (100..103).all(|f| BACKENDS[3..].contains(&flow_backend[&f])),
        "IPv6 VIP uses its own backends"
    );

    if bless {
        pcap::write(&expected, &got);
    }
    let want = pcap::read(&expected);
    assert_eq!(got.len(), want.len(), "forwarded frame count vs golden");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "sent frame {i} ({}) differs from the golden output",
            sent[i].0
        );
    }

    let total = &report["total"];
    let count = |f: &dyn Fn(&Want) -> bool| cases.iter().filter(|(_, _, w)| f(w)).count() as u64;
    assert_eq!(total["rx_packets"], cases.len() as u64, "{report}");
    assert_eq!(total["tx_packets"], sent.len() as u64, "{report}");
    assert_eq!(
        total["forwarded"],
        count(&|w| matches!(w, Want::Forward(_) | Want::Icmp(_))),
        "{report}"
    );
    assert_eq!(
        total["icmp_to_backend"],
        count(&|w| matches!(w, Want::Icmp(_))),
        "{report}"
    );
    assert_eq!(
        total["arp_replies"],
        count(&|w| *w == Want::Arp),
        "{report}"
    );
    assert_eq!(total["nd_adverts"], count(&|w| *w == Want::Nd), "{report}");
    assert_eq!(
        total["to_kernel"], 0,
        "no exception interface in this run: host traffic is a counted drop: {report}"
    );
    let flows = cases
        .iter()
        .filter_map(|(_, _, w)| match w {
            Want::Forward(f) if *f != 200 => Some(*f), // 200: fragments keep no flow entry
            _ => None,
        })
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    assert_eq!(
        flows, 12,
        "six TCP4, three UDP6, one VLAN, one TCP6, one UDP4 flow"
    );
    assert_eq!(total["new_flows"], flows, "{report}");
    assert_eq!(total["active_flows"], flows, "{report}");
    let mut reasons: HashMap<&str, u64> = HashMap::new();
    for (_, _, w) in &cases {
        match w {
            Want::Drop(r) => *reasons.entry(r).or_default() += 1,
            Want::ToKernel => *reasons.entry("no_kernel_path").or_default() += 1,
            _ => {}
        }
    }
    for (reason, n) in total["drops"].as_object().unwrap() {
        assert_eq!(
            n.as_u64().unwrap(),
            reasons.get(reason.as_str()).copied().unwrap_or(0),
            "drops[{reason}]: {report}"
        );
    }
    assert_eq!(report["port_mac"], PORT.to_string());

    // Per-backend counters match what was sent to each backend's MAC.
    let mut per_mac: HashMap<String, u64> = HashMap::new();
    for ((_, _, w), out) in sent.iter().zip(&got) {
        if matches!(w, Want::Forward(_) | Want::Icmp(_)) {
            *per_mac
                .entry(MacAddr(out[..6].try_into().unwrap()).to_string())
                .or_default() += 1;
        }
    }
    let mut counted = 0;
    let mut reported: HashMap<String, u64> = HashMap::new();
    for vip in report["vips"].as_array().unwrap() {
        let mut sum = 0;
        for b in vip["backends"].as_array().unwrap() {
            let packets = b["packets"].as_u64().unwrap();
            *reported
                .entry(b["mac"].as_str().unwrap().to_string())
                .or_default() += packets;
            sum += packets;
        }
        assert_eq!(vip["packets"], sum, "a VIP's packets are its backends' sum");
        counted += sum;
    }
    reported.retain(|_, n| *n > 0);
    assert_eq!(
        reported, per_mac,
        "per-backend packets match the frames each backend got"
    );
    assert_eq!(counted, total["forwarded"].as_u64().unwrap());
}

/// The configuration of the echo and conflict pair: one VIP per family.
const ECHO_CONFIG: &str = r#"
local_addresses = ["192.0.2.1"]

[[vip]]
address = "198.51.100.10"
port = 443
protocol = "tcp"
table_size = 251
[[vip.backend]]
address = "192.0.2.11"
mac = "02:00:00:00:00:11"

[[vip]]
address = "2001:db8::10"
port = 5000
protocol = "udp"
table_size = 251
[[vip.backend]]
address = "2001:db8::21"
mac = "02:00:00:00:00:21"
"#;

/// What lbd must do with a frame of the echo pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EchoWant {
    Reply,
    Conflict,
    Drop(&'static str),
    /// Reported to the control side, then for the host (none here: not a drop).
    Learned,
}

const THIEF: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x66]);

/// Ping for VIPs (answered within `--vip-ping-rate 2`, bursts of 2: the
/// third and fourth requests of the run are over it), other ICMP, and ARP /
/// ND from another MAC claiming a VIP.
fn echo_cases() -> Vec<(&'static str, Vec<u8>, EchoWant)> {
    use lb_core::packet::arp::{OP_REPLY, OP_REQUEST};
    let data: Vec<u8> = (0..56u8).collect();
    let mut bad = build::icmp4_echo(PORT, CLIENT, client4(3), VIP4, 0x77, 1, &data);
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    let mut ttl3 = build::icmp4_echo(PORT, CLIENT, client4(1), VIP4, 0x77, 1, &data);
    ttl3[22] = 3;
    lb_core::packet::ipv4::Ipv4Packet::new_checked(&mut ttl3[14..])
        .unwrap()
        .fill_checksum();
    vec![
        ("echo4 to the vip, ttl 3", ttl3, EchoWant::Reply),
        (
            "echo6 to the vip",
            build::icmp6_echo(PORT, CLIENT, client6(1), vip6(), 0x78, 1, &data),
            EchoWant::Reply,
        ),
        (
            "echo4 over the rate",
            build::icmp4_echo(PORT, CLIENT, client4(1), VIP4, 0x77, 2, &data),
            EchoWant::Drop("echo_rate_limited"),
        ),
        (
            "echo6 over the rate",
            build::icmp6_echo(PORT, CLIENT, client6(1), vip6(), 0x78, 2, &data),
            EchoWant::Drop("echo_rate_limited"),
        ),
        (
            "echo4 with a bad checksum",
            bad,
            EchoWant::Drop("bad_checksum"),
        ),
        (
            "echo4 to the host (no exception path here)",
            build::icmp4_echo(PORT, CLIENT, client4(1), LOCAL4, 0x79, 1, &data),
            EchoWant::Drop("no_kernel_path"),
        ),
        (
            "icmp timestamp request to the vip",
            build::ethernet(
                PORT,
                CLIENT,
                0x0800,
                &build::ipv4(client4(1), VIP4, 1, &[13, 0, 0xf2, 0xff, 0, 0, 0, 0]),
            ),
            EchoWant::Drop("icmp_not_for_flow"),
        ),
        (
            "arp reply for the vip from a backend",
            build::arp(PORT, OP_REPLY, (BACKENDS[0], VIP4), (PORT, LOCAL4)),
            EchoWant::Conflict,
        ),
        (
            "gratuitous arp for the vip",
            build::arp(
                MacAddr::BROADCAST,
                OP_REQUEST,
                (THIEF, VIP4),
                (MacAddr::ZERO, VIP4),
            ),
            EchoWant::Conflict,
        ),
        (
            "unsolicited na for the vip",
            build::neighbor_advert(
                MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                THIEF,
                vip6(),
                "ff02::1".parse().unwrap(),
                vip6(),
                0x20,
            ),
            EchoWant::Conflict,
        ),
        (
            "arp reply from a backend for itself",
            build::arp(
                PORT,
                OP_REPLY,
                (BACKENDS[0], Ipv4Addr::new(192, 0, 2, 11)),
                (PORT, LOCAL4),
            ),
            EchoWant::Learned,
        ),
    ]
}

/// Run lbd over `input` with `config` and `extra` options; what it sent,
/// its `--json` report and its log.
fn run_lbd(
    tag: &str,
    input: &Path,
    config: &str,
    extra: &[&str],
) -> (Vec<Vec<u8>>, serde_json::Value, String) {
    let run = run_lbd_with_host(tag, input, None, config, extra);
    (run.port_out, run.report, run.log)
}

/// What an lbd run over pcaps sent, reported and logged.
struct PcapRun {
    /// Out of the port.
    port_out: Vec<Vec<u8>>,
    /// To the host (with an exception path from a pcap).
    host_out: Vec<Vec<u8>>,
    report: serde_json::Value,
    log: String,
}

/// [`run_lbd`], with `host_in` (the frames the host sends) as the
/// exception path (`--kernel-port` on a second net_pcap) when given.
fn run_lbd_with_host(
    tag: &str,
    input: &Path,
    host_in: Option<&Path>,
    config: &str,
    extra: &[&str],
) -> PcapRun {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let pid = std::process::id();
    let output = tmp.join(format!("{tag}-out-{pid}.pcap"));
    let host_out = tmp.join(format!("{tag}-host-out-{pid}.pcap"));
    let config_path = tmp.join(format!("{tag}-{pid}.toml"));
    std::fs::write(&config_path, config).unwrap();
    let _ = std::fs::remove_file(&output);
    let _ = std::fs::remove_file(&host_out);
    let mut vdevs = vec![format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    )];
    if let Some(h) = host_in {
        vdevs.push(format!(
            "net_pcap1,rx_pcap={},tx_pcap={}",
            h.display(),
            host_out.display()
        ));
    }
    let vdev_refs: Vec<&str> = vdevs.iter().map(String::as_str).collect();
    let mut args = eal::eal_args(tag, "0@0,1@1", &vdev_refs);
    let config_arg = config_path.display().to_string();
    args.extend(
        [
            "--",
            "--port",
            "net_pcap0",
            "--config",
            &config_arg,
            "--flows",
            "4096",
            "--exit-idle-ms",
            "500",
            "--json",
            "--no-grpc",
        ]
        .map(String::from),
    );
    if host_in.is_some() {
        args.extend(["--kernel-port", "net_pcap1"].map(String::from));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let run = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(&args)
        .output()
        .expect("run lbd");
    let log = String::from_utf8_lossy(&run.stderr).to_string();
    assert!(run.status.success(), "lbd failed: {log}");
    let port_out = pcap::read(&output);
    let _ = std::fs::remove_file(&output);
    let host = if host_in.is_some() {
        let h = pcap::read(&host_out);
        let _ = std::fs::remove_file(&host_out);
        h
    } else {
        Vec::new()
    };
    let report = serde_json::from_slice(&run.stdout).expect("lbd --json output");
    PcapRun {
        port_out,
        host_out: host,
        report,
        log,
    }
}

#[test]
fn lbd_answers_vip_pings_and_reports_vip_conflicts_golden_pcap() {
    use lb_core::packet::{
        ethernet::EthernetFrame, icmp, icmpv6, ipv4::Ipv4Packet, ipv6::Ipv6Packet,
    };
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = golden.join("echo-in.pcap");
    let expected = golden.join("echo-expected.pcap");
    let cases = echo_cases();
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, f, _)| f.clone()).collect();
    let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
    if bless {
        pcap::write(&input, &frames);
    }
    assert!(
        pcap::read(&input) == frames,
        "golden input differs from the case list (LB_BLESS=1 to regenerate)"
    );
    let (got, report, stderr) = run_lbd("echo", &input, ECHO_CONFIG, &["--vip-ping-rate", "2"]);

    // Independent of the golden file: each reply is its request answered.
    let sent: Vec<_> = cases
        .iter()
        .filter(|(_, _, w)| *w == EchoWant::Reply)
        .collect();
    assert_eq!(got.len(), sent.len(), "frames sent\n{stderr}");
    for ((what, input, _), out) in sent.iter().zip(&got) {
        assert_eq!(out.len(), input.len(), "{what}");
        assert_eq!(&out[..6], &CLIENT.0, "{what}: back to the asker");
        assert_eq!(&out[6..12], &PORT.0, "{what}: from the port");
        let (e, i) = (
            EthernetFrame::new_checked(&out[..]).unwrap(),
            EthernetFrame::new_checked(&input[..]).unwrap(),
        );
        if e.ethertype() == 0x0800 {
            let (ip, req) = (
                Ipv4Packet::new_checked(e.payload()).unwrap(),
                Ipv4Packet::new_checked(i.payload()).unwrap(),
            );
            assert!(ip.checksum_ok(), "{what}");
            assert_eq!((ip.src(), ip.dst(), ip.ttl()), (req.dst(), req.src(), 64));
            assert!(icmp::checksum_ok(ip.payload()), "{what}");
            assert_eq!(ip.payload()[0], icmp::ECHO_REPLY);
            assert_eq!(
                &ip.payload()[4..],
                &req.payload()[4..],
                "{what}: id, seq, data"
            );
        } else {
            let (ip, req) = (
                Ipv6Packet::new_checked(e.payload()).unwrap(),
                Ipv6Packet::new_checked(i.payload()).unwrap(),
            );
            assert_eq!(
                (ip.src(), ip.dst(), ip.hop_limit()),
                (req.dst(), req.src(), 64)
            );
            let m = lb_core::packet::icmpv6::Icmpv6Packet::new_checked(ip.upper_payload()).unwrap();
            assert!(m.checksum_ok(&ip.src_bytes(), &ip.dst_bytes()), "{what}");
            assert_eq!(m.msg_type(), icmpv6::ECHO_REPLY);
            assert_eq!(&ip.upper_payload()[4..], &req.upper_payload()[4..]);
        }
    }
    if bless {
        pcap::write(&expected, &got);
    }
    let want = pcap::read(&expected);
    assert_eq!(got.len(), want.len(), "sent frame count vs golden");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "sent frame {i} ({}) differs from the golden output",
            sent[i].0
        );
    }

    let total = &report["total"];
    let count = |w: EchoWant| cases.iter().filter(|(_, _, c)| *c == w).count() as u64;
    assert_eq!(total["rx_packets"], cases.len() as u64, "{report}");
    assert_eq!(total["echo_replies"], count(EchoWant::Reply), "{report}");
    assert_eq!(
        total["vip_conflicts"],
        count(EchoWant::Conflict),
        "{report}"
    );
    assert_eq!(total["neigh_learned"], count(EchoWant::Learned), "{report}");
    assert_eq!(total["forwarded"], 0, "{report}");
    assert_eq!(
        total["arp_replies"], 0,
        "a gratuitous ARP is not answered: {report}"
    );
    let mut reasons: HashMap<&str, u64> = HashMap::new();
    for (_, _, w) in &cases {
        if let EchoWant::Drop(r) = w {
            *reasons.entry(r).or_default() += 1;
        }
    }
    for (reason, n) in total["drops"].as_object().unwrap() {
        assert_eq!(
            n.as_u64().unwrap(),
            reasons.get(reason.as_str()).copied().unwrap_or(0),
            "drops[{reason}]: {report}"
        );
    }
    // The monitor took the reports in and warned about each (VIP, MAC).
    for (vip, mac) in [
        ("198.51.100.10", "02:00:00:00:00:11"),
        ("198.51.100.10", "02:00:00:00:00:66"),
        ("2001:db8::10", "02:00:00:00:00:66"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("claims a VIP address") && l.contains(vip) && l.contains(mac)),
            "a warning for {vip} {mac}:\n{stderr}"
        );
    }

    // --no-vip-ping: the same frames, no reply; every echo request to the
    // VIP (the bad one included) is an icmp_not_for_flow drop, as the
    // timestamp request is.
    let (got, report, _) = run_lbd("echo-off", &input, ECHO_CONFIG, &["--no-vip-ping"]);
    assert!(got.is_empty(), "no reply with --no-vip-ping");
    let drops = &report["total"]["drops"];
    assert_eq!(report["total"]["echo_replies"], 0, "{report}");
    assert_eq!(drops["icmp_not_for_flow"], 6, "{report}");
    assert_eq!(drops["echo_rate_limited"], 0, "{report}");
    assert_eq!(
        drops["bad_checksum"], 0,
        "checked only when answering: {report}"
    );
}

/// What lbd must do with a frame the host sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostWant {
    /// A check via the VIP: to this backend (its MAC), the IP packet untouched.
    Steered(MacAddr),
    /// Balanced as a client's; frames with the same flow id reach the same backend.
    Balanced(u32),
    /// Answered back to the host.
    Reply,
    /// Out of the port as sent.
    Unchanged,
    Drop(&'static str),
}

/// The frames the host sends through the exception path (each from the
/// port's MAC, to it: the host's neighbour entry for a VIP points there),
/// with the source ports of checks via the VIP computed from the state's
/// slots, as lbd's checker computes them.
fn host_cases() -> Vec<(&'static str, Vec<u8>, HostWant)> {
    let config: control::config::Config = toml::from_str(CONFIG).unwrap();
    let state = control::state::DesiredState::from_config(&config).unwrap();
    let slot = |vip: &str, be: &str| {
        let addr: std::net::IpAddr = be.parse().unwrap();
        let (_, v) = state
            .vips()
            .iter()
            .find(|(k, _)| k.to_string() == vip)
            .unwrap_or_else(|| panic!("{vip} in CONFIG"));
        v.backends[&addr].id.slot
    };
    let probe = |s: u16| lb_core::forward::probe_port(s).unwrap();
    let be12 = slot("198.51.100.10:443/tcp", "192.0.2.12");
    let be13 = slot("198.51.100.10:443/tcp", "192.0.2.13");
    let be22 = slot("[2001:db8::10]:5000/udp", "2001:db8::22");
    let local6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let data: Vec<u8> = (0..32u8).collect();
    vec![
        (
            "check via the vip of 192.0.2.12",
            build::tcp4(PORT, PORT, LOCAL4, VIP4, probe(be12), 443, SYN, b""),
            HostWant::Steered(BACKENDS[1]),
        ),
        (
            "http check on port 80 of the vip, of 192.0.2.13",
            build::tcp4(PORT, PORT, LOCAL4, VIP4, probe(be13), 80, SYN, b""),
            HostWant::Steered(BACKENDS[2]),
        ),
        (
            "udp check via the ipv6 vip of 2001:db8::22",
            build::udp6(
                PORT,
                PORT,
                local6,
                vip6(),
                probe(be22),
                5000,
                b"lbd-health\n",
            ),
            HostWant::Steered(BACKENDS[4]),
        ),
        (
            "probe port of no backend",
            build::tcp4(PORT, PORT, LOCAL4, VIP4, probe(4000), 443, SYN, b""),
            HostWant::Drop("probe_no_backend"),
        ),
        (
            "probe port of another vip address's backend",
            build::tcp4(PORT, PORT, LOCAL4, VIP4, probe(be22), 443, SYN, b""),
            HostWant::Drop("probe_no_backend"),
        ),
        (
            "host connection to the vip",
            build::tcp4(PORT, PORT, LOCAL4, VIP4, 40000, 443, SYN, b""),
            HostWant::Balanced(1),
        ),
        (
            "host connection to the vip, next packet",
            build::tcp4(PORT, PORT, LOCAL4, VIP4, 40000, 443, ACK, b"GET"),
            HostWant::Balanced(1),
        ),
        (
            "host to a vip port nobody serves",
            build::tcp4(PORT, PORT, LOCAL4, VIP4, 40001, 22, SYN, b""),
            HostWant::Drop("unknown_vip_port"),
        ),
        (
            "host to a vip whose backends are down",
            build::tcp4(PORT, PORT, LOCAL4, VIP_DOWN, 40002, 443, SYN, b""),
            HostWant::Drop("no_backend"),
        ),
        (
            "host ping of the vip",
            build::icmp4_echo(PORT, PORT, LOCAL4, VIP4, 0x42, 1, &data),
            HostWant::Reply,
        ),
        (
            "check via the real address",
            build::tcp4(
                BACKENDS[0],
                PORT,
                LOCAL4,
                Ipv4Addr::new(192, 0, 2, 11),
                40003,
                80,
                SYN,
                b"",
            ),
            HostWant::Unchanged,
        ),
        (
            "host arp request",
            build::arp_request(PORT, LOCAL4, Ipv4Addr::new(192, 0, 2, 11)),
            HostWant::Unchanged,
        ),
    ]
}

/// The exception path's frames through lbd (`--kernel-port` on a net_pcap
/// replaying what the host sends): checks via the VIP steered to the
/// backend their source port names, other host traffic to a VIP balanced
/// as a client's, the reserved range's strays dropped, a ping of the VIP
/// answered back to the host, the rest out of the port unchanged; and from
/// the port, a backend's answer to a check reaches the host.
#[test]
fn lbd_steers_and_balances_what_the_host_sends_golden_pcap() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let (input, host_in) = (
        golden.join("host-port-in.pcap"),
        golden.join("host-in.pcap"),
    );
    let (expected, host_expected) = (
        golden.join("host-expected.pcap"),
        golden.join("host-back-expected.pcap"),
    );
    let cases = host_cases();
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, f, _)| f.clone()).collect();
    // From the port: 192.0.2.12's answer (from the VIP) to the first check.
    let answer = build::tcp4(
        PORT,
        BACKENDS[1],
        VIP4,
        LOCAL4,
        443,
        frames[0][34..36]
            .try_into()
            .map(u16::from_be_bytes)
            .unwrap(),
        SYN | ACK,
        b"",
    );
    let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
    if bless {
        pcap::write(&host_in, &frames);
        pcap::write(&input, std::slice::from_ref(&answer));
    }
    assert!(
        pcap::read(&host_in) == frames && pcap::read(&input) == vec![answer.clone()],
        "golden inputs differ from the case list (LB_BLESS=1 to regenerate)"
    );
    let run = run_lbd_with_host("host", &input, Some(&host_in), CONFIG, &[]);

    // Independent of the golden files: what each frame must become.
    let sent: Vec<_> = cases
        .iter()
        .filter(|(_, _, w)| {
            matches!(
                w,
                HostWant::Steered(_) | HostWant::Balanced(_) | HostWant::Unchanged
            )
        })
        .collect();
    assert_eq!(run.port_out.len(), sent.len(), "frames sent\n{}", run.log);
    let mut flow_backend: HashMap<u32, MacAddr> = HashMap::new();
    for ((what, input, want), out) in sent.iter().zip(&run.port_out) {
        match want {
            HostWant::Steered(mac) => {
                assert_eq!(&out[..6], &mac.0, "{what}: to the backend named");
                assert_eq!(&out[6..12], &PORT.0, "{what}");
                assert_eq!(&out[12..], &input[12..], "{what}: IP packet untouched");
            }
            HostWant::Balanced(flow) => {
                let to = MacAddr(out[..6].try_into().unwrap());
                assert!(BACKENDS[..3].contains(&to), "{what}: to {to}");
                assert_eq!(&out[12..], &input[12..], "{what}: IP packet untouched");
                let first = *flow_backend.entry(*flow).or_insert(to);
                assert_eq!(first, to, "{what}: the flow keeps its backend");
            }
            HostWant::Unchanged => assert_eq!(out, input, "{what}"),
            _ => unreachable!(),
        }
    }
    // To the host: the backend's answer, and the echo reply.
    assert_eq!(run.host_out.len(), 2, "frames to the host\n{}", run.log);
    let reply = run
        .host_out
        .iter()
        .find(|f| f[23] == 1)
        .expect("an ICMP frame to the host");
    let ping = &cases.iter().find(|c| c.2 == HostWant::Reply).unwrap().1;
    assert_eq!(reply.len(), ping.len());
    assert_eq!(&reply[26..30], &VIP4.octets(), "from the VIP");
    assert_eq!(&reply[30..34], &LOCAL4.octets(), "to the host");
    assert_eq!(reply[34], 0, "an echo reply");
    assert!(
        run.host_out.contains(&answer),
        "the check's answer reached the host"
    );

    if bless {
        pcap::write(&expected, &run.port_out);
        pcap::write(&host_expected, &run.host_out);
    }
    assert!(
        run.port_out == pcap::read(&expected),
        "frames out of the port differ from the golden output"
    );
    // The port's frame and the host's are read in the same poll round;
    // which reaches the host first is the worker's order, not a contract.
    let sorted = |mut v: Vec<Vec<u8>>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(run.host_out.clone()),
        sorted(pcap::read(&host_expected)),
        "frames to the host differ from the golden output"
    );

    let total = &run.report["total"];
    let count = |f: &dyn Fn(&HostWant) -> bool| cases.iter().filter(|c| f(&c.2)).count() as u64;
    assert_eq!(total["from_kernel"], cases.len() as u64, "{}", run.report);
    assert_eq!(
        total["probes_steered"],
        count(&|w| matches!(w, HostWant::Steered(_))),
        "{}",
        run.report
    );
    assert_eq!(
        total["host_balanced"],
        count(&|w| matches!(w, HostWant::Balanced(_))),
        "{}",
        run.report
    );
    assert_eq!(total["host_replies"], 1, "{}", run.report);
    assert_eq!(
        total["host_dropped"],
        count(&|w| matches!(w, HostWant::Drop(_))),
        "{}",
        run.report
    );
    assert_eq!(total["to_kernel"], 1, "{}", run.report);
    let mut reasons: HashMap<&str, u64> = HashMap::new();
    for (_, _, w) in &cases {
        if let HostWant::Drop(r) = w {
            *reasons.entry(r).or_default() += 1;
        }
    }
    for (reason, n) in total["drops"].as_object().unwrap() {
        assert_eq!(
            n.as_u64().unwrap(),
            reasons.get(reason.as_str()).copied().unwrap_or(0),
            "drops[{reason}]: {}",
            run.report
        );
    }
}

/// Tunnelled backends, one VIP port per method and family, each with one
/// backend behind a gateway (static MACs, so no resolution is needed):
/// IPv4 VIP ports 81-83 through IPIP, GUE and VXLAN over IPv4, 84-86 over
/// IPv6; IPv6 VIP ports 81 (IPIP over IPv6), 82 (GUE over IPv4), 83 (VXLAN
/// over IPv6). lbd runs with `--mtu 1400`.
const TUNNEL_CONFIG: &str = r#"
local_addresses = ["192.0.2.1", "2001:db8::1"]
tunnel_sources = ["192.0.2.1", "2001:db8::1"]

[[route]]
prefix = "10.20.0.0/24"
gateway = "192.0.2.254"
mac = "02:00:00:00:00:fe"

[[route]]
prefix = "2001:db8:20::/64"
gateway = "2001:db8::fe"
mac = "02:00:00:00:00:fd"

[[vip]]
address = "198.51.100.10"
port = 81
protocol = "tcp"
[[vip.backend]]
address = "10.20.0.17"
forward = "ipip"

[[vip]]
address = "198.51.100.10"
port = 82
protocol = "tcp"
[[vip.backend]]
address = "10.20.0.18"
forward = "gue"

[[vip]]
address = "198.51.100.10"
port = 83
protocol = "tcp"
[[vip.backend]]
address = "10.20.0.15"
forward = "vxlan"
vni = 100
mac = "02:00:00:00:05:01"

[[vip]]
address = "198.51.100.10"
port = 84
protocol = "tcp"
[[vip.backend]]
address = "2001:db8:20::17"
forward = "ipip"

[[vip]]
address = "198.51.100.10"
port = 85
protocol = "udp"
[[vip.backend]]
address = "2001:db8:20::18"
forward = "gue"
tunnel_port = 7080

[[vip]]
address = "198.51.100.10"
port = 86
protocol = "tcp"
[[vip.backend]]
address = "2001:db8:20::15"
forward = "vxlan"
vni = 16777215
mac = "02:00:00:00:05:02"

[[vip]]
address = "2001:db8::10"
port = 81
protocol = "tcp"
[[vip.backend]]
address = "2001:db8:20::17"
forward = "ipip"

[[vip]]
address = "2001:db8::10"
port = 82
protocol = "tcp"
[[vip.backend]]
address = "10.20.0.18"
forward = "gue"

[[vip]]
address = "2001:db8::10"
port = 83
protocol = "udp"
[[vip.backend]]
address = "2001:db8:20::15"
forward = "vxlan"
vni = 100
mac = "02:00:00:00:05:02"
"#;

const GW4: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
const GW6: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfd]);

/// What lbd must send for a frame of the tunnel run.
#[derive(Debug, Clone, PartialEq)]
enum TunnelWant {
    /// Out to `gateway` through `method` ("ipip", "gue:PORT", "vxlan:VNI")
    /// to `backend`.
    Tunnel {
        gateway: MacAddr,
        backend: &'static str,
        method: &'static str,
    },
    /// An ICMP too-big back to the client telling it `mtu`.
    TooBig(u32),
    Drop(&'static str),
}

/// An IPv4 frame with DF cleared (its header checksum redone).
fn fragmentable(mut f: Vec<u8>) -> Vec<u8> {
    f[20] &= !0x40;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = lb_core::packet::checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

fn tunnel_cases() -> Vec<(&'static str, Vec<u8>, TunnelWant)> {
    use TunnelWant::*;
    let t = |gateway, backend, method| Tunnel {
        gateway,
        backend,
        method,
    };
    let tcp4 = |port, flags, data: &[u8]| {
        build::tcp4(
            PORT,
            CLIENT,
            client4(7),
            VIP4,
            40000 + port,
            port,
            flags,
            data,
        )
    };
    let tcp6 = |port, flags, data: &[u8]| {
        build::tcp6(
            PORT,
            CLIENT,
            client6(7),
            vip6(),
            40000 + port,
            port,
            flags,
            data,
        )
    };
    let mut c = vec![
        (
            "ipip4 syn",
            tcp4(81, SYN, b""),
            t(GW4, "10.20.0.17", "ipip"),
        ),
        (
            "ipip4 data",
            tcp4(81, ACK, b"GET /live/a.m3u8 HTTP/1.1\r\n\r\n"),
            t(GW4, "10.20.0.17", "ipip"),
        ),
        (
            "gue4 syn",
            tcp4(82, SYN, b""),
            t(GW4, "10.20.0.18", "gue:6080"),
        ),
        (
            "vxlan4 syn",
            tcp4(83, SYN, b""),
            t(GW4, "10.20.0.15", "vxlan:100"),
        ),
        (
            "ipip 4-in-6 syn",
            tcp4(84, SYN, b""),
            t(GW6, "2001:db8:20::17", "ipip"),
        ),
        (
            "gue over ipv6, udp",
            build::udp4(PORT, CLIENT, client4(8), VIP4, 5000, 85, &[0x47; 188]),
            t(GW6, "2001:db8:20::18", "gue:7080"),
        ),
        (
            "vxlan over ipv6 syn",
            tcp4(86, SYN, b""),
            t(GW6, "2001:db8:20::15", "vxlan:16777215"),
        ),
        (
            "ipip6 syn",
            tcp6(81, SYN, b""),
            t(GW6, "2001:db8:20::17", "ipip"),
        ),
        (
            "gue 6-in-4 syn",
            tcp6(82, SYN, b""),
            t(GW4, "10.20.0.18", "gue:6080"),
        ),
        (
            "vxlan6 udp",
            build::udp6(PORT, CLIENT, client6(8), vip6(), 5000, 83, &[0x47; 1200]),
            t(GW6, "2001:db8:20::15", "vxlan:100"),
        ),
    ];
    // --mtu 1400: IPIP over IPv4 fits 1380 bytes of IP; 1400 do not.
    let big = tcp4(81, ACK, &[0x55; 1360]);
    c.push(("ipip4 1400 bytes with DF", big.clone(), TooBig(1380)));
    c.push((
        "ipip4 1380 bytes",
        tcp4(81, ACK, &[0x55; 1340]),
        t(GW4, "10.20.0.17", "ipip"),
    ));
    c.push((
        "ipip4 1400 bytes without DF",
        fragmentable(big),
        Drop("oversize"),
    ));
    // VXLAN over IPv6 adds 70: 1330 bytes of IP fit.
    c.push((
        "vxlan6 1380 bytes",
        build::udp6(PORT, CLIENT, client6(8), vip6(), 5000, 83, &[0x47; 1332]),
        TooBig(1330),
    ));
    c
}

/// One frame as tshark dissects it: each field's values in order (outer
/// headers first), comma-joined.  Checksum statuses (with checking on): 1 good,
/// 0 bad, 2 unverified.
fn tshark_fields(pcap: &Path, fields: &[&str], extra: &[&str]) -> Vec<HashMap<String, String>> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-n", "-r"]).arg(pcap).args([
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=\t",
        "-E",
        "occurrence=a",
        "-E",
        "aggregator=,",
    ]);
    cmd.args(extra);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            fields
                .iter()
                .zip(l.split('\t'))
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// `frames` as a pcap of raw IP packets (LINKTYPE_RAW), for tshark.
fn write_raw_ip(path: &Path, frames: &[Vec<u8>]) {
    pcap::write(path, frames);
    let mut data = std::fs::read(path).unwrap();
    data[20..24].copy_from_slice(&101u32.to_le_bytes());
    std::fs::write(path, data).unwrap();
}

#[test]
fn lbd_encapsulates_for_tunnelled_backends_golden_pcap() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = golden.join("tunnel-in.pcap");
    let expected = golden.join("tunnel-expected.pcap");
    let cases = tunnel_cases();
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, f, _)| f.clone()).collect();
    let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
    if bless {
        pcap::write(&input, &frames);
    }
    assert_eq!(
        pcap::read(&input),
        frames,
        "golden input vs the case list (LB_BLESS=1 to regenerate)"
    );

    let (got, report, log) = run_lbd("tunnel", &input, TUNNEL_CONFIG, &["--mtu", "1400"]);
    let sent: Vec<&(&str, Vec<u8>, TunnelWant)> = cases
        .iter()
        .filter(|(_, _, w)| !matches!(w, TunnelWant::Drop(_)))
        .collect();
    assert_eq!(got.len(), sent.len(), "frames sent\n{log}");

    // An independent decoder: tshark's dissection of what lbd sent.
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out_pcap = tmp.join(format!("tunnel-dissect-{}.pcap", std::process::id()));
    pcap::write(&out_pcap, &got);
    let fields = [
        "eth.dst",
        "eth.src",
        "ip.src",
        "ip.dst",
        "ip.proto",
        "ip.flags.df",
        "ip.ttl",
        "ip.checksum.status",
        "ipv6.src",
        "ipv6.dst",
        "ipv6.nxt",
        "ipv6.hlim",
        "udp.srcport",
        "udp.dstport",
        "udp.checksum",
        "udp.checksum.status",
        "vxlan.vni",
        "tcp.srcport",
        "tcp.dstport",
        "tcp.checksum.status",
        "icmp.type",
        "icmp.code",
        "icmp.mtu",
        "icmp.checksum.status",
        "icmpv6.type",
        "icmpv6.mtu",
        "icmpv6.checksum.status",
        "data.data",
    ];
    let dissected = tshark_fields(&out_pcap, &fields, &[]);
    let _ = std::fs::remove_file(&out_pcap);
    assert_eq!(dissected.len(), got.len());
    let mut gue_payloads = Vec::new();
    for (((what, input, want), out), d) in sent.iter().zip(&got).zip(&dissected) {
        let f = |k: &str| d[k].as_str();
        let first = |k: &str| f(k).split(',').next().unwrap_or("").to_string();
        match want {
            TunnelWant::Tunnel {
                gateway,
                backend,
                method,
            } => {
                assert_eq!(
                    first("eth.dst"),
                    gateway.to_string(),
                    "{what}: to the gateway"
                );
                assert_eq!(first("eth.src"), PORT.to_string(), "{what}: from the port");
                let over_v6 = backend.contains(':');
                let (src, dst) = if over_v6 {
                    ("ipv6.src", "ipv6.dst")
                } else {
                    ("ip.src", "ip.dst")
                };
                assert_eq!(
                    first(src),
                    if over_v6 { "2001:db8::1" } else { "192.0.2.1" },
                    "{what}: outer source"
                );
                assert_eq!(first(dst), *backend, "{what}: outer destination");
                if over_v6 {
                    assert_eq!(first("ipv6.hlim"), "64", "{what}");
                } else {
                    assert_eq!(first("ip.ttl"), "64", "{what}");
                    assert_eq!(
                        first("ip.checksum.status"),
                        "1",
                        "{what}: outer IPv4 checksum good: {d:?}"
                    );
                }
                let inner_v6 = input[12..14] == [0x86, 0xdd];
                let proto_field = if over_v6 { "ipv6.nxt" } else { "ip.proto" };
                let (kind, param) = method.split_once(':').unwrap_or((method, ""));
                match kind {
                    "ipip" => assert_eq!(
                        first(proto_field),
                        if inner_v6 { "41" } else { "4" },
                        "{what}"
                    ),
                    _ => {
                        assert_eq!(first(proto_field), "17", "{what}");
                        let sport: u16 = first("udp.srcport").parse().unwrap();
                        assert!(
                            sport >= 49152,
                            "{what}: an ephemeral source port from the flow: {sport}"
                        );
                        let cs = first("udp.checksum");
                        if over_v6 {
                            assert_eq!(
                                first("udp.checksum.status"),
                                "1",
                                "{what}: UDP checksum over IPv6 good: {d:?}"
                            );
                        } else {
                            assert_eq!(cs, "0x0000", "{what}: no UDP checksum over IPv4");
                        }
                        if kind == "vxlan" {
                            assert_eq!(first("udp.dstport"), "4789", "{what}");
                            assert_eq!(f("vxlan.vni"), param, "{what}");
                        } else {
                            assert_eq!(first("udp.dstport"), param, "{what}");
                            gue_payloads.push((what, input, hex(f("data.data"))));
                        }
                    }
                }
                if kind != "gue" {
                    // The client's packet inside, as tshark reads it.
                    let inner_dst = if inner_v6 {
                        "2001:db8::10".to_string()
                    } else {
                        VIP4.to_string()
                    };
                    let dsts = f(if inner_v6 { "ipv6.dst" } else { "ip.dst" });
                    assert!(
                        dsts.split(',').any(|a| a == inner_dst),
                        "{what}: inner destination in {dsts}"
                    );
                    assert_ne!(
                        f("tcp.checksum.status"),
                        "0",
                        "{what}: inner TCP checksum not bad"
                    );
                }
                // Byte for byte, the client's IP packet is the tail.
                let ip = &input[14..];
                assert_eq!(
                    &out[out.len() - ip.len()..],
                    ip,
                    "{what}: the client's packet, whole"
                );
            }
            TunnelWant::TooBig(mtu) => {
                assert_eq!(
                    f("eth.dst"),
                    CLIENT.to_string(),
                    "{what}: back to the client"
                );
                if input[12..14] == [0x86, 0xdd] {
                    assert_eq!(f("icmpv6.type"), "2", "{what}");
                    assert_eq!(f("icmpv6.mtu"), mtu.to_string(), "{what}");
                    assert_eq!(f("icmpv6.checksum.status"), "1", "{what}: {d:?}");
                    assert_eq!(first("ipv6.src"), "2001:db8::10", "{what}: from the VIP");
                } else {
                    assert_eq!((f("icmp.type"), f("icmp.code")), ("3", "4"), "{what}");
                    assert_eq!(f("icmp.mtu"), mtu.to_string(), "{what}");
                    assert_eq!(f("icmp.checksum.status"), "1", "{what}: {d:?}");
                    assert_eq!(first("ip.src"), VIP4.to_string(), "{what}: from the VIP");
                    assert_eq!(first("ip.checksum.status"), "1", "{what}");
                }
            }
            TunnelWant::Drop(_) => unreachable!(),
        }
    }
    // GUE's payload is a bare IP packet, which tshark does not look for on
    // a UDP port: dissect it on its own.
    assert!(gue_payloads.len() >= 3);
    let raw = tmp.join(format!("tunnel-gue-{}.pcap", std::process::id()));
    write_raw_ip(
        &raw,
        &gue_payloads
            .iter()
            .map(|(_, _, p)| p.clone())
            .collect::<Vec<_>>(),
    );
    let inner = tshark_fields(
        &raw,
        &[
            "ip.dst",
            "ipv6.dst",
            "tcp.dstport",
            "udp.dstport",
            "tcp.checksum.status",
        ],
        &[],
    );
    let _ = std::fs::remove_file(&raw);
    for ((what, input, payload), d) in gue_payloads.iter().zip(&inner) {
        assert_eq!(
            payload.as_slice(),
            &input[14..],
            "{what}: GUE carries the client's packet"
        );
        let dst = if input[12..14] == [0x86, 0xdd] {
            &d["ipv6.dst"]
        } else {
            &d["ip.dst"]
        };
        assert!(
            dst == "2001:db8::10" || dst == &VIP4.to_string(),
            "{what}: {d:?}"
        );
    }

    if bless {
        pcap::write(&expected, &got);
    }
    let want = pcap::read(&expected);
    assert_eq!(got.len(), want.len(), "sent frame count vs golden");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g == w,
            "sent frame {i} ({}) differs from the golden output",
            sent[i].0
        );
    }

    let total = &report["total"];
    let tunnelled = cases
        .iter()
        .filter(|(_, _, w)| matches!(w, TunnelWant::Tunnel { .. }))
        .count() as u64;
    let too_big = cases
        .iter()
        .filter(|(_, _, w)| matches!(w, TunnelWant::TooBig(_)))
        .count() as u64;
    assert_eq!(total["encapsulated"], tunnelled, "{report}");
    assert_eq!(total["forwarded"], tunnelled, "{report}");
    assert_eq!(total["too_big_sent"], too_big, "{report}");
    assert_eq!(total["drops"]["oversize"], 1, "{report}");
    assert_eq!(total["tx_packets"], sent.len() as u64, "{report}");
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// A UDP VIP in QUIC mode (server ids of 2 bytes) with three backends and
/// a fourth that is down.
const QUIC_CONFIG: &str = r#"
local_addresses = ["192.0.2.1"]

[[vip]]
address = "198.51.100.10"
port = 4433
protocol = "udp"
table_size = 1009
quic_server_id_len = 2
[[vip.backend]]
address = "192.0.2.11"
mac = "02:00:00:00:00:11"
server_id = "0a01"
[[vip.backend]]
address = "192.0.2.12"
mac = "02:00:00:00:00:12"
server_id = "0a02"
[[vip.backend]]
address = "192.0.2.13"
mac = "02:00:00:00:00:13"
server_id = "0a03"
[[vip.backend]]
address = "192.0.2.14"
mac = "02:00:00:00:00:14"
server_id = "0a04"
state = "down"
"#;

/// What lbd must do with a datagram to the QUIC VIP: reach backend `to`
/// (an index of `BACKENDS`) when given, the same backend as every other
/// case of its `group`, never the down backend (192.0.2.14), and count
/// it under `route`.
struct QuicWant {
    to: Option<usize>,
    group: u32,
    route: &'static str,
}

const QUIC_DOWN_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x14]);

/// A short header whose connection ID carries `id` after its first byte.
fn quic_short(id: &[u8]) -> Vec<u8> {
    let mut p = vec![0x47, 0x3c];
    p.extend_from_slice(id);
    p.extend_from_slice(&[0x5a; 5]);
    p.extend_from_slice(&[0xa5; 40]); // packet number and protected payload
    p
}

/// A long header: first byte, version, DCID, an 8-byte SCID, then (for
/// Initials) a zero token length, a length and a payload, padded to `pad`.
fn quic_long(first: u8, version: u32, dcid: &[u8], pad: usize) -> Vec<u8> {
    let mut p = vec![first];
    p.extend_from_slice(&version.to_be_bytes());
    p.push(u8::try_from(dcid.len()).unwrap());
    p.extend_from_slice(dcid);
    p.push(8);
    p.extend_from_slice(&[0x51; 8]);
    p.push(0); // token length (Initial) / start of length
    p.extend_from_slice(&[0x44, 0x00]); // length 1024 (varint)
    p.resize(pad.max(p.len() + 24), 0xa5);
    p
}

fn quic_cases() -> Vec<(&'static str, Vec<u8>, QuicWant)> {
    let d = |client: u8, sport: u16, payload: Vec<u8>| {
        build::udp4(PORT, CLIENT, client4(client), VIP4, sport, 4433, &payload)
    };
    let want = |to, group, route| QuicWant { to, group, route };
    const V1: u32 = 1;
    const V2: u32 = 0x6b33_43cf;
    let named = |id: u8| vec![0x00, 0x0a, id, 0x11, 0x22, 0x33, 0x44, 0x55];
    let unknown_a = vec![0x3d, 0x9b, 0x71, 0x02, 0xe4, 0x5f, 0x80, 0x6a];
    let unknown_b = vec![0xc9, 0x14, 0xf0, 0x2c, 0x66, 0x0b, 0x3a, 0x91, 0x7e, 0x08];
    vec![
        // Short headers naming a backend: there from any port or address.
        (
            "short id 0a01",
            d(1, 1000, quic_short(&[0x0a, 0x01])),
            want(Some(0), 1, "quic_by_id"),
        ),
        (
            "short id 0a01, new port",
            d(1, 1001, quic_short(&[0x0a, 0x01])),
            want(Some(0), 1, "quic_by_id"),
        ),
        (
            "short id 0a01, new address",
            d(2, 2000, quic_short(&[0x0a, 0x01])),
            want(Some(0), 1, "quic_by_id"),
        ),
        (
            "short id 0a02",
            d(1, 1002, quic_short(&[0x0a, 0x02])),
            want(Some(1), 2, "quic_by_id"),
        ),
        (
            "short id 0a03",
            d(3, 1003, quic_short(&[0x0a, 0x03])),
            want(Some(2), 3, "quic_by_id"),
        ),
        // Long headers whose DCID names a backend (a client's Handshake,
        // or an Initial after a Retry), both versions.
        (
            "v1 handshake id 0a02",
            d(1, 3000, quic_long(0xe0, V1, &named(2), 0)),
            want(Some(1), 2, "quic_by_id"),
        ),
        (
            "v1 initial id 0a03",
            d(1, 3001, quic_long(0xc0, V1, &named(3), 1200)),
            want(Some(2), 3, "quic_by_id"),
        ),
        (
            "v2 initial id 0a01",
            d(4, 3002, quic_long(0xd0, V2, &named(1), 1200)),
            want(Some(0), 1, "quic_by_id"),
        ),
        (
            "v2 handshake id 0a03",
            d(4, 3003, quic_long(0xf0, V2, &named(3), 0)),
            want(Some(2), 3, "quic_by_id"),
        ),
        // Initials and 0-RTT without a known id: by their DCID, whatever the port.
        (
            "v1 initial, unknown id",
            d(5, 4000, quic_long(0xc0, V1, &unknown_a, 1200)),
            want(None, 10, "quic_initial"),
        ),
        (
            "v1 initial retransmitted, new port",
            d(5, 4001, quic_long(0xc0, V1, &unknown_a, 1200)),
            want(None, 10, "quic_initial"),
        ),
        (
            "v1 0-rtt, new address",
            d(6, 4002, quic_long(0xd0, V1, &unknown_a, 0)),
            want(None, 10, "quic_initial"),
        ),
        (
            "v2 initial, unknown id",
            d(5, 4003, quic_long(0xd0, V2, &unknown_b, 1200)),
            want(None, 11, "quic_initial"),
        ),
        (
            "v2 0-rtt, new port",
            d(5, 4004, quic_long(0xe0, V2, &unknown_b, 0)),
            want(None, 11, "quic_initial"),
        ),
        (
            "v1 initial, DCID too short for an id",
            d(5, 4005, quic_long(0xc0, V1, &[0x0a], 1200)),
            want(None, 12, "quic_initial"),
        ),
        // Without a known id otherwise: a UDP flow (its 5-tuple keeps its backend).
        (
            "v1 handshake, unknown id",
            d(7, 5000, quic_long(0xe0, V1, &unknown_a, 0)),
            want(None, 20, "quic_unknown_id"),
        ),
        (
            "v1 handshake, unknown id, same flow",
            d(7, 5000, quic_long(0xe0, V1, &unknown_a, 0)),
            want(None, 20, "quic_unknown_id"),
        ),
        (
            "short unknown id 0bbb",
            d(7, 5001, quic_short(&[0x0b, 0xbb])),
            want(None, 21, "quic_unknown_id"),
        ),
        (
            "short unknown id, same flow",
            d(7, 5001, quic_short(&[0x0b, 0xbb])),
            want(None, 21, "quic_unknown_id"),
        ),
        (
            "short, CID too short for an id",
            d(7, 5002, vec![0x40, 0x00, 0x0a]),
            want(None, 22, "quic_unknown_id"),
        ),
        // An id naming the down backend: placed afresh, as UDP.
        (
            "short id of the down backend",
            d(8, 5003, quic_short(&[0x0a, 0x04])),
            want(None, 23, "quic_id_down"),
        ),
        (
            "short id of the down backend, same flow",
            d(8, 5003, quic_short(&[0x0a, 0x04])),
            want(None, 23, "quic_id_down"),
        ),
        // Not QUIC v1 or v2: as UDP.
        (
            "unknown version",
            d(9, 6000, quic_long(0xc0, 0x1a2a_3a4a, &named(1), 1200)),
            want(None, 30, "quic_unparsed"),
        ),
        (
            "version negotiation",
            d(9, 6001, quic_long(0x80, 0, &named(1), 0)),
            want(None, 31, "quic_unparsed"),
        ),
        (
            "long header cut after the first byte",
            d(9, 6002, vec![0xc0, 0xff]),
            want(None, 32, "quic_unparsed"),
        ),
        (
            "DCID length 21",
            d(9, 6003, {
                let mut p = quic_long(0xc0, V1, &[7; 21], 1200);
                p[5] = 21;
                p
            }),
            want(None, 33, "quic_unparsed"),
        ),
        (
            "DCID beyond the datagram",
            d(9, 6004, vec![0xc0, 0, 0, 0, 1, 20, 1, 2, 3]),
            want(None, 34, "quic_unparsed"),
        ),
        (
            "empty datagram",
            d(9, 6005, Vec::new()),
            want(None, 35, "quic_unparsed"),
        ),
    ]
}

/// A VIP in QUIC mode through lbd as a process: long headers (versions 1
/// and 2) and short ones reach the backend their server id names from any
/// port or address; Initials without a known id keep together by their
/// DCID; unknown ids, ids of a down backend, and what is not QUIC v1/v2 are
/// UDP flows; every case counted by its route; the long headers' version
/// and DCID as tshark's QUIC dissector reads them, not ours.
#[test]
fn lbd_routes_quic_by_connection_id_golden_pcap() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = golden.join("quic-in.pcap");
    let expected = golden.join("quic-expected.pcap");
    let cases = quic_cases();
    let frames: Vec<Vec<u8>> = cases.iter().map(|(_, f, _)| f.clone()).collect();
    let bless = std::env::var("LB_BLESS").is_ok_and(|v| v == "1");
    if bless {
        pcap::write(&input, &frames);
    }
    assert_eq!(
        pcap::read(&input),
        frames,
        "golden QUIC input differs from the case list (LB_BLESS=1 to regenerate)"
    );

    // The crafted long headers are what an independent decoder reads.
    let dissected = tshark_fields(
        &input,
        &["quic.header_form", "quic.version", "quic.dcid"],
        &["-d", "udp.port==4433,quic"],
    );
    assert_eq!(dissected.len(), cases.len());
    for ((what, frame, _), t) in cases.iter().zip(&dissected) {
        let payload = &frame[42..];
        let long_v1_v2 = payload.len() > 6
            && payload[0] & 0x80 != 0
            && matches!(&payload[1..5], [0, 0, 0, 1] | [0x6b, 0x33, 0x43, 0xcf])
            && payload[5] <= 20
            && payload.len() >= 6 + usize::from(payload[5]);
        if long_v1_v2 {
            let dcid = &payload[6..6 + usize::from(payload[5])];
            let hexed: String = dcid.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(
                t["quic.header_form"].split(',').next(),
                Some("1"),
                "{what}: {t:?}"
            );
            assert_eq!(
                t["quic.dcid"].split(',').next().map(|s| s.replace(':', "")),
                Some(hexed),
                "{what}: tshark reads another DCID: {t:?}"
            );
        }
    }

    let (got, report, log) = run_lbd("quic", &input, QUIC_CONFIG, &[]);
    assert_eq!(got.len(), cases.len(), "every datagram forwarded\n{log}");
    let mut group_backend: HashMap<u32, MacAddr> = HashMap::new();
    for ((what, input, want), out) in cases.iter().zip(&got) {
        let to = MacAddr(out[..6].try_into().unwrap());
        assert!(BACKENDS[..3].contains(&to), "{what}: sent to {to}");
        assert_ne!(to, QUIC_DOWN_MAC, "{what}: the down backend");
        assert_eq!(&out[6..12], &PORT.0, "{what}: source is the port");
        assert_eq!(&out[12..], &input[12..], "{what}: IP packet untouched");
        if let Some(i) = want.to {
            assert_eq!(to, BACKENDS[i], "{what}: the backend its id names");
        }
        let first = *group_backend.entry(want.group).or_insert(to);
        assert_eq!(first, to, "{what}: with the others of group {}", want.group);
    }

    if bless {
        pcap::write(&expected, &got);
    }
    assert_eq!(
        got,
        pcap::read(&expected),
        "sent frames differ from the golden output"
    );

    let total = &report["total"];
    for route in [
        "quic_by_id",
        "quic_initial",
        "quic_unknown_id",
        "quic_id_down",
        "quic_unparsed",
    ] {
        let n = cases.iter().filter(|(_, _, w)| w.route == route).count() as u64;
        assert_eq!(total[route], n, "{route}: {report}");
    }
    assert_eq!(total["forwarded"], cases.len() as u64, "{report}");
}
