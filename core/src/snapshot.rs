//! The immutable forwarding state workers read: VIPs with their Maglev
//! tables, backends with MAC and state, and the port's own addresses.
//!
//! The control side builds a new [`Snapshot`] for every change and
//! [`Publisher::publish`]es it behind one atomic pointer; each worker's
//! [`Reader`] picks it up once per burst with a single atomic load (and an
//! `Arc` clone only when it changed). A publish never waits for a worker.
//! Replaced snapshots are kept on the control side until no worker holds
//! them, so a worker never runs a snapshot's destructor (which would free
//! megabytes of tables on the packet path). A VIP whose Maglev input did
//! not change shares its table with the previous snapshot
//! ([`Snapshot::build_from`]): a change to one VIP, a health verdict or a
//! resolved MAC rebuilds only the tables it affects.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Cache};

use crate::maglev::{Maglev, MaglevError};
use crate::packet::ethernet::MacAddr;
use crate::quic::{IdTable, QuicMode, ServerId, MAX_SERVER_ID_LEN};
use crate::tunnel::{Encap, Tunnel, Wrap, DEFAULT_MTU, MAX_VNI};
use crate::vip_index::VipIndex;

/// SnapshotBackend slots a snapshot may hand out: workers keep per-backend counters
/// for this many ([`crate::stats::WorkerStats::backends`]).
pub const MAX_BACKEND_SLOTS: usize = 4096;

/// Transport protocols a VIP can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn from_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// What identifies a VIP: address, port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VipKey {
    pub addr: IpAddr,
    pub port: u16,
    pub proto: Proto,
}

impl std::fmt::Display for VipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{a}:{}/{}", self.port, self.proto),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{}", self.port, self.proto),
        }
    }
}

/// A backend's health and administrative state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// Takes new flows and keeps its flows.
    Up,
    /// Keeps its flows, takes no new ones.
    Draining,
    /// Its flows move to other backends.
    Down,
}

/// A backend's identity in snapshots: its slot in [`Snapshot::backend`] and
/// an incarnation, so a flow pinned to a removed backend never follows a
/// newcomer that reuses the slot. What a flow entry stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BackendRef {
    pub slot: u16,
    pub incarnation: u16,
}

#[derive(Debug, Clone)]
pub struct SnapshotBackend {
    pub addr: IpAddr,
    /// Unknown until resolved (or set statically). Resolution does not change
    /// the Maglev table (every instance, and lbd after a restart, must build
    /// the same one): a packet for a backend without a MAC is dropped and
    /// counted, and a new flow is not pinned until it resolves.
    pub mac: Option<MacAddr>,
    pub state: BackendState,
    pub weight: u32,
    pub incarnation: u16,
    /// Index of its VIP in [`Snapshot::vips`].
    pub vip: u32,
    /// Reached through a tunnel ([`crate::tunnel`]) rather than by its MAC
    /// alone, with these outer headers, built once ([`Tunnel::wrap`]);
    /// `mac` is then the next hop's (a gateway, or the backend).
    pub wrap: Option<Wrap>,
    /// The largest client IP packet its tunnel fits within the port's MTU
    /// (`u16::MAX` for DR: nothing is added).
    pub max_inner: u16,
    /// Up, or draining on a VIP whose draining backends keep their flows
    /// ([`DrainFlows`]): decided once per snapshot, read per packet.
    keeps: bool,
}

impl SnapshotBackend {
    /// May a flow already pinned here stay? (up, or draining where the
    /// VIP's [`DrainFlows`] is `Keep`)
    #[inline]
    pub fn keeps_flows(&self) -> bool {
        self.keeps
    }

    /// Is it in the Maglev table? (up with a weight; its MAC plays no part)
    pub fn takes_new_flows(&self) -> bool {
        self.state == BackendState::Up && self.weight > 0
    }
}

#[derive(Debug, Clone)]
pub struct SnapshotVip {
    pub key: VipKey,
    /// The Maglev table over `usable`; `None` when no backend takes new flows.
    pub table: Option<Arc<Maglev>>,
    /// What `table` was built from: the usable backends' keys and weights.
    inputs: Vec<([u8; 16], u32)>,
    /// Slots of the backends in the table, indexed by what the table returns.
    pub usable: Vec<u16>,
    /// Slots of all this VIP's backends.
    pub backends: Vec<u16>,
    pub table_size: u32,
    pub idle: crate::flow::IdleTimeouts,
    /// In QUIC mode: the server-id length and the backends' ids.
    pub quic: Option<(QuicMode, IdTable)>,
    pub drain: DrainFlows,
}

