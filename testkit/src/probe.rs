//! The requests of the API probe: every unary method of `lb.v1.LoadBalancer`
//! with an empty request and with hostile ones (100 KB strings, NULs,
//! control and odd unicode characters, out-of-range numbers and enum
//! values, broken TOML, unknown fields), each with the status it must get.
//! Shared by control/tests/probe.rs (one at a time, in process) and
//! `lbabuse` (concurrently, against a running lbd under traffic).

use lb_proto::v1 as pb;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// One request of each unary method.
#[derive(Clone, Debug)]
pub enum Req {
    CreateVip(pb::CreateVipRequest),
    DeleteVip(pb::VipKey),
    GetVip(pb::VipKey),
    ListVips,
    UpdateVip(pb::UpdateVipRequest),
    AddBackend(pb::AddBackendRequest),
    RemoveBackend(pb::BackendKey),
    UpdateBackend(pb::UpdateBackendRequest),
    Apply(pb::ApplyRequest),
    SetBackends(pb::SetBackendsRequest),
    Export,
    ListHealth,
    GetStats,
    GetInfo,
    /// A read-only method (its request `Empty`) sent another message: the
    /// fields are unknown to `Empty`, which must ignore them.
    Unknown(&'static str, pb::ApplyRequest),
}

impl Req {
    pub fn method(&self) -> &'static str {
        match self {
            Req::CreateVip(_) => "CreateVip",
            Req::DeleteVip(_) => "DeleteVip",
            Req::GetVip(_) => "GetVip",
            Req::ListVips => "ListVips",
            Req::UpdateVip(_) => "UpdateVip",
            Req::AddBackend(_) => "AddBackend",
            Req::RemoveBackend(_) => "RemoveBackend",
            Req::UpdateBackend(_) => "UpdateBackend",
            Req::Apply(_) => "Apply",
            Req::SetBackends(_) => "SetBackends",
            Req::Export => "Export",
            Req::ListHealth => "ListHealth",
            Req::GetStats => "GetStats",
            Req::GetInfo => "GetInfo",
            Req::Unknown(m, _) => m,
        }
    }

    /// Send it; the reply's content is dropped, its status kept.
    pub async fn call(self, channel: &Channel) -> Result<(), Status> {
        let mut api = pb::load_balancer_client::LoadBalancerClient::new(channel.clone());
        let e = pb::Empty {};
        match self {
            Req::CreateVip(r) => api.create_vip(r).await.map(drop),
            Req::DeleteVip(r) => api.delete_vip(r).await.map(drop),
            Req::GetVip(r) => api.get_vip(r).await.map(drop),
            Req::ListVips => api.list_vips(e).await.map(drop),
            Req::UpdateVip(r) => api.update_vip(r).await.map(drop),
            Req::AddBackend(r) => api.add_backend(r).await.map(drop),
            Req::RemoveBackend(r) => api.remove_backend(r).await.map(drop),
            Req::UpdateBackend(r) => api.update_backend(r).await.map(drop),
            Req::Apply(r) => api.apply(r).await.map(drop),
            Req::SetBackends(r) => api.set_backends(r).await.map(drop),
            Req::Export => api.export(e).await.map(drop),
            Req::ListHealth => api.list_health(e).await.map(drop),
            Req::GetStats => api.get_stats(e).await.map(drop),
            Req::GetInfo => api.get_info(e).await.map(drop),
            Req::Unknown(method, r) => {
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                let path = format!("/lb.v1.LoadBalancer/{method}");
                let codec = tonic::codec::ProstCodec::<pb::ApplyRequest, pb::Empty>::default();
                grpc.unary(
                    tonic::Request::new(r),
                    path.parse::<tonic::codegen::http::uri::PathAndQuery>()
                        .unwrap(),
                    codec,
                )
                .await
                .map(drop)
            }
        }
    }
}

/// What the hostile requests expect to exist (apply it first): one VIP
/// with one backend. [`absent`]'s VIP must not exist.
pub const SETUP: &str = r#"
[[vip]]
address = "198.51.100.77"
port = 80
protocol = "tcp"

