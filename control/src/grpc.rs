//! The `lb.v1.LoadBalancer` gRPC service on a Unix socket: requests become
//! changes of the desired state ([`crate::hub::Control::change`]), which are
//! validated, written to the state file and published to the workers before
//! the reply.

// tonic's handlers return `Status` by value; helpers do the same.
#![allow(clippy::result_large_err)]

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::state::{
    AgentCheck, AgentKind, BackendSettings, CheckKind, CheckVia, DesiredVip, DrainFlows,
    ForwardMethod, HealthCheck, LoadSettings, StateError,
};
use anyhow::{bail, Context, Result};
use lb_core::delay::Delays;
use lb_core::drop_reason::DropReason;
use lb_core::flow::IdleTimeouts;
use lb_core::packet::MacAddr;
use lb_core::quic::{QuicMode, ServerId};
use lb_core::snapshot::{BackendState, Proto, VipKey};
use lb_core::stats::WorkerStats;
use lb_proto::v1 as pb;
use lb_proto::v1::load_balancer_server::{LoadBalancer, LoadBalancerServer};
use tokio::net::UnixListener;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::hub::{ChangeError, Control};

mod typed;

/// Listen on `path`, replacing a stale socket file but never a live one.
pub async fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!("{}: another lbd is serving its API there", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to its owner", path.display()))?;
    Ok(listener)
}

/// The TCP listener of the API and its TLS settings (client certificates required).
pub struct TcpApi {
    pub listener: tokio::net::TcpListener,
    pub tls: tonic::transport::ServerTlsConfig,
}

/// Bind the TCP API and load its certificates, so errors show at start.
pub async fn bind_tcp(
    addr: std::net::SocketAddr,
    cert: &Path,
    key: &Path,
    client_ca: &Path,
) -> Result<TcpApi> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
    let ca = tonic::transport::Certificate::from_pem(read(client_ca)?);
    let tls = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(ca);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("gRPC listener on {addr}"))?;
    Ok(TcpApi { listener, tls })
}

/// Serve the API over TLS on TCP until `stop` is set.
pub async fn serve_tcp(tcp: TcpApi, api: Api, stop: &AtomicBool) -> Result<()> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(tcp.listener);
    let server = tonic::transport::Server::builder()
        .tls_config(tcp.tls)
        .context("TLS settings of the gRPC listener")?
        .add_service(reflection()?)
        .add_service(health(&api))
        .add_service(LoadBalancerServer::new(api))
        .serve_with_incoming_shutdown(incoming, stopped(stop));
    until_stopped(server, stop)
        .await
        .context("serving the gRPC API on TCP")
}

/// Serve until `stop` is set.
pub async fn serve(listener: UnixListener, api: Api, stop: &AtomicBool) -> Result<()> {
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(reflection()?)
        .add_service(health(&api))
        .add_service(LoadBalancerServer::new(api))
        .serve_with_incoming_shutdown(incoming, stopped(stop));
    until_stopped(server, stop)
        .await
        .context("serving the gRPC API")
}

