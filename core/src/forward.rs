//! The forwarding decision, a pure function: `(frame, snapshot, flow table,
//! now) -> Action`, with the frame rewritten in place when it is to be sent.
//! No DPDK type, no allocation, no lock, no syscall, no clock: unit-tested,
//! property-tested and fuzzed without hardware.
//!
//! It runs in two phases so a worker can batch a burst: [`classify`] parses
//! each packet and hashes its flow (touching only the packet and the
//! snapshot), the worker prefetches every flow's table bucket, then
//! [`apply`] looks the flows up and rewrites. [`decide`] does both for one
//! packet.
//!
//! Fragments: every fragment of a datagram (the first included) goes to the
//! backend Maglev picks for the hash of (source, destination, protocol)
//! alone, using the table of the VIP with the lowest port on that address and
//! protocol, since later fragments carry no ports. No flow entry is kept for
//! them. When an address has VIPs on several ports with different backend
//! pools, fragmented datagrams go to the lowest port's pool.

use std::net::IpAddr;

use crate::drop_reason::DropReason;
use crate::flow::{Entry, FlowKey, FlowState, FlowTable, Insert};
use crate::frame::Frame;
use crate::maglev::mix64;
use crate::packet::arp::{ArpPacket, OP_REPLY, OP_REQUEST};
use crate::packet::ethernet::{
    EthernetFrame, MacAddr, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6,
};
use crate::packet::icmp::{self, IcmpPacket};
use crate::packet::icmpv6::{self, Icmpv6Packet, NEIGHBOR_ADVERT, NEIGHBOR_SOLICIT, PROTO_ICMPV6};
use crate::packet::ipv4::Ipv4Packet;
use crate::packet::ipv6::Ipv6Packet;
use crate::packet::l4::{self, TcpHeader, UdpHeader, PROTO_TCP, PROTO_UDP};
use crate::quic;
use crate::snapshot::{BackendRef, Proto, Snapshot, SnapshotBackend, VipKey, MAX_BACKEND_SLOTS};
use crate::tunnel;

const PROTO_ICMP: u8 = 1;

/// What to do with a packet. For `Forward`, `IcmpToBackend`, `ArpReply`,
/// `NdAdvert` and `EchoReply` the frame has already been rewritten and is to
/// be transmitted on the port it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// To a backend: Ethernet destination = its MAC, source = ours.
    Forward {
        vip: u32,
        /// The backend's slot in the snapshot ([`Snapshot::backend`]).
        slot: u16,
        new_flow: bool,
        /// On a VIP in QUIC mode, how the packet was placed.
        quic: Option<quic::Route>,
    },
    /// The packet would exceed the port's MTU once encapsulated for its
    /// backend's tunnel and may not be fragmented: the frame is now the
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" (`len` bytes)
    /// back to the client ([`tunnel::too_big`]). The worker sends it within
    /// its rate of such replies and drops it as `too_big_rate_limited`
    /// above it.
    TooBig {
        len: usize,
    },
    /// An ICMP error about a VIP flow, to that flow's backend.
    IcmpToBackend {
        vip: u32,
        slot: u16,
    },
    /// An ARP request for a VIP or our address, turned into the reply.
    ArpReply,
    /// A neighbor solicitation turned into the advertisement; the frame is now `len` bytes.
    NdAdvert {
        len: usize,
    },
    /// An ICMP or ICMPv6 echo request to a VIP turned into the echo reply
    /// (same length). The worker sends it within its reply rate
    /// ([`EchoLimiter`]) and drops it as `echo_rate_limited` above it.
    EchoReply,
    /// Another host claims a VIP address: an ARP message whose sender
    /// address is the VIP, or a neighbor advertisement whose target is,
    /// from a MAC that is not ours. The frame is unchanged; the worker
    /// reports (`vip_addr`, `mac`) to the control side.
    VipConflict {
        vip_addr: IpAddr,
        mac: MacAddr,
    },
    /// For the host: the exception path.
    ToKernel,
    /// An ARP reply or neighbor advertisement to us: `ip` is at `mac`
    /// (backend resolution). The frame then goes on to the host.
    Learned {
        ip: IpAddr,
        mac: MacAddr,
    },
    Drop(DropReason),
}

/// A packet after [`classify`]: parsed, hashed, VIP found. Small and `Copy`,
/// so a burst of them lives on the stack.
#[derive(Debug, Clone, Copy)]
pub enum Classified {
    /// TCP or UDP to a VIP. `tcp_flags` is `None` for UDP; `l4_at` is the
    /// offset of the TCP or UDP header in the frame.
    Flow {
        vip: u32,
        key: FlowKey,
        hash: u64,
        tcp_flags: Option<u8>,
        l4_at: u16,
    },
    /// A fragment to a VIP: Maglev on the 3-tuple hash, no flow entry.
    Fragment {
        vip: u32,
        hash: u64,
    },
    /// An ICMP error quoting a reply of a VIP flow; `key` is that flow's
    /// (client-to-VIP) tuple.
    IcmpError {
        vip: u32,
        key: FlowKey,
        hash: u64,
    },
    Arp,
    NeighborSolicit,
    /// An echo request to a VIP, to be answered.
    Echo,
    /// See [`Action::VipConflict`].
    Conflict {
        vip_addr: IpAddr,
        mac: MacAddr,
    },
    Learn {
        ip: IpAddr,
        mac: MacAddr,
    },
    ToKernel,
    Drop(DropReason),
}

impl Classified {
    /// A TCP SYN without ACK: the first packet of a new flow (almost
    /// always), which the flow table will place.
    #[inline]
    pub fn opens_flow(&self) -> bool {
        matches!(self, Classified::Flow { tcp_flags: Some(f), .. } if bare_syn(*f))
    }

    /// Hand `prefetch` the flow-table entries `apply` will read for this
    /// packet: its two candidate entries, or for a SYN (which will be
    /// placed, and placing may read and write every way) its whole bucket.
    /// The worker and the benchmarks both prefetch through this.
    #[inline]
    pub fn prefetch_entries(&self, flows: &FlowTable, prefetch: impl Fn(&Entry)) {
        let Some(h) = self.flow_hash() else { return };
        if self.opens_flow() {
            flows.bucket_entries(h).iter().for_each(prefetch);
        } else {
            flows.candidates(h).into_iter().for_each(prefetch);
        }
    }

    /// The hash a tunnel's outer headers take their entropy from
    /// ([`egress`]): the flow's for a flow or an ICMP error about one (so
    /// the error reaches the backend's queue the flow reaches), the
    /// 3-tuple's for a fragment (every fragment of a datagram on one
    /// queue); 0 for what is not forwarded.
    #[inline]
    pub fn hash(&self) -> u64 {
        match self {
            Classified::Fragment { hash, .. } => *hash,
            _ => self.flow_hash().unwrap_or(0),
        }
    }

    /// The flow-table hash to prefetch for, if `apply` will look one up.
    #[inline]
    pub fn flow_hash(&self) -> Option<u64> {
        match self {
            Classified::Flow { hash, .. } | Classified::IcmpError { hash, .. } => Some(*hash),
            _ => None,
        }
    }
}

/// The flow hash: fixed forever (every instance must agree, and Maglev
/// tables are indexed by it). Each 64-bit word of the 5-tuple is multiplied
/// by its own odd constant, independently (the multiplies overlap in the
/// pipeline), the products are combined, and one murmur3 finaliser mixes
/// the result: a dependency chain of about 18 cycles instead of the 60 of
/// five chained finalisers. Keyless like any hash all instances share, so
/// an attacker can collide flows on purpose; the flow table's flood policy
/// is the defence, not the hash.
#[inline]
pub fn flow_hash(k: &FlowKey) -> u64 {
    let w = |b: &[u8; 16], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
    let ports = u64::from(k.src_port) << 32 | u64::from(k.dst_port) << 16 | u64::from(k.proto);
    let a = (w(&k.src, 0) ^ 0x6c62_666c_6f77_3031).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let b = (w(&k.src, 8) ^ 0x243f_6a88_85a3_08d3).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    let c = (w(&k.dst, 0) ^ 0x1319_8a2e_0370_7344).wrapping_mul(0x1656_67b1_9e37_79f9);
    let d = (w(&k.dst, 8) ^ 0xa409_3822_299f_31d0).wrapping_mul(0xd6e8_feb8_6659_fd93);
    let e = (ports ^ 0x082e_fa98_ec4e_6c89).wrapping_mul(0xff51_afd7_ed55_8ccd);
    mix64(a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(43) ^ e.rotate_left(53))
}

/// Parse and hash one frame. Always inlined: called from more than the
/// burst loop (the host's path, tests), it was otherwise left a call,
/// returning its [`Classified`] through memory (see `classify_inner`).
#[inline(always)]
pub fn classify(frame: &[u8], snap: &Snapshot) -> Classified {
    classify_segmented(frame, frame.len(), snap)
}

/// [`classify`] for a packet whose bytes do not all sit in `first` (a
/// multi-segment mbuf, e.g. a jumbo frame): every header the decision reads
/// must be in `first`; length fields are checked against `wire_len`.
#[inline(always)]
pub fn classify_segmented(first: &[u8], wire_len: usize, snap: &Snapshot) -> Classified {
    let missing = wire_len.saturating_sub(first.len());
    classify_inner(first, missing, snap)
}

/// `?` for the classifier, which returns a [`Classified`] itself (a drop
/// for an error) rather than a `Result` to be converted and copied.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Classified::Drop(e.into()),
        }
    };
}

/// Inlined into the burst loop, with what it calls on the IPv4 and IPv6
/// flow paths, so each [`Classified`] is built in its slot of the burst's
/// array. Returned from a call, it was copied out of the callee's frame
/// with wide loads of bytes just written by narrower stores: a
/// store-forwarding stall on every packet (`perf annotate`), and about a
/// fifth of the decision's time.
#[inline(always)]
fn classify_inner(frame: &[u8], missing: usize, snap: &Snapshot) -> Classified {
    let eth = tri!(EthernetFrame::new_checked(frame));
    let dst_mac = eth.dst();
    if dst_mac != snap.mac && !dst_mac.is_multicast() {
        return Classified::Drop(DropReason::NotForUs);
    }
    match eth.ethertype() {
        ETHERTYPE_IPV4 => classify_ipv4(eth.payload(), missing, snap),
        ETHERTYPE_IPV6 => classify_ipv6(eth.payload(), &eth, missing, snap),
        ETHERTYPE_ARP => {
            let arp = tri!(ArpPacket::new_checked(eth.payload()));
            // Any ARP message from another MAC with a VIP as its sender
            // address claims the VIP: every host that hears it may update
            // its cache (RFC 826), the router's included. That covers a reply
            // for the VIP (a backend without arp_ignore), a gratuitous
            // announcement (sender = target = VIP, request or reply) and a
            // request sent from the VIP (a backend without arp_announce).
            let sender = IpAddr::V4(arp.sender_ip());
            if arp.sender_mac() != snap.mac && snap.is_vip_addr(sender) {
                return Classified::Conflict {
                    vip_addr: sender,
                    mac: arp.sender_mac(),
                };
            }
            if arp.op() == OP_REPLY && dst_mac == snap.mac {
                return Classified::Learn {
                    ip: IpAddr::V4(arp.sender_ip()),
                    mac: arp.sender_mac(),
                };
            }
            let target = IpAddr::V4(arp.target_ip());
            if arp.op() == OP_REQUEST && (snap.is_vip_addr(target) || snap.is_local(target)) {
                Classified::Arp
            } else {
                Classified::ToKernel
            }
        }
        _ => Classified::ToKernel,
    }
}

#[inline(always)]
fn classify_ipv4(b: &[u8], missing: usize, snap: &Snapshot) -> Classified {
    let ip = if missing == 0 {
        tri!(Ipv4Packet::new_checked(b))
    } else {
        let ip = tri!(Ipv4Packet::new_quoted(b));
        let total = usize::from(ip.total_len());
        if total < ip.header_len() {
            return Classified::Drop(DropReason::BadLength);
        }
        if total > b.len() + missing {
            return Classified::Drop(DropReason::Truncated);
        }
        ip
    };
    let dst = IpAddr::V4(ip.dst());
    if !snap.is_vip_addr(dst) {
        return Classified::ToKernel;
    }
    let (src, dst4) = (ip.src().octets(), ip.dst().octets());
    let proto = ip.protocol();
    if ip.is_fragment() {
        return fragment(snap, dst, proto, FlowKey::v4(src, dst4, 0, 0, proto));
    }
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let (sport, dport, flags) = tri!(transport(proto, ip.payload(), missing));
            flow(
                snap,
                dst,
                proto,
                FlowKey::v4(src, dst4, sport, dport, proto),
                flags,
                14 + ip.header_len(),
            )
        }
        PROTO_ICMP => {
            let icmp = tri!(IcmpPacket::new_checked(ip.payload()));
            if !icmp.is_error() {
                // A whole echo request (not one spread over segments: its
                // checksum covers all of it) is answered, when ping is on.
                if icmp.msg_type() == icmp::ECHO_REQUEST && missing == 0 && snap.vip_ping() {
                    return Classified::Echo;
                }
                return Classified::Drop(DropReason::IcmpNotForFlow);
            }
            let q = tri!(icmp.quoted());
            let (sport, dport) = tri!(l4::ports(q.payload()));
            // The quoted packet is the backend's reply (VIP -> client): the
            // flow is its reverse.
            let key = FlowKey::v4(
                q.dst().octets(),
                q.src().octets(),
                dport,
                sport,
                q.protocol(),
            );
            icmp_error(snap, IpAddr::V4(q.src()), q.protocol(), key)
        }
        _ => Classified::Drop(DropReason::UnknownVipPort),
    }
}

