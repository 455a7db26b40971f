//! Shared by the integration tests of the workspace and the bench:
//! [`eal`], the EAL arguments every DPDK test process uses, [`lab`], the
//! Rust driver of `scripts/lab.sh` (the one lab of network namespaces that
//! the demo and the end-to-end tests run on), [`exposition`], lbd's metrics
//! read as Prometheus reads them, and [`probe`], the API probe's empty and
//! hostile requests with the status each must get.

pub mod eal;
pub mod exposition;
pub mod lab;
pub mod probe;