/// `grpc.health.v1.Health` (Kubernetes gRPC probes, Envoy,
/// grpc-health-probe): SERVING for "" and "lb.v1.LoadBalancer" while the
/// dataplane forwards (the API serves only once the port is up), NOT_SERVING
/// once lbd is stopping or while a worker is stalled. A task follows the
/// hub's state for as long as the server runs.
fn health(
    api: &Api,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    use tonic_health::ServingStatus;
    let (mut reporter, service) = tonic_health::server::health_reporter();
    let control = Arc::clone(&api.control);
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let serving = match control.lock() {
                Ok(c) => !c.shutting_down() && c.stalled_workers() == 0,
                Err(_) => false,
            };
            if last != Some(serving) {
                last = Some(serving);
                let status = if serving {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                reporter.set_service_status("", status).await;
                reporter
                    .set_service_status("lb.v1.LoadBalancer", status)
                    .await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    service
}

fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building the reflection service")
}

async fn stopped(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long a stopping server waits for its clients (an open `Watch` never
/// ends by itself) before it closes their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

async fn until_stopped(
    server: impl std::future::Future<Output = Result<(), tonic::transport::Error>>,
    stop: &AtomicBool,
) -> Result<(), tonic::transport::Error> {
    tokio::select! {
        served = server => served,
        () = async {
            stopped(stop).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::info!("closing the API connections still open");
            Ok(())
        }
    }
}

#[derive(Clone)]
pub struct Api {
    pub control: Arc<Mutex<Control>>,
    pub stats: Arc<[WorkerStats]>,
    pub lcores: Vec<u32>,
    pub port: String,
    pub eal_args: Vec<String>,
}

impl Api {
    fn control(&self) -> Result<MutexGuard<'_, Control>, Status> {
        self.control
            .lock()
            .map_err(|_| Status::internal("control state poisoned"))
    }
}

/// A refused change as a status: its code, a bounded message, and the
/// google.rpc details a client can act on without parsing the message.
fn status(e: ChangeError) -> Status {
    let message = bounded(e.to_string());
    match e {
        ChangeError::State(StateError::Invalid { field, reason }) => {
            bad_request(field, &bounded(reason), message)
        }
        ChangeError::State(StateError::AlreadyExists { kind, name }) => Status::with_error_details(
            Code::AlreadyExists,
            message,
            ErrorDetails::with_resource_info(kind, bounded(name), "", "already exists"),
        ),
        ChangeError::State(StateError::NotFound { kind, name }) => Status::with_error_details(
            Code::NotFound,
            message,
            ErrorDetails::with_resource_info(kind, bounded(name), "", "not found"),
        ),
        ChangeError::State(StateError::Precondition(_)) => Status::with_error_details(
            Code::FailedPrecondition,
            message.clone(),
            ErrorDetails::with_precondition_failure_violation("STATE", "lb.v1/config", message),
        ),
        ChangeError::Snapshot(_) => Status::with_error_details(
            Code::FailedPrecondition,
            message.clone(),
            ErrorDetails::with_precondition_failure_violation("DATAPLANE", "lb.v1/config", message),
        ),
        // Undone, nothing changed: the client may retry. The ErrorInfo
        // tells this lbd's answer from a transport that failed.
        ChangeError::Persist { .. } => Status::with_error_details(
            Code::Unavailable,
            message,
            ErrorDetails::with_error_info(
                "STATE_FILE_NOT_WRITTEN",
                "lbd",
                std::collections::HashMap::<String, String>::new(),
            ),
        ),
    }
}

fn bad_request(field: &str, reason: &str, message: String) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// INVALID_ARGUMENT naming `field` (a path into the request, e.g.
/// `config.vips[0].backends[1].mac`), in the message and as a BadRequest
/// field violation.
fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    let reason = reason.to_string();
    let message = bounded(format!("{field}: {reason}"));
    bad_request(field, &bounded(reason), message)
}

/// An expected revision that is not the current one: ABORTED, with what
/// the client should read again.
fn check_revision(c: &Control, expected: Option<u64>) -> Result<(), Status> {
    let current = c.state().revision;
    match expected {
        Some(want) if want != current => {
            let message = format!(
                "expected_revision: the configuration is at revision {current}, not {want}: \
                 another change came first; read it again (Export) and retry"
            );
            Err(Status::with_error_details(
                Code::Aborted,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(
                    "REVISION",
                    "lb.v1/config",
                    message,
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// The longest error message sent (bytes). Messages quote what was wrong
/// (a TOML parser quotes the line), and an input can be large: a status
/// travels in HTTP/2 trailers, which clients cap (grpcio at 16 KiB, and a
/// message is percent-encoded, up to 3 bytes per byte), so a longer one
/// would turn INVALID_ARGUMENT into RESOURCE_EXHAUSTED.
pub const MAX_MESSAGE: usize = 1024;

fn bounded(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let total = message.len();
    let mut cut = MAX_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(&format!("... ({} more bytes)", total - cut));
    message
}

fn vip_key(k: Option<pb::VipKey>) -> Result<VipKey, Status> {
    vip_key_at(k, "vip")
}

/// The VIP key at field `at` of a request.
fn vip_key_at(k: Option<pb::VipKey>, at: &str) -> Result<VipKey, Status> {
    let k = k.ok_or_else(|| invalid(at, "missing"))?;
    let addr: IpAddr = k.address.parse().map_err(|_| {
        invalid(
            &format!("{at}.address"),
            format!("{:?} is not an IPv4 or IPv6 address", k.address),
        )
    })?;
    let port = u16::try_from(k.port)
        .map_err(|_| invalid(&format!("{at}.port"), format!("{} is above 65535", k.port)))?;
    let proto = match pb::Protocol::try_from(k.protocol) {
        Ok(pb::Protocol::Tcp) => Proto::Tcp,
        Ok(pb::Protocol::Udp) => Proto::Udp,
        _ => return Err(invalid(&format!("{at}.protocol"), "must be TCP or UDP")),
    };
    Ok(VipKey { addr, port, proto })
}

fn backend_addr(s: &str) -> Result<IpAddr, Status> {
    backend_addr_at(s, "backend")
}

fn backend_addr_at(s: &str, at: &str) -> Result<IpAddr, Status> {
    s.parse().map_err(|_| {
        invalid(
            &format!("{at}.address"),
            format!("{s:?} is not an IPv4 or IPv6 address"),
        )
    })
}

fn mac(s: &str) -> Result<Option<MacAddr>, Status> {
    mac_at(s, "backend")
}

fn mac_at(s: &str, at: &str) -> Result<Option<MacAddr>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| invalid(&format!("{at}.mac"), e))
}

fn check(c: pb::HealthCheck) -> Result<HealthCheck, Status> {
    check_at(c, "backend")
}

/// The health check at field `at` (its parent: `at.check.kind`, ...).
fn check_at(c: pb::HealthCheck, at: &str) -> Result<HealthCheck, Status> {
    let field = |f: &str| format!("{at}.check.{f}");
    let kind = HealthCheck::parse_kind(&c.kind)
        .map_err(|e| invalid(&field("kind"), e))?
        .ok_or_else(|| invalid(&field("kind"), "\"none\": leave the check out instead"))?;
    let status = u16::try_from(if c.http_status == 0 {
        200
    } else {
        c.http_status
    })
    .map_err(|_| {
        invalid(
            &field("http_status"),
            format!("{} is not an HTTP status", c.http_status),
        )
    })?;
    if !c.payload.is_empty() && !matches!(kind, CheckKind::Udp { .. }) {
        return Err(invalid(
            &field("payload"),
            format!("only a udp check sends a payload, not {kind}"),
        ));
    }
    let kind = match kind {
        CheckKind::Http { path, .. } => CheckKind::Http { path, status },
        CheckKind::Udp { payload } if c.payload.is_empty() => CheckKind::Udp { payload },
        CheckKind::Udp { .. } => CheckKind::Udp { payload: c.payload },
        k => k,
    };
    let mut hc = HealthCheck::new(kind);
    if c.port != 0 {
        hc.port = Some(
            u16::try_from(c.port)
                .map_err(|_| invalid(&field("port"), format!("{} is above 65535", c.port)))?,
        );
    }
    for (field, v) in [
        (&mut hc.interval_ms, c.interval_ms),
        (&mut hc.timeout_ms, c.timeout_ms),
        (&mut hc.rise, c.rise),
        (&mut hc.fall, c.fall),
    ] {
        if v != 0 {
            *field = v;
        }
    }
    if c.timeout_ms == 0 {
        hc.timeout_ms = HealthCheck::default_timeout(hc.interval_ms);
    }
    hc.via = CheckVia::parse(&c.via).ok_or_else(|| {
        invalid(
            &field("via"),
            format!("{:?}: expected auto, real or vip", c.via),
        )
    })?;
    Ok(hc)
}

/// The load-feedback agent at field `at` (`at.agent.kind`, ...).
fn agent_at(a: pb::AgentCheck, at: &str) -> Result<AgentCheck, Status> {
    let field = |f: &str| format!("{at}.agent.{f}");
    let kind = AgentKind::parse(&a.kind).map_err(|e| match e {
        StateError::Invalid { reason, .. } => invalid(&field("kind"), reason),
        e => status(e.into()),
    })?;
    let port = match a.port {
        0 => crate::state::DEFAULT_AGENT_PORT,
        p => {
            u16::try_from(p).map_err(|_| invalid(&field("port"), format!("{p} is above 65535")))?
        }
    };
    let interval_ms = if a.interval_ms == 0 {
        2000
    } else {
        a.interval_ms
    };
    Ok(AgentCheck {
        kind,
        port,
        interval_ms,
        timeout_ms: match a.timeout_ms {
            0 => HealthCheck::default_timeout(interval_ms),
            t => t,
        },
    })
}

/// The forward method at field `at` (`at.forward`).
fn forward_method_at(f: i32, at: &str) -> Result<ForwardMethod, Status> {
    match pb::ForwardMethod::try_from(f) {
        Ok(pb::ForwardMethod::Dr) => Ok(ForwardMethod::Dr),
        Ok(pb::ForwardMethod::Ipip) => Ok(ForwardMethod::Ipip),
        Ok(pb::ForwardMethod::Gue) => Ok(ForwardMethod::Gue),
        Ok(pb::ForwardMethod::Vxlan) => Ok(ForwardMethod::Vxlan),
        Err(_) => Err(invalid(
            &format!("{at}.forward"),
            format!("{f} is not a forward method (DR, IPIP, GUE or VXLAN)"),
        )),
    }
}

fn pb_forward(f: ForwardMethod) -> pb::ForwardMethod {
    match f {
        ForwardMethod::Dr => pb::ForwardMethod::Dr,
        ForwardMethod::Ipip => pb::ForwardMethod::Ipip,
        ForwardMethod::Gue => pb::ForwardMethod::Gue,
        ForwardMethod::Vxlan => pb::ForwardMethod::Vxlan,
    }
}

/// A tunnel port at field `at` (`at.tunnel_port`): 0 is the default.
fn tunnel_port_at(p: u32, at: &str) -> Result<Option<u16>, Status> {
    match p {
        0 => Ok(None),
        p => u16::try_from(p)
            .map(Some)
            .map_err(|_| invalid(&format!("{at}.tunnel_port"), format!("{p} is above 65535"))),
    }
}

/// A request's forward method and its parameters (`at`: their parent):
/// the VNI is a VXLAN backend's (any other refuses one that is not 0).
fn forward_at(
    forward: i32,
    tunnel_port: u32,
    vni: u32,
    at: &str,
) -> Result<(ForwardMethod, Option<u16>, Option<u32>), Status> {
    let method = forward_method_at(forward, at)?;
    let vni = (method == ForwardMethod::Vxlan || vni != 0).then_some(vni);
    Ok((method, tunnel_port_at(tunnel_port, at)?, vni))
}

/// A QUIC server id at field `at` (`at.server_id`), hex; empty: none.
fn server_id_at(s: &str, at: &str) -> Result<Option<ServerId>, Status> {
    if s.is_empty() {
        return Ok(None);
    }
    ServerId::from_hex(s)
        .map(Some)
        .map_err(|e| invalid(&format!("{at}.server_id"), e))
}

/// A VIP's QUIC mode at field `at` (`at.quic_server_id_len`); 0: off. The
/// range is the state's to check ([`crate::quic::check_quic_mode`]).
fn quic_at(len: u32, at: &str) -> Result<Option<QuicMode>, Status> {
    match len {
        0 => Ok(None),
        n => u8::try_from(n)
            .map(|server_id_len| Some(QuicMode { server_id_len }))
            .map_err(|_| {
                invalid(
                    &format!("{at}.quic_server_id_len"),
                    format!("{n} is not 1-15 bytes (0: QUIC mode off)"),
                )
            }),
    }
}

/// The drain policy at field `at` (`at.drain_flows`).
fn drain_flows_at(d: i32, at: &str) -> Result<DrainFlows, Status> {
    match pb::DrainFlows::try_from(d) {
        Ok(pb::DrainFlows::Keep) => Ok(DrainFlows::Keep),
        Ok(pb::DrainFlows::Move) => Ok(DrainFlows::Move),
        Err(_) => Err(invalid(
            &format!("{at}.drain_flows"),
            format!("{d} is not a drain policy (KEEP or MOVE)"),
        )),
    }
}

fn pb_drain_flows(d: DrainFlows) -> pb::DrainFlows {
    match d {
        DrainFlows::Keep => pb::DrainFlows::Keep,
        DrainFlows::Move => pb::DrainFlows::Move,
    }
}

/// Tunnel sources at field `field` (`field[i]`).
fn sources_at(list: &[String], field: &str) -> Result<Vec<IpAddr>, Status> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse().map_err(|_| {
                invalid(
                    &format!("{field}[{i}]"),
                    format!("{s:?} is not an IPv4 or IPv6 address"),
                )
            })
        })
        .collect()
}

/// Load settings from a request's agent and cap (0: none).
fn load_at(
    agent: Option<pb::AgentCheck>,
    max_flows: u32,
    min_flows: u32,
    at: &str,
) -> Result<LoadSettings, Status> {
    Ok(LoadSettings {
        agent: agent.map(|a| agent_at(a, at)).transpose()?,
        max_flows: (max_flows != 0).then_some(max_flows),
        min_flows: (min_flows != 0).then_some(min_flows),
    })
}

fn pb_agent(a: &AgentCheck) -> pb::AgentCheck {
    pb::AgentCheck {
        kind: a.kind.to_string(),
        port: u32::from(a.port),
        interval_ms: a.interval_ms,
        timeout_ms: a.timeout_ms,
    }
}

fn pb_check(c: &HealthCheck) -> pb::HealthCheck {
    pb::HealthCheck {
        kind: c.kind.to_string(),
        port: c.port.map_or(0, u32::from),
        interval_ms: c.interval_ms,
        timeout_ms: c.timeout_ms,
        rise: c.rise,
        fall: c.fall,
        http_status: match c.kind {
            CheckKind::Http { status, .. } => u32::from(status),
            CheckKind::Tcp | CheckKind::Udp { .. } => 0,
        },
        via: c.via.to_string(),
        payload: match &c.kind {
            CheckKind::Udp { payload } => payload.clone(),
            _ => String::new(),
        },
    }
}

fn pb_path(p: &crate::health::PathResult) -> pb::PathResult {
    pb::PathResult {
        ok: p.ok,
        detail: p.detail.clone(),
    }
}

fn pb_health(c: &Control, key: &VipKey, addr: &IpAddr) -> pb::Health {
    match c.health(key, addr) {
        None => pb::Health::Unspecified,
        Some(h) if h.healthy => pb::Health::Healthy,
        Some(_) => pb::Health::Unhealthy,
    }
}

pub fn pb_key(k: &VipKey) -> pb::VipKey {
    pb::VipKey {
        address: k.addr.to_string(),
        port: u32::from(k.port),
        protocol: match k.proto {
            Proto::Tcp => pb::Protocol::Tcp,
            Proto::Udp => pb::Protocol::Udp,
        } as i32,
    }
}

fn pb_vip(c: &Control, key: &VipKey, v: &DesiredVip) -> pb::Vip {
    pb::Vip {
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
            .map(|(addr, b)| pb_backend(c, key, addr, &b.settings))
            .collect(),
    }
}

fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn pb_backend(c: &Control, key: &VipKey, addr: &IpAddr, s: &BackendSettings) -> pb::Backend {
    let health = pb_health(c, key, addr);
    // What the dataplane does with it: failing checks take it down, an
    // agent or a cap may drain it or take it out.
    let state = match c.state_in_force(key, addr, s) {
        BackendState::Up => pb::BackendState::Up,
        BackendState::Draining => pb::BackendState::Draining,
        BackendState::Down => pb::BackendState::Down,
    };
    pb::Backend {
        address: addr.to_string(),
        weight: s.weight,
        mac: s.mac.map(|m| m.to_string()).unwrap_or_default(),
        effective_mac: c
            .backend_mac(addr, s)
            .map(|m| m.to_string())
            .unwrap_or_default(),
        forward: pb_forward(s.forward) as i32,
        tunnel_port: u32::from(s.port_in_use()),
        vni: s.vni.unwrap_or(0),
        next_hop: c.state().next_hop(addr, s).0.to_string(),
        server_id: s.server_id.map(|id| id.to_string()).unwrap_or_default(),
        state: state as i32,
        drain: s.drain,
        check: s.check.as_ref().map(pb_check),
        health: health as i32,
        mac_since_unix_ms: c.mac_since(addr).map_or(0, unix_ms),
        effective_weight: c.effective_weight(key, addr),
        agent: s.load.agent.as_ref().map(pb_agent),
        // Before its first poll the agent's feedback is the default one.
        agent_status: s.load.agent.as_ref().map(|_| {
            let f = c.feedback(key, addr).cloned().unwrap_or_default();
            pb::AgentStatus {
                answered: f.answered,
                percent: u32::from(f.percent),
                state: f.state.to_string(),
                detail: f.detail,
                since_unix_ms: unix_ms(f.since),
            }
        }),
        max_flows: s.load.max_flows.unwrap_or(0),
        min_flows: s.load.cap().map_or(0, |(_, low)| low),
        active_flows: c.active_flows(key, addr),
        capped: c.capped(key, addr),
    }
}

/// The same set of addresses, in any order.
fn same_addresses(a: &[IpAddr], b: &[IpAddr]) -> bool {
    let set = |v: &[IpAddr]| v.iter().copied().collect::<std::collections::BTreeSet<_>>();
    set(a) == set(b)
}

fn vip_missing(key: &VipKey) -> ChangeError {
    ChangeError::State(StateError::NotFound {
        kind: "vip",
        name: key.to_string(),
    })
}

fn settings_of(c: &Control, key: &VipKey, addr: &IpAddr) -> Result<BackendSettings, Status> {
    c.state()
        .vips()
        .get(key)
        .ok_or_else(|| status(vip_missing(key)))?
        .backends
        .get(addr)
        .map(|b| b.settings.clone())
        .ok_or_else(|| {
            status(ChangeError::State(StateError::NotFound {
                kind: "backend",
                name: format!("{addr} of vip {key}"),
            }))
        })
}

type EventStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl LoadBalancer for Api {
    type WatchStream = EventStream;

    async fn watch(&self, _: Request<pb::Empty>) -> Result<Response<EventStream>, Status> {
        use tokio_stream::StreamExt;
        let rx = self.control()?.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(|e| {
            Ok(match e {
                Ok(ev) => ev,
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    pb::Event {
                        time_ms: 0,
                        kind: Some(pb::event::Kind::Missed(pb::EventsMissed { count: n })),
                    }
                }
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_vip(
        &self,
        req: Request<pb::CreateVipRequest>,
    ) -> Result<Response<pb::Vip>, Status> {
        let r = req.into_inner();
        let key = vip_key(r.vip)?;
        let size = (r.table_size != 0).then_some(r.table_size);
        let secs = |field: &str, v: u32| {
            u16::try_from(v).map_err(|_| invalid(field, format!("{v} is above 65535 seconds")))
        };
        let idle = IdleTimeouts {
            tcp: secs("vip.tcp_idle_timeout_s", r.tcp_idle_timeout_s)?,
            udp: secs("vip.udp_idle_timeout_s", r.udp_idle_timeout_s)?,
        };
        let sources = sources_at(&r.tunnel_sources, "vip.tunnel_sources")?;
        let quic = quic_at(r.quic_server_id_len, "vip")?;
        let drain = drain_flows_at(r.drain_flows, "vip")?;
        let (v, commit) = {
            let mut c = self.control()?;
            let ((), commit) = c
                .change(&format!("vip {key} created"), |s| {
                    s.create_vip(key, size)?;
                    s.set_vip_tunnel_sources(&key, sources)?;
                    s.set_vip_quic(&key, quic)?;
                    s.set_vip_drain(&key, drain)?;
                    s.set_idle_timeouts(&key, idle)
                })
                .map_err(status)?;
            (pb_vip(&c, &key, &c.state().vips()[&key]), commit)
        };
        commit.durable().await.map_err(status)?;
        Ok(Response::new(v))
    }

    async fn delete_vip(&self, req: Request<pb::VipKey>) -> Result<Response<pb::Empty>, Status> {
        let key = vip_key(Some(req.into_inner()))?;
        let ((), commit) = self
            .control()?
            .change(&format!("vip {key} deleted"), |s| s.delete_vip(&key))
            .map_err(status)?;
        commit.durable().await.map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn get_vip(&self, req: Request<pb::VipKey>) -> Result<Response<pb::Vip>, Status> {
        let key = vip_key(Some(req.into_inner()))?;
        let c = self.control()?;
        let v = c
            .state()
            .vips()
            .get(&key)
            .ok_or_else(|| status(vip_missing(&key)))?;
        Ok(Response::new(pb_vip(&c, &key, v)))
    }

    async fn list_vips(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::ListVipsResponse>, Status> {
        let c = self.control()?;
        let vips = c
            .state()
            .vips()
            .iter()
            .map(|(k, v)| pb_vip(&c, k, v))
            .collect();
        Ok(Response::new(pb::ListVipsResponse { vips }))
    }

    async fn update_vip(
        &self,
        req: Request<pb::UpdateVipRequest>,
    ) -> Result<Response<pb::Vip>, Status> {
        let r = req.into_inner();
        let key = vip_key(r.vip)?;
        let quic = r
            .quic_server_id_len
            .map(|n| quic_at(n, "vip"))
            .transpose()?;
        let drain = r
            .drain_flows
            .map(|d| drain_flows_at(d, "vip"))
            .transpose()?;
        let (v, commit) = {
            let mut c = self.control()?;
            let ((), commit) = c
                .change(&format!("vip {key} updated"), |s| {
                    // Always set (to itself when not given): a VIP that is
                    // not there is NOT_FOUND even when nothing else is given.
                    let cur = s.vips().get(&key).map(|v| v.drain);
                    s.set_vip_drain(&key, drain.or(cur).unwrap_or_default())?;
                    match quic {
                        Some(q) => s.set_vip_quic(&key, q),
                        None => Ok(()),
                    }
                })
                .map_err(status)?;
            (pb_vip(&c, &key, &c.state().vips()[&key]), commit)
        };
        commit.durable().await.map_err(status)?;
        Ok(Response::new(v))
    }

    async fn add_backend(
        &self,
        req: Request<pb::AddBackendRequest>,
    ) -> Result<Response<pb::Backend>, Status> {
        let r = req.into_inner();
        let key = vip_key(r.vip)?;
        let addr = backend_addr(&r.address)?;
        let (forward, tunnel_port, vni) = forward_at(r.forward, r.tunnel_port, r.vni, "backend")?;
        let settings = BackendSettings {
            weight: r.weight.unwrap_or(1),
            mac: mac(&r.mac)?,
            forward,
            tunnel_port,
            vni,
            server_id: server_id_at(&r.server_id, "backend")?,
            drain: r.drain,
            down: false,
            check: r.check.map(check).transpose()?,
            load: load_at(r.agent, r.max_flows, r.min_flows, "backend")?,
        };
        let (b, commit) = {
            let mut c = self.control()?;
            let (_, commit) = c
                .change(&format!("backend {addr} added to {key}"), |s| {
                    s.add_backend(&key, addr, settings.clone())
                })
                .map_err(status)?;
            (pb_backend(&c, &key, &addr, &settings), commit)
        };
        commit.durable().await.map_err(status)?;
        Ok(Response::new(b))
    }

    async fn remove_backend(
        &self,
        req: Request<pb::BackendKey>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let key = vip_key(r.vip)?;
        let addr = backend_addr(&r.address)?;
        let ((), commit) = self
            .control()?
            .change(&format!("backend {addr} removed from {key}"), |s| {
                s.remove_backend(&key, &addr)
            })
            .map_err(status)?;
        commit.durable().await.map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn update_backend(
        &self,
        req: Request<pb::UpdateBackendRequest>,
    ) -> Result<Response<pb::Backend>, Status> {
        let r = req.into_inner();
        let b = r.backend.ok_or_else(|| invalid("backend", "missing"))?;
        let key = vip_key(b.vip)?;
        let addr = backend_addr(&b.address)?;
        let (b, commit) = {
            let mut c = self.control()?;
            let mut settings = settings_of(&c, &key, &addr)?;
            if let Some(w) = r.weight {
                settings.weight = w;
            }
            if let Some(m) = &r.mac {
                settings.mac = mac(m)?;
            }
            if let Some(f) = r.forward {
                let f = forward_method_at(f, "backend")?;
                // What belonged to the old method goes with it.
                if f != settings.forward {
                    settings.forward = f;
                    settings.tunnel_port = None;
                    settings.vni = None;
                    if r.mac.is_none() {
                        settings.mac = None;
                    }
                }
            }
            if let Some(p) = r.tunnel_port {
                settings.tunnel_port = tunnel_port_at(p, "backend")?;
            }
            if let Some(v) = r.vni {
                settings.vni = Some(v);
            }
            if let Some(id) = &r.server_id {
                settings.server_id = server_id_at(id, "backend")?;
            }
            if let Some(d) = r.drain {
                settings.drain = d;
            }
            if r.clear_check {
                settings.check = None;
            } else if let Some(hc) = r.check {
                settings.check = Some(check(hc)?);
            }
            if r.clear_agent {
                settings.load.agent = None;
            } else if let Some(a) = r.agent {
                settings.load.agent = Some(agent_at(a, "backend")?);
            }
            if let Some(max) = r.max_flows {
                settings.load.max_flows = (max != 0).then_some(max);
                if max == 0 {
                    settings.load.min_flows = None;
                }
            }
            if let Some(min) = r.min_flows {
                settings.load.min_flows = (min != 0).then_some(min);
            }
            let ((), commit) = c
                .change(&format!("backend {addr} of {key} updated"), |s| {
                    s.update_backend(&key, &addr, settings.clone())
                })
                .map_err(status)?;
            (pb_backend(&c, &key, &addr, &settings), commit)
        };
        commit.durable().await.map_err(status)?;
        Ok(Response::new(b))
    }

    async fn apply(
        &self,
        req: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let r = req.into_inner();
        let (mut desired, from_toml) = match r.config {
            Some(_) if !r.toml.is_empty() => {
                return Err(invalid("config", "give toml or config, not both"))
            }
            Some(config) => (typed::desired_state(config)?, false),
            None => {
                let config: crate::config::Config =
                    toml::from_str(&r.toml).map_err(|e| invalid("toml", e.to_string().trim()))?;
                let desired = crate::state::DesiredState::from_config(&config)
                    .map_err(|e| status(e.into()))?;
                (desired, true)
            }
        };
        let (changes, revision, generation, commit) = {
            let mut c = self.control()?;
            check_revision(&c, r.expected_revision)?;
            // The instance's own tunnel sources and routes stay, as its
            // addresses do.
            let (own_sources, own_routes) =
                (c.state().tunnel_sources.clone(), c.state().routes.clone());
            if desired.tunnel_sources.is_empty() {
                desired.tunnel_sources.clone_from(&own_sources);
            } else if !same_addresses(&desired.tunnel_sources, &own_sources) {
                return Err(invalid(
                    "toml.tunnel_sources",
                    format!(
                        "{:?} are not this instance's own ({own_sources:?}): Apply does not \
                         change them (each instance has its own); leave them out, or set them \
                         in the instance's state file and reload it (SIGHUP)",
                        desired.tunnel_sources
                    ),
                ));
            }
            if desired.routes.is_empty() {
                desired.routes.clone_from(&own_routes);
            } else if desired.routes != own_routes {
                return Err(invalid(
                    "toml.route",
                    "the routes are not this instance's own: Apply does not change them (each \
                     instance has its own); leave them out, or set them in the instance's state \
                     file and reload it (SIGHUP)",
                ));
            }
            // The instance's own addresses stay: absent means "as they are".
            let own = c.state().local_addresses.clone();
            if desired.local_addresses.is_empty() {
                desired.local_addresses.clone_from(&own);
            } else if !same_addresses(&desired.local_addresses, &own) && from_toml {
                return Err(invalid(
                    "toml.local_addresses",
                    format!(
                        "{:?} are not this instance's own ({own:?}): Apply does not change them \
                         (each instance has its own); leave them out, or set them in the \
                         instance's state file and reload it (SIGHUP)",
                        desired.local_addresses
                    ),
                ));
            }
            let (changes, commit) = c.converge(&desired, r.dry_run, "apply").map_err(status)?;
            (changes, c.state().revision, c.generation(), commit)
        };
        let generation = match commit {
            Some(commit) => {
                commit.durable().await.map_err(status)?;
                // Published now, in this generation or a later one.
                self.control()?.generation()
            }
            None => generation,
        };
        Ok(Response::new(pb::ApplyResponse {
            changes,
            snapshot_generation: generation,
            revision,
        }))
    }

    async fn set_backends(
        &self,
        req: Request<pb::SetBackendsRequest>,
    ) -> Result<Response<pb::SetBackendsResponse>, Status> {
        let r = req.into_inner();
        let key = vip_key(r.vip)?;
        let want = typed::backends(r.backends, &key, "backends")?;
        let (vip, changes, revision, generation, commit) = {
            let mut c = self.control()?;
            check_revision(&c, r.expected_revision)?;
            let mut trial = c.state().clone();
            let changes = trial
                .set_backends(&key, &want)
                .map_err(|e| status(e.into()))?;
            let commit = if changes.is_empty() || r.dry_run {
                None
            } else {
                let what = format!("backends of {key} set: {}", changes.join("; "));
                let ((), commit) = c
                    .change(&what, |s| s.set_backends(&key, &want).map(|_| ()))
                    .map_err(status)?;
                Some(commit)
            };
            let shown = if r.dry_run { &trial } else { c.state() };
            let vip = shown
                .vips()
                .get(&key)
                .map(|v| pb_vip(&c, &key, v))
                .ok_or_else(|| status(vip_missing(&key)))?;
            (vip, changes, c.state().revision, c.generation(), commit)
        };
        let generation = match commit {
            Some(commit) => {
                commit.durable().await.map_err(status)?;
                self.control()?.generation()
            }
            None => generation,
        };
        Ok(Response::new(pb::SetBackendsResponse {
            vip: Some(vip),
            changes,
            revision,
            snapshot_generation: generation,
        }))
    }

    async fn export(&self, _: Request<pb::Empty>) -> Result<Response<pb::ExportResponse>, Status> {
        let c = self.control()?;
        // What instances share: not their own local_addresses.
        let text = toml::to_string_pretty(&c.state().shared_config())
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ExportResponse {
            toml: text,
            revision: c.state().revision,
            config: Some(typed::pb_config(c.state())),
        }))
    }

    async fn list_health(
        &self,
        _: Request<pb::Empty>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let c = self.control()?;
        let mut backends: Vec<pb::BackendHealth> = c
            .health_all()
            .map(|((vip, addr), h)| pb::BackendHealth {
                vip: Some(pb_key(vip)),
                address: addr.to_string(),
                health: if h.healthy {
                    pb::Health::Healthy
                } else {
                    pb::Health::Unhealthy
                } as i32,
                detail: h.detail.clone(),
                consecutive_successes: h.successes,
                consecutive_failures: h.failures,
                via: h.via.to_string(),
                real: h.real.as_ref().map(pb_path),
                vip_path: h.vip_path.as_ref().map(pb_path),
            })
            .collect();
        backends.sort_by(|a, b| {
            (format!("{:?}", a.vip), &a.address).cmp(&(format!("{:?}", b.vip), &b.address))
        });
        Ok(Response::new(pb::HealthResponse {
            backends,
            conflicts: c.vip_conflicts(),
        }))
    }

    async fn get_stats(&self, _: Request<pb::Empty>) -> Result<Response<pb::Stats>, Status> {
        let workers = self
            .lcores
            .iter()
            .zip(self.stats.iter())
            .map(|(&lcore, s)| pb_worker_stats(lcore, s))
            .collect();
        let c = self.control()?;
        let snap = c.snapshot();
        // Counters that only go up (crate::traffic): a backend's since it
        // took its slot, a VIP's over every backend it ever had.
        let ledger = c.traffic();
        let vips = snap
            .vips()
            .iter()
            .map(|v| {
                let backends: Vec<pb::BackendStats> = v
                    .backends
                    .iter()
                    .filter_map(|&slot| {
                        let b = snap.backend(slot)?;
                        let t = ledger.backend(slot, &self.stats);
                        Some(pb::BackendStats {
                            address: b.addr.to_string(),
                            packets: t.packets,
                            bytes: t.bytes,
                            new_flows: t.new_flows,
                        })
                    })
                    .collect();
                let t = ledger.vip(&v.key, &self.stats);
                pb::VipStats {
                    key: Some(pb_key(&v.key)),
                    packets: t.packets,
                    bytes: t.bytes,
                    new_flows: t.new_flows,
                    backends,
                }
            })
            .collect();
        drop(c);
        Ok(Response::new(pb::Stats {
            workers,
            vips,
            snapshot_all_workers: delay_buckets(&WorkerStats::all_workers(&self.stats)),
        }))
    }

    async fn get_info(&self, _: Request<pb::Empty>) -> Result<Response<pb::Info>, Status> {
        let c = self.control()?;
        let announced = c.announced().iter().map(ToString::to_string).collect();
        Ok(Response::new(pb::Info {
            port: self.port.clone(),
            mac: c.mac().to_string(),
            worker_lcores: self.lcores.clone(),
            eal_args: self.eal_args.clone(),
            snapshot_generation: c.generation(),
            state_file: c
                .state_path()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            config_digest: c.state().digest(),
            config_revision: c.state().revision,
            local_addresses: c
                .state()
                .local_addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            tunnel_sources: c
                .state()
                .tunnel_sources
                .iter()
                .map(ToString::to_string)
                .collect(),
            routes: c
                .state()
                .routes
                .iter()
                .map(|r| pb::TunnelRoute {
                    prefix: r.prefix.to_string(),
                    gateway: r.gateway.to_string(),
                    mac: r.mac.map(|m| m.to_string()).unwrap_or_default(),
                    effective_mac: c
                        .effective_mac(&r.gateway, r.mac)
                        .map(|m| m.to_string())
                        .unwrap_or_default(),
                })
                .collect(),
            mtu: u32::from(c.mtu()),
            announced,
            announcing: c.announcing(),
            shutting_down: c.shutting_down(),
        }))
    }
}

/// A histogram as the API gives it: its buckets that have a count.
macro_rules! pb_worker_stats {
    ($([$name:ident, $kind:ident, $help:literal]),+ $(,)?) => {
        /// A worker's counters in the API's form: every counter of
        /// `lb_core::for_each_counter!` under its own name (the literal names
        /// every field, so a counter missing from `lb.proto`, or a field of
        /// `WorkerStats` not filled, does not compile).
        pub fn pb_worker_stats(lcore: u32, s: &WorkerStats) -> pb::WorkerStats {
            let c = s.read();
            pb::WorkerStats {
                lcore,
                $($name: c.$name,)+
                snapshot_generation: s.snapshot_generation.get(),
                snapshot_adoption: delay_buckets(&s.snapshot_adoption.read()),
                drops: DropReason::ALL
                    .iter()
                    .map(|r| pb::Counter {
                        name: r.as_str().into(),
                        value: c.drop_count(*r),
                    })
                    .collect(),
            }
        }
    };
}
lb_core::for_each_counter!(pb_worker_stats);

fn delay_buckets(d: &Delays) -> Vec<pb::DelayBucket> {
    d.nonzero()
        .map(|(max_us, count)| pb::DelayBucket { max_us, count })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::stats::COUNTERS;
    use prost::Message;

    #[test]
    fn a_check_says_its_path_auto_by_default() {
        let req = |via: &str| pb::HealthCheck {
            kind: "tcp".into(),
            via: via.into(),
            ..Default::default()
        };
        assert_eq!(check(req("")).unwrap().via, CheckVia::Auto);
        assert_eq!(check(req("auto")).unwrap().via, CheckVia::Auto);
        assert_eq!(check(req("real")).unwrap().via, CheckVia::Real);
        let vip = check(req("vip")).unwrap();
        assert_eq!(vip.via, CheckVia::Vip);
        assert_eq!(pb_check(&vip).via, "vip");
        assert_eq!(check(pb_check(&vip)).unwrap(), vip, "round trip");
        let e = check(req("lo")).unwrap_err();
        assert!(e.message().contains("backend.check.via"), "{e:?}");
    }

    #[test]
    fn error_messages_are_bounded() {
        let huge = "x".repeat(20_000);
        let e = invalid("toml", &huge);
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(
            e.message().len() < MAX_MESSAGE + 40,
            "{}",
            e.message().len()
        );
        assert!(
            e.message().ends_with("(18982 more bytes)"),
            "{}",
            &e.message()[1000..]
        );
        // Never cut inside a character.
        let wide = bounded("é".repeat(1000));
        assert!(wide.starts_with("éé") && wide.contains("... ("));
        assert_eq!(bounded("short".into()), "short");
    }

    #[test]
    fn a_udp_check_carries_its_payload_and_others_refuse_one() {
        let req = |kind: &str, payload: &str| pb::HealthCheck {
            kind: kind.into(),
            payload: payload.into(),
            ..Default::default()
        };
        let c = check(req("udp", "")).unwrap();
        assert_eq!(
            c.kind,
            CheckKind::Udp {
                payload: crate::state::DEFAULT_UDP_PAYLOAD.into()
            }
        );
        let c = check(req("udp", "PING")).unwrap();
        assert_eq!(pb_check(&c).payload, "PING");
        assert_eq!(check(pb_check(&c)).unwrap(), c, "round trip");
        for kind in ["tcp", "http:/"] {
            let e = check(req(kind, "PING")).unwrap_err();
            assert!(e.message().contains("backend.check.payload"), "{e:?}");
        }
    }

    #[test]
    fn a_check_without_a_timeout_gets_one_that_fits_its_interval() {
        let req = |interval_ms, timeout_ms| pb::HealthCheck {
            kind: "http:/".into(),
            interval_ms,
            timeout_ms,
            ..Default::default()
        };
        assert_eq!(check(req(500, 0)).unwrap().timeout_ms, 250);
        assert_eq!(
            check(req(0, 0)).unwrap().timeout_ms,
            1000,
            "the default interval's"
        );
        assert_eq!(
            check(req(10_000, 0)).unwrap().timeout_ms,
            1000,
            "at most 1 s"
        );
        assert_eq!(
            check(req(500, 400)).unwrap().timeout_ms,
            400,
            "a given timeout stays"
        );
    }

    /// `pb_worker_stats` names every counter (it does not compile
    /// otherwise); this checks the wire side: `lb.proto`'s `WorkerStats`
    /// has a field of each counter's name, and carries its value.
    #[test]
    fn the_api_carries_every_counter_under_its_name() {
        let set =
            prost_types::FileDescriptorSet::decode(lb_proto::v1::FILE_DESCRIPTOR_SET).unwrap();
        let msg = set
            .file
            .iter()
            .flat_map(|f| &f.message_type)
            .find(|m| m.name() == "WorkerStats")
            .expect("WorkerStats in lb.proto");
        let fields: Vec<&str> = msg.field.iter().map(|f| f.name()).collect();
        for info in &COUNTERS {
            assert!(
                fields.contains(&info.name),
                "lb.proto's WorkerStats lacks {}",
                info.name
            );
        }
        let s = WorkerStats::default();
        s.rx_bytes.add(7);
        s.neigh_requests.add(9);
        s.active_flows.set(3);
        s.drop(DropReason::NotForUs).add(4);
        let pb = pb_worker_stats(5, &s);
        assert_eq!(
            (pb.lcore, pb.rx_bytes, pb.neigh_requests, pb.active_flows),
            (5, 7, 9, 3)
        );
        let drops: Vec<(&str, u64)> = pb
            .drops
            .iter()
            .map(|d| (d.name.as_str(), d.value))
            .collect();
        assert_eq!(drops.len(), DropReason::COUNT);
        assert!(drops.contains(&("not_for_us", 4)));
    }
}
