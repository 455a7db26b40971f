//! `lbctl`, the operator CLI over lbd's `lb.v1` gRPC API (Unix socket).
//! Human tables by default, `--output json` everywhere; a non-zero exit
//! status with the server's message on any error. Several instances at once
//! (`--socket A --socket B`): each command runs on each of them in turn; in
//! JSON, one document names each instance with its result or its error.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::Duration;

mod diagnose;
mod rates;

use anyhow::{anyhow, bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use lb_proto::v1 as pb;
use lb_proto::v1::load_balancer_client::LoadBalancerClient;
use serde_json::{json, Value};
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Parser)]
#[command(name = "lbctl", about = "Operate the lbd load balancer", version = lb_proto::VERSION)]
struct Cli {
    /// lbd's API socket; repeat it (or separate with commas) to run the
    /// command on several instances: under --output json, one document
    /// {"instances": [{"instance": SOCKET, "result": ...} or {"instance":
    /// SOCKET, "error": {...}}, ...]}.
    #[arg(
        long,
        env = "LBCTL_SOCKET",
        default_value = "/run/lbd.sock",
        value_delimiter = ',',
        global = true,
        help_heading = "Connection"
    )]
    socket: Vec<PathBuf>,
    /// Seconds a command may take (connecting and its calls) before lbctl
    /// gives up with exit status 4; `events` and `stats --watch` only
    /// bound their connecting.
    #[arg(
        long,
        env = "LBCTL_DEADLINE",
        value_name = "SECONDS",
        default_value_t = 10,
        global = true,
        help_heading = "Connection"
    )]
    deadline: u64,
    /// Reach lbd over TCP with TLS instead, e.g. https://192.0.2.1:7443
    /// (needs --tls-ca, --tls-cert and --tls-key); repeatable, as --socket.
    #[arg(long, env = "LBCTL_SERVER", value_delimiter = ',', global = true, help_heading = "Connection", requires_all = ["tls_ca", "tls_cert", "tls_key"])]
    server: Vec<String>,
    /// PEM CA that lbd's certificate must chain to.
    #[arg(long, env = "LBCTL_TLS_CA", global = true, help_heading = "Connection")]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate.
    #[arg(
        long,
        env = "LBCTL_TLS_CERT",
        global = true,
        help_heading = "Connection"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM client key.
    #[arg(
        long,
        env = "LBCTL_TLS_KEY",
        global = true,
        help_heading = "Connection"
    )]
    tls_key: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Clone, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "one command, parsed once per run: its size does not matter"
)]
enum Command {
    /// Virtual IPs: ADDRESS:PORT/PROTOCOL, e.g. 198.51.100.10:443/tcp or [2001:db8::10]:443/udp.
    #[allow(
        rustdoc::broken_intra_doc_links,
        reason = "clap help text, not Markdown: [2001:db8::10] is an IPv6 address, not a link"
    )]
    #[command(subcommand)]
    Vip(VipCommand),
    /// Real servers behind a VIP.
    #[command(subcommand)]
    Backend(BackendCommand),
    /// Health-checked backends: verdict and last check.
    Health,
    /// One row per backend (MAC resolved, check and its path, ARP/ND claims
    /// of the VIP, traffic over an interval) and, for each failure, the
    /// likely cause and the fix. Exits non-zero when something is wrong, so
    /// it can gate a deployment.
    Diagnose {
        /// Only this VIP (ADDRESS:PORT/PROTOCOL); default: every VIP.
        vip: Option<String>,
        /// Seconds between the two stats samples the traffic columns compare.
        #[arg(long, default_value_t = 1)]
        interval: u64,
    },
    /// Converge lbd to a configuration file (the state-file TOML format),
    /// atomically, printing what changed.
    Apply {
        /// The TOML file; `-` reads standard input.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply only if lbd's configuration is at this revision (as `info`
        /// or `export -o json` show it); else fail with exit status 3, so a
        /// change made since is not overwritten unknowingly.
        #[arg(long, value_name = "REVISION")]
        expect_revision: Option<u64>,
    },
    /// Print the current configuration in the state-file format (without
    /// the instance's own local_addresses).
    Export,
    /// Counters per worker, VIP and backend.
    Stats {
        /// Print again every interval until interrupted; each print after
        /// the first adds the rates per second since the previous one
        /// (packets, bits, new flows, drops), over the time measured
        /// between the two samples; "-" (JSON: null) where a counter went
        /// down, as when lbd restarted.
        #[arg(long)]
        watch: bool,
        /// Seconds between prints with --watch.
        #[arg(long, default_value_t = 2)]
        interval: u64,
    },
    /// Stream events (backend up/down, configuration changes) as they happen.
    Events {
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// The dataplane: port, MAC, workers, EAL arguments, config digest,
    /// announced routes.
    Info,
    /// The config digest of each instance given (--socket/--server); fails
    /// unless all agree, as instances behind one ECMP router must.
    Digest,
    /// Print lbctl's shell completions (the package installs them):
    /// `lbctl completions bash > /etc/bash_completion.d/lbctl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Subcommand)]
enum VipCommand {
    /// Create a VIP, with no backends yet.
    Add {
        /// ADDRESS:PORT/PROTOCOL, e.g. 198.51.100.10:443/tcp.
        vip: String,
        /// Maglev table size (prime; default 65537).
        #[arg(long)]
        table_size: Option<u32>,
        /// Idle timeout (seconds) of its established TCP flows (default: lbd's).
        #[arg(long)]
        tcp_idle_timeout: Option<u32>,
        /// Idle timeout (seconds) of its UDP flows (default: lbd's).
        #[arg(long)]
        udp_idle_timeout: Option<u32>,
        /// The outer source address of its backends' tunnels, one per
        /// family (repeat it, or separate with commas); default: lbd's
        /// tunnel_sources, else its local address of the family.
        #[arg(long = "tunnel-source", value_name = "ADDRESS", value_delimiter = ',')]
        tunnel_sources: Vec<String>,
        #[command(flatten)]
        quic: QuicArgs,
    },
    /// Change a VIP's QUIC mode or drain policy (what is not given stays).
    Set {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        #[command(flatten)]
        quic: QuicArgs,
        /// Turn QUIC mode off (the backends' server ids stay, unused).
        #[arg(long, conflicts_with = "quic_server_id_len")]
        no_quic: bool,
    },
    /// Delete a VIP and its backends; its flows are no longer forwarded.
    Del {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
    },
    /// Every VIP: table size and number of backends, and under each VIP its
    /// backends (weight, state, health, MAC); JSON: each VIP with its
    /// backends nested, as `backend list` shows them.
    List,
    /// One VIP, as `list` shows it (`backend list` for its backends).
    Show {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
    },
}

/// A VIP's QUIC mode and drain policy.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "QUIC and drain")]
struct QuicArgs {
    /// QUIC mode (UDP VIPs): route datagrams by the server id in their
    /// destination connection ID, this many bytes (1-15) after its first;
    /// every backend then needs --server-id. See docs/QUIC.md.
    #[arg(long, value_name = "N")]
    quic_server_id_len: Option<u32>,
    /// What a draining backend's flows do: keep (the default: they stay
    /// until they end) or move (at once, as a down backend's: for UDP
    /// clients that never stop sending).
    #[arg(long, value_parser = ["keep", "move"])]
    drain_flows: Option<String>,
}

impl QuicArgs {
    fn drain_pb(&self) -> Option<pb::DrainFlows> {
        self.drain_flows.as_deref().map(|d| match d {
            "move" => pb::DrainFlows::Move,
            _ => pb::DrainFlows::Keep,
        })
    }
}

// The health check options of `backend add`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Health check")]
struct CheckArgs {
    /// tcp, http:/path, udp or none.
    #[arg(long, default_value = "none")]
    check: String,
    /// A udp check's datagram (text; default "lbd-health\n"); any datagram
    /// back within the timeout passes.
    #[arg(long)]
    payload: Option<String>,
    /// Milliseconds between checks (default 2000).
    #[arg(long)]
    interval: Option<u32>,
    /// Milliseconds a check may take (default: half the interval, at most 1000).
    #[arg(long)]
    timeout: Option<u32>,
    /// Successes that bring a down backend up (default 2).
    #[arg(long)]
    rise: Option<u32>,
    /// Failures that take an up backend down (default 3).
    #[arg(long)]
    fall: Option<u32>,
    /// Port to check (default: the VIP's).
    #[arg(long)]
    check_port: Option<u32>,
    /// HTTP status that means healthy (default 200).
    #[arg(long)]
    http_status: Option<u32>,
    /// The path the check takes: auto (the default: vip when lbd has an
    /// exception interface, --kernel-iface, else real), real (to the
    /// backend's address) or vip (to VIP:port along the DR path, answered
    /// by this backend from the VIP: catches a backend without the VIP on
    /// lo). A check via the VIP checks the real address too.
    #[arg(long, value_parser = ["auto", "real", "vip"])]
    via: Option<String>,
}

impl CheckArgs {
    fn to_pb(&self) -> Option<pb::HealthCheck> {
        (self.check != "none").then(|| pb::HealthCheck {
            kind: self.check.clone(),
            port: self.check_port.unwrap_or(0),
            interval_ms: self.interval.unwrap_or(0),
            timeout_ms: self.timeout.unwrap_or(0),
            rise: self.rise.unwrap_or(0),
            fall: self.fall.unwrap_or(0),
            http_status: self.http_status.unwrap_or(0),
            via: self.via.clone().unwrap_or_default(),
            payload: self.payload.clone().unwrap_or_default(),
        })
    }
}

/// How a backend's packets reach it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Forwarding")]
struct ForwardArgs {
    /// dr (the default: the backend on lbd's segment, its MAC), ipip, gue
    /// or vxlan (a tunnel to the backend's address, through the gateway of
    /// lbd's route to it, or on the segment). vxlan needs --vni and --mac
    /// (its VXLAN device's MAC); ipip and gue take no --mac.
    #[arg(long, value_parser = ["dr", "ipip", "gue", "vxlan"])]
    forward: Option<String>,
    /// gue and vxlan: the tunnel's UDP port (default 6080 for gue, 4789 for vxlan).
    #[arg(long)]
    tunnel_port: Option<u32>,
    /// vxlan: the VNI, 0-16777215.
    #[arg(long)]
    vni: Option<u32>,
}

impl ForwardArgs {
    fn method(&self) -> Option<pb::ForwardMethod> {
        self.forward.as_deref().map(forward_method)
    }
}

/// `dr`, `ipip`, `gue`, `vxlan` (clap has checked it).
fn forward_method(s: &str) -> pb::ForwardMethod {
    match s {
        "ipip" => pb::ForwardMethod::Ipip,
        "gue" => pb::ForwardMethod::Gue,
        "vxlan" => pb::ForwardMethod::Vxlan,
        _ => pb::ForwardMethod::Dr,
    }
}

/// Load feedback and caps of a backend.
#[derive(Debug, Clone, clap::Args)]
struct LoadArgs {
    /// A load-feedback agent on the backend: tcp (HAProxy's agent-check:
    /// one line, "75%", "drain", "maint", "ready") or http:/path (JSON,
    /// {"weight_percent": 75}); its percentage scales the weight.
    #[arg(long)]
    agent: Option<String>,
    /// The agent's port (default 10999).
    #[arg(long)]
    agent_port: Option<u32>,
    /// Milliseconds between polls of the agent (default 2000).
    #[arg(long)]
    agent_interval: Option<u32>,
    /// Milliseconds a poll may take (default: half the interval, at most 1000).
    #[arg(long)]
    agent_timeout: Option<u32>,
    /// Active flows at which the backend takes no new ones (a cap).
    #[arg(long)]
    max_flows: Option<u32>,
    /// The cap's low mark: below it the backend takes new flows again
    /// (default 90% of --max-flows).
    #[arg(long)]
    min_flows: Option<u32>,
}

impl LoadArgs {
    fn agent_pb(&self) -> Option<pb::AgentCheck> {
        self.agent.as_ref().map(|kind| pb::AgentCheck {
            kind: kind.clone(),
            port: self.agent_port.unwrap_or(0),
            interval_ms: self.agent_interval.unwrap_or(0),
            timeout_ms: self.agent_timeout.unwrap_or(0),
        })
    }
}

#[derive(Debug, Clone, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "one command, parsed once per run: its size does not matter"
)]
enum BackendCommand {
    /// Add a backend to a VIP: it takes new flows once its MAC is known
    /// (with a check, it counts as healthy until `fall` checks fail).
    Add {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address (it owns the VIP on a loopback: DR).
        address: String,
        /// Share of new flows relative to the VIP's other backends (default 1; 0 takes none).
        #[arg(long)]
        weight: Option<u32>,
        /// Static MAC; without it lbd resolves the MAC by ARP / ND. With
        /// --forward vxlan: the MAC of the backend's VXLAN device (required).
        #[arg(long)]
        mac: Option<String>,
        /// Add it draining (no new flows).
        #[arg(long)]
        drain: bool,
        /// Its QUIC server id in hex (e.g. 0a01), as many bytes as the
        /// VIP's --quic-server-id-len; required on a VIP in QUIC mode.
        #[arg(long, value_name = "HEX")]
        server_id: Option<String>,
        #[command(flatten)]
        forward: ForwardArgs,
        #[command(flatten)]
        check: CheckArgs,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Set or clear a backend's load-feedback agent and cap (what is not
    /// given stays).
    SetLoad {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address.
        address: String,
        #[command(flatten)]
        load: LoadArgs,
        /// Stop polling the agent: the configured weight alone.
        #[arg(long, conflicts_with = "agent")]
        no_agent: bool,
        /// Remove the cap.
        #[arg(long, conflicts_with_all = ["max_flows", "min_flows"])]
        no_cap: bool,
    },
    /// Change how a backend's packets reach it (its flows stay with it).
    /// Another method than its own drops what belonged to the old one
    /// (tunnel port, VNI, MAC) unless given again.
    SetForward {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address.
        address: String,
        #[command(flatten)]
        forward: ForwardArgs,
        /// The MAC: a DR backend's static one, a VXLAN backend's VXLAN
        /// device's; "" clears it.
        #[arg(long)]
        mac: Option<String>,
    },
    /// Set a backend's QUIC server id (its flows stay with it).
    SetServerId {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address.
        address: String,
        /// The id in hex (e.g. 0a01), or "none" to clear it (refused while
        /// the VIP is in QUIC mode).
        server_id: String,
    },
    /// Remove a backend; its flows move to the others.
    Del {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address.
        address: String,
    },
    /// Take no new flows; keep the existing ones.
    Drain {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address.
        address: String,
    },
    /// Take new flows again after a drain.
    Undrain {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address.
        address: String,
    },
    /// Change a backend's share of new flows; its flows stay where they are.
    SetWeight {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
        /// The backend's IP address.
        address: String,
        /// The new weight (0 takes no new flows).
        weight: u32,
    },
    /// A VIP's backends: state, weight, MAC, counters.
    List {
        /// ADDRESS:PORT/PROTOCOL.
        vip: String,
    },
}

fn main() {
    // Packaging: `lbctl --generate-man` prints the man page (roff), from
    // the same definitions as --help.
    if std::env::args().skip(1).eq(["--generate-man"]) {
        let mut page = Vec::new();
        match clap_mangen::Man::new(Cli::command()).render(&mut page) {
            Ok(()) => print!("{}", String::from_utf8_lossy(&page)),
            Err(e) => {
                eprintln!("lbctl: error: rendering the man page: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let cli = Cli::parse();
    if let Command::Completions { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "lbctl", &mut script);
        // A closed pipe (`| head`) is no error worth a panic.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
        return;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lbctl: error: {e}");
            std::process::exit(1);
        }
    };
    let json = cli.output == Output::Json;
    if let Err(e) = rt.block_on(run(cli)) {
        let (status, error) = error_json(&e);
        if json {
            eprintln!("{}", json!({ "error": error }));
        } else {
            eprintln!("lbctl: error: {e:#}");
        }
        std::process::exit(status);
    }
}

/// The exit status an error means and its JSON form:
/// `{"kind": "NotFound", "message": "...", "exit_status": 3}`.
fn error_json(e: &anyhow::Error) -> (i32, Value) {
    let failure = e.chain().find_map(|c| c.downcast_ref::<Failure>());
    let (status, kind) = match failure {
        Some(Failure::Refused(s)) => (EXIT_REFUSED, format!("{:?}", s.code())),
        Some(Failure::Unreachable(_)) => (EXIT_UNREACHABLE, "Unreachable".to_string()),
        None => (EXIT_FAILED, "Failed".to_string()),
    };
    (
        status,
        json!({"kind": kind, "message": format!("{e:#}"), "exit_status": status}),
    )
}

thread_local! {
    /// While a multi-instance JSON run runs a command on one instance, the
    /// JSON documents it prints, to be wrapped with the instance's name
    /// (lbctl runs on one thread).
    static CAPTURED: RefCell<Option<Vec<Value>>> = const { RefCell::new(None) };
}

/// Print one JSON document on a line, or keep it for the multi-instance
/// document when one is being gathered.
fn print_json(v: Value) {
    let shown = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(kept) => {
            kept.push(v);
            None
        }
        None => Some(v),
    });
    if let Some(v) = shown {
        println!("{v}");
    }
}

/// Exit statuses, for scripts: 0 done; 1 failed (a problem `diagnose` or
/// `digest` found, a bad argument lbctl itself caught); 2 a usage error
/// (clap's); 3 refused by lbd (the gRPC status in the message); 4 lbd not
/// reached or not answering within --timeout.
const EXIT_FAILED: i32 = 1;
const EXIT_REFUSED: i32 = 3;
const EXIT_UNREACHABLE: i32 = 4;

/// A failure that decides lbctl's exit status.
#[derive(Debug)]
enum Failure {
    /// lbd answered with an error status.
    Refused(tonic::Status),
    /// lbd could not be reached, or did not answer in time.
    Unreachable(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused(s) => write!(f, "{} ({:?})", s.message(), s.code()),
            Failure::Unreachable(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Failure {}

/// One lbd instance: a Unix socket, or a TLS URL.
fn targets(cli: &Cli) -> Vec<String> {
    if cli.server.is_empty() {
        cli.socket.iter().map(|p| p.display().to_string()).collect()
    } else {
        cli.server.clone()
    }
}

async fn client(cli: &Cli, target: &str) -> Result<LoadBalancerClient<Channel>> {
    let connecting = async {
        match (&cli.tls_ca, &cli.tls_cert, &cli.tls_key) {
            (Some(ca), Some(cert), Some(key)) if !cli.server.is_empty() => {
                connect_tls(target, ca, cert, key).await
            }
            _ => connect(PathBuf::from(target)).await,
        }
    };
    match tokio::time::timeout(Duration::from_secs(cli.deadline), connecting).await {
        Ok(c) => c,
        Err(_) => Err(Failure::Unreachable(format!(
            "connecting to lbd at {target}: no answer within {} s (--deadline)",
            cli.deadline
        ))
        .into()),
    }
}

async fn run(cli: Cli) -> Result<()> {
    let all = targets(&cli);
    if let Command::Digest = cli.command {
        return digest(&cli, &all).await;
    }
    if all.len() == 1 {
        return run_one(&cli, &all[0]).await;
    }
    if matches!(
        cli.command,
        Command::Events { .. } | Command::Stats { watch: true, .. }
    ) {
        bail!("this command follows one instance; give one --socket or --server");
    }
    let mut failed = Vec::new();
    let mut instances = Vec::new();
    for target in &all {
        if cli.output == Output::Table {
            println!("== {target}");
            if let Err(e) = run_one(&cli, target).await {
                eprintln!("lbctl: error: {target}: {e:#}");
                failed.push(target.as_str());
            }
            continue;
        }
        // JSON: {"instance": ..., "result": <what one instance prints>}
        // and/or "error" (diagnose prints its report and fails).
        CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
        let r = run_one(&cli, target).await;
        let mut printed = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
        let mut doc = serde_json::Map::new();
        doc.insert("instance".into(), json!(target));
        match printed.len() {
            0 => {}
            1 => {
                doc.insert("result".into(), printed.remove(0));
            }
            _ => {
                doc.insert("result".into(), Value::Array(printed));
            }
        }
        if let Err(e) = r {
            doc.insert("error".into(), error_json(&e).1);
            failed.push(target.as_str());
        }
        instances.push(Value::Object(doc));
    }
    if cli.output == Output::Json {
        println!("{}", json!({ "instances": instances }));
    }
    if !failed.is_empty() {
        bail!(
            "failed on {} of {} instances: {}",
            failed.len(),
            all.len(),
            failed.join(" ")
        );
    }
    Ok(())
}

/// Compare the instances' config digests.
async fn digest(cli: &Cli, all: &[String]) -> Result<()> {
    let mut rows = Vec::new();
    for target in all {
        let info = async {
            let mut c = client(cli, target).await?;
            Ok::<_, anyhow::Error>(c.get_info(pb::Empty {}).await.map_err(server)?.into_inner())
        }
        .await
        .with_context(|| target.clone())?;
        rows.push((target, info));
    }
    let agree = rows
        .windows(2)
        .all(|w| w[0].1.config_digest == w[1].1.config_digest);
    match cli.output {
        Output::Json => print_json(json!({
            "agree": agree,
            "instances": rows.iter().map(|(t, i)| json!({
                "instance": t, "config_digest": i.config_digest, "announced": i.announced,
            })).collect::<Vec<_>>(),
        })),
        Output::Table => {
            for (t, i) in &rows {
                println!(
                    "{}  {}  announced: {}",
                    i.config_digest,
                    t,
                    announced_text(i)
                );
            }
        }
    }
    if !agree {
        bail!("the instances' configurations differ");
    }
    Ok(())
}

fn announced_text(i: &pb::Info) -> String {
    match (i.announcing, i.announced.is_empty()) {
        (false, _) => "(not announcing)".to_string(),
        (true, true) => "nothing".to_string(),
        (true, false) => i.announced.join(" "),
    }
}

/// One command on one instance, within --timeout (streaming commands: their
/// connecting only, in [`client`]).
async fn run_one(cli: &Cli, target: &str) -> Result<()> {
    let streaming = matches!(
        cli.command,
        Command::Events { .. } | Command::Stats { watch: true, .. }
    );
    if streaming {
        return run_one_untimed(cli, target).await;
    }
    let limit = Duration::from_secs(cli.deadline);
    match tokio::time::timeout(limit, run_one_untimed(cli, target)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::Unreachable(format!(
            "{target}: no answer within {} s (--deadline)",
            cli.deadline
        ))
        .into()),
    }
}

async fn run_one_untimed(cli: &Cli, target: &str) -> Result<()> {
    let mut c = client(cli, target).await?;
    let out = cli.output;
    match cli.command.clone() {
        Command::Vip(VipCommand::Add {
            vip,
            table_size,
            tcp_idle_timeout,
            udp_idle_timeout,
            tunnel_sources,
            quic,
        }) => {
            let v = c
                .create_vip(pb::CreateVipRequest {
                    vip: Some(parse_vip(&vip)?),
                    table_size: table_size.unwrap_or(0),
                    tcp_idle_timeout_s: tcp_idle_timeout.unwrap_or(0),
                    udp_idle_timeout_s: udp_idle_timeout.unwrap_or(0),
                    tunnel_sources,
                    quic_server_id_len: quic.quic_server_id_len.unwrap_or(0),
                    drain_flows: quic.drain_pb().unwrap_or(pb::DrainFlows::Keep) as i32,
                })
                .await
                .map_err(server)?
                .into_inner();
            print_vips(out, &[v]);
        }
        Command::Vip(VipCommand::Set { vip, quic, no_quic }) => {
            let v = c
                .update_vip(pb::UpdateVipRequest {
                    vip: Some(parse_vip(&vip)?),
                    quic_server_id_len: if no_quic {
                        Some(0)
                    } else {
                        quic.quic_server_id_len
                    },
                    drain_flows: quic.drain_pb().map(|d| d as i32),
                })
                .await
                .map_err(server)?
                .into_inner();
            print_vips(out, &[v]);
        }
        Command::Vip(VipCommand::Del { vip }) => {
            c.delete_vip(parse_vip(&vip)?).await.map_err(server)?;
            done(out, &format!("vip {vip} deleted"));
        }
        Command::Vip(VipCommand::List) => {
            let r = c
                .list_vips(pb::Empty {})
                .await
                .map_err(server)?
                .into_inner();
            print_vips(out, &r.vips);
        }
        Command::Vip(VipCommand::Show { vip }) => {
            let v = c
                .get_vip(parse_vip(&vip)?)
                .await
                .map_err(server)?
                .into_inner();
            print_vips(out, &[v]);
        }
        Command::Backend(BackendCommand::Add {
            vip,
            address,
            weight,
            mac,
            drain,
            server_id,
            forward,
            check,
            load,
        }) => {
            let b = c
                .add_backend(pb::AddBackendRequest {
                    vip: Some(parse_vip(&vip)?),
                    address,
                    weight,
                    mac: mac.unwrap_or_default(),
                    drain,
                    check: check.to_pb(),
                    agent: load.agent_pb(),
                    max_flows: load.max_flows.unwrap_or(0),
                    min_flows: load.min_flows.unwrap_or(0),
                    forward: forward.method().unwrap_or(pb::ForwardMethod::Dr) as i32,
                    tunnel_port: forward.tunnel_port.unwrap_or(0),
                    vni: forward.vni.unwrap_or(0),
                    server_id: server_id.unwrap_or_default(),
                })
                .await
                .map_err(server)?
                .into_inner();
            print_backends(out, &[b]);
        }
        Command::Backend(BackendCommand::SetServerId {
            vip,
            address,
            server_id,
        }) => {
            let id = if server_id == "none" {
                String::new()
            } else {
                server_id
            };
            let b = update(&mut c, &vip, address, |r| r.server_id = Some(id)).await?;
            print_backends(out, &[b]);
        }
        Command::Backend(BackendCommand::Del { vip, address }) => {
            c.remove_backend(pb::BackendKey {
                vip: Some(parse_vip(&vip)?),
                address: address.clone(),
            })
            .await
            .map_err(server)?;
            done(out, &format!("backend {address} removed from {vip}"));
        }
        Command::Backend(BackendCommand::SetForward {
            vip,
            address,
            forward,
            mac,
        }) => {
            let b = update(&mut c, &vip, address, |r| {
                r.forward = forward.method().map(|m| m as i32);
                r.tunnel_port = forward.tunnel_port;
                r.vni = forward.vni;
                r.mac = mac;
            })
            .await?;
            print_backends(out, &[b]);
        }
        Command::Backend(BackendCommand::Drain { vip, address }) => {
            let b = update(&mut c, &vip, address, |r| r.drain = Some(true)).await?;
            print_backends(out, &[b]);
        }
        Command::Backend(BackendCommand::Undrain { vip, address }) => {
            let b = update(&mut c, &vip, address, |r| r.drain = Some(false)).await?;
            print_backends(out, &[b]);
        }
        Command::Backend(BackendCommand::SetLoad {
            vip,
            address,
            load,
            no_agent,
            no_cap,
        }) => {
            let b = update(&mut c, &vip, address, |r| {
                r.agent = load.agent_pb();
                r.clear_agent = no_agent;
                r.max_flows = if no_cap { Some(0) } else { load.max_flows };
                r.min_flows = load.min_flows;
            })
            .await?;
            print_backends(out, &[b]);
        }
        Command::Backend(BackendCommand::SetWeight {
            vip,
            address,
            weight,
        }) => {
            let b = update(&mut c, &vip, address, |r| r.weight = Some(weight)).await?;
            print_backends(out, &[b]);
        }
        Command::Backend(BackendCommand::List { vip }) => {
            let v = c
                .get_vip(parse_vip(&vip)?)
                .await
                .map_err(server)?
                .into_inner();
            print_backends(out, &v.backends);
        }
        Command::Apply {
            file,
            dry_run,
            expect_revision,
        } => {
            let toml = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading standard input")?
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?
            };
            let r = c
                .apply(pb::ApplyRequest {
                    toml,
                    dry_run,
                    expected_revision: expect_revision,
                    config: None,
                })
                .await
                .map_err(server)?
                .into_inner();
            match out {
                Output::Json => print_json(
                    json!({"changes": r.changes, "dry_run": dry_run, "snapshot_generation": r.snapshot_generation,
                           "revision": r.revision}),
                ),
                Output::Table if r.changes.is_empty() => {
                    println!("no change: lbd already matches {}", file.display())
                }
                Output::Table => {
                    let verb = if dry_run { "would change" } else { "changed" };
                    println!("{verb} ({}):", r.changes.len());
                    for ch in &r.changes {
                        println!("  {ch}");
                    }
                }
            }
        }
        Command::Export => {
            let r = c.export(pb::Empty {}).await.map_err(server)?.into_inner();
            match out {
                Output::Json => print_json(json!({"toml": r.toml, "revision": r.revision})),
                Output::Table => print!("{}", r.toml),
            }
        }
        Command::Diagnose { vip, interval } => {
            let only = vip
                .as_deref()
                .map(parse_vip)
                .transpose()?
                .map(|k| vip_text(&Some(k)));
            let before = c
                .get_stats(pb::Empty {})
                .await
                .map_err(server)?
                .into_inner();
            tokio::time::sleep(std::time::Duration::from_secs(interval)).await;
            let after = c
                .get_stats(pb::Empty {})
                .await
                .map_err(server)?
                .into_inner();
            let vips = c
                .list_vips(pb::Empty {})
                .await
                .map_err(server)?
                .into_inner()
                .vips;
            if let Some(o) = &only {
                if !vips.iter().any(|v| vip_text(&v.key) == *o) {
                    bail!("no VIP {o}");
                }
            }
            let health = c
                .list_health(pb::Empty {})
                .await
                .map_err(server)?
                .into_inner();
            let report =
                diagnose::diagnose(&vips, &health, &before, &after, only.as_deref(), vip_text);
            match out {
                Output::Json => print_json(diagnose::to_json(&report)),
                Output::Table => diagnose::print_table(&report, now_ms()),
            }
            let n = report.problems();
            if n > 0 {
                bail!("{n} problem{} found", if n == 1 { "" } else { "s" });
            }
        }
        Command::Health => {
            let h = c
                .list_health(pb::Empty {})
                .await
                .map_err(server)?
                .into_inner();
            // Backends with an agent or a cap: their load, beside their health.
            let vips = c
                .list_vips(pb::Empty {})
                .await
                .map_err(server)?
                .into_inner()
                .vips;
            let loaded: Vec<(String, &pb::Backend)> = vips
                .iter()
                .flat_map(|v| {
                    v.backends
                        .iter()
                        .filter(|b| b.agent.is_some() || b.max_flows != 0)
                        .map(move |b| (vip_text(&v.key), b))
                })
                .collect();
            // Backends whose MAC (or next hop's) is unknown take no traffic.
            let unresolved: Vec<(String, &pb::Backend)> = vips
                .iter()
                .flat_map(|v| {
                    v.backends
                        .iter()
                        .filter(|b| b.effective_mac.is_empty())
                        .map(move |b| (vip_text(&v.key), b))
                })
                .collect();
            match out {
                Output::Json => {
                    // Backends first, as before; then one {"vip_conflict": ...}
                    // entry per (VIP, MAC) another host claimed (no "address"
                    // key, so readers looking a backend up skip them).
                    let v: Vec<Value> = h
                        .backends
                        .iter()
                        .map(|b| json!({"vip": vip_text(&b.vip), "address": b.address, "health": health_text(b.health),
                                        "detail": b.detail, "consecutive_successes": b.consecutive_successes,
                                        "consecutive_failures": b.consecutive_failures, "via": b.via,
                                        "real": b.real.as_ref().map(|p| json!({"ok": p.ok, "detail": p.detail})),
                                        "vip_path": b.vip_path.as_ref().map(|p| json!({"ok": p.ok, "detail": p.detail}))}))
                        .chain(h.conflicts.iter().map(|c| json!({"vip_conflict": {"vip": c.vip, "mac": c.mac,
                                        "count": c.count, "backend": c.backend, "last_seen_ms": c.last_seen_ms}})))
                        // One {"load": ...} entry per backend with an agent or a cap.
                        .chain(loaded.iter().map(|(vip, b)| {
                            let mut load = backend_json(b);
                            load["vip"] = vip.clone().into();
                            json!({ "load": load })
                        }))
                        // One {"unresolved": ...} entry per backend taking no
                        // traffic for want of a MAC.
                        .chain(unresolved.iter().map(|(vip, b)| {
                            json!({"unresolved": {"vip": vip, "address": b.address,
                                   "next_hop": b.next_hop, "why": unresolved_text(b)}})
                        }))
                        .collect();
                    print_json(Value::Array(v));
                }
                Output::Table => {
                    println!(
                        "{:<28} {:<22} {:<10} {:<4} {:<7} {:<8} DETAIL",
                        "VIP", "BACKEND", "HEALTH", "VIA", "REAL", "VIP PATH"
                    );
                    let path = |p: &Option<pb::PathResult>| match p {
                        None => "-",
                        Some(p) if p.ok => "ok",
                        Some(_) => "failed",
                    };
                    for b in &h.backends {
                        // Both details when the paths disagree: "server up, VIP path broken".
                        let detail = match (&b.real, &b.vip_path) {
                            (Some(r), Some(v)) if r.ok != v.ok => {
                                format!("{}; {}", v.detail, r.detail)
                            }
                            _ => b.detail.clone(),
                        };
                        println!(
                            "{:<28} {:<22} {:<10} {:<4} {:<7} {:<8} {}",
                            vip_text(&b.vip),
                            b.address,
                            health_text(b.health),
                            b.via,
                            path(&b.real),
                            path(&b.vip_path),
                            detail
                        );
                    }
                    if !loaded.is_empty() {
                        println!();
                        println!("LOAD (agents and caps)");
                        println!(
                            "{:<28} {:<22} {:>6} {:>5} {:<14} DETAIL",
                            "VIP", "BACKEND", "WEIGHT", "EFF", "FLOWS"
                        );
                        for (vip, b) in &loaded {
                            let detail = b.agent_status.as_ref().map_or_else(
                                || "no agent".to_string(),
                                |s| format!("agent {}: {}", agent_text(b), s.detail),
                            );
                            println!(
                                "{:<28} {:<22} {:>6} {:>5} {:<14} {detail}",
                                vip,
                                b.address,
                                b.weight,
                                b.effective_weight,
                                flows_text(b)
                            );
                        }
                    }
                    if !unresolved.is_empty() {
                        println!();
                        println!("UNRESOLVED (no traffic until ARP/ND answers)");
                        for (vip, b) in &unresolved {
                            println!("{vip:<28} {:<22} {}", b.address, unresolved_text(b));
                        }
                    }
                    if !h.conflicts.is_empty() {
                        println!();
                        println!("VIP CONFLICTS (ARP/ND for a VIP from another MAC)");
                        println!(
                            "{:<28} {:<18} {:>8} {:<22} LAST SEEN (ms)",
                            "VIP", "MAC", "COUNT", "BACKEND"
                        );
                        for c in &h.conflicts {
                            println!(
                                "{:<28} {:<18} {:>8} {:<22} {}",
                                c.vip,
                                c.mac,
                                c.count,
                                if c.backend.is_empty() {
                                    "-"
                                } else {
                                    &c.backend
                                },
                                c.last_seen_ms
                            );
                        }
                    }
                }
            }
        }
        Command::Stats { watch, interval } => {
            // With --watch: the previous sample and when it arrived, for
            // the rates (over the time measured, not the nominal interval).
            let mut previous: Option<(pb::Stats, std::time::Instant)> = None;
            loop {
                let s = c
                    .get_stats(pb::Empty {})
                    .await
                    .map_err(server)?
                    .into_inner();
                let at = std::time::Instant::now();
                let r = previous
                    .as_ref()
                    .map(|(before, then)| rates::rates(before, &s, at.duration_since(*then)));
                print_stats(out, &s, r.as_ref());
                if !watch {
                    break;
                }
                previous = Some((s, at));
                tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))).await;
                if out == Output::Table {
                    println!();
                }
            }
        }
        Command::Events { count } => {
            let mut stream = c.watch(pb::Empty {}).await.map_err(server)?.into_inner();
            let mut seen = 0;
            while count.is_none_or(|n| seen < n) {
                let Some(ev) = stream.message().await.map_err(server)? else {
                    bail!("lbd closed the event stream");
                };
                print_event(out, &ev);
                seen += 1;
            }
        }
        Command::Digest => digest(cli, &[target.to_string()]).await?,
        // Answered in main, without a connection.
        Command::Completions { .. } => {}
        Command::Info => {
            let i = c.get_info(pb::Empty {}).await.map_err(server)?.into_inner();
            match out {
                Output::Json => print_json(
                    json!({"port": i.port, "mac": i.mac, "worker_lcores": i.worker_lcores, "eal_args": i.eal_args,
                           "snapshot_generation": i.snapshot_generation, "state_file": i.state_file,
                           "config_digest": i.config_digest, "announcing": i.announcing,
                           "announced": i.announced, "shutting_down": i.shutting_down,
                           "config_revision": i.config_revision, "local_addresses": i.local_addresses,
                           "tunnel_sources": i.tunnel_sources, "mtu": i.mtu,
                           "routes": i.routes.iter().map(|r| json!({"prefix": r.prefix, "gateway": r.gateway,
                               "mac": r.mac, "effective_mac": r.effective_mac})).collect::<Vec<_>>()}),
                ),
                Output::Table => {
                    println!("port        {}", i.port);
                    println!("mac         {}", i.mac);
                    println!("workers     {:?}", i.worker_lcores);
                    println!("generation  {}", i.snapshot_generation);
                    println!(
                        "state file  {}",
                        if i.state_file.is_empty() {
                            "(none)"
                        } else {
                            &i.state_file
                        }
                    );
                    println!("eal         {}", i.eal_args.join(" "));
                    println!("digest      {}", i.config_digest);
                    println!("revision    {}", i.config_revision);
                    if !i.local_addresses.is_empty() {
                        println!("local       {}", i.local_addresses.join(" "));
                    }
                    println!("mtu         {}", i.mtu);
                    if !i.tunnel_sources.is_empty() {
                        println!("tunnel src  {}", i.tunnel_sources.join(" "));
                    }
                    for r in &i.routes {
                        let mac = match (r.mac.is_empty(), r.effective_mac.is_empty()) {
                            (false, _) => format!("{} (static)", r.mac),
                            (true, false) => r.effective_mac.clone(),
                            (true, true) => "(resolving)".to_string(),
                        };
                        println!("route       {} via {} {mac}", r.prefix, r.gateway);
                    }
                    println!("announced   {}", announced_text(&i));
                    if i.shutting_down {
                        println!("state       shutting down (routes withdrawn)");
                    }
                }
            }
        }
    }
    Ok(())
}

