//! The pure forwarding core of the load balancer: everything a worker
//! decides, with no DPDK, no I/O, no clock and no allocation on the packet
//! path. Time (seconds for the flow table, the TSC stamp of a snapshot) and
//! memory (the flow table's backing store) are passed in by the caller, as in
//! quinn-proto, so this crate builds, tests, fuzzes and benchmarks on a
//! machine without libdpdk, libclang or hugepages.
//!
//! - [`packet`]: zero-copy views of Ethernet, ARP, IPv4/6, TCP/UDP, ICMP/v6.
//! - [`maglev`]: the weighted Maglev table.
//! - [`vip_index`]: VIP address lookup.
//! - [`snapshot`]: the immutable forwarding state and its publisher.
//! - [`flow`]: the per-worker flow table.
//! - [`neigh`]: backend MAC resolution state.
//! - [`forward`]: the decision, packet bytes + snapshot + flow table -> action.
//! - [`quic`]: QUIC headers and server ids, for VIPs that route by connection ID.
//! - [`tunnel`]: IPIP, GUE and VXLAN encapsulation, ICMP too-big; [`frame`]: a frame with room before it.
//! - [`stats`]: the counters (declared once), drop reasons; [`delay`]: delay histograms.

#![forbid(unsafe_code)]
// Casts that can lose bits or change sign say so (Firecracker's rule): each
// one is a `From`/`try_from`, or an `as` under an `allow` naming the bound.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod counter;
pub mod delay;
pub mod drop_reason;
pub mod flow;
pub mod forward;
pub mod frame;
pub mod maglev;
pub mod neigh;
pub mod packet;
pub mod quic;
pub mod snapshot;
pub mod stats;
pub mod tunnel;
pub mod vip_index;