#[inline(always)]
fn classify_ipv6(
    b: &[u8],
    eth: &EthernetFrame<&[u8]>,
    missing: usize,
    snap: &Snapshot,
) -> Classified {
    let ip = if missing == 0 {
        tri!(Ipv6Packet::new_checked(b))
    } else {
        let ip = tri!(Ipv6Packet::new_quoted(b));
        if 40 + usize::from(ip.payload_len()) > b.len() + missing {
            return Classified::Drop(DropReason::Truncated);
        }
        ip
    };
    let proto = ip.upper_protocol();
    if proto == PROTO_ICMPV6 {
        let icmp = tri!(Icmpv6Packet::new_checked(ip.upper_payload()));
        if icmp.msg_type() == NEIGHBOR_SOLICIT {
            let target = IpAddr::from(icmp.nd_target());
            if snap.is_vip_addr(target) || snap.is_local(target) {
                return Classified::NeighborSolicit;
            }
            return Classified::ToKernel;
        }
        if icmp.msg_type() == NEIGHBOR_ADVERT {
            let target = IpAddr::from(icmp.nd_target());
            let lladdr = icmp.nd_lladdr();
            // An advertisement (solicited or not) for a VIP from another
            // MAC claims the VIP. Without the target link-layer option the
            // claim is the frame's source.
            let claimed = lladdr.unwrap_or_else(|| eth.src());
            if claimed != snap.mac && snap.is_vip_addr(target) {
                return Classified::Conflict {
                    vip_addr: target,
                    mac: claimed,
                };
            }
            if let Some(mac) = lladdr {
                return Classified::Learn { ip: target, mac };
            }
            return Classified::ToKernel;
        }
    }
    let dst = IpAddr::V6(ip.dst());
    if !snap.is_vip_addr(dst) {
        return Classified::ToKernel;
    }
    let (src, dst6) = (ip.src_bytes(), ip.dst_bytes());
    if ip.fragment().is_some() {
        let key = FlowKey {
            src,
            dst: dst6,
            src_port: 0,
            dst_port: 0,
            proto,
        };
        return fragment(snap, dst, proto, key);
    }
    match proto {
        PROTO_TCP | PROTO_UDP => {
            let (sport, dport, flags) = tri!(transport(proto, ip.upper_payload(), missing));
            let key = FlowKey {
                src,
                dst: dst6,
                src_port: sport,
                dst_port: dport,
                proto,
            };
            flow(snap, dst, proto, key, flags, 14 + ip.upper_offset())
        }
        PROTO_ICMPV6 => {
            let icmp = tri!(Icmpv6Packet::new_checked(ip.upper_payload()));
            if !icmp.is_error() {
                // Answered when whole, with no extension header (a routing
                // header would make the swapped addresses wrong), ping on.
                if icmp.msg_type() == icmpv6::ECHO_REQUEST
                    && missing == 0
                    && ip.upper_offset() == 40
                    && snap.vip_ping()
                {
                    return Classified::Echo;
                }
                return Classified::Drop(DropReason::IcmpNotForFlow);
            }
            let q = tri!(icmp.quoted());
            let (sport, dport) = tri!(l4::ports(q.upper_payload()));
            let key = FlowKey {
                src: q.dst_bytes(),
                dst: q.src_bytes(),
                src_port: dport,
                dst_port: sport,
                proto: q.upper_protocol(),
            };
            icmp_error(snap, IpAddr::V6(q.src()), q.upper_protocol(), key)
        }
        _ => Classified::Drop(DropReason::UnknownVipPort),
    }
}

#[inline(always)]
fn transport(proto: u8, b: &[u8], missing: usize) -> Result<(u16, u16, Option<u8>), DropReason> {
    if proto == PROTO_TCP {
        let t = TcpHeader::new_checked(b)?;
        Ok((t.src_port(), t.dst_port(), Some(t.flags())))
    } else if missing == 0 {
        let u = UdpHeader::new_checked(b)?;
        Ok((u.src_port(), u.dst_port(), None))
    } else {
        // The datagram continues in later segments: check its length field
        // against the whole packet.
        let (sport, dport) = l4::ports(b)?;
        let len = usize::from(u16::from_be_bytes([
            *b.get(4).ok_or(DropReason::Truncated)?,
            *b.get(5).ok_or(DropReason::Truncated)?,
        ]));
        if len < 8 {
            return Err(DropReason::BadLength);
        }
        if len > b.len() + missing {
            return Err(DropReason::Truncated);
        }
        Ok((sport, dport, None))
    }
}

#[inline(always)]
fn flow(
    snap: &Snapshot,
    addr: IpAddr,
    proto: u8,
    key: FlowKey,
    tcp_flags: Option<u8>,
    l4_at: usize,
) -> Classified {
    let Some(proto) = Proto::from_number(proto) else {
        return Classified::Drop(DropReason::UnknownVipPort);
    };
    match snap.find_vip(&VipKey {
        addr,
        port: key.dst_port,
        proto,
    }) {
        Some(vip) => Classified::Flow {
            vip,
            hash: flow_hash(&key),
            key,
            tcp_flags,
            // Headers that long are no frame this port takes.
            l4_at: u16::try_from(l4_at).unwrap_or(u16::MAX),
        },
        None => Classified::Drop(DropReason::UnknownVipPort),
    }
}

fn fragment(snap: &Snapshot, addr: IpAddr, proto: u8, key: FlowKey) -> Classified {
    match Proto::from_number(proto).and_then(|p| snap.fragment_vip(addr, p)) {
        Some(vip) => Classified::Fragment {
            vip,
            hash: flow_hash(&key),
        },
        None => Classified::Drop(DropReason::UnknownVipPort),
    }
}

fn icmp_error(snap: &Snapshot, vip_addr: IpAddr, proto: u8, key: FlowKey) -> Classified {
    let vip = Proto::from_number(proto).and_then(|p| {
        snap.find_vip(&VipKey {
            addr: vip_addr,
            port: key.dst_port,
            proto: p,
        })
    });
    match vip {
        Some(vip) => Classified::IcmpError {
            vip,
            hash: flow_hash(&key),
            key,
        },
        None => Classified::Drop(DropReason::IcmpNotForFlow),
    }
}

/// Finish the decision for a classified frame: flow table, Maglev, rewrite.
#[inline]
pub fn apply(
    c: Classified,
    frame: &mut [u8],
    snap: &Snapshot,
    flows: &mut FlowTable,
    now: u32,
) -> Action {
    match c {
        Classified::Flow {
            vip,
            key,
            hash,
            tcp_flags,
            l4_at,
        } => {
            if tcp_flags.is_none() && snap.quic_vips() {
                if let Some((mode, ids)) = snap.vip(vip).and_then(|v| v.quic.as_ref()) {
                    let payload = udp_payload(frame, l4_at);
                    let header = quic::parse(payload, mode.server_id_len);
                    return quic_flow(header, ids, vip, &key, hash, frame, snap, flows, now);
                }
            }
            flow_action(vip, &key, hash, tcp_flags, frame, snap, flows, now)
        }
        Classified::Fragment { vip, hash } => match picked(snap, vip, hash) {
            Ok((backend, _, mac)) => {
                if let Some(a) = fits(frame, snap, backend) {
                    return a;
                }
                rewrite_to(frame, mac, snap.mac);
                Action::Forward {
                    vip,
                    slot: backend,
                    new_flow: false,
                    quic: None,
                }
            }
            Err(reason) => Action::Drop(reason),
        },
        Classified::IcmpError { vip, key, hash } => {
            // The flow's pinned backend while it keeps flows, else Maglev's.
            let pinned = flows
                .lookup(&key, hash, now)
                .and_then(|e| usable(snap, e.backend(), vip));
            let target = match pinned {
                Some((slot, Some(mac))) => Ok((slot, mac)),
                Some((_, None)) => Err(DropReason::BackendUnresolved),
                None => picked(snap, vip, hash).map(|(slot, _, mac)| (slot, mac)),
            };
            match target {
                // No ICMP error about an ICMP error (RFC 1122 3.2.2): one
                // too long for the backend's tunnel is dropped, unchanged.
                Ok((backend, _)) if oversize(frame, snap, backend) => {
                    Action::Drop(DropReason::Oversize)
                }
                Ok((backend, mac)) => {
                    rewrite_to(frame, mac, snap.mac);
                    Action::IcmpToBackend { vip, slot: backend }
                }
                Err(reason) => Action::Drop(reason),
            }
        }
        Classified::Arp => {
            arp_reply(frame, snap.mac);
            Action::ArpReply
        }
        Classified::NeighborSolicit => match nd_advert(frame, snap.mac) {
            Some(len) => Action::NdAdvert { len },
            None => Action::Drop(DropReason::Truncated),
        },
        // `classify` checked all but the checksum: that is what failed.
        Classified::Echo => match echo_reply(frame, snap.mac) {
            Some(()) => Action::EchoReply,
            None => Action::Drop(DropReason::BadChecksum),
        },
        Classified::Conflict { vip_addr, mac } => Action::VipConflict { vip_addr, mac },
        Classified::Learn { ip, mac } => Action::Learned { ip, mac },
        Classified::ToKernel => Action::ToKernel,
        Classified::Drop(r) => Action::Drop(r),
    }
}

/// A TCP or UDP packet of a flow: the flow table, else Maglev on its hash.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "the decision's inputs, inlined")]
fn flow_action(
    vip: u32,
    key: &FlowKey,
    hash: u64,
    tcp_flags: Option<u8>,
    frame: &mut [u8],
    snap: &Snapshot,
    flows: &mut FlowTable,
    now: u32,
) -> Action {
    // One flow-table lookup: keep the pinned backend while it takes
    // flows, re-pin when it went away, insert when new. Each path
    // reads its backend once, MAC included.
    let (backend, mac, new_flow, moved) = match flows.lookup(key, hash, now) {
        Some(e) => {
            // A new connection on the 5-tuple of a closed one (the
            // client reused its port) is a new flow: it goes where the
            // table says now, so a draining backend gets none.
            let reused = e.state() == FlowState::Closing && tcp_flags.is_some_and(bare_syn);
            let pinned = if reused {
                None
            } else {
                usable(snap, e.backend(), vip)
            };
            let (slot, mac, moved) = match pinned {
                Some((slot, Some(mac))) => (slot, mac, None),
                Some((_, None)) => return Action::Drop(DropReason::BackendUnresolved),
                None => match picked(snap, vip, hash) {
                    Ok((slot, b, mac)) => (slot, mac, Some(e.repin(vip, backend_ref(slot, b)))),
                    Err(reason) => return Action::Drop(reason),
                },
            };
            e.observe(tcp_flags, now);
            (slot, mac, reused, moved)
        }
        // Not pinned while unresolved: the retransmission finds the MAC.
        None => match picked(snap, vip, hash) {
            Ok((slot, b, mac)) => {
                let idle = snap.vip(vip).map(|v| v.idle).unwrap_or_default();
                let r = backend_ref(slot, b);
                let inserted = flows.insert_with(key, hash, vip, r, now, idle);
                (slot, mac, inserted != Insert::Updated, None)
            }
            Err(reason) => return Action::Drop(reason),
        },
    };
    if let Some(m) = moved {
        flows.moved(m);
    }
    if let Some(a) = fits(frame, snap, backend) {
        return a;
    }
    rewrite_to(frame, mac, snap.mac);
    Action::Forward {
        vip,
        slot: backend,
        new_flow,
        quic: None,
    }
}

/// A datagram to a VIP in QUIC mode ([`quic`]): to the backend its server
/// id names while that backend keeps flows; an opening packet without a
/// known id by Maglev on its DCID; anything else as UDP.
#[inline(always)]
#[allow(clippy::too_many_arguments, reason = "the decision's inputs")]
fn quic_flow(
    header: quic::Header,
    ids: &quic::IdTable,
    vip: u32,
    key: &FlowKey,
    hash: u64,
    frame: &mut [u8],
    snap: &Snapshot,
    flows: &mut FlowTable,
    now: u32,
) -> Action {
    let as_udp = |route, frame: &mut [u8], flows: &mut FlowTable| match flow_action(
        vip, key, hash, None, frame, snap, flows, now,
    ) {
        Action::Forward {
            vip,
            slot,
            new_flow,
            ..
        } => Action::Forward {
            vip,
            slot,
            new_flow,
            quic: Some(route),
        },
        other => other,
    };
    let (id, opening) = match header {
        quic::Header::First { id, dcid_hash } => (id, Some(dcid_hash)),
        quic::Header::Other { id } => (id, None),
        quic::Header::Unparsed => return as_udp(quic::Route::Unparsed, frame, flows),
    };
    if let Some(slot) = id.and_then(|id| ids.slot(id)) {
        return match snap.resolve_slot(slot, vip).filter(|b| b.keeps_flows()) {
            Some(b) => {
                let Some(mac) = b.mac else {
                    return Action::Drop(DropReason::BackendUnresolved);
                };
                to_backend(frame, snap, vip, slot, mac, quic::Route::ById)
            }
            None => as_udp(quic::Route::IdDown, frame, flows),
        };
    }
    match opening {
        Some(h) => match picked(snap, vip, h) {
            Ok((slot, _, mac)) => to_backend(frame, snap, vip, slot, mac, quic::Route::Initial),
            Err(reason) => Action::Drop(reason),
        },
        None => as_udp(quic::Route::UnknownId, frame, flows),
    }
}

/// A QUIC packet placed without the flow table: fitted, rewritten.
#[inline(always)]
fn to_backend(
    frame: &mut [u8],
    snap: &Snapshot,
    vip: u32,
    slot: u16,
    mac: MacAddr,
    route: quic::Route,
) -> Action {
    if let Some(a) = fits(frame, snap, slot) {
        return a;
    }
    rewrite_to(frame, mac, snap.mac);
    Action::Forward {
        vip,
        slot,
        new_flow: false,
        quic: Some(route),
    }
}

/// The UDP payload of a frame whose UDP header is at `l4_at`, as far as
/// the frame (its first segment) holds it and the UDP length says.
#[inline(always)]
fn udp_payload(frame: &[u8], l4_at: u16) -> &[u8] {
    let at = usize::from(l4_at);
    let len = frame
        .get(at + 4..at + 6)
        .map_or(0, |l| usize::from(u16::from_be_bytes([l[0], l[1]])));
    let end = (at + len).min(frame.len());
    frame.get(at + 8..end).unwrap_or_default()
}

/// Is the frame too long for its backend's way out (never for DR)?
#[inline(always)]
fn oversize(frame: &[u8], snap: &Snapshot, slot: u16) -> bool {
    snap.backend(slot).is_some_and(|b| {
        frame.len() > usize::from(b.max_inner) + 14 && tunnel::exceeds(frame, b.max_inner).is_some()
    })
}

/// `None` when the frame fits its backend's way out (always for DR, where
/// nothing is added); else what to do instead: the ICMP too-big, or a drop.
#[inline(always)]
fn fits(frame: &mut [u8], snap: &Snapshot, slot: u16) -> Option<Action> {
    let b = snap.backend(slot)?;
    // Cheap and conservative: no IP packet is longer than its frame.
    if frame.len() <= usize::from(b.max_inner) + 14 {
        return None;
    }
    match tunnel::exceeds(frame, b.max_inner)? {
        true => Some(
            tunnel::too_big(frame, snap.mac, b.max_inner)
                .map_or(Action::Drop(DropReason::Oversize), |len| Action::TooBig {
                    len,
                }),
        ),
        false => Some(Action::Drop(DropReason::Oversize)),
    }
}

/// After [`apply`] chose backend `slot` (`Forward`, `IcmpToBackend`) or
/// [`from_kernel`] did (`Steered`, `Balanced`): a tunnelled backend's frame
/// is encapsulated, in the room before it, its outer UDP source port and
/// flow label from `hash()` (the packet's [`Classified::hash`]), asked
/// for only then: reading it for every DR packet cost the worker's burst
/// loop 2-5 ns a packet in cache, 10-14 at 1M flows (`encapsulate/...: dr`
/// in the micro benchmarks).
/// `Ok(true)` when it was, `Ok(false)` for DR (unchanged).
#[inline]
pub fn egress(
    frame: &mut Frame<'_>,
    snap: &Snapshot,
    slot: u16,
    hash: impl FnOnce() -> u64,
) -> Result<bool, DropReason> {
    let Some(b) = snap.backend(slot) else {
        return Ok(false);
    };
    let Some(w) = &b.wrap else {
        return Ok(false);
    };
    tunnel::encapsulate(frame, w, b.max_inner, hash()).map(|()| true)
}