async fn update(
    c: &mut LoadBalancerClient<Channel>,
    vip: &str,
    address: String,
    set: impl FnOnce(&mut pb::UpdateBackendRequest),
) -> Result<pb::Backend> {
    let mut r = pb::UpdateBackendRequest {
        backend: Some(pb::BackendKey {
            vip: Some(parse_vip(vip)?),
            address,
        }),
        ..Default::default()
    };
    set(&mut r);
    Ok(c.update_backend(r).await.map_err(server)?.into_inner())
}

async fn connect(path: PathBuf) -> Result<LoadBalancerClient<Channel>> {
    let shown = path.display().to_string();
    let channel = lb_proto::connect_unix(path).await.map_err(|e| {
        Failure::Unreachable(format!(
            "connecting to lbd at {shown} (is lbd running? --socket or LBCTL_SOCKET): {e}"
        ))
    })?;
    Ok(LoadBalancerClient::new(channel))
}

async fn connect_tls(
    url: &str,
    ca: &PathBuf,
    cert: &PathBuf,
    key: &PathBuf,
) -> Result<LoadBalancerClient<Channel>> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?));
    let channel = Endpoint::from_shared(url.to_string())
        .with_context(|| format!("--server {url:?}: not a URL like https://192.0.2.1:7443"))?
        .tls_config(tls)
        .context("TLS settings")?
        .connect()
        .await
        .map_err(|e| Failure::Unreachable(format!("connecting to lbd at {url}: {e}")))?;
    Ok(LoadBalancerClient::new(channel))
}

