//! Workloads shared by the benchmarks: a snapshot with one VIP and N
//! backends, a flow table holding a given number of established flows, and
//! the frames of those flows. Built the way lbd builds them, through the
//! dataplane's public API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_core::flow::{FlowConfig, FlowTable};
use lb_core::forward::{self, Action, Classified};
use lb_core::packet::build;
use lb_core::packet::ethernet::MacAddr;
use lb_core::quic::{QuicMode, ServerId};
use lb_core::snapshot::{
    BackendRef, BackendSpec, BackendState, Proto, Snapshot, SnapshotSpec, VipKey, VipSpec,
};
use lb_core::tunnel::{Encap, Tunnel};

pub const PORT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
pub const CLIENT_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);
pub const VIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// What the worker handles at once.
pub const BURST: usize = 32;

/// Two VIPs on one address, port 443: TCP and UDP (QUIC), each with
/// `backends` equal-weight backends of its own, all up and resolved.
pub fn snapshot(backends: u16, table_size: u32) -> Snapshot {
    snapshot_via(backends, table_size, None, false)
}

/// [`snapshot`] with every backend reached through `encap` (from our
/// address), at IPv6 addresses when `v6` (the VIP stays IPv4): the same
/// Maglev tables as [`snapshot`] for IPv4 backends.
pub fn snapshot_via(backends: u16, table_size: u32, encap: Option<Encap>, v6: bool) -> Snapshot {
    build_snapshot(backends, table_size, encap, v6, false)
}

/// [`snapshot`] with the UDP VIP in QUIC mode: server ids of 2 bytes,
/// backend `i` of the UDP VIP has id `i` (see [`quic_datagram`]).
pub fn snapshot_quic(backends: u16, table_size: u32) -> Snapshot {
    build_snapshot(backends, table_size, None, false, true)
}

/// [`snapshot`] plus a third VIP, UDP port 4433 in QUIC mode with 100
/// backends of its own: the UDP VIP on 443 is not in QUIC mode, but the
/// snapshot has one.
pub fn snapshot_quic_beside(backends: u16, table_size: u32) -> Snapshot {
    let mut spec = build_spec(backends, table_size, None, false, false);
    let mut extra = spec.vips[1].clone();
    extra.key.port = 4433;
    extra.quic = Some(QuicMode { server_id_len: 2 });
    for (b, i) in extra.backends.iter_mut().zip(0u16..) {
        b.id.slot = 2 * backends + i;
        b.server_id = Some(ServerId::new(&i.to_be_bytes()).expect("2 bytes"));
    }
    spec.vips.push(extra);
    Snapshot::build(&spec).expect("a valid snapshot")
}

fn build_snapshot(
    backends: u16,
    table_size: u32,
    encap: Option<Encap>,
    v6: bool,
    quic: bool,
) -> Snapshot {
    Snapshot::build(&build_spec(backends, table_size, encap, v6, quic)).expect("a valid snapshot")
}

fn build_spec(
    backends: u16,
    table_size: u32,
    encap: Option<Encap>,
    v6: bool,
    quic: bool,
) -> SnapshotSpec {
    let addr = |i: u16| -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8_0020_u128 << 80 | (u128::from(i) + 1),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (u32::from(i) + 1)))
        }
    };
    let source: IpAddr = if v6 {
        "2001:db8::1".parse().expect("an address")
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    };
    let vip = |proto, first: u16| VipSpec {
        key: VipKey {
            addr: IpAddr::V4(VIP),
            port: 443,
            proto,
        },
        table_size,
        quic: (quic && proto == Proto::Udp).then_some(QuicMode { server_id_len: 2 }),
        drain: Default::default(),
        idle: Default::default(),
        backends: (first..first + backends)
            .map(|i| BackendSpec {
                id: BackendRef {
                    slot: i,
                    incarnation: 0,
                },
                addr: addr(i),
                mac: Some(MacAddr([0x02, 0xbe, 0, 0, (i >> 8) as u8, i as u8])),
                state: BackendState::Up,
                tunnel: encap.map(|encap| Tunnel { encap, source }),
                server_id: Some(ServerId::new(&(i - first).to_be_bytes()).expect("2 bytes")),
                weight: 1,
            })
            .collect(),
    };
    SnapshotSpec {
        generation: 1,
        mac: PORT_MAC,
        local: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))],
        vips: vec![vip(Proto::Tcp, 0), vip(Proto::Udp, backends)],
    }
}

