//! IPv6 (RFC 8200): the fixed header and a bounded walk over extension
//! headers to the upper-layer header.

use std::net::Ipv6Addr;

use super::{arr, be16, be32, Error, Result};

const HEADER: usize = 40;
/// Extension headers walked at most; more is treated as malformed.
pub const MAX_EXTENSION_HEADERS: usize = 8;

pub const NH_HOP_BY_HOP: u8 = 0;
pub const NH_ROUTING: u8 = 43;
pub const NH_FRAGMENT: u8 = 44;
pub const NH_ESP: u8 = 50;
pub const NH_AH: u8 = 51;
pub const NH_NONE: u8 = 59;
pub const NH_DEST_OPTS: u8 = 60;

/// The fragment header's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Offset in bytes.
    pub offset: u16,
    pub more: bool,
    pub ident: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T> {
    buf: T,
    end: usize,
    upper_proto: u8,
    upper_offset: usize,
    fragment: Option<Fragment>,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// A whole packet: the payload length must fit the buffer; extension
    /// headers are walked within it.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        check_fixed(b)?;
        let end = HEADER + usize::from(be16(b, 4));
        if end > b.len() {
            return Err(Error::Truncated);
        }
        Self::walk(buf, end)
    }

    /// A header quoted inside an ICMPv6 error, whose payload may be cut short.
    pub fn new_quoted(buf: T) -> Result<Self> {
        check_fixed(buf.as_ref())?;
        let end = buf.as_ref().len();
        Self::walk(buf, end)
    }

    fn walk(buf: T, end: usize) -> Result<Self> {
        let b = &buf.as_ref()[..end];
        let mut next = b[6];
        let mut at = HEADER;
        let mut fragment = None;
        for _ in 0..=MAX_EXTENSION_HEADERS {
            let len = match next {
                NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS => {
                    let l = b.get(at + 1).ok_or(Error::Truncated)?;
                    (usize::from(*l) + 1) * 8
                }
                NH_FRAGMENT => {
                    if at + 8 > b.len() {
                        return Err(Error::Truncated);
                    }
                    fragment = Some(Fragment {
                        offset: be16(b, at + 2) & !0x7,
                        more: b[at + 3] & 1 == 1,
                        ident: be32(b, at + 4),
                    });
                    8
                }
                NH_AH => {
                    let l = b.get(at + 1).ok_or(Error::Truncated)?;
                    (usize::from(*l) + 2) * 4
                }
                _ => {
                    // Upper layer (ESP and "no next header" included): stop.
                    return Ok(Ipv6Packet {
                        upper_proto: next,
                        upper_offset: at,
                        fragment,
                        end,
                        buf,
                    });
                }
            };
            if at + len > b.len() {
                return Err(Error::Truncated);
            }
            next = b[at];
            at += len;
        }
        Err(Error::TooManyExtensionHeaders)
    }

    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(arr::<16>(self.buf.as_ref(), 8))
    }

    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(arr::<16>(self.buf.as_ref(), 24))
    }

    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        arr(self.buf.as_ref(), 8)
    }

    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        arr(self.buf.as_ref(), 24)
    }

    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }

    /// The first header's next-header value.
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }

    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }

    /// The upper-layer protocol after the extension headers.
    #[inline]
    pub fn upper_protocol(&self) -> u8 {
        self.upper_proto
    }

    /// Offset of the upper-layer header from the start of the IPv6 header.
    #[inline]
    pub fn upper_offset(&self) -> usize {
        self.upper_offset
    }

    /// The fragment header, if the packet has one.
    #[inline]
    pub fn fragment(&self) -> Option<Fragment> {
        self.fragment
    }

    /// The upper-layer header and payload.
    #[inline]
    pub fn upper_payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.upper_offset..self.end]
    }
}

fn check_fixed(b: &[u8]) -> Result<()> {
    if b.len() < HEADER {
        return Err(Error::Truncated);
    }
    if b[0] >> 4 != 6 {
        return Err(Error::BadVersion);
    }
    Ok(())
}