fn server(s: tonic::Status) -> anyhow::Error {
    // lbd's own UNAVAILABLE (its state file could not be written) carries
    // details; a transport that failed has none.
    match s.code() {
        tonic::Code::Unavailable if s.details().is_empty() => anyhow::Error::new(
            Failure::Unreachable(format!("lbd is unavailable: {}", s.message())),
        ),
        _ => anyhow::Error::new(Failure::Refused(s)),
    }
}

/// `198.51.100.10:443/tcp` or `[2001:db8::10]:443/udp`.
fn parse_vip(s: &str) -> Result<pb::VipKey> {
    let (hostport, proto) = s.rsplit_once('/').ok_or_else(|| {
        anyhow!("vip {s:?}: expected ADDRESS:PORT/PROTOCOL, e.g. 198.51.100.10:443/tcp")
    })?;
    let protocol = match proto.to_ascii_lowercase().as_str() {
        "tcp" => pb::Protocol::Tcp,
        "udp" => pb::Protocol::Udp,
        _ => bail!("vip {s:?}: protocol {proto:?} must be tcp or udp"),
    };
    let (addr, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("vip {s:?}: expected ADDRESS:PORT before /{proto}"))?;
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("vip {s:?}: port {port:?} is not a number from 1 to 65535"))?;
    Ok(pb::VipKey {
        address: addr.to_string(),
        port: u32::from(port),
        protocol: protocol as i32,
    })
}

