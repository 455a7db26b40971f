//! A VIP's QUIC mode as the control side checks it: the mode itself, and
//! its backends' server ids taken together (the dataplane's snapshot
//! refuses the same, but without naming the request's fields).

use std::collections::HashMap;
use std::net::IpAddr;

use lb_core::quic::{QuicMode, MAX_SERVER_ID_LEN};
use lb_core::snapshot::{Proto, VipKey};

use crate::state::{BackendSettings, StateError};

fn invalid(field: &'static str, reason: String) -> StateError {
    StateError::Invalid { field, reason }
}

/// QUIC mode on a UDP VIP, with a server id length of 1 to 15 bytes.
pub fn check_quic_mode(key: &VipKey, quic: Option<QuicMode>) -> Result<(), StateError> {
    let Some(q) = quic else {
        return Ok(());
    };
    if key.proto != Proto::Udp {
        return Err(invalid(
            "vip.quic_server_id_len",
            format!("vip {key}: QUIC mode is for UDP VIPs only"),
        ));
    }
    if !(1..=MAX_SERVER_ID_LEN).contains(&q.server_id_len) {
        return Err(invalid(
            "vip.quic_server_id_len",
            format!(
                "vip {key}: {} is not 1-{MAX_SERVER_ID_LEN} bytes (0: QUIC mode off)",
                q.server_id_len
            ),
        ));
    }
    Ok(())
}

/// In QUIC mode, every backend has a server id of the VIP's length, each
/// its own. One without would issue connection IDs of its own choosing,
/// which may name another backend's id and be routed there. Off: nothing
/// to check (the ids are kept, unused).
pub fn check_quic_backends<'a>(
    key: &VipKey,
    quic: Option<QuicMode>,
    backends: impl Iterator<Item = (&'a IpAddr, &'a BackendSettings)>,
) -> Result<(), StateError> {
    let Some(q) = quic else {
        return Ok(());
    };
    let mut seen: HashMap<u128, &IpAddr> = HashMap::new();
    for (addr, s) in backends {
        let Some(id) = s.server_id else {
            return Err(invalid(
                "backend.server_id",
                format!(
                    "vip {key}, backend {addr}: has no server id, and every backend of a QUIC \
                     VIP needs one ({} bytes, hex): a backend issuing connection IDs of its own \
                     could have them routed to another backend",
                    q.server_id_len
                ),
            ));
        };
        if id.len() != q.server_id_len {
            return Err(invalid(
                "backend.server_id",
                format!(
                    "vip {key}, backend {addr}: server id {id} is {} bytes, the VIP's \
                     quic_server_id_len is {}",
                    id.len(),
                    q.server_id_len
                ),
            ));
        }
        if let Some(other) = seen.insert(id.value(), addr) {
            return Err(invalid(
                "backend.server_id",
                format!("vip {key}, backend {addr}: server id {id} is already backend {other}'s"),
            ));
        }
    }
    Ok(())
}
