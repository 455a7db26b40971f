//! The monitor on the main lcore while workers poll: graceful stop on a
//! signal, the idle stop, periodic counters, neighbour resolution, health
//! check tasks, and the watchdog that withdraws the routes while a worker
//! is stalled.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use lb_core::stats::{Counters, WorkerStats};
use tracing::info;

use crate::args::Options;
use crate::health;
use crate::hub::Control;

/// The flag the first SIGINT or SIGTERM sets, for [`Watchdog::term`]: it
/// starts a graceful stop (the monitor), a second one ends the process at once.
pub fn stop_signals() -> Result<Arc<AtomicBool>> {
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(&term))
            .and_then(|_| signal_hook::flag::register(sig, Arc::clone(&term)))
            .context("installing signal handlers")?;
    }
    Ok(term)
}

/// A failed route announcement is tried again after this long.
pub const ROUTE_RETRY: Duration = Duration::from_secs(1);
/// A worker whose heartbeat has not moved for this long is stalled: lbd
/// withdraws its routes (other instances take the traffic) until it moves.
pub const WORKER_STALL: Duration = Duration::from_secs(1);

/// What the monitor needs to stop gracefully and keep the routes right.
pub struct Watchdog<'a> {
    /// Set by the first SIGTERM/SIGINT.
    pub term: &'a AtomicBool,
    /// How long lbd forwards once routes are withdrawn.
    pub grace: Duration,
    /// What the BGP speaker is to announce.
    pub routes: tokio::sync::watch::Sender<BTreeSet<IpAddr>>,
    /// Set by SIGHUP: reload the state file.
    pub reload: &'a AtomicBool,
}

impl Watchdog<'_> {
    /// Ask for `wanted` to be announced; tells subscribers when it changes.
    fn announce(&self, wanted: BTreeSet<IpAddr>, reason: &str, control: &Control) {
        let changed = self.routes.send_if_modified(|current| {
            let differs = *current != wanted;
            *current = wanted.clone();
            differs
        });
        if changed && control.announcing() {
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
pub fn stalled_workers(stats: &[WorkerStats], beats: &mut [(u64, Instant)], now: Instant) -> usize {
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
pub async fn monitor(
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
    let mut agents = crate::feedback::Agents::default();
    let mut vip_routes: Option<crate::vip_routes::VipRoutes> = None;
    let mut ticks = 0u64;
    let mut notifier = crate::notify::Notifier::from_env();
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
            notifier.stopping();
        }
        if stop_at.is_some_and(|t| now >= t) {
            break;
        }
        if crate::reload::requested(watchdog.reload) {
            info!("SIGHUP: reloading the state file");
            notifier.reloading();
            let (control, path) = (Arc::clone(control_arc), opts.state.clone());
            tokio::spawn(async move {
                let status = match crate::reload::reload(&control, path.as_deref()).await {
                    Ok(changes) => format!("reloaded: {} change(s)", changes.len()),
                    Err(reason) => format!("reload refused: {reason}"),
                };
                crate::notify::Notifier::from_env().reloaded(&status);
            });
        }
        let stalled = stalled_workers(stats, &mut beats, now);
        notifier.tick(now, stalled == 0, || {
            let c = control.lock().expect("control lock");
            format!("forwarding: {} VIP(s)", c.state().vips().len())
        });
        let wanted = {
            let mut c = control.lock().expect("control lock");
            c.resolve_neighbors(start.elapsed().as_secs() as u32);
            c.take_conflicts();
            c.reap();
            c.set_shutting_down(stop_at.is_some());
            c.set_stalled_workers(stalled);
            let (routes, reason) = if c.shutting_down() {
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
            // Every 100 ms: load feedback due, caps, the check and agent tasks.
            (ticks % 10 == 1).then(|| {
                c.flush_feedback(now);
                c.update_caps();
                (c.state().checks(), c.agents())
            })
        };
        if let Some((wanted, wanted_agents)) = wanted {
            checks.reconcile(wanted, control_arc);
            agents.reconcile(wanted_agents, control_arc);
        }
        // Once a second: the host's routes to the VIPs through the
        // exception interface (checks via the VIP), outside the lock.
        if ticks % 100 == 1 {
            let wanted = {
                let c = control.lock().expect("control lock");
                c.kernel_iface().map(|iface| {
                    let addrs: BTreeSet<IpAddr> = c.state().vips().keys().map(|k| k.addr).collect();
                    (iface.to_string(), c.mac(), addrs)
                })
            };
            if let Some((iface, mac, addrs)) = wanted {
                let routes = vip_routes
                    .get_or_insert_with(|| crate::vip_routes::VipRoutes::new(&iface, mac));
                for error in routes.reconcile(&addrs) {
                    tracing::warn!(%error, "VIP route for checks via the VIP");
                }
            }
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
