//! lb-agent: see agent/README.md and `lb-agent --help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser};
use lb_agent::load::{self, Config, Sample};
use lb_agent::{Measured, Source};
use tokio::net::TcpListener;

/// The default port of the text protocol (HAProxy has none of its own).
const DEFAULT_PORT: u16 = 10999;

#[derive(Debug, Parser)]
#[command(
    name = "lb-agent",
    version,
    // The last of a repeated option wins, so the unit's options can be
    // overridden (LB_AGENT_OPTIONS, a drop-in) without editing them.
    args_override_self = true,
    about = "Feedback agent for lbd: reports this backend's spare capacity as a weight percentage",
    long_about = "Feedback agent for lbd: reports this backend's spare capacity as a weight \
        percentage, over HAProxy's agent-check text protocol (TCP: one line such as \
        `ready 75%`, then close) and, with --http-listen, as JSON over HTTP. By default the \
        weight comes from the CPU load (and the NIC's egress with --iface): \
        100 * (1 - load / ceiling), 0% at or above --ceiling-percent."
)]
struct Cli {
    /// Where the text protocol (HAProxy agent-check) listens: each connection
    /// gets one line, e.g. `ready 75%`, and is closed.
    #[arg(long, value_name = "ADDR:PORT", default_value_t = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Also serve the answer as JSON over HTTP here, e.g. 0.0.0.0:10998:
    /// `GET --http-path` gives {"weight_percent": N, "state": "ready", ...}.
    #[arg(long, value_name = "ADDR:PORT")]
    http_listen: Option<SocketAddr>,
    /// The HTTP path of the JSON answer.
    #[arg(long, value_name = "PATH", default_value = "/load", value_parser = parse_path)]
    http_path: String,

    /// Report this constant weight (`ready PERCENT%`) instead of measuring
    /// (tests, manual use).
    #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(0..=100), conflicts_with_all = ["file", "iface", "capacity_mbps", "no_cpu"], help_heading = "Instead of measuring")]
    fixed: Option<u8>,
    /// Report the first line of this file, read on each request, e.g. `50%`,
    /// `drain`, `maint`, `ready 20%` (HAProxy agent-check words); a missing
    /// or empty file, or one with no word the agent knows, reports `ready`
    /// without a weight (the configured weight stays).
    #[arg(long, value_name = "PATH", conflicts_with_all = ["iface", "capacity_mbps", "no_cpu"], help_heading = "Instead of measuring")]
    file: Option<PathBuf>,

    /// Count this interface's egress (bytes sent, from
    /// /sys/class/net/IFACE/statistics/tx_bytes) as a share of its capacity.
    #[arg(long, value_name = "IFACE", help_heading = "Measuring")]
    iface: Option<String>,
    /// The interface's capacity in Mbit/s (default: its link speed, from
    /// /sys/class/net/IFACE/speed; give it for virtual interfaces, or to
    /// count a bond's or a shaped link's real capacity).
    #[arg(long, value_name = "MBPS", requires = "iface", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Measuring")]
    capacity_mbps: Option<u64>,
    /// Do not count the CPU (/proc/stat, all CPUs); then --iface is needed.
    #[arg(long, help_heading = "Measuring")]
    no_cpu: bool,
    /// The sampling window in milliseconds: the load is measured between
    /// two samples this far apart.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=600_000), help_heading = "Measuring")]
    sample_ms: u64,
    /// The load (percent) at which the server takes no new streams: the
    /// weight is 100 * (1 - load / ceiling), rounded, at least 1% below
    /// the ceiling, 0% at or above it.
    #[arg(long, value_name = "PERCENT", default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100), help_heading = "Measuring")]
    ceiling_percent: u8,

    /// Where procfs is mounted (tests give a directory with a stat file).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/proc",
        help_heading = "Testing"
    )]
    proc: PathBuf,
    /// Where sysfs is mounted (tests give a directory with
    /// class/net/IFACE/{speed,statistics/tx_bytes}).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "/sys",
        help_heading = "Testing"
    )]
    sys: PathBuf,
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_string())
    } else {
        Err("a path starts with /".into())
    }
}