[[vip.backend]]
address = "192.0.2.77"
mac = "02:00:00:00:00:77"
"#;
/// SETUP's backend.
pub const B: &str = "192.0.2.77";

pub fn v() -> pb::VipKey {
    pb::VipKey {
        address: "198.51.100.77".into(),
        port: 80,
        protocol: pb::Protocol::Tcp as i32,
    }
}

pub fn absent() -> pb::VipKey {
    pb::VipKey {
        address: "198.51.100.78".into(),
        ..v()
    }
}

fn addr(a: &str) -> pb::VipKey {
    pb::VipKey {
        address: a.into(),
        ..v()
    }
}

fn port(p: u32) -> pb::VipKey {
    pb::VipKey { port: p, ..v() }
}

fn proto(p: i32) -> pb::VipKey {
    pb::VipKey { protocol: p, ..v() }
}

fn huge() -> String {
    "1".repeat(100_000)
}

fn create(vip: pb::VipKey) -> Req {
    Req::CreateVip(pb::CreateVipRequest {
        vip: Some(vip),
        ..Default::default()
    })
}

fn create_with(f: impl FnOnce(&mut pb::CreateVipRequest)) -> Req {
    let mut r = pb::CreateVipRequest {
        vip: Some(absent()),
        ..Default::default()
    };
    f(&mut r);
    Req::CreateVip(r)
}

fn add(f: impl FnOnce(&mut pb::AddBackendRequest)) -> Req {
    let mut r = pb::AddBackendRequest {
        vip: Some(v()),
        address: "192.0.2.78".into(),
        ..Default::default()
    };
    f(&mut r);
    Req::AddBackend(r)
}

fn update_vip(vip: pb::VipKey, f: impl FnOnce(&mut pb::UpdateVipRequest)) -> Req {
    let mut r = pb::UpdateVipRequest {
        vip: Some(vip),
        ..Default::default()
    };
    f(&mut r);
    Req::UpdateVip(r)
}

fn add_check(kind: &str, f: impl FnOnce(&mut pb::HealthCheck)) -> Req {
    let mut c = pb::HealthCheck {
        kind: kind.into(),
        ..Default::default()
    };
    f(&mut c);
    add(|r| r.check = Some(c))
}

fn key(vip: pb::VipKey, a: &str) -> pb::BackendKey {
    pb::BackendKey {
        vip: Some(vip),
        address: a.into(),
    }
}

fn update(f: impl FnOnce(&mut pb::UpdateBackendRequest)) -> Req {
    let mut r = pb::UpdateBackendRequest {
        backend: Some(key(v(), B)),
        ..Default::default()
    };
    f(&mut r);
    Req::UpdateBackend(r)
}

fn apply(toml: &str) -> Req {
    Req::Apply(pb::ApplyRequest {
        toml: toml.into(),
        ..Default::default()
    })
}

fn typed(f: impl FnOnce(&mut pb::VipConfig)) -> Req {
    let mut vip = pb::VipConfig {
        key: Some(absent()),
        ..Default::default()
    };
    f(&mut vip);
    Req::Apply(pb::ApplyRequest {
        config: Some(pb::Config { vips: vec![vip] }),
        dry_run: true,
        ..Default::default()
    })
}

