//! The state file's format (`lb.toml`): the port's own addresses, VIPs and
//! their backends. `lbd --state FILE` loads it at start and rewrites it on
//! every accepted change; `lbctl export` prints it and `lbctl apply -f`
//! converges to it. `control/lb.example.toml` documents every field.
//!
//! ```toml
//! local_addresses = ["192.0.2.1"]        # the port's own addresses (host traffic)
//! tunnel_sources = ["192.0.2.1"]         # outer source of tunnels, per family (instance-local)
//!
//! [[route]]                              # next hops of tunnelled backends (instance-local)
//! prefix = "10.20.0.0/16"
//! gateway = "192.0.2.254"
//!
//! [[vip]]
//! address = "198.51.100.10"
//! port = 443
//! protocol = "tcp"                       # tcp | udp
//! table_size = 65537                     # prime; default 65537
//! # quic_server_id_len = 2               # udp only: route QUIC by the server id (1-15)
//! # drain_flows = "move"                 # keep | move: a draining backend's flows; default keep
//!
//! [[vip.backend]]
//! address = "192.0.2.11"
//! mac = "02:00:00:00:00:11"              # static MAC; absent: resolved by ARP/ND
//! weight = 1                             # default 1; 0 takes no new flows
//! state = "up"                           # up | draining | down; default up
//! forward = "dr"                         # dr | ipip | gue | vxlan; default dr
//! # server_id = "0a01"                   # hex; the VIP's quic_server_id_len bytes (QUIC mode)
//! ```

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub const DEFAULT_TABLE_SIZE: u32 = 65537;

#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_addresses: Vec<IpAddr>,
    /// Maintained by lbd in its state file: the configuration's revision
    /// (one more with every accepted change). Ignored by Apply.
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub revision: u64,
    /// The outer source address of tunnels ([`ForwardMethod`]), at most one
    /// per family; a family without one: the first `local_addresses` of
    /// that family. The instance's own, as `local_addresses` are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnel_sources: Vec<IpAddr>,
    /// `[[route]]`: next hops of tunnelled backends beyond the segment.
    /// The instance's own, as `local_addresses` are.
    #[serde(default, rename = "route", skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "vip")]
    pub vips: Vec<VipConfig>,
}

/// `[[route]]`: tunnelled backends whose address is in `prefix` are reached
/// through `gateway` (on the port's segment); the longest prefix wins.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// `10.20.0.0/16`, `2001:db8:20::/48`.
    pub prefix: String,
    pub gateway: IpAddr,
    /// The gateway's static MAC; absent: resolved by ARP / ND.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VipConfig {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default = "default_table_size")]
    pub table_size: u32,
    /// Idle timeout (seconds) of this VIP's established TCP flows; 0 or
    /// absent: lbd's `--tcp-timeout`. Long-paused streams may want hours.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub tcp_idle_timeout: u16,
    /// Idle timeout (seconds) of this VIP's UDP flows; 0 or absent: lbd's `--udp-timeout`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub udp_idle_timeout: u16,
    /// The outer source of this VIP's tunnels, per family: overrides the
    /// top-level `tunnel_sources`. Travels with the VIP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tunnel_sources: Vec<IpAddr>,
    /// QUIC mode (UDP only): datagrams go to the backend whose `server_id`
    /// is in the destination connection ID, this many bytes after its
    /// first (1-15); 0 or absent: off. See docs/QUIC.md.
    #[serde(default, skip_serializing_if = "is_zero_u8")]
    pub quic_server_id_len: u8,
    /// What a draining backend's flows do: `keep` (the default) or `move`.
    #[serde(default, skip_serializing_if = "DrainFlows::is_keep")]
    pub drain_flows: DrainFlows,
    #[serde(default, rename = "backend")]
    pub backends: Vec<BackendConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub address: IpAddr,
    /// dr: a static MAC (absent: resolved); vxlan: required, the MAC of the
    /// backend's VXLAN device; ipip, gue: refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// How its packets reach it; default dr.
    #[serde(default, skip_serializing_if = "ForwardMethod::is_dr")]
    pub forward: ForwardMethod,
    /// gue (default 6080) and vxlan (default 4789) only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_port: Option<u16>,
    /// vxlan only, and required there: 0-16777215.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Hex (`0a01`): the id its QUIC connection IDs carry, as long as its
    /// VIP's `quic_server_id_len`; kept but unused while QUIC mode is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub state: AdminState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckConfig>,
    /// `[vip.backend.agent]`: the load-feedback agent polled for a weight
    /// percentage; absent: the configured weight alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentConfig>,
    /// Active flows above which the backend takes no new ones (until below
    /// `min_flows`, default 90% of it); absent: no cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_flows: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_flows: Option<u32>,
}

