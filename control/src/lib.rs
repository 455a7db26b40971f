//! The control side of the load balancer, as a library for `lbd` (and its
//! tests): the configuration file format and the validated desired state
//! with its persistence. The gRPC API (issue #4) is built on [`state`].

pub mod config;
pub mod state;
