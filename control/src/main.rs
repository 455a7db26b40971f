//! `lbd`, the load balancer daemon: `lbd [EAL options] -- [lbd options]`.
//!
//! It starts EAL, one worker per worker lcore, each on its own RX/TX queue
//! pair of one port with its own flow table, and publishes the forwarding
//! snapshot built from the state file. Its control side (tokio, on the main
//! lcore) serves the gRPC API and metrics, runs health checks, resolves
//! backend MACs and announces the servable VIPs to a BGP speaker.

mod args;
mod grpc;
mod health;
mod metrics;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use crossbeam_queue::ArrayQueue;
use dataplane::dpdk::{self, Eal, Mempool, Port, PortConfig};
use dataplane::worker::{Neighbors, Worker};
use lb_core::drop_reason::DropReason;
use lb_core::neigh::{NeighConfig, NeighTable};
use lb_core::packet::MacAddr;
use lb_core::snapshot::{Publisher, Snapshot, VipKey};
use lb_core::stats::{Counters, WorkerStats};
use tracing::info;

use crate::args::Options;
use control::announce::{self, Speaker};
use control::config::Config;
use control::state::{State, StateError};

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LBD_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run() {
        eprintln!("lbd: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (eal_args, opts) = args::parse(&argv)?;
    let state = match &opts.state {
        Some(path) if path.exists() => State::from_config(&Config::load(path)?)
            .with_context(|| format!("{}", path.display()))?,
        Some(path) => {
            // Starts empty; the first change creates it, so its directory must exist.
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if !dir.is_dir() {
                bail!(
                    "state file {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
            State::default()
        }
        None => State::default(),
    };
    // Bound before EAL starts, so a second lbd fails at once and cleanly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let listener = match &opts.grpc_socket {
        Some(path) => Some(rt.block_on(grpc::bind(path))?),
        None => None,
    };
    let tcp_api = match (
        opts.grpc_listen,
        &opts.tls_cert,
        &opts.tls_key,
        &opts.tls_client_ca,
    ) {
        (Some(addr), Some(cert), Some(key), Some(ca)) => {
            Some(rt.block_on(grpc::bind_tcp(addr, cert, key, ca))?)
        }
        _ => None,
    };
    let metrics_listener = match opts.metrics_listen {
        Some(addr) => Some(
            rt.block_on(tokio::net::TcpListener::bind(addr))
                .with_context(|| format!("metrics listener on {addr}"))?,
        ),
        None => None,
    };

    let eal = Eal::init(&eal_args).context("starting EAL")?;
    let lcores = eal.worker_lcores();
    if lcores.is_empty() {
        bail!("no worker lcore: give EAL at least two cores, e.g. -l 0,1 (the first is the main lcore)");
    }
    let queues = u16::try_from(lcores.len()).context("too many worker lcores")?;
    let pool = Mempool::create(eal, "lbd_mbufs", opts.mbufs, 256, None)
        .context("creating the mbuf pool")?;
    let port_config = PortConfig {
        queues,
        rx_desc: opts.rx_desc,
        tx_desc: opts.tx_desc,
        mtu: None,
        promiscuous: true,
    };
    let mut port = Port::open(eal, &opts.port, &port_config, pool)
        .with_context(|| format!("configuring port {}", opts.port))?;
    let mac = MacAddr(port.mac());
    let mut neigh = NeighTable::new(NeighConfig::default());
    neigh.set_wanted(state.backend_addresses());
    let spec = state.to_spec(1, mac, |_| None);
    let snapshot = Snapshot::build(&spec).context("configuration")?;
    let publisher = Publisher::new(snapshot);
    // Shared with the workers and the API for the whole life of the process.
    let learned: &'static ArrayQueue<(IpAddr, MacAddr)> =
        Box::leak(Box::new(ArrayQueue::new(1024)));
    let requests: &'static ArrayQueue<IpAddr> = Box::leak(Box::new(ArrayQueue::new(1024)));
    let stats: &'static [WorkerStats] =
        Vec::leak(lcores.iter().map(|_| WorkerStats::default()).collect());
    let mut kernel = match &opts.kernel_iface {
        Some(name) => Some(kernel_port(eal, name, mac, &port_config, pool)?),
        None => None,
    };
    port.start()
        .with_context(|| format!("starting port {}", opts.port))?;
    info!(port = opts.port, %mac, workers = lcores.len(), vips = spec.vips.len(), flows_per_worker = opts.flows, "forwarding");

    let stop = Arc::new(AtomicBool::new(false));
    // The first signal starts a graceful stop (monitor), a second one ends
    // the process at once.
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&term))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&term)))
            .context("installing signal handlers")?;
    }
    let (wanted_routes, wanted_rx) = tokio::sync::watch::channel(BTreeSet::new());
    let (applied_tx, applied_routes) = tokio::sync::watch::channel(BTreeSet::new());
    let speaker = opts.bgp_routes.as_ref().map(|path| Speaker {
        routes_file: path.clone(),
        reload: Some(opts.bgp_reload.clone()),
    });
    let tsc_hz = eal.tsc_hz();
    let control = Arc::new(Mutex::new(Control {
        durable: state.clone(),
        commits: Vec::new(),
        commit_wanted: Arc::new(tokio::sync::Notify::new()),
        state,
        state_path: opts.state.clone(),
        mac,
        generation: 1,
        neigh,
        publisher,
        learned,
        requests,
        health: HashMap::new(),
        events: tokio::sync::broadcast::channel(1024).0,
        announced: applied_routes,
        announcing: speaker.is_some(),
        shutting_down: false,
    }));

    let last_snapshot = dpdk::scope(eal, |s| -> Result<Arc<Snapshot>> {
        let spawned = (|| -> Result<()> {
            for (i, (&lcore, st)) in lcores.iter().zip(stats).enumerate() {
                let queue = port.queue(i as u16)?;
                let reader = control.lock().expect("control lock").publisher.reader();
                let flows = dpdk::flow_table(opts.flows, opts.flow_config());
                let mut worker = Worker::new(queue, reader, flows, st, tsc_hz);
                if let Some(k) = &kernel {
                    worker = worker.with_kernel(k.queue(i as u16)?);
                }
                let asks = (i == 0).then_some((requests, pool));
                worker = worker.with_neighbors(Neighbors {
                    learned,
                    requests: asks,
                });
                let stop = &*stop;
                s.spawn(lcore, move || {
                    // A worker that dies (panics) stops the others and lbd,
                    // which then reports it: never a silently missing worker.
                    let _stop_all = StopOnExit(stop);
                    worker.run(stop)
                })?;
            }
            Ok(())
        })();
        if let Err(e) = spawned {
            // Workers already launched must stop, or the scope would wait forever.
            stop.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let api = grpc::Api {
            control: Arc::clone(&control),
            stats,
            lcores: lcores.clone(),
            port: opts.port.clone(),
            eal_args: eal_args.clone(),
        };
        let source = metrics::Source {
            control: Arc::clone(&control),
            stats,
            lcores: lcores.clone(),
        };
        rt.block_on(async {
            let tcp_side = api.clone();
            let tcp_server = async {
                match tcp_api {
                    Some(t) => grpc::serve_tcp(t, tcp_side, &stop).await,
                    None => Ok(()),
                }
            };
            let server = async {
                let unix = async {
                    match listener {
                        Some(l) => grpc::serve(l, api, &stop).await,
                        None => Ok(()),
                    }
                };
                let (u, t) = tokio::join!(unix, tcp_server);
                u.and(t)
            };
            let exposition = async {
                match metrics_listener {
                    Some(l) => metrics::serve(l, source, &stop).await,
                    None => Ok(()),
                }
            };
            let announcing = async {
                if let Some(speaker) = speaker {
                    speaker.run(wanted_rx, applied_tx, ROUTE_RETRY).await;
                }
            };
            let watchdog = Watchdog {
                term: &term,
                grace: opts.shutdown_grace(),
                routes: wanted_routes,
            };
            let (served, exposed, (), (), ()) = tokio::join!(
                server,
                exposition,
                monitor(&opts, stats, &stop, &control, watchdog),
                announcing,
                committer(&control, &stop)
            );
            if let Err(e) = &served {
                tracing::error!(error = %e, "gRPC server");
            }
            if let Err(e) = &exposed {
                tracing::error!(error = %e, "metrics server");
            }
        });
        Ok(control.lock().expect("control lock").publisher.current())
    })
    .context("running workers")??;

    let per_worker: Vec<Counters> = stats.iter().map(WorkerStats::read).collect();
    let port_stats = port.stats().context("reading port stats")?;
    drop(port); // stop and close: flushes what the device buffers (net_pcap)
    kernel.take();
    if let Some(path) = &opts.grpc_socket {
        let _ = std::fs::remove_file(path);
    }
    report(&opts, &lcores, &per_worker, mac, &last_snapshot, stats);
    info!(
        rx = port_stats.rx_packets,
        tx = port_stats.tx_packets,
        missed = port_stats.rx_missed,
        "port counters"
    );
    Ok(())
}

