//! Every packet view on arbitrary bytes, at every layer it is used: the
//! Ethernet frame, ARP, IPv4 and IPv6 (whole and as quoted in an ICMP
//! error), TCP, UDP, ICMP and ICMPv6 (with the packet they quote), the
//! QUIC header at each server-id length, and the tunnel's size checks and
//! in-place rewrites. Each accessor is read; what a view promises is
//! checked: its lengths lie within the bytes it was given.

use lb_core::packet::arp::ArpPacket;
use lb_core::packet::ethernet::EthernetFrame;
use lb_core::packet::icmp::{self, IcmpPacket};
use lb_core::packet::icmpv6::{self, Icmpv6Packet};
use lb_core::packet::ipv4::Ipv4Packet;
use lb_core::packet::ipv6::Ipv6Packet;
use lb_core::packet::l4::{self, TcpHeader, UdpHeader};
use lb_core::packet::MacAddr;
use lb_core::quic;
use lb_core::tunnel;

/// One input of the target.
pub fn run(data: &[u8]) {
    if let Ok(eth) = EthernetFrame::new_checked(data) {
        let _ = (eth.dst(), eth.src(), eth.vlan_tci(), eth.ethertype());
        assert!(eth.header_len() <= data.len());
        assert_eq!(eth.payload().len(), data.len() - eth.header_len());
        arp(eth.payload());
    }
    // The layers below Ethernet, on the bytes as they are and past a
    // plain Ethernet header.
    for payload in [data, data.get(14..).unwrap_or_default()] {
        ip(payload);
        l4(payload);
        icmp(payload);
    }
    for id_len in 0..=16 {
        let _ = quic::parse(data, id_len);
    }
    let _ = quic::ServerId::new(data.get(..data.len().min(20)).unwrap_or_default());
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = quic::ServerId::from_hex(s);
    }
    for max_inner in [0, 68, 1280, 1450, u16::MAX] {
        let _ = tunnel::exceeds(data, max_inner);
    }
    let mut copy = data.to_vec();
    if let Some(len) = tunnel::too_big(&mut copy, MacAddr([2, 0, 0, 0, 0, 1]), 1400) {
        assert!(
            len <= copy.len(),
            "too-big of {len} in {} bytes",
            copy.len()
        );
    }
    let mut copy = data.get(14..).unwrap_or_default().to_vec();
    let _ = icmp::write_echo_reply(&mut copy);
    let _ = icmpv6::write_echo_reply(&mut copy);
}

fn arp(b: &[u8]) {
    if let Ok(a) = ArpPacket::new_checked(b) {
        let _ = (
            a.op(),
            a.sender_mac(),
            a.sender_ip(),
            a.target_mac(),
            a.target_ip(),
        );
        let mut copy = b.to_vec();
        if let Ok(mut m) = ArpPacket::new_checked(&mut copy[..]) {
            m.make_reply(MacAddr([2, 0, 0, 0, 0, 1]));
        }
    }
}

fn ip(b: &[u8]) {
    for quoted in [false, true] {
        let v4 = if quoted {
            Ipv4Packet::new_quoted(b)
        } else {
            Ipv4Packet::new_checked(b)
        };
        if let Ok(p) = v4 {
            assert!(p.header_len() <= b.len());
            let _ = (
                p.ident(),
                p.dont_fragment(),
                p.more_fragments(),
                p.frag_offset(),
            );
            let _ = (p.is_fragment(), p.ttl(), p.protocol(), p.src(), p.dst());
            let _ = (p.checksum(), p.checksum_ok(), p.total_len());
            assert!(p.header_len() + p.payload().len() <= b.len());
        }
        let v6 = if quoted {
            Ipv6Packet::new_quoted(b)
        } else {
            Ipv6Packet::new_checked(b)
        };
        if let Ok(p) = v6 {
            let _ = (
                p.src(),
                p.dst(),
                p.src_bytes(),
                p.dst_bytes(),
                p.payload_len(),
            );
            let _ = (
                p.next_header(),
                p.hop_limit(),
                p.upper_protocol(),
                p.fragment(),
            );
            assert!(p.upper_offset() + p.upper_payload().len() <= b.len());
        }
    }
}

fn l4(b: &[u8]) {
    let _ = l4::ports(b);
    if let Ok(t) = TcpHeader::new_checked(b) {
        let _ = (t.src_port(), t.dst_port(), t.seq(), t.flags());
        let _ = (t.syn(), t.ack(), t.fin(), t.rst());
        assert!(t.header_len() <= b.len());
    }
    if let Ok(u) = UdpHeader::new_checked(b) {
        let _ = (u.src_port(), u.dst_port(), u.is_empty());
        assert!(usize::from(u.len()) <= b.len());
        assert!(u.payload().len() <= b.len() - 8);
    }
}

fn icmp(b: &[u8]) {
    if let Ok(m) = IcmpPacket::new_checked(b) {
        let _ = (
            m.msg_type(),
            m.code(),
            m.is_error(),
            m.is_frag_needed(),
            m.next_hop_mtu(),
        );
        if let Ok(q) = m.quoted() {
            let _ = (q.src(), q.dst(), q.protocol(), q.payload().len());
        }
        let _ = icmp::checksum_ok(b);
    }
    if let Ok(m) = Icmpv6Packet::new_checked(b) {
        let _ = (
            m.msg_type(),
            m.code(),
            m.is_error(),
            m.mtu(),
            m.nd_target(),
            m.nd_lladdr(),
        );
        if let Ok(q) = m.quoted() {
            let _ = (
                q.src(),
                q.dst(),
                q.upper_protocol(),
                q.upper_payload().len(),
            );
        }
        let _ = m.checksum_ok(&[0; 16], &[1; 16]);
    }
}