/// How a backend's packets reach it ([`lb_core::tunnel`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ForwardMethod {
    /// Direct server return on the segment: the Ethernet header rewritten.
    #[default]
    Dr,
    /// The client's IP packet inside an outer IP header.
    Ipip,
    /// GUE variant 1: the client's IP packet after an outer UDP header.
    Gue,
    /// The DR frame inside VXLAN over UDP.
    Vxlan,
}

impl ForwardMethod {
    pub fn is_dr(&self) -> bool {
        *self == ForwardMethod::Dr
    }

    /// The name with its article, for messages: "an ipip", "a gue".
    pub fn a(&self) -> &'static str {
        match self {
            ForwardMethod::Dr => "a dr",
            ForwardMethod::Ipip => "an ipip",
            ForwardMethod::Gue => "a gue",
            ForwardMethod::Vxlan => "a vxlan",
        }
    }

    /// `dr`, `ipip`, `gue` or `vxlan` (`""`: `dr`), the CLI's form.
    pub fn parse(s: &str) -> Option<ForwardMethod> {
        match s {
            "" | "dr" => Some(ForwardMethod::Dr),
            "ipip" => Some(ForwardMethod::Ipip),
            "gue" => Some(ForwardMethod::Gue),
            "vxlan" => Some(ForwardMethod::Vxlan),
            _ => None,
        }
    }
}

impl std::fmt::Display for ForwardMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ForwardMethod::Dr => "dr",
            ForwardMethod::Ipip => "ipip",
            ForwardMethod::Gue => "gue",
            ForwardMethod::Vxlan => "vxlan",
        })
    }
}

/// What a draining backend's flows do on a VIP ([`lb_core::snapshot::DrainFlows`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainFlows {
    /// They stay until they end.
    #[default]
    Keep,
    /// They move at once, as a down backend's: for UDP clients that never
    /// stop sending, whose drain would never end.
    Move,
}

impl DrainFlows {
    pub fn is_keep(&self) -> bool {
        *self == DrainFlows::Keep
    }

    /// `keep` or `move` (`""`: `keep`), the CLI's form.
    pub fn parse(s: &str) -> Option<DrainFlows> {
        match s {
            "" | "keep" => Some(DrainFlows::Keep),
            "move" => Some(DrainFlows::Move),
            _ => None,
        }
    }

    pub fn to_core(self) -> lb_core::snapshot::DrainFlows {
        match self {
            DrainFlows::Keep => lb_core::snapshot::DrainFlows::Keep,
            DrainFlows::Move => lb_core::snapshot::DrainFlows::Move,
        }
    }
}

impl std::fmt::Display for DrainFlows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DrainFlows::Keep => "keep",
            DrainFlows::Move => "move",
        })
    }
}

/// `[vip.backend.agent]`: HAProxy's agent-check over TCP, or HTTP JSON.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `tcp` or `http:/path`.
    pub kind: String,
    #[serde(default = "default_agent_port")]
    pub port: u16,
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    /// 0 or absent: half the interval, at most 1000 ms.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
}

fn default_agent_port() -> u16 {
    crate::state::DEFAULT_AGENT_PORT
}