/// The exception interface: a net_tap device carrying the port's MAC, so
/// the host's frames need no rewrite, with one queue pair per worker.
fn kernel_port(
    eal: &Eal,
    name: &str,
    mac: MacAddr,
    port_config: &PortConfig,
    pool: &'static Mempool,
) -> Result<Port> {
    if name.is_empty() || name.len() > 15 || name.contains([',', '=', '/', ' ']) {
        bail!("--kernel-iface {name:?}: an interface name is 1 to 15 characters without ',', '=', '/' or spaces");
    }
    let vdev = "net_tap_lbd0";
    eal.create_vdev(vdev, &format!("iface={name},mac={mac}"))
        .with_context(|| format!("creating the exception interface {name}"))?;
    let config = PortConfig {
        promiscuous: false,
        ..port_config.clone()
    };
    let mut port = Port::open(eal, vdev, &config, pool)
        .with_context(|| format!("configuring the exception interface {name}"))?;
    port.start()
        .with_context(|| format!("starting the exception interface {name}"))?;
    // Frames the kernel hands to a tap with TX checksum offload carry partial
    // checksums, which would leave the port broken.
    for cmd in [
        vec!["ethtool", "-K", name, "tx", "off"],
        vec!["ip", "link", "set", name, "up"],
    ] {
        match std::process::Command::new(cmd[0]).args(&cmd[1..]).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                tracing::warn!(command = cmd.join(" "), error = %String::from_utf8_lossy(&o.stderr).trim(), "exception interface setup")
            }
            Err(e) => {
                tracing::warn!(command = cmd.join(" "), error = %e, "exception interface setup")
            }
        }
    }
    info!(iface = name, %mac, "exception path to the kernel");
    Ok(port)
}

