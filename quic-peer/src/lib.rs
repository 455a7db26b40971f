//! quic-peer: a QUIC server and client (quinn) for the lab's tests of
//! lbd's QUIC mode (issue #19). A test tool: the client trusts any
//! certificate.
//!
//! [`cid`] is the part meant to be copied: a connection-ID generator that
//! puts the server's id where lbd looks for it.

pub mod cid;
