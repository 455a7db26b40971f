//! Command line: `lbd [EAL options] -- [lbd options]`, as every DPDK application.

use anyhow::{Context, Result};
use clap::Parser;
use lb_core::flow::FlowConfig;

#[derive(Debug, Parser)]
#[command(
    name = "lbd",
    about = "Layer-4 DR load balancer daemon",
    version = lb_proto::VERSION,
    override_usage = "lbd [EAL options] -- --port NAME [OPTIONS]"
)]
pub struct Options {
    /// The DPDK port to serve: a device name (net_pcap0, 0000:01:00.0) or a port number.
    #[arg(long)]
    pub port: String,
    /// The state file: VIPs and backends (format: control/lb.example.toml).
    /// Loaded at start when it exists; every accepted API change rewrites it
    /// before it is acknowledged. Without it, changes last until exit.
    #[arg(long = "state", visible_alias = "config", value_name = "FILE")]
    pub state: Option<std::path::PathBuf>,
    /// The gRPC API's Unix socket (its file permissions are the access control).
    #[arg(
        long = "grpc-socket",
        value_name = "PATH",
        default_value = "/run/lbd.sock"
    )]
    grpc_socket_path: std::path::PathBuf,
    /// Serve no gRPC API.
    #[arg(long)]
    no_grpc: bool,
    #[arg(skip)]
    pub grpc_socket: Option<std::path::PathBuf>,
    /// Also serve the gRPC API on TCP at ADDR, with TLS and required client
    /// certificates (give --tls-cert, --tls-key and --tls-client-ca).
    #[arg(long, value_name = "ADDR", requires_all = ["tls_cert", "tls_key", "tls_client_ca"])]
    pub grpc_listen: Option<std::net::SocketAddr>,
    /// PEM certificate (chain) of the TCP API.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of the TCP API.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CA that client certificates must chain to.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9910).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Create this kernel interface (net_tap, with the port's MAC) as the
    /// exception path: traffic for the host (health checks, BGP, SSH) goes
    /// through it. Give it the `local_addresses` with `ip addr add`.
    #[arg(long, value_name = "NAME")]
    pub kernel_iface: Option<String>,
    /// The log's form: text on stderr (colour only on a terminal), json
    /// (one object per line on stderr), or journald (its native protocol,
    /// levels as priorities). LBD_LOG=debug (or a tracing filter) for more.
    /// The last one given wins (lbd.service gives journald, then the
    /// options of /etc/lbd/lbd.conf).
    #[arg(long, value_enum, default_value_t, overrides_with = "log_format")]
    pub log_format: crate::logging::LogFormat,
    /// Use this DPDK device (created with the EAL's --vdev: a net_tap or
    /// virtio_user the operator set up, a net_pcap to replay the host's
    /// frames) as the exception path instead of creating one. lbd sets
    /// nothing up on the kernel's side, so checks go via the real address
    /// (checks via the VIP need --kernel-iface, whose VIP routes lbd sets).
    #[arg(long, value_name = "DEVICE", conflicts_with = "kernel_iface")]
    pub kernel_port: Option<String>,
    /// Announce the VIP addresses this instance can serve by writing them,
    /// as BIRD 2 static protocols, to FILE (include it from bird.conf) and
    /// running --bgp-reload after each change. See README, "Several
    /// instances behind ECMP".
    #[arg(long, value_name = "FILE")]
    pub bgp_routes: Option<std::path::PathBuf>,
    /// Command (run with sh -c) that makes the BGP speaker read --bgp-routes.
    #[arg(
        long,
        value_name = "COMMAND",
        default_value = "birdc configure",
        requires = "bgp_routes"
    )]
    pub bgp_reload: String,
    /// On SIGTERM or SIGINT: withdraw the routes, keep forwarding this many
    /// milliseconds (while the routers move the flows away), then stop.
    /// Default 3000 with --bgp-routes, else 0. A second signal stops at once.
    #[arg(long, value_name = "MS")]
    pub shutdown_grace_ms: Option<u64>,
    /// Do not answer ICMP/ICMPv6 echo requests to VIP addresses: drop them
    /// (counted as icmp_not_for_flow). By default the dataplane answers them.
    #[arg(long)]
    pub no_vip_ping: bool,
    /// Echo replies to VIPs per second per worker, in bursts of up to 100;
    /// requests over the rate are dropped (echo_rate_limited). 0: no limit.
    #[arg(long, value_name = "N", default_value_t = dataplane::worker::ECHO_RATE)]
    pub vip_ping_rate: u32,
    /// The port's IP MTU (bytes, 1350-9216): a packet to a tunnelled
    /// backend (ipip, gue, vxlan) that would exceed it once encapsulated is
    /// answered with ICMP fragmentation-needed / ICMPv6 packet-too-big
    /// (DF set, or IPv6) naming the MTU less the tunnel's overhead, or
    /// dropped (oversize). DR packets are not encapsulated.
    #[arg(long, value_name = "BYTES", default_value_t = lb_core::tunnel::DEFAULT_MTU,
          value_parser = clap::value_parser!(u16).range(i64::from(MIN_MTU)..=i64::from(MAX_MTU)))]
    pub mtu: u16,
    /// ICMP too-big replies (see --mtu) per second per worker, in bursts of
    /// up to 100; packets over the rate are dropped (too_big_rate_limited).
    /// 0: no limit.
    #[arg(long, value_name = "N", default_value_t = dataplane::worker::TOO_BIG_RATE)]
    pub too_big_rate: u32,
    /// Flow-table entries per worker (64 bytes each, allocated at start).
    #[arg(long, default_value_t = 1 << 20)]
    pub flows: usize,
    /// Idle timeout (seconds) of a flow seen once and not yet confirmed by a second packet.
    #[arg(long, default_value_t = FlowConfig::default().new_timeout, value_name = "SECONDS")]
    pub new_flow_timeout: u32,
    /// Idle timeout (seconds) of an established TCP flow.
    #[arg(long, default_value_t = FlowConfig::default().established_timeout, value_name = "SECONDS")]
    pub tcp_timeout: u32,
    /// Idle timeout (seconds) of a TCP flow after FIN or RST.
    #[arg(long, default_value_t = FlowConfig::default().closing_timeout, value_name = "SECONDS")]
    pub tcp_closing_timeout: u32,
    /// Idle timeout (seconds) of a confirmed UDP flow.
    #[arg(long, default_value_t = FlowConfig::default().udp_timeout, value_name = "SECONDS")]
    pub udp_timeout: u32,
    /// Mbufs in the packet pool.
    #[arg(long, default_value_t = 8191)]
    pub mbufs: u32,
    /// RX descriptors per queue.
    #[arg(long, default_value_t = 1024)]
    pub rx_desc: u16,
    /// TX descriptors per queue.
    #[arg(long, default_value_t = 1024)]
    pub tx_desc: u16,
    /// Stop after this many milliseconds without a received packet (pcap replay).
    #[arg(long, value_name = "MS")]
    pub exit_idle_ms: Option<u64>,
    /// Log the counters every N seconds.
    #[arg(long, value_name = "SECONDS")]
    pub stats_interval_s: Option<u64>,
    /// Print the final counters as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The range of `--mtu`: an IPv6 tunnel's overhead (up to 70 bytes for