/// What a draining backend's flows do on a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DrainFlows {
    /// They stay until they end (TCP's close, UDP's idle timeout): the
    /// default, so a drain never breaks a stream.
    #[default]
    Keep,
    /// They move at once, as a down backend's do: for UDP services whose
    /// clients never stop sending, so a drain would never end.
    Move,
}

impl SnapshotVip {
    /// The backend Maglev picks for a flow hash, if any backend takes new flows.
    #[inline]
    pub fn pick(&self, hash: u64) -> Option<u16> {
        let t = self.table.as_ref()?;
        self.usable.get(t.lookup(hash) as usize).copied()
    }
}

/// What the control side asks for; [`Snapshot::build`] validates it.
#[derive(Debug, Clone, Default)]
pub struct SnapshotSpec {
    pub generation: u64,
    /// The data port's MAC (source of every frame we send).
    pub mac: MacAddr,
    /// The port's own addresses: traffic to them goes to the kernel, ARP/ND for them is answered.
    pub local: Vec<IpAddr>,
    pub vips: Vec<VipSpec>,
}

#[derive(Debug, Clone)]
pub struct VipSpec {
    pub key: VipKey,
    /// The VIP's own idle timeouts for its flows (0: the workers' defaults).
    pub idle: crate::flow::IdleTimeouts,
    /// Prime Maglev table size (65537 is the default).
    pub table_size: u32,
    pub backends: Vec<BackendSpec>,
    /// QUIC mode (UDP VIPs only): route by the server id in the
    /// destination connection ID ([`crate::quic`]).
    pub quic: Option<QuicMode>,
    pub drain: DrainFlows,
}

#[derive(Debug, Clone)]
pub struct BackendSpec {
    pub id: BackendRef,
    pub addr: IpAddr,
    pub weight: u32,
    pub mac: Option<MacAddr>,
    pub state: BackendState,
    /// Through a tunnel, `mac` being the next hop's; `None`: DR.
    pub tunnel: Option<Tunnel>,
    /// Its QUIC server id, used when its VIP is in QUIC mode (ignored
    /// otherwise, so QUIC mode can be turned off and on again).
    pub server_id: Option<ServerId>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("vip {0}: defined twice")]
    DuplicateVip(VipKey),
    #[error("vip {vip}: backend {addr} listed twice")]
    DuplicateBackend { vip: VipKey, addr: IpAddr },
    #[error("vip {vip}: backend slot {slot} is beyond the {max} slots the dataplane counts")]
    SlotTooHigh { vip: VipKey, slot: u16, max: usize },
    #[error("vip {vip}: backend slot {slot} is already used by another backend")]
    SlotInUse { vip: VipKey, slot: u16 },
    #[error("vip {vip}: port 0 is not a valid port")]
    PortZero { vip: VipKey },
    #[error("vip {vip}: backend {addr} is the VIP itself")]
    BackendIsVip { vip: VipKey, addr: IpAddr },
    #[error("vip {vip}: {source}")]
    Maglev { vip: VipKey, source: MaglevError },
    #[error(
        "vip {vip}: backend {addr}: tunnel source {from} is not of the backend's address family"
    )]
    TunnelSourceFamily {
        vip: VipKey,
        addr: IpAddr,
        from: IpAddr,
    },
    #[error("vip {vip}: backend {addr}: ipip cannot carry an IPv6 VIP's packets to an IPv4 backend (use gue or vxlan)")]
    IpipFamily { vip: VipKey, addr: IpAddr },
    #[error("vip {vip}: backend {addr}: VNI {vni} is above {max}", max = crate::tunnel::MAX_VNI)]
    BadVni { vip: VipKey, addr: IpAddr, vni: u32 },
    #[error("vip {vip}: backend {addr}: tunnel port 0 is not a valid port")]
    TunnelPortZero { vip: VipKey, addr: IpAddr },
    #[error("vip {vip}: QUIC mode is for UDP VIPs")]
    QuicNotUdp { vip: VipKey },
    #[error("vip {vip}: a server id length is 1 to {MAX_SERVER_ID_LEN} bytes, not {len}")]
    ServerIdLenRange { vip: VipKey, len: u8 },
    #[error("vip {vip}: backend {addr}: server id {id} is {} bytes, the VIP's ids are {want}", id.len())]
    ServerIdLength {
        vip: VipKey,
        addr: IpAddr,
        id: ServerId,
        want: u8,
    },
    #[error("vip {vip}: backend {addr}: server id {id} is also backend {other}'s")]
    ServerIdTwice {
        vip: VipKey,
        addr: IpAddr,
        id: ServerId,
        other: IpAddr,
    },
}