fn set(f: impl FnOnce(&mut pb::SetBackendsRequest)) -> Req {
    let mut r = pb::SetBackendsRequest {
        vip: Some(v()),
        backends: vec![pb::BackendConfig {
            address: B.into(),
            mac: "02:00:00:00:00:77".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    f(&mut r);
    Req::SetBackends(r)
}

fn backend_config(address: &str) -> pb::BackendConfig {
    pb::BackendConfig {
        address: address.into(),
        ..Default::default()
    }
}

/// 5,000 characters: valid lines, then a table header that never closes.
fn broken_toml() -> String {
    let mut t = "[[vip]]\n".to_string() + &"address = \"198.51.100.1\"\n".repeat(150);
    t += "[[vip.backend\n";
    t += &"x".repeat(5000);
    t.truncate(5000);
    t
}

/// Each unary method with an empty request, its code and a part of its message.
pub fn empty_requests() -> Vec<(Req, Code, &'static str)> {
    use Code::*;
    vec![
        (
            Req::CreateVip(Default::default()),
            InvalidArgument,
            "vip: missing",
        ),
        (
            Req::DeleteVip(Default::default()),
            InvalidArgument,
            "vip.address",
        ),
        (
            Req::GetVip(Default::default()),
            InvalidArgument,
            "vip.address",
        ),
        (Req::ListVips, Ok, ""),
        (
            Req::UpdateVip(Default::default()),
            InvalidArgument,
            "vip: missing",
        ),
        (
            Req::AddBackend(Default::default()),
            InvalidArgument,
            "vip: missing",
        ),
        (
            Req::RemoveBackend(Default::default()),
            InvalidArgument,
            "vip: missing",
        ),
        (
            Req::UpdateBackend(Default::default()),
            InvalidArgument,
            "backend: missing",
        ),
        // An empty configuration is valid: as a dry run it changes nothing
        // (the real one is the last step of the test).
        (
            Req::Apply(pb::ApplyRequest {
                dry_run: true,
                ..Default::default()
            }),
            Ok,
            "",
        ),
        (
            Req::SetBackends(Default::default()),
            InvalidArgument,
            "vip: missing",
        ),
        (Req::Export, Ok, ""),
        (Req::ListHealth, Ok, ""),
        (Req::GetStats, Ok, ""),
        (Req::GetInfo, Ok, ""),
    ]
}

/// Hostile requests against [`SETUP`], each with its code and a part of its
/// message. None changes anything (the few accepted ones are reads, dry
/// runs or set what is already there).
pub fn hostile_requests() -> Vec<(Req, Code, &'static str)> {
    use Code::*;
    let setup = |extra: &str| format!("{SETUP}{extra}");
    let unknown = || pb::ApplyRequest {
        toml: "\0".repeat(100_000),
        dry_run: true,
        ..Default::default()
    };
    vec![
        (create(addr(&huge())), InvalidArgument, "vip.address"),
        (create(addr("198.51.100.1\0")), InvalidArgument, "vip.address"),
        (create(addr("\u{202e}198.51.100.1")), InvalidArgument, "vip.address"),
        (create(addr("\u{ff11}\u{ff19}\u{ff18}.51.100.1")), InvalidArgument, "vip.address"),
        (create(addr("198.51.100.1\r\n\u{1b}[2J")), InvalidArgument, "vip.address"),
        (create(addr(&"\u{1f4a9}".repeat(30_000))), InvalidArgument, "vip.address"),
        (create(addr("0.0.0.0")), InvalidArgument, "vip.address"),
        (create(addr("224.0.0.1")), InvalidArgument, "vip.address"),
        (create(addr("::1")), InvalidArgument, "vip.address"),
        (create(port(70_000)), InvalidArgument, "vip.port"),
        (create(port(u32::MAX)), InvalidArgument, "vip.port"),
        (create(pb::VipKey { port: 0, ..absent() }), InvalidArgument, "vip.port"),
        (create(proto(99)), InvalidArgument, "vip.protocol"),
        (create(proto(-1)), InvalidArgument, "vip.protocol"),
        (create(proto(0)), InvalidArgument, "vip.protocol"),
        (create_with(|r| r.table_size = 4_294_967_291), InvalidArgument, "vip.table_size"),
        (create_with(|r| r.table_size = 65_536), InvalidArgument, "vip.table_size"),
        (create_with(|r| r.table_size = 2), InvalidArgument, "vip.table_size"),
        (create_with(|r| r.tcp_idle_timeout_s = u32::MAX), InvalidArgument, "vip.tcp_idle_timeout_s"),
        (create_with(|r| r.udp_idle_timeout_s = 65_536), InvalidArgument, "vip.udp_idle_timeout_s"),
        (create(v()), AlreadyExists, "already exists"),
        (Req::DeleteVip(absent()), NotFound, "not found"),
        (Req::DeleteVip(addr(&huge())), InvalidArgument, "vip.address"),
        (Req::DeleteVip(proto(99)), InvalidArgument, "vip.protocol"),
        (Req::GetVip(absent()), NotFound, "not found"),
        (Req::GetVip(port(65_536)), InvalidArgument, "vip.port"),
        (Req::GetVip(addr("198.51.100.77\0")), InvalidArgument, "vip.address"),
        (Req::GetVip(v()), Ok, ""),
        (add(|r| r.vip = Some(absent())), NotFound, "not found"),
        (add(|r| r.vip = Some(proto(99))), InvalidArgument, "vip.protocol"),
        (add(|r| r.address = huge()), InvalidArgument, "backend.address"),
        (add(|r| r.address = "192.0.2.78\0".into()), InvalidArgument, "backend.address"),
        (add(|r| r.address = "\u{660}\u{661}.0.2.1".into()), InvalidArgument, "backend.address"),
        (add(|r| r.address = B.into()), AlreadyExists, "already exists"),
        (add(|r| r.address = "198.51.100.77".into()), InvalidArgument, "VIP's own address"),
        (add(|r| r.weight = Some(10_001)), InvalidArgument, "backend.weight"),
        (
            add(|r| r.agent = Some(pb::AgentCheck { kind: huge(), ..Default::default() })),
            InvalidArgument,
            "backend.agent.kind",
        ),
        (
            add(|r| r.agent = Some(pb::AgentCheck { kind: "tcp".into(), port: 70_000, ..Default::default() })),
            InvalidArgument,
            "backend.agent.port",
        ),
        (
            add(|r| r.agent = Some(pb::AgentCheck { kind: "tcp".into(), interval_ms: u32::MAX, ..Default::default() })),
            InvalidArgument,
            "backend.agent.interval_ms",
        ),
        (add(|r| r.min_flows = 5), InvalidArgument, "backend.min_flows"),
        (add(|r| (r.max_flows, r.min_flows) = (10, 10)), InvalidArgument, "backend.min_flows"),
        (update(|r| r.min_flows = Some(u32::MAX)), InvalidArgument, "backend.min_flows"),
        (add(|r| r.weight = Some(u32::MAX)), InvalidArgument, "backend.weight"),
        (add(|r| r.mac = "zz:zz:zz:zz:zz:zz".into()), InvalidArgument, "backend.mac"),
        (add(|r| r.mac = "ff:ff:ff:ff:ff:ff".into()), InvalidArgument, "backend.mac"),
        (add(|r| r.mac = "00:00:00:00:00:00".into()), InvalidArgument, "backend.mac"),
        (add(|r| r.mac = "02:00:00:00:00:01\0".into()), InvalidArgument, "backend.mac"),
        (add(|r| r.mac = huge()), InvalidArgument, "backend.mac"),
        (add_check(&huge(), |_| {}), InvalidArgument, "backend.check"),
        (add_check("", |_| {}), InvalidArgument, "backend.check.kind"),
        (add_check("none", |_| {}), InvalidArgument, "backend.check.kind"),
        (add_check("http:/a b", |_| {}), InvalidArgument, "backend.check"),
        (add_check("http:/a\0b", |_| {}), InvalidArgument, "backend.check"),
        (add_check("http:/\u{1b}[31m", |_| {}), InvalidArgument, "backend.check"),
        (add_check(&format!("http:/{}", "a".repeat(100_000)), |_| {}), InvalidArgument, "backend.check"),
        (add_check("tcp", |c| c.interval_ms = 99), InvalidArgument, "backend.check.interval_ms"),
        (add_check("tcp", |c| c.interval_ms = u32::MAX), InvalidArgument, "backend.check.interval_ms"),
        (
            add_check("tcp", |c| (c.interval_ms, c.timeout_ms) = (1000, 1001)),
            InvalidArgument,
            "backend.check.timeout_ms",
        ),
        (add_check("tcp", |c| c.rise = 101), InvalidArgument, "backend.check.rise"),
        (add_check("tcp", |c| c.fall = u32::MAX), InvalidArgument, "backend.check.fall"),
        (add_check("tcp", |c| c.port = 65_536), InvalidArgument, "backend.check.port"),
        (add_check("http:/", |c| c.http_status = 70_000), InvalidArgument, "backend.check.http_status"),
        (add_check("http:/", |c| c.http_status = 99), InvalidArgument, "backend.check.status"),
        (add_check("tcp", |c| c.via = "vip\0".into()), InvalidArgument, "backend.check.via"),
        (add_check("udp", |c| c.payload = "p".repeat(2000)), InvalidArgument, "backend.check.payload"),
        (add_check("tcp", |c| c.payload = "p".into()), InvalidArgument, "backend.check.payload"),
        (Req::RemoveBackend(key(v(), "192.0.2.99")), NotFound, "not found"),
        (Req::RemoveBackend(key(absent(), B)), NotFound, "not found"),
        (Req::RemoveBackend(key(v(), &huge())), InvalidArgument, "backend.address"),
        (Req::RemoveBackend(key(v(), "")), InvalidArgument, "backend.address"),
        (update(|r| r.backend = Some(key(v(), "192.0.2.99"))), NotFound, "not found"),
        (update(|r| r.backend = Some(key(absent(), B))), NotFound, "not found"),
        (update(|r| r.backend = Some(key(v(), &huge()))), InvalidArgument, "backend.address"),
        (
            update(|r| r.backend.as_mut().unwrap().vip = None),
            InvalidArgument,
            "vip: missing",
        ),
        (update(|r| r.weight = Some(10_001)), InvalidArgument, "backend.weight"),
        (update(|r| r.mac = Some("\0".into())), InvalidArgument, "backend.mac"),
        (update(|r| r.mac = Some("01:00:5e:00:00:01".into())), InvalidArgument, "backend.mac"),
        (update(|r| r.check = Some(Default::default())), InvalidArgument, "backend.check.kind"),
        (
            update(|r| {
                r.check = Some(pb::HealthCheck {
                    kind: "tcp".into(),
                    fall: 101,
                    ..Default::default()
                })
            }),
            InvalidArgument,
            "backend.check.fall",
        ),
        (apply(&broken_toml()), InvalidArgument, "toml"),
        (
            Req::Apply(pb::ApplyRequest {
                toml: broken_toml(),
                dry_run: true,
                ..Default::default()
            }),
            InvalidArgument,
            "toml",
        ),
        (
            Req::Apply(pb::ApplyRequest {
                toml: SETUP.into(),
                expected_revision: Some(u64::MAX),
                ..Default::default()
            }),
            Aborted,
            "expected_revision: the configuration is at revision",
        ),
        (
            Req::Apply(pb::ApplyRequest {
                toml: SETUP.into(),
                config: Some(Default::default()),
                ..Default::default()
            }),
            InvalidArgument,
            "config: give toml or config",
        ),
        (
            apply(&format!("local_addresses = [\"192.0.2.250\"]\n{SETUP}")),
            InvalidArgument,
            "toml.local_addresses",
        ),
        (typed(|v| v.key = None), InvalidArgument, "config.vips[0].key: missing"),
        (typed(|v| v.key = Some(addr(&huge()))), InvalidArgument, "config.vips[0].key.address"),
        (typed(|v| v.key = Some(proto(99))), InvalidArgument, "config.vips[0].key.protocol"),
        (typed(|v| v.table_size = u32::MAX), InvalidArgument, "config.vips[0].table_size"),
        (typed(|v| v.tcp_idle_timeout_s = u32::MAX), InvalidArgument, "config.vips[0].tcp_idle_timeout_s"),
        (
            typed(|v| v.backends = vec![backend_config("192.0.2.1"), backend_config("192.0.2.1")]),
            InvalidArgument,
            "config.vips[0].backends[1]",
        ),
        (
            typed(|v| v.backends = vec![pb::BackendConfig { mac: "\0".into(), ..backend_config("192.0.2.1") }]),
            InvalidArgument,
            "config.vips[0].backends[0].mac",
        ),
        (
            typed(|v| v.backends = vec![pb::BackendConfig { check: Some(Default::default()), ..backend_config("192.0.2.1") }]),
            InvalidArgument,
            "config.vips[0].backends[0].check.kind",
        ),
        (
            typed(|v| v.backends = (0..5000).map(|i| backend_config(&format!("10.9.{}.{}", i / 250, i % 250 + 1))).collect()),
            FailedPrecondition,
            "vip.table_size 65537 is too small for 656 backends",
        ),
        (update_vip(absent(), |_| {}), NotFound, "vip 198.51.100.78:80/tcp not found"),
        (update_vip(proto(99), |_| {}), InvalidArgument, "vip.protocol"),
        (update_vip(v(), |r| r.quic_server_id_len = Some(2)), InvalidArgument, "vip.quic_server_id_len"),
        (update_vip(v(), |r| r.quic_server_id_len = Some(u32::MAX)), InvalidArgument, "vip.quic_server_id_len"),
        (update_vip(v(), |r| r.drain_flows = Some(99)), InvalidArgument, "vip.drain_flows"),
        (create_with(|r| r.quic_server_id_len = 2), InvalidArgument, "vip.quic_server_id_len"),
        (create_with(|r| r.drain_flows = -1), InvalidArgument, "vip.drain_flows"),
        (add(|r| r.server_id = huge()), InvalidArgument, "backend.server_id"),
        (add(|r| r.server_id = "0x".into()), InvalidArgument, "backend.server_id"),
        (update(|r| r.server_id = Some("\0".into())), InvalidArgument, "backend.server_id"),
        (typed(|v| v.quic_server_id_len = 2), InvalidArgument, "config.vips[0].quic_server_id_len"),
        (set(|r| r.backends[0].server_id = "zz".into()), InvalidArgument, "backends[0].server_id"),
        (set(|r| r.vip = Some(absent())), NotFound, "vip 198.51.100.78:80/tcp not found"),
        (set(|r| r.vip = Some(proto(99))), InvalidArgument, "vip.protocol"),
        (set(|r| r.expected_revision = Some(0)), Aborted, "expected_revision"),
        (set(|r| r.backends[0].address = huge()), InvalidArgument, "backends[0].address"),
        (set(|r| r.backends[0].weight = Some(u32::MAX)), InvalidArgument, "backends[0].weight"),
        (set(|r| r.backends[0].mac = "ff:ff:ff:ff:ff:ff".into()), InvalidArgument, "backends[0].mac"),
        (set(|r| r.backends[0].check = Some(pb::HealthCheck { kind: "http:/\0".into(), ..Default::default() })), InvalidArgument, "backends[0].check.kind"),
        (set(|r| r.backends.push(backend_config(B))), InvalidArgument, "backends[1].address"),
        (set(|r| r.backends[0].address = "198.51.100.77".into()), InvalidArgument, "backends[0].address"),
        (set(|r| r.dry_run = true), Ok, ""),
        (set(|_| {}), Ok, ""),
        (apply(&"\0".repeat(5000)), InvalidArgument, "toml"),
        (
            apply(&format!("[[vip]]\naddress = \"{}\"\nport = 80\nprotocol = \"tcp\"\n", huge())),
            InvalidArgument,
            "toml",
        ),
        (
            apply("[[vip]]\naddress = \"198.51.100.1\"\nport = 70000\nprotocol = \"tcp\"\n"),
            InvalidArgument,
            "toml",
        ),
        (
            apply("[[vip]]\naddress = \"198.51.100.1\"\nport = 80\nprotocol = \"sctp\"\n"),
            InvalidArgument,
            "toml",
        ),
        (
            apply("[[vip]]\naddress = \"198.51.100.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 100\n"),
            InvalidArgument,
            "vip.table_size",
        ),
        (apply(&setup("weight = 10001\n")), InvalidArgument, "backend.weight"),
        (apply(&setup("check = { kind = \"http:/\\u0000\" }\n")), InvalidArgument, "backend.check"),
        (apply(&setup(SETUP)), AlreadyExists, "vip 198.51.100.77:80/tcp already exists"),
        (apply("unknown_key = 1\n"), InvalidArgument, "toml"),
        (Req::Unknown("ListVips", unknown()), Ok, ""),
        (Req::Unknown("Export", unknown()), Ok, ""),
        (Req::Unknown("ListHealth", unknown()), Ok, ""),
        (Req::Unknown("GetStats", unknown()), Ok, ""),
        (Req::Unknown("GetInfo", unknown()), Ok, ""),
    ]
}
