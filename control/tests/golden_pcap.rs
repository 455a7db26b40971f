//! Golden-pcap test of `lbd` as a process: a committed pcap of crafted frames
//! goes in through DPDK's net_pcap, the forwarded pcap comes out, and it is
//! compared frame by frame and byte by byte with the committed expected pcap.
//! The counters `lbd` reports must account for every dropped frame.
//!
//! `LB_BLESS=1 cargo test -p control --test golden_pcap` rewrites both golden
//! files from the frame list below (then read them with `tcpdump -e -r`).

#[path = "../../dataplane/tests/common/eal.rs"]
mod eal;
mod pcap;

use std::path::{Path, PathBuf};
use std::process::Command;

/// net_pcap's port MAC: 02:70:63:61:70:<port index> ("pcap").
const PORT_MAC: [u8; 6] = [0x02, 0x70, 0x63, 0x61, 0x70, 0x00];
const VIP4_MAC: [u8; 6] = PORT_MAC;
const VIP6_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x66];
const BACKEND1: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb1];
const BACKEND2: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb2];
const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const UNKNOWN: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const BROADCAST: [u8; 6] = [0xff; 6];

/// (input frame, expected next hop or None if it must be dropped)
fn cases() -> Vec<(Vec<u8>, Option<[u8; 6]>)> {
    let mut c = vec![
        // IPv4 TCP SYN 203.0.113.7:40000 -> VIP 198.51.100.10:443
        (eth(VIP4_MAC, 0x0800, &ipv4_tcp_syn()), Some(BACKEND1)),
        // IPv6 UDP 2001:db8::7 -> 2001:db8::10, port 5000 (SRT)
        (eth(VIP6_MAC, 0x86dd, &ipv6_udp(40)), Some(BACKEND2)),
        // 802.1Q tag, VLAN 100, then the IPv4 SYN: only the MACs change
        (vlan(VIP4_MAC, 100, 0x0800, &ipv4_tcp_syn()), Some(BACKEND1)),
        // A bare Ethernet header is still a frame to forward
        (eth(VIP4_MAC, 0x0800, &[]), Some(BACKEND1)),
        // Runt: 10 bytes, shorter than an Ethernet header
        (VIP4_MAC.iter().chain(&CLIENT[..4]).copied().collect(), None),
        // ARP request, broadcast: not in the table
        (eth(BROADCAST, 0x0806, &[0u8; 28]), None),
        // Full-size frame (1514 bytes) to the IPv6 VIP
        (eth(VIP6_MAC, 0x86dd, &ipv6_udp(1500 - 48)), Some(BACKEND2)),
    ];
    // Three hundred frames of varied sizes to the two VIPs and an unknown MAC.
    for i in 0..300usize {
        let (dst, next) = match i % 5 {
            0 | 1 => (VIP4_MAC, Some(BACKEND1)),
            2 | 3 => (VIP6_MAC, Some(BACKEND2)),
            _ => (UNKNOWN, None),
        };
        let len = 46 + (i * 37) % (1500 - 46);
        let payload: Vec<u8> = (0..len).map(|j| (i + j) as u8).collect();
        c.push((eth(dst, 0x0800 + (i % 3) as u16, &payload), next));
    }
    c
}

#[test]
fn lbd_forwards_golden_pcap_byte_for_byte() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let input = golden.join("forward-in.pcap");
    let expected = golden.join("forward-expected.pcap");
    let cases = cases();
    if std::env::var("LB_BLESS").is_ok_and(|v| v == "1") {
        let ins: Vec<Vec<u8>> = cases.iter().map(|(f, _)| f.clone()).collect();
        let outs: Vec<Vec<u8>> = cases
            .iter()
            .filter_map(|(f, next)| next.map(|n| rewritten(f, n)))
            .collect();
        pcap::write(&input, &ins);
        pcap::write(&expected, &outs);
    }
    let want = pcap::read(&expected);
    assert_eq!(
        pcap::read(&input).len(),
        cases.len(),
        "golden input matches the case list (LB_BLESS=1 to regenerate)"
    );

    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let output = out_dir.join(format!("forward-out-{}.pcap", std::process::id()));
    let _ = std::fs::remove_file(&output);
    let vdev = format!(
        "net_pcap0,rx_pcap={},tx_pcap={}",
        input.display(),
        output.display()
    );
    let mut args = eal::eal_args("golden", "0@0,1@1", &[&vdev]);
    args.extend(
        [
            "--",
            "--port",
            "net_pcap0",
            "--route",
            &format!("{}={}", mac(VIP4_MAC), mac(BACKEND1)),
            "--route",
            &format!("{}={}", mac(VIP6_MAC), mac(BACKEND2)),
            "--exit-idle-ms",
            "500",
            "--json",
        ]
        .map(String::from),
    );
    let run = Command::new(env!("CARGO_BIN_EXE_lbd"))
        .args(&args)
        .output()
        .expect("run lbd");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "lbd failed: {stderr}");

    let got = pcap::read(&output);
    assert_eq!(got.len(), want.len(), "forwarded frame count\n{stderr}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "frame {i} differs from the golden output");
    }

    let report: serde_json::Value = serde_json::from_slice(&run.stdout).expect("lbd --json output");
    let total = &report["total"];
    let dropped_no_route = cases
        .iter()
        .filter(|(f, n)| n.is_none() && f.len() >= 14)
        .count();
    assert_eq!(total["rx_packets"], cases.len() as u64, "{report}");
    assert_eq!(total["tx_packets"], want.len() as u64, "{report}");
    assert_eq!(
        total["drops"]["no_route"], dropped_no_route as u64,
        "{report}"
    );
    assert_eq!(total["drops"]["runt"], 1, "{report}");
    assert_eq!(total["tx_dropped"], 0, "{report}");
    assert_eq!(
        total["tx_bytes"],
        want.iter().map(|f| f.len() as u64).sum::<u64>(),
        "{report}"
    );
    assert_eq!(report["port_mac"], mac(PORT_MAC));
    let _ = std::fs::remove_file(&output);
}

fn rewritten(frame: &[u8], next: [u8; 6]) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[..6].copy_from_slice(&next);
    f[6..12].copy_from_slice(&PORT_MAC);
    f
}

fn eth(dst: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&CLIENT);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn vlan(dst: [u8; 6], vid: u16, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut tagged = vid.to_be_bytes().to_vec();
    tagged.extend_from_slice(&ethertype.to_be_bytes());
    tagged.extend_from_slice(payload);
    eth(dst, 0x8100, &tagged)
}

fn ipv4_tcp_syn() -> Vec<u8> {
    let mut p = vec![
        0x45, 0x00, 0x00, 0x28, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06, 0x00,
        0x00, // v4, len 40, DF, TTL 64, TCP
        203, 0, 113, 7, 198, 51, 100, 10, // src, dst
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0x03, 0xe8, 0, 0, 0,
        0, // ports 40000 -> 443, seq 1000, ack 0
        0x50, 0x02, 0xfa, 0xf0, 0x00, 0x00, 0x00,
        0x00, // offset 5, SYN, window, checksum (not checked), urg
    ];
    let sum = checksum(&p[..20]);
    p[10..12].copy_from_slice(&sum.to_be_bytes());
    p
}

fn ipv6_udp(payload: usize) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[17, 64]); // UDP, hop limit
    p.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x07,
    ]);
    p.extend_from_slice(&[
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ]);
    p.extend_from_slice(&[0x9c, 0x40, 0x13, 0x88]); // 40000 -> 5000
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend((0..payload).map(|i| i as u8));
    p
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