/// Sets the stop flag when dropped, including while unwinding from a panic.
struct StopOnExit<'a>(&'a AtomicBool);

impl Drop for StopOnExit<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The control side: the desired state, neighbour resolution and the
/// snapshot publisher, shared by the monitor loop and the gRPC API.
pub struct Control {
    /// The desired state: what the dataplane runs and the API shows.
    pub state: State,
    /// What the state file holds (`state` once the committer caught up).
    durable: State,
    /// Changes applied but not yet written: each is acknowledged when written.
    commits: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
    commit_wanted: Arc<tokio::sync::Notify>,
    pub state_path: Option<PathBuf>,
    pub mac: MacAddr,
    pub generation: u64,
    neigh: NeighTable,
    pub publisher: Publisher,
    learned: &'static ArrayQueue<(IpAddr, MacAddr)>,
    requests: &'static ArrayQueue<IpAddr>,
    /// Health-check verdicts: runtime state, never written to the state file.
    pub health: HashMap<(VipKey, IpAddr), health::Status>,
    /// Events for `Watch` subscribers.
    pub events: tokio::sync::broadcast::Sender<lb_proto::v1::Event>,
    /// The VIP addresses the BGP speaker was last told to announce.
    pub announced: tokio::sync::watch::Receiver<BTreeSet<IpAddr>>,
    /// Whether routes are announced at all (--bgp-routes).
    pub announcing: bool,
    /// Set on the first SIGTERM/SIGINT.
    pub shutting_down: bool,
}

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the dataplane cannot take this configuration: {0}")]
    Snapshot(#[from] lb_core::snapshot::SnapshotError),
    #[error("{0}; the change was undone")]
    Persist(String),
}