/// [`decide`] then [`egress`]: what a worker does to one frame from the
/// port, for tests and fuzzing. Drops from the egress come back as
/// `Action::Drop`.
pub fn decide_frame(
    frame: &mut Frame<'_>,
    snap: &Snapshot,
    flows: &mut FlowTable,
    now: u32,
) -> Action {
    // Classified twice (here for the hash, then in `decide`): calling
    // `apply` from here as well made LLVM stop inlining it into `decide`,
    // 30 instructions more on every decision (quic_instructions).
    let hash = classify(frame, snap).hash();
    let action = decide(frame, snap, flows, now);
    match action {
        Action::Forward { slot, .. } | Action::IcmpToBackend { slot, .. } => {
            match egress(frame, snap, slot, || hash) {
                Ok(_) => action,
                Err(reason) => Action::Drop(reason),
            }
        }
        _ => action,
    }
}

/// [`classify`] then [`apply`], for one frame.
pub fn decide(frame: &mut [u8], snap: &Snapshot, flows: &mut FlowTable, now: u32) -> Action {
    let c = classify(frame, snap);
    apply(c, frame, snap, flows, now)
}

/// The first source port of the probe range: a health check sent along the
/// DR path (a check `via vip`) leaves the host from source port
/// `PROBE_PORT_BASE + slot` of the backend it checks, to VIP:port, and
/// [`from_kernel`] delivers it to that backend alone. The range
/// covers every slot ([`MAX_BACKEND_SLOTS`]): 61440..65536 (0xF000), the top
/// 4096 ports, above Linux's default ephemeral range (32768..60999), so the
/// host's own connections do not pick these ports.
pub const PROBE_PORT_BASE: u16 = 0xF000;

const _: () = assert!(PROBE_PORT_BASE as usize + MAX_BACKEND_SLOTS <= 1 << 16);

/// The source port a VIP-path probe of the backend in `slot` uses, if the
/// slot is in range.
pub fn probe_port(slot: u16) -> Option<u16> {
    (usize::from(slot) < MAX_BACKEND_SLOTS).then(|| PROBE_PORT_BASE + slot)
}

/// What to do with a frame the host sent through the exception interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FromKernel {
    /// A VIP-path probe: the Ethernet destination is now the backend's
    /// MAC, the source ours; the IP packet is untouched. `hash` as in
    /// [`egress`].
    Steered { slot: u16, hash: u64 },
    /// Other host traffic to a VIP: balanced exactly as a client's packet
    /// ([`decide`] with the worker's flow table) and rewritten to `slot`.
    Balanced {
        slot: u16,
        new_flow: bool,
        hash: u64,
    },
    /// An echo request from the host to a VIP, rewritten into the reply
    /// in place (or a packet too big for its backend's tunnel, rewritten
    /// into the ICMP too-big): back to the host through the exception
    /// interface.
    Reply,
    /// To a VIP, but nothing may take it: not sent.
    Dropped(DropReason),
    /// Out of the port as the host sent it.
    Unchanged,
}

/// Decide a frame from the host (the exception interface, never the port).
/// Host traffic to anything but a VIP address is [`FromKernel::Unchanged`].
/// To a VIP address:
/// - a TCP or UDP packet (not a fragment) from source port
///   `PROBE_PORT_BASE + slot` is a VIP-path probe: it goes to the backend
///   in `slot` exactly as a client's packet would ([`Action::Forward`]'s
///   rewrite), whatever the backend's state (a check must reach a backend
///   that is down to see it come back), to the check's own port and
///   protocol (an HTTP check on port 80 of a UDP VIP). The range is
///   reserved: a probe naming no backend of that VIP address, or one whose
///   MAC is unresolved, is dropped, never balanced to another backend;
/// - anything else is decided as a client's packet ([`decide`]), so a
///   process on the host reaches the VIP as a client does.
///
/// Client traffic from the port never comes here, so a client whose
/// source port is in the range is balanced as any other.
pub fn from_kernel(
    frame: &mut [u8],
    snap: &Snapshot,
    flows: &mut FlowTable,
    now: u32,
) -> FromKernel {
    let Some(dst) = vip_destination(frame, snap) else {
        return FromKernel::Unchanged;
    };
    // The host's path is cold: classified for the hash, then again in
    // `decide` (see `decide_frame`).
    let hash = classify(frame, snap).hash();
    match probe_target(frame, snap, dst) {
        Some(Ok((slot, mac))) => {
            rewrite_to(frame, mac, snap.mac);
            return FromKernel::Steered { slot, hash };
        }
        Some(Err(reason)) => return FromKernel::Dropped(reason),
        None => {}
    }
    match decide(frame, snap, flows, now) {
        Action::Forward { slot, new_flow, .. } => FromKernel::Balanced {
            slot,
            new_flow,
            hash,
        },
        Action::IcmpToBackend { slot, .. } => FromKernel::Balanced {
            slot,
            new_flow: false,
            hash,
        },
        Action::EchoReply | Action::TooBig { .. } => FromKernel::Reply,
        Action::Drop(reason) => FromKernel::Dropped(reason),
        // Neighbour traffic and the like: as the host sent it.
        Action::ArpReply
        | Action::NdAdvert { .. }
        | Action::VipConflict { .. }
        | Action::Learned { .. }
        | Action::ToKernel => FromKernel::Unchanged,
    }
}

/// The destination of an IPv4 or IPv6 frame, if it is a VIP address.
fn vip_destination(frame: &[u8], snap: &Snapshot) -> Option<IpAddr> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let dst = match eth.ethertype() {
        ETHERTYPE_IPV4 => IpAddr::V4(Ipv4Packet::new_checked(eth.payload()).ok()?.dst()),
        ETHERTYPE_IPV6 => IpAddr::V6(Ipv6Packet::new_checked(eth.payload()).ok()?.dst()),
        _ => return None,
    };
    snap.is_vip_addr(dst).then_some(dst)
}

/// For a TCP or UDP packet (not a fragment) to VIP address `dst` from a
/// source port in the probe range: Ok((slot, MAC)) of the backend it
/// names, or why it goes nowhere. None: not a probe.
fn probe_target(
    frame: &[u8],
    snap: &Snapshot,
    dst: IpAddr,
) -> Option<Result<(u16, MacAddr), DropReason>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let transport = |proto: u8, l4: &[u8]| {
        Proto::from_number(proto)?;
        l4::ports(l4).ok().map(|(sport, _)| sport)
    };
    let sport = match eth.ethertype() {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.is_fragment() {
                return None;
            }
            transport(ip.protocol(), ip.payload())?
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.fragment().is_some() {
                return None;
            }
            transport(ip.upper_protocol(), ip.upper_payload())?
        }
        _ => return None,
    };
    let slot = sport.checked_sub(PROBE_PORT_BASE)?;
    let backend = snap
        .backend(slot)
        .filter(|b| snap.vip(b.vip).is_some_and(|v| v.key.addr == dst));
    Some(match backend {
        None => Err(DropReason::ProbeNoBackend),
        Some(b) => b
            .mac
            .map(|mac| (slot, mac))
            .ok_or(DropReason::BackendUnresolved),
    })
}

/// The slot of a flow's pinned backend, if it is still that backend (slot
/// and incarnation), still serves `vip`, and still keeps flows. VIP indices
/// may change between snapshots; backend identity does not.
#[inline]
fn usable(snap: &Snapshot, pinned: BackendRef, vip: u32) -> Option<(u16, Option<MacAddr>)> {
    snap.resolve(pinned, vip)
        .filter(|b| b.keeps_flows())
        .map(|b| (pinned.slot, b.mac))
}

/// The VIP's Maglev choice for a new (or re-pinned) flow, with its MAC.
#[inline]
fn picked(
    snap: &Snapshot,
    vip: u32,
    hash: u64,
) -> Result<(u16, &SnapshotBackend, MacAddr), DropReason> {
    let slot = pick(snap, vip, hash).ok_or(DropReason::NoBackend)?;
    let b = snap.backend(slot).ok_or(DropReason::NoBackend)?;
    let mac = b.mac.ok_or(DropReason::BackendUnresolved)?;
    Ok((slot, b, mac))
}

#[inline]
fn pick(snap: &Snapshot, vip: u32, hash: u64) -> Option<u16> {
    snap.vip(vip)?.pick(hash)
}

fn backend_ref(slot: u16, b: &SnapshotBackend) -> BackendRef {
    BackendRef {
        slot,
        incarnation: b.incarnation,
    }
}

/// SYN set, ACK clear: a connection's first segment.
#[inline(always)]
fn bare_syn(flags: u8) -> bool {
    flags & (l4::SYN | l4::ACK) == l4::SYN
}

