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

#[cfg(test)]
mod tests {
    use lb_core::packet::MacAddr;
    use lb_core::quic::ServerId;
    use lb_core::snapshot::{Snapshot, VipKey};

    use super::*;
    use crate::config::Config;
    use crate::state::{DesiredState, DrainFlows};

    const HEAD: &str = "[[vip]]\naddress = \"198.51.100.10\"\nport = 443\nprotocol = \"udp\"\n";

    fn load(text: &str) -> Result<DesiredState, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        DesiredState::load(&c).map_err(|e| e.to_string())
    }

    fn backend(last: u8, id: Option<&str>) -> String {
        let id = id.map_or(String::new(), |i| format!("server_id = \"{i}\"\n"));
        format!("[[vip.backend]]\naddress = \"192.0.2.{last}\"\n{id}")
    }

    fn key() -> VipKey {
        VipKey {
            addr: "198.51.100.10".parse().unwrap(),
            port: 443,
            proto: Proto::Udp,
        }
    }

    fn sid(hex: &str) -> Option<ServerId> {
        Some(ServerId::from_hex(hex).unwrap())
    }

    #[test]
    fn the_state_file_round_trips_to_the_snapshot() {
        let text = format!(
            "{HEAD}quic_server_id_len = 2\ndrain_flows = \"move\"\n{}{}",
            backend(11, Some("0a01")),
            backend(12, Some("0x0A02"))
        );
        let s = load(&text).unwrap();
        let saved = toml::to_string(&s.to_config()).unwrap();
        for want in [
            "quic_server_id_len = 2",
            "drain_flows = \"move\"",
            "server_id = \"0a01\"",
            "server_id = \"0a02\"",
        ] {
            assert!(saved.contains(want), "{want}: {saved}");
        }
        assert_eq!(load(&saved).unwrap().to_config(), s.to_config());
        let spec = s.to_spec(1, MacAddr([2, 0, 0, 0, 0, 1]), |_| None);
        let v = &spec.vips[0];
        assert_eq!(v.quic, Some(QuicMode { server_id_len: 2 }));
        assert_eq!(v.drain, lb_core::snapshot::DrainFlows::Move);
        assert_eq!(v.backends[1].server_id, sid("0a02"));
        Snapshot::build(&spec).unwrap();
        // The defaults are not written.
        let plain = toml::to_string(
            &load(&format!("{HEAD}{}", backend(11, None)))
                .unwrap()
                .to_config(),
        )
        .unwrap();
        assert!(
            !plain.contains("quic")
                && !plain.contains("drain_flows")
                && !plain.contains("server_id"),
            "{plain}"
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let on = format!("{HEAD}quic_server_id_len = 2\n");
        for (text, want) in [
            (
                HEAD.replace("udp", "tcp") + "quic_server_id_len = 2\n",
                "vip.quic_server_id_len: vip 198.51.100.10:443/tcp: QUIC mode is for UDP VIPs only",
            ),
            (
                format!("{HEAD}quic_server_id_len = 16\n"),
                "vip.quic_server_id_len: vip 198.51.100.10:443/udp: 16 is not 1-15",
            ),
            (
                format!("{on}{}", backend(11, Some("0g01"))),
                "backend.server_id: vip 198.51.100.10:443/udp, backend 192.0.2.11: a server id is written in hex",
            ),
            (
                format!("{on}{}", backend(11, Some("0a0102"))),
                "backend.server_id: vip 198.51.100.10:443/udp, backend 192.0.2.11: server id 0a0102 is 3 bytes, the VIP's quic_server_id_len is 2",
            ),
            (
                format!("{on}{}{}", backend(11, Some("0a01")), backend(12, Some("0a01"))),
                "backend.server_id: vip 198.51.100.10:443/udp, backend 192.0.2.12: server id 0a01 is already backend 192.0.2.11's",
            ),
            (
                format!("{on}{}", backend(11, None)),
                "backend.server_id: vip 198.51.100.10:443/udp, backend 192.0.2.11: has no server id, and every backend of a QUIC VIP needs one",
            ),
            (format!("{HEAD}drain_flows = \"later\"\n"), "drain_flows"),
        ] {
            let e = load(&text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        // Off, ids of any length are kept, unchecked.
        load(&format!(
            "{HEAD}{}{}",
            backend(11, Some("0a")),
            backend(12, Some("0a"))
        ))
        .unwrap();
    }

    #[test]
    fn changes_are_checked_against_the_vip_and_off_is_always_allowed() {
        let mut s = load(&format!(
            "{HEAD}quic_server_id_len = 2\n{}{}",
            backend(11, Some("0a01")),
            backend(12, Some("0a02"))
        ))
        .unwrap();
        let field = |e: StateError| match e {
            StateError::Invalid { field, .. } => field,
            e => panic!("{e}"),
        };
        let a11: IpAddr = "192.0.2.11".parse().unwrap();
        let a12: IpAddr = "192.0.2.12".parse().unwrap();
        let settings = |id: &str| BackendSettings {
            server_id: sid(id),
            ..BackendSettings::default()
        };
        let before = s.clone();
        let e = s
            .update_backend(&key(), &a12, settings("0a01"))
            .unwrap_err();
        assert_eq!(field(e), "backend.server_id");
        let e = s
            .add_backend(
                &key(),
                "192.0.2.13".parse().unwrap(),
                BackendSettings::default(),
            )
            .unwrap_err();
        assert_eq!(field(e), "backend.server_id");
        let e = s
            .set_vip_quic(&key(), Some(QuicMode { server_id_len: 3 }))
            .unwrap_err();
        assert_eq!(field(e), "backend.server_id");
        assert_eq!(s, before, "refusals change nothing");
        // Two backends swap their ids in one change.
        let swap = [(a11, settings("0a02")), (a12, settings("0a01"))].into();
        s.set_backends(&key(), &swap).unwrap();
        assert_eq!(
            s.vips()[&key()].backends[&a11].settings.server_id,
            sid("0a02")
        );
        // Off: always, the ids stay; a backend without one is then fine.
        s.set_vip_quic(&key(), None).unwrap();
        s.add_backend(
            &key(),
            "192.0.2.13".parse().unwrap(),
            BackendSettings::default(),
        )
        .unwrap();
        assert_eq!(
            s.vips()[&key()].backends[&a12].settings.server_id,
            sid("0a01")
        );
        let e = s
            .set_vip_quic(&key(), Some(QuicMode { server_id_len: 2 }))
            .unwrap_err();
        assert!(e.to_string().contains("192.0.2.13"), "{e}");
        s.set_vip_drain(&key(), DrainFlows::Move).unwrap();
        assert_eq!(s.vips()[&key()].drain, DrainFlows::Move);
    }

    #[test]
    fn the_digest_and_export_carry_them() {
        let text = |len: u8, drain: &str, id: &str| {
            format!(
                "{HEAD}quic_server_id_len = {len}\ndrain_flows = \"{drain}\"\n{}",
                backend(11, Some(id))
            )
        };
        let base = load(&text(1, "keep", "0a")).unwrap();
        for other in [
            text(2, "keep", "0a0b"),
            text(1, "move", "0a"),
            text(1, "keep", "0b"),
            text(0, "keep", "0a"),
        ] {
            let o = load(&other).unwrap();
            assert_ne!(o.digest(), base.digest(), "{other}");
            // Apply: the exported file converges another instance to it.
            let exported = toml::to_string(&o.shared_config()).unwrap();
            let mut running = base.clone();
            let changes = running
                .converge(&DesiredState::load(&toml::from_str(&exported).unwrap()).unwrap())
                .unwrap();
            assert!(!changes.is_empty(), "{other}");
            assert_eq!(running.digest(), o.digest(), "{other}");
        }
        // Into QUIC mode with new ids of the new length, in one Apply.
        let mut running = load(&text(0, "keep", "0a")).unwrap();
        running
            .converge(&load(&text(3, "keep", "0a0b0c")).unwrap())
            .unwrap();
        assert_eq!(
            running.vips()[&key()].quic,
            Some(QuicMode { server_id_len: 3 })
        );
    }
}
