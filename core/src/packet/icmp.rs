//! ICMPv4 (RFC 792): type, code, and the datagram an error message quotes.

use super::ipv4::Ipv4Packet;
use super::{be16, Error, Result};

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
