//! Route announcement: which VIP addresses this instance offers to the
//! routers, and handing that set to a BGP speaker (BIRD 2 by default).
//!
//! lbd speaks no BGP itself. It writes the announced set as BIRD static
//! protocols (`lbd_vips4`, `lbd_vips6`) into a file that the operator's
//! `bird.conf` includes, then runs a reload command (`birdc configure` by
//! default). BIRD reconfigures a static protocol without restarting its
//! BGP sessions, so a change is one UPDATE to each peer. Any other speaker
//! works through the same two knobs: a file of the announced prefixes and a
//! command run after each change (README, "Several instances behind ECMP").
//!
//! A VIP address is announced while at least one of its services can take
//! a new flow: a backend that is up (not draining or down), weight above 0,
//! and healthy by a check it has passed since lbd started (or unchecked).
//! Nothing is announced while a worker is stalled or lbd is shutting down.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lb_core::snapshot::{BackendState, VipKey};
use tokio::sync::watch;

use crate::state::DesiredState;

/// The VIP addresses with a service that can take new flows. `healthy`
/// says whether a backend with a health check has passed it (backends
/// without a check count as healthy).
pub fn servable(
    state: &DesiredState,
    healthy: impl Fn(&VipKey, &IpAddr) -> bool,
) -> BTreeSet<IpAddr> {
    state
        .vips()
        .iter()
        .filter(|(key, vip)| {
            vip.backends.iter().any(|(addr, b)| {
                b.settings.state() == BackendState::Up
                    && b.settings.weight > 0
                    && (b.settings.check.is_none() || healthy(key, addr))
            })
        })
        .map(|(key, _)| key.addr)
        .collect()
}

/// The BIRD 2 configuration fragment announcing `addrs` (host routes).
/// Both protocols are always present, empty or not, so a reconfiguration
/// never removes a protocol (which would restart it).
pub fn bird_config(addrs: &BTreeSet<IpAddr>) -> String {
    let mut out = String::from(
        "# Written by lbd (--bgp-routes): the VIP addresses it can serve now.\n\
         # Include it from bird.conf and export these routes to the BGP peers.\n",
    );
    for (name, channel, v6) in [("lbd_vips4", "ipv4", false), ("lbd_vips6", "ipv6", true)] {
        out.push_str(&format!("protocol static {name} {{\n    {channel};\n"));
        for a in addrs.iter().filter(|a| a.is_ipv6() == v6) {
            let len = if v6 { 128 } else { 32 };
            out.push_str(&format!("    route {a}/{len} blackhole;\n"));
        }
        out.push_str("}\n");
    }
    out
}

/// A reload command that takes longer is killed (and retried).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how the announced set goes.
#[derive(Debug, Clone)]
pub struct Speaker {
    /// The file written on every change (atomically: temporary file, rename).
    pub routes_file: PathBuf,
    /// Run with `sh -c` after each write; None: only the file is written.
    pub reload: Option<String>,
}

