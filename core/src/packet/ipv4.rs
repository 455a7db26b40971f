//! IPv4 headers (RFC 791), options and fragments included.

use std::net::Ipv4Addr;

use super::{arr, be16, checksum, Error, Result};

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOTAL_LEN: usize = 2;
    pub const ID: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTO: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
    pub const MIN_HEADER: usize = 20;
}

#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buf: T,
    /// End of the part the accessors cover: the total length, or the buffer's
    /// end for a header quoted in an ICMP error.
    end: usize,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// A whole packet: header, options and total length must fit the buffer
    /// (trailing Ethernet padding is allowed and ignored).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        let hl = Self::check_header(b)?;
        let total = usize::from(be16(b, field::TOTAL_LEN));
        if total < hl {
            return Err(Error::BadLength);
        }
        if total > b.len() {
            return Err(Error::Truncated);
        }
        Ok(Ipv4Packet { buf, end: total })
    }

    /// A header quoted inside an ICMP error: the payload may be cut short, so
    /// only the header itself must fit.
    pub fn new_quoted(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        Self::check_header(b)?;
        let end = b.len();
        Ok(Ipv4Packet { buf, end })
    }

    fn check_header(b: &[u8]) -> Result<usize> {
        if b.len() < field::MIN_HEADER {
            return Err(Error::Truncated);
        }
        if b[field::VER_IHL] >> 4 != 4 {
            return Err(Error::BadVersion);
        }
        let hl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if hl < field::MIN_HEADER {
            return Err(Error::BadHeaderLength);
        }
        if hl > b.len() {
            return Err(Error::Truncated);
        }
        Ok(hl)
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), field::TOTAL_LEN)
    }

    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), field::ID)
    }

    #[inline]
    pub fn dont_fragment(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x4000 != 0
    }

    #[inline]
    pub fn more_fragments(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x2000 != 0
    }

    /// Fragment offset in bytes.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x1fff) << 3
    }

    /// Part of a fragmented datagram (first fragment included).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        be16(self.buf.as_ref(), field::FLAGS_FRAG) & 0x3fff != 0
    }

    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }

    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[field::PROTO]
    }

    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr::<4>(self.buf.as_ref(), field::SRC))
    }

    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(arr::<4>(self.buf.as_ref(), field::DST))
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), field::CHECKSUM)
    }

    /// Does the header checksum verify?
    pub fn checksum_ok(&self) -> bool {
        checksum::checksum(&self.buf.as_ref()[..self.header_len()]) == 0
    }

    /// The payload, up to the total length (or the end of a quoted header's buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Recompute the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buf.as_mut();
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&b[..hl]);
        b[field::CHECKSUM..field::CHECKSUM + 2].copy_from_slice(&c.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 203.0.113.7 -> 198.51.100.10, TCP, with one 4-byte option (NOP x4), then 8 bytes of payload.
    const WITH_OPTIONS: [u8; 32] = [
        0x46, 0x00, 0x00, 0x20, // v4, IHL 6, total 32
        0x12, 0x34, 0x20, 0x02, // id, MF set, offset 2 (16 bytes)
        0x40, 0x06, 0x00, 0x00, // TTL 64, TCP, checksum (filled in the test)
        203, 0, 113, 7, // src
        198, 51, 100, 10, // dst
        1, 1, 1, 1, // options: NOP x4
        0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, // payload
    ];

    #[test]
    fn fields_options_fragments() {
        let mut b = WITH_OPTIONS;
        Ipv4Packet::new_checked(&mut b[..]).unwrap().fill_checksum();
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert!(p.checksum_ok());
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.total_len(), 32);
        assert_eq!(p.ident(), 0x1234);
        assert!(p.more_fragments() && !p.dont_fragment() && p.is_fragment());
        assert_eq!(p.frag_offset(), 16);
        assert_eq!((p.ttl(), p.protocol()), (64, 6));
        assert_eq!(p.src(), Ipv4Addr::new(203, 0, 113, 7));
        assert_eq!(p.dst(), Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(p.payload(), &WITH_OPTIONS[24..]);
    }

    #[test]
    fn padding_is_ignored() {
        let mut b = WITH_OPTIONS.to_vec();
        b.extend_from_slice(&[0; 10]);
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn malformed() {
        for n in 0..WITH_OPTIONS.len() {
            assert_eq!(
                Ipv4Packet::new_checked(&WITH_OPTIONS[..n]).unwrap_err(),
                Error::Truncated,
                "len {n}"
            );
        }
        let mut b = WITH_OPTIONS;
        b[0] = 0x44; // IHL 4
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLength
        );
        b[0] = 0x65; // version 6
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadVersion
        );
        let mut b = WITH_OPTIONS;
        b[3] = 20; // total length below the header length
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::BadLength
        );
        let mut b = WITH_OPTIONS;
        b[0] = 0x4f; // IHL 15 = 60 bytes > buffer
        assert_eq!(
            Ipv4Packet::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn quoted_header_may_be_cut() {
        let p = Ipv4Packet::new_quoted(&WITH_OPTIONS[..28]).unwrap();
        assert_eq!(p.payload().len(), 4);
        assert!(Ipv4Packet::new_checked(&WITH_OPTIONS[..28]).is_err());
    }
}
