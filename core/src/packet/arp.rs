//! ARP for IPv4 over Ethernet (RFC 826).

use std::net::Ipv4Addr;

use super::{arr, be16, Error, MacAddr, Result};

pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OP: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
    pub const LEN: usize = 28;
}

#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Accepts only Ethernet/IPv4 ARP (htype 1, ptype 0x0800, lengths 6 and 4).
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < field::LEN {
            return Err(Error::Truncated);
        }
        if be16(b, field::HTYPE) != 1
            || be16(b, field::PTYPE) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(ArpPacket { buf })
    }

    #[inline]
    pub fn op(&self) -> u16 {
        be16(self.buf.as_ref(), field::OP)
    }

    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        MacAddr(arr(self.buf.as_ref(), field::SHA))
    }

    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr::<4>(self.buf.as_ref(), field::SPA))
    }

    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        MacAddr(arr(self.buf.as_ref(), field::THA))
    }

    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr::<4>(self.buf.as_ref(), field::TPA))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Turn a request into the reply `our_mac` gives for its target address,
    /// in place: the sender becomes the target.
    pub fn make_reply(&mut self, our_mac: MacAddr) {
        let b = self.buf.as_mut();
        let (sha, spa): ([u8; 6], [u8; 4]) = (arr(b, field::SHA), arr(b, field::SPA));
        let tpa: [u8; 4] = arr(b, field::TPA);
        b[field::OP..field::OP + 2].copy_from_slice(&OP_REPLY.to_be_bytes());
        b[field::SHA..field::SHA + 6].copy_from_slice(&our_mac.0);
        b[field::SPA..field::SPA + 4].copy_from_slice(&tpa);
        b[field::THA..field::THA + 6].copy_from_slice(&sha);
        b[field::TPA..field::TPA + 4].copy_from_slice(&spa);
    }
}

/// Write an ARP request from (`mac`, `ip`) for `target` into `buf` (28 bytes).
pub fn write_request(buf: &mut [u8; field::LEN], mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) {
    let [op_hi, op_lo] = OP_REQUEST.to_be_bytes();
    buf[..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, op_hi, op_lo]);
    buf[field::SHA..field::SHA + 6].copy_from_slice(&mac.0);
    buf[field::SPA..field::SPA + 4].copy_from_slice(&ip.octets());
    buf[field::THA..field::THA + 6].copy_from_slice(&[0; 6]);
    buf[field::TPA..field::TPA + 4].copy_from_slice(&target.octets());
}

pub const LEN: usize = field::LEN;

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01, // Ethernet/IPv4, request
        0x02, 0, 0, 0, 0, 0xc1, 203, 0, 113, 7, // sender 02:..:c1 203.0.113.7
        0, 0, 0, 0, 0, 0, 198, 51, 100, 10, // target ? 198.51.100.10
    ];

    #[test]
    fn parse_and_reply_in_place() {
        let mut b = REQUEST;
        let mut p = ArpPacket::new_checked(&mut b[..]).unwrap();
        assert_eq!(p.op(), OP_REQUEST);
        assert_eq!(p.sender_ip(), Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(p.target_ip(), Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(p.sender_mac(), MacAddr([2, 0, 0, 0, 0, 0xc1]));
        p.make_reply(MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.op(), OP_REPLY);
        assert_eq!(p.sender_mac(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(p.target_mac(), MacAddr([2, 0, 0, 0, 0, 0xc1]));
        assert_eq!(p.target_ip(), Ipv4Addr::new(203, 0, 113, 7));
    }

    #[test]
    fn write_request_parses_back() {
        let mut b = [0u8; LEN];
        write_request(
            &mut b,
            MacAddr([2, 0, 0, 0, 0, 1]),
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(192, 0, 2, 11),
        );
        let p = ArpPacket::new_checked(&b[..]).unwrap();
        assert_eq!(
            (p.op(), p.target_ip(), p.sender_ip()),
            (
                OP_REQUEST,
                Ipv4Addr::new(192, 0, 2, 11),
                Ipv4Addr::new(192, 0, 2, 1)
            )
        );
    }

    #[test]
    fn rejects_truncated_and_foreign() {
        for n in 0..LEN {
            assert_eq!(
                ArpPacket::new_checked(&REQUEST[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        let mut b = REQUEST;
        b[1] = 6; // IEEE 802 hardware
        assert_eq!(
            ArpPacket::new_checked(&b[..]).unwrap_err(),
            Error::Unsupported
        );
    }
}
