//! systemd's notification protocol (`Type=notify`), when `NOTIFY_SOCKET`
//! is set: `READY=1` once lbd serves (the port up, the API listening),
//! `WATCHDOG=1` at half of `WatchdogSec` but only while every worker polls
//! (a stalled worker starves the watchdog and systemd restarts lbd),
//! `RELOADING=1` / `READY=1` around a SIGHUP reload, `STOPPING=1` on
//! SIGTERM. Without `NOTIFY_SOCKET` each call does nothing.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// Half the watchdog interval systemd asked for, if it asked.
    ping_every: Option<Duration>,
    last_ping: Option<Instant>,
    ready: bool,
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "systemd notification");
    }
}

impl Notifier {
    pub fn from_env() -> Notifier {
        let mut usec = 0;
        let ping_every =
            sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec / 2));
        Notifier {
            ping_every,
            last_ping: None,
            ready: false,
        }
    }

    /// Once per monitor round: ready the first time, then the watchdog
    /// while `workers_alive`.
    pub fn tick(&mut self, now: Instant, workers_alive: bool, status: impl FnOnce() -> String) {
        if !self.ready {
            self.ready = true;
            let status = status();
            send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        }
        let Some(every) = self.ping_every else {
            return;
        };
        if workers_alive && self.last_ping.is_none_or(|t| now - t >= every) {
            self.last_ping = Some(now);
            send(&[NotifyState::Watchdog]);
        }
    }

    pub fn reloading(&self) {
        send(&[NotifyState::Reloading]);
    }

    pub fn reloaded(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    pub fn stopping(&self) {
        send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}