/// A change's acknowledgement: ready once the state file holds it.
pub struct Commit(Option<tokio::sync::oneshot::Receiver<Result<(), String>>>);
// (None: nothing to wait for.)

impl Commit {
    pub async fn durable(self) -> Result<(), ChangeError> {
        let Some(rx) = self.0 else {
            return Ok(());
        };
        match rx.await {
            Ok(r) => r.map_err(ChangeError::Persist),
            Err(_) => Err(ChangeError::Persist("lbd is stopping".into())),
        }
    }
}

impl Control {
    /// Apply a change to a copy of the state and check that the dataplane
    /// can take it (a refused change leaves everything as it was); then make
    /// it current and queue it. The committer publishes one snapshot and
    /// writes the state file once for all changes queued together (group
    /// commit); the caller acknowledges a change once [`Commit::durable`],
    /// and a failed write undoes them all.
    pub fn change<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut State) -> Result<T, StateError>,
    ) -> Result<(T, Commit), ChangeError> {
        let mut next = self.state.clone();
        let out = f(&mut next)?;
        Snapshot::check(&self.spec(&next))?;
        self.state = next;
        self.neigh.set_wanted(self.state.backend_addresses());
        // The next snapshot published is the first to hold it.
        let generation = self.generation + 1;
        info!(generation, what, "configuration changed");
        self.emit(lb_proto::v1::event::Kind::Config(
            lb_proto::v1::ConfigChanged {
                generation,
                what: what.to_string(),
            },
        ));
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commits.push(tx);
        self.commit_wanted.notify_one();
        Ok((out, Commit(Some(rx))))
    }

    /// The state file could not be written: go back to what it holds and
    /// fail every change not yet acknowledged.
    fn undo_uncommitted(
        &mut self,
        reason: &str,
        batch: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) {
        tracing::error!(
            reason,
            "state file not written; undoing the changes since the last write"
        );
        self.state = self.durable.clone();
        self.neigh.set_wanted(self.state.backend_addresses());
        self.republish();
        self.emit(lb_proto::v1::event::Kind::Config(
            lb_proto::v1::ConfigChanged {
                generation: self.generation,
                what: format!("undone: {reason}"),
            },
        ));
        for tx in batch.into_iter().chain(std::mem::take(&mut self.commits)) {
            let _ = tx.send(Err(reason.to_string()));
        }
    }

    fn emit(&self, kind: lb_proto::v1::event::Kind) {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // No subscriber is not an error.
        let _ = self.events.send(lb_proto::v1::Event {
            time_ms,
            kind: Some(kind),
        });
    }

    /// The snapshot of `state` as the dataplane must see it: resolved MACs
    /// filled in, backends failing their health checks down.
    fn build_snapshot(&self, state: &State) -> Result<Snapshot, lb_core::snapshot::SnapshotError> {
        Snapshot::build_from(&self.spec(state), Some(&self.publisher.current()))
    }

    fn spec(&self, state: &State) -> lb_core::snapshot::SnapshotSpec {
        let mut spec = state.to_spec(self.generation + 1, self.mac, |a| self.neigh.mac(a));
        for v in &mut spec.vips {
            for b in &mut v.backends {
                if self
                    .health
                    .get(&(v.key, b.addr))
                    .is_some_and(|h| !h.healthy)
                {
                    b.state = lb_core::snapshot::BackendState::Down;
                }
            }
        }
        spec
    }

    /// Publish the current state again (health or a MAC changed; the state
    /// file does not).
    fn republish(&mut self) -> bool {
        match self.build_snapshot(&self.state) {
            Ok(s) => {
                self.generation += 1;
                self.publisher.publish(s, dpdk::rdtsc());
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot publish; keeping the current snapshot");
                false
            }
        }
    }

    /// A health check's verdict changed (or was first given).
    pub fn set_health(&mut self, vip: VipKey, addr: IpAddr, status: health::Status) {
        let was = self.health.insert((vip, addr), status.clone());
        let changed = was.as_ref().is_none_or(|w| w.healthy != status.healthy);
        if changed && was.is_some() {
            if status.healthy {
                info!(%vip, backend = %addr, detail = status.detail, "backend up");
            } else {
                tracing::warn!(%vip, backend = %addr, detail = status.detail, "backend down");
            }
            self.republish();
            let health = if status.healthy {
                lb_proto::v1::Health::Healthy
            } else {
                lb_proto::v1::Health::Unhealthy
            };
            self.emit(lb_proto::v1::event::Kind::Backend(
                lb_proto::v1::BackendHealthChanged {
                    vip: Some(grpc::pb_key(&vip)),
                    address: addr.to_string(),
                    health: health as i32,
                    detail: status.detail.clone(),
                },
            ));
        }
    }

    /// The VIP addresses this instance can serve now (see `announce`).
    fn servable(&self) -> BTreeSet<IpAddr> {
        announce::servable(&self.state, |vip, addr| {
            self.health
                .get(&(*vip, *addr))
                .is_some_and(|h| h.healthy && h.passed)
        })
    }

    /// The MAC a backend is forwarded to: static, resolved, or none yet.
    pub fn effective_mac(&self, addr: &IpAddr, fixed: Option<MacAddr>) -> Option<MacAddr> {
        fixed.or_else(|| self.neigh.mac(addr))
    }

    /// Take in what workers learned, ask for what is due, and publish a new
    /// snapshot when a backend's MAC changed.
    fn resolve_neighbors(&mut self, now: u32) {
        let mut changed = false;
        while let Some((ip, mac)) = self.learned.pop() {
            if self.neigh.learn(ip, mac, now) {
                info!(%ip, %mac, "backend resolved");
                changed = true;
            }
        }
        let (due, forgotten) = self.neigh.due(now);
        for ip in due {
            let _ = self.requests.push(ip);
        }
        if changed || forgotten {
            self.republish();
        }
    }
}

