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
//! The first byte is not read: QUIC-LB gives it to config rotation and
//! length, but servers fill it as they like (msquic at random), so a
//! balancer that trusted it would lose a quarter of msquic's connections
//! to "unroutable". A short header does not say its DCID length; the
//! balancer needs only the first `1 + len` bytes, which every
//! server-issued ID of this layout has. A client's own random DCID may
//! spell a configured id by chance: that backend then takes the
//! connection, as Maglev might have.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// To the backend its server id names.
    ById,
    /// An Initial or 0-RTT packet without a known id: Maglev on its DCID.
    Initial,
    /// No known id (a connection ID too short for one, or an id no
    /// backend has): as UDP.
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
    cid?.get(1..1 + usize::from(id_len)).map(be_value)
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

/// A QUIC VIP's server ids and the slots of their backends: an
/// open-addressing table at most half full, so a lookup, hit or miss, is
/// one or two probes of one cache line (a binary search's unpredictable
/// branches cost more than the rest of the decision).
#[derive(Debug, Clone)]
pub struct IdTable {
    /// (id, slot + 1); slot 0 marks an empty entry.
    entries: Box<[(u128, u16)]>,
    mask: usize,
    len: usize,
}

impl Default for IdTable {
    fn default() -> IdTable {
        IdTable::new(Vec::new())
    }
}

impl IdTable {
    /// From (id, slot) pairs with unique ids.
    pub fn new(pairs: Vec<(u128, u16)>) -> IdTable {
        let size = (pairs.len() * 2).next_power_of_two().max(8);
        let mut t = IdTable {
            entries: vec![(0, 0); size].into_boxed_slice(),
            mask: size - 1,
            len: pairs.len(),
        };
        for (id, slot) in pairs {
            let mut i = t.home(id);
            while t.entries[i].1 != 0 {
                i = (i + 1) & t.mask;
            }
            t.entries[i] = (id, slot + 1);
        }
        t
    }

