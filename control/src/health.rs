//! Active health checks: one task per checked backend, a TCP connect or an
//! HTTP GET every interval, `fall` consecutive failures take the backend
//! down and `rise` consecutive successes bring it back. Checks are plain
//! sockets of the host, so they leave through the exception interface onto
//! the data network. A backend counts as healthy until its checks say
//! otherwise, so a restart does not take every backend out of service.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::{CheckKind, HealthCheck};
use lb_core::snapshot::VipKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::hub::Control;

/// A backend's health as the checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub healthy: bool,
    /// The last check's outcome, for operators.
    pub detail: String,
    pub successes: u32,
    pub failures: u32,
    /// Passed a check since lbd started: only then does the backend count
    /// for announcing its VIP (a restarted lbd attracts no traffic before).
    pub passed: bool,
}

/// The running check tasks, kept in line with the state.
#[derive(Default)]
pub struct Checks {
    tasks: HashMap<(VipKey, IpAddr), (HealthCheck, JoinHandle<()>)>,
}

impl Checks {
    /// Start checks for new or changed backends, stop those of removed ones.
    pub fn reconcile(
        &mut self,
        wanted: Vec<(VipKey, IpAddr, HealthCheck)>,
        control: &Arc<Mutex<Control>>,
    ) {
        let keep: HashMap<(VipKey, IpAddr), HealthCheck> =
            wanted.into_iter().map(|(v, a, c)| ((v, a), c)).collect();
        self.tasks.retain(|key, (check, task)| {
            let same = keep.get(key) == Some(check);
            if !same {
                task.abort();
                if let Ok(mut c) = control.lock() {
                    c.forget_health(&key.0, &key.1);
                }
            }
            same
        });
        for (key, check) in keep {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.tasks.entry(key) {
                let task = tokio::spawn(run(key.0, key.1, check.clone(), Arc::clone(control)));
                slot.insert((check, task));
            }
        }
    }
}

impl Drop for Checks {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

async fn run(vip: VipKey, addr: IpAddr, check: HealthCheck, control: Arc<Mutex<Control>>) {
    let target = SocketAddr::new(addr, check.port.unwrap_or(vip.port));
    let timeout = Duration::from_millis(u64::from(check.timeout_ms));
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(check.interval_ms)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status = Status {
        healthy: true,
        detail: "not checked yet".into(),
        successes: 0,
        failures: 0,
        passed: false,
    };
    loop {
        tick.tick().await;
        let result = probe(target, &check.kind, timeout).await;
        match &result {
            Ok(()) => {
                status.successes = status.successes.saturating_add(1);
                status.failures = 0;
                status.passed = true;
                status.detail = format!("{} ok", check.kind);
                if !status.healthy && status.successes >= check.rise {
                    status.healthy = true;
                }
            }
            Err(e) => {
                status.failures = status.failures.saturating_add(1);
                status.successes = 0;
                status.detail = format!("{} failed: {e}", check.kind);
                if status.healthy && status.failures >= check.fall {
                    status.healthy = false;
                }
            }
        }
        match control.lock() {
            Ok(mut c) => c.set_health(vip, addr, status.clone()),
            Err(_) => return,
        }
    }
}

/// One check: Ok when the backend answered as it should.
pub async fn probe(target: SocketAddr, kind: &CheckKind, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let mut stream = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect {target}: {e}"))?;
        let CheckKind::Http { path, status } = kind else {
            return Ok(());
        };
        let host = match target.ip() {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lbd-health\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let mut head = [0u8; 64];
        let mut len = 0;
        while len < 12 {
            let n = stream
                .read(&mut head[len..])
                .await
                .map_err(|e| format!("receive: {e}"))?;
            if n == 0 {
                break;
            }
            len += n;
        }
        let line = String::from_utf8_lossy(&head[..len]);
        let got = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok());
        match got {
            Some(code) if code == *status => Ok(()),
            Some(code) => Err(format!("HTTP {code}, expected {status}")),
            None => Err("no HTTP status line".into()),
        }
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// A one-shot HTTP server on loopback answering with `status`.
    async fn http_server(status: u16) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 512];
                let n = s.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    continue; // a TCP check: connect and close
                }
                assert!(String::from_utf8_lossy(&buf[..n]).starts_with("GET /health HTTP/1.0\r\n"));
                let _ = s
                    .write_all(
                        format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                    )
                    .await;
            }
        });
        addr
    }

    #[test]
    fn tcp_and_http_probes() {
        rt().block_on(async {
            let t = Duration::from_millis(500);
            let ok = http_server(200).await;
            let sick = http_server(503).await;
            let http = CheckKind::Http {
                path: "/health".into(),
                status: 200,
            };
            assert_eq!(probe(ok, &CheckKind::Tcp, t).await, Ok(()));
            assert_eq!(probe(ok, &http, t).await, Ok(()));
            assert_eq!(
                probe(sick, &http, t).await,
                Err("HTTP 503, expected 200".into())
            );
            // A port nobody listens on: refused.
            let closed = TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap()
                .local_addr()
                .unwrap();
            let e = probe(closed, &CheckKind::Tcp, t).await.unwrap_err();
            assert!(e.contains("connect"), "{e}");
            // A server that accepts and never answers: timed out.
            let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mute_addr = mute.local_addr().unwrap();
            let e = probe(mute_addr, &http, Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(e.contains("no answer within 200 ms"), "{e}");
            drop(mute);
        });
    }
}
