//! QUIC routing by connection ID: a UDP VIP in QUIC mode sends a packet to
//! the backend whose server id its destination connection ID carries,
//! whatever the 5-tuple, so a connection survives the client's move to
//! another address or port (NAT rebinding, Wi-Fi to cellular).
//!
//! Nothing is decrypted: only the version-independent invariants of RFC 8999
//! (the first byte's form bit, a long header's version and DCID length) and
//! the QUIC-LB plaintext layout (draft-ietf-quic-load-balancers) are read.
//! The server encodes its id into every connection ID it issues:
//!
//! ```text
//! CID byte 0:  2 config-rotation bits | 6 bits the server may use
//! CID bytes 1..=len: the server id (len per VIP, 1 to 15)
//! CID rest:    the server's own (random, a nonce)
//! ```
//!
//! Rotation bits `11` mark a connection ID a server issued without an id
//! (QUIC-LB's "unroutable"): routed as if it carried none. A short header
//! does not say its DCID length; the balancer needs only the first
//! `1 + len` bytes, which every server-issued ID of this layout has.
//!
//! Long headers of versions 1 (RFC 9000) and 2 (RFC 9369) are parsed: a
//! client's Initial or 0-RTT packet whose DCID carries no known id is the
//! start of a connection, placed by Maglev on a hash of that DCID (so the
//! client's retransmitted Initials land together, from any port). Every
//! other packet without a known id, and any long header of another
//! version, goes the way of any UDP flow (flow table, Maglev on the
//! 5-tuple).

/// Version 1 (RFC 9000).
pub const VERSION_1: u32 = 1;
/// Version 2 (RFC 9369).
pub const VERSION_2: u32 = 0x6b33_43cf;
/// The longest connection ID versions 1 and 2 allow.
pub const MAX_CID_LEN: usize = 20;
/// The longest server id QUIC-LB's plaintext layout allows.
pub const MAX_SERVER_ID_LEN: u8 = 15;
/// Config-rotation bits of a connection ID that carries no server id.
const UNROUTABLE: u8 = 0b11;

/// A server id: 1 to [`MAX_SERVER_ID_LEN`] bytes, kept as a big-endian
/// number and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerId {
    len: u8,
    value: u128,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServerIdError {
    #[error("a server id is 1 to {MAX_SERVER_ID_LEN} bytes, not {0}")]
    Length(usize),
    #[error("a server id is written in hex (two digits a byte): {0}")]
    Hex(String),
}

impl ServerId {
    pub fn new(bytes: &[u8]) -> Result<ServerId, ServerIdError> {
        if bytes.is_empty() || bytes.len() > usize::from(MAX_SERVER_ID_LEN) {
            return Err(ServerIdError::Length(bytes.len()));
        }
        Ok(ServerId {
            len: u8::try_from(bytes.len()).expect("at most 15"),
            value: be_value(bytes),
        })
    }

    /// From hex digits ("0a1b", an optional "0x" before them).
    pub fn from_hex(s: &str) -> Result<ServerId, ServerIdError> {
        let digits = s.strip_prefix("0x").unwrap_or(s);
        if !digits.len().is_multiple_of(2) || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ServerIdError::Hex(format!("{s:?}")));
        }
        let bytes: Vec<u8> = (0..digits.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("checked hex digits"))
            .collect();
        ServerId::new(&bytes)
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// Never true: a server id has at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The id as the number its bytes spell, big-endian.
    pub fn value(&self) -> u128 {
        self.value
    }

    pub fn bytes(&self) -> Vec<u8> {
        let all = self.value.to_be_bytes();
        all[16 - usize::from(self.len)..].to_vec()
    }
}

impl std::fmt::Display for ServerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.bytes().iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A VIP's QUIC mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QuicMode {
    /// Bytes of server id after the connection ID's first byte.
    pub server_id_len: u8,
}

