//! The typed configuration (`lb.v1.Config`: Apply, SetBackends, Export) to
//! and from the desired state, validated as the single-object calls are;
//! an error names its field's path in the request
//! (`config.vips[0].backends[1].mac`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use lb_core::flow::IdleTimeouts;
use lb_core::snapshot::VipKey;
use lb_proto::v1 as pb;
use tonic::Status;

use super::{
    backend_addr_at, check_at, drain_flows_at, forward_at, invalid, load_at, mac_at, pb_agent,
    pb_check, pb_drain_flows, pb_forward, pb_key, quic_at, server_id_at, sources_at, status,
    vip_key_at,
};
use crate::hub::ChangeError;
use crate::state::{check_backend_addr, check_settings, BackendSettings, DesiredState, StateError};

/// A refusal of the state's checks, its field rewritten into the request's
/// path: `vip.*` of the VIP at `vip_at` (its `key`, but `table_size`), and
/// `backend.*` of the backend at `backend_at`.
fn at(e: StateError, vip_at: &str, backend_at: Option<&str>) -> Status {
    match e {
        StateError::Invalid { field, reason } => {
            let path = match (field.strip_prefix("backend"), backend_at) {
                (Some(rest), Some(b)) => format!("{b}{rest}"),
                _ => match field {
                    "vip.table_size" => format!("{vip_at}.table_size"),
                    "vip.tunnel_sources" => format!("{vip_at}.tunnel_sources"),
                    "vip.quic_server_id_len" => format!("{vip_at}.quic_server_id_len"),
                    f => match f.strip_prefix("vip") {
                        Some(rest) => format!("{vip_at}.key{rest}"),
                        None => format!("{vip_at}.{f}"),
                    },
                },
            };
            invalid(&path, reason)
        }
        // Given twice in one request: the request is what is wrong.
        StateError::AlreadyExists { kind, name } => invalid(
            backend_at.unwrap_or(vip_at),
            format!("{kind} {name} is given twice"),
        ),
        e => status(ChangeError::State(e)),
    }
}

fn timeout(v: u32, field: &str) -> Result<u16, Status> {
    u16::try_from(v).map_err(|_| invalid(field, format!("{v} is above 65535 seconds")))
}

/// One backend of `vip` and its settings, validated; `at_path` is its path.
fn backend(
    b: pb::BackendConfig,
    vip: &VipKey,
    at_path: &str,
) -> Result<(IpAddr, BackendSettings), Status> {
    let addr = backend_addr_at(&b.address, at_path)?;
    check_backend_addr(vip, &addr).map_err(|e| at(e, at_path, Some(at_path)))?;
    let (forward, tunnel_port, vni) = forward_at(b.forward, b.tunnel_port, b.vni, at_path)?;
    let settings = BackendSettings {
        weight: b.weight.unwrap_or(1),
        mac: mac_at(&b.mac, at_path)?,
        forward,
        tunnel_port,
        vni,
        server_id: server_id_at(&b.server_id, at_path)?,
        drain: b.drain,
        down: b.down,
        check: b.check.map(|c| check_at(c, at_path)).transpose()?,
        load: load_at(b.agent, b.max_flows, b.min_flows, at_path)?,
    };
    check_settings(&settings).map_err(|e| at(e, at_path, Some(at_path)))?;
    Ok((addr, settings))
}

/// The backends of `vip` (`field`: their path), each address once.
pub fn backends(
    list: Vec<pb::BackendConfig>,
    vip: &VipKey,
    field: &str,
) -> Result<BTreeMap<IpAddr, BackendSettings>, Status> {
    let mut out = BTreeMap::new();
    for (j, b) in list.into_iter().enumerate() {
        let path = format!("{field}[{j}]");
        let (addr, settings) = backend(b, vip, &path)?;
        if out.insert(addr, settings).is_some() {
            return Err(invalid(
                &format!("{path}.address"),
                format!("{addr} is given twice"),
            ));
        }
    }
    Ok(out)
}