/// The forwarding state of one generation. Immutable once built.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub mac: MacAddr,
    /// The TSC when [`Publisher`] made it current (0 before): workers
    /// measure from it how long the snapshot took to reach them.
    published_tsc: u64,
    /// The readers there were at publication that have not taken it yet
    /// ([`Snapshot::take`]); the last one knows every worker has it.
    pending: AtomicU32,
    vips: Vec<SnapshotVip>,
    backends: Vec<Option<SnapshotBackend>>,
    /// Per-packet lookups: VIP by (address, port, protocol), VIP addresses.
    index: VipIndex,
    /// Per (address, protocol): the VIP whose table fragments use (lowest port).
    frag_vip: HashMap<(IpAddr, Proto), u32, FixedHash>,
    local: HashSet<IpAddr, FixedHash>,
    source_v4: Option<Ipv4Addr>,
    source_v6: Option<Ipv6Addr>,
    /// Whether echo requests to a VIP are answered ([`Snapshot::with_vip_ping`]).
    vip_ping: bool,
    /// The port's IP MTU ([`Snapshot::with_mtu`]).
    mtu: u16,
    /// Is any VIP in QUIC mode? If not, a UDP packet costs what it did
    /// before QUIC mode existed: this one test.
    quic_vips: bool,
    /// Is any backend tunnelled? Workers then prefetch the room before
    /// each packet, where the outer headers go.
    tunnels: bool,
}

impl Snapshot {
    /// An empty snapshot: no VIPs, everything goes to the kernel.
    pub fn empty(mac: MacAddr) -> Snapshot {
        Snapshot::build(&SnapshotSpec {
            mac,
            ..SnapshotSpec::default()
        })
        .expect("an empty spec is valid")
    }

    pub fn build(spec: &SnapshotSpec) -> Result<Snapshot, SnapshotError> {
        Snapshot::build_from(spec, None)
    }

    /// Would [`Snapshot::build`] accept `spec`? Everything is checked, but
    /// no Maglev table is filled: cheap enough for every API request.
    pub fn check(spec: &SnapshotSpec) -> Result<(), SnapshotError> {
        Snapshot::assemble(spec, None, false).map(drop)
    }

