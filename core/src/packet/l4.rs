//! TCP (RFC 9293) and UDP (RFC 768) headers, and the port pair both start with.

use super::{be16, be32, Error, Result};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Source and destination port: the first four bytes of TCP and UDP, all an
/// ICMP error is guaranteed to quote besides the IP header.
#[inline]
pub fn ports(b: &[u8]) -> Result<(u16, u16)> {
    if b.len() < 4 {
        return Err(Error::Truncated);
    }
    Ok((be16(b, 0), be16(b, 2)))
}

pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const ACK: u8 = 0x10;

#[derive(Debug, Clone, Copy)]
pub struct TcpHeader<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpHeader<T> {
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < 20 {
            return Err(Error::Truncated);
        }
        let off = usize::from(b[12] >> 4) * 4;
        if off < 20 {
            return Err(Error::BadHeaderLength);
        }
        if off > b.len() {
            return Err(Error::Truncated);
        }
        Ok(TcpHeader { buf })
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }

    #[inline]
    pub fn seq(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }

    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[12] >> 4) * 4
    }

    /// The flag byte: FIN, SYN, RST, PSH, ACK, URG, ECE, CWR.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[13]
    }

    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & SYN != 0
    }

    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & ACK != 0
    }

    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & FIN != 0
    }

    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & RST != 0
    }
}

#[derive(Debug, Clone, Copy)]
pub struct UdpHeader<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpHeader<T> {
    /// The length field must cover the header and fit the buffer.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < 8 {
            return Err(Error::Truncated);
        }
        let len = usize::from(be16(b, 4));
        if len < 8 {
            return Err(Error::BadLength);
        }
        if len > b.len() {
            return Err(Error::Truncated);
        }
        Ok(UdpHeader { buf })
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }

    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 8
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[8..usize::from(self.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN_SEGMENT: [u8; 24] = [
        0x9c, 0x40, 0x01, 0xbb, // 40000 -> 443
        0, 0, 0x03, 0xe8, 0, 0, 0, 0, // seq 1000, ack 0
        0x60, 0x02, 0xfa, 0xf0, // offset 6 (one option word), SYN, window
        0, 0, 0, 0, // checksum, urgent
        2, 4, 0x05, 0xb4, // MSS 1460
    ];

    #[test]
    fn tcp_fields() {
        let t = TcpHeader::new_checked(&SYN_SEGMENT[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port(), t.seq()), (40000, 443, 1000));
        assert_eq!(t.header_len(), 24);
        assert!(t.syn() && !t.ack() && !t.fin() && !t.rst());
        for n in 0..SYN_SEGMENT.len() {
            assert_eq!(
                TcpHeader::new_checked(&SYN_SEGMENT[..n]).unwrap_err(),
                Error::Truncated,
                "len {n}"
            );
        }
        let mut b = SYN_SEGMENT;
        b[12] = 0x40;
        assert_eq!(
            TcpHeader::new_checked(&b[..]).unwrap_err(),
            Error::BadHeaderLength
        );
    }

    #[test]
    fn udp_fields_and_lengths() {
        let d = [0x9c, 0x40, 0x13, 0x88, 0, 10, 0, 0, 0xaa, 0xbb, 0xcc];
        let u = UdpHeader::new_checked(&d[..]).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (40000, 5000, 10));
        assert_eq!(u.payload(), &[0xaa, 0xbb]);
        let mut bad = d;
        bad[5] = 7;
        assert_eq!(
            UdpHeader::new_checked(&bad[..]).unwrap_err(),
            Error::BadLength
        );
        bad[5] = 12;
        assert_eq!(
            UdpHeader::new_checked(&bad[..]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(ports(&d[..3]).unwrap_err(), Error::Truncated);
        assert_eq!(ports(&d).unwrap(), (40000, 5000));
    }
}