/// Publishes the changes queued by [`Control::change`] and writes the state
/// file for them: one snapshot and one write for all that arrived meanwhile,
/// the write off the runtime's thread (the API goes on serving); then
/// acknowledges them. Drains the queue before lbd stops.
async fn committer(control: &Mutex<Control>, stop: &AtomicBool) {
    let wanted = Arc::clone(&control.lock().expect("control lock").commit_wanted);
    loop {
        tokio::select! {
            _ = wanted.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let (state, path, batch) = {
            let mut c = control.lock().expect("control lock");
            if c.commits.is_empty() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
            let batch = std::mem::take(&mut c.commits);
            // One snapshot for the batch (tables of untouched VIPs reused).
            if !c.republish() {
                c.undo_uncommitted("the dataplane refused the configuration", batch);
                continue;
            }
            let Some(path) = c.state_path.clone() else {
                for tx in batch {
                    let _ = tx.send(Ok(()));
                }
                continue;
            };
            (c.state.clone(), path, batch)
        };
        let written = tokio::task::spawn_blocking(move || {
            state
                .save(&path)
                .map(|()| state)
                .map_err(|e| format!("writing the state file {}: {e}", path.display()))
        })
        .await
        .unwrap_or_else(|e| Err(format!("writing the state file: {e}")));
        let mut c = control.lock().expect("control lock");
        match written {
            Ok(state) => {
                c.durable = state;
                for tx in batch {
                    let _ = tx.send(Ok(()));
                }
            }
            Err(reason) => c.undo_uncommitted(&reason, batch),
        }
    }
}

/// A failed route announcement is tried again after this long.
const ROUTE_RETRY: Duration = Duration::from_secs(1);
/// A worker whose heartbeat has not moved for this long is stalled: lbd
/// withdraws its routes (other instances take the traffic) until it moves.
const WORKER_STALL: Duration = Duration::from_secs(1);

/// What the monitor needs to stop gracefully and keep the routes right.
struct Watchdog<'a> {
    term: &'a AtomicBool,
    grace: Duration,
    routes: tokio::sync::watch::Sender<BTreeSet<IpAddr>>,
}