    #[inline]
    fn home(&self, id: u128) -> usize {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the id's two halves, folded"
        )]
        let h = (id as u64 ^ (id >> 64) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        #[allow(
            clippy::cast_possible_truncation,
            reason = "masked to the table's size"
        )]
        let i = (h >> 32) as usize & self.mask;
        i
    }

    #[inline]
    pub fn slot(&self, id: u128) -> Option<u16> {
        let mut i = self.home(id);
        loop {
            let (k, s) = self.entries[i];
            if s == 0 {
                return None;
            }
            if k == id {
                return Some(s - 1);
            }
            i = (i + 1) & self.mask;
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        // The first byte plays no part (msquic fills it at random).
        p[1] = 0xc0;
        assert_eq!(parse(&p, 2), Header::Other { id: Some(0xabcd) });
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
        // Full of colliding neighbours: every id found, no other.
        let many: Vec<(u128, u16)> = (0..4096u16).map(|i| (u128::from(i) << 64, i)).collect();
        let t = IdTable::new(many);
        assert!((0..4096u16).all(|i| t.slot(u128::from(i) << 64) == Some(i)));
        assert!((0..4096u16).all(|i| t.slot(u128::from(i)).is_none() || i == 0));
        assert!(IdTable::default().slot(0).is_none());
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
        fn an_encoded_id_is_read_back(id in any::<u128>(), len in 1u8..=15, extra in 0usize..5, first in any::<u8>()) {
            let id = id & (u128::MAX >> (128 - 8 * u32::from(len)));
            let sid = ServerId::new(&id.to_be_bytes()[16 - usize::from(len)..]).unwrap();
            let mut cid = vec![first];
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

/// The decisions for a VIP in QUIC mode, through [`crate::forward::decide`].
#[cfg(test)]
mod routing {
    use super::*;
    use crate::flow::{FlowConfig, FlowTable};
    use crate::forward::{decide, Action};
    use crate::packet::build;
    use crate::packet::ethernet::MacAddr;
    use crate::snapshot::{
        BackendRef, BackendSpec, BackendState, DrainFlows, Proto, Snapshot, SnapshotSpec, VipKey,
        VipSpec,
    };
    use std::net::{IpAddr, Ipv4Addr};

    const PORT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc1]);
    const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

    /// Backend `slot` (0..3) has server id 0x0a00 + slot; the VIP's ids
    /// are 2 bytes. `quic: false` is the same VIP as plain UDP.
    fn snap(states: [BackendState; 3], quic: bool, drain: DrainFlows) -> Snapshot {
        let backends = (0..3u16)
            .map(|slot| BackendSpec {
                id: BackendRef {
                    slot,
                    incarnation: 1,
                },
                addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11 + u8::try_from(slot).unwrap())),
                weight: 1,
                mac: Some(MacAddr([2, 0, 0, 0, 0xbe, u8::try_from(slot).unwrap()])),
                state: states[usize::from(slot)],
                tunnel: None,
                server_id: Some(ServerId::new(&(0x0a00 + slot).to_be_bytes()).unwrap()),
            })
            .collect();
        Snapshot::build(&SnapshotSpec {
            mac: PORT_MAC,
            vips: vec![VipSpec {
                key: VipKey {
                    addr: IpAddr::V4(VIP),
                    port: 4433,
                    proto: Proto::Udp,
                },
                idle: Default::default(),
                table_size: 251,
                quic: quic.then_some(QuicMode { server_id_len: 2 }),
                drain,
                backends,
            }],
            ..SnapshotSpec::default()
        })
        .unwrap()
    }

    fn up() -> Snapshot {
        snap([BackendState::Up; 3], true, DrainFlows::Keep)
    }

    /// A short-header datagram for a connection ID naming `id`, from
    /// client port `sport`.
    fn short(id: u16, sport: u16) -> Vec<u8> {
        let mut p = vec![0x43, 0x00];
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&[0x77; 5]);
        p.extend_from_slice(&[0u8; 40]);
        build::udp4(
            PORT_MAC,
            CLIENT_MAC,
            Ipv4Addr::new(203, 0, 113, 7),
            VIP,
            sport,
            4433,
            &p,
        )
    }

    /// A version-1 Initial with this DCID, from `client`:`sport`.
    fn initial(dcid: &[u8], client: Ipv4Addr, sport: u16) -> Vec<u8> {
        let mut p = vec![0xc3, 0, 0, 0, 1, u8::try_from(dcid.len()).unwrap()];
        p.extend_from_slice(dcid);
        p.extend_from_slice(&[8, 1, 2, 3, 4, 5, 6, 7, 8]);
        p.resize(1200, 0);
        build::udp4(PORT_MAC, CLIENT_MAC, client, VIP, sport, 4433, &p)
    }

    fn table() -> FlowTable {
        FlowTable::new(1024, FlowConfig::default())
    }

    /// (slot, route) of a forwarded datagram.
    fn placed(frame: &[u8], s: &Snapshot, t: &mut FlowTable) -> (u16, Option<Route>) {
        let mut f = frame.to_vec();
        match decide(&mut f, s, t, 0) {
            Action::Forward { slot, quic, .. } => {
                assert_eq!(&f[..6], &[2, 0, 0, 0, 0xbe, u8::try_from(slot).unwrap()]);
                assert_eq!(&f[12..], &frame[12..], "DR: the IP packet untouched");
                (slot, quic)
            }
            other => panic!("not forwarded: {other:?}"),
        }
    }

    #[test]
    fn a_server_id_names_the_backend_from_any_port_or_address() {
        let (s, mut t) = (up(), table());
        for slot in 0..3u16 {
            for sport in [1000, 2000, 3000, 40000, 65535] {
                assert_eq!(
                    placed(&short(0x0a00 + slot, sport), &s, &mut t),
                    (slot, Some(Route::ById))
                );
            }
        }
        assert_eq!(t.stats().active, 0, "routed by id: no flow entry");
        // A long header whose DCID names a backend goes there too.
        let dcid = [0x00, 0x0a, 0x02, 1, 2, 3, 4, 5];
        for client in [Ipv4Addr::new(203, 0, 113, 7), Ipv4Addr::new(198, 18, 0, 1)] {
            assert_eq!(
                placed(&initial(&dcid, client, 999), &s, &mut t),
                (2, Some(Route::ById))
            );
        }
    }

    #[test]
    fn initials_without_a_known_id_follow_their_dcid_not_their_port() {
        let (s, mut t) = (up(), table());
        let mut seen = [0u32; 3];
        for n in 0u32..300 {
            // Id 0x0000, which no backend has.
            let mut dcid = [0xc0, 0, 0, 0, 0, 0, 0, 0];
            dcid[4..].copy_from_slice(&n.to_be_bytes());
            let first = placed(
                &initial(&dcid, Ipv4Addr::new(203, 0, 113, 7), 5000),
                &s,
                &mut t,
            );
            assert_eq!(first.1, Some(Route::Initial));
            // Retransmitted from another port and address: the same backend.
            let again = placed(
                &initial(&dcid, Ipv4Addr::new(198, 18, 0, 9), 6001),
                &s,
                &mut t,
            );
            assert_eq!(again, first);
            seen[usize::from(first.0)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "spread by Maglev: {seen:?}");
        assert_eq!(t.stats().active, 0);
    }

    #[test]
    fn without_a_known_id_a_datagram_is_a_udp_flow() {
        let (s, mut t) = (up(), table());
        // An id no backend has, an id too short to read, not QUIC.
        let unknown = short(0x0bbb, 7000);
        let (slot, route) = placed(&unknown, &s, &mut t);
        assert_eq!(route, Some(Route::UnknownId));
        assert_eq!(t.stats().active, 1, "pinned as UDP");
        assert_eq!(placed(&unknown, &s, &mut t), (slot, Some(Route::UnknownId)));
        let cut = build::udp4(
            PORT_MAC,
            CLIENT_MAC,
            Ipv4Addr::new(203, 0, 113, 7),
            VIP,
            7001,
            4433,
            &[0x40, 0, 0x0a],
        );
        assert_eq!(placed(&cut, &s, &mut t).1, Some(Route::UnknownId));
        let mut vn = initial(
            &[1, 2, 3, 4, 5, 6, 7, 8],
            Ipv4Addr::new(203, 0, 113, 7),
            7002,
        );
        vn[43..47].copy_from_slice(&[0, 0, 0, 0]); // version 0: negotiation
        assert_eq!(placed(&vn, &s, &mut t).1, Some(Route::Unparsed));
        let empty = build::udp4(
            PORT_MAC,
            CLIENT_MAC,
            Ipv4Addr::new(203, 0, 113, 7),
            VIP,
            7003,
            4433,
            b"",
        );
        assert_eq!(placed(&empty, &s, &mut t).1, Some(Route::Unparsed));
        assert_eq!(t.stats().active, 4);
    }

    #[test]
    fn an_id_naming_a_down_backend_is_placed_afresh_and_a_draining_one_keeps_it() {
        let mut t = table();
        let down = snap(
            [BackendState::Up, BackendState::Down, BackendState::Up],
            true,
            DrainFlows::Keep,
        );
        let (slot, route) = placed(&short(0x0a01, 8000), &down, &mut t);
        assert_ne!(slot, 1);
        assert_eq!(route, Some(Route::IdDown));
        let draining = snap(
            [BackendState::Up, BackendState::Draining, BackendState::Up],
            true,
            DrainFlows::Keep,
        );
        assert_eq!(
            placed(&short(0x0a01, 8001), &draining, &mut t),
            (1, Some(Route::ById))
        );
        // A draining backend's connections move when the VIP says so.
        let moving = snap(
            [BackendState::Up, BackendState::Draining, BackendState::Up],
            true,
            DrainFlows::Move,
        );
        let (slot, route) = placed(&short(0x0a01, 8002), &moving, &mut t);
        assert_ne!(slot, 1);
        assert_eq!(route, Some(Route::IdDown));
    }

    #[test]
    fn without_quic_mode_the_same_datagrams_are_plain_udp() {
        let (s, mut t) = (
            snap([BackendState::Up; 3], false, DrainFlows::Keep),
            table(),
        );
        let mut slots = std::collections::HashSet::new();
        for sport in 1000..1030 {
            let (slot, route) = placed(&short(0x0a01, sport), &s, &mut t);
            assert_eq!(route, None);
            slots.insert(slot);
        }
        assert_eq!(slots.len(), 3, "the 5-tuple places them, not the id");
    }

    /// UDP flows (QUIC or not): a down backend's move at once, a draining
    /// one's stay, unless the VIP moves them.
    #[test]
    fn udp_flows_leave_a_down_backend_and_stay_on_a_draining_one() {
        for quic in [false, true] {
            let datagram = |sport| {
                // Not QUIC by its header on a QUIC VIP: a UDP flow either way.
                build::udp4(
                    PORT_MAC,
                    CLIENT_MAC,
                    Ipv4Addr::new(203, 0, 113, 7),
                    VIP,
                    sport,
                    4433,
                    &[0xc0, 0xff, 0, 0, 0],
                )
            };
            let s = snap([BackendState::Up; 3], quic, DrainFlows::Keep);
            for (drain, policy) in [
                (BackendState::Draining, DrainFlows::Keep),
                (BackendState::Draining, DrainFlows::Move),
                (BackendState::Down, DrainFlows::Keep),
            ] {
                let mut t2 = table();
                let flows: Vec<(u16, u16)> = (9000..9060)
                    .map(|p| (p, placed(&datagram(p), &s, &mut t2).0))
                    .collect();
                assert!(flows.iter().any(|&(_, b)| b == 0));
                let mut states = [BackendState::Up; 3];
                states[0] = drain;
                let s2 = snap(states, quic, policy);
                let stays = drain == BackendState::Draining && policy == DrainFlows::Keep;
                for &(p, was) in &flows {
                    let now = placed(&datagram(p), &s2, &mut t2).0;
                    if was == 0 && !stays {
                        assert_ne!(now, 0, "quic {quic} {drain:?} {policy:?}: port {p} moves");
                    } else {
                        assert_eq!(now, was, "quic {quic} {drain:?} {policy:?}: port {p} stays");
                    }
                }
            }
        }
    }

    #[test]
    fn route_counters_are_indexed_in_their_declared_order() {
        let order = [
            Route::ById,
            Route::Initial,
            Route::UnknownId,
            Route::IdDown,
            Route::Unparsed,
        ];
        assert_eq!(order.len(), Route::COUNT);
        for (i, r) in order.into_iter().enumerate() {
            assert_eq!(r as usize, i);
        }
    }
}