fn vip_text(k: &Option<pb::VipKey>) -> String {
    let Some(k) = k else { return String::new() };
    let proto = if k.protocol == pb::Protocol::Udp as i32 {
        "udp"
    } else {
        "tcp"
    };
    if k.address.contains(':') {
        format!("[{}]:{}/{proto}", k.address, k.port)
    } else {
        format!("{}:{}/{proto}", k.address, k.port)
    }
}

fn state_text(s: i32) -> &'static str {
    match pb::BackendState::try_from(s) {
        Ok(pb::BackendState::Up) => "up",
        Ok(pb::BackendState::Draining) => "draining",
        Ok(pb::BackendState::Down) => "down",
        _ => "unknown",
    }
}

fn health_text(h: i32) -> &'static str {
    match pb::Health::try_from(h) {
        Ok(pb::Health::Healthy) => "healthy",
        Ok(pb::Health::Unhealthy) => "unhealthy",
        _ => "unchecked",
    }
}

/// Why a backend without a MAC in use takes no traffic.
fn unresolved_text(b: &pb::Backend) -> String {
    if !b.next_hop.is_empty() && b.next_hop != b.address {
        format!("next hop {} unresolved", b.next_hop)
    } else {
        format!("{} unresolved", b.address)
    }
}

/// How a backend's packets reach it: dr, ipip, gue:6080, vxlan:100 (the
/// VNI; vxlan:100@4790 off the default port).
fn forward_text(b: &pb::Backend) -> String {
    match pb::ForwardMethod::try_from(b.forward) {
        Ok(pb::ForwardMethod::Dr) => "dr".into(),
        Ok(pb::ForwardMethod::Ipip) => "ipip".into(),
        Ok(pb::ForwardMethod::Gue) => format!("gue:{}", b.tunnel_port),
        Ok(pb::ForwardMethod::Vxlan) if b.tunnel_port == 4789 || b.tunnel_port == 0 => {
            format!("vxlan:{}", b.vni)
        }
        Ok(pb::ForwardMethod::Vxlan) => format!("vxlan:{}@{}", b.vni, b.tunnel_port),
        Err(_) => format!("unknown({})", b.forward),
    }
}