/// DR: only the Ethernet addresses change; the IP packet is untouched.
#[inline(always)]
fn rewrite_to(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    frame[..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
}

fn arp_reply(frame: &mut [u8], mac: MacAddr) {
    let Ok(mut eth) = EthernetFrame::new_checked(&mut *frame) else {
        return;
    };
    let asker = eth.src();
    eth.set_dst(asker);
    eth.set_src(mac);
    if let Ok(mut arp) = ArpPacket::new_checked(eth.payload_mut()) {
        arp.make_reply(mac);
    }
}

/// The echo reply to an echo request, in place: Ethernet addresses
/// swapped (ours the source), then the IP packet (see
/// [`icmp::write_echo_reply`], [`icmpv6::write_echo_reply`]).
fn echo_reply(frame: &mut [u8], mac: MacAddr) -> Option<()> {
    let mut eth = EthernetFrame::new_checked(&mut *frame).ok()?;
    let ethertype = eth.ethertype();
    let asker = eth.src();
    let ip = eth.payload_mut();
    match ethertype {
        ETHERTYPE_IPV4 => icmp::write_echo_reply(ip)?,
        ETHERTYPE_IPV6 => icmpv6::write_echo_reply(ip)?,
        _ => return None,
    }
    eth.set_dst(asker);
    eth.set_src(mac);
    Some(())
}

/// The per-worker token bucket of echo replies: `rate` per second, up to
/// `burst` at once. Time is passed in, in ticks of `hz` per second (a
/// worker's TSC; milliseconds in a test). Integer arithmetic only: a reply
/// costs `hz` credit, and every tick earns `rate`.
#[derive(Debug, Clone)]
pub struct EchoLimiter {
    rate: u64,
    hz: u64,
    cap: u64,
    credit: u64,
    last: u64,
}

impl EchoLimiter {
    /// Full at the start. `rate` 0: no limit. `burst` is at least 1.
    pub fn new(rate: u32, burst: u32, hz: u64) -> EchoLimiter {
        let hz = hz.max(1);
        let cap = u64::from(burst.max(1)).saturating_mul(hz);
        EchoLimiter {
            rate: u64::from(rate),
            hz,
            cap,
            credit: cap,
            last: 0,
        }
    }

    /// May one more reply go out at `now`? Takes its token if so.
    #[inline]
    pub fn allow(&mut self, now: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let earned = now.saturating_sub(self.last).saturating_mul(self.rate);
        self.last = self.last.max(now);
        self.credit = self.credit.saturating_add(earned).min(self.cap);
        if self.credit >= self.hz {
            self.credit -= self.hz;
            true
        } else {
            false
        }
    }
}

fn nd_advert(frame: &mut [u8], mac: MacAddr) -> Option<usize> {
    let mut eth = EthernetFrame::new_checked(&mut *frame).ok()?;
    let hl = eth.header_len();
    let (asker_ip, target, end) = {
        let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
        if ip.upper_offset() != 40 {
            return None; // extension headers before the ND message: not answered
        }
        let icmp = Icmpv6Packet::new_checked(ip.upper_payload()).ok()?;
        (
            ip.src_bytes(),
            icmp.nd_target(),
            40 + usize::from(ip.payload_len()),
        )
    };
    let asker_mac = eth.src();
    eth.set_dst(if asker_ip == [0; 16] {
        MacAddr::ipv6_multicast(&icmpv6::ALL_NODES)
    } else {
        asker_mac
    });
    eth.set_src(mac);
    let len = icmpv6::write_advert(&mut eth.payload_mut()[..end], mac, &target, &asker_ip);
    Some(hl + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowConfig;
    use crate::packet::build;
    use crate::packet::ethernet::EthernetFrame;
    use crate::snapshot::{BackendSpec, BackendState, SnapshotError, SnapshotSpec, VipSpec};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const FLOW_HASH_OF_BASE: u64 = 12_170_937_991_823_698_601;
    const PORT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xc1]);
    const VIP4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const LOCAL4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const CLIENT4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const THIEF_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x66]);

    /// The flow hash spreads what real clients vary (the low address bits,
    /// the source port) evenly, and every input bit moves about half of the
    /// output bits. Fixed values: placement must never change silently.
    #[test]
    fn flow_hash_spreads_and_avalanches_and_never_changes() {
        let key = |client: u32, sport: u16| {
            FlowKey::v4(client.to_be_bytes(), VIP4.octets(), sport, 443, PROTO_TCP)
        };
        // 1,000 clients x 64 ports into 256 bins, by the top bits as Maglev
        // uses them and by the low bits as the flow table does.
        let (mut top, mut low) = ([0u32; 256], [0u32; 256]);
        for c in 0..1000u32 {
            for p in 0..64u16 {
                let h = flow_hash(&key(0xcb00_7100 + c, 40000 + p));
                top[(h >> 56) as usize] += 1;
                low[(h & 0xff) as usize] += 1;
            }
        }
        for bins in [top, low] {
            let (min, max) = (bins.iter().min().unwrap(), bins.iter().max().unwrap());
            // 250 expected per bin; about 16 is one standard deviation.
            assert!(*min > 170 && *max < 330, "{min}..{max}");
        }
        // Avalanche: flip each bit of the tuple; count output bits flipped.
        let base = key(0xcb00_7107, 40000);
        let h0 = flow_hash(&base);
        let mut flips = Vec::new();
        for i in 0..(16 * 8) {
            let mut k = base;
            k.src[i / 8] ^= 1 << (i % 8);
            flips.push((flow_hash(&k) ^ h0).count_ones());
            let mut k = base;
            k.dst[i / 8] ^= 1 << (i % 8);
            flips.push((flow_hash(&k) ^ h0).count_ones());
        }
        for i in 0..16 {
            let mut k = base;
            k.src_port ^= 1 << i;
            flips.push((flow_hash(&k) ^ h0).count_ones());
        }
        let mean = flips.iter().sum::<u32>() as f64 / flips.len() as f64;
        assert!((28.0..36.0).contains(&mean), "mean bits flipped {mean}");
        assert!(flips.iter().all(|&f| f >= 12), "{flips:?}");
        assert_eq!(
            h0, FLOW_HASH_OF_BASE,
            "the flow hash changed: placement would move"
        );
    }

    fn vip6() -> Ipv6Addr {
        "2001:db8::10".parse().unwrap()
    }

    fn client6() -> Ipv6Addr {
        "2001:db8::7".parse().unwrap()
    }

    fn backend_mac(slot: u16) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0xbe, u8::try_from(slot).unwrap()])
    }

    fn backend(slot: u16, state: BackendState) -> BackendSpec {
        BackendSpec {
            id: BackendRef {
                slot,
                incarnation: 1,
            },
            addr: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + u8::try_from(slot).unwrap())),
            weight: 1,
            mac: Some(backend_mac(slot)),
            state,
            tunnel: None,
            server_id: None,
        }
    }

    /// VIP 0: 198.51.100.10:443/tcp with backends 0..3; VIP 1: [2001:db8::10]:5000/udp with 3..5.
    fn spec(states: [BackendState; 5]) -> SnapshotSpec {
        SnapshotSpec {
            generation: 1,
            mac: PORT_MAC,
            local: vec![IpAddr::V4(LOCAL4)],
            vips: vec![
                VipSpec {
                    idle: Default::default(),
                    key: VipKey {
                        addr: IpAddr::V4(VIP4),
                        port: 443,
                        proto: Proto::Tcp,
                    },
                    table_size: 251,
                    quic: None,
                    drain: Default::default(),
                    backends: (0..3).map(|s| backend(s, states[s as usize])).collect(),
                },
                VipSpec {
                    idle: Default::default(),
                    key: VipKey {
                        addr: IpAddr::V6(vip6()),
                        port: 5000,
                        proto: Proto::Udp,
                    },
                    table_size: 251,
                    quic: None,
                    drain: Default::default(),
                    backends: (3..5).map(|s| backend(s, states[s as usize])).collect(),
                },
            ],
        }
    }

    fn snap(states: [BackendState; 5]) -> Snapshot {
        Snapshot::build(&spec(states)).unwrap()
    }

    fn all_up() -> Snapshot {
        snap([BackendState::Up; 5])
    }

    fn syn(sport: u16) -> Vec<u8> {
        build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, sport, 443, SYN, b"")
    }

    fn table() -> FlowTable {
        FlowTable::new(1024, FlowConfig::default())
    }

    /// Every backend of `spec` through `encap` from our address of its
    /// family, its `mac` the next hop's.
    fn tunnelled(mut spec: SnapshotSpec, encap: crate::tunnel::Encap) -> SnapshotSpec {
        for v in &mut spec.vips {
            for b in &mut v.backends {
                let source = match b.addr {
                    IpAddr::V4(_) => IpAddr::V4(LOCAL4),
                    IpAddr::V6(_) => "2001:db8::1".parse().unwrap(),
                };
                b.tunnel = Some(crate::tunnel::Tunnel { encap, source });
            }
        }
        spec
    }

    /// The slot a host frame was steered to, if it was.
    fn steered(r: FromKernel) -> Option<u16> {
        match r {
            FromKernel::Steered { slot, .. } => Some(slot),
            _ => None,
        }
    }

    fn in_room(frame: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; 128 + frame.len()];
        buf[128..].copy_from_slice(frame);
        buf
    }

    #[test]
    fn a_tunnelled_backend_gets_its_packets_encapsulated_and_dr_ones_do_not() {
        use crate::tunnel::{Encap, DEFAULT_GUE_PORT};
        let s = Snapshot::build(&tunnelled(
            spec([BackendState::Up; 5]),
            Encap::Gue {
                port: DEFAULT_GUE_PORT,
            },
        ))
        .unwrap();
        assert!(s.tunnels(), "workers prefetch the room before packets");
        assert!(!Snapshot::build(&spec([BackendState::Up; 5]))
            .unwrap()
            .tunnels());
        let mut t = table();
        let pkt = build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40000, 443, SYN, b"");
        let mut buf = in_room(&pkt);
        let mut f = Frame::new(&mut buf, 128, pkt.len()).unwrap();
        let Action::Forward {
            slot,
            new_flow: true,
            ..
        } = decide_frame(&mut f, &s, &mut t, 0)
        else {
            panic!("forwarded")
        };
        assert_eq!(f.len(), pkt.len() + 28);
        assert_eq!(&f[..6], &backend_mac(slot).0, "to the next hop");
        assert_eq!(&f[6..12], &s.mac.0, "from us");
        assert_eq!(f[14 + 9], 17, "over UDP");
        assert_eq!(
            &f[14 + 16..14 + 20],
            &[192, 0, 2, 10 + u8::try_from(slot).unwrap()],
            "to the backend"
        );
        assert_eq!(&f[14 + 12..14 + 16], &LOCAL4.octets(), "from our address");
        assert_eq!(f[42..], pkt[14..], "the client's packet, whole");
        // The outer source port from the flow's own hash, the classifier's.
        let key = FlowKey::v4(CLIENT4.octets(), VIP4.octets(), 40000, 443, 6);
        let sport = 0xc000 | (flow_hash(&key) >> 50) as u16 & 0x3fff;
        assert_eq!(f[34..36], sport.to_be_bytes(), "the flow's source port");
        let mut again = in_room(&pkt);
        let mut g = Frame::new(&mut again, 128, pkt.len()).unwrap();
        decide_frame(&mut g, &s, &mut t, 1);
        assert_eq!(g[34..36], f[34..36], "one flow, one source port");

        // The same flow on a DR snapshot: the same backend (Maglev does not
        // look at the method), only the MAC rewritten.
        let dr = all_up();
        let mut buf = in_room(&pkt);
        let mut f = Frame::new(&mut buf, 128, pkt.len()).unwrap();
        let Action::Forward { slot: dr_slot, .. } = decide_frame(&mut f, &dr, &mut table(), 0)
        else {
            panic!("forwarded")
        };
        assert_eq!(dr_slot, slot);
        assert_dr_rewrite(&pkt, &f, slot);
    }

    #[test]
    fn a_packet_too_big_for_the_tunnel_gets_an_icmp_or_is_dropped() {
        use crate::tunnel::Encap;
        let mut sp = tunnelled(spec([BackendState::Up; 5]), Encap::Ipip);
        sp.vips.truncate(1); // IPIP cannot carry VIP 1 (IPv6) to its IPv4 backends
        let s = Snapshot::build(&sp).unwrap().with_mtu(1400);
        let mut t = table();
        let open = build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40001, 443, SYN, b"");
        assert!(matches!(
            decide(&mut open.clone(), &s, &mut t, 0),
            Action::Forward { .. }
        ));
        // 20 + 20 + 1360 = 1400 bytes of IP: 1420 once wrapped.
        let big = build::tcp4(
            PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40001, 443, ACK, &[0; 1360],
        );
        let mut f = big.clone();
        let Action::TooBig { len } = decide(&mut f, &s, &mut t, 0) else {
            panic!("too big")
        };
        let icmp = crate::packet::icmp::IcmpPacket::new_checked(&f[34..len]).unwrap();
        assert_eq!(icmp.next_hop_mtu(), 1380, "the MTU less IPIP's 20 bytes");
        assert_eq!(&f[..6], &CLIENT_MAC.0, "back to the client");
        // One byte less fits.
        let fits = build::tcp4(
            PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40001, 443, ACK, &[0; 1340],
        );
        assert!(matches!(
            decide(&mut fits.clone(), &s, &mut t, 0),
            Action::Forward { .. }
        ));
        // Fragmentable (no DF): dropped, never fragmented.
        let mut frag = big.clone();
        frag[20] &= !0x40;
        frag[24..26].copy_from_slice(&[0, 0]);
        let c = crate::packet::checksum::checksum(&frag[14..34]);
        frag[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            decide(&mut frag, &s, &mut t, 0),
            Action::Drop(DropReason::Oversize)
        );
        // At the default MTU it fits.
        let s = s.with_mtu(1500);
        assert!(matches!(
            decide(&mut big.clone(), &s, &mut t, 0),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn a_fragment_too_big_for_the_tunnel_is_dropped_unchanged() {
        use crate::tunnel::Encap;
        let mut sp = tunnelled(spec([BackendState::Up; 5]), Encap::Ipip);
        sp.vips.truncate(1);
        let s = Snapshot::build(&sp).unwrap().with_mtu(1400);
        // A first fragment (MF, no DF) of 20 + 1400 bytes: 1440 once wrapped.
        let ip = build::ipv4_fragment(CLIENT4, VIP4, 6, 0x2000, 7, &[0; 1400]);
        let pkt = build::ethernet(PORT_MAC, CLIENT_MAC, ETHERTYPE_IPV4, &ip);
        let mut f = pkt.clone();
        assert_eq!(
            decide(&mut f, &s, &mut table(), 0),
            Action::Drop(DropReason::Oversize)
        );
        assert_eq!(f, pkt, "a drop leaves the frame");
        // A small one goes through the tunnel's backend.
        let ip = build::ipv4_fragment(CLIENT4, VIP4, 6, 0x2000, 7, &[0; 100]);
        let mut f = build::ethernet(PORT_MAC, CLIENT_MAC, ETHERTYPE_IPV4, &ip);
        assert!(matches!(
            decide(&mut f, &s, &mut table(), 0),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn tunnels_the_dataplane_cannot_build_are_refused() {
        use crate::tunnel::{Encap, Tunnel};
        let mut bad = spec([BackendState::Up; 5]);
        bad.vips[0].backends[0].tunnel = Some(Tunnel {
            encap: Encap::Ipip,
            source: "2001:db8::1".parse().unwrap(),
        });
        assert!(matches!(
            Snapshot::build(&bad),
            Err(SnapshotError::TunnelSourceFamily { .. })
        ));
        let mut bad = spec([BackendState::Up; 5]);
        // VIP 1 is IPv6; its backends are IPv4.
        bad.vips[1].backends[0].tunnel = Some(Tunnel {
            encap: Encap::Ipip,
            source: IpAddr::V4(LOCAL4),
        });
        assert!(matches!(
            Snapshot::build(&bad),
            Err(SnapshotError::IpipFamily { .. })
        ));
        bad.vips[1].backends[0].tunnel = Some(Tunnel {
            encap: Encap::Gue { port: 0 },
            source: IpAddr::V4(LOCAL4),
        });
        assert!(matches!(
            Snapshot::build(&bad),
            Err(SnapshotError::TunnelPortZero { .. })
        ));
        bad.vips[1].backends[0].tunnel = Some(Tunnel {
            encap: Encap::Vxlan {
                port: 4789,
                vni: 1 << 24,
                inner_mac: CLIENT_MAC,
            },
            source: IpAddr::V4(LOCAL4),
        });
        assert!(matches!(
            Snapshot::build(&bad),
            Err(SnapshotError::BadVni { .. })
        ));
        // GUE carries an IPv6 VIP's packets to an IPv4 backend.
        bad.vips[1].backends[0].tunnel = Some(Tunnel {
            encap: Encap::Gue { port: 6080 },
            source: IpAddr::V4(LOCAL4),
        });
        assert!(Snapshot::build(&bad).is_ok());
    }

    /// Forwarded: only the Ethernet addresses changed, to the backend's MAC.
    fn assert_dr_rewrite(before: &[u8], after: &[u8], slot: u16) {
        assert_eq!(
            &after[..6],
            &backend_mac(slot).0,
            "destination is the backend"
        );
        assert_eq!(&after[6..12], &PORT_MAC.0, "source is our port");
        assert_eq!(&after[12..], &before[12..], "IP packet untouched");
    }

    #[test]
    fn only_a_bare_syn_opens_a_flow() {
        let s = all_up();
        let tcp = |flags| build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 1, 443, flags, b"");
        assert!(classify(&syn(1), &s).opens_flow());
        for flags in [SYN | ACK, ACK, 0x11, 0x04] {
            assert!(!classify(&tcp(flags), &s).opens_flow(), "flags {flags:#x}");
        }
        let udp = build::udp6(PORT_MAC, CLIENT_MAC, client6(), vip6(), 1, 5000, b"");
        assert!(matches!(classify(&udp, &s), Classified::Flow { .. }));
        assert!(!classify(&udp, &s).opens_flow());
    }

    #[test]
    fn a_syn_prefetches_its_bucket_other_packets_their_candidates() {
        let s = all_up();
        let t = table();
        let seen = |c: &Classified| {
            let got = std::cell::RefCell::new(Vec::new());
            c.prefetch_entries(&t, |e| got.borrow_mut().push(std::ptr::from_ref(e)));
            got.into_inner()
        };
        let syn = classify(&syn(1), &s);
        let h = syn.flow_hash().unwrap();
        let bucket: Vec<_> = t.bucket_entries(h).iter().map(std::ptr::from_ref).collect();
        assert_eq!(seen(&syn), bucket);
        let ack = build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 1, 443, ACK, b"");
        let ack = classify(&ack, &s);
        assert_eq!(ack.flow_hash(), Some(h), "same flow");
        let candidates: Vec<_> = t
            .candidates(h)
            .into_iter()
            .map(std::ptr::from_ref)
            .collect();
        assert_eq!(seen(&ack), candidates);
        assert_eq!(candidates.len(), 2);
        assert!(seen(&Classified::Arp).is_empty());
    }

    #[test]
    fn new_flow_is_pinned_and_forwarded_in_dr_mode() {
        let s = all_up();
        let mut t = table();
        let f = syn(40000);
        let mut out = f.clone();
        let Action::Forward {
            vip: 0,
            slot: backend,
            new_flow: true,
            quic: None,
        } = decide(&mut out, &s, &mut t, 0)
        else {
            panic!("expected a forward");
        };
        assert!(backend < 3);
        assert_dr_rewrite(&f, &out, backend);
        let mut ack = build::tcp4(
            PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40000, 443, ACK, b"GET /",
        );
        assert_eq!(
            decide(&mut ack, &s, &mut t, 1),
            Action::Forward {
                vip: 0,
                slot: backend,
                new_flow: false,
                quic: None
            }
        );
        assert_eq!(t.stats().active, 1);
    }

    #[test]
    fn flows_spread_over_backends_and_match_maglev_on_every_instance() {
        let s = all_up();
        let (mut t1, mut t2) = (table(), table());
        let mut seen = [0usize; 3];
        for sport in 1000..1300 {
            let (mut a, mut b) = (syn(sport), syn(sport));
            let ra = decide(&mut a, &s, &mut t1, 0);
            let rb = decide(&mut b, &all_up(), &mut t2, 0);
            assert_eq!(ra, rb, "two instances with the same config agree");
            if let Action::Forward { slot: backend, .. } = ra {
                seen[usize::from(backend)] += 1;
            }
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
    }

    #[test]
    fn draining_keeps_flows_down_moves_them() {
        let mut t = table();
        let mut f = syn(40001);
        let Action::Forward { slot: backend, .. } = decide(&mut f, &all_up(), &mut t, 0) else {
            panic!()
        };
        let mut states = [BackendState::Up; 5];
        states[usize::from(backend)] = BackendState::Draining;
        let mut f = syn(40001);
        assert_eq!(
            decide(&mut f, &snap(states), &mut t, 1),
            Action::Forward {
                vip: 0,
                slot: backend,
                new_flow: false,
                quic: None
            }
        );
        // A new flow never lands on the draining backend.
        for sport in 2000..2200 {
            let mut g = syn(sport);
            if let Action::Forward { slot: b, .. } = decide(&mut g, &snap(states), &mut t, 1) {
                assert_ne!(b, backend);
            }
        }
        states[usize::from(backend)] = BackendState::Down;
        let mut f = syn(40001);
        let Action::Forward {
            slot: moved,
            new_flow: false,
            ..
        } = decide(&mut f, &snap(states), &mut t, 2)
        else {
            panic!()
        };
        assert_ne!(moved, backend, "flow of a down backend is re-hashed");
        // ... and stays on its new backend when the old one comes back.
        let mut f = syn(40001);
        assert_eq!(
            decide(&mut f, &all_up(), &mut t, 3),
            Action::Forward {
                vip: 0,
                slot: moved,
                new_flow: false,
                quic: None
            }
        );
    }

    /// The flood case end to end through the decision: streams confirmed
    /// by their handshake's ACK (TCP) or second datagram (UDP), then SYN
    /// and UDP floods of new 5-tuples, 20 times the table, while every
    /// stream keeps sending once a second: each stream's next packet still
    /// hits its entry (`new_flow: false`), no confirmed entry is displaced,
    /// and the flood's entries displace each other.
    #[test]
    fn a_flood_through_the_decision_leaves_every_stream_its_entry() {
        let s = all_up();
        let mut t = FlowTable::new(4096, FlowConfig::default());
        let tcp = |src: u32, sport: u16, flags| {
            build::tcp4(
                PORT_MAC,
                CLIENT_MAC,
                Ipv4Addr::from(src),
                VIP4,
                sport,
                443,
                flags,
                b"",
            )
        };
        let udp = |src: u32, sport: u16| {
            let a = Ipv6Addr::from(0x2001_0db8_0100_u128 << 80 | u128::from(src));
            build::udp6(PORT_MAC, CLIENT_MAC, a, vip6(), sport, 5000, b"x")
        };
        let hit = |a: Action| {
            matches!(
                a,
                Action::Forward {
                    new_flow: false,
                    ..
                }
            )
        };
        // 512 TCP and 512 UDP streams: a quarter of the table.
        let streams: Vec<u32> = (0..512).map(|i| 0x6400_0000 + i).collect();
        for &c in &streams {
            decide(&mut tcp(c, 40000, SYN), &s, &mut t, 0);
            decide(&mut udp(c, 40000), &s, &mut t, 0);
            assert!(hit(decide(&mut tcp(c, 40000, ACK), &s, &mut t, 0)));
            assert!(hit(decide(&mut udp(c, 40000), &s, &mut t, 0)));
        }
        let flood = 20 * u32::try_from(t.capacity()).unwrap();
        for i in 0..flood {
            let now = 1 + i * 10 / flood;
            let (src, sport) = (
                0xac10_0000 + i / 1000,
                1024 + u16::try_from(i % 1000).unwrap(),
            );
            let a = if i % 2 == 0 {
                decide(&mut tcp(src, sport, SYN), &s, &mut t, now)
            } else {
                decide(&mut udp(src, sport), &s, &mut t, now)
            };
            assert!(matches!(a, Action::Forward { new_flow: true, .. }), "{a:?}");
            // Every stream once a second.
            if i % (flood / 10) == 0 {
                for &c in &streams {
                    assert!(hit(decide(&mut tcp(c, 40000, ACK), &s, &mut t, now)));
                    assert!(hit(decide(&mut udp(c, 40000), &s, &mut t, now)));
                }
            }
        }
        for &c in &streams {
            assert!(hit(decide(&mut tcp(c, 40000, ACK), &s, &mut t, 11)));
            assert!(hit(decide(&mut udp(c, 40000), &s, &mut t, 11)));
        }
        let st = t.stats();
        assert_eq!(st.evicted_confirmed, 0);
        assert!(st.evicted_unconfirmed > 0, "{st:?}");
        assert_eq!(
            st.inserts + st.rejected,
            u64::from(flood) + 2 * 512,
            "one insert or rejection per new tuple: {st:?}"
        );
    }

    #[test]
    fn a_reused_port_after_close_is_a_new_flow() {
        let mut t = table();
        let mut f = syn(40005);
        let Action::Forward { slot: backend, .. } = decide(&mut f, &all_up(), &mut t, 0) else {
            panic!()
        };
        let mut states = [BackendState::Up; 5];
        states[usize::from(backend)] = BackendState::Draining;
        let s = snap(states);
        // The connection ends; its entry lingers in the closing state.
        let mut fin = build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40005, 443, 0x11, b"");
        assert!(matches!(
            decide(&mut fin, &s, &mut t, 1),
            Action::Forward { slot: b, .. } if b == backend
        ));
        // The client opens a new connection from the same port: the draining
        // backend must not get it.
        let mut again = syn(40005);
        let Action::Forward {
            slot: b,
            new_flow: true,
            ..
        } = decide(&mut again, &s, &mut t, 2)
        else {
            panic!()
        };
        assert_ne!(b, backend);
        // A late retransmission of the old FIN's ACK is not a new flow.
        let mut ack = build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40005, 443, ACK, b"");
        assert_eq!(
            decide(&mut ack, &s, &mut t, 3),
            Action::Forward {
                vip: 0,
                slot: b,
                new_flow: false,
                quic: None
            }
        );
    }

    #[test]
    fn removed_backend_slot_reuse_does_not_capture_its_flows() {
        let mut t = table();
        let mut f = syn(40002);
        let Action::Forward { slot: backend, .. } = decide(&mut f, &all_up(), &mut t, 0) else {
            panic!()
        };
        // The backend is replaced in its slot by another (new incarnation).
        let mut sp = spec([BackendState::Up; 5]);
        let b = &mut sp.vips[0].backends[usize::from(backend)];
        b.id.incarnation = 2;
        b.addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
        let s = Snapshot::build(&sp).unwrap();
        let mut f = syn(40002);
        let a = decide(&mut f, &s, &mut t, 1);
        let expected = s
            .vip(0)
            .unwrap()
            .pick(flow_hash(&FlowKey::v4(
                CLIENT4.octets(),
                VIP4.octets(),
                40002,
                443,
                6,
            )))
            .unwrap();
        assert_eq!(
            a,
            Action::Forward {
                vip: 0,
                slot: expected,
                new_flow: false,
                quic: None
            },
            "re-hashed, not pinned to the newcomer by accident"
        );
    }

    #[test]
    fn no_usable_backend_drops() {
        let mut t = table();
        let mut f = syn(40003);
        assert_eq!(
            decide(&mut f, &snap([BackendState::Down; 5]), &mut t, 0),
            Action::Drop(DropReason::NoBackend)
        );
        let mut sp = spec([BackendState::Up; 5]);
        for b in &mut sp.vips[0].backends {
            b.mac = None;
        }
        let mut f = syn(40003);
        assert_eq!(
            decide(&mut f, &Snapshot::build(&sp).unwrap(), &mut t, 0),
            Action::Drop(DropReason::BackendUnresolved),
            "no MAC, no forwarding"
        );
        assert_eq!(
            t.stats().active,
            0,
            "and no flow pinned before the MAC is known"
        );
    }

    #[test]
    fn ipv6_udp_to_vip() {
        let s = all_up();
        let mut t = table();
        let f = build::udp6(PORT_MAC, CLIENT_MAC, client6(), vip6(), 40000, 5000, b"srt");
        let mut out = f.clone();
        let Action::Forward {
            vip: 1,
            slot: backend,
            new_flow: true,
            quic: None,
        } = decide(&mut out, &s, &mut t, 0)
        else {
            panic!()
        };
        assert!((3..5).contains(&backend));
        assert_dr_rewrite(&f, &out, backend);
    }

    fn probe4(slot: u16) -> Vec<u8> {
        // From the host through the tap: its neighbour entry for the VIP
        // points at our MAC, and the tap carries our MAC too.
        build::tcp4(
            PORT_MAC,
            PORT_MAC,
            LOCAL4,
            VIP4,
            PROBE_PORT_BASE + slot,
            443,
            SYN,
            b"",
        )
    }

    #[test]
    fn a_probe_from_the_host_is_steered_to_the_backend_its_port_names() {
        let s = all_up();
        for slot in 0..3 {
            let f = probe4(slot);
            let mut out = f.clone();
            assert_eq!(
                steered(from_kernel(&mut out, &s, &mut table(), 0)),
                Some(slot)
            );
            assert_dr_rewrite(&f, &out, slot);
            assert_eq!(out.len(), f.len());
        }
        // IPv6 UDP to VIP 1, backends 3 and 4.
        for slot in 3..5 {
            let f = build::udp6(
                PORT_MAC,
                PORT_MAC,
                client6(),
                vip6(),
                PROBE_PORT_BASE + slot,
                5000,
                b"probe",
            );
            let mut out = f.clone();
            assert_eq!(
                steered(from_kernel(&mut out, &s, &mut table(), 0)),
                Some(slot)
            );
            assert_dr_rewrite(&f, &out, slot);
        }
        // The check's own port and protocol on the VIP's address: an HTTP
        // check on port 80 of the TCP VIP on 443, a TCP check of the UDP VIP.
        let f = build::tcp4(
            PORT_MAC,
            PORT_MAC,
            LOCAL4,
            VIP4,
            PROBE_PORT_BASE + 2,
            80,
            SYN,
            b"",
        );
        let mut out = f.clone();
        assert_eq!(steered(from_kernel(&mut out, &s, &mut table(), 0)), Some(2));
        assert_dr_rewrite(&f, &out, 2);
        let f = build::tcp6(
            PORT_MAC,
            PORT_MAC,
            client6(),
            vip6(),
            PROBE_PORT_BASE + 4,
            8080,
            SYN,
            b"",
        );
        let mut out = f.clone();
        assert_eq!(steered(from_kernel(&mut out, &s, &mut table(), 0)), Some(4));
        assert_dr_rewrite(&f, &out, 4);
        // A backend that is down is still probed (to see it come back).
        let down = snap([BackendState::Down; 5]);
        let mut out = probe4(1);
        assert_eq!(
            steered(from_kernel(&mut out, &down, &mut table(), 0)),
            Some(1)
        );
        assert_eq!(probe_port(0), Some(PROBE_PORT_BASE));
        assert_eq!(probe_port(4095), Some(u16::MAX));
        assert_eq!(probe_port(4096), None);
    }

    #[test]
    fn what_the_host_sends_that_is_not_a_probe() {
        let s = all_up();
        let fate = |f: &[u8], s: &Snapshot| {
            let mut out = f.to_vec();
            let r = from_kernel(&mut out, s, &mut table(), 0);
            (r, out)
        };
        let unchanged = |f: Vec<u8>, s: &Snapshot| {
            let (r, out) = fate(&f, s);
            assert_eq!(r, FromKernel::Unchanged);
            assert_eq!(out, f, "not a byte changed");
        };
        let dropped = |f: Vec<u8>, s: &Snapshot, reason: DropReason| {
            assert_eq!(fate(&f, s).0, FromKernel::Dropped(reason));
        };
        // Below the range: balanced as a client's packet, to VIP 0's backends.
        for sport in [PROBE_PORT_BASE - 1, 40000] {
            let f = build::tcp4(PORT_MAC, PORT_MAC, LOCAL4, VIP4, sport, 443, SYN, b"");
            let (r, out) = fate(&f, &s);
            let FromKernel::Balanced {
                slot,
                new_flow: true,
                ..
            } = r
            else {
                panic!("{r:?}")
            };
            assert!(slot < 3, "{slot}");
            assert_dr_rewrite(&f, &out, slot);
        }
        // The range is reserved: slot 3 is VIP 1's backend, not VIP 0's;
        // slot 7 is nobody's; slot 1 is VIP 0's, not VIP 1's (IPv6).
        dropped(probe4(3), &s, DropReason::ProbeNoBackend);
        dropped(probe4(7), &s, DropReason::ProbeNoBackend);
        dropped(
            build::udp6(
                PORT_MAC,
                PORT_MAC,
                client6(),
                vip6(),
                PROBE_PORT_BASE + 1,
                5000,
                b"",
            ),
            &s,
            DropReason::ProbeNoBackend,
        );
        // A backend without a MAC: not steered, and not balanced elsewhere.
        let mut sp = spec([BackendState::Up; 5]);
        sp.vips[0].backends[1].mac = None;
        let unresolved = Snapshot::build(&sp).unwrap();
        dropped(probe4(1), &unresolved, DropReason::BackendUnresolved);
        // To a VIP address on a port no VIP serves, from outside the range.
        dropped(
            build::tcp4(PORT_MAC, PORT_MAC, LOCAL4, VIP4, 40000, 22, SYN, b""),
            &s,
            DropReason::UnknownVipPort,
        );
        // Not to a VIP address: the backend's own address (a check via the
        // real address, even from a port in the range).
        unchanged(
            build::tcp4(
                PORT_MAC,
                PORT_MAC,
                LOCAL4,
                Ipv4Addr::new(192, 0, 2, 10),
                PROBE_PORT_BASE,
                443,
                SYN,
                b"",
            ),
            &s,
        );
        // A fragment to the VIP from a port in the range is no probe: it
        // is decided as a client's fragment would be.
        let tcp = build::tcp(PROBE_PORT_BASE, 443, SYN, b"", 0);
        let frag = build::ipv4_fragment(LOCAL4, VIP4, PROTO_TCP, 0x2000, 7, &tcp);
        let f = build::ethernet(PORT_MAC, PORT_MAC, ETHERTYPE_IPV4, &frag);
        let mut client = f.clone();
        let want = decide(&mut client, &s, &mut table(), 0);
        let (r, _) = fate(&f, &s);
        assert!(!matches!(r, FromKernel::Steered { .. }), "{r:?} ({want:?})");
        // ARP, and runts.
        unchanged(build::arp_request(PORT_MAC, LOCAL4, VIP4), &s);
        let f = probe4(0);
        unchanged(f[..30].to_vec(), &s);
        unchanged(Vec::new(), &s);
    }

    /// A host process reaches a VIP as a client does: its flow stays on
    /// its backend, and a ping of the VIP is answered back to the host.
    #[test]
    fn host_traffic_to_a_vip_is_balanced_and_pinned() {
        let s = all_up();
        let mut t = table();
        let f = build::tcp4(PORT_MAC, PORT_MAC, LOCAL4, VIP4, 40000, 443, SYN, b"");
        let mut out = f.clone();
        let FromKernel::Balanced {
            slot,
            new_flow: true,
            hash,
        } = from_kernel(&mut out, &s, &mut t, 0)
        else {
            panic!()
        };
        for _ in 0..3 {
            let mut again = f.clone();
            assert_eq!(
                from_kernel(&mut again, &s, &mut t, 1),
                FromKernel::Balanced {
                    slot,
                    new_flow: false,
                    hash,
                }
            );
        }
        let ping = build::icmp4_echo(PORT_MAC, PORT_MAC, LOCAL4, VIP4, 7, 1, b"ping");
        let mut out = ping.clone();
        assert_eq!(from_kernel(&mut out, &s, &mut t, 0), FromKernel::Reply);
        let eth = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(eth.dst(), PORT_MAC);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert_eq!((ip.src(), ip.dst()), (VIP4, LOCAL4));
    }

    /// The probe range means something only on frames from the host: a
    /// client's packet from the port with a source port in it is balanced.
    #[test]
    fn a_client_in_the_probe_port_range_is_balanced() {
        let s = all_up();
        let mut t = table();
        let mut picked = std::collections::HashSet::new();
        for c in 0..64u8 {
            let f = build::tcp4(
                PORT_MAC,
                CLIENT_MAC,
                Ipv4Addr::new(203, 0, 113, c),
                VIP4,
                PROBE_PORT_BASE + 2,
                443,
                SYN,
                b"",
            );
            let mut out = f.clone();
            let Action::Forward { slot, .. } = decide(&mut out, &s, &mut t, 0) else {
                panic!()
            };
            let key = FlowKey::v4(
                [203, 0, 113, c],
                VIP4.octets(),
                PROBE_PORT_BASE + 2,
                443,
                PROTO_TCP,
            );
            assert_eq!(
                Some(slot),
                s.vip(0).unwrap().pick(flow_hash(&key)),
                "Maglev's choice"
            );
            assert_dr_rewrite(&f, &out, slot);
            picked.insert(slot);
        }
        assert!(
            picked.len() > 1,
            "spread over backends, not slot 2 alone: {picked:?}"
        );
    }

    #[test]
    fn what_is_not_a_vip_flow() {
        let s = all_up();
        let mut t = table();
        let cases: Vec<(&str, Vec<u8>, Action)> = vec![
            (
                "unknown VIP port",
                build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 1, 80, SYN, b""),
                Action::Drop(DropReason::UnknownVipPort),
            ),
            (
                "UDP to a TCP VIP",
                build::udp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 1, 443, b""),
                Action::Drop(DropReason::UnknownVipPort),
            ),
            (
                "to our own address",
                build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, LOCAL4, 1, 22, SYN, b""),
                Action::ToKernel,
            ),
            (
                "to another address",
                build::tcp4(
                    PORT_MAC,
                    CLIENT_MAC,
                    CLIENT4,
                    Ipv4Addr::new(192, 0, 2, 200),
                    1,
                    179,
                    SYN,
                    b"",
                ),
                Action::ToKernel,
            ),
            (
                "unicast to another MAC",
                build::tcp4(CLIENT_MAC, PORT_MAC, VIP4, CLIENT4, 443, 1, ACK, b""),
                Action::Drop(DropReason::NotForUs),
            ),
            (
                "ARP for another address",
                build::arp_request(CLIENT_MAC, CLIENT4, Ipv4Addr::new(192, 0, 2, 200)),
                Action::ToKernel,
            ),
            (
                "unknown ethertype",
                build::ethernet(PORT_MAC, CLIENT_MAC, 0x88cc, &[0; 46]),
                Action::ToKernel,
            ),
            (
                "ICMP timestamp request to the VIP",
                build::ethernet(
                    PORT_MAC,
                    CLIENT_MAC,
                    0x0800,
                    &build::ipv4(CLIENT4, VIP4, 1, &[13, 0, 0xf2, 0xff, 0, 0, 0, 0]),
                ),
                Action::Drop(DropReason::IcmpNotForFlow),
            ),
            (
                "echo reply to the VIP",
                build::ethernet(
                    PORT_MAC,
                    CLIENT_MAC,
                    0x0800,
                    &build::ipv4(CLIENT4, VIP4, 1, &[0, 0, 0xff, 0xff, 0, 0, 0, 0]),
                ),
                Action::Drop(DropReason::IcmpNotForFlow),
            ),
            (
                "echo request with a bad checksum",
                build::ethernet(
                    PORT_MAC,
                    CLIENT_MAC,
                    0x0800,
                    &build::ipv4(CLIENT4, VIP4, 1, &[8, 0, 0, 0, 0, 0, 0, 0]),
                ),
                Action::Drop(DropReason::BadChecksum),
            ),
        ];
        for (what, mut f, want) in cases {
            let before = f.clone();
            assert_eq!(decide(&mut f, &s, &mut t, 0), want, "{what}");
            assert_eq!(f, before, "{what}: frame untouched");
        }
    }

    #[test]
    fn malformed_frames_are_counted_drops() {
        let s = all_up();
        let mut t = table();
        let good = syn(40004);
        let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
            ("empty", vec![], DropReason::Truncated),
            ("runt", good[..10].to_vec(), DropReason::Truncated),
            (
                "IPv4 header cut",
                good[..30].to_vec(),
                DropReason::Truncated,
            ),
            ("TCP header cut", good[..40].to_vec(), DropReason::Truncated),
            (
                "bad IHL",
                {
                    let mut f = good.clone();
                    f[14] = 0x44;
                    f
                },
                DropReason::BadHeaderLength,
            ),
            (
                "bad version",
                {
                    let mut f = good.clone();
                    f[14] = 0x65;
                    f
                },
                DropReason::BadVersion,
            ),
            (
                "total length beyond the frame",
                {
                    let mut f = good.clone();
                    f[17] = 200;
                    f
                },
                DropReason::Truncated,
            ),
            (
                "total length below the header",
                {
                    let mut f = good.clone();
                    f[16] = 0;
                    f[17] = 10;
                    f
                },
                DropReason::BadLength,
            ),
            (
                "TCP data offset 4",
                {
                    let mut f = good.clone();
                    f[46] = 0x40;
                    f
                },
                DropReason::BadHeaderLength,
            ),
        ];
        for (what, mut f, want) in cases {
            assert_eq!(decide(&mut f, &s, &mut t, 0), Action::Drop(want), "{what}");
        }
        // A jumbo frame is just a frame.
        let mut jumbo = build::tcp4(
            PORT_MAC,
            CLIENT_MAC,
            CLIENT4,
            VIP4,
            40005,
            443,
            ACK,
            &[0x5a; 8000],
        );
        assert!(matches!(
            decide(&mut jumbo, &s, &mut t, 0),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn multi_segment_packets_are_judged_on_their_whole_length() {
        let s = all_up();
        let mut t = table();
        let jumbo = build::tcp4(
            PORT_MAC,
            CLIENT_MAC,
            CLIENT4,
            VIP4,
            40007,
            443,
            ACK,
            &[0x5a; 8900],
        );
        let first = &jumbo[..2048];
        let c = classify_segmented(first, jumbo.len(), &s);
        let mut seg = first.to_vec();
        assert!(
            matches!(apply(c, &mut seg, &s, &mut t, 0), Action::Forward { .. }),
            "{c:?}"
        );
        assert_eq!(
            classify(first, &s).flow_hash(),
            None,
            "alone, the first segment looks truncated"
        );
        assert!(matches!(
            classify_segmented(first, jumbo.len() - 1, &s),
            Classified::Drop(DropReason::Truncated)
        ));
        let udp = build::udp6(
            PORT_MAC,
            CLIENT_MAC,
            client6(),
            vip6(),
            40000,
            5000,
            &[1; 8900],
        );
        assert!(matches!(
            classify_segmented(&udp[..2048], udp.len(), &s),
            Classified::Flow { .. }
        ));
        assert!(matches!(
            classify_segmented(&udp[..2048], udp.len() - 10, &s),
            Classified::Drop(DropReason::Truncated)
        ));
    }

    #[test]
    fn arp_request_for_vip_or_local_is_answered_in_place() {
        let s = all_up();
        let mut t = table();
        for target in [VIP4, LOCAL4] {
            let mut f = build::arp_request(CLIENT_MAC, CLIENT4, target);
            assert_eq!(decide(&mut f, &s, &mut t, 0), Action::ArpReply);
            let e = EthernetFrame::new_checked(&f[..]).unwrap();
            assert_eq!((e.dst(), e.src()), (CLIENT_MAC, PORT_MAC));
            let a = ArpPacket::new_checked(e.payload()).unwrap();
            assert_eq!(a.op(), crate::packet::arp::OP_REPLY);
            assert_eq!((a.sender_mac(), a.sender_ip()), (PORT_MAC, target));
            assert_eq!((a.target_mac(), a.target_ip()), (CLIENT_MAC, CLIENT4));
        }
    }

    #[test]
    fn neighbor_solicitation_for_vip_is_advertised() {
        let s = all_up();
        let mut t = table();
        let mut f = build::neighbor_solicit(CLIENT_MAC, client6(), vip6());
        let Action::NdAdvert { len } = decide(&mut f, &s, &mut t, 0) else {
            panic!()
        };
        let e = EthernetFrame::new_checked(&f[..len]).unwrap();
        assert_eq!((e.dst(), e.src()), (CLIENT_MAC, PORT_MAC));
        let ip = Ipv6Packet::new_checked(e.payload()).unwrap();
        assert_eq!((ip.src(), ip.dst()), (vip6(), client6()));
        let m = Icmpv6Packet::new_checked(ip.upper_payload()).unwrap();
        assert_eq!(m.msg_type(), icmpv6::NEIGHBOR_ADVERT);
        assert!(m.checksum_ok(&ip.src_bytes(), &ip.dst_bytes()));
        assert_eq!(m.nd_lladdr(), Some(PORT_MAC));
        let mut other =
            build::neighbor_solicit(CLIENT_MAC, client6(), "2001:db8::99".parse().unwrap());
        assert_eq!(decide(&mut other, &s, &mut t, 0), Action::ToKernel);
    }

    #[test]
    fn replies_to_our_requests_are_learned() {
        let s = all_up();
        let mut t = table();
        let backend = MacAddr([2, 0, 0, 0, 0, 0x11]);
        let ip = Ipv4Addr::new(192, 0, 2, 11);
        let mut reply = build::arp_request(backend, ip, LOCAL4);
        crate::packet::arp::ArpPacket::new_checked(&mut reply[14..])
            .unwrap()
            .make_reply(backend);
        reply[..6].copy_from_slice(&PORT_MAC.0);
        // make_reply made `backend` the sender and LOCAL4's asker the target: fix the sender IP.
        reply[28..32].copy_from_slice(&ip.octets());
        let before = reply.clone();
        assert_eq!(
            decide(&mut reply, &s, &mut t, 0),
            Action::Learned {
                ip: IpAddr::V4(ip),
                mac: backend
            }
        );
        assert_eq!(reply, before, "passed on untouched");
        // A reply to someone else is not ours to learn from.
        let mut other = before.clone();
        other[..6].copy_from_slice(&CLIENT_MAC.0);
        assert_eq!(
            decide(&mut other, &s, &mut t, 0),
            Action::Drop(DropReason::NotForUs)
        );

        // IPv6: a solicited advertisement with the target's link-layer address.
        let target: Ipv6Addr = "2001:db8::21".parse().unwrap();
        let mut ns = build::neighbor_solicit(PORT_MAC, "2001:db8::1".parse().unwrap(), target);
        let len = {
            let (eth, rest) = ns.split_at_mut(14);
            let _ = eth;
            icmpv6::write_advert(
                rest,
                backend,
                &target.octets(),
                &Ipv6Addr::from([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]).octets(),
            )
        };
        ns.truncate(14 + len);
        ns[..6].copy_from_slice(&PORT_MAC.0);
        ns[6..12].copy_from_slice(&backend.0);
        assert_eq!(
            decide(&mut ns, &s, &mut t, 0),
            Action::Learned {
                ip: IpAddr::V6(target),
                mac: backend
            }
        );
    }

    /// An ICMP error about a flow of a tunnelled backend reaches it
    /// through its tunnel, the error whole inside.
    #[test]
    fn frag_needed_reaches_a_tunnelled_backend_through_its_tunnel() {
        use crate::tunnel::{Encap, DEFAULT_VXLAN_PORT};
        let encap = Encap::Vxlan {
            port: DEFAULT_VXLAN_PORT,
            vni: 9,
            inner_mac: CLIENT_MAC,
        };
        let s = Snapshot::build(&tunnelled(spec([BackendState::Up; 5]), encap)).unwrap();
        let mut t = table();
        let mut f = syn(3100);
        let Action::Forward { slot, .. } = decide(&mut f, &s, &mut t, 0) else {
            panic!()
        };
        let reply = build::ipv4(VIP4, CLIENT4, 6, &build::tcp(443, 3100, ACK, &[0; 1400], 0));
        let icmp = build::icmp4_frag_needed(
            PORT_MAC,
            MacAddr([2, 0, 0, 0, 0, 0xee]),
            Ipv4Addr::new(203, 0, 113, 1),
            &reply,
            1400,
        );
        let mut buf = in_room(&icmp);
        let mut f = Frame::new(&mut buf, 128, icmp.len()).unwrap();
        assert_eq!(
            decide_frame(&mut f, &s, &mut t, 1),
            Action::IcmpToBackend { vip: 0, slot }
        );
        assert_eq!(f.len(), icmp.len() + 50, "VXLAN's 50 bytes in front");
        assert_eq!(&f[..6], &backend_mac(slot).0, "to the next hop");
        assert_eq!(
            &f[14 + 16..14 + 20],
            &[192, 0, 2, 10 + u8::try_from(slot).unwrap()]
        );
        assert_eq!(
            f[f.len() - (icmp.len() - 14)..],
            icmp[14..],
            "the error, whole"
        );
    }

    #[test]
    fn frag_needed_reaches_the_flows_backend() {
        let s = all_up();
        let mut t = table();
        for sport in 3000..3050 {
            let mut f = syn(sport);
            let Action::Forward { slot: backend, .. } = decide(&mut f, &s, &mut t, 0) else {
                panic!()
            };
            // The backend's reply VIP:443 -> client:sport hit a small MTU.
            let reply = build::ipv4(
                VIP4,
                CLIENT4,
                6,
                &build::tcp(443, sport, ACK, &[0; 1400], 0),
            );
            let icmp = build::icmp4_frag_needed(
                PORT_MAC,
                MacAddr([2, 0, 0, 0, 0, 0xee]),
                Ipv4Addr::new(203, 0, 113, 1),
                &reply,
                1400,
            );
            let mut out = icmp.clone();
            assert_eq!(
                decide(&mut out, &s, &mut t, 1),
                Action::IcmpToBackend {
                    vip: 0,
                    slot: backend
                },
                "sport {sport}"
            );
            assert_dr_rewrite(&icmp, &out, backend);
            // Without a flow entry (another instance, or after a restart) Maglev agrees.
            let mut fresh = icmp.clone();
            assert_eq!(
                decide(&mut fresh, &s, &mut table(), 1),
                Action::IcmpToBackend {
                    vip: 0,
                    slot: backend
                }
            );
        }
    }

    #[test]
    fn packet_too_big_reaches_the_flows_backend() {
        let s = all_up();
        let mut t = table();
        let mut f = build::udp6(PORT_MAC, CLIENT_MAC, client6(), vip6(), 40000, 5000, b"x");
        let Action::Forward { slot: backend, .. } = decide(&mut f, &s, &mut t, 0) else {
            panic!()
        };
        let reply = build::ipv6(
            vip6(),
            client6(),
            17,
            &build::udp(5000, 40000, &[0; 1400], 0),
        );
        let mut ptb = build::icmp6_packet_too_big(
            PORT_MAC,
            CLIENT_MAC,
            "2001:db8::1".parse().unwrap(),
            &reply,
            1280,
        );
        assert_eq!(
            decide(&mut ptb, &s, &mut t, 1),
            Action::IcmpToBackend {
                vip: 1,
                slot: backend
            }
        );
    }

    #[test]
    fn all_fragments_of_a_datagram_reach_one_backend() {
        let s = all_up();
        let mut t = table();
        let mut backends = Vec::new();
        for src in 1..40u8 {
            let client = Ipv4Addr::new(203, 0, 113, src);
            let first = build::udp(5000, 443, &[0; 32], 0);
            let mut pieces = [
                build::ethernet(
                    PORT_MAC,
                    CLIENT_MAC,
                    0x0800,
                    &build::ipv4_fragment(client, VIP4, 6, 0x2000, 7, &first),
                ),
                build::ethernet(
                    PORT_MAC,
                    CLIENT_MAC,
                    0x0800,
                    &build::ipv4_fragment(client, VIP4, 6, 0x2005, 7, &[0; 40]),
                ),
                build::ethernet(
                    PORT_MAC,
                    CLIENT_MAC,
                    0x0800,
                    &build::ipv4_fragment(client, VIP4, 6, 0x000a, 7, &[0; 8]),
                ),
            ];
            let got: Vec<Action> = pieces
                .iter_mut()
                .map(|p| decide(p, &s, &mut t, 0))
                .collect();
            assert!(got.windows(2).all(|w| w[0] == w[1]), "{got:?}");
            let Action::Forward { slot: backend, .. } = got[0] else {
                panic!("{got:?}")
            };
            backends.push(backend);
        }
        backends.sort_unstable();
        backends.dedup();
        assert!(backends.len() > 1, "different datagrams spread");
        assert_eq!(t.stats().active, 0, "no flow entries for fragments");
    }

    #[test]
    fn vlan_tagged_flows_keep_their_tag() {
        let s = all_up();
        let mut t = table();
        let plain = syn(40006);
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        tagged.extend_from_slice(&plain[12..]);
        let before = tagged.clone();
        let Action::Forward { slot: backend, .. } = decide(&mut tagged, &s, &mut t, 0) else {
            panic!()
        };
        assert_dr_rewrite(&before, &tagged, backend);
    }

    /// An echo reply's IP and ICMP checksums verify (through the views).
    fn assert_echo_reply_verifies(f: &[u8]) {
        let e = EthernetFrame::new_checked(f).unwrap();
        match e.ethertype() {
            ETHERTYPE_IPV4 => {
                let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
                assert!(ip.checksum_ok(), "IPv4 header checksum");
                assert!(icmp::checksum_ok(ip.payload()), "ICMP checksum");
                assert_eq!(ip.payload()[0], icmp::ECHO_REPLY);
            }
            ETHERTYPE_IPV6 => {
                let ip = Ipv6Packet::new_checked(e.payload()).unwrap();
                let m = Icmpv6Packet::new_checked(ip.upper_payload()).unwrap();
                assert!(
                    m.checksum_ok(&ip.src_bytes(), &ip.dst_bytes()),
                    "ICMPv6 checksum"
                );
                assert_eq!(m.msg_type(), icmpv6::ECHO_REPLY);
            }
            t => panic!("ethertype {t:#x}"),
        }
    }

    #[test]
    fn echo_request_to_a_vip_is_answered_in_place() {
        let s = all_up();
        let mut t = table();
        let data = b"abcdefghijklmnopqrstuvwabcdefghi";
        // IPv4, with a TTL other than 64 (its header checksum fixed).
        let mut f = build::icmp4_echo(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 0x4242, 17, data);
        f[14 + 8] = 3;
        Ipv4Packet::new_checked(&mut f[14..])
            .unwrap()
            .fill_checksum();
        assert_eq!(decide(&mut f, &s, &mut t, 0), Action::EchoReply);
        // The reply as it must be, built independently: ICMP type 0, the
        // request's identifier, sequence and data, addresses swapped, TTL 64.
        let mut m = vec![icmp::ECHO_REPLY, 0, 0, 0, 0x42, 0x42, 0, 17];
        m.extend_from_slice(data);
        let c = crate::packet::checksum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let want = build::ethernet(
            CLIENT_MAC,
            PORT_MAC,
            0x0800,
            &build::ipv4(VIP4, CLIENT4, 1, &m),
        );
        assert_eq!(f, want, "the exact IPv4 echo reply");
        assert_echo_reply_verifies(&f);

        // IPv6, hop limit 5.
        let mut f = build::icmp6_echo(PORT_MAC, CLIENT_MAC, client6(), vip6(), 0x4242, 18, data);
        f[14 + 7] = 5;
        assert_eq!(decide(&mut f, &s, &mut t, 0), Action::EchoReply);
        let mut m = vec![icmpv6::ECHO_REPLY, 0, 0, 0, 0x42, 0x42, 0, 18];
        m.extend_from_slice(data);
        let len = u32::try_from(m.len()).unwrap();
        let sum = crate::packet::checksum::ipv6_pseudo(
            &vip6().octets(),
            &client6().octets(),
            len,
            PROTO_ICMPV6,
        );
        let c = crate::packet::checksum::finish(crate::packet::checksum::sum(&m, sum));
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let want = build::ethernet(
            CLIENT_MAC,
            PORT_MAC,
            0x86dd,
            &build::ipv6(vip6(), client6(), PROTO_ICMPV6, &m),
        );
        assert_eq!(f, want, "the exact IPv6 echo reply");
        assert_echo_reply_verifies(&f);
        assert_eq!(t.stats().active, 0, "no flow entry for a ping");

        // A corrupted ICMPv6 checksum is not answered.
        let mut bad = build::icmp6_echo(PORT_MAC, CLIENT_MAC, client6(), vip6(), 1, 1, data);
        let at = bad.len() - 1;
        bad[at] ^= 0xff;
        assert_eq!(
            decide(&mut bad, &s, &mut t, 0),
            Action::Drop(DropReason::BadChecksum)
        );
    }

    #[test]
    fn echo_to_other_addresses_or_with_ping_off_is_as_before() {
        let s = all_up();
        let mut t = table();
        let other = Ipv4Addr::new(192, 0, 2, 200);
        for dst in [LOCAL4, other] {
            let mut f = build::icmp4_echo(PORT_MAC, CLIENT_MAC, CLIENT4, dst, 1, 1, b"x");
            let before = f.clone();
            assert_eq!(decide(&mut f, &s, &mut t, 0), Action::ToKernel, "{dst}");
            assert_eq!(f, before);
        }
        let mut f = build::icmp6_echo(
            PORT_MAC,
            CLIENT_MAC,
            client6(),
            "2001:db8::99".parse().unwrap(),
            1,
            1,
            b"x",
        );
        assert_eq!(decide(&mut f, &s, &mut t, 0), Action::ToKernel);

        // Ping off (lbd --no-vip-ping): dropped as every ICMP not for a flow.
        let off = all_up().with_vip_ping(false);
        assert!(!off.vip_ping() && s.vip_ping());
        for mut f in [
            build::icmp4_echo(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 1, 1, b"x"),
            build::icmp6_echo(PORT_MAC, CLIENT_MAC, client6(), vip6(), 1, 1, b"x"),
        ] {
            let before = f.clone();
            assert_eq!(
                decide(&mut f, &off, &mut t, 0),
                Action::Drop(DropReason::IcmpNotForFlow)
            );
            assert_eq!(f, before, "untouched");
        }
        // Spread over segments: its checksum cannot be checked, not answered.
        let big = build::icmp4_echo(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 1, 1, &[7; 3000]);
        assert!(matches!(
            classify_segmented(&big[..2048], big.len(), &s),
            Classified::Drop(DropReason::IcmpNotForFlow)
        ));
        assert!(matches!(classify(&big, &s), Classified::Echo));
    }

    #[test]
    fn the_echo_limiter_allows_a_burst_then_its_rate() {
        // 1000 replies/s, burst 100; time in milliseconds.
        let mut l = EchoLimiter::new(1000, 100, 1000);
        let at = |l: &mut EchoLimiter, now| (0..1000).filter(|_| l.allow(now)).count();
        assert_eq!(at(&mut l, 5), 100, "a full bucket: the burst");
        assert_eq!(at(&mut l, 5), 0, "then nothing at the same instant");
        assert_eq!(at(&mut l, 6), 1, "one per millisecond");
        assert_eq!(at(&mut l, 16), 10, "ten in ten milliseconds");
        assert_eq!(at(&mut l, 10_000), 100, "refilled to the burst, no more");
        // A rate below one per tick accrues over several ticks.
        let mut slow = EchoLimiter::new(2, 1, 1000);
        assert!(slow.allow(1));
        assert!(!slow.allow(400));
        assert!(slow.allow(501), "one per 500 ms");
        assert!(!slow.allow(501));
        // Rate 0: no limit.
        let mut free = EchoLimiter::new(0, 1, 1000);
        assert!((0..10_000).all(|_| free.allow(0)));
        // A clock that goes back earns nothing, and loses nothing.
        let mut l = EchoLimiter::new(1000, 2, 1000);
        assert!(l.allow(100) && l.allow(100) && !l.allow(100));
        assert!(!l.allow(50));
        assert!(l.allow(101));
    }

    #[test]
    fn another_mac_claiming_a_vip_is_a_conflict() {
        let s = all_up();
        let mut t = table();
        let conflict = |ip: IpAddr| Action::VipConflict {
            vip_addr: ip,
            mac: THIEF_MAC,
        };
        let cases: Vec<(&str, Vec<u8>, Action)> = vec![
            (
                "ARP reply for the VIP, to us",
                build::arp(PORT_MAC, OP_REPLY, (THIEF_MAC, VIP4), (PORT_MAC, LOCAL4)),
                conflict(IpAddr::V4(VIP4)),
            ),
            (
                "gratuitous ARP request",
                build::arp(
                    MacAddr::BROADCAST,
                    OP_REQUEST,
                    (THIEF_MAC, VIP4),
                    (MacAddr::ZERO, VIP4),
                ),
                conflict(IpAddr::V4(VIP4)),
            ),
            (
                "gratuitous ARP reply",
                build::arp(
                    MacAddr::BROADCAST,
                    OP_REPLY,
                    (THIEF_MAC, VIP4),
                    (MacAddr::BROADCAST, VIP4),
                ),
                conflict(IpAddr::V4(VIP4)),
            ),
            (
                "ARP request sent from the VIP (no arp_announce)",
                build::arp(
                    MacAddr::BROADCAST,
                    OP_REQUEST,
                    (THIEF_MAC, VIP4),
                    (MacAddr::ZERO, Ipv4Addr::new(192, 0, 2, 254)),
                ),
                conflict(IpAddr::V4(VIP4)),
            ),
            (
                "unsolicited NA for the VIP",
                build::neighbor_advert(
                    MacAddr::ipv6_multicast(&icmpv6::ALL_NODES),
                    THIEF_MAC,
                    vip6(),
                    Ipv6Addr::from(icmpv6::ALL_NODES),
                    vip6(),
                    0x20,
                ),
                conflict(IpAddr::V6(vip6())),
            ),
            (
                "solicited NA for the VIP, to us",
                build::neighbor_advert(
                    PORT_MAC,
                    THIEF_MAC,
                    vip6(),
                    "2001:db8::1".parse().unwrap(),
                    vip6(),
                    0x60,
                ),
                conflict(IpAddr::V6(vip6())),
            ),
            // Not conflicts.
            (
                "ARP reply from a backend: learned as before",
                build::arp(
                    PORT_MAC,
                    OP_REPLY,
                    (backend_mac(1), Ipv4Addr::new(192, 0, 2, 11)),
                    (PORT_MAC, LOCAL4),
                ),
                Action::Learned {
                    ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11)),
                    mac: backend_mac(1),
                },
            ),
            (
                "NA from a backend: learned as before",
                build::neighbor_advert(
                    PORT_MAC,
                    backend_mac(3),
                    "2001:db8::21".parse().unwrap(),
                    "2001:db8::1".parse().unwrap(),
                    "2001:db8::21".parse().unwrap(),
                    0x60,
                ),
                Action::Learned {
                    ip: IpAddr::V6("2001:db8::21".parse().unwrap()),
                    mac: backend_mac(3),
                },
            ),
            (
                "our own gratuitous ARP",
                build::arp(
                    MacAddr::BROADCAST,
                    OP_REQUEST,
                    (PORT_MAC, VIP4),
                    (MacAddr::ZERO, VIP4),
                ),
                Action::ArpReply,
            ),
            (
                "our own NA for the VIP",
                build::neighbor_advert(
                    PORT_MAC,
                    PORT_MAC,
                    vip6(),
                    "2001:db8::1".parse().unwrap(),
                    vip6(),
                    0x60,
                ),
                Action::Learned {
                    ip: IpAddr::V6(vip6()),
                    mac: PORT_MAC,
                },
            ),
            (
                "an ARP probe for the VIP (sender 0.0.0.0) is answered",
                build::arp(
                    MacAddr::BROADCAST,
                    OP_REQUEST,
                    (THIEF_MAC, Ipv4Addr::UNSPECIFIED),
                    (MacAddr::ZERO, VIP4),
                ),
                Action::ArpReply,
            ),
            (
                "gratuitous ARP for another address",
                build::arp(
                    MacAddr::BROADCAST,
                    OP_REQUEST,
                    (THIEF_MAC, Ipv4Addr::new(192, 0, 2, 200)),
                    (MacAddr::ZERO, Ipv4Addr::new(192, 0, 2, 200)),
                ),
                Action::ToKernel,
            ),
        ];
        for (what, mut f, want) in cases {
            let before = f.clone();
            let got = decide(&mut f, &s, &mut t, 0);
            assert_eq!(got, want, "{what}");
            if matches!(got, Action::VipConflict { .. }) {
                assert_eq!(f, before, "{what}: a conflict leaves the frame as it was");
            }
        }
    }

    /// Valid frames of every kind the decision handles: the seed corpus for
    /// the mutation test below.
    fn corpus() -> Vec<Vec<u8>> {
        let reply = build::ipv4(VIP4, CLIENT4, 6, &build::tcp(443, 40000, ACK, &[0; 64], 0));
        let reply6 = build::ipv6(vip6(), client6(), 17, &build::udp(5000, 40000, &[0; 64], 0));
        vec![
            syn(40000),
            build::tcp4(
                PORT_MAC,
                CLIENT_MAC,
                CLIENT4,
                VIP4,
                40000,
                443,
                ACK,
                b"GET / HTTP/1.1",
            ),
            build::udp6(PORT_MAC, CLIENT_MAC, client6(), vip6(), 40000, 5000, b"srt"),
            // QUIC to VIP 1 (in QUIC mode in the mutation run): a short
            // header naming backend 4, Initials of versions 1 and 2.
            build::udp6(
                PORT_MAC,
                CLIENT_MAC,
                client6(),
                vip6(),
                40001,
                5000,
                &[0x41, 0x00, 0x0a, 0x04, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            ),
            build::udp6(
                PORT_MAC,
                CLIENT_MAC,
                client6(),
                vip6(),
                40002,
                5000,
                &[
                    0xc0, 0, 0, 0, 1, 8, 0x00, 0x0a, 0x03, 4, 5, 6, 7, 8, 0, 0, 0,
                ],
            ),
            build::udp6(
                PORT_MAC,
                CLIENT_MAC,
                client6(),
                vip6(),
                40003,
                5000,
                &[
                    0xd0, 0x6b, 0x33, 0x43, 0xcf, 8, 0xc0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0,
                ],
            ),
            build::tcp6(
                PORT_MAC,
                CLIENT_MAC,
                client6(),
                vip6(),
                40000,
                5000,
                SYN,
                b"",
            ),
            build::arp_request(CLIENT_MAC, CLIENT4, VIP4),
            build::neighbor_solicit(CLIENT_MAC, client6(), vip6()),
            build::icmp4_frag_needed(
                PORT_MAC,
                CLIENT_MAC,
                Ipv4Addr::new(203, 0, 113, 1),
                &reply,
                1400,
            ),
            build::icmp6_packet_too_big(
                PORT_MAC,
                CLIENT_MAC,
                "2001:db8::1".parse().unwrap(),
                &reply6,
                1280,
            ),
            build::ethernet(
                PORT_MAC,
                CLIENT_MAC,
                0x0800,
                &build::ipv4_fragment(CLIENT4, VIP4, 17, 0x2000, 1, &[0; 16]),
            ),
            build::icmp4_echo(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 7, 1, b"ping"),
            build::icmp6_echo(PORT_MAC, CLIENT_MAC, client6(), vip6(), 7, 1, b"ping"),
            build::arp(
                MacAddr::BROADCAST,
                OP_REQUEST,
                (THIEF_MAC, VIP4),
                (MacAddr::ZERO, VIP4),
            ),
            build::neighbor_advert(PORT_MAC, THIEF_MAC, vip6(), client6(), vip6(), 0x20),
        ]
    }

    /// The mutation runs' seeded xorshift and its edits of a frame:
    /// truncations, extensions and byte flips.
    struct Mutator(u64);

    #[allow(
        clippy::cast_possible_truncation,
        reason = "random indices and bytes: the low bits of a 64-bit xorshift"
    )]
    impl Mutator {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick(&mut self, corpus: &[Vec<u8>]) -> Vec<u8> {
            corpus[self.next() as usize % corpus.len()].clone()
        }

        fn mutate(&mut self, f: &mut Vec<u8>, edits: u64) {
            for _ in 0..edits {
                match self.next() % 8 {
                    0 => f.truncate(self.next() as usize % (f.len() + 1)),
                    1 => {
                        let n = self.next() % 16;
                        f.extend((0..n).map(|_| self.next() as u8));
                    }
                    _ if !f.is_empty() => {
                        let at = self.next() as usize % f.len();
                        f[at] = self.next() as u8;
                    }
                    _ => {}
                }
            }
        }
    }

    /// A long, seeded mutation run over the corpus: flips, truncations and
    /// extensions of valid frames, through the whole decision. Runs in
    /// every test pass (a fuzzer that needs no nightly toolchain).
    #[test]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "random indices and bytes: the low bits of a 64-bit xorshift"
    )]
    fn mutated_frames_never_break_the_decision() {
        // VIP 1 in QUIC mode, so the QUIC parser meets the mutations too.
        let mut spec = spec([BackendState::Up; 5]);
        spec.vips[1].quic = Some(crate::quic::QuicMode { server_id_len: 2 });
        for b in &mut spec.vips[1].backends {
            let id = 0x0a00 + b.id.slot;
            b.server_id = Some(crate::quic::ServerId::new(&id.to_be_bytes()).unwrap());
        }
        let s = Snapshot::build(&spec).unwrap();
        let mut routes = std::collections::HashSet::new();
        let mut t = table();
        let corpus = corpus();
        let mut rng = Mutator(0x9e37_79b9_7f4a_7c15);
        let mut seen_actions = std::collections::HashSet::new();
        for round in 0..200_000u32 {
            let mut f = rng.pick(&corpus);
            let edits = 1 + rng.next() % 4;
            rng.mutate(&mut f, edits);
            let orig = f.clone();
            let a = decide(&mut f, &s, &mut t, round / 1000);
            match a {
                Action::Forward { slot: backend, .. }
                | Action::IcmpToBackend { slot: backend, .. } => {
                    assert_eq!(&f[..6], &backend_mac(backend).0);
                    assert_eq!(&f[12..], &orig[12..], "only Ethernet addresses change");
                }
                Action::NdAdvert { len } | Action::TooBig { len } => assert!(len <= f.len()),
                Action::ArpReply => assert_eq!(f.len(), orig.len()),
                Action::EchoReply => {
                    assert_eq!(f.len(), orig.len());
                    assert_eq!(&f[..6], &orig[6..12], "back to the asker");
                    assert_eq!(&f[6..12], &PORT_MAC.0);
                    assert_echo_reply_verifies(&f);
                }
                Action::VipConflict { vip_addr, mac } => {
                    assert_eq!(f, orig);
                    assert!(s.is_vip_addr(vip_addr) && mac != PORT_MAC);
                }
                Action::ToKernel | Action::Drop(_) | Action::Learned { .. } => assert_eq!(f, orig),
            }
            seen_actions.insert(std::mem::discriminant(&a));
            if let Action::Forward { quic: Some(r), .. } = a {
                routes.insert(r);
            }
        }
        use crate::quic::Route;
        for r in [
            Route::ById,
            Route::Initial,
            Route::UnknownId,
            Route::Unparsed,
        ] {
            assert!(
                routes.contains(&r),
                "mutations reach QUIC's {r:?}: {routes:?}"
            );
        }
        assert!(
            seen_actions.len() >= 8,
            "mutations reach most outcomes: {}",
            seen_actions.len()
        );
    }

    /// The same mutation run through [`from_kernel`], over the corpus as
    /// the host would send it (from our MAC) and probes of every slot:
    /// never a panic, a frame only rewritten where it is sent on.
    #[test]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "random indices and bytes: the low bits of a 64-bit xorshift"
    )]
    fn mutated_host_frames_never_break_from_kernel() {
        let s = all_up();
        let mut t = table();
        let mut corpus: Vec<Vec<u8>> = corpus()
            .into_iter()
            .map(|mut f| {
                if f.len() >= 12 {
                    f[..6].copy_from_slice(&PORT_MAC.0);
                    f[6..12].copy_from_slice(&PORT_MAC.0);
                }
                f
            })
            .collect();
        corpus.extend((0..8).map(probe4));
        let mut rng = Mutator(0x2545_f491_4f6c_dd1d);
        let mut seen = std::collections::HashSet::new();
        for round in 0..100_000u32 {
            let mut f = rng.pick(&corpus);
            let edits = rng.next() % 3;
            rng.mutate(&mut f, edits);
            let orig = f.clone();
            let r = from_kernel(&mut f, &s, &mut t, round / 1000);
            match r {
                FromKernel::Steered { slot, .. } | FromKernel::Balanced { slot, .. } => {
                    assert_eq!(&f[..6], &backend_mac(slot).0);
                    assert_eq!(&f[12..], &orig[12..], "only Ethernet addresses change");
                }
                FromKernel::Reply => assert_eq!(f.len(), orig.len()),
                FromKernel::Dropped(_) | FromKernel::Unchanged => assert_eq!(f, orig),
            }
            seen.insert(std::mem::discriminant(&r));
        }
        assert!(
            seen.len() >= 4,
            "mutations reach most outcomes: {}",
            seen.len()
        );
    }

    /// Per-packet cost of the decision and rewrite, in release mode:
    /// `cargo test --release -p lb-core decide_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn decide_timing() {
        let s = all_up();
        let mut t = FlowTable::new(1 << 20, FlowConfig::default());
        let n = 200_000u32;
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                build::tcp4(
                    PORT_MAC,
                    CLIENT_MAC,
                    Ipv4Addr::from(0xcb00_0000 | i),
                    VIP4,
                    (i % 60000) as u16 + 1024,
                    443,
                    SYN,
                    b"",
                )
            })
            .collect();
        let mut work = frames.clone();
        let start = std::time::Instant::now();
        for f in work.iter_mut() {
            std::hint::black_box(decide(f, &s, &mut t, 0));
        }
        let new = start.elapsed().as_nanos() as f64 / f64::from(n);
        let mut work = frames.clone();
        let start = std::time::Instant::now();
        for f in work.iter_mut() {
            let a = decide(f, &s, &mut t, 1);
            assert!(matches!(a, Action::Forward { .. }), "{a:?}");
        }
        let est = start.elapsed().as_nanos() as f64 / f64::from(n);
        println!("decide + rewrite: new flow {new:.1} ns, established flow {est:.1} ns ({n} flows, no prefetch, one at a time)");
        // The same with a working set that stays in cache: the decision's own
        // cost. The rewrite put the backend's MAC in each frame: restore ours,
        // or every later round would measure the NotForUs drop instead.
        let mut small = frames[..1000].to_vec();
        let rounds = 200;
        let start = std::time::Instant::now();
        for r in 0..rounds {
            for f in small.iter_mut() {
                f[..6].copy_from_slice(&PORT_MAC.0);
                let a = decide(f, &s, &mut t, 2 + r);
                assert!(matches!(a, Action::Forward { .. }), "{a:?}");
            }
        }
        let hot = start.elapsed().as_nanos() as f64 / f64::from(1000 * rounds);
        println!("decide + rewrite, 1000 established flows in cache: {hot:.1} ns");
    }

    proptest! {
        /// Through tunnelled backends, at a small MTU: any bytes, from the
        /// port or from the host, never panic, and what is sent stays in
        /// its buffer and ends with the packet that came in.
        #[test]
        fn tunnelled_frames_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..1600),
            method in 0u8..3,
            vip in any::<bool>(),
            host in any::<bool>(),
        ) {
            use crate::tunnel::{Encap, DEFAULT_GUE_PORT, DEFAULT_VXLAN_PORT};
            let encap = [
                Encap::Ipip,
                Encap::Gue { port: DEFAULT_GUE_PORT },
                Encap::Vxlan { port: DEFAULT_VXLAN_PORT, vni: 7, inner_mac: CLIENT_MAC },
            ][usize::from(method)];
            let mut sp = tunnelled(spec([BackendState::Up; 5]), encap);
            if matches!(encap, Encap::Ipip) {
                sp.vips.truncate(1);
            }
            let s = Snapshot::build(&sp).unwrap().with_mtu(1400);
            let mut t = table();
            // Half the time a real VIP packet, mutated by the bytes.
            let mut frame = if vip {
                let mut f = build::tcp4(PORT_MAC, CLIENT_MAC, CLIENT4, VIP4, 40000, 443, SYN, &bytes);
                let n = f.len();
                for (i, b) in bytes.iter().take(8).enumerate() {
                    f[(usize::from(*b) * 7 + i) % n] ^= b.rotate_left(3);
                }
                f
            } else {
                bytes.clone()
            };
            let orig = frame.clone();
            let mut buf = in_room(&frame);
            let mut f = Frame::new(&mut buf, 128, frame.len()).unwrap();
            if host {
                match from_kernel(&mut f, &s, &mut t, 0) {
                    FromKernel::Steered { slot, hash } | FromKernel::Balanced { slot, hash, .. } => {
                        let _ = egress(&mut f, &s, slot, || hash);
                    }
                    _ => {}
                }
            } else if let Action::Forward { .. } = decide_frame(&mut f, &s, &mut t, 0) {
                prop_assert!(f.len() > 14);
                // The client's IP packet is the tail, padding cut.
                let tail = &f[f.len() - 20..];
                prop_assert!(orig.windows(20).any(|w| w == tail));
            }
            prop_assert!(f.headroom() + f.len() <= 128 + frame.len());
            frame.clear();
        }

        #[test]
        fn never_panics_and_only_rewrites_what_it_sends(bytes in proptest::collection::vec(any::<u8>(), 0..300), to_us in any::<bool>()) {
            let s = all_up();
            let mut t = table();
            let mut f = bytes.clone();
            if to_us && f.len() >= 6 { f[..6].copy_from_slice(&PORT_MAC.0); }
            let orig = f.clone();
            match decide(&mut f, &s, &mut t, 0) {
                Action::Forward { slot: backend, .. } | Action::IcmpToBackend { slot: backend, .. } => {
                    prop_assert_eq!(&f[..6], &backend_mac(backend).0);
                    prop_assert_eq!(&f[12..], &orig[12..]);
                }
                Action::ArpReply => prop_assert_eq!(f.len(), orig.len()),
                Action::NdAdvert { len } | Action::TooBig { len } => prop_assert!(len <= f.len()),
                Action::EchoReply => {
                    prop_assert_eq!(f.len(), orig.len());
                    prop_assert_eq!(&f[..6], &orig[6..12]);
                    assert_echo_reply_verifies(&f);
                }
                Action::VipConflict { vip_addr, mac } => {
                    prop_assert!(s.is_vip_addr(vip_addr) && mac != PORT_MAC);
                    prop_assert_eq!(f, orig);
                }
                Action::ToKernel | Action::Drop(_) | Action::Learned { .. } => prop_assert_eq!(f, orig),
            }
        }

        /// Valid TCP/UDP to the VIP from any client: always forwarded, always the same backend.
        #[test]
        fn vip_flows_are_stable(src in any::<[u8; 4]>(), sport in 1u16.., udp in any::<bool>()) {
            let s = all_up();
            let mut t = table();
            let client = Ipv4Addr::from(src);
            let frame = |flags| if udp {
                build::udp6(PORT_MAC, CLIENT_MAC, client.to_ipv6_mapped(), vip6(), sport, 5000, b"")
            } else {
                build::tcp4(PORT_MAC, CLIENT_MAC, client, VIP4, sport, 443, flags, b"")
            };
            let first = decide(&mut frame(SYN), &s, &mut t, 0);
            prop_assert!(matches!(first, Action::Forward { new_flow: true, .. }), "{:?}", first);
            for now in 1..4 {
                let again = decide(&mut frame(ACK), &s, &mut t, now);
                let (Action::Forward { slot: a, .. }, Action::Forward { slot: b, .. }) = (first, again) else { panic!() };
                prop_assert_eq!(a, b);
            }
        }
    }
}
