//! `lbd`, the load balancer daemon: `lbd [EAL options] -- [lbd options]`.
//!
//! It starts EAL, one worker per worker lcore, each on its own RX/TX queue
//! pair of one port with its own flow table, and publishes the forwarding
//! snapshot built from the state file. Its control side (tokio, on the main
//! lcore) serves the gRPC API and metrics, runs health checks, resolves
//! backend MACs and announces the servable VIPs to a BGP speaker. The parts
//! are in the `control` library; this wires them.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use control::announce::Speaker;
use control::hub::Control;
use control::listeners::Listeners;
use control::monitor::{self, Watchdog, ROUTE_RETRY};
use control::startup::{self, Dataplane};
use control::{args, commit, grpc, metrics, report};
use lb_core::stats::{Counters, WorkerStats};
use tracing::info;

fn main() {
    if let Err(e) = run() {
        eprintln!("lbd: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (eal_args, opts) = args::parse(&argv)?;
    control::logging::init(opts.log_format);
    let state = startup::initial_state(opts.state.as_deref())?;
    // Bound before EAL starts, so a second lbd fails at once and cleanly.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the control runtime")?;
    let listeners = Listeners::bind(&rt, &opts)?;

    let mut dataplane = Dataplane::open(&eal_args, &opts)?;
    let lcores = dataplane.lcores().to_vec();
    let mac = dataplane.mac();
    let (wanted_routes, wanted_rx) = tokio::sync::watch::channel(BTreeSet::new());
    let (applied_tx, applied_routes) = tokio::sync::watch::channel(BTreeSet::new());
    let speaker = opts.bgp_routes.as_ref().map(|path| Speaker {
        routes_file: path.clone(),
        reload: Some(opts.bgp_reload.clone()),
    });
    // Shared with the workers and the API for the whole life of the process.
    let stats: Arc<[WorkerStats]> = lcores.iter().map(|_| WorkerStats::default()).collect();
    let mut hub = Control::new(state, mac, dataplane::dpdk::rdtsc)
        .context("configuration")?
        .with_state_file(opts.state.clone())
        .with_stats(Arc::clone(&stats));
    if speaker.is_some() {
        hub = hub.with_announcements(applied_routes);
    }
    let vips = hub.state().vips().len();
    let control = Arc::new(Mutex::new(hub));
    dataplane.start(&opts, vips)?;

    let stop = AtomicBool::new(false);
    let term = monitor::stop_signals()?;
    let reload = control::reload::reload_signal()?;
    let api = grpc::Api {
        control: Arc::clone(&control),
        stats: Arc::clone(&stats),
        lcores: lcores.clone(),
        port: opts.port.clone(),
        eal_args: eal_args.clone(),
    };
    let source = metrics::Source {
        control: Arc::clone(&control),
        stats: Arc::clone(&stats),
        lcores: lcores.clone(),
        port: Some((opts.port.clone(), dataplane.port_reader())),
        pool: Some(dataplane.pool()),
    };
    let (last_snapshot, ledger) = dataplane.run(&opts, &control, &stats, &stop, || {
        rt.block_on(async {
            let announcing = async {
                if let Some(speaker) = speaker {
                    speaker.run(wanted_rx, applied_tx, ROUTE_RETRY).await;
                }
            };
            let watchdog = Watchdog {
                term: &term,
                grace: opts.shutdown_grace(),
                routes: wanted_routes,
                reload: &reload,
            };
            tokio::join!(
                listeners.serve(api, source, &stop),
                monitor::monitor(&opts, &stats, &stop, &control, watchdog),
                announcing,
                commit::committer(&control, &stop)
            );
        });
        let c = control.lock().expect("control lock");
        (c.snapshot(), c.traffic().clone())
    })?;

    let per_worker: Vec<Counters> = stats.iter().map(WorkerStats::read).collect();
    let port_stats = dataplane.close()?;
    if let Some(path) = &opts.grpc_socket {
        let _ = std::fs::remove_file(path);
    }
    report::report(
        &opts,
        &lcores,
        &per_worker,
        mac,
        &last_snapshot,
        &report::Traffic {
            ledger: &ledger,
            stats: &stats,
        },
    );
    info!(
        rx = port_stats.rx_packets,
        tx = port_stats.tx_packets,
        missed = port_stats.rx_missed,
        "port counters"
    );
    Ok(())
}