    /// Build `spec`, taking from `previous` every Maglev table whose input
    /// (table size, usable backends' keys and weights, in order) is the same.
    pub fn build_from(
        spec: &SnapshotSpec,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, SnapshotError> {
        Snapshot::assemble(spec, previous, true)
    }

    fn assemble(
        spec: &SnapshotSpec,
        previous: Option<&Snapshot>,
        fill_tables: bool,
    ) -> Result<Snapshot, SnapshotError> {
        let mut vips = Vec::with_capacity(spec.vips.len());
        let mut backends: Vec<Option<SnapshotBackend>> = Vec::new();
        let mut by_key = HashSet::with_hasher(FixedHash);
        let mut frag_vip: HashMap<(IpAddr, Proto), u32, FixedHash> =
            HashMap::with_hasher(FixedHash);
        for (vi, v) in spec.vips.iter().enumerate() {
            let vi = u32::try_from(vi).expect("fewer than 2^32 VIPs fit in memory");
            let key = v.key;
            if key.port == 0 {
                return Err(SnapshotError::PortZero { vip: key });
            }
            if !by_key.insert(key) {
                return Err(SnapshotError::DuplicateVip(key));
            }
            if let Some(q) = v.quic {
                if key.proto != Proto::Udp {
                    return Err(SnapshotError::QuicNotUdp { vip: key });
                }
                if q.server_id_len == 0 || q.server_id_len > MAX_SERVER_ID_LEN {
                    return Err(SnapshotError::ServerIdLenRange {
                        vip: key,
                        len: q.server_id_len,
                    });
                }
            }
            let mut ids: HashMap<u128, IpAddr> = HashMap::new();
            let mut id_slots = Vec::new();
            let mut seen = HashSet::new();
            let mut slots = Vec::with_capacity(v.backends.len());
            for b in &v.backends {
                if b.addr == key.addr {
                    return Err(SnapshotError::BackendIsVip {
                        vip: key,
                        addr: b.addr,
                    });
                }
                if !seen.insert(b.addr) {
                    return Err(SnapshotError::DuplicateBackend {
                        vip: key,
                        addr: b.addr,
                    });
                }
                let slot = usize::from(b.id.slot);
                if slot >= MAX_BACKEND_SLOTS {
                    return Err(SnapshotError::SlotTooHigh {
                        vip: key,
                        slot: b.id.slot,
                        max: MAX_BACKEND_SLOTS,
                    });
                }
                if backends.len() <= slot {
                    backends.resize(slot + 1, None);
                }
                if backends[slot].is_some() {
                    return Err(SnapshotError::SlotInUse {
                        vip: key,
                        slot: b.id.slot,
                    });
                }
                if let Some(t) = &b.tunnel {
                    check_tunnel(key, b.addr, t)?;
                }
                if let (Some(q), Some(id)) = (v.quic, b.server_id) {
                    if id.len() != q.server_id_len {
                        return Err(SnapshotError::ServerIdLength {
                            vip: key,
                            addr: b.addr,
                            id,
                            want: q.server_id_len,
                        });
                    }
                    if let Some(&other) = ids.get(&id.value()) {
                        return Err(SnapshotError::ServerIdTwice {
                            vip: key,
                            addr: b.addr,
                            id,
                            other,
                        });
                    }
                    ids.insert(id.value(), b.addr);
                    id_slots.push((id.value(), b.id.slot));
                }
                // Unresolved, the backend takes no packet: the zero MAC never leaves.
                let hop = b.mac.unwrap_or(MacAddr::ZERO);
                let wrap = b.tunnel.map(|t| t.wrap(b.addr, spec.mac, hop));
                backends[slot] = Some(SnapshotBackend {
                    addr: b.addr,
                    mac: b.mac,
                    state: b.state,
                    weight: b.weight,
                    incarnation: b.id.incarnation,
                    vip: vi,
                    max_inner: wrap.map_or(u16::MAX, |w| w.max_inner(DEFAULT_MTU)),
                    wrap,
                    keeps: match b.state {
                        BackendState::Up => true,
                        BackendState::Draining => v.drain == DrainFlows::Keep,
                        BackendState::Down => false,
                    },
                });
                slots.push(b.id.slot);
            }
            let usable: Vec<u16> = slots
                .iter()
                .copied()
                .filter(|&s| {
                    backends[usize::from(s)]
                        .as_ref()
                        .is_some_and(SnapshotBackend::takes_new_flows)
                })
                .collect();
            let inputs: Vec<([u8; 16], u32)> = usable
                .iter()
                .map(|&s| {
                    let b = backends[usize::from(s)].as_ref().expect("slot just filled");
                    (addr_key(b.addr), b.weight)
                })
                .collect();
            let same = previous
                .and_then(|p| p.vip(p.find_vip(&key)?))
                .filter(|p| p.table_size == v.table_size && p.inputs == inputs);
            let table = match same {
                Some(p) => p.table.clone(),
                None if inputs.is_empty() => None,
                None => {
                    let refs: Vec<(&[u8], u32)> =
                        inputs.iter().map(|(k, w)| (&k[..], *w)).collect();
                    let maglev = |source| SnapshotError::Maglev { vip: key, source };
                    if fill_tables {
                        Some(Arc::new(Maglev::new(v.table_size, &refs).map_err(maglev)?))
                    } else {
                        Maglev::check(v.table_size, &refs).map_err(maglev)?;
                        None
                    }
                }
            };
            frag_vip
                .entry((key.addr, key.proto))
                .and_modify(|cur| {
                    if spec.vips[*cur as usize].key.port > key.port {
                        *cur = vi;
                    }
                })
                .or_insert(vi);
            vips.push(SnapshotVip {
                key,
                table,
                inputs,
                usable,
                backends: slots,
                table_size: v.table_size,
                idle: v.idle,
                quic: v.quic.map(|q| (q, IdTable::new(id_slots))),
                drain: v.drain,
            });
        }
        let index = VipIndex::new(spec.vips.iter().enumerate().map(|(i, v)| {
            let i = u32::try_from(i).expect("fewer than 2^32 VIPs fit in memory");
            (v.key.addr, v.key.port, v.key.proto.number(), i)
        }));
        let mut local = HashSet::with_hasher(FixedHash);
        local.extend(spec.local.iter().copied());
        let source_v4 = spec
            .local
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            })
            .min();
        let source_v6 = spec
            .local
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                IpAddr::V4(_) => None,
            })
            .min();
        let quic_vips = vips.iter().any(|v| v.quic.is_some());
        let tunnels = backends.iter().flatten().any(|b| b.wrap.is_some());
        Ok(Snapshot {
            quic_vips,
            tunnels,
            generation: spec.generation,
            mac: spec.mac,
            published_tsc: 0,
            pending: AtomicU32::new(0),
            vips,
            backends,
            index,
            frag_vip,
            local,
            source_v4,
            source_v6,
            vip_ping: true,
            mtu: DEFAULT_MTU,
        })
    }

    /// Answer ICMP/ICMPv6 echo requests to VIP addresses (the default), or
    /// drop them as `icmp_not_for_flow` (lbd --no-vip-ping). A property of
    /// the snapshot rather than a [`SnapshotSpec`] field, so that every
    /// spec written as a struct literal (tests, benchmarks) keeps building.
    pub fn with_vip_ping(mut self, on: bool) -> Snapshot {
        self.vip_ping = on;
        self
    }

    /// The port's IP MTU (default 1500, lbd `--mtu`): what a tunnelled
    /// backend's packets must fit once encapsulated. A property of the
    /// snapshot for the reason [`Snapshot::with_vip_ping`] is.
    pub fn with_mtu(mut self, mtu: u16) -> Snapshot {
        self.mtu = mtu;
        for b in self.backends.iter_mut().flatten() {
            if let Some(w) = &b.wrap {
                b.max_inner = w.max_inner(mtu);
            }
        }
        self
    }

    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// Is any VIP in QUIC mode?
    #[inline]
    pub fn quic_vips(&self) -> bool {
        self.quic_vips
    }

    /// Is any backend reached through a tunnel?
    #[inline]
    pub fn tunnels(&self) -> bool {
        self.tunnels
    }

    /// Are echo requests to VIP addresses answered?
    #[inline]
    pub fn vip_ping(&self) -> bool {
        self.vip_ping
    }

    pub fn vips(&self) -> &[SnapshotVip] {
        &self.vips
    }

    #[inline]
    pub fn vip(&self, index: u32) -> Option<&SnapshotVip> {
        self.vips.get(index as usize)
    }

    /// The VIP serving `key`, as an index into [`Snapshot::vips`].
    #[inline]
    pub fn find_vip(&self, key: &VipKey) -> Option<u32> {
        self.index.service(key.addr, key.port, key.proto.number())
    }

    /// The VIP whose table routes fragments to `addr` with `proto`.
    #[inline]
    pub fn fragment_vip(&self, addr: IpAddr, proto: Proto) -> Option<u32> {
        self.frag_vip.get(&(addr, proto)).copied()
    }

    /// Is `addr` the address of any VIP (for ARP/ND, and to tell an unknown
    /// VIP port from traffic for the host)?
    #[inline]
    pub fn is_vip_addr(&self, addr: IpAddr) -> bool {
        self.index.is_vip_addr(addr)
    }

    /// Is `addr` one of the port's own addresses?
    #[inline]
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.local.contains(&addr)
    }

    /// The TSC at publication (0 if never published).
    pub fn published_tsc(&self) -> u64 {
        self.published_tsc
    }

    /// A worker's first burst on this snapshot: true for the last of the
    /// readers there were at its publication (every worker has it now).
    /// Once per snapshot and worker, never per packet; a worker that skips
    /// a snapshot leaves it incomplete.
    pub fn take(&self) -> bool {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            == Ok(1)
    }

    /// The source address of the dataplane's own ARP requests (the lowest
    /// local IPv4 address), if any.
    pub fn source_v4(&self) -> Option<Ipv4Addr> {
        self.source_v4
    }

    /// The source address of the dataplane's own neighbor solicitations.
    pub fn source_v6(&self) -> Option<Ipv6Addr> {
        self.source_v6
    }

    /// The backend in `slot`, if any.
    #[inline]
    pub fn backend(&self, slot: u16) -> Option<&SnapshotBackend> {
        self.backends.get(usize::from(slot))?.as_ref()
    }

    /// The backend a flow entry points at, if it is still the same backend
    /// (same slot and incarnation) and still belongs to `vip`.
    #[inline]
    pub fn resolve(&self, r: BackendRef, vip: u32) -> Option<&SnapshotBackend> {
        self.backend(r.slot)
            .filter(|b| b.incarnation == r.incarnation && b.vip == vip)
    }

    /// The backend in `slot` if it serves `vip`.
    #[inline]
    pub fn resolve_slot(&self, slot: u16, vip: u32) -> Option<&SnapshotBackend> {
        self.backend(slot).filter(|b| b.vip == vip)
    }

    /// Backends and their slots, in slot order.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "indexed by slot, a u16 below MAX_BACKEND_SLOTS"
    )]
    pub fn backends(&self) -> impl Iterator<Item = (u16, &SnapshotBackend)> {
        self.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.as_ref().map(|b| (i as u16, b)))
    }
}