/// The method's name alone, for JSON: "dr", "ipip", "gue", "vxlan".
fn forward_name(b: &pb::Backend) -> &'static str {
    match pb::ForwardMethod::try_from(b.forward) {
        Ok(pb::ForwardMethod::Ipip) => "ipip",
        Ok(pb::ForwardMethod::Gue) => "gue",
        Ok(pb::ForwardMethod::Vxlan) => "vxlan",
        Ok(pb::ForwardMethod::Dr) => "dr",
        Err(_) => "unknown",
    }
}

fn backend_json(b: &pb::Backend) -> Value {
    json!({"address": b.address, "weight": b.weight, "mac": b.mac, "effective_mac": b.effective_mac,
           "forward": forward_name(b), "tunnel_port": b.tunnel_port, "vni": b.vni, "next_hop": b.next_hop,
           "server_id": b.server_id,
           "state": state_text(b.state), "drain": b.drain, "health": health_text(b.health),
           "check": b.check.as_ref().map(|c| json!({"kind": c.kind, "port": c.port, "interval_ms": c.interval_ms,
               "timeout_ms": c.timeout_ms, "rise": c.rise, "fall": c.fall, "http_status": c.http_status, "via": if c.via.is_empty() { "auto" } else { c.via.as_str() },
               "payload": c.payload})), "mac_since_unix_ms": b.mac_since_unix_ms,
           "effective_weight": b.effective_weight, "active_flows": b.active_flows, "capped": b.capped,
           "max_flows": b.max_flows, "min_flows": b.min_flows,
           "agent": b.agent.as_ref().map(|a| json!({"kind": a.kind, "port": a.port, "interval_ms": a.interval_ms, "timeout_ms": a.timeout_ms})),
           "agent_status": b.agent_status.as_ref().map(|s| json!({"answered": s.answered, "percent": s.percent, "state": s.state,
               "detail": s.detail, "since_unix_ms": s.since_unix_ms}))})
}