impl Watchdog<'_> {
    /// Ask for `wanted` to be announced; tells subscribers when it changes.
    fn announce(&self, wanted: BTreeSet<IpAddr>, reason: &str, control: &Control) {
        let changed = self.routes.send_if_modified(|current| {
            let differs = *current != wanted;
            *current = wanted.clone();
            differs
        });
        if changed && control.announcing {
            let shown: Vec<String> = wanted.iter().map(ToString::to_string).collect();
            info!(announced = ?shown, reason, "routes");
            control.emit(lb_proto::v1::event::Kind::Routes(
                lb_proto::v1::RoutesChanged {
                    announced: shown,
                    reason: reason.to_string(),
                },
            ));
        }
    }
}

/// Per worker: its last heartbeat and when it last moved.
fn stalled_workers(stats: &[WorkerStats], beats: &mut [(u64, Instant)], now: Instant) -> usize {
    let mut stalled = 0;
    for (w, (last, since)) in stats.iter().zip(beats.iter_mut()) {
        let beat = w.heartbeat.get();
        if beat != *last {
            *last = beat;
            *since = now;
        }
        if now - *since > WORKER_STALL {
            stalled += 1;
        }
    }
    stalled
}

/// Runs on the main lcore while workers poll: on a signal, withdraws the
/// routes and stops after the grace period; stops after `--exit-idle-ms`
/// without a received packet (for replaying a pcap); prints counters every
/// `--stats-interval-s`, resolves backend MACs, frees replaced snapshots,
/// and keeps the announced routes in line with what can be served.
async fn monitor(
    opts: &Options,
    stats: &[WorkerStats],
    stop: &AtomicBool,
    control_arc: &Arc<Mutex<Control>>,
    watchdog: Watchdog<'_>,
) {
    let control: &Mutex<Control> = control_arc;
    let start = Instant::now();
    let mut beats = vec![(0, start); stats.len()];
    let mut stop_at: Option<Instant> = None;
    let mut last_rx = 0;
    let mut last_change = start;
    let mut last_print = start;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut checks = health::Checks::default();
    let mut ticks = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        ticks += 1;
        let now = Instant::now();
        if stop_at.is_none() && watchdog.term.load(Ordering::Relaxed) {
            info!(
                grace_ms = watchdog.grace.as_millis() as u64,
                "stopping: routes withdrawn, forwarding until the grace period ends"
            );
            stop_at = Some(now + watchdog.grace);
        }
        if stop_at.is_some_and(|t| now >= t) {
            break;
        }
        let stalled = stalled_workers(stats, &mut beats, now);
        let wanted = {
            let mut c = control.lock().expect("control lock");
            c.resolve_neighbors(start.elapsed().as_secs() as u32);
            c.publisher.reap();
            c.shutting_down = stop_at.is_some();
            let (routes, reason) = if c.shutting_down {
                (BTreeSet::new(), "shutting down")
            } else if stalled > 0 {
                (BTreeSet::new(), "a worker is stalled")
            } else {
                let servable = c.servable();
                let reason = if servable.is_empty() {
                    "no VIP has a usable backend"
                } else {
                    "servable VIPs changed"
                };
                (servable, reason)
            };
            watchdog.announce(routes, reason, &c);
            (ticks % 10 == 1).then(|| c.state.checks())
        };
        if let Some(wanted) = wanted {
            checks.reconcile(wanted, control_arc);
        }
        let total: Counters = stats.iter().map(WorkerStats::read).sum();
        if total.rx_packets != last_rx {
            last_rx = total.rx_packets;
            last_change = now;
        }
        if let Some(idle) = opts.exit_idle_ms {
            if now - last_change >= Duration::from_millis(idle) {
                info!(
                    idle_ms = idle,
                    "no packet received for the idle period: stopping"
                );
                break;
            }
        }
        if let Some(every) = opts.stats_interval_s {
            if now - last_print >= Duration::from_secs(every) {
                last_print = now;
                info!(
                    rx = total.rx_packets,
                    tx = total.tx_packets,
                    forwarded = total.forwarded,
                    dropped = total.dropped(),
                    active_flows = total.active_flows,
                    "counters"
                );
            }
        }
    }
    // Whatever ended the loop, nothing is announced any more; the speaker
    // applies this last set and returns once `watchdog.routes` is dropped.
    watchdog.announce(
        BTreeSet::new(),
        "stopped",
        &control.lock().expect("control lock"),
    );
    stop.store(true, Ordering::SeqCst);
}

