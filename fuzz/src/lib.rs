//! What the fuzz targets share: the snapshot every fuzzed frame meets (a
//! VIP of each kind, from `fixture.toml`), the framing of a fuzz input as
//! several frames, and checks of what the decision wrote that do not use
//! the product's own parsers.
//!
//! Each target is a module here with `run(input)`; `fuzz_targets/` holds
//! the libFuzzer entry points, which only call it, so the regression test
//! (`tests/regressions.rs`) replays saved inputs without libFuzzer.
//! `scripts/fuzz.sh` builds the entry points with libFuzzer's coverage
//! instrumentation on the stable toolchain and runs them (make test does,
//! briefly). `fuzz-seeds` writes their seed corpora.

use std::sync::OnceLock;

pub mod forward;
pub mod grpc_api;
pub mod health_replies;
pub mod packets;
pub mod state_file;

use control::config::Config;
use control::state::DesiredState;
use lb_core::packet::MacAddr;
use lb_core::snapshot::Snapshot;

/// The state the frames meet.
pub const FIXTURE: &str = include_str!("../fixture.toml");

/// The port's MAC in the fixture's snapshot.
pub const PORT_MAC: MacAddr = MacAddr([0x02, 0x70, 0x63, 0x61, 0x70, 0x00]);

/// Room before each frame, as a mbuf has, for the tunnels' outer headers.
pub const HEADROOM: usize = 128;

/// The fixture as a desired state.
///
/// # Panics
/// If `fixture.toml` does not load: the targets cannot run without it.
pub fn fixture_state() -> DesiredState {
    let config: Config = toml::from_str(FIXTURE).expect("fixture.toml parses");
    DesiredState::from_config(&config).expect("fixture.toml is a valid state")
}

/// The fixture's snapshot, built once per process: the MACs are those the
/// state configures (backends, gateways); the others stay unresolved.
///
/// # Panics
/// If the fixture's snapshot does not build.
pub fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let spec = fixture_state().to_spec(1, PORT_MAC, |_| None);
        Snapshot::build(&spec)
            .expect("the fixture's snapshot builds")
            .with_vip_ping(true)
            .with_mtu(1500)
    })
}

/// One frame of a fuzz input, and how it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// From the host's exception interface rather than the port.
    pub from_kernel: bool,
    /// Seconds since the previous frame (0-7).
    pub advance: u32,
    pub frame: &'a [u8],
}

/// At most this many frames per input, so one input stays quick.
pub const MAX_RECORDS: usize = 16;

/// An input as chunks, each `[tag][length: u16 big-endian][bytes]`. Bytes
/// left that do not hold a whole header form one last chunk with tag 0, so
/// any input is a valid one.
pub fn chunks(mut data: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    while !data.is_empty() && out.len() < MAX_RECORDS {
        if data.len() < 3 {
            out.push((0, data));
            break;
        }
        let len = usize::from(u16::from_be_bytes([data[1], data[2]])).min(data.len() - 3);
        out.push((data[0], &data[3..3 + len]));
        data = &data[3 + len..];
    }
    out
}

/// [`chunks`] backwards.
pub fn join(chunks: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, bytes) in chunks {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        out.push(*tag);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes[..usize::from(len)]);
    }
    out
}

/// An input as frames ([`chunks`]): the tag's bit 0 for the host, bits 1-3
/// the seconds that pass before the frame.
pub fn records(data: &[u8]) -> Vec<Record<'_>> {
    chunks(data)
        .into_iter()
        .map(|(tag, frame)| Record {
            from_kernel: tag & 1 == 1,
            advance: u32::from(tag >> 1 & 7),
            frame,
        })
        .collect()
}

/// [`records`] backwards: the input for these frames.
pub fn encode(records: &[Record<'_>]) -> Vec<u8> {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "advance is 0-7, checked by the mask"
    )]
    let tag = |r: &Record<'_>| u8::from(r.from_kernel) | ((r.advance & 7) as u8) << 1;
    let tagged: Vec<(u8, &[u8])> = records.iter().map(|r| (tag(r), r.frame)).collect();
    join(&tagged)
}

/// The unary methods of `lb.v1.LoadBalancer`, in the order the
/// `grpc_api` target's chunk tags pick them (tag modulo the count).
pub const METHODS: [&str; 14] = [
    "CreateVip",
    "DeleteVip",
    "GetVip",
    "ListVips",
    "UpdateVip",
    "AddBackend",
    "RemoveBackend",
    "UpdateBackend",
    "Apply",
    "SetBackends",
    "Export",
    "ListHealth",
    "GetStats",
    "GetInfo",
];

/// The Internet checksum of `data` after `initial` (a partial sum), by the
/// textbook fold: written here, not taken from lb-core, so it checks the
/// product's incremental arithmetic independently.
pub fn internet_sum(data: &[u8], initial: u32) -> u16 {
    let mut s = u64::from(initial);
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        s += u64::from(word);
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    #[allow(clippy::cast_possible_truncation, reason = "folded to 16 bits above")]
    let folded = s as u16;
    folded
}