/// VXLAN) must leave the 1280 bytes IPv6 guarantees, and jumbo frames end
/// at 9216.
pub const MIN_MTU: u16 = 1350;
pub const MAX_MTU: u16 = 9216;

impl Options {
    pub fn shutdown_grace(&self) -> std::time::Duration {
        let ms = self
            .shutdown_grace_ms
            .unwrap_or(if self.bgp_routes.is_some() { 3000 } else { 0 });
        std::time::Duration::from_millis(ms)
    }

    pub fn flow_config(&self) -> FlowConfig {
        FlowConfig {
            new_timeout: self.new_flow_timeout,
            established_timeout: self.tcp_timeout,
            closing_timeout: self.tcp_closing_timeout,
            udp_timeout: self.udp_timeout,
            ..FlowConfig::default()
        }
    }
}

/// Split at the first `--`: EAL's arguments before, ours after.
pub fn parse(argv: &[String]) -> Result<(Vec<String>, Options)> {
    // Packaging: `lbd --generate-man` prints the man page (roff) of these
    // options, made from the same definitions as --help.
    if argv == ["--generate-man"] {
        let mut page = Vec::new();
        clap_mangen::Man::new(<Options as clap::CommandFactory>::command())
            .section("8")
            .render(&mut page)
            .context("rendering the man page")?;
        print!("{}", String::from_utf8_lossy(&page));
        std::process::exit(0);
    }
    let (eal, ours) = match argv.iter().position(|a| a == "--") {
        Some(i) => (&argv[..i], &argv[i + 1..]),
        None => (&argv[..0], argv),
    };
    let mut opts =
        Options::try_parse_from(std::iter::once("lbd").chain(ours.iter().map(String::as_str)))
            .map_err(|e| {
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) {
                    print!("{e}");
                    std::process::exit(0);
                }
                e
            })
            .context("lbd options (after --)")?;
    opts.grpc_socket = (!opts.no_grpc).then(|| opts.grpc_socket_path.clone());
    Ok((eal.to_vec(), opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn splits_eal_and_lbd_arguments() {
        let (eal, o) = parse(&v(&[
            "-l",
            "0,1",
            "--no-pci",
            "--",
            "--port",
            "net_pcap0",
            "--config",
            "lb.toml",
            "--flows",
            "1000",
        ]))
        .unwrap();
        assert_eq!(eal, v(&["-l", "0,1", "--no-pci"]));
        assert_eq!(o.port, "net_pcap0");
        assert_eq!(
            o.state.as_deref(),
            Some(std::path::Path::new("lb.toml")),
            "--config is an alias of --state"
        );
        assert_eq!(
            o.grpc_socket.as_deref(),
            Some(std::path::Path::new("/run/lbd.sock"))
        );
        assert_eq!(o.flows, 1000);
        assert!(!o.no_vip_ping, "ping for VIPs is on by default");
        assert_eq!(o.vip_ping_rate, 1000);
        let (_, np) = parse(&v(&[
            "--",
            "--port",
            "p",
            "--no-vip-ping",
            "--vip-ping-rate",
            "5",
        ]))
        .unwrap();
        assert!(np.no_vip_ping);
        assert_eq!(np.vip_ping_rate, 5);
        assert_eq!(o.mtu, 1500, "--mtu defaults to 1500");
        assert_eq!(o.too_big_rate, 1000);
        let (_, jumbo) = parse(&v(&[
            "--",
            "--port",
            "p",
            "--mtu",
            "9000",
            "--too-big-rate",
            "10",
        ]))
        .unwrap();
        assert_eq!((jumbo.mtu, jumbo.too_big_rate), (9000, 10));
        let (_, quiet) = parse(&v(&["--", "--port", "p", "--no-grpc"])).unwrap();
        assert_eq!(quiet.grpc_socket, None);
        assert_eq!(o.flow_config(), FlowConfig::default());
        assert_eq!(o.shutdown_grace(), std::time::Duration::ZERO);
        let (_, bgp) = parse(&v(&["--", "--port", "p", "--bgp-routes", "/run/vips.conf"])).unwrap();
        assert_eq!(bgp.bgp_reload, "birdc configure");
        assert_eq!(bgp.shutdown_grace(), std::time::Duration::from_secs(3));
        let (_, o) = parse(&v(&[
            "--",
            "--port",
            "p",
            "--udp-timeout",
            "60",
            "--tcp-timeout",
            "7200",
        ]))
        .unwrap();
        assert_eq!(
            (
                o.flow_config().udp_timeout,
                o.flow_config().established_timeout
            ),
            (60, 7200)
        );
    }

    #[test]
    fn bad_options_name_the_problem() {
        let e = parse(&v(&["--", "--port", "p", "--flows", "many"])).unwrap_err();
        assert!(format!("{e:#}").contains("--flows"), "{e:#}");
        assert!(
            parse(&v(&["--", "--config", "x"])).is_err(),
            "port is required"
        );
        let e = parse(&v(&["--", "--port", "p", "--bgp-reload", "true"])).unwrap_err();
        assert!(format!("{e:#}").contains("--bgp-routes"), "{e:#}");
        for mtu in ["1280", "9217", "70000", "big"] {
            let e = format!(
                "{:#}",
                parse(&v(&["--", "--port", "p", "--mtu", mtu])).unwrap_err()
            );
            assert!(e.contains("--mtu"), "{e}");
            if mtu != "big" {
                assert!(e.contains("1350..=9216"), "{e}");
            }
        }
    }
}
