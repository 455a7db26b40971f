//! Shared by the integration tests of the workspace (a dev-dependency
//! only): [`eal`], the EAL arguments every DPDK test process uses, and
//! [`lab`], the Rust driver of `scripts/lab.sh` (the one lab of network
//! namespaces that the demo and the end-to-end tests run on), and
//! [`exposition`], lbd's metrics read as Prometheus reads them.

pub mod eal;
pub mod exposition;
pub mod lab;
