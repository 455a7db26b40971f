//! Shared by the DPDK integration tests of this directory.
pub mod eal;