/// `[vip.backend.check]`: a TCP connect or an HTTP GET, every interval.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// `tcp` or `http:/path`.
    pub kind: String,
    /// The HTTP status that means healthy.
    #[serde(default = "default_status")]
    pub status: u16,
    /// Port to check; default: the VIP's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default = "default_interval")]
    pub interval_ms: u32,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u32,
    #[serde(default = "default_rise")]
    pub rise: u32,
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// `auto` (the default): `vip` when lbd has an exception interface,
    /// else `real`; `real`: to the backend's own address; `vip`: to
    /// VIP:port along the DR path (see [`CheckVia`]).
    #[serde(default, skip_serializing_if = "CheckVia::is_auto")]
    pub via: CheckVia,
    /// A `udp` check's datagram (text); default `lbd-health\n`. Any
    /// datagram back within the timeout passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
}

/// The path a health check takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckVia {
    /// `Vip` when lbd has an exception interface (`--kernel-iface`), the
    /// only way a check can travel the DR path; else `Real`. A check via
    /// the VIP also checks the real address, for diagnosis.
    #[default]
    Auto,
    /// To the backend's own address and the check port.
    Real,
    /// To the VIP's address and the check port, from source port
    /// `PROBE_PORT_BASE + slot` on the host, which the dataplane steers to
    /// this backend's MAC exactly as client traffic (the IP packet
    /// untouched): the backend must own the VIP to answer. Needs
    /// `--kernel-iface`.
    Vip,
}

impl CheckVia {
    pub fn is_auto(&self) -> bool {
        *self == CheckVia::Auto
    }

    /// The path taken: [`CheckVia::Auto`] resolved by whether lbd has an
    /// exception interface.
    pub fn effective(self, kernel_iface: bool) -> CheckVia {
        match self {
            CheckVia::Auto if kernel_iface => CheckVia::Vip,
            CheckVia::Auto => CheckVia::Real,
            v => v,
        }
    }

    /// `auto`, `real` or `vip` (`""`: `auto`), the API's and the CLI's form.
    pub fn parse(s: &str) -> Option<CheckVia> {
        match s {
            "" | "auto" => Some(CheckVia::Auto),
            "real" => Some(CheckVia::Real),
            "vip" => Some(CheckVia::Vip),
            _ => None,
        }
    }
}

impl std::fmt::Display for CheckVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CheckVia::Auto => "auto",
            CheckVia::Real => "real",
            CheckVia::Vip => "vip",
        })
    }
}

fn default_status() -> u16 {
    200
}

fn default_interval() -> u32 {
    2000
}