/// The desired state `config` describes (no local addresses: they are the
/// instance's own).
pub fn desired_state(config: pb::Config) -> Result<DesiredState, Status> {
    let mut s = DesiredState::default();
    for (i, v) in config.vips.into_iter().enumerate() {
        let vip_at = format!("config.vips[{i}]");
        let key: VipKey = vip_key_at(v.key, &format!("{vip_at}.key"))?;
        let table_size = (v.table_size != 0).then_some(v.table_size);
        s.create_vip(key, table_size)
            .map_err(|e| at(e, &vip_at, None))?;
        let idle = IdleTimeouts {
            tcp: timeout(
                v.tcp_idle_timeout_s,
                &format!("{vip_at}.tcp_idle_timeout_s"),
            )?,
            udp: timeout(
                v.udp_idle_timeout_s,
                &format!("{vip_at}.udp_idle_timeout_s"),
            )?,
        };
        s.set_idle_timeouts(&key, idle)
            .map_err(|e| at(e, &vip_at, None))?;
        let sources = sources_at(&v.tunnel_sources, &format!("{vip_at}.tunnel_sources"))?;
        s.set_vip_tunnel_sources(&key, sources)
            .map_err(|e| at(e, &vip_at, None))?;
        // On the empty VIP: each backend is checked against it as added.
        s.set_vip_quic(&key, quic_at(v.quic_server_id_len, &vip_at)?)
            .map_err(|e| at(e, &vip_at, None))?;
        s.set_vip_drain(&key, drain_flows_at(v.drain_flows, &vip_at)?)
            .map_err(|e| at(e, &vip_at, None))?;
        let field = format!("{vip_at}.backends");
        for (j, b) in v.backends.into_iter().enumerate() {
            let path = format!("{field}[{j}]");
            let (addr, settings) = backend(b, &key, &path)?;
            s.add_backend(&key, addr, settings)
                .map_err(|e| at(e, &vip_at, Some(&path)))?;
        }
    }
    Ok(s)
}

/// A backend's settings as the API's typed configuration.
pub fn pb_backend_config(addr: &IpAddr, s: &BackendSettings) -> pb::BackendConfig {
    pb::BackendConfig {
        address: addr.to_string(),
        weight: Some(s.weight),
        mac: s.mac.map(|m| m.to_string()).unwrap_or_default(),
        forward: pb_forward(s.forward) as i32,
        tunnel_port: s.tunnel_port.map_or(0, u32::from),
        vni: s.vni.unwrap_or(0),
        server_id: s.server_id.map(|id| id.to_string()).unwrap_or_default(),
        drain: s.drain,
        down: s.down,
        check: s.check.as_ref().map(pb_check),
        agent: s.load.agent.as_ref().map(pb_agent),
        max_flows: s.load.max_flows.unwrap_or(0),
        min_flows: s.load.min_flows.unwrap_or(0),
    }
}

