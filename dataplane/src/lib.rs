//! The dataplane: what runs on a worker core and touches DPDK. `dpdk` is the
//! only module with `unsafe`; [`worker`] is the poll loop over it, calling
//! the pure decision in `lb-core`.

// Casts that can lose bits or change sign say so (Firecracker's rule): each
// one is a `From`/`try_from`, or an `as` under an `allow` naming the bound.
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod dpdk;
pub mod worker;
