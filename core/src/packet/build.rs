//! Crafting whole frames, for tests, golden files and traffic generators
//! (never on the packet path: these allocate). Checksums are filled in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum;
use super::ethernet::{MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6};
use super::icmpv6::{NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, PROTO_ICMPV6};
use super::l4::{PROTO_TCP, PROTO_UDP};

pub fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 header (no options) + `payload`, DF set, TTL 64.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_fragment(src, dst, proto, 0x4000, 0x1234, payload)
}

/// An IPv4 packet with explicit flags/fragment-offset word and identification.
pub fn ipv4_fragment(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    flags_frag: u16,
    ident: u16,
    payload: &[u8],
) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("an IPv4 packet is at most 65535 bytes");
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&flags_frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = checksum::checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// An IPv6 header + `payload`, hop limit 64.
pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    super::ipv6::write_header(
        &mut p,
        u16::try_from(payload.len()).expect("an IPv6 payload is at most 65535 bytes"),
        next,
        64,
        &src.octets(),
        &dst.octets(),
    );
    p.extend_from_slice(payload);
    p
}

/// A TCP segment (no options) with `flags` and `data`; checksum over `pseudo`.
pub fn tcp(sport: u16, dport: u16, flags: u8, data: &[u8], pseudo: u32) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + data.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&1000u32.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    let c = checksum::finish(checksum::sum(&t, pseudo));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

pub fn udp(sport: u16, dport: u16, data: &[u8], pseudo: u32) -> Vec<u8> {
    let len = u16::try_from(8 + data.len()).expect("a UDP datagram is at most 65535 bytes");
    let mut u = Vec::with_capacity(8 + data.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let c = checksum::finish(checksum::sum(&u, pseudo));
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

fn pseudo4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let s = checksum::sum(&src.octets(), 0);
    let s = checksum::sum(&dst.octets(), s);
    let [hi, lo] = u16::try_from(len)
        .expect("an IPv4 payload is at most 65535 bytes")
        .to_be_bytes();
    checksum::sum(&[0, proto, hi, lo], s)
}

fn pseudo6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: usize) -> u32 {
    let len = u32::try_from(len).expect("an IPv6 payload is under 4 GiB");
    checksum::ipv6_pseudo(&src.octets(), &dst.octets(), len, proto)
}

/// Ethernet + IP (v4 or v6, from the addresses) + `proto` + `l4`, where
/// `l4` builds the transport header given its pseudo-header sum.
fn ip_frame(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    l4_len: usize,
    l4: impl FnOnce(u32) -> Vec<u8>,
) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet(
            dst_mac,
            src_mac,
            ETHERTYPE_IPV4,
            &ipv4(s, d, proto, &l4(pseudo4(s, d, proto, l4_len))),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(
            dst_mac,
            src_mac,
            ETHERTYPE_IPV6,
            &ipv6(s, d, proto, &l4(pseudo6(s, d, proto, l4_len))),
        ),
        _ => panic!("source {src} and destination {dst} must be of one family"),
    }
}

/// Ethernet + IP + TCP (no options).
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    ip_frame(
        dst_mac,
        src_mac,
        src,
        dst,
        PROTO_TCP,
        20 + data.len(),
        |p| tcp(sport, dport, flags, data, p),
    )
}

/// Ethernet + IP + UDP.
pub fn udp_frame(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    ip_frame(dst_mac, src_mac, src, dst, PROTO_UDP, 8 + data.len(), |p| {
        udp(sport, dport, data, p)
    })
}

/// Ethernet + IPv4 + TCP.
#[allow(clippy::too_many_arguments)]
pub fn tcp4(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    tcp_frame(
        dst_mac,
        src_mac,
        src.into(),
        dst.into(),
        sport,
        dport,
        flags,
        data,
    )
}

/// Ethernet + IPv6 + TCP.
#[allow(clippy::too_many_arguments)]
pub fn tcp6(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    flags: u8,
    data: &[u8],
) -> Vec<u8> {
    tcp_frame(
        dst_mac,
        src_mac,
        src.into(),
        dst.into(),
        sport,
        dport,
        flags,
        data,
    )
}

/// Ethernet + IPv4 + UDP.
pub fn udp4(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    udp_frame(dst_mac, src_mac, src.into(), dst.into(), sport, dport, data)
}

/// Ethernet + IPv6 + UDP.
pub fn udp6(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    udp_frame(dst_mac, src_mac, src.into(), dst.into(), sport, dport, data)
}