/// What a datagram to a QUIC VIP says about where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A client's Initial or 0-RTT packet (version 1 or 2): `id` if its
    /// DCID carries one, else placed on `dcid_hash`.
    First { id: Option<u128>, dcid_hash: u64 },
    /// Any other packet of versions 1 or 2, long or short: `id` if its
    /// DCID carries one.
    Other { id: Option<u128> },
    /// A long header of another version, or one too short or malformed to
    /// read: a plain UDP datagram.
    Unparsed,
}

/// How a datagram to a QUIC VIP was placed: each has its worker counter,
/// `quic_by_id` and so on, indexed by `Route as usize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the backend its server id names.
    ById,
    /// An Initial or 0-RTT packet without a known id: Maglev on its DCID.
    Initial,
    /// No known id (none, too short, unroutable or unknown): as UDP.
    UnknownId,
    /// Its id names a backend that keeps no flows now: placed afresh, as UDP.
    IdDown,
    /// Not QUIC version 1 or 2 as far as the header shows: as UDP.
    Unparsed,
}

impl Route {
    pub const COUNT: usize = 5;
}

/// Read a UDP payload to a VIP whose server ids are `id_len` bytes.
#[inline]
pub fn parse(payload: &[u8], id_len: u8) -> Header {
    let Some(&first) = payload.first() else {
        return Header::Unparsed;
    };
    if first & 0x80 == 0 {
        // Short header: the DCID starts right after the first byte.
        return Header::Other {
            id: server_id(payload.get(1..), id_len),
        };
    }
    // Long header: version (4), DCID length (1), DCID.
    let (Some(v), Some(&dcid_len)) = (payload.get(1..5), payload.get(5)) else {
        return Header::Unparsed;
    };
    let version = u32::from_be_bytes(v.try_into().expect("4 bytes"));
    let dcid_len = usize::from(dcid_len);
    if dcid_len > MAX_CID_LEN {
        return Header::Unparsed;
    }
    let Some(dcid) = payload.get(6..6 + dcid_len) else {
        return Header::Unparsed;
    };
    let kind = (first >> 4) & 0b11;
    // The long packet types that open a connection: Initial and 0-RTT
    // (RFC 9000 17.2: 0 and 1; RFC 9369 3.2: 1 and 2).
    let opens = match version {
        VERSION_1 => kind <= 1,
        VERSION_2 => kind == 1 || kind == 2,
        _ => return Header::Unparsed,
    };
    let id = server_id(Some(dcid), id_len);
    if opens {
        Header::First {
            id,
            dcid_hash: dcid_hash(dcid),
        }
    } else {
        Header::Other { id }
    }
}

/// The server id in a connection ID of the QUIC-LB layout, if it has one.
#[inline]
fn server_id(cid: Option<&[u8]>, id_len: u8) -> Option<u128> {
    let cid = cid?;
    let first = *cid.first()?;
    if first >> 6 == UNROUTABLE {
        return None;
    }
    cid.get(1..1 + usize::from(id_len)).map(be_value)
}

#[inline]
fn be_value(bytes: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[16 - bytes.len()..].copy_from_slice(bytes);
    u128::from_be_bytes(b)
}

/// The hash an opening packet is placed on: of its DCID (at most 20
/// bytes) and its length. Fixed forever, as [`crate::forward::flow_hash`]
/// is (every instance must agree); three independent multiplies and one
/// finaliser, like it.
#[inline]
pub fn dcid_hash(dcid: &[u8]) -> u64 {
    let mut b = [0u8; 24];
    let n = dcid.len().min(MAX_CID_LEN);
    b[..n].copy_from_slice(&dcid[..n]);
    let w = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let x = (w(0) ^ 0x7175_6963_6463_6964).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let y = (w(8) ^ 0x243f_6a88_85a3_08d3).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    let z = (w(16) ^ n as u64).wrapping_mul(0x1656_67b1_9e37_79f9);
    crate::maglev::mix64(x ^ y.rotate_left(23) ^ z.rotate_left(41))
}

