//! ICMPv4 (RFC 792): type, code, and the datagram an error message quotes.

use super::ipv4::Ipv4Packet;
use super::{be16, checksum, Error, Result};

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
pub const PARAMETER_PROBLEM: u8 = 12;
/// Destination unreachable, code 4: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;

#[derive(Debug, Clone, Copy)]
pub struct IcmpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> IcmpPacket<T> {
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        if buf.as_ref().len() < 8 {
            return Err(Error::Truncated);
        }
        Ok(IcmpPacket { buf })
    }

    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }

    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }

    /// An error message that quotes the offending datagram.
    #[inline]
    pub fn is_error(&self) -> bool {
        matches!(
            self.msg_type(),
            DEST_UNREACHABLE | TIME_EXCEEDED | PARAMETER_PROBLEM
        )
    }

    #[inline]
    pub fn is_frag_needed(&self) -> bool {
        self.msg_type() == DEST_UNREACHABLE && self.code() == CODE_FRAG_NEEDED
    }

    /// Next-hop MTU of a fragmentation-needed message.
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }

    /// The quoted datagram's IP header and first bytes (at least the ports
    /// must be there for it to be useful to a load balancer).
    pub fn quoted(&self) -> Result<Ipv4Packet<&[u8]>> {
        let q = Ipv4Packet::new_quoted(&self.buf.as_ref()[8..])?;
        if q.payload().len() < 4 {
            return Err(Error::Truncated);
        }
        Ok(q)
    }
}

/// Turn the IPv4 packet `ip` (an echo request, possibly followed by
/// Ethernet padding) into its echo reply, in place: source and destination
/// swapped, TTL 64, type echo reply; identifier, sequence and data kept; the
/// header checksum computed again, the ICMP checksum (over the whole ICMP
/// message) verified, then updated for the new type (RFC 1624: one pass
/// over the message, not two). `None`, and nothing written, when `ip` is
/// not a whole IPv4 packet carrying an echo request with a valid checksum.
pub fn write_echo_reply(ip: &mut [u8]) -> Option<()> {
    let (hl, end) = {
        let p = Ipv4Packet::new_checked(&*ip).ok()?;
        if p.protocol() != 1 || p.is_fragment() {
            return None;
        }
        let m = IcmpPacket::new_checked(p.payload()).ok()?;
        if m.msg_type() != ECHO_REQUEST || !checksum_ok(p.payload()) {
            return None;
        }
        (p.header_len(), usize::from(p.total_len()))
    };
    let (src, dst): ([u8; 4], [u8; 4]) = (super::arr(ip, 12), super::arr(ip, 16));
    ip[12..16].copy_from_slice(&dst);
    ip[16..20].copy_from_slice(&src);
    ip[8] = 64;
    Ipv4Packet::new_checked(&mut *ip).ok()?.fill_checksum();
    let m = &mut ip[hl..end];
    let old = be16(m, 0);
    m[0] = ECHO_REPLY;
    let c = checksum::update16(be16(m, 2), old, be16(m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    Some(())
}

/// Does the ICMP message `m` (the whole message) carry a valid checksum?
pub fn checksum_ok(m: &[u8]) -> bool {
    checksum::checksum(m) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frag needed (MTU 1400) quoting a reply 198.51.100.10:443 -> 203.0.113.7:40000.
    pub const FRAG_NEEDED: [u8; 36] = [
        3, 4, 0, 0, 0, 0, 0x05, 0x78, // type 3 code 4, checksum, unused, MTU 1400
        0x45, 0, 0x05, 0xdc, 0, 0, 0x40, 0, 64, 6, 0, 0, // quoted IPv4: len 1500, DF, TCP
        198, 51, 100, 10, 203, 0, 113, 7, // VIP -> client
        0x01, 0xbb, 0x9c, 0x40, 0, 0, 0, 1, // 443 -> 40000, seq
    ];

    #[test]
    fn frag_needed_quotes_the_reply() {
        let p = IcmpPacket::new_checked(&FRAG_NEEDED[..]).unwrap();
        assert!(p.is_error() && p.is_frag_needed());
        assert_eq!(p.next_hop_mtu(), 1400);
        let q = p.quoted().unwrap();
        assert_eq!(q.src().octets(), [198, 51, 100, 10]);
        assert_eq!(q.protocol(), 6);
        assert_eq!(super::super::l4::ports(q.payload()).unwrap(), (443, 40000));
    }

    #[test]
    fn echo_reply_in_place() {
        let mut m = vec![
            ECHO_REQUEST,
            0,
            0,
            0,
            0x12,
            0x34,
            0,
            7,
            b'p',
            b'i',
            b'n',
            b'g',
            b'!',
        ];
        let c = checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 1, 0x40, 0, 3, 1, 0, 0, 203, 0, 113, 7, 198, 51, 100, 10,
        ];
        ip[3] = u8::try_from(20 + m.len()).unwrap();
        ip.extend_from_slice(&m);
        ip.extend_from_slice(&[0; 4]); // Ethernet padding stays as it is
        Ipv4Packet::new_checked(&mut ip[..])
            .unwrap()
            .fill_checksum();
        write_echo_reply(&mut ip).unwrap();
        let p = Ipv4Packet::new_checked(&ip[..]).unwrap();
        assert!(p.checksum_ok());
        assert_eq!(p.src().octets(), [198, 51, 100, 10]);
        assert_eq!(p.dst().octets(), [203, 0, 113, 7]);
        assert_eq!(p.ttl(), 64);
        let r = p.payload();
        assert!(checksum_ok(r));
        assert_eq!((r[0], r[1]), (ECHO_REPLY, 0));
        assert_eq!(&r[4..], &m[4..], "identifier, sequence and data kept");
        assert_eq!(&ip[ip.len() - 4..], &[0; 4]);
        // Not an echo request: refused, untouched.
        let before = ip.clone();
        assert_eq!(write_echo_reply(&mut ip), None);
        assert_eq!(ip, before);
    }

    #[test]
    fn truncated_quotes() {
        for n in 0..8 {
            assert!(IcmpPacket::new_checked(&FRAG_NEEDED[..n]).is_err());
        }
        for n in 8..32 {
            let p = IcmpPacket::new_checked(&FRAG_NEEDED[..n]).unwrap();
            assert_eq!(p.quoted().unwrap_err(), Error::Truncated, "len {n}");
        }
    }
}
