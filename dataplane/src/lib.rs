//! The dataplane: everything a worker core does. `dpdk` is the only module
//! with `unsafe`; the rest is safe Rust over packet bytes.

pub mod delay;
pub mod dpdk;
pub mod flow;
pub mod forward;
pub mod maglev;
pub mod neigh;
pub mod packet;
pub mod snapshot;
pub mod stats;
pub mod vip_index;
pub mod worker;
