//! The declarative configuration (`lb.toml`): the port's own addresses, VIPs
//! and their backends. `lbd --config FILE` loads it at start; the control
//! plane (issue #4) will keep it as its state file.
//!
//! ```toml
//! local_addresses = ["192.0.2.1"]        # the port's own addresses (host traffic)
//!
//! [[vip]]
//! address = "198.51.100.10"
//! port = 443
//! protocol = "tcp"                       # tcp | udp
//! table_size = 65537                     # prime; default 65537
//!
//! [[vip.backend]]
//! address = "192.0.2.11"
//! mac = "02:00:00:00:00:11"              # static MAC (resolution by ARP/ND comes later)
//! weight = 1                             # default 1; 0 takes no new flows
//! state = "up"                           # up | draining | down; default up
//! ```

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use dataplane::packet::ethernet::MacAddr;
use dataplane::snapshot::{
    BackendRef, BackendSpec, BackendState, Proto, SnapshotSpec, VipKey, VipSpec,
};
use serde::Deserialize;

pub const DEFAULT_TABLE_SIZE: u32 = 65537;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub local_addresses: Vec<IpAddr>,
    #[serde(default, rename = "vip")]
    pub vips: Vec<Vip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    #[serde(default, rename = "backend")]
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    pub address: IpAddr,
    pub mac: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: State,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Up,
    Draining,
    Down,
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

fn default_weight() -> u32 {
    1
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Every backend address, with its static MAC if it has one (for
    /// neighbour resolution).
    pub fn backend_addresses(&self) -> Result<Vec<(IpAddr, Option<MacAddr>)>> {
        let spec = self.to_spec(0, MacAddr::ZERO)?;
        Ok(spec
            .vips
            .iter()
            .flat_map(|v| v.backends.iter().map(|b| (b.addr, b.mac)))
            .collect())
    }

    /// The snapshot this configuration asks for. Backends get slots in
    /// file order.
    pub fn to_spec(&self, generation: u64, mac: MacAddr) -> Result<SnapshotSpec> {
        let mut slot = 0u16;
        let mut vips = Vec::with_capacity(self.vips.len());
        for v in &self.vips {
            let key = VipKey {
                addr: v.address,
                port: v.port,
                proto: match v.protocol {
                    Protocol::Tcp => Proto::Tcp,
                    Protocol::Udp => Proto::Udp,
                },
            };
            let mut backends = Vec::with_capacity(v.backends.len());
            for b in &v.backends {
                let mac = b
                    .mac
                    .as_deref()
                    .map(str::parse::<MacAddr>)
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("vip {key}: backend {}: mac: {e}", b.address))?;
                backends.push(BackendSpec {
                    id: BackendRef {
                        slot,
                        incarnation: 1,
                    },
                    addr: b.address,
                    weight: b.weight,
                    mac,
                    state: match b.state {
                        State::Up => BackendState::Up,
                        State::Draining => BackendState::Draining,
                        State::Down => BackendState::Down,
                    },
                });
                slot = slot.checked_add(1).context("more than 65535 backends")?;
            }
            vips.push(VipSpec {
                key,
                table_size: v.table_size,
                backends,
            });
        }
        Ok(SnapshotSpec {
            generation,
            mac,
            local: self.local_addresses.clone(),
            vips,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::snapshot::Snapshot;

    #[test]
    fn example_config_builds_a_snapshot() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lb.example.toml");
        let c = Config::load(&path).unwrap();
        let spec = c.to_spec(1, MacAddr([2, 0, 0, 0, 0, 1])).unwrap();
        assert_eq!(spec.vips.len(), 2);
        assert_eq!(spec.vips[0].backends[1].state, BackendState::Draining);
        assert_eq!(spec.vips[1].table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(spec.vips[1].backends[0].id.slot, 2, "slots in file order");
        let s = Snapshot::build(&spec).unwrap();
        assert_eq!(s.vips().len(), 2);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = |text: &str| {
            format!(
                "{:#}",
                toml::from_str::<Config>(text)
                    .map_err(anyhow::Error::from)
                    .unwrap_err()
            )
        };
        assert!(
            bad("[[vip]]\naddress = \"198.51.100.300\"\nport = 1\nprotocol = \"tcp\"")
                .contains("address")
        );
        assert!(
            bad("[[vip]]\naddress = \"198.51.100.1\"\nport = 1\nprotocol = \"sctp\"")
                .contains("protocol")
        );
        assert!(
            bad("[[vip]]\naddress = \"198.51.100.1\"\nport = 70000\nprotocol = \"tcp\"")
                .contains("port")
        );
        assert!(bad("colour = 1").contains("colour"));
        let c: Config = toml::from_str("[[vip]]\naddress = \"198.51.100.1\"\nport = 1\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"192.0.2.1\"\nmac = \"nope\"").unwrap();
        let e = format!("{:#}", c.to_spec(1, MacAddr::ZERO).unwrap_err());
        assert!(
            e.contains("198.51.100.1:1/tcp") && e.contains("mac") && e.contains("nope"),
            "{e}"
        );
    }
}
