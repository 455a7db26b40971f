//! The desired state: VIPs and their backends as the operator asked for
//! them, validated, with a stable identity for every backend, and persisted
//! to the state file (the `lb.toml` format of [`crate::config`]) so that
//! `lbd` restarts into the same state.
//!
//! Identity: each backend holds a [`BackendRef`] (slot and incarnation) for
//! its whole life, so changing one VIP never renumbers another VIP's
//! backends, and a flow pinned to a removed backend can never follow a
//! newcomer that reuses the slot (its incarnation differs).
//!
//! Every change is checked in full before anything is modified: a refused
//! request leaves the state exactly as it was.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use lb_core::flow::IdleTimeouts;
use lb_core::maglev::is_prime;
use lb_core::packet::MacAddr;
use lb_core::quic::{QuicMode, ServerId};
use lb_core::snapshot::MAX_BACKEND_SLOTS;
use lb_core::snapshot::{
    BackendRef, BackendSpec, BackendState, Proto, SnapshotSpec, VipKey, VipSpec,
};
use lb_core::tunnel::{Encap, Tunnel, DEFAULT_GUE_PORT, DEFAULT_VXLAN_PORT, MAX_VNI};

use crate::config::{self, Config};
pub use crate::config::{CheckVia, DrainFlows, ForwardMethod};
use crate::quic::{check_quic_backends, check_quic_mode};

pub const DEFAULT_TABLE_SIZE: u32 = config::DEFAULT_TABLE_SIZE;
/// Smallest and largest Maglev table sizes accepted.
pub const MIN_TABLE_SIZE: u32 = 251;
pub const MAX_TABLE_SIZE: u32 = 4_194_301;
/// Largest backend weight accepted.
pub const MAX_WEIGHT: u32 = 10_000;

/// Why a change was refused; each kind maps to one gRPC status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// INVALID_ARGUMENT, naming the field.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// ALREADY_EXISTS: a `kind` ("vip", "backend") named `name`.
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// NOT_FOUND
    #[error("{kind} {name} not found")]
    NotFound { kind: &'static str, name: String },
    /// FAILED_PRECONDITION
    #[error("{0}")]
    Precondition(String),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> StateError {
    StateError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// How a backend's health is checked. Checks are ordinary connections from
/// the host, so they leave through the exception path onto the data network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// Port to check; `None`: the VIP's port.
    pub port: Option<u16>,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that bring an up backend down.
    pub fall: u32,
    /// To the backend's address, or along the DR path to the VIP.
    pub via: CheckVia,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connection must be accepted.
    Tcp,
    /// `GET path` must answer with `status`.
    Http { path: String, status: u16 },
    /// `payload` sent in one datagram must get a datagram back.
    Udp { payload: String },
}

/// A `udp` check's datagram when the check names none.
pub const DEFAULT_UDP_PAYLOAD: &str = "lbd-health\n";
/// The longest path an HTTP check requests (bytes), as a UDP check's payload.
pub const MAX_HTTP_PATH: usize = 1024;

impl HealthCheck {
    /// The timeout of a check that names none: half its interval, at most
    /// 1000 ms, so any valid interval has a valid default (a 500 ms interval
    /// gets 250 ms).
    pub fn default_timeout(interval_ms: u32) -> u32 {
        (interval_ms / 2).clamp(1, 1000)
    }

    pub fn new(kind: CheckKind) -> HealthCheck {
        HealthCheck {
            kind,
            port: None,
            interval_ms: 2000,
            timeout_ms: 1000,
            rise: 2,
            fall: 3,
            via: CheckVia::Auto,
        }
    }

    /// `tcp`, `http:/path` or `none` (the CLI's and the file's short form).
    pub fn parse_kind(s: &str) -> Result<Option<CheckKind>, StateError> {
        match s {
            "none" | "" => Ok(None),
            "tcp" => Ok(Some(CheckKind::Tcp)),
            "udp" => Ok(Some(CheckKind::Udp {
                payload: DEFAULT_UDP_PAYLOAD.into(),
            })),
            _ => match s.strip_prefix("http:") {
                // The path goes into the request line as it is: no
                // whitespace, and no control character (NUL, ESC, DEL).
                Some(path)
                    if path.starts_with('/')
                        && !path.contains(|c: char| c.is_whitespace() || c.is_control()) =>
                {
                    Ok(Some(CheckKind::Http {
                        path: path.to_string(),
                        status: 200,
                    }))
                }
                _ => Err(invalid(
                    "backend.check",
                    format!("{s:?}: expected tcp, http:/path, udp or none"),
                )),
            },
        }
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CheckKind::Tcp => f.write_str("tcp"),
            CheckKind::Http { path, .. } => write!(f, "http:{path}"),
            CheckKind::Udp { .. } => f.write_str("udp"),
        }
    }
}

/// An IPv4 or IPv6 prefix, `10.20.0.0/16`: its host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The address as the top bits of a u128, and the family's length.
    fn bits(a: &IpAddr) -> (u128, u8) {
        match a {
            IpAddr::V4(v4) => (u128::from(u32::from(*v4)) << 96, 32),
            IpAddr::V6(v6) => (u128::from(*v6), 128),
        }
    }

    fn mask(len: u8) -> u128 {
        match len {
            0 => 0,
            l => u128::MAX << (128 - u32::from(l)),
        }
    }

    /// Whether `ip` (of the prefix's family) is inside it.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let m = Prefix::mask(self.len);
        Prefix::bits(&self.addr).0 & m == Prefix::bits(ip).0 & m
    }
}

impl std::str::FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?}: expected ADDRESS/LENGTH, e.g. 10.20.0.0/16"))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?}: {a:?} is not an IPv4 or IPv6 address"))?;
        let (bits, max) = Prefix::bits(&addr);
        let len: u8 = l
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: the length {l:?} is not 0-{max}"))?;
        let net = bits & Prefix::mask(len);
        if net != bits {
            let net = match addr {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from((net >> 96) as u32)),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(net)),
            };
            return Err(format!(
                "{s:?} has host bits set: the prefix is {net}/{len}"
            ));
        }
        Ok(Prefix { addr, len })
    }
}

impl std::fmt::Display for Prefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A `[[route]]`: tunnelled backends in `prefix` are reached through
/// `gateway`, at its static `mac` or the one resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: Prefix,
    pub gateway: IpAddr,
    pub mac: Option<MacAddr>,
}

/// What an operator can set on a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    pub weight: u32,
    /// DR: the backend's static MAC (`None`: resolved); VXLAN: the MAC of
    /// its VXLAN device, the inner frame's destination (required); IPIP,
    /// GUE: none.
    pub mac: Option<MacAddr>,
    /// How its packets reach it, and the method's parameters: the UDP port
    /// of GUE and VXLAN (`None`: the method's default), the VNI of VXLAN.
    pub forward: ForwardMethod,
    pub tunnel_port: Option<u16>,
    pub vni: Option<u32>,
    /// The server id its QUIC connection IDs carry (used while its VIP is
    /// in QUIC mode; kept while it is not).
    pub server_id: Option<ServerId>,
    pub drain: bool,
    /// Administratively down.
    pub down: bool,
    pub check: Option<HealthCheck>,
    /// Load feedback and caps ([`crate::feedback`]).
    pub load: LoadSettings,
}

/// How a backend's load steers its new flows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadSettings {
    /// The feedback agent polled for a weight percentage.
    pub agent: Option<AgentCheck>,
    /// Above this many active flows (over all workers) the backend takes no
    /// new ones, until it falls below `min_flows`.
    pub max_flows: Option<u32>,
    /// The low mark; default 90% of `max_flows`.
    pub min_flows: Option<u32>,
}

impl LoadSettings {
    /// The (high, low) marks of the cap, if any.
    pub fn cap(&self) -> Option<(u32, u32)> {
        self.max_flows
            .map(|max| (max, self.min_flows.unwrap_or(max - max / 10)))
    }
}

/// A feedback agent on the backend, polled every interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCheck {
    pub kind: AgentKind,
    pub port: u16,
    pub interval_ms: u32,
    pub timeout_ms: u32,
}

/// The agent's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentKind {
    /// HAProxy's agent-check: connect, read one line ("75%", "drain", ...).
    Tcp,
    /// `GET path`, a JSON object (`{"weight_percent": 75, "state": "drain"}`).
    Http { path: String },
}

/// The agent's port when none is given.
pub const DEFAULT_AGENT_PORT: u16 = 10999;

impl AgentKind {
    /// `tcp` or `http:/path`.
    pub fn parse(s: &str) -> Result<AgentKind, StateError> {
        match s {
            "tcp" => Ok(AgentKind::Tcp),
            _ => match s.strip_prefix("http:") {
                Some(path)
                    if path.starts_with('/')
                        && path.len() <= MAX_HTTP_PATH
                        && !path.contains(|c: char| c.is_whitespace() || c.is_control()) =>
                {
                    Ok(AgentKind::Http {
                        path: path.to_string(),
                    })
                }
                _ => Err(invalid(
                    "backend.agent.kind",
                    format!("{s:?}: expected tcp or http:/path"),
                )),
            },
        }
    }
}

impl std::fmt::Display for AgentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentKind::Tcp => f.write_str("tcp"),
            AgentKind::Http { path } => write!(f, "http:{path}"),
        }
    }
}

impl AgentCheck {
    pub fn new(kind: AgentKind) -> AgentCheck {
        AgentCheck {
            kind,
            port: DEFAULT_AGENT_PORT,
            interval_ms: 2000,
            timeout_ms: 1000,
        }
    }
}

impl BackendSettings {
    /// Whether its packets travel a tunnel (its MAC is then the next hop's).
    pub fn tunnelled(&self) -> bool {
        !self.forward.is_dr()
    }