/// Maglev's stable backend key: the address, IPv4 mapped into IPv6.
/// A backend's tunnel must be of its own family and well-formed.
fn check_tunnel(vip: VipKey, addr: IpAddr, t: &Tunnel) -> Result<(), SnapshotError> {
    if t.source.is_ipv6() != addr.is_ipv6() {
        return Err(SnapshotError::TunnelSourceFamily {
            vip,
            addr,
            from: t.source,
        });
    }
    match t.encap {
        Encap::Ipip if vip.addr.is_ipv6() && addr.is_ipv4() => {
            Err(SnapshotError::IpipFamily { vip, addr })
        }
        Encap::Gue { port: 0 } | Encap::Vxlan { port: 0, .. } => {
            Err(SnapshotError::TunnelPortZero { vip, addr })
        }
        Encap::Vxlan { vni, .. } if vni > MAX_VNI => Err(SnapshotError::BadVni { vip, addr, vni }),
        _ => Ok(()),
    }
}

fn addr_key(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// A fixed, fast hasher for the snapshot's small lookup maps (FxHash's
/// multiply-rotate). Not DoS-resistant, and need not be: its keys are the
/// operator's VIPs and addresses, never packet contents chosen by a client.
#[derive(Debug, Clone, Copy, Default)]
pub struct FixedHash;

impl std::hash::BuildHasher for FixedHash {
    type Hasher = FxHasher;
    fn build_hasher(&self) -> FxHasher {
        FxHasher(0)
    }
}

#[derive(Debug, Clone, Copy)]
pub struct FxHasher(u64);

impl std::hash::Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The control side's end: publishes snapshots, and frees replaced ones once
/// no worker holds them.
pub struct Publisher {
    current: Arc<ArcSwap<Snapshot>>,
    retired: Vec<Arc<Snapshot>>,
    /// Readers handed out: the workers each snapshot waits for.
    readers: AtomicU32,
}

impl Publisher {
    pub fn new(initial: Snapshot) -> Publisher {
        Publisher {
            current: Arc::new(ArcSwap::from_pointee(initial)),
            retired: Vec::new(),
            readers: AtomicU32::new(0),
        }
    }

    /// A reader for one worker.
    pub fn reader(&self) -> Reader {
        self.readers.fetch_add(1, Ordering::Relaxed);
        Reader {
            cache: Cache::new(Arc::clone(&self.current)),
        }
    }

    /// Make `next` the snapshot every worker uses from its next burst on.
    /// `now_tsc` is the time stamp counter at publication: workers measure
    /// adoption against it with the same counter.
    pub fn publish(&mut self, mut next: Snapshot, now_tsc: u64) {
        next.published_tsc = now_tsc;
        next.pending = AtomicU32::new(self.readers.load(Ordering::Relaxed));
        let old = self.current.swap(Arc::new(next));
        self.retired.push(old);
        self.reap();
    }

    pub fn current(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Free replaced snapshots no worker holds any more; returns how many
    /// are still held. Call it periodically.
    pub fn reap(&mut self) -> usize {
        self.retired.retain(|s| Arc::strong_count(s) > 1);
        self.retired.len()
    }
}

/// A worker's end: one atomic load per [`Reader::load`].
pub struct Reader {
    cache: Cache<Arc<ArcSwap<Snapshot>>, Arc<Snapshot>>,
}

impl Reader {
    /// The current snapshot; call once per burst.
    #[inline]
    pub fn load(&mut self) -> &Snapshot {
        self.cache.load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn vip(port: u16) -> VipKey {
        VipKey {
            addr: v4(198, 51, 100, 10),
            port,
            proto: Proto::Tcp,
        }
    }

    fn backend(slot: u16, last: u8, state: BackendState, mac: bool) -> BackendSpec {
        BackendSpec {
            id: BackendRef {
                slot,
                incarnation: 1,
            },
            addr: v4(192, 0, 2, last),
            weight: 1,
            mac: mac.then_some(MacAddr([2, 0, 0, 0, 0, last])),
            state,
            tunnel: None,
            server_id: None,
        }
    }

    fn spec(backends: Vec<BackendSpec>) -> SnapshotSpec {
        SnapshotSpec {
            generation: 1,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            local: vec![v4(192, 0, 2, 1)],
            vips: vec![VipSpec {
                idle: Default::default(),
                key: vip(443),
                table_size: 251,
                quic: None,
                drain: Default::default(),
                backends,
            }],
        }
    }

    #[test]
    fn up_backends_take_new_flows_resolved_or_not() {
        let s = Snapshot::build(&spec(vec![
            backend(0, 11, BackendState::Up, true),
            backend(1, 12, BackendState::Draining, true),
            backend(2, 13, BackendState::Down, true),
            backend(3, 14, BackendState::Up, false),
        ]))
        .unwrap();
        let v = s.vip(s.find_vip(&vip(443)).unwrap()).unwrap();
        assert_eq!(v.usable, vec![0, 3]);
        assert_eq!(v.backends, vec![0, 1, 2, 3]);
        for h in 0..1000u64 {
            let picked = v.pick(h.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            assert!(matches!(picked, Some(0 | 3)), "{picked:?}");
        }
        assert!(s.backend(0).unwrap().keeps_flows());
        assert!(
            s.backend(1).unwrap().keeps_flows(),
            "draining keeps its flows"
        );
        assert!(!s.backend(2).unwrap().keeps_flows(), "down does not");
        assert!(
            s.backend(3).unwrap().keeps_flows(),
            "an unresolved backend keeps its place (packets wait for the MAC)"
        );
        // The table does not depend on which MACs are known yet.
        let resolved = Snapshot::build(&spec(vec![
            backend(0, 11, BackendState::Up, true),
            backend(1, 12, BackendState::Draining, true),
            backend(2, 13, BackendState::Down, true),
            backend(3, 14, BackendState::Up, true),
        ]))
        .unwrap();
        let w = resolved.vip(0).unwrap();
        for h in 0..10_000u64 {
            let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(v.pick(h), w.pick(h));
        }
    }

    #[test]
    fn tables_are_shared_only_while_their_input_is_the_same() {
        let base = vec![
            backend(0, 11, BackendState::Up, true),
            backend(1, 12, BackendState::Up, false),
        ];
        let first = Snapshot::build(&spec(base.clone())).unwrap();
        let table = |s: &Snapshot| s.vip(0).unwrap().table.clone().unwrap();

        // A resolved MAC or a draining backend's state is not Maglev input.
        let mut same = base.clone();
        same[1].mac = Some(MacAddr([2, 0, 0, 0, 0, 12]));
        same.push(backend(2, 13, BackendState::Draining, true));
        let next = Snapshot::build_from(&spec(same), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&table(&first), &table(&next)));

        // A weight, a backend going down, a table size: rebuilt, and equal
        // to a build from scratch.
        let mut heavier = base.clone();
        heavier[0].weight = 3;
        let mut down = base.clone();
        down[1].state = BackendState::Down;
        let mut bigger = spec(base.clone());
        bigger.vips[0].table_size = 65537;
        for changed in [spec(heavier), spec(down), bigger] {
            let next = Snapshot::build_from(&changed, Some(&first)).unwrap();
            assert!(!Arc::ptr_eq(&table(&first), &table(&next)));
            let scratch = Snapshot::build(&changed).unwrap();
            assert_eq!(table(&next).slots(), table(&scratch).slots());
        }
    }

    #[test]
    fn no_usable_backend_means_no_table() {
        let s = Snapshot::build(&spec(vec![backend(0, 11, BackendState::Down, true)])).unwrap();
        assert!(s.vip(0).unwrap().pick(42).is_none());
    }

    #[test]
    fn lookups() {
        let s = Snapshot::build(&spec(vec![backend(0, 11, BackendState::Up, true)])).unwrap();
        assert_eq!(s.find_vip(&vip(443)), Some(0));
        assert_eq!(s.find_vip(&vip(80)), None);
        assert!(s.is_vip_addr(v4(198, 51, 100, 10)));
        assert!(!s.is_vip_addr(v4(198, 51, 100, 11)));
        assert!(s.is_local(v4(192, 0, 2, 1)));
        assert_eq!(s.fragment_vip(v4(198, 51, 100, 10), Proto::Tcp), Some(0));
        assert_eq!(s.fragment_vip(v4(198, 51, 100, 10), Proto::Udp), None);
        let r = BackendRef {
            slot: 0,
            incarnation: 1,
        };
        assert!(s.resolve(r, 0).is_some());
        assert!(
            s.resolve(
                BackendRef {
                    slot: 0,
                    incarnation: 2
                },
                0
            )
            .is_none(),
            "another incarnation"
        );
        assert!(s.resolve(r, 1).is_none(), "another VIP");
    }

    #[test]
    fn fragments_use_the_lowest_port_vip() {
        let mut sp = spec(vec![backend(0, 11, BackendState::Up, true)]);
        sp.vips.push(VipSpec {
            idle: Default::default(),
            key: vip(80),
            table_size: 251,
            quic: None,
            drain: Default::default(),
            backends: vec![backend(1, 12, BackendState::Up, true)],
        });
        let s = Snapshot::build(&sp).unwrap();
        assert_eq!(
            s.fragment_vip(v4(198, 51, 100, 10), Proto::Tcp),
            s.find_vip(&vip(80))
        );
    }

    /// Build `sp`, and check that [`Snapshot::check`] says the same.
    fn checked(sp: &SnapshotSpec) -> Result<Snapshot, SnapshotError> {
        let built = Snapshot::build(sp);
        assert_eq!(Snapshot::check(sp).err().as_ref(), built.as_ref().err());
        built
    }

    #[test]
    fn invalid_specs_are_refused_with_the_reason() {
        let mut sp = spec(vec![backend(0, 11, BackendState::Up, true)]);
        sp.vips.push(sp.vips[0].clone());
        assert_eq!(
            checked(&sp).unwrap_err(),
            SnapshotError::DuplicateVip(vip(443))
        );

        let sp = spec(vec![
            backend(0, 11, BackendState::Up, true),
            backend(1, 11, BackendState::Up, true),
        ]);
        assert!(matches!(
            checked(&sp),
            Err(SnapshotError::DuplicateBackend { .. })
        ));

        let sp = spec(vec![
            backend(0, 11, BackendState::Up, true),
            backend(0, 12, BackendState::Up, true),
        ]);
        assert!(matches!(
            checked(&sp),
            Err(SnapshotError::SlotInUse { slot: 0, .. })
        ));

        let mut sp = spec(vec![backend(0, 11, BackendState::Up, true)]);
        sp.vips[0].key.port = 0;
        assert!(matches!(checked(&sp), Err(SnapshotError::PortZero { .. })));

        let mut sp = spec(vec![backend(0, 11, BackendState::Up, true)]);
        sp.vips[0].backends[0].addr = vip(443).addr;
        assert!(matches!(
            checked(&sp),
            Err(SnapshotError::BackendIsVip { .. })
        ));

        let mut sp = spec(vec![backend(0, 11, BackendState::Up, true)]);
        sp.vips[0].table_size = 250;
        let e = checked(&sp).unwrap_err();
        assert!(matches!(e, SnapshotError::Maglev { .. }), "{e}");
        assert!(e.to_string().contains("198.51.100.10:443/tcp"), "{e}");
    }

    #[test]
    fn vip_key_display() {
        let k = VipKey {
            addr: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
            port: 443,
            proto: Proto::Udp,
        };
        assert_eq!(k.to_string(), "[2001:db8::10]:443/udp");
        assert_eq!(vip(443).to_string(), "198.51.100.10:443/tcp");
    }

    #[test]
    fn readers_see_publishes_and_old_snapshots_are_freed_on_the_control_side() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut p = Publisher::new(Snapshot::empty(mac));
        let mut r1 = p.reader();
        let mut r2 = p.reader();
        assert_eq!(r1.load().generation, 0);
        assert_eq!(r2.load().generation, 0);
        let mut sp = spec(vec![backend(0, 11, BackendState::Up, true)]);
        sp.generation = 7;
        p.publish(Snapshot::build(&sp).unwrap(), 1);
        assert_eq!(r1.load().generation, 7, "picked up on the next load");
        // r2 still holds generation 0: it is retired, not freed.
        assert_eq!(p.reap(), 1);
        assert_eq!(r2.load().generation, 7);
        assert_eq!(p.reap(), 0, "freed once no reader holds it");
        assert_eq!(p.current().generation, 7);
    }

    #[test]
    fn the_last_reader_to_take_a_snapshot_knows_it() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut p = Publisher::new(Snapshot::empty(mac));
        let (_r1, _r2) = (p.reader(), p.reader());
        assert!(!p.current().take(), "never published: nobody waits for it");
        p.publish(Snapshot::empty(mac), 12_345);
        let s = p.current();
        assert_eq!(s.published_tsc(), 12_345, "the caller's clock");
        assert!(!s.take(), "one of two");
        assert!(s.take(), "both have it");
        assert!(!s.take(), "a reader created after its publication");
    }

    #[test]
    fn readers_on_other_threads_follow_publishes() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let mut p = Publisher::new(Snapshot::empty(mac));
        let readers: Vec<Reader> = (0..2).map(|_| p.reader()).collect();
        let handles: Vec<_> = readers
            .into_iter()
            .map(|mut r| {
                std::thread::spawn(move || {
                    let mut last = 0;
                    while last < 100 {
                        let g = r.load().generation;
                        assert!(g >= last, "generations never go back");
                        last = g;
                    }
                })
            })
            .collect();
        for g in 1..=100 {
            p.publish(
                Snapshot::build(&SnapshotSpec {
                    generation: g,
                    mac,
                    ..SnapshotSpec::default()
                })
                .unwrap(),
                g,
            );
        }
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(p.reap(), 0);
    }
}