/// Why handing the set to the speaker failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("running {command:?}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command:?} failed ({status}): {output}")]
    Reload {
        command: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

impl Speaker {
    /// Write the routes file and run the reload command.
    pub async fn apply(&self, addrs: &BTreeSet<IpAddr>) -> Result<(), SpeakerError> {
        crate::persist::write_durably(&self.routes_file, bird_config(addrs).as_bytes()).map_err(
            |source| SpeakerError::Write {
                path: self.routes_file.display().to_string(),
                source,
            },
        )?;
        let Some(command) = &self.reload else {
            return Ok(());
        };
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(RELOAD_TIMEOUT, run)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
            .map_err(|source| SpeakerError::Spawn {
                command: command.clone(),
                source,
            })?;
        let output = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        // birdc exits 0 even when the configuration is refused; it says so.
        if !out.status.success() || output.contains("rror") {
            return Err(SpeakerError::Reload {
                command: command.clone(),
                status: out.status,
                output: output.trim().to_string(),
            });
        }
        Ok(())
    }

    /// Apply every set sent on `wanted` until the sender goes away, the last
    /// one included; a failed apply is retried every `retry` (the speaker
    /// may start after lbd). `done` gets each set once it is applied.
    pub async fn run(
        self,
        mut wanted: watch::Receiver<BTreeSet<IpAddr>>,
        done: watch::Sender<BTreeSet<IpAddr>>,
        retry: Duration,
    ) {
        loop {
            let set = wanted.borrow_and_update().clone();
            match self.apply(&set).await {
                Ok(()) => {
                    done.send_replace(set);
                    if wanted.changed().await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "route announcement not applied; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        changed = wanted.changed() => {
                            if changed.is_err() {
                                // Stopping: one last attempt for the final set.
                                let set = wanted.borrow().clone();
                                if let Err(e) = self.apply(&set).await {
                                    tracing::error!(error = %e, "final route withdrawal not applied");
                                }
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BackendSettings, CheckKind, HealthCheck};
    use lb_core::snapshot::Proto;

    fn key(addr: &str, port: u16) -> VipKey {
        VipKey {
            addr: addr.parse().unwrap(),
            port,
            proto: Proto::Tcp,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_vip_is_servable_with_one_usable_backend() {
        let mut s = DesiredState::default();
        let (web, dns) = (key("198.51.100.10", 80), key("198.51.100.20", 53));
        let v6 = key("2001:db8::10", 443);
        for k in [web, dns, v6] {
            s.create_vip(k, None).unwrap();
        }
        assert!(servable(&s, |_, _| true).is_empty(), "no backends");

        let checked = BackendSettings {
            check: Some(HealthCheck::new(CheckKind::Tcp)),
            ..BackendSettings::default()
        };
        s.add_backend(&web, ip("192.0.2.11"), checked.clone())
            .unwrap();
        s.add_backend(&v6, ip("2001:db8::11"), BackendSettings::default())
            .unwrap();
        let draining = BackendSettings {
            drain: true,
            ..BackendSettings::default()
        };
        s.add_backend(&dns, ip("192.0.2.12"), draining).unwrap();
        let zero = BackendSettings {
            weight: 0,
            ..BackendSettings::default()
        };
        s.add_backend(&dns, ip("192.0.2.13"), zero).unwrap();

        let all = servable(&s, |_, _| true);
        assert_eq!(
            all,
            BTreeSet::from([ip("198.51.100.10"), ip("2001:db8::10")]),
            "a draining or weight-0 backend takes no new flows"
        );
        let failing = servable(&s, |_, _| false);
        assert_eq!(
            failing,
            BTreeSet::from([ip("2001:db8::10")]),
            "unchecked backends count as healthy, checked ones by their check"
        );

        // A second service on the same address keeps the address announced.
        let web2 = key("198.51.100.10", 443);
        s.create_vip(web2, None).unwrap();
        s.add_backend(&web2, ip("192.0.2.14"), BackendSettings::default())
            .unwrap();
        assert!(servable(&s, |_, _| false).contains(&ip("198.51.100.10")));
    }

    #[test]
    fn bird_config_has_both_protocols_always() {
        let empty = bird_config(&BTreeSet::new());
        assert!(empty.contains("protocol static lbd_vips4 {\n    ipv4;\n}"));
        assert!(empty.contains("protocol static lbd_vips6 {\n    ipv6;\n}"));
        assert!(!empty.contains("    route "));
        let some = bird_config(&BTreeSet::from([ip("198.51.100.10"), ip("2001:db8::10")]));
        assert!(some.contains("    ipv4;\n    route 198.51.100.10/32 blackhole;\n}"));
        assert!(some.contains("    ipv6;\n    route 2001:db8::10/128 blackhole;\n}"));
    }

    #[tokio::test]
    async fn speaker_writes_the_file_and_reports_a_failing_reload() {
        let dir = std::env::temp_dir().join(format!("lbd-announce-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let routes_file = dir.join("vips.conf");
        let marker = dir.join("reloaded");
        let ok = Speaker {
            routes_file: routes_file.clone(),
            reload: Some(format!("touch {}", marker.display())),
        };
        ok.apply(&BTreeSet::from([ip("198.51.100.10")]))
            .await
            .unwrap();
        assert!(std::fs::read_to_string(&routes_file)
            .unwrap()
            .contains("route 198.51.100.10/32 blackhole;"));
        assert!(marker.exists(), "the reload command ran");

        let failing = Speaker {
            routes_file: routes_file.clone(),
            reload: Some("echo 'bird.conf:3:1 syntax error'".into()),
        };
        let e = failing.apply(&BTreeSet::new()).await.unwrap_err();
        assert!(
            matches!(e, SpeakerError::Reload { ref output, .. } if output.contains("syntax error")),
            "{e}"
        );
        let missing = Speaker {
            routes_file: dir.join("no-such-dir/vips.conf"),
            reload: None,
        };
        assert!(matches!(
            missing.apply(&BTreeSet::new()).await,
            Err(SpeakerError::Write { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
