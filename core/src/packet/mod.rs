//! Zero-copy views over packet bytes: Ethernet (with one 802.1Q tag), ARP,
//! IPv4, IPv6 (extension headers walked to the transport header), TCP, UDP,
//! ICMP and ICMPv6.
//!
//! Each view wraps any `T: AsRef<[u8]>` (a `&[u8]` in a test, mbuf bytes on a
//! worker). `new_checked` validates every length and offset the view's
//! accessors use, once; after it succeeds no accessor can panic or read out
//! of bounds. Setters need `T: AsMut<[u8]>` and write in place. Errors are a
//! tiny `Copy` enum: a malformed packet is a counted drop, never a panic.

pub mod arp;
pub mod build;
pub mod checksum;
pub mod ethernet;
pub mod icmp;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod l4;

pub use ethernet::MacAddr;

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than its headers say it is, or than the minimum header.
    Truncated,
    /// Not the IP version the ethertype announced.
    BadVersion,
    /// Header length field below the minimum (IPv4 IHL < 5, TCP offset < 5).
    BadHeaderLength,
    /// A length field that contradicts itself (IPv4 total length < header).
    BadLength,
    /// More IPv6 extension headers than we walk.
    TooManyExtensionHeaders,
    /// Well-formed but not a kind we handle (ARP for another hardware type).
    Unsupported,
}

impl Error {
    /// Stable snake_case name, used as a drop-reason label.
    pub fn as_str(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::BadVersion => "bad_version",
            Error::BadHeaderLength => "bad_header_length",
            Error::BadLength => "bad_length",
            Error::TooManyExtensionHeaders => "too_many_extension_headers",
            Error::Unsupported => "unsupported",
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Big-endian reads at offsets `new_checked` has validated.
#[inline(always)]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
pub(crate) fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every accessor of every view, on whatever bytes parse.
    fn exercise(bytes: &[u8]) {
        if let Ok(e) = ethernet::EthernetFrame::new_checked(bytes) {
            let _ = (
                e.dst(),
                e.src(),
                e.vlan_tci(),
                e.ethertype(),
                e.header_len(),
                e.payload(),
            );
        }
        if let Ok(a) = arp::ArpPacket::new_checked(bytes) {
            let _ = (
                a.op(),
                a.sender_mac(),
                a.sender_ip(),
                a.target_mac(),
                a.target_ip(),
            );
        }
        for p in [
            ipv4::Ipv4Packet::new_checked(bytes),
            ipv4::Ipv4Packet::new_quoted(bytes),
        ]
        .into_iter()
        .flatten()
        {
            let _ = (
                p.header_len(),
                p.total_len(),
                p.ident(),
                p.dont_fragment(),
                p.more_fragments(),
            );
            let _ = (
                p.frag_offset(),
                p.is_fragment(),
                p.ttl(),
                p.protocol(),
                p.src(),
                p.dst(),
            );
            let _ = (p.checksum(), p.checksum_ok(), p.payload());
        }
        for p in [
            ipv6::Ipv6Packet::new_checked(bytes),
            ipv6::Ipv6Packet::new_quoted(bytes),
        ]
        .into_iter()
        .flatten()
        {
            let _ = (
                p.src(),
                p.dst(),
                p.payload_len(),
                p.next_header(),
                p.hop_limit(),
            );
            let _ = (
                p.upper_protocol(),
                p.upper_offset(),
                p.fragment(),
                p.upper_payload(),
            );
        }
        if let Ok(t) = l4::TcpHeader::new_checked(bytes) {
            let _ = (
                t.src_port(),
                t.dst_port(),
                t.seq(),
                t.header_len(),
                t.flags(),
            );
        }
        if let Ok(u) = l4::UdpHeader::new_checked(bytes) {
            let _ = (u.src_port(), u.dst_port(), u.len(), u.payload());
        }
        if let Ok(i) = icmp::IcmpPacket::new_checked(bytes) {
            let _ = (i.msg_type(), i.code(), i.is_error(), i.next_hop_mtu());
            if let Ok(q) = i.quoted() {
                let _ = (q.src(), q.payload());
            }
        }
        if let Ok(i) = icmpv6::Icmpv6Packet::new_checked(bytes) {
            let _ = (
                i.msg_type(),
                i.code(),
                i.is_error(),
                i.mtu(),
                i.checksum_ok(&[0; 16], &[0; 16]),
            );
            if matches!(
                i.msg_type(),
                icmpv6::NEIGHBOR_SOLICIT | icmpv6::NEIGHBOR_ADVERT
            ) {
                let _ = (i.nd_target(), i.nd_lladdr());
            }
            if let Ok(q) = i.quoted() {
                let _ = q.upper_payload();
            }
        }
    }

    proptest! {
        #[test]
        fn no_view_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            exercise(&bytes);
        }

        /// Plausible headers reach deeper code paths than uniform noise.
        #[test]
        fn no_view_panics_on_plausible_headers(
            first in prop::sample::select(vec![0x45u8, 0x46, 0x4f, 0x60, 0x00, 0x87, 0x03, 0x02]),
            next in prop::sample::select(vec![0u8, 6, 17, 43, 44, 51, 58, 60]),
            rest in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut b = vec![first];
            b.extend_from_slice(&rest);
            if b.len() > 6 { b[6] = next; }
            exercise(&b);
        }
    }
}