/// A broadcast ARP request from (`mac`, `ip`) for `target`.
pub fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0u8; ARP_REQUEST_LEN];
    write_arp_request(&mut f, mac, ip, target);
    f
}

/// Bytes [`write_arp_request`] writes.
pub const ARP_REQUEST_LEN: usize = 14 + super::arp::LEN;

/// Write a broadcast ARP request into `buf` without allocating (the worker
/// builds the dataplane's own requests in an mbuf). Returns the frame
/// length, or `None` when `buf` is too short.
pub fn write_arp_request(
    buf: &mut [u8],
    mac: MacAddr,
    ip: Ipv4Addr,
    target: Ipv4Addr,
) -> Option<usize> {
    let f = buf.get_mut(..ARP_REQUEST_LEN)?;
    write_ethernet(f, MacAddr::BROADCAST, mac, ETHERTYPE_ARP);
    let arp: &mut [u8; super::arp::LEN] = (&mut f[14..]).try_into().ok()?;
    super::arp::write_request(arp, mac, ip, target);
    Some(ARP_REQUEST_LEN)
}

/// A neighbor solicitation from (`mac`, `ip`) for `target`, to the target's
/// solicited-node multicast address, with a source link-layer option.
pub fn neighbor_solicit(mac: MacAddr, ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut f = vec![0u8; NEIGHBOR_SOLICIT_LEN];
    write_neighbor_solicit(&mut f, mac, ip, target);
    f
}

/// Bytes [`write_neighbor_solicit`] writes.
pub const NEIGHBOR_SOLICIT_LEN: usize = 14 + 40 + 32;

/// Write a neighbor solicitation into `buf` without allocating. Returns the
/// frame length, or `None` when `buf` is too short.
pub fn write_neighbor_solicit(
    buf: &mut [u8],
    mac: MacAddr,
    ip: Ipv6Addr,
    target: Ipv6Addr,
) -> Option<usize> {
    let f = buf.get_mut(..NEIGHBOR_SOLICIT_LEN)?;
    let t = target.octets();
    let snma = [
        0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15],
    ];
    write_ethernet(f, MacAddr::ipv6_multicast(&snma), mac, ETHERTYPE_IPV6);
    super::ipv6::write_header(&mut f[14..54], 32, PROTO_ICMPV6, 255, &ip.octets(), &snma);
    let m = &mut f[54..];
    m[..8].copy_from_slice(&[NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0]);
    m[8..24].copy_from_slice(&t);
    m[24..26].copy_from_slice(&[1, 1]);
    m[26..32].copy_from_slice(&mac.0);
    let c = checksum::finish(checksum::sum(
        m,
        checksum::ipv6_pseudo(&ip.octets(), &snma, 32, PROTO_ICMPV6),
    ));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(NEIGHBOR_SOLICIT_LEN)
}