/// A QUIC VIP's server ids and the slots of their backends, sorted by id
/// for a binary search (a few thousand at most).
#[derive(Debug, Clone, Default)]
pub struct IdTable {
    ids: Box<[(u128, u16)]>,
}

impl IdTable {
    /// From (id, slot) pairs with unique ids.
    pub fn new(mut pairs: Vec<(u128, u16)>) -> IdTable {
        pairs.sort_unstable();
        IdTable {
            ids: pairs.into_boxed_slice(),
        }
    }

    #[inline]
    pub fn slot(&self, id: u128) -> Option<u16> {
        self.ids
            .binary_search_by(|(k, _)| k.cmp(&id))
            .ok()
            .map(|i| self.ids[i].1)
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A long header: first byte, version, DCID, SCID, then a body.
    fn long(first: u8, version: u32, dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![first];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(u8::try_from(dcid.len()).unwrap());
        p.extend_from_slice(dcid);
        p.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8]);
        p.extend_from_slice(&[0u8; 40]);
        p
    }

    const CID: [u8; 8] = [0x00, 0xab, 0xcd, 9, 9, 9, 9, 9];

    #[test]
    fn server_ids_parse_print_and_refuse_bad_input() {
        let id = ServerId::from_hex("abcd").unwrap();
        assert_eq!(
            (id.len(), id.value(), id.to_string()),
            (2, 0xabcd, "abcd".into())
        );
        assert_eq!(ServerId::from_hex("0x01").unwrap().bytes(), vec![1]);
        assert_eq!(ServerId::from_hex(""), Err(ServerIdError::Length(0)));
        assert_eq!(ServerId::new(&[0; 16]), Err(ServerIdError::Length(16)));
        assert!(matches!(
            ServerId::from_hex("abc"),
            Err(ServerIdError::Hex(_))
        ));
        assert!(matches!(
            ServerId::from_hex("zz"),
            Err(ServerIdError::Hex(_))
        ));
        let long = ServerId::new(&[0xff; 15]).unwrap();
        assert_eq!(long.to_string(), "ff".repeat(15));
    }

    #[test]
    fn initials_of_both_versions_open_and_other_long_types_do_not() {
        // v1: Initial 0, 0-RTT 1, Handshake 2, Retry 3 (bits 4-5).
        for (kind, opens) in [(0u8, true), (1, true), (2, false), (3, false)] {
            let h = parse(&long(0xc0 | kind << 4, VERSION_1, &CID), 2);
            assert_eq!(matches!(h, Header::First { .. }), opens, "v1 type {kind}");
        }
        // v2: Retry 0, Initial 1, 0-RTT 2, Handshake 3.
        for (kind, opens) in [(0u8, false), (1, true), (2, true), (3, false)] {
            let h = parse(&long(0xc0 | kind << 4, VERSION_2, &CID), 2);
            assert_eq!(matches!(h, Header::First { .. }), opens, "v2 type {kind}");
        }
        assert_eq!(
            parse(&long(0xc0, VERSION_1, &CID), 2),
            Header::First {
                id: Some(0xabcd),
                dcid_hash: dcid_hash(&CID)
            }
        );
        assert_eq!(
            parse(&long(0xf0, VERSION_2, &CID), 2),
            Header::Other { id: Some(0xabcd) }
        );
    }

    #[test]
    fn short_headers_carry_the_id_after_the_first_byte() {
        let mut p = vec![0x40];
        p.extend_from_slice(&CID);
        p.extend_from_slice(&[0u8; 30]);
        assert_eq!(parse(&p, 2), Header::Other { id: Some(0xabcd) });
        assert_eq!(parse(&p, 1), Header::Other { id: Some(0xab) });
        assert_eq!(parse(&p, 3), Header::Other { id: Some(0xabcd09) });
        // Too short for the id: no id, still QUIC.
        assert_eq!(parse(&p[..3], 2), Header::Other { id: None });
        assert_eq!(parse(&[0x40], 2), Header::Other { id: None });
        // Unroutable rotation bits.
        p[1] = 0xc0;
        assert_eq!(parse(&p, 2), Header::Other { id: None });
    }

    #[test]
    fn what_is_not_quic_v1_or_v2() {
        assert_eq!(parse(&[], 2), Header::Unparsed);
        // Version negotiation (0), an unknown version, a greased one.
        for v in [0, 0xff00_001d, 0x1a2a_3a4a] {
            assert_eq!(parse(&long(0xc0, v, &CID), 2), Header::Unparsed, "{v:#x}");
        }
        // DCID length above 20, a DCID longer than the datagram, a header
        // cut before its DCID length.
        let mut p = long(0xc0, VERSION_1, &[1; 20]);
        p[5] = 21;
        assert_eq!(parse(&p, 2), Header::Unparsed);
        let p = long(0xc0, VERSION_1, &CID);
        assert_eq!(parse(&p[..10], 2), Header::Unparsed);
        assert_eq!(parse(&p[..5], 2), Header::Unparsed);
        // A long header whose DCID is too short for the id: QUIC, no id.
        assert_eq!(
            parse(&long(0xc0, VERSION_1, &[0, 1]), 2),
            Header::First {
                id: None,
                dcid_hash: dcid_hash(&[0, 1])
            }
        );
        assert!(matches!(
            parse(&long(0xc0, VERSION_1, &[]), 2),
            Header::First { id: None, .. }
        ));
    }

    #[test]
    fn the_dcid_hash_is_fixed_and_sees_every_byte_and_the_length() {
        // Pinned: every instance, every release, must place alike.
        assert_eq!(dcid_hash(&CID), dcid_hash(&CID.clone()));
        assert_ne!(dcid_hash(&[0; 8]), dcid_hash(&[0; 9]));
        let base = [7u8; 20];
        let h = dcid_hash(&base);
        for i in 0..20 {
            let mut c = base;
            c[i] ^= 1;
            assert_ne!(dcid_hash(&c), h, "byte {i}");
        }
    }

    #[test]
    fn the_id_table_finds_each_id_and_nothing_else() {
        let t = IdTable::new(vec![(5, 50), (1, 10), (0xffff, 7)]);
        assert_eq!(t.slot(1), Some(10));
        assert_eq!(t.slot(5), Some(50));
        assert_eq!(t.slot(0xffff), Some(7));
        assert_eq!(t.slot(2), None);
        assert_eq!(t.len(), 3);
    }

    proptest! {
        /// Any bytes: no panic, and a header that names an id names the
        /// one its bytes spell.
        #[test]
        fn any_datagram_parses_without_panic(p in proptest::collection::vec(any::<u8>(), 0..64), len in 1u8..=15) {
            match parse(&p, len) {
                Header::Other { id: Some(id) } if p[0] & 0x80 == 0 => {
                    prop_assert_eq!(id, be_value(&p[2..2 + usize::from(len)]));
                }
                _ => {}
            }
        }

        /// The id a server encodes is the id the balancer reads, for every
        /// id length and connection ID length that holds it.
        #[test]
        fn an_encoded_id_is_read_back(id in any::<u128>(), len in 1u8..=15, extra in 0usize..5, rot in 0u8..3) {
            let id = id & (u128::MAX >> (128 - 8 * u32::from(len)));
            let sid = ServerId::new(&id.to_be_bytes()[16 - usize::from(len)..]).unwrap();
            let mut cid = vec![rot << 6];
            cid.extend(sid.bytes());
            cid.extend(std::iter::repeat_n(0x5a, extra));
            let mut short = vec![0x41];
            short.extend(&cid);
            prop_assert_eq!(parse(&short, len), Header::Other { id: Some(id) });
            if cid.len() <= MAX_CID_LEN {
                prop_assert_eq!(
                    parse(&long(0xd0, VERSION_1, &cid), len),
                    Header::First { id: Some(id), dcid_hash: dcid_hash(&cid) }
                );
            }
        }
    }
}