/// The client side of flow `i`: a distinct source address and port.
pub fn client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x6400_0000 | (i >> 4)),
        1024 + (i & 0xf) as u16 * 3001,
    )
}

/// A 64-byte-class TCP segment of flow `i` (an ACK: established traffic).
pub fn frame(i: u32, flags: u8) -> Vec<u8> {
    let (src, sport) = client(i);
    build::tcp4(PORT_MAC, CLIENT_MAC, src, VIP, sport, 443, flags, b"")
}

/// A 64-byte-class UDP datagram of flow `i`, to the UDP VIP.
pub fn datagram(i: u32) -> Vec<u8> {
    let (src, sport) = client(i);
    build::udp4(PORT_MAC, CLIENT_MAC, src, VIP, sport, 443, b"")
}

/// A QUIC short-header datagram of flow `i` to the UDP VIP (the same
/// 5-tuple as [`datagram`]) whose 8-byte connection ID carries server id
/// `id` (a backend of [`snapshot_quic`] when below the backend count).
pub fn quic_datagram(i: u32, id: u16) -> Vec<u8> {
    let (src, sport) = client(i);
    let mut p = vec![0x40, 0x00];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&i.to_be_bytes());
    p.extend_from_slice(&[0x5a; 12]);
    build::udp4(PORT_MAC, CLIENT_MAC, src, VIP, sport, 443, &p)
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;

/// A flow table of `capacity` entries holding `flows` established flows of
/// `snap`, inserted through the decision itself (as traffic would) at time 0.
/// Its memory is a worker's (advised for huge pages), so the benchmarks see
/// the TLB behaviour `lbd` has.
pub fn established(snap: &Snapshot, capacity: usize, flows: u32, config: FlowConfig) -> FlowTable {
    let mut t = dataplane::dpdk::flow_table(capacity, config);
    for i in 0..flows {
        let mut f = frame(i, SYN);
        let a = forward::decide(&mut f, snap, &mut t, 0);
        assert!(matches!(a, Action::Forward { .. }), "{a:?}");
        let mut f = frame(i, ACK);
        forward::decide(&mut f, snap, &mut t, 0);
    }
    t
}

/// [`established`] for UDP: `flows` flows of [`datagram`] to the UDP VIP.
pub fn established_udp(
    snap: &Snapshot,
    capacity: usize,
    flows: u32,
    config: FlowConfig,
) -> FlowTable {
    let mut t = dataplane::dpdk::flow_table(capacity, config);
    for i in 0..flows {
        let mut f = datagram(i);
        let a = forward::decide(&mut f, snap, &mut t, 0);
        assert!(matches!(a, Action::Forward { .. }), "{a:?}");
    }
    t
}

/// The worker's decision path for one burst, on plain buffers: classify and
/// hash every frame and prefetch the flow entries its lookup reads
/// (`Classified::prefetch_entries`), then decide and rewrite each
/// (`dataplane::worker` does the same over mbufs).
#[inline]
pub fn burst(
    frames: &mut [Vec<u8>],
    snap: &Snapshot,
    flows: &mut FlowTable,
    now: u32,
    prefetch: impl Fn(&lb_core::flow::Entry),
) -> usize {
    let mut classified = [Classified::ToKernel; BURST];
    for (c, f) in classified.iter_mut().zip(frames.iter()) {
        *c = forward::classify(f, snap);
        c.prefetch_entries(flows, &prefetch);
    }
    let mut forwarded = 0;
    for (c, f) in classified.iter().zip(frames.iter_mut()) {
        if let Action::Forward { .. } = forward::apply(*c, f, snap, flows, now) {
            forwarded += 1;
        }
    }
    forwarded
}
