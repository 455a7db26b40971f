//! ICMPv6 (RFC 4443) errors and neighbor discovery (RFC 4861): solicitations
//! parsed, advertisements written in place.

use super::ethernet::MacAddr;
use super::ipv6::{self, Ipv6Packet};
use super::{arr, be32, checksum, Error, Result};

pub const DEST_UNREACHABLE: u8 = 1;
pub const PACKET_TOO_BIG: u8 = 2;
pub const TIME_EXCEEDED: u8 = 3;
pub const PARAMETER_PROBLEM: u8 = 4;
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
pub const PROTO_ICMPV6: u8 = 58;

const OPT_SOURCE_LLADDR: u8 = 1;
const OPT_TARGET_LLADDR: u8 = 2;
/// ICMPv6 bytes of a solicitation or advertisement before its options.
const ND_LEN: usize = 24;

#[derive(Debug, Clone, Copy)]
pub struct Icmpv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Eight bytes for any message; neighbor discovery messages need their
    /// target address as well.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < 8 {
            return Err(Error::Truncated);
        }
        if matches!(b[0], NEIGHBOR_SOLICIT | NEIGHBOR_ADVERT) && b.len() < ND_LEN {
            return Err(Error::Truncated);
        }
        Ok(Icmpv6Packet { buf })
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }

    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(self.msg_type(), DEST_UNREACHABLE..=PARAMETER_PROBLEM)
    }

    /// MTU of a packet-too-big message.
    #[inline]
    pub fn mtu(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }

    /// The quoted packet of an error message, with at least its ports.
    pub fn quoted(&self) -> Result<Ipv6Packet<&[u8]>> {
        let q = Ipv6Packet::new_quoted(&self.buf.as_ref()[8..])?;
        if q.upper_payload().len() < 4 {
            return Err(Error::Truncated);
        }
        Ok(q)
    }

    /// Target address of a solicitation or advertisement (whose length
    /// [`Icmpv6Packet::new_checked`] guarantees); all zero for another
    /// message too short to hold one, so the view never panics.
    #[inline]
    pub fn nd_target(&self) -> [u8; 16] {
        match self.buf.as_ref().get(8..24) {
            Some(t) => arr(t, 0),
            None => [0; 16],
        }
    }

    /// The link-layer address option of a solicitation (source) or an
    /// advertisement (target), if present and well-formed.
    pub fn nd_lladdr(&self) -> Option<MacAddr> {
        let want = if self.msg_type() == NEIGHBOR_SOLICIT {
            OPT_SOURCE_LLADDR
        } else {
            OPT_TARGET_LLADDR
        };
        let b = self.buf.as_ref();
        let mut at = ND_LEN;
        while at + 2 <= b.len() {
            let len = usize::from(b[at + 1]) * 8;
            if len == 0 || at + len > b.len() {
                return None;
            }
            if b[at] == want && len == 8 {
                return Some(MacAddr(arr(b, at + 2)));
            }
            at += len;
        }
        None
    }

    /// Does the checksum verify over the pseudo-header of `src` -> `dst`?
    pub fn checksum_ok(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        let b = self.buf.as_ref();
        #[allow(
            clippy::cast_possible_truncation,
            reason = "a message from one frame is far below 4 GiB"
        )]
        let len = b.len() as u32;
        let s = checksum::ipv6_pseudo(src, dst, len, PROTO_ICMPV6);
        checksum::finish(checksum::sum(b, s)) == 0
    }
}

/// Length of the IPv6 packet [`write_advert`] writes with the target
/// link-layer option, and without it.
pub const ADVERT_WITH_LLADDR: usize = ipv6::HEADER_LEN + ND_LEN + 8;
pub const ADVERT_BARE: usize = ipv6::HEADER_LEN + ND_LEN;