    /// The encapsulation, for a tunnelled backend.
    pub fn encap(&self) -> Option<Encap> {
        match self.forward {
            ForwardMethod::Dr => None,
            ForwardMethod::Ipip => Some(Encap::Ipip),
            ForwardMethod::Gue => Some(Encap::Gue {
                port: self.tunnel_port.unwrap_or(DEFAULT_GUE_PORT),
            }),
            ForwardMethod::Vxlan => Some(Encap::Vxlan {
                port: self.tunnel_port.unwrap_or(DEFAULT_VXLAN_PORT),
                vni: self.vni.unwrap_or(0),
                inner_mac: self.mac.unwrap_or(MacAddr::ZERO),
            }),
        }
    }

    /// The tunnel's UDP port in use (GUE, VXLAN), 0 for the others.
    pub fn port_in_use(&self) -> u16 {
        match self.encap() {
            Some(Encap::Gue { port } | Encap::Vxlan { port, .. }) => port,
            _ => 0,
        }
    }

    /// The method in words with its parameters: `dr`, `ipip`, `gue:6080`,
    /// `vxlan:100` (the VNI; `vxlan:100@4790` off the default port).
    pub fn forward_text(&self) -> String {
        match self.encap() {
            None => "dr".into(),
            Some(Encap::Ipip) => "ipip".into(),
            Some(Encap::Gue { port }) => format!("gue:{port}"),
            Some(Encap::Vxlan { port, vni, .. }) if port == DEFAULT_VXLAN_PORT => {
                format!("vxlan:{vni}")
            }
            Some(Encap::Vxlan { port, vni, .. }) => format!("vxlan:{vni}@{port}"),
        }
    }

    /// Down wins over draining.
    pub fn state(&self) -> BackendState {
        if self.down {
            BackendState::Down
        } else if self.drain {
            BackendState::Draining
        } else {
            BackendState::Up
        }
    }
}

fn vip_not_found(key: &VipKey) -> StateError {
    StateError::NotFound {
        kind: "vip",
        name: key.to_string(),
    }
}

fn backend_not_found(key: &VipKey, addr: &IpAddr) -> StateError {
    StateError::NotFound {
        kind: "backend",
        name: format!("{addr} of vip {key}"),
    }
}

