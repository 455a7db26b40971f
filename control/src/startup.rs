//! Process start-up, the part that needs EAL: the initial state, EAL, the
//! mbuf pool, the port and the exception interface (net_tap, set up with
//! `ethtool` and `ip`), and the workers on their lcores.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use dataplane::dpdk::{self, Eal, Mempool, Port, PortConfig, PortStats};
use dataplane::worker::{Neighbors, Worker};
use lb_core::packet::MacAddr;
use lb_core::stats::WorkerStats;
use tracing::info;

use crate::args::Options;
use crate::config::Config;
use crate::hub::Control;
use crate::state::DesiredState;

/// The state to start from: the state file's, or empty when there is none
/// yet (the first change creates it, so its directory must exist).
pub fn initial_state(path: Option<&Path>) -> Result<DesiredState> {
    match path {
        Some(path) if path.exists() => {
            DesiredState::load(&Config::load(path)?).with_context(|| format!("{}", path.display()))
        }
        Some(path) => {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            if !dir.is_dir() {
                bail!(
                    "state file {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
            Ok(DesiredState::default())
        }
        None => Ok(DesiredState::default()),
    }
}

/// EAL and the port lbd serves, with one RX/TX queue pair per worker lcore.
pub struct Dataplane {
    eal: &'static Eal,
    lcores: Vec<u32>,
    pool: &'static Mempool,
    port_config: PortConfig,
    port: Port,
    kernel: Option<Port>,
}

impl Dataplane {
    /// Start EAL with `eal_args` and configure the port (not started yet).
    pub fn open(eal_args: &[String], opts: &Options) -> Result<Dataplane> {
        let eal = Eal::init(eal_args).context("starting EAL")?;
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
        let port = Port::open(eal, &opts.port, &port_config, pool)
            .with_context(|| format!("configuring port {}", opts.port))?;
        Ok(Dataplane {
            eal,
            lcores,
            pool,
            port_config,
            port,
            kernel: None,
        })
    }

    /// The worker lcores, one per queue pair.
    pub fn lcores(&self) -> &[u32] {
        &self.lcores
    }

    pub fn mac(&self) -> MacAddr {
        MacAddr(self.port.mac())
    }

    /// The mbuf pool, for the metrics.
    pub fn pool(&self) -> &'static Mempool {
        self.pool
    }

    /// The port's counters and link, for the metrics while workers poll.
    pub fn port_reader(&self) -> dataplane::dpdk::PortReader {
        self.port.reader()
    }

    /// Create the exception interface (--kernel-iface) and start the port.
    pub fn start(&mut self, opts: &Options, vips: usize) -> Result<()> {
        let mac = self.mac();
        if let Some(name) = &opts.kernel_iface {
            self.kernel = Some(kernel_port(
                self.eal,
                name,
                mac,
                &self.port_config,
                self.pool,
            )?);
        }
        if let Some(device) = &opts.kernel_port {
            let config = PortConfig {
                promiscuous: false,
                ..self.port_config.clone()
            };
            let mut port = Port::open(self.eal, device, &config, self.pool)
                .with_context(|| format!("--kernel-port {device}"))?;
            port.start()
                .with_context(|| format!("starting --kernel-port {device}"))?;
            info!(device, "exception path to the kernel");
            self.kernel = Some(port);
        }
        self.port
            .start()
            .with_context(|| format!("starting port {}", opts.port))?;
        info!(port = opts.port, %mac, workers = self.lcores.len(), vips, flows_per_worker = opts.flows, "forwarding");
        Ok(())
    }

    /// Run one worker per worker lcore, each with its queue pair, its flow
    /// table and `stats[i]`, on the snapshots `control` publishes, and
    /// `main_lcore` here until it returns; then wait for the workers, which
    /// stop when `stop` is set (a worker that dies sets it too).
    pub fn run<R>(
        &self,
        opts: &Options,
        control: &Mutex<Control>,
        stats: &[WorkerStats],
        stop: &AtomicBool,
        main_lcore: impl FnOnce() -> R,
    ) -> Result<R> {
        let (learned, requests, conflicts) = {
            let mut c = control.lock().expect("control lock");
            c.set_vip_ping(!opts.no_vip_ping);
            c.set_mtu(opts.mtu);
            c.set_kernel_iface(
                self.kernel
                    .is_some()
                    .then(|| opts.kernel_iface.clone())
                    .flatten(),
            );
            (c.learned(), c.requests(), c.conflicts())
        };
        let tsc_hz = self.eal.tsc_hz();
        dpdk::scope(self.eal, |s| -> Result<R> {
            let spawned = (|| -> Result<()> {
                for (i, (&lcore, st)) in self.lcores.iter().zip(stats).enumerate() {
                    let queue = self.port.queue(i as u16)?;
                    let reader = control.lock().expect("control lock").reader();
                    let flows = dpdk::flow_table(opts.flows, opts.flow_config());
                    let mut worker = Worker::new(queue, reader, flows, st, tsc_hz)
                        .with_echo_rate(opts.vip_ping_rate)
                        .with_too_big_rate(opts.too_big_rate);
                    if let Some(k) = &self.kernel {
                        worker = worker.with_kernel(k.queue(i as u16)?);
                    }
                    let asks = (i == 0).then_some((&*requests, self.pool));
                    worker = worker.with_neighbors(Neighbors {
                        learned: &learned,
                        conflicts: Some(&conflicts),
                        requests: asks,
                    });
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
            Ok(main_lcore())
        })
        .context("running workers")?
    }

    /// Stop and close the port and the exception interface (which flushes
    /// what the device buffers, e.g. net_pcap); returns the port's counters.
    pub fn close(self) -> Result<PortStats> {
        let port_stats = self.port.stats().context("reading port stats")?;
        drop(self.port);
        drop(self.kernel);
        Ok(port_stats)
    }
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