/// The agent's answer in force, or "-" without one.
fn agent_text(b: &pb::Backend) -> String {
    match &b.agent_status {
        None => "-".into(),
        Some(s) if !s.answered => format!("{}% {} (silent)", s.percent, s.state),
        Some(s) => format!("{}% {}", s.percent, s.state),
    }
}

/// Active flows, with the cap when there is one.
fn flows_text(b: &pb::Backend) -> String {
    match b.max_flows {
        0 => b.active_flows.to_string(),
        max if b.capped => format!("{}/{max} capped", b.active_flows),
        max => format!("{}/{max}", b.active_flows),
    }
}

fn print_vips(out: Output, vips: &[pb::Vip]) {
    match out {
        Output::Json => {
            let v: Vec<Value> = vips
                .iter()
                .map(|v| json!({"vip": vip_text(&v.key), "table_size": v.table_size,
                                "tcp_idle_timeout_s": v.tcp_idle_timeout_s, "udp_idle_timeout_s": v.udp_idle_timeout_s,
                                "tunnel_sources": v.tunnel_sources,
                                "quic_server_id_len": v.quic_server_id_len, "drain_flows": drain_text(v),
                                "backends": v.backends.iter().map(backend_json).collect::<Vec<_>>()}))
                .collect();
            print_json(Value::Array(v));
        }
        Output::Table => {
            // Each VIP, then its backends indented under it.
            println!("{:<32} {:>10} {:>9}", "VIP", "TABLE", "BACKENDS");
            for v in vips {
                // A note only where a VIP is not plain: rows of plain VIPs
                // stay as scripts read them.
                let note = vip_note(v).map_or(String::new(), |n| format!("  {n}"));
                println!(
                    "{:<32} {:>10} {:>9}{note}",
                    vip_text(&v.key),
                    v.table_size,
                    v.backends.len()
                );
                for b in &v.backends {
                    let sid = if b.server_id.is_empty() {
                        String::new()
                    } else {
                        format!(" sid {}", b.server_id)
                    };
                    println!(
                        "  {:<30} weight {:<5} {:<9} {:<10} {:<14} {}{sid}",
                        b.address,
                        b.weight,
                        state_text(b.state),
                        health_text(b.health),
                        forward_text(b),
                        mac_text(b)
                    );
                }
            }
        }
    }
}

/// A VIP's QUIC mode: "id 2B" (the server id's length), "-" when off.
fn quic_text(v: &pb::Vip) -> String {
    match v.quic_server_id_len {
        0 => "-".into(),
        n => format!("id {n}B"),
    }
}