/// Overwrite the IPv6 packet `ip` (a solicitation from `asker` for `target`)
/// with the advertisement `mac` gives for `target`. Returns the new IPv6
/// packet length: [`ADVERT_WITH_LLADDR`] when it fits the buffer, else
/// [`ADVERT_BARE`] (a solicitation without options is that short; the asker
/// then keeps the link-layer address it has). `ip` must hold at least
/// [`ADVERT_BARE`] bytes, which any parsed solicitation does.
pub fn write_advert(ip: &mut [u8], mac: MacAddr, target: &[u8; 16], asker: &[u8; 16]) -> usize {
    let len = if ip.len() >= ADVERT_WITH_LLADDR {
        ADVERT_WITH_LLADDR
    } else {
        ADVERT_BARE
    };
    // Duplicate address detection asks from ::; its answer goes to all nodes.
    let (dst, flags) = if *asker == [0; 16] {
        (ALL_NODES, 0x20) // override
    } else {
        (*asker, 0x60) // solicited, override
    };
    #[allow(
        clippy::cast_possible_truncation,
        reason = "ND_LEN or ND_LEN + 8 bytes"
    )]
    let icmp_len = (len - ipv6::HEADER_LEN) as u16;
    ipv6::write_header(ip, icmp_len, PROTO_ICMPV6, 255, target, &dst);
    let m = &mut ip[ipv6::HEADER_LEN..len];
    m[..8].copy_from_slice(&[NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0]);
    m[8..24].copy_from_slice(target);
    if len == ADVERT_WITH_LLADDR {
        m[24] = OPT_TARGET_LLADDR;
        m[25] = 1;
        m[26..32].copy_from_slice(&mac.0);
    }
    let s = checksum::ipv6_pseudo(target, &dst, u32::from(icmp_len), PROTO_ICMPV6);
    let c = checksum::finish(checksum::sum(m, s));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    len
}