/// The outer headers the dataplane wrote in front of a client's packet
/// hold together: the IPv4 header's checksum verifies and its length
/// counts everything after it, an IPv6 payload length does, and a UDP
/// header (GUE, VXLAN) has the right length and, over IPv6 where it is
/// mandatory, a checksum that verifies. `outer` starts at the outer IP
/// header and runs to the end of the frame; the client's IP packet starts
/// `inner_at` bytes after the UDP header.
pub fn outer_headers_ok(outer: &[u8], inner_at: usize) -> Result<(), String> {
    let version = outer.first().ok_or("no outer header")? >> 4;
    let (ip_len, proto) = match version {
        4 => {
            let h = outer.get(..20).ok_or("short outer IPv4 header")?;
            if internet_sum(h, 0) != 0xffff {
                return Err("outer IPv4 checksum".into());
            }
            if usize::from(u16::from_be_bytes([h[2], h[3]])) != outer.len() {
                return Err("outer IPv4 total length".into());
            }
            (20, h[9])
        }
        6 => {
            let h = outer.get(..40).ok_or("short outer IPv6 header")?;
            if usize::from(u16::from_be_bytes([h[4], h[5]])) + 40 != outer.len() {
                return Err("outer IPv6 payload length".into());
            }
            (40, h[6])
        }
        v => return Err(format!("outer IP version {v}")),
    };
    if proto == 17 {
        let udp = &outer[ip_len..];
        if udp.len() < 8 || usize::from(u16::from_be_bytes([udp[4], udp[5]])) != udp.len() {
            return Err("outer UDP length".into());
        }
        if version == 6 {
            let mut pseudo = Vec::with_capacity(40);
            pseudo.extend_from_slice(&outer[8..40]);
            pseudo.extend_from_slice(&u32::try_from(udp.len()).unwrap_or(0).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            let s = internet_sum(&pseudo, 0);
            // The product derives the inner packet's share from the inner
            // checksums (tunnel.rs, inner_sum): an inner packet whose own
            // checksums fail may carry an outer one that fails too.
            let inner = &udp[8 + inner_at..];
            if udp[6..8] == [0, 0]
                || (internet_sum(udp, u32::from(s)) != 0xffff
                    && inner_checksums_ok(inner) != Some(false))
            {
                return Err("outer UDP checksum over IPv6".into());
            }
        }
    }
    Ok(())
}

/// Whether the checksums of an IP packet that carry its transport segment
/// verify: the IPv4 header's and that of TCP, UDP (unless zero), ICMP or
/// ICMPv6 right after the fixed header, not in a fragment. `None` for a
/// packet whose transport has no such checksum.
pub fn inner_checksums_ok(ip: &[u8]) -> Option<bool> {
    let v6 = ip.first()? >> 4 == 6;
    let (seg, proto, mut pseudo) = if v6 {
        let h = ip.get(..40)?;
        let seg = &ip[40..];
        let mut pseudo = h[8..40].to_vec();
        pseudo.extend_from_slice(&u32::try_from(seg.len()).ok()?.to_be_bytes());
        (seg, h[6], pseudo)
    } else {
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let h = ip.get(..ihl).filter(|h| h.len() >= 20)?;
        if h[6] & 0x3f != 0 || h[7] != 0 {
            return None;
        }
        if internet_sum(h, 0) != 0xffff {
            return Some(false);
        }
        let seg = &ip[ihl..];
        let mut pseudo = h[12..20].to_vec();
        pseudo.extend_from_slice(&u16::try_from(seg.len()).ok()?.to_be_bytes());
        (seg, h[9], pseudo)
    };
    match proto {
        6 | 58 => {}
        17 if seg.get(6..8).is_some_and(|c| c != [0, 0]) => {}
        1 if !v6 => return Some(internet_sum(seg, 0) == 0xffff),
        _ => return None,
    }
    if v6 {
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        pseudo.extend_from_slice(&[0, proto]);
    }
    let s = internet_sum(&pseudo, 0);
    Some(internet_sum(seg, u32::from(s)) == 0xffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_any_input_is_one() {
        let frames = [
            Record {
                from_kernel: true,
                advance: 5,
                frame: &[1, 2, 3][..],
            },
            Record {
                from_kernel: false,
                advance: 0,
                frame: &[][..],
            },
        ];
        assert_eq!(records(&encode(&frames)), frames);
        assert_eq!(records(&[9, 9]).len(), 1);
        assert_eq!(records(&[0, 0xff, 0xff, 7])[0].frame, &[7]);
    }

    #[test]
    fn the_fixture_has_every_kind_of_vip() {
        let s = snapshot();
        let backends: Vec<_> = (0..64).filter_map(|i| s.backend(i)).collect();
        assert!(backends.iter().any(|b| b.wrap.is_some()));
        assert!(backends.iter().any(|b| b.mac.is_none()));
        assert!((0..32).filter_map(|i| s.vip(i)).any(|v| v.quic.is_some()));
    }
}
