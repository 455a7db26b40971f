//! Connection IDs a QUIC load balancer can route: the working example of
//! a server-side generator for a VIP in lbd's QUIC mode (issue #19), for
//! quinn's [`ConnectionIdGenerator`]. Copy it into your server.
//!
//! lbd routes every packet of a QUIC VIP by the server id its destination
//! connection ID carries, in the plaintext layout of QUIC-LB
//! (draft-ietf-quic-load-balancers):
//!
//! ```text
//! CID byte 0:        2 config-rotation bits (00) | 6 bits the server may use (random here);
//!                    lbd does not read this byte (servers fill it as they like)
//! CID bytes 1..=len: the server id, big-endian (len = the VIP's --quic-server-id-len)
//! CID rest:          random, so that an observer cannot link a connection's IDs
//! ```
//!
//! The server id is the one given to lbd for this backend
//! (`lbctl backend add VIP ADDR --server-id 0a01`), `len` the VIP's
//! server-id length (`lbctl vip add VIP/udp --quic-server-id-len 2`). Every
//! ID the server issues has this layout: the one it picks during the
//! handshake, and every one it hands out later in NEW_CONNECTION_ID frames,
//! which the client uses after it moves to another address or port. So
//! whatever the client's 5-tuple, lbd finds the server from the ID alone.
//!
//! Install it on the endpoint:
//!
//! ```
//! use quic_peer::cid::QuicLbConnectionIdGenerator;
//!
//! let server_id = vec![0x0a, 0x01];
//! let mut config = quinn::EndpointConfig::default();
//! config.cid_generator(move || {
//!     Box::new(QuicLbConnectionIdGenerator::new(server_id.clone(), 8).expect("id fits"))
//! });
//! ```
//!
//! Two more things a deployment behind lbd wants, neither part of the
//! generator:
//!
//! - The same stateless-reset key on every server of the VIP
//!   ([`quinn::EndpointConfig::new`] takes it). When a server is down, lbd
//!   sends its connections' packets to another server, which knows no such
//!   connection and answers with a stateless reset; with the shared key the
//!   token is the one the client was given, so the client stops at once
//!   instead of waiting out its idle timeout.
//! - No [`ConnectionIdGenerator::validate`] that rejects other servers' ids:
//!   quinn drops a packet whose ID fails it without answering, so no reset
//!   would be sent. The default (accept any) is kept here.

use std::time::Duration;

use quinn::{ConnectionId, ConnectionIdGenerator};
use ring::rand::{SecureRandom, SystemRandom};

/// The longest server id the plaintext layout allows.
pub const MAX_SERVER_ID_LEN: usize = 15;
/// The longest connection ID of QUIC versions 1 and 2.
pub const MAX_CID_LEN: usize = 20;

/// Issues connection IDs of `cid_len` bytes carrying `server_id` in bytes
/// `1..=server_id.len()`, byte 0's rotation bits `00`, the rest random.
#[derive(Debug, Clone)]
pub struct QuicLbConnectionIdGenerator {
    server_id: Vec<u8>,
    cid_len: usize,
    rng: SystemRandom,
}

/// A server id or connection ID length the layout cannot hold.
#[derive(Debug, PartialEq, Eq)]
pub struct LayoutError(pub String);

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LayoutError {}

impl QuicLbConnectionIdGenerator {
    /// `server_id`: 1 to 15 bytes; `cid_len`: the IDs' length, room for
    /// byte 0, the id and at least 4 random bytes (8 is plenty for a
    /// 2-byte id), at most 20.
    pub fn new(server_id: Vec<u8>, cid_len: usize) -> Result<Self, LayoutError> {
        if server_id.is_empty() || server_id.len() > MAX_SERVER_ID_LEN {
            return Err(LayoutError(format!(
                "a server id is 1 to {MAX_SERVER_ID_LEN} bytes, not {}",
                server_id.len()
            )));
        }
        let least = 1 + server_id.len() + 4;
        if !(least..=MAX_CID_LEN).contains(&cid_len) {
            return Err(LayoutError(format!(
                "a connection ID with a {}-byte server id is {least} to {MAX_CID_LEN} bytes, not {cid_len}",
                server_id.len()
            )));
        }
        Ok(Self {
            server_id,
            cid_len,
            rng: SystemRandom::new(),
        })
    }

    /// The bytes of one new ID.
    pub fn bytes(&self) -> Vec<u8> {
        let mut cid = vec![0u8; self.cid_len];
        self.rng
            .fill(&mut cid)
            .expect("the system's random number generator");
        // Config rotation 00 in the top two bits; the low six stay random.
        cid[0] &= 0b0011_1111;
        cid[1..=self.server_id.len()].copy_from_slice(&self.server_id);
        cid
    }
}

impl ConnectionIdGenerator for QuicLbConnectionIdGenerator {
    fn generate_cid(&mut self) -> ConnectionId {
        ConnectionId::new(&self.bytes())
    }

    fn cid_len(&self) -> usize {
        self.cid_len
    }

    /// IDs never expire (quinn would retire and replace them otherwise;
    /// the replacements would carry the id as well).
    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A server id from hex digits ("0a01"), as lbctl takes it.
pub fn parse_server_id(hex: &str) -> Result<Vec<u8>, LayoutError> {
    let digits = hex.strip_prefix("0x").unwrap_or(hex);
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(LayoutError(format!(
            "a server id is hex digits, two a byte: {hex:?}"
        )));
    }
    Ok((0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("checked hex digits"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_the_server_id_after_rotation_bits_00() {
        let mut g = QuicLbConnectionIdGenerator::new(vec![0x0a, 0x01], 8).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let cid = g.generate_cid();
            assert_eq!(cid.len(), 8);
            assert_eq!(cid[0] >> 6, 0, "rotation bits 00: {cid:?}");
            assert_eq!(&cid[1..3], &[0x0a, 0x01]);
            seen.insert(cid[3..].to_vec());
        }
        assert!(
            seen.len() > 190,
            "the rest is random: {} distinct",
            seen.len()
        );
    }

    #[test]
    fn lengths_and_hex() {
        assert!(QuicLbConnectionIdGenerator::new(vec![], 8).is_err());
        assert!(QuicLbConnectionIdGenerator::new(vec![1; 16], 20).is_err());
        assert!(QuicLbConnectionIdGenerator::new(vec![1, 2], 6).is_err());
        assert!(QuicLbConnectionIdGenerator::new(vec![1, 2], 21).is_err());
        assert!(QuicLbConnectionIdGenerator::new(vec![1; 15], 20).is_ok());
        assert_eq!(parse_server_id("0a01").unwrap(), vec![0x0a, 0x01]);
        assert_eq!(parse_server_id("0x0A").unwrap(), vec![0x0a]);
        assert!(parse_server_id("a01").is_err());
        assert!(parse_server_id("zz").is_err());
        assert!(parse_server_id("").is_err());
    }
}
