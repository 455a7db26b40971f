//! The dataplane: what runs on a worker core and touches DPDK. `dpdk` is the
//! only module with `unsafe`; [`worker`] is the poll loop over it, calling
//! the pure decision in `lb-core`.

pub mod dpdk;
pub mod worker;
