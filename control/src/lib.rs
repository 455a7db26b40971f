//! `lbd`, the load balancer daemon, as a library: `main.rs` parses the
//! arguments and wires these parts; the tests build the hub, the API and
//! the metrics without EAL.
//!
//! - [`args`]: the command line.
//! - [`config`], [`state`], [`persist`]: the state file's format, the
//!   validated desired state, and durable file replacement.
//! - [`quic`]: a VIP's QUIC mode and its backends' server ids, checked
//!   together.
//! - [`startup`]: the part that needs EAL (the port, the exception
//!   interface, the workers on their lcores).
//! - [`hub`]: the control hub, [`hub::Control`]: desired state, health
//!   verdicts, neighbours, the snapshot publisher, queued changes.
//! - [`commit`]: group commit of changes to the snapshot and the state file.
//! - [`monitor`]: graceful stop, idle stop, the stalled-worker watchdog.
//! - [`health`]: active health checks.
//! - [`announce`]: route announcement to a BGP speaker.
//! - [`grpc`], [`metrics`], [`listeners`]: the API, the Prometheus
//!   exposition, and their listeners.
//! - [`report`]: the exit report.
//! - [`reload`]: SIGHUP, the state file read again as one change.
//! - [`notify`]: systemd's readiness and watchdog notifications.
//! - [`logging`]: the log's formats.
//! - [`traffic`]: per-backend and per-VIP counters that only go up.
//! - [`http`]: the metrics listener's endpoints (`/metrics`, `/healthz`, `/readyz`).
//! - [`vip_routes`]: the host's routes to the VIPs through the exception
//!   interface, for health checks via the VIP.

pub mod announce;
pub mod args;
pub mod commit;
pub mod config;
pub mod feedback;
pub mod grpc;
pub mod health;
pub mod http;
pub mod hub;
pub mod listeners;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod persist;
pub mod quic;
pub mod reload;
pub mod report;
pub mod startup;
pub mod state;
pub mod traffic;
pub mod vip_routes;