fn report(
    opts: &Options,
    lcores: &[u32],
    per_worker: &[Counters],
    mac: MacAddr,
    snap: &Snapshot,
    stats: &[WorkerStats],
) {
    let total: Counters = per_worker.iter().copied().sum();
    if opts.json {
        let workers: Vec<serde_json::Value> = lcores
            .iter()
            .zip(per_worker)
            .map(|(l, c)| {
                let mut v = counters_json(c);
                v["lcore"] = (*l).into();
                v
            })
            .collect();
        let out = serde_json::json!({
            "port": opts.port,
            "port_mac": mac.to_string(),
            "total": counters_json(&total),
            "workers": workers,
            "vips": backends_json(snap, stats)["vips"],
        });
        println!("{out}");
        return;
    }
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10}",
        "worker", "rx", "tx", "forwarded", "new_flows", "arp", "nd", "dropped"
    );
    let rows = lcores
        .iter()
        .map(|l| format!("lcore {l}"))
        .zip(per_worker.iter().copied());
    for (name, c) in rows.chain(std::iter::once(("total".to_string(), total))) {
        println!(
            "{:<8} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>10}",
            name,
            c.rx_packets,
            c.tx_packets,
            c.forwarded,
            c.new_flows,
            c.arp_replies,
            c.nd_adverts,
            c.dropped()
        );
    }
    let reasons: Vec<String> = DropReason::ALL
        .iter()
        .filter(|r| total.drop_count(**r) > 0)
        .map(|r| format!("{}={}", r.as_str(), total.drop_count(*r)))
        .collect();
    if !reasons.is_empty() {
        println!("drops: {}", reasons.join(" "));
    }
    print_backends(snap, stats);
}

/// Per-backend traffic summed over workers, and per-VIP sums of those.
fn backend_totals(snap: &Snapshot, stats: &[WorkerStats]) -> Vec<(u16, [u64; 3])> {
    snap.backends()
        .map(|(slot, _)| {
            let mut t = [0u64; 3];
            for w in stats {
                let lb_core::stats::BackendTotals {
                    packets: p,
                    bytes: b,
                    new_flows: n,
                } = w.backend(slot);
                t[0] += p;
                t[1] += b;
                t[2] += n;
            }
            (slot, t)
        })
        .collect()
}