/// "quic id 2B, drain move": what differs from a plain VIP, if anything.
fn vip_note(v: &pb::Vip) -> Option<String> {
    let mut parts = Vec::new();
    if v.quic_server_id_len != 0 {
        parts.push(format!("quic {}", quic_text(v)));
    }
    if drain_text(v) != "keep" {
        parts.push(format!("drain {}", drain_text(v)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// What a VIP's draining backends' flows do: "keep" or "move".
fn drain_text(v: &pb::Vip) -> &'static str {
    match pb::DrainFlows::try_from(v.drain_flows) {
        Ok(pb::DrainFlows::Move) => "move",
        Ok(pb::DrainFlows::Keep) => "keep",
        Err(_) => "unknown",
    }
}

/// The MAC a backend's packets go to, or "(resolving)"; a tunnelled
/// backend behind a gateway: the gateway's, named ("via 192.0.2.254").
fn mac_text(b: &pb::Backend) -> String {
    let mac = if b.effective_mac.is_empty() {
        "(resolving)"
    } else {
        &b.effective_mac
    };
    if b.next_hop.is_empty() || b.next_hop == b.address {
        mac.to_string()
    } else {
        format!("{mac} via {}", b.next_hop)
    }
}

fn print_backends(out: Output, backends: &[pb::Backend]) {
    match out {
        Output::Json => print_json(Value::Array(backends.iter().map(backend_json).collect())),
        Output::Table => {
            println!(
                "{:<28} {:>6} {:>5} {:<9} {:<14} {:<18} {:<10} {:<14} {:<16} {:<8} CHECK",
                "BACKEND",
                "WEIGHT",
                "EFF",
                "STATE",
                "FWD",
                "MAC",
                "HEALTH",
                "FLOWS",
                "AGENT",
                "SID"
            );
            for b in backends {
                let mac = mac_text(b);
                let check = b
                    .check
                    .as_ref()
                    .map_or("none".to_string(), |c| match c.via.as_str() {
                        "" | "auto" => c.kind.clone(),
                        via => format!("{} via {via}", c.kind),
                    });
                let sid = if b.server_id.is_empty() {
                    "-"
                } else {
                    &b.server_id
                };
                println!(
                    "{:<28} {:>6} {:>5} {:<9} {:<14} {:<18} {:<10} {:<14} {:<16} {sid:<8} {check}",
                    b.address,
                    b.weight,
                    b.effective_weight,
                    state_text(b.state),
                    forward_text(b),
                    mac,
                    health_text(b.health),
                    flows_text(b),
                    agent_text(b)
                );
            }
        }
    }
}

/// Snapshot delays: how many, and quantiles (bucket bounds, microseconds).
fn delays_json(buckets: &[pb::DelayBucket]) -> Value {
    let q = |q| lb_proto::delay_quantile(buckets, q);
    json!({"snapshots": buckets.iter().map(|b| b.count).sum::<u64>(),
           "p50_us": q(0.5), "p99_us": q(0.99), "max_us": q(1.0)})
}

/// "N snapshots, p50 <= X us, p99 <= Y us, max <= Z us", or None for none.
fn delays_text(buckets: &[pb::DelayBucket]) -> Option<String> {
    let n: u64 = buckets.iter().map(|b| b.count).sum();
    let q = |q| lb_proto::delay_quantile(buckets, q).unwrap_or(0);
    (n > 0).then(|| {
        format!(
            "{n} snapshots, p50 <= {} us, p99 <= {} us, max <= {} us",
            q(0.5),
            q(0.99),
            q(1.0)
        )
    })
}

/// A rate as JSON: a number rounded to thousandths, or null for none.
fn rate_json(r: Option<f64>) -> Value {
    r.map_or(Value::Null, |r| json!((r * 1000.0).round() / 1000.0))
}

/// A rate in a table column: no decimals from 100 up, "-" for none.
fn rate_text(r: Option<f64>) -> String {
    match r {
        None => "-".to_string(),
        Some(r) if r >= 100.0 => format!("{r:.0}"),
        Some(r) => format!("{r:.1}"),
    }
}

/// Add `fields` (rates) to a JSON object, beside its counts.
fn add_rates<const N: usize>(v: &mut Value, fields: [(&str, Option<f64>); N]) {
    if let Some(o) = v.as_object_mut() {
        for (k, r) in fields {
            o.insert(k.to_string(), rate_json(r));
        }
    }
}

fn traffic_rates(t: &rates::TrafficRates) -> [(&'static str, Option<f64>); 3] {
    [
        ("packets_per_s", t.packets),
        ("bits_per_s", t.bits),
        ("new_flows_per_s", t.new_flows),
    ]
}

/// The counters; with `rates` (`stats --watch` after its first print),
/// the rates since the previous print too.
fn print_stats(out: Output, s: &pb::Stats, rates: Option<&rates::Rates>) {
    let drops = |w: &pb::WorkerStats| -> Value {
        Value::Object(
            w.drops
                .iter()
                .map(|d| (d.name.clone(), json!(d.value)))
                .collect(),
        )
    };
    match out {
        Output::Json => {
            let mut workers: Vec<Value> = s
                .workers
                .iter()
                .map(|w| json!({"lcore": w.lcore, "rx_packets": w.rx_packets, "rx_bytes": w.rx_bytes,
                                "tx_packets": w.tx_packets, "tx_bytes": w.tx_bytes, "tx_failed": w.tx_failed,
                                "forwarded": w.forwarded, "icmp_to_backend": w.icmp_to_backend,
                                "arp_replies": w.arp_replies, "nd_adverts": w.nd_adverts,
                                "to_kernel": w.to_kernel, "from_kernel": w.from_kernel, "probes_steered": w.probes_steered,
                                "host_balanced": w.host_balanced, "host_replies": w.host_replies, "host_dropped": w.host_dropped,
                                "neigh_requests": w.neigh_requests, "neigh_learned": w.neigh_learned,
                                "echo_replies": w.echo_replies, "vip_conflicts": w.vip_conflicts,
                                "quic_by_id": w.quic_by_id, "quic_initial": w.quic_initial, "quic_unknown_id": w.quic_unknown_id,
                                "quic_id_down": w.quic_id_down, "quic_unparsed": w.quic_unparsed,
                                "new_flows": w.new_flows, "flow_rejected": w.flow_rejected,
                                "flow_inserted": w.flow_inserted, "flow_evicted_unconfirmed": w.flow_evicted_unconfirmed,
                                "flow_evicted_confirmed": w.flow_evicted_confirmed, "flow_expired": w.flow_expired,
                                "active_flows": w.active_flows, "flow_capacity": w.flow_capacity, "snapshot_generation": w.snapshot_generation,
                                "snapshot_adoption": delays_json(&w.snapshot_adoption), "drops": drops(w)}))
                .collect();
            let mut vips: Vec<Value> = s
                .vips
                .iter()
                .map(|v| json!({"vip": vip_text(&v.key), "packets": v.packets, "bytes": v.bytes, "new_flows": v.new_flows,
                                "backends": v.backends.iter().map(|b| json!({"address": b.address, "packets": b.packets,
                                    "bytes": b.bytes, "new_flows": b.new_flows})).collect::<Vec<_>>()}))
                .collect();
            let mut doc = json!({"snapshot_all_workers": delays_json(&s.snapshot_all_workers)});
            if let Some(r) = rates {
                for (w, wr) in workers.iter_mut().zip(&r.workers) {
                    add_rates(
                        w,
                        [
                            ("rx_packets_per_s", wr.rx_packets),
                            ("rx_bits_per_s", wr.rx_bits),
                            ("tx_packets_per_s", wr.tx_packets),
                            ("tx_bits_per_s", wr.tx_bits),
                            ("forwarded_per_s", wr.forwarded),
                            ("new_flows_per_s", wr.new_flows),
                            ("drops_per_s", wr.drops),
                        ],
                    );
                }
                for (v, vr) in vips.iter_mut().zip(&r.vips) {
                    add_rates(v, traffic_rates(&vr.traffic));
                    if let Some(bs) = v["backends"].as_array_mut() {
                        for (b, br) in bs.iter_mut().zip(&vr.backends) {
                            add_rates(b, traffic_rates(br));
                        }
                    }
                }
                doc["rates_over_s"] = rate_json(Some(r.elapsed.as_secs_f64()));
            }
            doc["workers"] = Value::Array(workers);
            doc["vips"] = Value::Array(vips);
            print_json(doc);
        }
        Output::Table => {
            println!(
                "{:<8} {:>12} {:>12} {:>12} {:>10} {:>10}",
                "WORKER", "RX", "TX", "FORWARDED", "NEW FLOWS", "ACTIVE"
            );
            for w in &s.workers {
                println!(
                    "{:<8} {:>12} {:>12} {:>12} {:>10} {:>10}",
                    format!("lcore {}", w.lcore),
                    w.rx_packets,
                    w.tx_packets,
                    w.forwarded,
                    w.new_flows,
                    w.active_flows
                );
                let nonzero: Vec<String> = w
                    .drops
                    .iter()
                    .filter(|d| d.value > 0)
                    .map(|d| format!("{}={}", d.name, d.value))
                    .collect();
                if !nonzero.is_empty() {
                    println!("         drops: {}", nonzero.join(" "));
                }
                if w.tx_failed > 0 {
                    println!(
                        "         transmit refused by the device: {} packets",
                        w.tx_failed
                    );
                }
                if w.flow_rejected > 0 {
                    println!(
                        "         flow table full: {} packets forwarded without an entry",
                        w.flow_rejected
                    );
                }
                if w.flow_evicted_unconfirmed + w.flow_evicted_confirmed > 0 {
                    println!(
                        "         flow table displaced: {} unconfirmed entries, {} idle streams",
                        w.flow_evicted_unconfirmed, w.flow_evicted_confirmed
                    );
                }
                if let Some(t) = quic_counters_text(w) {
                    println!("         quic: {t}");
                }
                if let Some(t) = delays_text(&w.snapshot_adoption) {
                    println!("         new snapshots reached it: {t}");
                }
            }
            if let Some(t) = delays_text(&s.snapshot_all_workers) {
                println!("every worker on a new snapshot: {t}");
            }
            for v in &s.vips {
                println!(
                    "{:<32} {:>12} pkts {:>14} bytes {:>10} new flows",
                    vip_text(&v.key),
                    v.packets,
                    v.bytes,
                    v.new_flows
                );
                for b in &v.backends {
                    println!(
                        "  {:<30} {:>12} pkts {:>14} bytes {:>10} new flows",
                        b.address, b.packets, b.bytes, b.new_flows
                    );
                }
            }
            if let Some(r) = rates {
                print_rates_table(s, r);
            }
        }
    }
}

/// A worker's QUIC routes ("by_id=5 initial=2 ..."); `None` while all are 0.
fn quic_counters_text(w: &pb::WorkerStats) -> Option<String> {
    let all = [
        ("by_id", w.quic_by_id),
        ("initial", w.quic_initial),
        ("unknown_id", w.quic_unknown_id),
        ("id_down", w.quic_id_down),
        ("unparsed", w.quic_unparsed),
    ];
    all.iter().any(|(_, v)| *v > 0).then(|| {
        all.iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// `stats --watch`'s rates section: per worker, then per VIP and its
/// backends; "-" where a counter went down (lbd restarted).
fn print_rates_table(s: &pb::Stats, r: &rates::Rates) {
    println!(
        "rates per second over the last {:.3} s:",
        r.elapsed.as_secs_f64()
    );
    println!(
        "{:<8} {:>12} {:>14} {:>12} {:>14} {:>12} {:>12} {:>10}",
        "WORKER",
        "RX PKT/S",
        "RX BIT/S",
        "TX PKT/S",
        "TX BIT/S",
        "FORWARDED/S",
        "NEW FLOWS/S",
        "DROPS/S"
    );
    for (w, wr) in s.workers.iter().zip(&r.workers) {
        println!(
            "{:<8} {:>12} {:>14} {:>12} {:>14} {:>12} {:>12} {:>10}",
            format!("lcore {}", w.lcore),
            rate_text(wr.rx_packets),
            rate_text(wr.rx_bits),
            rate_text(wr.tx_packets),
            rate_text(wr.tx_bits),
            rate_text(wr.forwarded),
            rate_text(wr.new_flows),
            rate_text(wr.drops)
        );
    }
    if s.vips.is_empty() {
        return;
    }
    println!(
        "{:<32} {:>12} {:>14} {:>12}",
        "VIP / BACKEND", "PKT/S", "BIT/S", "NEW FLOWS/S"
    );
    let row = |name: String, t: &rates::TrafficRates| {
        println!(
            "{name:<32} {:>12} {:>14} {:>12}",
            rate_text(t.packets),
            rate_text(t.bits),
            rate_text(t.new_flows)
        );
    };
    for (v, vr) in s.vips.iter().zip(&r.vips) {
        row(vip_text(&v.key), &vr.traffic);
        for (b, br) in v.backends.iter().zip(&vr.backends) {
            row(format!("  {}", b.address), br);
        }
    }
}

fn print_event(out: Output, ev: &pb::Event) {
    let (kind, text, v) = match &ev.kind {
        Some(pb::event::Kind::Backend(b)) => (
            "backend",
            format!(
                "{} {} {}: {}",
                vip_text(&b.vip),
                b.address,
                health_text(b.health),
                b.detail
            ),
            json!({"vip": vip_text(&b.vip), "address": b.address, "health": health_text(b.health), "detail": b.detail}),
        ),
        Some(pb::event::Kind::Config(c)) => (
            "config",
            format!("generation {}: {}", c.generation, c.what),
            json!({"generation": c.generation, "what": c.what}),
        ),
        Some(pb::event::Kind::Routes(r)) => (
            "routes",
            format!(
                "announced: {} ({})",
                if r.announced.is_empty() {
                    "nothing".to_string()
                } else {
                    r.announced.join(" ")
                },
                r.reason
            ),
            json!({"announced": r.announced, "reason": r.reason}),
        ),
        Some(pb::event::Kind::Conflict(c)) => (
            "conflict",
            format!(
                "{} claimed by {} ({} times{})",
                c.vip,
                c.mac,
                c.count,
                if c.backend.is_empty() {
                    String::new()
                } else {
                    format!(", backend {}", c.backend)
                }
            ),
            json!({"vip": c.vip, "mac": c.mac, "count": c.count, "backend": c.backend, "last_seen_ms": c.last_seen_ms}),
        ),
        Some(pb::event::Kind::Load(l)) => (
            "load",
            format!(
                "{} {} weight {} -> {}{}: {}",
                vip_text(&l.vip),
                l.address,
                l.weight,
                l.effective_weight,
                if l.capped { " (capped)" } else { "" },
                l.reason
            ),
            json!({"vip": vip_text(&l.vip), "address": l.address, "weight": l.weight,
                   "effective_weight": l.effective_weight, "capped": l.capped, "reason": l.reason}),
        ),
        Some(pb::event::Kind::Missed(m)) => (
            "missed",
            format!("{} events missed (too slow)", m.count),
            json!({"count": m.count}),
        ),
        None => ("unknown", String::new(), json!({})),
    };
    match out {
        Output::Json => print_json(json!({"time_ms": ev.time_ms, "kind": kind, "event": v})),
        Output::Table => println!("{} {kind:<8} {text}", ev.time_ms),
    }
}

fn done(out: Output, what: &str) {
    match out {
        Output::Json => print_json(json!({"ok": true, "message": what})),
        Output::Table => println!("{what}"),
    }
}

/// The wall clock as Unix milliseconds (0 before 1970).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--help` explains every command and every argument: an operator
    /// should not have to read the source to know what `undrain` does.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                if a.get_help().is_none() && !matches!(a.get_id().as_str(), "help" | "version") {
                    missing.push(format!("{path} {}", a.get_id()));
                }
            }
            for sub in c.get_subcommands() {
                let p = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(p.clone());
                }
                walk(sub, &p, missing);
            }
        }
        use clap::CommandFactory;
        let mut missing = Vec::new();
        walk(&Cli::command(), "lbctl", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn vip_syntax() {
        let k = parse_vip("198.51.100.10:443/tcp").unwrap();
        assert_eq!(
            (k.address.as_str(), k.port, k.protocol),
            ("198.51.100.10", 443, pb::Protocol::Tcp as i32)
        );
        let k = parse_vip("[2001:db8::10]:5000/UDP").unwrap();
        assert_eq!(
            (k.address.as_str(), k.port, k.protocol),
            ("2001:db8::10", 5000, pb::Protocol::Udp as i32)
        );
        assert_eq!(vip_text(&Some(k)), "[2001:db8::10]:5000/udp");
        for (bad, why) in [
            ("198.51.100.10:443", "ADDRESS:PORT/PROTOCOL"),
            ("198.51.100.10:443/sctp", "tcp or udp"),
            ("198.51.100.10/tcp", "ADDRESS:PORT"),
            ("198.51.100.10:99999/tcp", "1 to 65535"),
        ] {
            let e = parse_vip(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn quic_options_and_columns() {
        let parse =
            |args: &[&str]| Cli::try_parse_from(["lbctl"].iter().chain(args)).map(|c| c.command);
        let Command::Vip(VipCommand::Add { quic, .. }) = parse(&[
            "vip",
            "add",
            "198.51.100.10:443/udp",
            "--quic-server-id-len",
            "2",
            "--drain-flows",
            "move",
        ])
        .unwrap() else {
            panic!("vip add");
        };
        assert_eq!(quic.quic_server_id_len, Some(2));
        assert_eq!(quic.drain_pb(), Some(pb::DrainFlows::Move));
        let Command::Vip(VipCommand::Set { quic, no_quic, .. }) =
            parse(&["vip", "set", "198.51.100.10:443/udp", "--no-quic"]).unwrap()
        else {
            panic!("vip set");
        };
        assert!(no_quic && quic.quic_server_id_len.is_none() && quic.drain_pb().is_none());
        assert!(parse(&[
            "vip",
            "set",
            "198.51.100.10:443/udp",
            "--no-quic",
            "--quic-server-id-len",
            "2"
        ])
        .is_err());
        let e = parse(&[
            "vip",
            "set",
            "198.51.100.10:443/udp",
            "--drain-flows",
            "later",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--drain-flows") && e.contains("move"), "{e}");
        let Command::Backend(BackendCommand::Add { server_id, .. }) = parse(&[
            "backend",
            "add",
            "198.51.100.10:443/udp",
            "192.0.2.11",
            "--server-id",
            "0a01",
        ])
        .unwrap() else {
            panic!("backend add");
        };
        assert_eq!(server_id.as_deref(), Some("0a01"));
        assert!(matches!(
            parse(&["backend", "set-server-id", "198.51.100.10:443/udp", "192.0.2.11", "none"])
                .unwrap(),
            Command::Backend(BackendCommand::SetServerId { server_id, .. }) if server_id == "none"
        ));
        let v = pb::Vip {
            quic_server_id_len: 2,
            drain_flows: pb::DrainFlows::Move as i32,
            ..Default::default()
        };
        assert_eq!((quic_text(&v), drain_text(&v)), ("id 2B".into(), "move"));
        assert_eq!(vip_note(&v).as_deref(), Some("quic id 2B, drain move"));
        let off = pb::Vip::default();
        assert_eq!((quic_text(&off), drain_text(&off)), ("-".into(), "keep"));
        assert_eq!(vip_note(&off), None);
        let j = backend_json(&pb::Backend {
            server_id: "0a01".into(),
            ..Default::default()
        });
        assert_eq!(j["server_id"], json!("0a01"));
        let w = pb::WorkerStats {
            quic_by_id: 5,
            ..Default::default()
        };
        assert_eq!(
            quic_counters_text(&w).as_deref(),
            Some("by_id=5 initial=0 unknown_id=0 id_down=0 unparsed=0")
        );
        assert_eq!(quic_counters_text(&pb::WorkerStats::default()), None);
    }

    #[test]
    fn forward_options_and_the_fwd_column() {
        let cli = Cli::try_parse_from([
            "lbctl",
            "backend",
            "add",
            "198.51.100.10:443/tcp",
            "10.20.0.11",
            "--forward",
            "vxlan",
            "--vni",
            "100",
            "--tunnel-port",
            "4790",
            "--mac",
            "02:00:00:00:01:11",
        ])
        .unwrap();
        let Command::Backend(BackendCommand::Add { forward, mac, .. }) = cli.command else {
            panic!("backend add");
        };
        assert_eq!(forward.method(), Some(pb::ForwardMethod::Vxlan));
        assert_eq!((forward.vni, forward.tunnel_port), (Some(100), Some(4790)));
        assert_eq!(mac.as_deref(), Some("02:00:00:00:01:11"));
        let e = Cli::try_parse_from([
            "lbctl",
            "backend",
            "add",
            "198.51.100.10:443/tcp",
            "10.20.0.11",
            "--forward",
            "gre",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--forward") && e.contains("vxlan"), "{e}");
        let cli = Cli::try_parse_from([
            "lbctl",
            "backend",
            "set-forward",
            "198.51.100.10:443/tcp",
            "10.20.0.11",
            "--forward",
            "gue",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Command::Backend(BackendCommand::SetForward { .. })
        ));
        let cli = Cli::try_parse_from([
            "lbctl",
            "vip",
            "add",
            "198.51.100.10:443/tcp",
            "--tunnel-source",
            "192.0.2.5,2001:db8::5",
        ])
        .unwrap();
        let Command::Vip(VipCommand::Add { tunnel_sources, .. }) = cli.command else {
            panic!("vip add");
        };
        assert_eq!(tunnel_sources, ["192.0.2.5", "2001:db8::5"]);
        let b = |forward: pb::ForwardMethod, tunnel_port, vni| pb::Backend {
            forward: forward as i32,
            tunnel_port,
            vni,
            ..Default::default()
        };
        assert_eq!(forward_text(&b(pb::ForwardMethod::Dr, 0, 0)), "dr");
        assert_eq!(forward_text(&b(pb::ForwardMethod::Ipip, 0, 0)), "ipip");
        assert_eq!(
            forward_text(&b(pb::ForwardMethod::Gue, 6080, 0)),
            "gue:6080"
        );
        assert_eq!(
            forward_text(&b(pb::ForwardMethod::Vxlan, 4789, 100)),
            "vxlan:100"
        );
        assert_eq!(
            forward_text(&b(pb::ForwardMethod::Vxlan, 4790, 100)),
            "vxlan:100@4790"
        );
        let behind = pb::Backend {
            address: "10.20.0.11".into(),
            next_hop: "192.0.2.254".into(),
            ..b(pb::ForwardMethod::Gue, 6080, 0)
        };
        assert_eq!(mac_text(&behind), "(resolving) via 192.0.2.254");
        assert_eq!(unresolved_text(&behind), "next hop 192.0.2.254 unresolved");
        let j = backend_json(&behind);
        assert_eq!(
            (&j["forward"], &j["tunnel_port"], &j["next_hop"]),
            (&json!("gue"), &json!(6080), &json!("192.0.2.254"))
        );
    }
}
