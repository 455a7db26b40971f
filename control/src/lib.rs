//! The control side of the load balancer, as a library for `lbd` (and its
//! tests): the configuration file format and the validated desired state
//! with its persistence, and route announcement. The gRPC API is built on
//! [`state`].

pub mod announce;
pub mod config;
pub mod persist;
pub mod state;
