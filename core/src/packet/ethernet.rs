//! Ethernet II frames with at most one 802.1Q tag.

use super::{arr, be16, Error, Result};

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    /// Group bit set (broadcast included).
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// The IPv6 multicast MAC 33:33:xx:xx:xx:xx for a multicast address.
    pub fn ipv6_multicast(addr: &[u8; 16]) -> MacAddr {
        MacAddr([0x33, 0x33, addr[12], addr[13], addr[14], addr[15]])
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address: expected six hex bytes separated by ':' (aa:bb:cc:dd:ee:ff)")]
pub struct ParseMacError(pub String);

impl std::str::FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> std::result::Result<MacAddr, ParseMacError> {
        let err = || ParseMacError(s.to_owned());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in &mut out {
            let p = parts.next().ok_or_else(err)?;
            if p.len() != 2 {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const TYPE: usize = 12;
    pub const HEADER: usize = 14;
    pub const TCI: usize = 14;
    pub const INNER_TYPE: usize = 16;
    pub const VLAN_HEADER: usize = 18;
}

/// An Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T> {
    buf: T,
    vlan: bool,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Check that the header (and the VLAN tag, if any) is there.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        if b.len() < field::HEADER {
            return Err(Error::Truncated);
        }
        let vlan = be16(b, field::TYPE) == ETHERTYPE_VLAN;
        if vlan && b.len() < field::VLAN_HEADER {
            return Err(Error::Truncated);
        }
        Ok(EthernetFrame { buf, vlan })
    }

    #[inline]
    pub fn dst(&self) -> MacAddr {
        MacAddr(arr(self.buf.as_ref(), field::DST.start))
    }

    #[inline]
    pub fn src(&self) -> MacAddr {
        MacAddr(arr(self.buf.as_ref(), field::SRC.start))
    }

    /// The 802.1Q tag control information, if tagged.
    #[inline]
    pub fn vlan_tci(&self) -> Option<u16> {
        self.vlan.then(|| be16(self.buf.as_ref(), field::TCI))
    }

    /// The ethertype of the payload (after the tag, if any).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let at = if self.vlan {
            field::INNER_TYPE
        } else {
            field::TYPE
        };
        be16(self.buf.as_ref(), at)
    }

    /// Bytes before the payload: 14, or 18 with a tag.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.vlan {
            field::VLAN_HEADER
        } else {
            field::HEADER
        }
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }

    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    #[inline]
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buf.as_mut()[field::DST].copy_from_slice(&m.0);
    }

    #[inline]
    pub fn set_src(&mut self, m: MacAddr) {
        self.buf.as_mut()[field::SRC].copy_from_slice(&m.0);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buf.as_mut()[at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGGED: [u8; 22] = [
        0x02, 0, 0, 0, 0, 0xaa, // dst
        0x02, 0, 0, 0, 0, 0xbb, // src
        0x81, 0x00, 0x20, 0x64, // 802.1Q, PCP 1, VID 100
        0x86, 0xdd, // IPv6
        1, 2, 3, 4, // payload
    ];

    #[test]
    fn tagged_frame() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.dst(), MacAddr([2, 0, 0, 0, 0, 0xaa]));
        assert_eq!(f.src(), MacAddr([2, 0, 0, 0, 0, 0xbb]));
        assert_eq!(f.vlan_tci(), Some(0x2064));
        assert_eq!(f.ethertype(), ETHERTYPE_IPV6);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[1, 2, 3, 4]);
    }

    #[test]
    fn untagged_frame_and_setters() {
        let mut b = [0u8; 14];
        b[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let mut f = EthernetFrame::new_checked(&mut b[..]).unwrap();
        assert_eq!(f.vlan_tci(), None);
        assert_eq!(f.ethertype(), ETHERTYPE_IPV4);
        assert!(f.payload().is_empty());
        f.set_dst(MacAddr([1; 6]));
        f.set_src(MacAddr([2; 6]));
        assert_eq!(b[..12], [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2]);
    }

    #[test]
    fn truncation_at_every_length() {
        for n in 0..18 {
            assert_eq!(
                EthernetFrame::new_checked(&TAGGED[..n]).unwrap_err(),
                Error::Truncated,
                "len {n}"
            );
        }
        assert!(EthernetFrame::new_checked(&TAGGED[..18]).is_ok());
    }

    #[test]
    fn mac_text_round_trip_and_errors() {
        let m: MacAddr = "02:70:63:61:70:0a".parse().unwrap();
        assert_eq!(m, MacAddr([2, 0x70, 0x63, 0x61, 0x70, 0x0a]));
        assert_eq!(m.to_string(), "02:70:63:61:70:0a");
        for bad in [
            "",
            "02:70:63:61:70",
            "02:70:63:61:70:0a:01",
            "2:70:63:61:70:0a",
            "zz:70:63:61:70:0a",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert!(e.to_string().contains("not a MAC address"), "{e}");
        }
        assert!(MacAddr::BROADCAST.is_broadcast() && MacAddr::BROADCAST.is_multicast());
        assert!(!m.is_multicast());
    }
}