fn backends_json(snap: &Snapshot, stats: &[WorkerStats]) -> serde_json::Value {
    let totals = backend_totals(snap, stats);
    let vips: Vec<serde_json::Value> = snap
        .vips()
        .iter()
        .map(|v| {
            let backends: Vec<serde_json::Value> = v
                .backends
                .iter()
                .filter_map(|&slot| {
                    let b = snap.backend(slot)?;
                    let t = totals.iter().find(|(s, _)| *s == slot)?.1;
                    Some(serde_json::json!({
                        "address": b.addr.to_string(),
                        "mac": b.mac.map(|m| m.to_string()),
                        "state": format!("{:?}", b.state).to_lowercase(),
                        "weight": b.weight,
                        "packets": t[0], "bytes": t[1], "new_flows": t[2],
                    }))
                })
                .collect();
            let sum = |k: &str| {
                backends
                    .iter()
                    .map(|b| b[k].as_u64().unwrap_or(0))
                    .sum::<u64>()
            };
            serde_json::json!({
                "vip": v.key.to_string(),
                "packets": sum("packets"), "bytes": sum("bytes"), "new_flows": sum("new_flows"),
                "backends": backends,
            })
        })
        .collect();
    serde_json::json!({ "vips": vips })
}

fn print_backends(snap: &Snapshot, stats: &[WorkerStats]) {
    let totals = backend_totals(snap, stats);
    for v in snap.vips() {
        println!("vip {}", v.key);
        for &slot in &v.backends {
            let (Some(b), Some((_, t))) =
                (snap.backend(slot), totals.iter().find(|(s, _)| *s == slot))
            else {
                continue;
            };
            let mac = b
                .mac
                .map_or_else(|| "unresolved".to_string(), |m| m.to_string());
            println!(
                "  {:<24} {:<18} {:<9} weight {:<4} {:>10} pkts {:>12} bytes {:>8} new flows",
                b.addr.to_string(),
                mac,
                format!("{:?}", b.state).to_lowercase(),
                b.weight,
                t[0],
                t[1],
                t[2]
            );
        }
    }
}

fn counters_json(c: &Counters) -> serde_json::Value {
    let drops: serde_json::Map<String, serde_json::Value> = DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_owned(), c.drop_count(*r).into()))
        .collect();
    serde_json::json!({
        "rx_packets": c.rx_packets,
        "rx_bytes": c.rx_bytes,
        "tx_packets": c.tx_packets,
        "tx_bytes": c.tx_bytes,
        "tx_failed": c.tx_failed,
        "forwarded": c.forwarded,
        "icmp_to_backend": c.icmp_to_backend,
        "arp_replies": c.arp_replies,
        "nd_adverts": c.nd_adverts,
        "to_kernel": c.to_kernel,
        "from_kernel": c.from_kernel,
        "neigh_requests": c.neigh_requests,
        "neigh_learned": c.neigh_learned,
        "new_flows": c.new_flows,
        "flow_rejected": c.flow_rejected,
        "active_flows": c.active_flows,
        "drops": drops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_whose_heartbeat_stops_is_stalled_until_it_moves() {
        let stats = [WorkerStats::default(), WorkerStats::default()];
        let start = Instant::now();
        let mut beats = vec![(0, start); 2];
        let later = |ms| start + Duration::from_millis(ms);
        stats[0].heartbeat.set(1024);
        stats[1].heartbeat.set(1024);
        assert_eq!(stalled_workers(&stats, &mut beats, later(500)), 0);
        stats[0].heartbeat.set(2048);
        assert_eq!(stalled_workers(&stats, &mut beats, later(1200)), 0);
        // Worker 1 has not moved since 500 ms.
        assert_eq!(stalled_workers(&stats, &mut beats, later(1600)), 1);
        stats[1].heartbeat.set(3072);
        assert_eq!(stalled_workers(&stats, &mut beats, later(1700)), 0);
    }
}