fn write_ethernet(f: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    f[..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
}

/// An ICMP echo request (`ident`, `seq`, `data`) from `src` to `dst`.
pub fn icmp4_echo(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut m = vec![super::icmp::ECHO_REQUEST, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(dst_mac, src_mac, ETHERTYPE_IPV4, &ipv4(src, dst, 1, &m))
}

/// An ICMPv6 echo request (`ident`, `seq`, `data`) from `src` to `dst`.
pub fn icmp6_echo(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut m = vec![super::icmpv6::ECHO_REQUEST, 0, 0, 0];
    m.extend_from_slice(&ident.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(data);
    let c = checksum::finish(checksum::sum(&m, pseudo6(src, dst, PROTO_ICMPV6, m.len())));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(
        dst_mac,
        src_mac,
        ETHERTYPE_IPV6,
        &ipv6(src, dst, PROTO_ICMPV6, &m),
    )
}

/// Any Ethernet/IPv4 ARP message, e.g. a reply or a gratuitous
/// announcement (sender IP = target IP).
pub fn arp(
    dst_mac: MacAddr,
    op: u16,
    sender: (MacAddr, Ipv4Addr),
    target: (MacAddr, Ipv4Addr),
) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sender.0 .0);
    a.extend_from_slice(&sender.1.octets());
    a.extend_from_slice(&target.0 .0);
    a.extend_from_slice(&target.1.octets());
    ethernet(dst_mac, sender.0, ETHERTYPE_ARP, &a)
}

/// A neighbor advertisement from (`mac`, `src`) to `dst` for `target`
/// with `flags` (0x20 override, 0x40 solicited, 0x80 router) and a target
/// link-layer option carrying `mac`.
pub fn neighbor_advert(
    dst_mac: MacAddr,
    mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    flags: u8,
) -> Vec<u8> {
    let mut m = vec![NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&mac.0);
    let c = checksum::finish(checksum::sum(&m, pseudo6(src, dst, PROTO_ICMPV6, m.len())));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let mut ip = ipv6(src, dst, PROTO_ICMPV6, &m);
    ip[7] = 255;
    ethernet(dst_mac, mac, ETHERTYPE_IPV6, &ip)
}

/// An ICMP "fragmentation needed" (MTU `mtu`) from `router` about `quoted`
/// (an IPv4 packet, of which the header and 8 bytes are quoted), sent to the
/// quoted packet's source.
pub fn icmp4_frag_needed(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    router: Ipv4Addr,
    quoted: &[u8],
    mtu: u16,
) -> Vec<u8> {
    let q = super::ipv4::Ipv4Packet::new_quoted(quoted).expect("quoted must be an IPv4 packet");
    let cut = (q.header_len() + 8).min(quoted.len());
    let mut m = vec![3, 4, 0, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(&quoted[..cut]);
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(
        dst_mac,
        src_mac,
        ETHERTYPE_IPV4,
        &ipv4(router, q.src(), 1, &m),
    )
}

/// An ICMPv6 "packet too big" from `router` about `quoted` (an IPv6 packet).
pub fn icmp6_packet_too_big(
    dst_mac: MacAddr,
    src_mac: MacAddr,
    router: Ipv6Addr,
    quoted: &[u8],
    mtu: u32,
) -> Vec<u8> {
    let src = Ipv6Addr::from(
        <[u8; 16]>::try_from(&quoted[8..24]).expect("quoted must be an IPv6 packet"),
    );
    let cut = quoted.len().min(1280 - 48);
    let mut m = vec![2, 0, 0, 0];
    m.extend_from_slice(&mtu.to_be_bytes());
    m.extend_from_slice(&quoted[..cut]);
    let c = checksum::finish(checksum::sum(
        &m,
        pseudo6(router, src, PROTO_ICMPV6, m.len()),
    ));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ethernet(
        dst_mac,
        src_mac,
        ETHERTYPE_IPV6,
        &ipv6(router, src, PROTO_ICMPV6, &m),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{
        ethernet::EthernetFrame, icmpv6::Icmpv6Packet, ipv4::Ipv4Packet, ipv6::Ipv6Packet,
        l4::TcpHeader,
    };

    const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn writers_refuse_short_buffers() {
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(
            write_arp_request(&mut [0; ARP_REQUEST_LEN - 1], A, ip, ip),
            None
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(
            write_neighbor_solicit(&mut [0; NEIGHBOR_SOLICIT_LEN - 1], A, v6, v6),
            None
        );
        let mut big = [0u8; 128];
        assert_eq!(
            write_arp_request(&mut big, A, ip, ip),
            Some(ARP_REQUEST_LEN)
        );
    }

    #[test]
    fn built_frames_parse_and_verify() {
        let f = tcp4(
            A,
            B,
            Ipv4Addr::new(203, 0, 113, 7),
            Ipv4Addr::new(198, 51, 100, 10),
            40000,
            443,
            0x02,
            b"",
        );
        let e = EthernetFrame::new_checked(&f[..]).unwrap();
        let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
        assert!(ip.checksum_ok());
        let t = TcpHeader::new_checked(ip.payload()).unwrap();
        assert!(t.syn());
        let s = pseudo4(ip.src(), ip.dst(), 6, ip.payload().len());
        assert_eq!(
            checksum::finish(checksum::sum(ip.payload(), s)),
            0,
            "TCP checksum verifies"
        );

        let ns = neighbor_solicit(
            A,
            "2001:db8::7".parse().unwrap(),
            "2001:db8::10".parse().unwrap(),
        );
        let e = EthernetFrame::new_checked(&ns[..]).unwrap();
        assert_eq!(e.dst(), MacAddr([0x33, 0x33, 0xff, 0, 0, 0x10]));
        let ip = Ipv6Packet::new_checked(e.payload()).unwrap();
        let m = Icmpv6Packet::new_checked(ip.upper_payload()).unwrap();
        assert!(m.checksum_ok(&ip.src_bytes(), &ip.dst_bytes()));
        assert_eq!(m.nd_lladdr(), Some(A));
    }
}