/// The typed form of what Export carries.
pub fn pb_config(s: &DesiredState) -> pb::Config {
    pb::Config {
        vips: s
            .vips()
            .iter()
            .map(|(key, v)| pb::VipConfig {
                key: Some(pb_key(key)),
                table_size: v.table_size,
                tcp_idle_timeout_s: u32::from(v.idle.tcp),
                udp_idle_timeout_s: u32::from(v.idle.udp),
                tunnel_sources: v.tunnel_sources.iter().map(ToString::to_string).collect(),
                quic_server_id_len: v.quic.map_or(0, |q| u32::from(q.server_id_len)),
                drain_flows: pb_drain_flows(v.drain) as i32,
                backends: v
                    .backends
                    .iter()
                    .map(|(addr, b)| pb_backend_config(addr, &b.settings))
                    .collect(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;
    use tonic_types::StatusExt;

    fn key(port: u32) -> Option<pb::VipKey> {
        Some(pb::VipKey {
            address: "198.51.100.10".into(),
            port,
            protocol: pb::Protocol::Tcp as i32,
        })
    }

    fn backend_config(address: &str) -> pb::BackendConfig {
        pb::BackendConfig {
            address: address.into(),
            ..Default::default()
        }
    }

    fn vip(port: u32, backends: Vec<pb::BackendConfig>) -> pb::VipConfig {
        pb::VipConfig {
            key: key(port),
            backends,
            ..Default::default()
        }
    }

    /// The field a refusal names, in the message and as a BadRequest violation.
    fn field_of(s: &Status) -> String {
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        let details = s.get_error_details();
        let v = &details
            .bad_request()
            .expect("a BadRequest")
            .field_violations;
        assert_eq!(v.len(), 1);
        assert!(s.message().starts_with(&v[0].field), "{s:?}");
        v[0].field.clone()
    }

    #[test]
    fn quic_round_trips_and_refusals_name_their_path() {
        let udp = |backends| pb::VipConfig {
            key: Some(pb::VipKey {
                protocol: pb::Protocol::Udp as i32,
                ..key(443).unwrap()
            }),
            quic_server_id_len: 2,
            drain_flows: pb::DrainFlows::Move as i32,
            backends,
            ..Default::default()
        };
        let with_id = |address: &str, id: &str| pb::BackendConfig {
            server_id: id.into(),
            ..backend_config(address)
        };
        let config = pb::Config {
            vips: vec![udp(vec![
                with_id("192.0.2.11", "0a01"),
                with_id("192.0.2.12", "0a02"),
            ])],
        };
        let back = pb_config(&desired_state(config).unwrap());
        let v = &back.vips[0];
        assert_eq!(
            (
                v.quic_server_id_len,
                v.drain_flows,
                &v.backends[1].server_id
            ),
            (2, pb::DrainFlows::Move as i32, &"0a02".to_string())
        );
        assert_eq!(pb_config(&desired_state(back.clone()).unwrap()), back);
        for (c, want) in [
            (
                vec![udp(vec![
                    with_id("192.0.2.11", "0a01"),
                    with_id("192.0.2.12", "0a01"),
                ])],
                "config.vips[0].backends[1].server_id",
            ),
            (
                vec![udp(vec![with_id("192.0.2.11", "0a")])],
                "config.vips[0].backends[0].server_id",
            ),
            (
                vec![udp(vec![with_id("192.0.2.11", "xy")])],
                "config.vips[0].backends[0].server_id",
            ),
            (
                vec![udp(vec![backend_config("192.0.2.11")])],
                "config.vips[0].backends[0].server_id",
            ),
            (
                vec![pb::VipConfig {
                    quic_server_id_len: 16,
                    ..udp(vec![])
                }],
                "config.vips[0].quic_server_id_len",
            ),
            (
                vec![pb::VipConfig {
                    quic_server_id_len: 300,
                    ..udp(vec![])
                }],
                "config.vips[0].quic_server_id_len",
            ),
            (
                vec![pb::VipConfig {
                    key: key(443),
                    ..udp(vec![])
                }],
                "config.vips[0].quic_server_id_len",
            ),
            (
                vec![pb::VipConfig {
                    drain_flows: 7,
                    ..udp(vec![])
                }],
                "config.vips[0].drain_flows",
            ),
        ] {
            let e = desired_state(pb::Config { vips: c }).unwrap_err();
            assert_eq!(field_of(&e), want, "{e:?}");
        }
    }

    #[test]
    fn round_trips_through_the_desired_state() {
        let config = pb::Config {
            vips: vec![
                vip(
                    80,
                    vec![backend_config("192.0.2.11"), backend_config("192.0.2.12")],
                ),
                pb::VipConfig {
                    table_size: 655_373,
                    tcp_idle_timeout_s: 7200,
                    ..vip(443, vec![])
                },
            ],
        };
        let s = desired_state(config).unwrap();
        let back = pb_config(&s);
        assert_eq!(back.vips.len(), 2);
        assert_eq!(back.vips[0].table_size, 65537, "0 is the default");
        assert_eq!(
            back.vips[0].backends[1].weight,
            Some(1),
            "weight defaults to 1"
        );
        assert_eq!(back.vips[1].tcp_idle_timeout_s, 7200);
        assert_eq!(desired_state(back.clone()).unwrap().digest(), s.digest());
    }

    #[test]
    fn tunnels_round_trip_and_refusals_name_their_path() {
        let vx = pb::BackendConfig {
            forward: pb::ForwardMethod::Vxlan as i32,
            vni: 100,
            tunnel_port: 4790,
            mac: "02:00:00:00:01:11".into(),
            ..backend_config("192.0.2.11")
        };
        let gue = pb::BackendConfig {
            forward: pb::ForwardMethod::Gue as i32,
            ..backend_config("192.0.2.12")
        };
        let config = pb::Config {
            vips: vec![pb::VipConfig {
                tunnel_sources: vec!["192.0.2.5".into()],
                ..vip(80, vec![vx.clone(), gue])
            }],
        };
        let s = desired_state(config.clone()).unwrap();
        // The sources are checked once converged into an instance.
        s.check_tunnels().unwrap();
        let back = pb_config(&s);
        let b = &back.vips[0].backends;
        assert_eq!(back.vips[0].tunnel_sources, vec!["192.0.2.5"]);
        assert_eq!(
            (b[0].forward, b[0].tunnel_port, b[0].vni),
            (vx.forward, 4790, 100)
        );
        assert_eq!(b[1].forward, pb::ForwardMethod::Gue as i32);
        assert_eq!(
            pb_config(&desired_state(back.clone()).unwrap()),
            back,
            "round trip"
        );
        assert_eq!(desired_state(back).unwrap().digest(), s.digest());
        for (b, want) in [
            (
                pb::BackendConfig {
                    vni: lb_core::tunnel::MAX_VNI + 1,
                    ..vx.clone()
                },
                "config.vips[0].backends[0].vni",
            ),
            (
                pb::BackendConfig {
                    mac: String::new(),
                    ..vx.clone()
                },
                "config.vips[0].backends[0].mac",
            ),
            (
                pb::BackendConfig {
                    forward: 9,
                    ..vx.clone()
                },
                "config.vips[0].backends[0].forward",
            ),
            (
                pb::BackendConfig {
                    tunnel_port: 70_000,
                    ..vx.clone()
                },
                "config.vips[0].backends[0].tunnel_port",
            ),
            (
                pb::BackendConfig {
                    forward: pb::ForwardMethod::Ipip as i32,
                    mac: String::new(),
                    ..vx.clone()
                },
                "config.vips[0].backends[0].tunnel_port",
            ),
            (
                pb::BackendConfig {
                    forward: pb::ForwardMethod::Dr as i32,
                    tunnel_port: 0,
                    ..vx.clone()
                },
                "config.vips[0].backends[0].vni",
            ),
        ] {
            let e = desired_state(pb::Config {
                vips: vec![vip(80, vec![b])],
            })
            .unwrap_err();
            assert_eq!(field_of(&e), want, "{e:?}");
        }
        for (sources, want) in [
            (vec!["nope".to_string()], "config.vips[0].tunnel_sources[0]"),
            (
                vec!["192.0.2.5".to_string(), "192.0.2.6".to_string()],
                "config.vips[0].tunnel_sources",
            ),
        ] {
            let e = desired_state(pb::Config {
                vips: vec![pb::VipConfig {
                    tunnel_sources: sources,
                    ..vip(80, vec![])
                }],
            })
            .unwrap_err();
            assert_eq!(field_of(&e), want, "{e:?}");
        }
    }

    #[test]
    fn refusals_name_the_field_path() {
        let bad_mac = pb::BackendConfig {
            mac: "zz".into(),
            ..backend_config("192.0.2.12")
        };
        let heavy = pb::BackendConfig {
            weight: Some(10_001),
            ..backend_config("192.0.2.13")
        };
        let no_kind = pb::BackendConfig {
            check: Some(pb::HealthCheck::default()),
            ..backend_config("192.0.2.14")
        };
        for (config, want) in [
            (
                vec![vip(80, vec![backend_config("192.0.2.11"), bad_mac])],
                "config.vips[0].backends[1].mac",
            ),
            (
                vec![vip(80, vec![]), vip(81, vec![heavy])],
                "config.vips[1].backends[0].weight",
            ),
            (
                vec![vip(80, vec![no_kind])],
                "config.vips[0].backends[0].check.kind",
            ),
            (vec![vip(0, vec![])], "config.vips[0].key.port"),
            (vec![vip(70_000, vec![])], "config.vips[0].key.port"),
            (
                vec![pb::VipConfig {
                    key: None,
                    ..vip(80, vec![])
                }],
                "config.vips[0].key",
            ),
            (
                vec![pb::VipConfig {
                    table_size: 100,
                    ..vip(80, vec![])
                }],
                "config.vips[0].table_size",
            ),
            (
                vec![pb::VipConfig {
                    udp_idle_timeout_s: 70_000,
                    ..vip(80, vec![])
                }],
                "config.vips[0].udp_idle_timeout_s",
            ),
            (vec![vip(80, vec![]), vip(80, vec![])], "config.vips[1]"),
            (
                vec![vip(
                    80,
                    vec![backend_config("192.0.2.11"), backend_config("192.0.2.11")],
                )],
                "config.vips[0].backends[1]",
            ),
            (
                vec![vip(80, vec![backend_config("198.51.100.10")])],
                "config.vips[0].backends[0].address",
            ),
        ] {
            let e = desired_state(pb::Config { vips: config }).unwrap_err();
            assert_eq!(field_of(&e), want, "{e:?}");
        }
        let vip = VipKey {
            addr: "198.51.100.10".parse().unwrap(),
            port: 80,
            proto: lb_core::snapshot::Proto::Tcp,
        };
        let e = backends(
            vec![backend_config("192.0.2.11"), backend_config("192.0.2.11")],
            &vip,
            "backends",
        )
        .unwrap_err();
        assert_eq!(field_of(&e), "backends[1].address");
    }
}