impl Default for BackendSettings {
    fn default() -> Self {
        BackendSettings {
            weight: 1,
            mac: None,
            forward: ForwardMethod::Dr,
            tunnel_port: None,
            vni: None,
            server_id: None,
            drain: false,
            down: false,
            check: None,
            load: LoadSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredBackend {
    pub id: BackendRef,
    pub settings: BackendSettings,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVip {
    pub table_size: u32,
    /// The VIP's own idle timeouts for established TCP and UDP flows (0: lbd's).
    pub idle: IdleTimeouts,
    /// The outer source of its tunnels per family (over the instance's).
    pub tunnel_sources: Vec<IpAddr>,
    /// QUIC mode: datagrams routed by the server id in their connection ID.
    pub quic: Option<QuicMode>,
    /// What a draining backend's flows do.
    pub drain: DrainFlows,
    pub backends: BTreeMap<IpAddr, DesiredBackend>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub local_addresses: Vec<IpAddr>,
    /// The instance's outer source of tunnels per family (at most one
    /// each); absent for a family: its first local address. Instance-local
    /// as `local_addresses` are: neither exported nor applied.
    pub tunnel_sources: Vec<IpAddr>,
    /// The instance's next hops for tunnelled backends beyond the segment
    /// (instance-local too); the longest prefix holding a backend wins.
    pub routes: Vec<Route>,
    /// Advanced by one with every accepted change ([`crate::hub::Control::change`]),
    /// kept in the state file: what a precondition names.
    pub revision: u64,
    vips: BTreeMap<VipKey, DesiredVip>,
    /// Incarnation last given out per slot, and the free slots.
    incarnations: Vec<u16>,
    free: Vec<u16>,
}

impl DesiredState {
    pub fn vips(&self) -> &BTreeMap<VipKey, DesiredVip> {
        &self.vips
    }

    pub fn create_vip(&mut self, key: VipKey, table_size: Option<u32>) -> Result<(), StateError> {
        check_vip_key(&key)?;
        let table_size = table_size.unwrap_or(DEFAULT_TABLE_SIZE);
        check_table_size(table_size, 0)?;
        if self.vips.contains_key(&key) {
            return Err(StateError::AlreadyExists {
                kind: "vip",
                name: key.to_string(),
            });
        }
        self.vips.insert(
            key,
            DesiredVip {
                table_size,
                idle: IdleTimeouts::default(),
                tunnel_sources: Vec::new(),
                quic: None,
                drain: DrainFlows::Keep,
                backends: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Make this state equal to `desired` (a whole configuration, e.g. from
    /// `lbctl apply`) with the fewest changes: backends that stay keep their
    /// identity and so their flows. Returns what changed, in words; empty
    /// when already converged. All or nothing: on error, `self` may be
    /// partly changed, so callers work on a copy ([`crate`]'s `change` does).
    pub fn converge(&mut self, desired: &DesiredState) -> Result<Vec<String>, StateError> {
        let mut changes = Vec::new();
        if self.local_addresses != desired.local_addresses {
            self.local_addresses = desired.local_addresses.clone();
            changes.push(format!("local addresses set to {:?}", self.local_addresses));
        }
        if self.tunnel_sources != desired.tunnel_sources {
            self.set_tunnel_sources(desired.tunnel_sources.clone())?;
            changes.push(format!("tunnel sources set to {:?}", self.tunnel_sources));
        }
        if self.routes != desired.routes {
            self.set_routes(desired.routes.clone())?;
            changes.push(format!(
                "routes set to [{}]",
                self.routes
                    .iter()
                    .map(|r| format!("{} via {}", r.prefix, r.gateway))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let gone: Vec<VipKey> = self
            .vips
            .keys()
            .filter(|k| !desired.vips.contains_key(k))
            .copied()
            .collect();
        for key in gone {
            self.delete_vip(&key)?;
            changes.push(format!("vip {key} deleted"));
        }
        for (key, want) in &desired.vips {
            if !self.vips.contains_key(key) {
                self.create_vip(*key, Some(want.table_size))?;
                self.vip_mut(key)?.idle = want.idle;
                changes.push(format!("vip {key} created"));
            }
            let removed: Vec<IpAddr> = self.vips[key]
                .backends
                .keys()
                .filter(|a| !want.backends.contains_key(a))
                .copied()
                .collect();
            // Removed first, so a smaller table size fits what stays.
            for addr in removed {
                self.remove_backend(key, &addr)?;
                changes.push(format!("backend {addr} removed from {key}"));
            }
            if self.vips[key].tunnel_sources != want.tunnel_sources {
                self.set_vip_tunnel_sources(key, want.tunnel_sources.clone())?;
                changes.push(format!(
                    "vip {key} tunnel sources set to {:?}",
                    want.tunnel_sources
                ));
            }
            if self.vips[key].idle != want.idle {
                self.vip_mut(key)?.idle = want.idle;
                changes.push(format!(
                    "vip {key} idle timeouts set to tcp {} s, udp {} s",
                    want.idle.tcp, want.idle.udp
                ));
            }
            if self.vips[key].quic != want.quic {
                check_quic_mode(key, want.quic)?;
                self.vip_mut(key)?.quic = want.quic;
                changes.push(format!(
                    "vip {key} quic server id length set to {}",
                    want.quic.map_or(0, |q| q.server_id_len)
                ));
            }
            if self.vips[key].drain != want.drain {
                self.vip_mut(key)?.drain = want.drain;
                changes.push(format!("vip {key} drain flows set to {}", want.drain));
            }
            if self.vips[key].table_size != want.table_size {
                check_table_size(want.table_size, want.backends.len())?;
                self.vip_mut(key)?.table_size = want.table_size;
                changes.push(format!("vip {key} table size set to {}", want.table_size));
            }
            let settings: BTreeMap<IpAddr, BackendSettings> = want
                .backends
                .iter()
                .map(|(a, b)| (*a, b.settings.clone()))
                .collect();
            changes.extend(self.set_backends(key, &settings)?);
        }
        // Backends that stayed as they were must still find a tunnel source.
        self.check_tunnels()?;
        Ok(changes)
    }

    /// Set the instance's tunnel sources (at most one per family).
    pub fn set_tunnel_sources(&mut self, sources: Vec<IpAddr>) -> Result<(), StateError> {
        check_sources(&sources, "tunnel_sources")?;
        self.tunnel_sources = sources;
        Ok(())
    }

    /// Set a VIP's own tunnel sources (at most one per family).
    pub fn set_vip_tunnel_sources(
        &mut self,
        key: &VipKey,
        sources: Vec<IpAddr>,
    ) -> Result<(), StateError> {
        check_sources(&sources, "vip.tunnel_sources")?;
        self.vip_mut(key)?.tunnel_sources = sources;
        Ok(())
    }

    /// Set the instance's routes: each prefix once, its gateway of its family.
    pub fn set_routes(&mut self, routes: Vec<Route>) -> Result<(), StateError> {
        for (i, r) in routes.iter().enumerate() {
            if routes[..i].iter().any(|o| o.prefix == r.prefix) {
                return Err(invalid(
                    "route.prefix",
                    format!("{} is given twice", r.prefix),
                ));
            }
            if r.gateway.is_ipv4() != r.prefix.addr.is_ipv4() {
                return Err(invalid(
                    "route.gateway",
                    format!(
                        "{} is not of the family of its prefix {}",
                        r.gateway, r.prefix
                    ),
                ));
            }
            if r.gateway.is_unspecified() || r.gateway.is_multicast() || r.gateway.is_loopback() {
                return Err(invalid(
                    "route.gateway",
                    format!("{} is not a unicast host address", r.gateway),
                ));
            }
            if let Some(m) = r.mac {
                if m.is_multicast() || m == MacAddr::ZERO {
                    return Err(invalid(
                        "route.mac",
                        format!("route {}: {m} is not a unicast MAC address", r.prefix),
                    ));
                }
            }
        }
        self.routes = routes;
        Ok(())
    }

    /// The outer source of the tunnel to backend `addr` of `key`: the VIP's
    /// tunnel source of the backend's family, else the instance's, else its
    /// first local address of that family.
    pub fn tunnel_source(&self, key: &VipKey, addr: &IpAddr) -> Option<IpAddr> {
        let same = |a: &&IpAddr| a.is_ipv4() == addr.is_ipv4();
        self.vips
            .get(key)
            .and_then(|v| v.tunnel_sources.iter().find(same))
            .or_else(|| self.tunnel_sources.iter().find(same))
            .or_else(|| self.local_addresses.iter().find(same))
            .copied()
    }

    /// The route a tunnelled backend at `addr` takes: the longest prefix
    /// holding it; `None`: on the segment.
    pub fn route_to(&self, addr: &IpAddr) -> Option<&Route> {
        self.routes
            .iter()
            .filter(|r| r.prefix.contains(addr))
            .max_by_key(|r| r.prefix.len)
    }

    /// The neighbour a backend's packets go to, with its static MAC if it
    /// has one: a DR backend itself (its static MAC); a tunnelled one its
    /// route's gateway (the route's MAC), else itself on the segment
    /// (resolved: a VXLAN backend's `mac` is its VXLAN device's, not its
    /// NIC's).
    pub fn next_hop(&self, addr: &IpAddr, s: &BackendSettings) -> (IpAddr, Option<MacAddr>) {
        if !s.tunnelled() {
            return (*addr, s.mac);
        }
        match self.route_to(addr) {
            Some(r) => (r.gateway, r.mac),
            None => (*addr, None),
        }
    }

    /// A tunnelled backend's tunnel source: one of its family (the
    /// instance's own settings count, so a whole configuration built alone,
    /// as Apply's, is checked once converged: [`DesiredState::converge`],
    /// `Control::change`).
    fn check_tunnel(
        &self,
        key: &VipKey,
        addr: &IpAddr,
        s: &BackendSettings,
    ) -> Result<(), StateError> {
        if !s.tunnelled() {
            return Ok(());
        }
        if self.tunnel_source(key, addr).is_none() {
            let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
            return Err(invalid(
                "backend.forward",
                format!(
                    "vip {key}, backend {addr}: {} backend needs a tunnel source of its family \
                     ({family}): give the VIP's tunnel_sources, the top-level tunnel_sources, or \
                     a local_addresses entry of that family",
                    s.forward.a()
                ),
            ));
        }
        Ok(())
    }

    /// Every tunnelled backend has a tunnel source (see `check_tunnel`).
    pub fn check_tunnels(&self) -> Result<(), StateError> {
        for (key, v) in &self.vips {
            for (addr, b) in &v.backends {
                self.check_tunnel(key, addr, &b.settings)?;
            }
        }
        Ok(())
    }

    /// Make `key`'s backends exactly `want`: those that stay keep their
    /// identity (and flows), updated where their settings differ. Returns
    /// what changed, in words.
    pub fn set_backends(
        &mut self,
        key: &VipKey,
        want: &BTreeMap<IpAddr, BackendSettings>,
    ) -> Result<Vec<String>, StateError> {
        let mut changes = Vec::new();
        // The QUIC ids of the set as a whole: one by one, two backends
        // swapping ids would collide half-way.
        check_quic_backends(key, self.vip_mut(key)?.quic, want.iter())?;
        let removed: Vec<IpAddr> = self
            .vip_mut(key)?
            .backends
            .keys()
            .filter(|a| !want.contains_key(a))
            .copied()
            .collect();
        for addr in removed {
            self.remove_backend(key, &addr)?;
            changes.push(format!("backend {addr} removed from {key}"));
        }
        for (addr, settings) in want {
            match self.vips[key].backends.get(addr) {
                None => {
                    self.insert_backend(key, *addr, settings.clone(), false)?;
                    changes.push(format!("backend {addr} added to {key}"));
                }
                Some(cur) if cur.settings != *settings => {
                    self.replace_backend(key, addr, settings.clone(), false)?;
                    changes.push(format!("backend {addr} of {key} updated"));
                }
                Some(_) => {}
            }
        }
        Ok(changes)
    }

    /// Set a VIP's own idle timeouts (seconds; 0 keeps lbd's defaults).
    pub fn set_idle_timeouts(
        &mut self,
        key: &VipKey,
        idle: IdleTimeouts,
    ) -> Result<(), StateError> {
        self.vip_mut(key)?.idle = idle;
        Ok(())
    }

    pub fn delete_vip(&mut self, key: &VipKey) -> Result<(), StateError> {
        let vip = self.vips.remove(key).ok_or_else(|| vip_not_found(key))?;
        for b in vip.backends.values() {
            self.free.push(b.id.slot);
        }
        Ok(())
    }

    /// Set a VIP's QUIC mode (`None`: off, always allowed; the server ids
    /// stay). On, the VIP must be UDP and every backend have an id of the
    /// length given, each its own.
    pub fn set_vip_quic(&mut self, key: &VipKey, quic: Option<QuicMode>) -> Result<(), StateError> {
        check_quic_mode(key, quic)?;
        let vip = self.vips.get(key).ok_or_else(|| vip_not_found(key))?;
        check_quic_backends(
            key,
            quic,
            vip.backends.iter().map(|(a, b)| (a, &b.settings)),
        )?;
        self.vip_mut(key)?.quic = quic;
        Ok(())
    }

    /// Set what a VIP's draining backends' flows do.
    pub fn set_vip_drain(&mut self, key: &VipKey, drain: DrainFlows) -> Result<(), StateError> {
        self.vip_mut(key)?.drain = drain;
        Ok(())
    }

    pub fn add_backend(
        &mut self,
        key: &VipKey,
        addr: IpAddr,
        settings: BackendSettings,
    ) -> Result<BackendRef, StateError> {
        self.insert_backend(key, addr, settings, true)
    }

    /// `add_backend`; `quic`: check its server id against the VIP's others
    /// (`set_backends` checks the whole set first instead).
    fn insert_backend(
        &mut self,
        key: &VipKey,
        addr: IpAddr,
        settings: BackendSettings,
        quic: bool,
    ) -> Result<BackendRef, StateError> {
        check_settings(&settings)?;
        check_backend_addr(key, &addr)?;
        check_forward_family(key, &addr, &settings)?;
        let vip = self.vips.get(key).ok_or_else(|| vip_not_found(key))?;
        if vip.backends.contains_key(&addr) {
            return Err(StateError::AlreadyExists {
                kind: "backend",
                name: format!("{addr} of vip {key}"),
            });
        }
        if quic {
            let others = vip.backends.iter().map(|(a, b)| (a, &b.settings));
            check_quic_backends(key, vip.quic, others.chain([(&addr, &settings)]))?;
        }
        check_table_size(vip.table_size, vip.backends.len() + 1)?;
        let id = self.allocate()?;
        let vip = self.vips.get_mut(key).expect("checked above");
        vip.backends.insert(addr, DesiredBackend { id, settings });
        Ok(id)
    }

    pub fn remove_backend(&mut self, key: &VipKey, addr: &IpAddr) -> Result<(), StateError> {
        let b = self
            .vip_mut(key)?
            .backends
            .remove(addr)
            .ok_or_else(|| backend_not_found(key, addr))?;
        self.free.push(b.id.slot);
        Ok(())
    }

    /// Change a backend's settings in place; its identity (and so its flows) stays.
    pub fn update_backend(
        &mut self,
        key: &VipKey,
        addr: &IpAddr,
        settings: BackendSettings,
    ) -> Result<(), StateError> {
        self.replace_backend(key, addr, settings, true)
    }

    /// `update_backend`; `quic` as `insert_backend`'s.
    fn replace_backend(
        &mut self,
        key: &VipKey,
        addr: &IpAddr,
        settings: BackendSettings,
        quic: bool,
    ) -> Result<(), StateError> {
        check_settings(&settings)?;
        check_forward_family(key, addr, &settings)?;
        if quic {
            let vip = self.vips.get(key).ok_or_else(|| vip_not_found(key))?;
            if vip.backends.contains_key(addr) {
                let others = vip
                    .backends
                    .iter()
                    .filter(|(a, _)| *a != addr)
                    .map(|(a, b)| (a, &b.settings));
                check_quic_backends(key, vip.quic, others.chain([(addr, &settings)]))?;
            }
        }
        let b = self
            .vip_mut(key)?
            .backends
            .get_mut(addr)
            .ok_or_else(|| backend_not_found(key, addr))?;
        b.settings = settings;
        Ok(())
    }

    fn vip_mut(&mut self, key: &VipKey) -> Result<&mut DesiredVip, StateError> {
        self.vips.get_mut(key).ok_or_else(|| vip_not_found(key))
    }

    fn allocate(&mut self) -> Result<BackendRef, StateError> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.incarnations.len() < MAX_BACKEND_SLOTS => {
                self.incarnations.push(0);
                (self.incarnations.len() - 1) as u16
            }
            None => {
                return Err(StateError::Precondition(format!(
                    "all {MAX_BACKEND_SLOTS} backend slots are in use"
                )));
            }
        };
        let inc = &mut self.incarnations[usize::from(slot)];
        *inc = inc.wrapping_add(1).max(1);
        Ok(BackendRef {
            slot,
            incarnation: *inc,
        })
    }

    /// The snapshot this state asks for; `mac_of` supplies resolved MACs of
    /// next hops without a static one: DR backends, the gateways of
    /// tunnelled ones (or themselves on the segment, see
    /// [`DesiredState::next_hop`]).
    pub fn to_spec(
        &self,
        generation: u64,
        port_mac: MacAddr,
        mac_of: impl Fn(&IpAddr) -> Option<MacAddr>,
    ) -> SnapshotSpec {
        let vips = self
            .vips
            .iter()
            .map(|(key, v)| VipSpec {
                key: *key,
                idle: v.idle,
                table_size: v.table_size,
                quic: v.quic,
                drain: v.drain.to_core(),
                backends: v
                    .backends
                    .iter()
                    .map(|(addr, b)| {
                        let (hop, fixed) = self.next_hop(addr, &b.settings);
                        let tunnel = b.settings.encap().and_then(|encap| {
                            self.tunnel_source(key, addr)
                                .map(|source| Tunnel { encap, source })
                        });
                        // A tunnelled backend without a source (validation
                        // refuses one) takes no traffic rather than DR.
                        let usable = tunnel.is_some() || !b.settings.tunnelled();
                        BackendSpec {
                            id: b.id,
                            addr: *addr,
                            weight: b.settings.weight,
                            mac: fixed.or_else(|| mac_of(&hop)).filter(|_| usable),
                            state: b.settings.state(),
                            tunnel,
                            server_id: b.settings.server_id,
                        }
                    })
                    .collect(),
            })
            .collect();
        SnapshotSpec {
            generation,
            mac: port_mac,
            local: self.local_addresses.clone(),
            vips,
        }
    }

    /// Every health-checked backend: (VIP, address, check).
    pub fn checks(&self) -> Vec<(VipKey, IpAddr, HealthCheck)> {
        self.vips
            .iter()
            .flat_map(|(k, v)| {
                v.backends
                    .iter()
                    .filter_map(move |(a, b)| b.settings.check.clone().map(|c| (*k, *a, c)))
            })
            .collect()
    }

    /// Every backend: (VIP, address, settings).
    pub fn backends(&self) -> impl Iterator<Item = (&VipKey, &IpAddr, &BackendSettings)> {
        self.vips
            .iter()
            .flat_map(|(k, v)| v.backends.iter().map(move |(a, b)| (k, a, &b.settings)))
    }

    /// Every neighbour to resolve or pin, once, with its static MAC if it
    /// has one (a static MAC wins over none): DR backends, the gateways
    /// tunnelled backends use, and tunnelled backends on the segment. A
    /// tunnelled backend behind a gateway is not resolved itself.
    pub fn next_hops(&self) -> Vec<(IpAddr, Option<MacAddr>)> {
        let mut hops: BTreeMap<IpAddr, Option<MacAddr>> = BTreeMap::new();
        for (_, addr, s) in self.backends() {
            let (hop, mac) = self.next_hop(addr, s);
            let e = hops.entry(hop).or_insert(mac);
            if e.is_none() {
                *e = mac;
            }
        }
        hops.into_iter().collect()
    }

    /// Build from the file format and check that every tunnelled backend has
    /// a tunnel source: a state file lbd starts from.
    pub fn load(c: &Config) -> Result<DesiredState, StateError> {
        let s = DesiredState::from_config(c)?;
        s.check_tunnels()?;
        Ok(s)
    }

    /// Build from the file format, validating every entry as the API would
    /// (a tunnel source, which may be the instance's own, only once
    /// converged: see [`DesiredState::load`]).
    pub fn from_config(c: &Config) -> Result<DesiredState, StateError> {
        let mut s = DesiredState {
            local_addresses: c.local_addresses.clone(),
            revision: c.revision,
            ..DesiredState::default()
        };
        s.set_tunnel_sources(c.tunnel_sources.clone())?;
        let routes = c
            .routes
            .iter()
            .map(|r| {
                let prefix = r
                    .prefix
                    .parse::<Prefix>()
                    .map_err(|e| invalid("route.prefix", e))?;
                let mac = r
                    .mac
                    .as_deref()
                    .map(str::parse::<MacAddr>)
                    .transpose()
                    .map_err(|e| invalid("route.mac", format!("route {prefix}: {e}")))?;
                Ok(Route {
                    prefix,
                    gateway: r.gateway,
                    mac,
                })
            })
            .collect::<Result<Vec<Route>, StateError>>()?;
        s.set_routes(routes)?;
        for v in &c.vips {
            let key = VipKey {
                addr: v.address,
                port: v.port,
                proto: match v.protocol {
                    config::Protocol::Tcp => Proto::Tcp,
                    config::Protocol::Udp => Proto::Udp,
                },
            };
            s.create_vip(key, Some(v.table_size))?;
            s.set_idle_timeouts(
                &key,
                IdleTimeouts {
                    tcp: v.tcp_idle_timeout,
                    udp: v.udp_idle_timeout,
                },
            )?;
            s.set_vip_tunnel_sources(&key, v.tunnel_sources.clone())
                .map_err(|e| match e {
                    StateError::Invalid { field, reason } => {
                        invalid(field, format!("vip {key}: {reason}"))
                    }
                    e => e,
                })?;
            // On the empty VIP: its backends are checked against it as added.
            let quic = (v.quic_server_id_len != 0).then_some(QuicMode {
                server_id_len: v.quic_server_id_len,
            });
            s.set_vip_quic(&key, quic)?;
            s.set_vip_drain(&key, v.drain_flows)?;
            for b in &v.backends {
                let mac = b
                    .mac
                    .as_deref()
                    .map(str::parse::<MacAddr>)
                    .transpose()
                    .map_err(|e| {
                        invalid(
                            "backend.mac",
                            format!("vip {key}, backend {}: {e}", b.address),
                        )
                    })?;
                let server_id = b
                    .server_id
                    .as_deref()
                    .map(ServerId::from_hex)
                    .transpose()
                    .map_err(|e| {
                        invalid(
                            "backend.server_id",
                            format!("vip {key}, backend {}: {e}", b.address),
                        )
                    })?;
                let check = match &b.check {
                    None => None,
                    Some(c) if c.payload.is_some() && c.kind != "udp" => {
                        return Err(invalid(
                            "backend.check.payload",
                            format!(
                                "vip {key}, backend {}: only a udp check sends a payload, not {}",
                                b.address, c.kind
                            ),
                        ));
                    }
                    Some(c) => {
                        let kind = match HealthCheck::parse_kind(&c.kind)? {
                            Some(CheckKind::Http { path, .. }) => Some(CheckKind::Http {
                                path,
                                status: c.status,
                            }),
                            Some(CheckKind::Udp { payload }) => Some(CheckKind::Udp {
                                payload: c.payload.clone().unwrap_or(payload),
                            }),
                            other => other,
                        };
                        kind.map(|kind| HealthCheck {
                            kind,
                            port: c.port,
                            interval_ms: c.interval_ms,
                            timeout_ms: match c.timeout_ms {
                                0 => HealthCheck::default_timeout(c.interval_ms),
                                t => t,
                            },
                            rise: c.rise,
                            fall: c.fall,
                            via: c.via,
                        })
                    }
                };
                let agent = match &b.agent {
                    None => None,
                    Some(a) => Some(AgentCheck {
                        kind: AgentKind::parse(&a.kind)?,
                        port: a.port,
                        interval_ms: a.interval_ms,
                        timeout_ms: match a.timeout_ms {
                            0 => HealthCheck::default_timeout(a.interval_ms),
                            t => t,
                        },
                    }),
                };
                let settings = BackendSettings {
                    weight: b.weight,
                    mac,
                    forward: b.forward,
                    tunnel_port: b.tunnel_port,
                    vni: b.vni,
                    server_id,
                    drain: b.state == config::AdminState::Draining,
                    down: b.state == config::AdminState::Down,
                    check,
                    load: LoadSettings {
                        agent,
                        max_flows: b.max_flows,
                        min_flows: b.min_flows,
                    },
                };
                s.add_backend(&key, b.address, settings)
                    .map_err(|e| match e {
                        // The file's errors say where, as the API's path does.
                        StateError::Invalid { field, reason } if !reason.starts_with("vip ") => {
                            invalid(field, format!("vip {key}, backend {}: {reason}", b.address))
                        }
                        e => e,
                    })?;
            }
        }
        Ok(s)
    }

    /// The file format of this state.
    pub fn to_config(&self) -> Config {
        Config {
            local_addresses: self.local_addresses.clone(),
            revision: self.revision,
            tunnel_sources: self.tunnel_sources.clone(),
            routes: self
                .routes
                .iter()
                .map(|r| config::RouteConfig {
                    prefix: r.prefix.to_string(),
                    gateway: r.gateway,
                    mac: r.mac.map(|m| m.to_string()),
                })
                .collect(),
            vips: self
                .vips
                .iter()
                .map(|(key, v)| config::VipConfig {
                    address: key.addr,
                    port: key.port,
                    protocol: match key.proto {
                        Proto::Tcp => config::Protocol::Tcp,
                        Proto::Udp => config::Protocol::Udp,
                    },
                    table_size: v.table_size,
                    tcp_idle_timeout: v.idle.tcp,
                    udp_idle_timeout: v.idle.udp,
                    tunnel_sources: v.tunnel_sources.clone(),
                    quic_server_id_len: v.quic.map_or(0, |q| q.server_id_len),
                    drain_flows: v.drain,
                    backends: v
                        .backends
                        .iter()
                        .map(|(addr, b)| config::BackendConfig {
                            address: *addr,
                            mac: b.settings.mac.map(|m| m.to_string()),
                            forward: b.settings.forward,
                            tunnel_port: b.settings.tunnel_port,
                            vni: b.settings.vni,
                            server_id: b.settings.server_id.map(|id| id.to_string()),
                            weight: b.settings.weight,
                            state: match b.settings.state() {
                                BackendState::Up => config::AdminState::Up,
                                BackendState::Draining => config::AdminState::Draining,
                                BackendState::Down => config::AdminState::Down,
                            },
                            check: b.settings.check.as_ref().map(|c| config::CheckConfig {
                                kind: c.kind.to_string(),
                                status: match c.kind {
                                    CheckKind::Http { status, .. } => status,
                                    CheckKind::Tcp | CheckKind::Udp { .. } => 200,
                                },
                                payload: match &c.kind {
                                    CheckKind::Udp { payload }
                                        if payload != DEFAULT_UDP_PAYLOAD =>
                                    {
                                        Some(payload.clone())
                                    }
                                    _ => None,
                                },
                                port: c.port,
                                interval_ms: c.interval_ms,
                                timeout_ms: c.timeout_ms,
                                rise: c.rise,
                                fall: c.fall,
                                via: c.via,
                            }),
                            agent: b.settings.load.agent.as_ref().map(|a| config::AgentConfig {
                                kind: a.kind.to_string(),
                                port: a.port,
                                interval_ms: a.interval_ms,
                                timeout_ms: a.timeout_ms,
                            }),
                            max_flows: b.settings.load.max_flows,
                            min_flows: b.settings.load.min_flows,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// SHA-256 (hex) of everything that decides where a flow goes: the VIPs,
    /// their table parameters, timeouts and tunnel sources, their backends
    /// with weights, states, MACs, forward methods (port, VNI), QUIC mode,
    /// drain policy, server ids and checks,
    /// in the state file's canonical order (sorted, so the order changes
    /// were made in does not matter). The instance's own `local_addresses`,
    /// `tunnel_sources` and routes are left out: instances behind one ECMP
    /// router differ there and must still agree.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = toml::to_string(&self.shared_config()).expect("the config serializes");
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// What instances share (Export, the digest): the configuration less
    /// the instance's own `local_addresses`, `tunnel_sources`, routes and
    /// its revision.
    pub fn shared_config(&self) -> Config {
        Config {
            local_addresses: Vec::new(),
            revision: 0,
            tunnel_sources: Vec::new(),
            routes: Vec::new(),
            ..self.to_config()
        }
    }

    /// Write the state file durably: a temporary file in the same directory,
    /// fsynced, renamed over the old one, and the directory fsynced, so a
    /// crash leaves either the old or the new state, never a torn one.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string_pretty(&self.to_config()).map_err(std::io::Error::other)?;
        let header = "# Written by lbd: the desired state, kept across restarts. Format: control/lb.example.toml\n";
        crate::persist::write_durably(path, (header.to_string() + &text).as_bytes())
    }
}

fn check_vip_key(key: &VipKey) -> Result<(), StateError> {
    if key.port == 0 {
        return Err(invalid(
            "vip.port",
            "port 0 is not a service port; give 1-65535",
        ));
    }
    if key.addr.is_unspecified() || key.addr.is_multicast() || key.addr.is_loopback() {
        return Err(invalid(
            "vip.address",
            format!("{} is not a unicast address a VIP can use", key.addr),
        ));
    }
    Ok(())
}

fn check_table_size(size: u32, backends: usize) -> Result<(), StateError> {
    if !(MIN_TABLE_SIZE..=MAX_TABLE_SIZE).contains(&size) {
        return Err(invalid(
            "vip.table_size",
            format!("{size} is outside {MIN_TABLE_SIZE}..={MAX_TABLE_SIZE}"),
        ));
    }
    if !is_prime(size) {
        return Err(invalid(
            "vip.table_size",
            format!("{size} is not prime (65537 and 655373 are)"),
        ));
    }
    if backends * 100 > size as usize {
        return Err(StateError::Precondition(format!(
            "vip.table_size {size} is too small for {backends} backends: Maglev needs at least 100 slots per backend for balance"
        )));
    }
    Ok(())
}

/// A backend of `key` must be another unicast host.
pub(crate) fn check_backend_addr(key: &VipKey, addr: &IpAddr) -> Result<(), StateError> {
    if *addr == key.addr {
        return Err(invalid(
            "backend.address",
            format!("{addr} is the VIP's own address; a backend must be another host"),
        ));
    }
    if addr.is_unspecified() || addr.is_multicast() || addr.is_loopback() {
        return Err(invalid(
            "backend.address",
            format!("{addr} is not a unicast host address"),
        ));
    }
    Ok(())
}

fn check_load(l: &LoadSettings) -> Result<(), StateError> {
    if let Some(a) = &l.agent {
        if !(100..=3_600_000).contains(&a.interval_ms) {
            return Err(invalid(
                "backend.agent.interval_ms",
                format!("{} is outside 100..=3600000", a.interval_ms),
            ));
        }
        if a.timeout_ms == 0 || a.timeout_ms > a.interval_ms {
            return Err(invalid(
                "backend.agent.timeout_ms",
                format!(
                    "{} must be above 0 and at most the interval ({})",
                    a.timeout_ms, a.interval_ms
                ),
            ));
        }
        if a.port == 0 {
            return Err(invalid("backend.agent.port", "port 0 cannot be polled"));
        }
    }
    match (l.max_flows, l.min_flows) {
        (Some(0), _) => Err(invalid(
            "backend.max_flows",
            "0 would take no flow at all: drain the backend instead",
        )),
        (None, Some(_)) => Err(invalid(
            "backend.min_flows",
            "the low mark of a cap needs max_flows",
        )),
        (Some(max), Some(min)) if min >= max => Err(invalid(
            "backend.min_flows",
            format!("{min} must be below max_flows ({max})"),
        )),
        _ => Ok(()),
    }
}

/// Tunnel sources: unicast, at most one per family.
fn check_sources(sources: &[IpAddr], field: &'static str) -> Result<(), StateError> {
    for (i, a) in sources.iter().enumerate() {
        if a.is_unspecified() || a.is_multicast() || a.is_loopback() {
            return Err(invalid(
                field,
                format!("{a} is not a unicast address a tunnel can leave from"),
            ));
        }
        if let Some(o) = sources[..i].iter().find(|o| o.is_ipv4() == a.is_ipv4()) {
            return Err(invalid(
                field,
                format!("{o} and {a}: at most one tunnel source per family (one IPv4, one IPv6)"),
            ));
        }
    }
    Ok(())
}

/// No IPv6 VIP's packets in IPIP to an IPv4 backend: nothing here carries
/// IPv6 in IPv4.
fn check_forward_family(
    key: &VipKey,
    addr: &IpAddr,
    s: &BackendSettings,
) -> Result<(), StateError> {
    if s.forward == ForwardMethod::Ipip && key.addr.is_ipv6() && addr.is_ipv4() {
        return Err(invalid(
            "backend.forward",
            format!(
                "vip {key}, backend {addr}: ipip cannot carry an IPv6 VIP's packets to an \
                 IPv4 backend (use gue or vxlan)"
            ),
        ));
    }
    Ok(())
}

/// The forward method's parameters, each where it belongs.
fn check_forward(s: &BackendSettings) -> Result<(), StateError> {
    use ForwardMethod::{Dr, Gue, Ipip, Vxlan};
    match (s.forward, s.tunnel_port) {
        (Dr | Ipip, Some(_)) => {
            return Err(invalid(
                "backend.tunnel_port",
                format!(
                    "{} backend has no tunnel port (gue and vxlan backends do)",
                    s.forward.a()
                ),
            ))
        }
        (_, Some(0)) => {
            return Err(invalid(
                "backend.tunnel_port",
                "port 0 is not a UDP port a tunnel can use; give 1-65535 (or none for the default)",
            ))
        }
        _ => {}
    }
    match (s.forward, s.vni) {
        (Vxlan, None) => {
            return Err(invalid(
                "backend.vni",
                format!("a vxlan backend needs its VNI (0-{MAX_VNI})"),
            ))
        }
        (Vxlan, Some(v)) if v > MAX_VNI => {
            return Err(invalid(
                "backend.vni",
                format!("{v} is above {MAX_VNI}: a VNI has 24 bits"),
            ))
        }
        (Dr | Ipip | Gue, Some(_)) => {
            return Err(invalid(
                "backend.vni",
                format!("{} backend has no VNI (vxlan backends do)", s.forward.a()),
            ))
        }
        _ => {}
    }
    match (s.forward, s.mac) {
        (Vxlan, None) => Err(invalid(
            "backend.mac",
            "a vxlan backend needs the MAC of its vxlan device (the inner frame's destination)",
        )),
        (Ipip | Gue, Some(_)) => Err(invalid(
            "backend.mac",
            format!(
                "{} backend takes no MAC: its packets go to the next hop's (its route's \
                 gateway, or its own address resolved on the segment)",
                s.forward.a()
            ),
        )),
        _ => Ok(()),
    }
}

pub(crate) fn check_settings(s: &BackendSettings) -> Result<(), StateError> {
    check_load(&s.load)?;
    if s.weight > MAX_WEIGHT {
        return Err(invalid(
            "backend.weight",
            format!("{} is above the maximum {MAX_WEIGHT}", s.weight),
        ));
    }
    if let Some(m) = s.mac {
        if m.is_multicast() || m == MacAddr::ZERO {
            return Err(invalid(
                "backend.mac",
                format!("{m} is not a unicast MAC address"),
            ));
        }
    }
    check_forward(s)?;
    if let Some(c) = &s.check {
        check_health(c)?;
    }
    Ok(())
}

fn check_health(c: &HealthCheck) -> Result<(), StateError> {
    if !(100..=3_600_000).contains(&c.interval_ms) {
        return Err(invalid(
            "backend.check.interval_ms",
            format!("{} is outside 100..=3600000", c.interval_ms),
        ));
    }
    if c.timeout_ms == 0 || c.timeout_ms > c.interval_ms {
        return Err(invalid(
            "backend.check.timeout_ms",
            format!(
                "{} must be above 0 and at most the interval ({})",
                c.timeout_ms, c.interval_ms
            ),
        ));
    }
    if !(1..=100).contains(&c.rise) {
        return Err(invalid(
            "backend.check.rise",
            format!("{} is outside 1..=100", c.rise),
        ));
    }
    if !(1..=100).contains(&c.fall) {
        return Err(invalid(
            "backend.check.fall",
            format!("{} is outside 1..=100", c.fall),
        ));
    }
    if c.port == Some(0) {
        return Err(invalid("backend.check.port", "port 0 cannot be checked"));
    }
    match &c.kind {
        CheckKind::Http { status, .. } if !(100..=599).contains(status) => {
            return Err(invalid(
                "backend.check.status",
                format!("{status} is not an HTTP status"),
            ));
        }
        CheckKind::Http { path, .. } if path.len() > MAX_HTTP_PATH => {
            return Err(invalid(
                "backend.check.kind",
                format!(
                    "an HTTP path of {} bytes: at most {MAX_HTTP_PATH}",
                    path.len()
                ),
            ));
        }
        CheckKind::Udp { payload } if payload.is_empty() || payload.len() > 1024 => {
            return Err(invalid(
                "backend.check.payload",
                format!("{} bytes: a UDP check sends 1 to 1024", payload.len()),
            ));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_core::snapshot::Snapshot;
    use std::net::Ipv4Addr;

    fn vip(port: u16) -> VipKey {
        VipKey {
            addr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 10)),
            port,
            proto: Proto::Tcp,
        }
    }

    fn be(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
    }

    #[test]
    fn digest_ignores_order_and_local_addresses_but_not_placement() {
        let mut a = DesiredState::default();
        a.create_vip(vip(80), None).unwrap();
        for i in [11, 12, 13] {
            a.add_backend(&vip(80), be(i), BackendSettings::default())
                .unwrap();
        }
        let mut b = DesiredState {
            local_addresses: vec![be(2)],
            ..DesiredState::default()
        };
        b.create_vip(vip(80), None).unwrap();
        for i in [13, 11, 12] {
            b.add_backend(&vip(80), be(i), BackendSettings::default())
                .unwrap();
        }
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().len(), 64);
        let before = b.digest();
        let heavier = BackendSettings {
            weight: 2,
            ..BackendSettings::default()
        };
        b.update_backend(&vip(80), &be(12), heavier).unwrap();
        assert_ne!(b.digest(), before, "a weight decides placement");
        let mut c = a.clone();
        c.create_vip(vip(443), Some(65537)).unwrap();
        assert_ne!(c.digest(), a.digest());
    }

    #[test]
    fn identities_are_stable_and_never_reused_as_is() {
        let mut s = DesiredState::default();
        s.create_vip(vip(443), None).unwrap();
        s.create_vip(vip(80), None).unwrap();
        let a = s
            .add_backend(&vip(443), be(11), BackendSettings::default())
            .unwrap();
        let b = s
            .add_backend(&vip(80), be(12), BackendSettings::default())
            .unwrap();
        // Changes to one VIP leave the other's identities alone.
        s.add_backend(&vip(443), be(13), BackendSettings::default())
            .unwrap();
        s.remove_backend(&vip(443), &be(13)).unwrap();
        assert_eq!(s.vips()[&vip(80)].backends[&be(12)].id, b);
        assert_eq!(s.vips()[&vip(443)].backends[&be(11)].id, a);
        // A reused slot gets a new incarnation.
        s.remove_backend(&vip(443), &be(11)).unwrap();
        let c = s
            .add_backend(&vip(443), be(14), BackendSettings::default())
            .unwrap();
        assert_eq!(c.slot, a.slot);
        assert_ne!(c.incarnation, a.incarnation);
    }

    #[test]
    fn refusals_name_the_field_and_change_nothing() {
        let mut s = DesiredState::default();
        s.create_vip(vip(443), None).unwrap();
        let before = s.clone();
        let cases: Vec<(StateError, &str)> = vec![
            (s.clone().create_vip(vip(0), None).unwrap_err(), "vip.port"),
            (
                s.clone().create_vip(vip(1), Some(65536)).unwrap_err(),
                "not prime",
            ),
            (
                s.clone().create_vip(vip(1), Some(7)).unwrap_err(),
                "vip.table_size",
            ),
            (
                s.clone().create_vip(vip(443), None).unwrap_err(),
                "already exists",
            ),
            (s.clone().delete_vip(&vip(8443)).unwrap_err(), "not found"),
            (
                s.clone()
                    .add_backend(&vip(443), vip(443).addr, BackendSettings::default())
                    .unwrap_err(),
                "VIP's own address",
            ),
            (
                s.clone()
                    .add_backend(
                        &vip(443),
                        "224.0.0.1".parse().unwrap(),
                        BackendSettings::default(),
                    )
                    .unwrap_err(),
                "backend.address",
            ),
            (
                s.clone()
                    .add_backend(
                        &vip(443),
                        be(11),
                        BackendSettings {
                            weight: MAX_WEIGHT + 1,
                            ..Default::default()
                        },
                    )
                    .unwrap_err(),
                "backend.weight",
            ),
            (
                s.clone()
                    .add_backend(
                        &vip(443),
                        be(11),
                        BackendSettings {
                            mac: Some(MacAddr::BROADCAST),
                            ..Default::default()
                        },
                    )
                    .unwrap_err(),
                "backend.mac",
            ),
            (
                s.clone()
                    .add_backend(&vip(80), be(11), BackendSettings::default())
                    .unwrap_err(),
                "vip 198.51.100.10:80/tcp not found",
            ),
            (
                s.clone().remove_backend(&vip(443), &be(99)).unwrap_err(),
                "backend 192.0.2.99",
            ),
        ];
        for (e, want) in cases {
            assert!(e.to_string().contains(want), "{e} should mention {want:?}");
        }
        let bad_check = |f: fn(&mut HealthCheck)| {
            let mut c = HealthCheck::new(CheckKind::Tcp);
            f(&mut c);
            s.clone()
                .add_backend(
                    &vip(443),
                    be(11),
                    BackendSettings {
                        check: Some(c),
                        ..Default::default()
                    },
                )
                .unwrap_err()
                .to_string()
        };
        assert!(bad_check(|c| c.interval_ms = 10).contains("backend.check.interval_ms"));
        assert!(bad_check(|c| c.timeout_ms = 5000).contains("backend.check.timeout_ms"));
        assert!(bad_check(|c| c.rise = 0).contains("backend.check.rise"));
        assert!(bad_check(|c| c.fall = 1000).contains("backend.check.fall"));
        assert!(bad_check(|c| c.port = Some(0)).contains("backend.check.port"));
        assert!(HealthCheck::parse_kind("http:health")
            .unwrap_err()
            .to_string()
            .contains("tcp, http:/path, udp or none"));
        assert_eq!(HealthCheck::parse_kind("none").unwrap(), None);
        // Nothing that would break the HTTP request line.
        for path in [
            "http:/a b",
            "http:/a\0b",
            "http:/\u{1b}[31m",
            "http:/a\u{7f}",
        ] {
            assert!(HealthCheck::parse_kind(path).is_err(), "{path:?}");
        }
        assert!(HealthCheck::parse_kind("http:/h\u{e9}alth?x=%00").is_ok());
        assert!(bad_check(|c| c.kind = CheckKind::Http {
            path: "/".repeat(MAX_HTTP_PATH + 1),
            status: 200
        })
        .contains("at most 1024"));
        assert_eq!(s, before);
        let mut small = DesiredState::default();
        small.create_vip(vip(1), Some(251)).unwrap();
        small
            .add_backend(&vip(1), be(1), BackendSettings::default())
            .unwrap();
        small
            .add_backend(&vip(1), be(2), BackendSettings::default())
            .unwrap();
        let e = small
            .add_backend(&vip(1), be(3), BackendSettings::default())
            .unwrap_err();
        assert!(matches!(e, StateError::Precondition(_)), "{e}");
        assert_eq!(
            small.vips()[&vip(1)].backends.len(),
            2,
            "nothing half-applied"
        );
    }

    #[test]
    fn load_settings_are_checked_naming_the_field() {
        let with = |load: LoadSettings| BackendSettings {
            load,
            ..BackendSettings::default()
        };
        let agent = |f: fn(&mut AgentCheck)| {
            let mut a = AgentCheck::new(AgentKind::Tcp);
            f(&mut a);
            LoadSettings {
                agent: Some(a),
                ..LoadSettings::default()
            }
        };
        let cap = |max, min| LoadSettings {
            max_flows: max,
            min_flows: min,
            ..LoadSettings::default()
        };
        for (load, field) in [
            (agent(|a| a.interval_ms = 50), "backend.agent.interval_ms"),
            (agent(|a| a.timeout_ms = 0), "backend.agent.timeout_ms"),
            (agent(|a| a.timeout_ms = 5000), "backend.agent.timeout_ms"),
            (agent(|a| a.port = 0), "backend.agent.port"),
            (cap(Some(0), None), "backend.max_flows"),
            (cap(None, Some(5)), "backend.min_flows"),
            (cap(Some(10), Some(10)), "backend.min_flows"),
        ] {
            match check_settings(&with(load)) {
                Err(StateError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        assert!(check_settings(&with(cap(Some(100), None))).is_ok());
        assert_eq!(cap(Some(100), None).cap(), Some((100, 90)), "low mark: 90%");
        assert_eq!(cap(Some(100), Some(50)).cap(), Some((100, 50)));
        assert!(AgentKind::parse("udp").is_err());
        assert!(AgentKind::parse("http:/a b").is_err());
        assert_eq!(
            AgentKind::parse("http:/load").unwrap().to_string(),
            "http:/load"
        );
    }

    #[test]
    fn converge_changes_only_what_differs_and_keeps_identities() {
        let mut cur = DesiredState::default();
        cur.create_vip(vip(443), None).unwrap();
        cur.create_vip(vip(80), None).unwrap();
        let keep = cur
            .add_backend(&vip(443), be(11), BackendSettings::default())
            .unwrap();
        cur.add_backend(&vip(443), be(12), BackendSettings::default())
            .unwrap();
        let mut want = cur.clone();
        want.delete_vip(&vip(80)).unwrap();
        want.remove_backend(&vip(443), &be(12)).unwrap();
        want.add_backend(&vip(443), be(13), BackendSettings::default())
            .unwrap();
        want.update_backend(
            &vip(443),
            &be(11),
            BackendSettings {
                weight: 5,
                ..Default::default()
            },
        )
        .unwrap();
        want.create_vip(vip(8443), Some(655373)).unwrap();
        let changes = cur.converge(&want).unwrap();
        assert_eq!(changes.len(), 5, "{changes:?}");
        assert_eq!(cur.to_config(), want.to_config());
        assert_eq!(
            cur.vips()[&vip(443)].backends[&be(11)].id,
            keep,
            "an updated backend keeps its identity"
        );
        assert!(cur.converge(&want).unwrap().is_empty(), "idempotent");
    }

    #[test]
    fn save_and_load_round_trip_to_the_same_tables() {
        let dir = std::env::temp_dir().join(format!("lbd-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.toml");
        let mut s = DesiredState {
            local_addresses: vec![be(1)],
            ..DesiredState::default()
        };
        s.create_vip(vip(443), Some(65537)).unwrap();
        for (i, last) in [11u8, 12, 13].into_iter().enumerate() {
            let settings = BackendSettings {
                weight: i as u32 + 1,
                mac: Some(MacAddr([2, 0, 0, 0, 0, last])),
                // One tunnelled backend: its method survives a restart.
                forward: if last == 13 {
                    ForwardMethod::Vxlan
                } else {
                    ForwardMethod::Dr
                },
                tunnel_port: (last == 13).then_some(4790),
                vni: (last == 13).then_some(100),
                // A server id survives a restart while QUIC mode is off.
                server_id: (last == 12).then(|| ServerId::from_hex("0a01").unwrap()),
                drain: last == 12,
                down: false,
                check: (last == 13).then(|| HealthCheck {
                    port: Some(8080),
                    interval_ms: 500,
                    timeout_ms: 400,
                    rise: 1,
                    ..HealthCheck::new(CheckKind::Http {
                        path: "/health".into(),
                        status: 204,
                    })
                }),
                load: if last == 11 {
                    LoadSettings {
                        agent: Some(AgentCheck {
                            interval_ms: 1000,
                            ..AgentCheck::new(AgentKind::Http {
                                path: "/load".into(),
                            })
                        }),
                        max_flows: Some(5000),
                        min_flows: Some(4000),
                    }
                } else {
                    LoadSettings::default()
                },
            };
            s.add_backend(&vip(443), be(last), settings).unwrap();
        }
        s.save(&path).unwrap();
        let loaded = DesiredState::from_config(&Config::load(&path).unwrap()).unwrap();
        assert_eq!(loaded.to_config(), s.to_config());
        assert_eq!(
            loaded.checks(),
            s.checks(),
            "health checks survive the round trip"
        );
        assert_eq!(loaded.checks().len(), 1);
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let a = Snapshot::build(&s.to_spec(1, mac, |_| None)).unwrap();
        let b = Snapshot::build(&loaded.to_spec(1, mac, |_| None)).unwrap();
        let (ta, tb) = (a.vip(0).unwrap(), b.vip(0).unwrap());
        let keys = |s: &Snapshot, v: &lb_core::snapshot::SnapshotVip| -> Vec<IpAddr> {
            v.table
                .as_ref()
                .unwrap()
                .slots()
                .iter()
                .map(|&i| s.backend(v.usable[usize::from(i)]).unwrap().addr)
                .collect()
        };
        assert_eq!(
            keys(&a, ta),
            keys(&b, tb),
            "the same Maglev table after a restart"
        );
        assert!(
            !dir.join(".state.toml.tmp").exists(),
            "no temporary file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 1, last])
    }

    fn tunnelled(forward: ForwardMethod) -> BackendSettings {
        BackendSettings {
            forward,
            vni: (forward == ForwardMethod::Vxlan).then_some(100),
            mac: (forward == ForwardMethod::Vxlan).then(|| mac(0x99)),
            ..BackendSettings::default()
        }
    }

    /// The field a refusal names.
    fn field(e: StateError) -> &'static str {
        match e {
            StateError::Invalid { field, .. } => field,
            e => panic!("not an invalid argument: {e}"),
        }
    }

    #[test]
    fn forward_parameters_are_checked_naming_the_field() {
        use ForwardMethod::{Dr, Gue, Ipip, Vxlan};
        let with = |f: fn(&mut BackendSettings)| {
            let mut s = BackendSettings::default();
            f(&mut s);
            check_settings(&s)
        };
        for (case, want, words) in [
            (
                with(|s| s.tunnel_port = Some(6080)),
                "backend.tunnel_port",
                "a dr backend has no tunnel port",
            ),
            (
                with(|s| {
                    s.forward = Ipip;
                    s.tunnel_port = Some(6080);
                }),
                "backend.tunnel_port",
                "ipip",
            ),
            (
                with(|s| {
                    s.forward = Gue;
                    s.tunnel_port = Some(0);
                }),
                "backend.tunnel_port",
                "port 0",
            ),
            (
                with(|s| {
                    s.forward = Vxlan;
                    s.mac = Some(mac(1));
                }),
                "backend.vni",
                "needs its VNI",
            ),
            (
                with(|s| {
                    s.forward = Vxlan;
                    s.mac = Some(mac(1));
                    s.vni = Some(MAX_VNI + 1);
                }),
                "backend.vni",
                "16777216 is above 16777215",
            ),
            (
                with(|s| {
                    s.forward = Gue;
                    s.vni = Some(1);
                }),
                "backend.vni",
                "a gue backend has no VNI",
            ),
            (with(|s| s.vni = Some(1)), "backend.vni", "dr"),
            (
                with(|s| {
                    s.forward = Vxlan;
                    s.vni = Some(7);
                }),
                "backend.mac",
                "a vxlan backend needs the MAC of its vxlan device",
            ),
            (
                with(|s| {
                    s.forward = Ipip;
                    s.mac = Some(mac(1));
                }),
                "backend.mac",
                "an ipip backend takes no MAC",
            ),
            (
                with(|s| {
                    s.forward = Gue;
                    s.mac = Some(mac(1));
                }),
                "backend.mac",
                "gue",
            ),
        ] {
            let e = case.unwrap_err();
            assert!(e.to_string().contains(words), "{e}: {words:?}");
            assert_eq!(field(e), want);
        }
        for ok in [
            tunnelled(Dr),
            tunnelled(Ipip),
            tunnelled(Gue),
            tunnelled(Vxlan),
            BackendSettings {
                tunnel_port: Some(4790),
                vni: Some(0),
                ..tunnelled(Vxlan)
            },
            BackendSettings {
                vni: Some(MAX_VNI),
                ..tunnelled(Vxlan)
            },
            BackendSettings {
                tunnel_port: Some(5555),
                ..tunnelled(Gue)
            },
        ] {
            check_settings(&ok).unwrap();
        }
        assert_eq!(tunnelled(Gue).forward_text(), "gue:6080");
        assert_eq!(tunnelled(Vxlan).forward_text(), "vxlan:100");
        assert_eq!(
            BackendSettings {
                tunnel_port: Some(4790),
                ..tunnelled(Vxlan)
            }
            .forward_text(),
            "vxlan:100@4790"
        );
        assert_eq!(tunnelled(Ipip).forward_text(), "ipip");
        assert_eq!(tunnelled(Dr).forward_text(), "dr");
    }

    #[test]
    fn tunnel_sources_routes_and_their_context_are_checked() {
        let mut s = DesiredState::default();
        s.create_vip(vip(443), None).unwrap();
        // No source of the backend's family anywhere: refused once checked.
        let mut t = s.clone();
        t.add_backend(&vip(443), be(11), tunnelled(ForwardMethod::Gue))
            .unwrap();
        let e = t.check_tunnels().unwrap_err();
        assert!(e.to_string().contains("tunnel_sources"), "{e}");
        assert_eq!(field(e), "backend.forward");
        let e = s.clone().converge(&t).unwrap_err();
        assert_eq!(field(e), "backend.forward", "converge checks it");
        // An IPv6 source does not do for an IPv4 backend.
        t.set_tunnel_sources(vec![ip("2001:db8::1")]).unwrap();
        assert!(t.check_tunnels().is_err());
        t.local_addresses = vec![be(1)];
        t.check_tunnels().unwrap();
        for (sources, words) in [
            (vec![be(1), be(2)], "at most one tunnel source per family"),
            (vec![ip("0.0.0.0")], "not a unicast"),
            (vec![ip("ff02::1")], "not a unicast"),
        ] {
            let e = s.clone().set_tunnel_sources(sources.clone()).unwrap_err();
            assert!(e.to_string().contains(words), "{e}");
            assert_eq!(field(e), "tunnel_sources");
            let e = s
                .clone()
                .set_vip_tunnel_sources(&vip(443), sources)
                .unwrap_err();
            assert_eq!(field(e), "vip.tunnel_sources");
        }
        s.set_tunnel_sources(vec![be(1), ip("2001:db8::1")])
            .unwrap();
        let route = |p: &str, gw: &str| Route {
            prefix: p.parse().unwrap(),
            gateway: ip(gw),
            mac: None,
        };
        for (routes, want) in [
            (
                vec![
                    route("10.0.0.0/8", "192.0.2.254"),
                    route("10.0.0.0/8", "192.0.2.253"),
                ],
                "route.prefix",
            ),
            (vec![route("10.0.0.0/8", "2001:db8::fe")], "route.gateway"),
            (vec![route("10.0.0.0/8", "224.0.0.1")], "route.gateway"),
            (
                vec![Route {
                    mac: Some(MacAddr::BROADCAST),
                    ..route("10.0.0.0/8", "192.0.2.254")
                }],
                "route.mac",
            ),
        ] {
            assert_eq!(field(s.clone().set_routes(routes).unwrap_err()), want);
        }
        for (text, words) in [
            ("10.20.0.1/16", "the prefix is 10.20.0.0/16"),
            ("2001:db8::1/32", "the prefix is 2001:db8::/32"),
            ("10.0.0.0/33", "not 0-32"),
            ("10.0.0.0", "ADDRESS/LENGTH"),
            ("ten/8", "not an IPv4"),
        ] {
            let e = text.parse::<Prefix>().unwrap_err();
            assert!(e.contains(words), "{text}: {e}");
        }
        assert_eq!(
            "0.0.0.0/0".parse::<Prefix>().unwrap().to_string(),
            "0.0.0.0/0"
        );
        // IPIP cannot carry an IPv6 VIP to an IPv4 backend.
        let v6 = VipKey {
            addr: ip("2001:db8::10"),
            port: 443,
            proto: Proto::Tcp,
        };
        s.create_vip(v6, None).unwrap();
        let e = s
            .clone()
            .add_backend(&v6, be(11), tunnelled(ForwardMethod::Ipip))
            .unwrap_err();
        assert!(e.to_string().contains("use gue or vxlan"), "{e}");
        assert_eq!(field(e), "backend.forward");
        s.add_backend(&v6, be(11), tunnelled(ForwardMethod::Gue))
            .unwrap();
        s.add_backend(&v6, ip("2001:db8::11"), tunnelled(ForwardMethod::Ipip))
            .unwrap();
        s.check_tunnels().unwrap();
    }

    #[test]
    fn the_next_hop_is_the_longest_route_else_the_backend_itself() {
        let mut s = DesiredState {
            local_addresses: vec![be(1), ip("2001:db8::1")],
            ..DesiredState::default()
        };
        s.set_routes(vec![
            Route {
                prefix: "10.0.0.0/8".parse().unwrap(),
                gateway: be(254),
                mac: None,
            },
            Route {
                prefix: "10.20.0.0/16".parse().unwrap(),
                gateway: be(253),
                mac: Some(mac(0xfd)),
            },
            Route {
                prefix: "2001:db8:20::/48".parse().unwrap(),
                gateway: ip("2001:db8::fe"),
                mac: None,
            },
        ])
        .unwrap();
        s.create_vip(vip(443), None).unwrap();
        s.set_vip_tunnel_sources(&vip(443), vec![be(5)]).unwrap();
        let k = vip(443);
        let add = |s: &mut DesiredState, a: &str, set: BackendSettings| {
            s.add_backend(&k, ip(a), set).unwrap();
        };
        add(&mut s, "10.30.0.11", tunnelled(ForwardMethod::Ipip)); // via .254
        add(&mut s, "10.20.0.11", tunnelled(ForwardMethod::Vxlan)); // via .253, static
        add(&mut s, "192.0.2.21", tunnelled(ForwardMethod::Gue)); // on the segment
        add(&mut s, "2001:db8:20::11", tunnelled(ForwardMethod::Gue)); // via ::fe
                                                                       // A DR backend inside a routed prefix is still on the segment.
        add(
            &mut s,
            "10.20.0.12",
            BackendSettings {
                mac: Some(mac(0x12)),
                ..BackendSettings::default()
            },
        );
        s.check_tunnels().unwrap();
        let resolved = |a: &IpAddr| -> Option<MacAddr> {
            match a.to_string().as_str() {
                "192.0.2.254" => Some(mac(0xfe)),
                "192.0.2.21" => Some(mac(0x21)),
                // Never asked for: behind a gateway.
                "10.30.0.11" | "10.20.0.11" => Some(MacAddr([2, 0xde, 0xad, 0, 0, 1])),
                _ => None,
            }
        };
        let spec = s.to_spec(1, MacAddr([2, 0, 0, 0, 0, 1]), resolved);
        let b = |a: &str| {
            spec.vips[0]
                .backends
                .iter()
                .find(|b| b.addr == ip(a))
                .unwrap()
                .clone()
        };
        assert_eq!(
            b("10.30.0.11").mac,
            Some(mac(0xfe)),
            "the /8's gateway, resolved"
        );
        assert_eq!(
            b("10.20.0.11").mac,
            Some(mac(0xfd)),
            "the longest prefix, its static MAC"
        );
        assert_eq!(
            b("192.0.2.21").mac,
            Some(mac(0x21)),
            "on the segment: itself"
        );
        assert_eq!(
            b("2001:db8:20::11").mac,
            None,
            "its gateway unresolved: no traffic"
        );
        assert_eq!(b("10.20.0.12").mac, Some(mac(0x12)));
        assert_eq!(b("10.20.0.12").tunnel, None);
        assert_eq!(
            b("10.30.0.11").tunnel,
            Some(Tunnel {
                encap: Encap::Ipip,
                source: be(5)
            }),
            "the VIP's own source first"
        );
        assert_eq!(
            b("10.20.0.11").tunnel.unwrap().encap,
            Encap::Vxlan {
                port: DEFAULT_VXLAN_PORT,
                vni: 100,
                inner_mac: mac(0x99)
            }
        );
        assert_eq!(
            b("2001:db8:20::11").tunnel,
            Some(Tunnel {
                encap: Encap::Gue {
                    port: DEFAULT_GUE_PORT
                },
                source: ip("2001:db8::1")
            }),
            "no VIP or instance source of IPv6: the local address"
        );
        s.set_tunnel_sources(vec![ip("2001:db8::2")]).unwrap();
        assert_eq!(
            s.tunnel_source(&k, &ip("2001:db8:20::11")),
            Some(ip("2001:db8::2")),
            "the instance's source before its local address"
        );
        // What is resolved: next hops, never a backend behind a gateway.
        let hops: Vec<(String, Option<MacAddr>)> = s
            .next_hops()
            .into_iter()
            .map(|(a, m)| (a.to_string(), m))
            .collect();
        assert_eq!(
            hops,
            vec![
                ("10.20.0.12".to_string(), Some(mac(0x12))),
                ("192.0.2.21".to_string(), None),
                ("192.0.2.253".to_string(), Some(mac(0xfd))),
                ("192.0.2.254".to_string(), None),
                ("2001:db8::fe".to_string(), None),
            ]
        );
        Snapshot::build(&spec).unwrap();
    }

    #[test]
    fn the_method_does_not_move_flows() {
        // Maglev keys on addresses and weights alone: the same table
        // whatever the backends' methods.
        let table = |forward: ForwardMethod| {
            let mut s = DesiredState {
                local_addresses: vec![be(1)],
                ..DesiredState::default()
            };
            s.create_vip(vip(443), None).unwrap();
            for last in [11, 12, 13] {
                s.add_backend(&vip(443), be(last), tunnelled(forward))
                    .unwrap();
            }
            let spec = s.to_spec(1, MacAddr([2, 0, 0, 0, 0, 1]), |_| Some(mac(1)));
            let snap = Snapshot::build(&spec).unwrap();
            let v = snap.vip(0).unwrap();
            v.table
                .as_ref()
                .unwrap()
                .slots()
                .iter()
                .map(|&i| snap.backend(v.usable[usize::from(i)]).unwrap().addr)
                .collect::<Vec<_>>()
        };
        let dr = table(ForwardMethod::Dr);
        for f in [
            ForwardMethod::Ipip,
            ForwardMethod::Gue,
            ForwardMethod::Vxlan,
        ] {
            assert!(table(f) == dr, "{f}");
        }
    }

    #[test]
    fn instance_settings_stay_home_and_the_vips_travel() {
        let mut s = DesiredState {
            local_addresses: vec![be(1)],
            ..DesiredState::default()
        };
        s.set_tunnel_sources(vec![be(2)]).unwrap();
        s.set_routes(vec![Route {
            prefix: "10.0.0.0/8".parse().unwrap(),
            gateway: be(254),
            mac: Some(mac(0xfe)),
        }])
        .unwrap();
        s.create_vip(vip(443), None).unwrap();
        s.set_vip_tunnel_sources(&vip(443), vec![be(5)]).unwrap();
        s.add_backend(
            &vip(443),
            ip("10.1.0.11"),
            BackendSettings {
                tunnel_port: Some(4790),
                ..tunnelled(ForwardMethod::Vxlan)
            },
        )
        .unwrap();
        // The state file keeps everything.
        let text = toml::to_string_pretty(&s.to_config()).unwrap();
        for want in [
            "tunnel_sources = [\"192.0.2.2\"]",
            "[[route]]",
            "prefix = \"10.0.0.0/8\"",
            "forward = \"vxlan\"",
            "vni = 100",
            "tunnel_port = 4790",
        ] {
            assert!(text.contains(want), "{want} in {text}");
        }
        let back = DesiredState::load(&toml::from_str(&text).unwrap()).unwrap();
        assert_eq!(back.to_config(), s.to_config(), "the state file round trip");
        // Export leaves the instance's own out, the VIP's sources in.
        let shared = toml::to_string_pretty(&s.shared_config()).unwrap();
        assert!(
            !shared.contains("[[route]]") && !shared.contains("192.0.2.2\""),
            "{shared}"
        );
        assert!(
            shared.contains("tunnel_sources = [\"192.0.2.5\"]"),
            "{shared}"
        );
        assert!(shared.contains("forward = \"vxlan\""), "{shared}");
        let exported = DesiredState::from_config(&toml::from_str(&shared).unwrap()).unwrap();
        assert!(exported.tunnel_sources.is_empty() && exported.routes.is_empty());
        assert_eq!(exported.digest(), s.digest());
        // The digest: the instance's own settings are not in it, the
        // method and its parameters are.
        let mut other = s.clone();
        other.set_tunnel_sources(vec![be(3)]).unwrap();
        other.set_routes(Vec::new()).unwrap();
        assert_eq!(other.digest(), s.digest());
        for change in [
            |s: &mut DesiredState| {
                let mut b = s.vips()[&vip(443)].backends[&ip("10.1.0.11")]
                    .settings
                    .clone();
                b.vni = Some(101);
                s.update_backend(&vip(443), &ip("10.1.0.11"), b).unwrap();
            },
            |s: &mut DesiredState| {
                let mut b = s.vips()[&vip(443)].backends[&ip("10.1.0.11")]
                    .settings
                    .clone();
                b.tunnel_port = None;
                s.update_backend(&vip(443), &ip("10.1.0.11"), b).unwrap();
            },
            |s: &mut DesiredState| {
                s.update_backend(&vip(443), &ip("10.1.0.11"), tunnelled(ForwardMethod::Gue))
                    .unwrap();
            },
            |s: &mut DesiredState| {
                s.set_vip_tunnel_sources(&vip(443), vec![be(6)]).unwrap();
            },
        ] {
            let mut c = s.clone();
            change(&mut c);
            assert_ne!(c.digest(), s.digest());
        }
        // A reload (converge to the file) applies the instance's own.
        let mut running = s.clone();
        let mut file = s.clone();
        file.set_tunnel_sources(vec![be(3)]).unwrap();
        file.set_routes(Vec::new()).unwrap();
        let changes = running.converge(&file).unwrap();
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(running.tunnel_sources, vec![be(3)]);
        assert!(running.routes.is_empty());
        assert!(running.converge(&file).unwrap().is_empty(), "idempotent");
    }
}