/// Turn the IPv6 packet `ip` (an echo request with no extension header,
/// possibly followed by Ethernet padding) into its echo reply, in place:
/// source and destination swapped, hop limit 64, type echo reply;
/// identifier, sequence and data kept; the checksum (pseudo-header and
/// whole message) verified, then updated for the new type (swapping the
/// addresses leaves the pseudo-header's sum as it was; RFC 1624). `None`,
/// and nothing written, when `ip` is not such a packet with a valid
/// checksum.
pub fn write_echo_reply(ip: &mut [u8]) -> Option<()> {
    let end = {
        let p = Ipv6Packet::new_checked(&*ip).ok()?;
        if p.upper_offset() != ipv6::HEADER_LEN || p.upper_protocol() != PROTO_ICMPV6 {
            return None;
        }
        let m = Icmpv6Packet::new_checked(p.upper_payload()).ok()?;
        if m.msg_type() != ECHO_REQUEST || !m.checksum_ok(&p.src_bytes(), &p.dst_bytes()) {
            return None;
        }
        ipv6::HEADER_LEN + usize::from(p.payload_len())
    };
    let (src, dst): ([u8; 16], [u8; 16]) = (arr(ip, 8), arr(ip, 24));
    ip[8..24].copy_from_slice(&dst);
    ip[24..40].copy_from_slice(&src);
    ip[7] = 64;
    let m = &mut ip[ipv6::HEADER_LEN..end];
    let word = |m: &[u8], at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    let old = word(m, 0);
    m[0] = ECHO_REPLY;
    let c = checksum::update16(word(m, 2), old, word(m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// ff02::1
pub const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
    const VIP: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    /// Solicited-node multicast address of VIP: ff02::1:ff00:10.
    const SNMA: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0, 0, 0x10];

    /// A neighbor solicitation from CLIENT for VIP with a source link-layer
    /// option, checksum as computed by scapy:
    /// `bytes(IPv6(src="2001:db8::7",dst="ff02::1:ff00:10")/ICMPv6ND_NS(tgt="2001:db8::10")/ICMPv6NDOptSrcLLAddr(lladdr="02:00:00:00:00:c1"))[40:]`
    const NS: [u8; 32] = [
        135, 0, 0x1b, 0x45, 0, 0, 0, 0, // type, code, checksum, reserved
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, // target
        1, 1, 0x02, 0, 0, 0, 0, 0xc1, // source link-layer address option
    ];

    #[test]
    fn solicitation_fields_and_checksum() {
        let p = Icmpv6Packet::new_checked(&NS[..]).unwrap();
        assert_eq!(p.msg_type(), NEIGHBOR_SOLICIT);
        assert_eq!(p.nd_target(), VIP);
        assert_eq!(p.nd_lladdr(), Some(MacAddr([2, 0, 0, 0, 0, 0xc1])));
        assert!(p.checksum_ok(&CLIENT, &SNMA), "checksum matches scapy's");
        let mut bad = NS;
        bad[3] ^= 1;
        assert!(!Icmpv6Packet::new_checked(&bad[..])
            .unwrap()
            .checksum_ok(&CLIENT, &SNMA));
        for n in 0..ND_LEN {
            assert!(Icmpv6Packet::new_checked(&NS[..n]).is_err(), "len {n}");
        }
        // An option with length 0 is malformed: ignored, not looped on.
        let mut zero = NS;
        zero[25] = 0;
        assert_eq!(
            Icmpv6Packet::new_checked(&zero[..]).unwrap().nd_lladdr(),
            None
        );
    }

    #[test]
    fn advert_written_in_place_verifies() {
        let mut ip = vec![0u8; 40];
        ipv6::write_header(&mut ip, 32, PROTO_ICMPV6, 255, &CLIENT, &SNMA);
        ip.extend_from_slice(&NS);
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let len = write_advert(&mut ip, mac, &VIP, &CLIENT);
        assert_eq!(len, ADVERT_WITH_LLADDR);
        let p = Ipv6Packet::new_checked(&ip[..len]).unwrap();
        assert_eq!(p.src_bytes(), VIP);
        assert_eq!(p.dst_bytes(), CLIENT);
        assert_eq!(p.hop_limit(), 255);
        let a = Icmpv6Packet::new_checked(p.upper_payload()).unwrap();
        assert_eq!(a.msg_type(), NEIGHBOR_ADVERT);
        assert_eq!(a.nd_target(), VIP);
        assert_eq!(a.nd_lladdr(), Some(mac));
        assert!(a.checksum_ok(&VIP, &CLIENT));
        assert_eq!(p.upper_payload()[4], 0x60, "solicited + override");
    }

    #[test]
    fn advert_without_room_for_the_option_and_for_dad() {
        let mut ip = vec![0u8; ADVERT_BARE];
        let len = write_advert(&mut ip, MacAddr([2, 0, 0, 0, 0, 1]), &VIP, &[0; 16]);
        assert_eq!(len, ADVERT_BARE);
        let p = Ipv6Packet::new_checked(&ip[..]).unwrap();
        assert_eq!(p.dst_bytes(), ALL_NODES);
        let a = Icmpv6Packet::new_checked(p.upper_payload()).unwrap();
        assert!(a.checksum_ok(&VIP, &ALL_NODES));
        assert_eq!(a.nd_lladdr(), None);
    }

    #[test]
    fn echo_reply_in_place() {
        let mut m = vec![ECHO_REQUEST, 0, 0, 0, 0x12, 0x34, 0, 9, 1, 2, 3, 4, 5];
        let s = checksum::ipv6_pseudo(&CLIENT, &VIP, 13, PROTO_ICMPV6);
        let c = checksum::finish(checksum::sum(&m, s));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = vec![0u8; 40];
        ipv6::write_header(&mut ip, 13, PROTO_ICMPV6, 3, &CLIENT, &VIP);
        ip.extend_from_slice(&m);
        ip.push(0); // padding
        write_echo_reply(&mut ip).unwrap();
        let p = Ipv6Packet::new_checked(&ip[..]).unwrap();
        assert_eq!(
            (p.src_bytes(), p.dst_bytes(), p.hop_limit()),
            (VIP, CLIENT, 64)
        );
        let r = Icmpv6Packet::new_checked(p.upper_payload()).unwrap();
        assert_eq!((r.msg_type(), r.code()), (ECHO_REPLY, 0));
        assert!(r.checksum_ok(&VIP, &CLIENT));
        assert_eq!(&p.upper_payload()[4..], &m[4..]);
        let before = ip.clone();
        assert_eq!(write_echo_reply(&mut ip), None, "a reply is not answered");
        assert_eq!(ip, before);
    }

    #[test]
    fn packet_too_big_quotes_the_reply() {
        let mut m = vec![PACKET_TOO_BIG, 0, 0, 0, 0, 0, 0x05, 0x00]; // MTU 1280
        let mut q = vec![0u8; 40];
        ipv6::write_header(&mut q, 1400, 6, 64, &VIP, &CLIENT);
        q.extend_from_slice(&[0x01, 0xbb, 0x9c, 0x40, 0, 0, 0, 1]);
        m.extend_from_slice(&q);
        let p = Icmpv6Packet::new_checked(&m[..]).unwrap();
        assert!(p.is_error());
        assert_eq!(p.mtu(), 1280);
        let inner = p.quoted().unwrap();
        assert_eq!((inner.src_bytes(), inner.upper_protocol()), (VIP, 6));
        assert_eq!(
            super::super::l4::ports(inner.upper_payload()).unwrap(),
            (443, 40000)
        );
        assert_eq!(
            Icmpv6Packet::new_checked(&m[..50])
                .unwrap()
                .quoted()
                .unwrap_err(),
            Error::Truncated
        );
    }
}