/// Write a fixed IPv6 header into `b[..40]`.
pub fn write_header(
    b: &mut [u8],
    payload_len: u16,
    next: u8,
    hop_limit: u8,
    src: &[u8; 16],
    dst: &[u8; 16],
) {
    b[..4].copy_from_slice(&[0x60, 0, 0, 0]);
    b[4..6].copy_from_slice(&payload_len.to_be_bytes());
    b[6] = next;
    b[7] = hop_limit;
    b[8..24].copy_from_slice(src);
    b[24..40].copy_from_slice(dst);
}

pub const HEADER_LEN: usize = HEADER;

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, ext: &[u8], upper: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        let dst = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        write_header(
            &mut p,
            u16::try_from(ext.len() + upper.len()).unwrap(),
            next,
            64,
            &src,
            &dst,
        );
        p.extend_from_slice(ext);
        p.extend_from_slice(upper);
        p
    }

    const UDP: [u8; 8] = [0x9c, 0x40, 0x13, 0x88, 0, 8, 0, 0];

    #[test]
    fn plain_udp() {
        let b = packet(17, &[], &UDP);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.upper_protocol(), p.upper_offset()), (17, 40));
        assert_eq!(p.upper_payload(), &UDP);
        assert_eq!(p.src().to_string(), "2001:db8::7");
        assert_eq!(p.dst().to_string(), "2001:db8::10");
        assert_eq!(p.hop_limit(), 64);
        assert!(p.fragment().is_none());
    }

    #[test]
    fn extension_headers_and_fragment() {
        let ext = [
            NH_DEST_OPTS,
            0,
            1,
            4,
            0,
            0,
            0,
            0, // hop-by-hop, 8 bytes, PadN
            NH_FRAGMENT,
            0,
            1,
            4,
            0,
            0,
            0,
            0, // destination options, 8 bytes, PadN
            17,
            0,
            0x05,
            0x01,
            0xde,
            0xad,
            0xbe,
            0xef, // fragment: offset 160 units = 1280 bytes, M=1, id
        ];
        let b = packet(NH_HOP_BY_HOP, &ext, &UDP);
        let p = Ipv6Packet::new_checked(&b[..]).unwrap();
        assert_eq!((p.upper_protocol(), p.upper_offset()), (17, 64));
        assert_eq!(
            p.fragment(),
            Some(Fragment {
                offset: 1280,
                more: true,
                ident: 0xdead_beef
            })
        );
    }

    #[test]
    fn too_many_extension_headers() {
        let mut ext = Vec::new();
        for _ in 0..=MAX_EXTENSION_HEADERS {
            ext.extend_from_slice(&[NH_DEST_OPTS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let b = packet(NH_DEST_OPTS, &ext, &UDP);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            Error::TooManyExtensionHeaders
        );
    }

    #[test]
    fn malformed() {
        let b = packet(17, &[], &UDP);
        for n in 0..b.len() {
            assert_eq!(
                Ipv6Packet::new_checked(&b[..n]).unwrap_err(),
                Error::Truncated,
                "len {n}"
            );
        }
        let mut v = b.clone();
        v[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&v[..]).unwrap_err(),
            Error::BadVersion
        );
        // An extension header whose length runs past the payload.
        let b = packet(NH_DEST_OPTS, &[17, 1, 0, 0, 0, 0, 0, 0], &[]);
        assert_eq!(
            Ipv6Packet::new_checked(&b[..]).unwrap_err(),
            Error::Truncated
        );
    }

    #[test]
    fn quoted_may_be_cut() {
        let mut b = packet(17, &[], &UDP);
        b[5] = 200; // claims more payload than present
        assert!(Ipv6Packet::new_checked(&b[..]).is_err());
        let p = Ipv6Packet::new_quoted(&b[..]).unwrap();
        assert_eq!(p.upper_payload(), &UDP);
    }
}
