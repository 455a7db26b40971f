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
use lb_core::snapshot::MAX_BACKEND_SLOTS;
use lb_core::snapshot::{
    BackendRef, BackendSpec, BackendState, Proto, SnapshotSpec, VipKey, VipSpec,
};

pub use crate::config::CheckVia;
use crate::config::{self, Config};

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

/// What an operator can set on a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSettings {
    pub weight: u32,
    pub mac: Option<MacAddr>,
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
    pub backends: BTreeMap<IpAddr, DesiredBackend>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DesiredState {
    pub local_addresses: Vec<IpAddr>,
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
            if self.vips[key].idle != want.idle {
                self.vip_mut(key)?.idle = want.idle;
                changes.push(format!(
                    "vip {key} idle timeouts set to tcp {} s, udp {} s",
                    want.idle.tcp, want.idle.udp
                ));
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
        Ok(changes)
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
                    self.add_backend(key, *addr, settings.clone())?;
                    changes.push(format!("backend {addr} added to {key}"));
                }
                Some(cur) if cur.settings != *settings => {
                    self.update_backend(key, addr, settings.clone())?;
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

    pub fn add_backend(
        &mut self,
        key: &VipKey,
        addr: IpAddr,
        settings: BackendSettings,
    ) -> Result<BackendRef, StateError> {
        check_settings(&settings)?;
        check_backend_addr(key, &addr)?;
        let vip = self.vips.get(key).ok_or_else(|| vip_not_found(key))?;
        if vip.backends.contains_key(&addr) {
            return Err(StateError::AlreadyExists {
                kind: "backend",
                name: format!("{addr} of vip {key}"),
            });
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
        check_settings(&settings)?;
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

    /// The snapshot this state asks for; `mac_of` supplies resolved MACs for
    /// backends without a static one.
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
                backends: v
                    .backends
                    .iter()
                    .map(|(addr, b)| BackendSpec {
                        id: b.id,
                        addr: *addr,
                        weight: b.settings.weight,
                        mac: b.settings.mac.or_else(|| mac_of(addr)),
                        state: b.settings.state(),
                        tunnel: None,
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

    /// Every backend address, with its static MAC if it has one.
    pub fn backend_addresses(&self) -> Vec<(IpAddr, Option<MacAddr>)> {
        self.vips
            .values()
            .flat_map(|v| v.backends.iter().map(|(a, b)| (*a, b.settings.mac)))
            .collect()
    }

    /// Build from the file format, validating every entry as the API would.
    pub fn from_config(c: &Config) -> Result<DesiredState, StateError> {
        let mut s = DesiredState {
            local_addresses: c.local_addresses.clone(),
            revision: c.revision,
            ..DesiredState::default()
        };
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
                    drain: b.state == config::AdminState::Draining,
                    down: b.state == config::AdminState::Down,
                    check,
                    load: LoadSettings {
                        agent,
                        max_flows: b.max_flows,
                        min_flows: b.min_flows,
                    },
                };
                s.add_backend(&key, b.address, settings)?;
            }
        }
        Ok(s)
    }

    /// The file format of this state.
    pub fn to_config(&self) -> Config {
        Config {
            local_addresses: self.local_addresses.clone(),
            revision: self.revision,
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
                    backends: v
                        .backends
                        .iter()
                        .map(|(addr, b)| config::BackendConfig {
                            address: *addr,
                            mac: b.settings.mac.map(|m| m.to_string()),
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
    /// their table parameters and timeouts, their backends with weights,
    /// states, MACs and checks, in the state file's canonical order (sorted,
    /// so the order changes were made in does not matter). The instance's
    /// own `local_addresses` are left out: instances behind one ECMP router
    /// differ there and must still agree.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = toml::to_string(&self.shared_config()).expect("the config serializes");
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// What instances share (Export, the digest): the configuration less
    /// the instance's own `local_addresses` and its revision.
    pub fn shared_config(&self) -> Config {
        Config {
            local_addresses: Vec::new(),
            revision: 0,
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
}