fn main() {
    // Packaging: `lb-agent --generate-man` prints the man page (roff).
    if std::env::args().skip(1).eq(["--generate-man"]) {
        let mut page = Vec::new();
        match clap_mangen::Man::new(Cli::command())
            .section("8")
            .render(&mut page)
        {
            Ok(()) => print!("{}", String::from_utf8_lossy(&page)),
            Err(e) => {
                eprintln!("lb-agent: error: rendering the man page: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LB_AGENT_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: none in the journal or a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("lb-agent: error: {e:#}");
        std::process::exit(1);
    }
}

/// What the sampler reads.
struct Sampler {
    proc_stat: Option<PathBuf>,
    tx_bytes: Option<PathBuf>,
    config: Config,
    start: Instant,
}

impl Sampler {
    fn sample(&self) -> Result<Sample> {
        let cpu = match &self.proc_stat {
            Some(p) => Some(
                load::parse_proc_stat(&read(p)?)
                    .with_context(|| format!("{}: no aggregate cpu line", p.display()))?,
            ),
            None => None,
        };
        let tx_bytes = match &self.tx_bytes {
            Some(p) => Some(
                read(p)?
                    .trim()
                    .parse()
                    .with_context(|| format!("{}: not a byte count", p.display()))?,
            ),
            None => None,
        };
        Ok(Sample {
            at: self.start.elapsed(),
            cpu,
            tx_bytes,
        })
    }
}

fn read(p: &Path) -> Result<String> {
    std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
}

/// The sampler as the options give it, checked by a first sample.
fn sampler(cli: &Cli) -> Result<Sampler> {
    let nic = match &cli.iface {
        Some(iface) => {
            let dir = cli.sys.join("class/net").join(iface);
            let capacity = match cli.capacity_mbps {
                Some(c) => c,
                None => {
                    let speed = dir.join("speed");
                    let text = read(&speed).context(
                        "the link speed is unknown (a virtual interface?): give --capacity-mbps",
                    )?;
                    match text.trim().parse::<i64>() {
                        Ok(s) if s > 0 => s as u64,
                        _ => bail!(
                            "{} says {:?}: the link speed is unknown (a virtual interface, or the link is down): give --capacity-mbps",
                            speed.display(),
                            text.trim()
                        ),
                    }
                }
            };
            Some((dir.join("statistics/tx_bytes"), capacity))
        }
        None => None,
    };
    if cli.no_cpu && nic.is_none() {
        bail!("nothing to measure: --no-cpu needs --iface (or give --fixed or --file)");
    }
    let s = Sampler {
        proc_stat: (!cli.no_cpu).then(|| cli.proc.join("stat")),
        tx_bytes: nic.as_ref().map(|(p, _)| p.clone()),
        config: Config {
            cpu: !cli.no_cpu,
            nic_capacity_mbps: nic.map(|(_, c)| c),
            ceiling_percent: f64::from(cli.ceiling_percent),
        },
        start: Instant::now(),
    };
    s.sample()?;
    Ok(s)
}

/// Sample every `period`, publishing each window's measure.
async fn sample_forever(s: Sampler, period: Duration, out: Arc<Mutex<Measured>>) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prev: Option<Sample> = None;
    let mut failing = false;
    loop {
        tick.tick().await;
        let m = match s.sample() {
            Ok(cur) => {
                if failing {
                    tracing::info!("sampling works again");
                    failing = false;
                }
                let m = prev.map(|p| load::measure(&s.config, &p, &cur));
                prev = Some(cur);
                m.unwrap_or_default()
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("sampling failed, reporting no weight: {e:#}");
                    failing = true;
                }
                prev = None;
                Measured::default()
            }
        };
        tracing::trace!(?m, "window");
        *out.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }
}

async fn run(cli: Cli) -> Result<()> {
    let source = match (&cli.fixed, &cli.file) {
        (Some(p), _) => Source::Fixed(*p),
        (None, Some(f)) => Source::file(f.clone()),
        (None, None) => {
            let s = sampler(&cli)?;
            tracing::info!(
                cpu = s.config.cpu,
                iface = cli.iface.as_deref().unwrap_or("-"),
                capacity_mbps = s.config.nic_capacity_mbps,
                ceiling_percent = cli.ceiling_percent,
                sample_ms = cli.sample_ms,
                "measuring"
            );
            let m = Arc::new(Mutex::new(Measured::default()));
            tokio::spawn(sample_forever(
                s,
                Duration::from_millis(cli.sample_ms),
                m.clone(),
            ));
            Source::Measured(m)
        }
    };
    let text = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("listening on {}", cli.listen))?;
    tracing::info!(listen = %text.local_addr()?, "agent-check text protocol");
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(lb_agent::serve_text(text, source.clone()));
    if let Some(addr) = cli.http_listen {
        let http = TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!(listen = %http.local_addr()?, path = cli.http_path, "HTTP JSON");
        tasks.spawn(lb_agent::serve_http(http, source, cli.http_path.clone()));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
        Some(r) = tasks.join_next() => r.context("a server task")?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_argument_has_help() {
        let c = Cli::command();
        let missing: Vec<String> = c
            .get_arguments()
            .filter(|a| {
                a.get_help().is_none() && !matches!(a.get_id().as_str(), "help" | "version")
            })
            .map(|a| a.get_id().to_string())
            .collect();
        assert!(missing.is_empty(), "no help text: {missing:?}");
        assert_eq!(c.get_subcommands().count(), 0);
        c.debug_assert();
    }

    #[test]
    fn options() {
        let cli = Cli::try_parse_from(["lb-agent"]).unwrap();
        assert_eq!(cli.listen.to_string(), "0.0.0.0:10999");
        assert_eq!((cli.sample_ms, cli.ceiling_percent), (1000, 90));
        assert_eq!(cli.http_path, "/load");
        for bad in [
            &["lb-agent", "--fixed", "101"][..],
            &["lb-agent", "--fixed", "40", "--file", "x"],
            &["lb-agent", "--fixed", "40", "--iface", "eth0"],
            &["lb-agent", "--capacity-mbps", "1000"],
            &["lb-agent", "--ceiling-percent", "0"],
            &["lb-agent", "--http-path", "load"],
            &["lb-agent", "--sample-ms", "1"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["lb-agent", "--listen", "[::1]:7", "--fixed", "0"]).unwrap();
        assert_eq!((cli.listen.port(), cli.fixed), (7, Some(0)));
        // The last one wins.
        let cli =
            Cli::try_parse_from(["lb-agent", "--listen", "[::1]:7", "--listen", "127.0.0.1:8"])
                .unwrap();
        assert_eq!(cli.listen.to_string(), "127.0.0.1:8");
    }
}