/// 0: the timeout follows the interval (`HealthCheck::default_timeout`).
fn default_timeout() -> u32 {
    0
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    #[default]
    Up,
    Draining,
    Down,
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

fn is_zero(v: &u16) -> bool {
    *v == 0
}

fn is_zero_u8(v: &u8) -> bool {
    *v == 0
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::DesiredState;
    use lb_core::packet::MacAddr;
    use lb_core::snapshot::{BackendState, Snapshot};

    #[test]
    fn a_check_without_a_timeout_follows_its_interval() {
        let text = "[[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n\
                    [[vip.backend]]\naddress = \"192.0.2.11\"\n\
                    [vip.backend.check]\nkind = \"tcp\"\ninterval_ms = 500\n";
        let c: Config = toml::from_str(text).unwrap();
        let state = DesiredState::from_config(&c).unwrap();
        let check = state.to_config().vips[0].backends[0].check.clone().unwrap();
        assert_eq!((check.interval_ms, check.timeout_ms), (500, 250));
    }

    #[test]
    fn a_check_goes_the_way_it_says_and_auto_by_default() {
        let text = |via: &str| {
            format!(
                "[[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n\
                 [[vip.backend]]\naddress = \"192.0.2.11\"\n\
                 [vip.backend.check]\nkind = \"http:/health\"\n{via}"
            )
        };
        let via = |t: &str| {
            let c: Config = toml::from_str(t).unwrap();
            let state = DesiredState::from_config(&c).unwrap();
            let check = state.checks().pop().unwrap().2;
            let saved = toml::to_string(&state.to_config()).unwrap();
            (check.via, saved)
        };
        let (v, saved) = via(&text(""));
        assert_eq!(v, CheckVia::Auto);
        assert!(
            !saved.contains("via"),
            "the default is not written: {saved}"
        );
        assert_eq!(v.effective(true), CheckVia::Vip);
        assert_eq!(v.effective(false), CheckVia::Real);
        for (written, want) in [("real", CheckVia::Real), ("vip", CheckVia::Vip)] {
            let (v, saved) = via(&text(&format!("via = \"{written}\"\n")));
            assert_eq!(v, want);
            assert!(saved.contains(&format!("via = \"{written}\"")), "{saved}");
            assert_eq!(via(&saved).0, want, "round trip");
            assert_eq!(v.effective(true), want);
            assert_eq!(v.effective(false), want);
        }
        let e = format!(
            "{:#}",
            toml::from_str::<Config>(&text("via = \"lo\"\n")).unwrap_err()
        );
        assert!(e.contains("via") || e.contains("unknown variant"), "{e}");
        assert_eq!(CheckVia::parse("vip"), Some(CheckVia::Vip));
        assert_eq!(CheckVia::parse(""), Some(CheckVia::Auto));
        assert_eq!(CheckVia::parse("VIP"), None);
    }

    #[test]
    fn example_config_builds_a_snapshot() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("lb.example.toml");
        let c = Config::load(&path).unwrap();
        let state = DesiredState::from_config(&c).unwrap();
        let spec = state.to_spec(1, MacAddr([2, 0, 0, 0, 0, 1]), |_| None);
        assert_eq!(spec.vips.len(), 2);
        let tcp = spec.vips.iter().find(|v| v.key.port == 443).unwrap();
        assert_eq!(tcp.backends[1].state, BackendState::Draining);
        // Its tunnelled backends: each method, from the VIP's own source,
        // the routed ones at the gateway's static MAC.
        let by = |a: &str| {
            tcp.backends
                .iter()
                .find(|b| b.addr.to_string() == a)
                .unwrap()
        };
        let source: IpAddr = "192.0.2.5".parse().unwrap();
        use lb_core::tunnel::{Encap, Tunnel};
        assert_eq!(
            by("192.0.2.13").tunnel,
            Some(Tunnel {
                encap: Encap::Ipip,
                source
            })
        );
        assert_eq!(
            by("192.0.2.13").mac,
            None,
            "on the segment: resolved itself"
        );
        assert_eq!(
            by("203.0.113.11").tunnel,
            Some(Tunnel {
                encap: Encap::Gue { port: 6080 },
                source
            })
        );
        assert_eq!(by("203.0.113.11").mac, Some(MacAddr([2, 0, 0, 0, 0, 0xfe])));
        assert_eq!(
            by("203.0.113.12").tunnel.unwrap().encap,
            Encap::Vxlan {
                port: 4789,
                vni: 100,
                inner_mac: MacAddr([2, 0, 0, 0, 1, 0x12])
            }
        );
        assert_eq!(state.tunnel_sources.len(), 1);
        assert_eq!(state.routes.len(), 1);
        let udp = spec.vips.iter().find(|v| v.key.port == 5000).unwrap();
        assert_eq!(udp.table_size, DEFAULT_TABLE_SIZE);
        assert_eq!(udp.quic.map(|q| q.server_id_len), Some(2));
        assert_eq!(udp.drain, lb_core::snapshot::DrainFlows::Move);
        assert!(udp.backends[0].server_id.is_some());
        let s = Snapshot::build(&spec).unwrap();
        assert_eq!(s.vips().len(), 2);
        assert_eq!(
            DesiredState::from_config(&state.to_config())
                .unwrap()
                .to_config(),
            state.to_config(),
            "round trip"
        );
    }

    #[test]
    fn tunnels_in_the_file_name_their_fields() {
        let head = "local_addresses = [\"192.0.2.1\"]\n\
                    [[route]]\nprefix = \"10.20.0.0/16\"\ngateway = \"192.0.2.254\"\n\
                    [[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n\
                    [[vip.backend]]\naddress = \"10.20.0.11\"\n";
        let c: Config = toml::from_str(&format!(
            "{head}forward = \"vxlan\"\nvni = 100\nmac = \"02:00:00:00:01:11\"\n"
        ))
        .unwrap();
        let s = DesiredState::load(&c).unwrap();
        let spec = s.to_spec(1, MacAddr([2, 0, 0, 0, 0, 1]), |a| {
            (a.to_string() == "192.0.2.254").then_some(MacAddr([2, 0, 0, 0, 0, 0xfe]))
        });
        let b = &spec.vips[0].backends[0];
        assert_eq!(b.mac, Some(MacAddr([2, 0, 0, 0, 0, 0xfe])), "the gateway's");
        assert!(b.tunnel.is_some());
        let bad = |extra: &str| -> String {
            let text = format!("{head}{extra}");
            match toml::from_str::<Config>(&text) {
                Err(e) => e.to_string(),
                Ok(c) => DesiredState::load(&c).unwrap_err().to_string(),
            }
        };
        for (extra, want) in [
            ("forward = \"gre\"\n", "forward"),
            ("forward = \"vxlan\"\nmac = \"02:00:00:00:01:11\"\n", "backend.vni"),
            (
                "forward = \"vxlan\"\nvni = 16777216\nmac = \"02:00:00:00:01:11\"\n",
                "backend.vni",
            ),
            ("forward = \"vxlan\"\nvni = 1\n", "backend.mac: vip 198.51.100.10:80/tcp, backend 10.20.0.11: a vxlan backend needs the MAC of its vxlan device"),
            ("forward = \"ipip\"\ntunnel_port = 4\n", "backend.tunnel_port"),
            ("tunnel_port = 4\n", "backend.tunnel_port"),
            ("forward = \"gue\"\nvni = 4\n", "backend.vni"),
            ("forward = \"ipip\"\nmac = \"02:00:00:00:01:11\"\n", "backend.mac"),
            ("forward = \"gue\"\ntunnel_port = 70000\n", "tunnel_port"),
            ("vnid = 1\n", "vnid"),
        ] {
            let e = bad(extra);
            assert!(e.contains(want), "{extra:?}: {e}");
        }
        // No source of the backend's family at all.
        let c: Config = toml::from_str(
            "[[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\naddress = \"10.20.0.11\"\nforward = \"ipip\"\n",
        )
        .unwrap();
        let e = DesiredState::load(&c).unwrap_err().to_string();
        assert!(
            e.contains("backend.forward") && e.contains("tunnel_sources"),
            "{e}"
        );
        let top = |t: &str| {
            let c: Config = toml::from_str(t).unwrap();
            DesiredState::load(&c).unwrap_err().to_string()
        };
        assert!(top("tunnel_sources = [\"192.0.2.1\", \"192.0.2.2\"]").contains("tunnel_sources"));
        assert!(
            top("[[route]]\nprefix = \"10.0.0.1/8\"\ngateway = \"192.0.2.254\"")
                .contains("route.prefix")
        );
        assert!(
            top("[[route]]\nprefix = \"10.0.0.0/8\"\ngateway = \"2001:db8::1\"")
                .contains("route.gateway")
        );
        assert!(
            top("[[route]]\nprefix = \"10.0.0.0/8\"\ngateway = \"192.0.2.254\"\nmac = \"x\"")
                .contains("route.mac")
        );
        assert!(top(
            "[[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n\
                     tunnel_sources = [\"2001:db8::1\", \"2001:db8::2\"]"
        )
        .contains("vip.tunnel_sources: vip 198.51.100.10:80/tcp"));
        let e = toml::from_str::<Config>("[[route]]\nprefix = \"10.0.0.0/8\"\nvia = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("via") || e.contains("gateway"), "{e}");
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
        let e = DesiredState::from_config(&c).unwrap_err().to_string();
        assert!(
            e.contains("198.51.100.1:1/tcp") && e.contains("backend.mac") && e.contains("nope"),
            "{e}"
        );
        let c: Config = toml::from_str(
            "[[vip]]\naddress = \"198.51.100.1\"\nport = 1\nprotocol = \"tcp\"\ntable_size = 1000",
        )
        .unwrap();
        assert!(DesiredState::from_config(&c)
            .unwrap_err()
            .to_string()
            .contains("not prime"));
    }
}
