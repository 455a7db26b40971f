//! Active health checks: one task per checked backend, a TCP connect, an
//! HTTP GET or a UDP datagram every interval, `fall` consecutive failures
//! take the backend down and `rise` consecutive successes bring it back.
//! Checks are plain sockets of the host, so they leave through the
//! exception interface onto the data network. A check via the VIP decides
//! on the DR path and checks the real address beside it, so an operator
//! sees "server up, VIP path broken". A backend counts as healthy until its
//! checks say otherwise, so a restart does not take every backend out of
//! service.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::state::{CheckKind, CheckVia, HealthCheck};
use lb_core::snapshot::VipKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::hub::Control;

/// A backend's health as the checks see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub healthy: bool,
    /// The last check's outcome, for operators.
    pub detail: String,
    pub successes: u32,
    pub failures: u32,
    /// Passed a check since lbd started: only then does the backend count
    /// for announcing its VIP (a restarted lbd attracts no traffic before).
    pub passed: bool,
    /// The path that decides (`Auto` resolved).
    pub via: CheckVia,
    /// The last check to the backend's own address.
    pub real: Option<PathResult>,
    /// The last check along the DR path; `None` for a check via the real address.
    pub vip_path: Option<PathResult>,
}

/// One path's last outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathResult {
    pub ok: bool,
    pub detail: String,
}

impl PathResult {
    fn of(what: &str, r: &Result<(), String>) -> PathResult {
        match r {
            Ok(()) => PathResult {
                ok: true,
                detail: format!("{what} ok"),
            },
            Err(e) => PathResult {
                ok: false,
                detail: format!("{what} failed: {e}"),
            },
        }
    }
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

/// Failures in a check's first second (after lbd starts, or the backend
/// is added) do not take its backend down: the host resolves its
/// neighbours through a new exception interface in that time, and a
/// restarted lbd that took every backend down on one lost ARP request would
/// move every stream. A dead backend still goes down, a second later.
const START_GRACE: Duration = Duration::from_secs(1);

async fn run(vip: VipKey, addr: IpAddr, check: HealthCheck, control: Arc<Mutex<Control>>) {
    let started = tokio::time::Instant::now();
    let port = check.port.unwrap_or(vip.port);
    let timeout = Duration::from_millis(u64::from(check.timeout_ms));
    let mut tick = tokio::time::interval(Duration::from_millis(u64::from(check.interval_ms)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut status = Status {
        healthy: true,
        detail: "not checked yet".into(),
        successes: 0,
        failures: 0,
        passed: false,
        via: CheckVia::Real,
        real: None,
        vip_path: None,
    };
    let real_what = check.kind.to_string();
    let vip_what = format!("{} via vip", check.kind);
    loop {
        tick.tick().await;
        // Looked up on every check: the exception interface, and the slot
        // (the backend's current one) its source port names.
        let (via, sport) = match control.lock() {
            Ok(c) => {
                let via = check.via.effective(c.kernel_iface().is_some());
                (
                    via,
                    (via == CheckVia::Vip).then(|| c.vip_probe_port(&vip, &addr)),
                )
            }
            Err(_) => return,
        };
        let real = probe(SocketAddr::new(addr, port), &check.kind, timeout);
        let (result, real, vip_path) = match sport {
            None => {
                let r = real.await;
                (r.clone(), PathResult::of(&real_what, &r), None)
            }
            // Along the DR path: to VIP:port from the source port naming
            // this backend, which the dataplane steers to its MAC; the
            // real address beside it, for diagnosis.
            Some(sport) => {
                let along = async {
                    match sport {
                        Ok(sport) => {
                            let target = SocketAddr::new(vip.addr, port);
                            probe_from(target, Some(sport), &check.kind, timeout).await
                        }
                        Err(e) => Err(e),
                    }
                };
                let (r, v) = tokio::join!(real, along);
                let vp = PathResult::of(&vip_what, &v);
                (v, PathResult::of(&real_what, &r), Some(vp))
            }
        };
        status.via = via;
        status.detail = vip_path.as_ref().unwrap_or(&real).detail.clone();
        status.real = Some(real);
        status.vip_path = vip_path;
        match &result {
            Ok(()) => {
                status.successes = status.successes.saturating_add(1);
                status.failures = 0;
                status.passed = true;
                if !status.healthy && status.successes >= check.rise {
                    status.healthy = true;
                }
            }
            Err(_) => {
                status.failures = status.failures.saturating_add(1);
                status.successes = 0;
                if status.healthy
                    && status.failures >= check.fall
                    && started.elapsed() >= START_GRACE
                {
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
    probe_from(target, None, kind, timeout).await
}

/// A connection to `target`, from source port `sport` if given (a check
/// via the VIP). Bound with SO_REUSEADDR and closed with a reset (zero
/// linger), so the port is free for the next check at once: a TIME_WAIT
/// entry for the same four-tuple would refuse the next connect.
async fn connect(target: SocketAddr, sport: Option<u16>) -> std::io::Result<TcpStream> {
    let Some(sport) = sport else {
        return TcpStream::connect(target).await;
    };
    let (socket, any) = match target {
        SocketAddr::V4(_) => (
            TcpSocket::new_v4()?,
            IpAddr::from(std::net::Ipv4Addr::UNSPECIFIED),
        ),
        SocketAddr::V6(_) => (
            TcpSocket::new_v6()?,
            IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED),
        ),
    };
    socket.set_reuseaddr(true)?;
    socket.set_zero_linger()?;
    socket.bind(SocketAddr::new(any, sport))?;
    socket.connect(target).await
}

/// One datagram to `target` (from source port `sport`, if given), one back.
/// The socket is connected, so an ICMP port unreachable fails the receive
/// at once ("refused") rather than at the timeout.
async fn udp_exchange(target: SocketAddr, sport: Option<u16>, payload: &str) -> Result<(), String> {
    let any: IpAddr = match target {
        SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
    };
    let local = SocketAddr::new(any, sport.unwrap_or(0));
    // Nothing lingers after a UDP socket closes: the probe port binds
    // again at the next interval without SO_REUSEADDR.
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| format!("bind {local}: {e}"))?;
    socket
        .connect(target)
        .await
        .map_err(|e| format!("connect {target}: {e}"))?;
    socket
        .send(payload.as_bytes())
        .await
        .map_err(|e| format!("send to {target}: {e}"))?;
    let mut buf = [0u8; 2048];
    socket
        .recv(&mut buf)
        .await
        .map(|_| ())
        .map_err(|e| format!("receive from {target}: {e}"))
}

/// [`probe`] from source port `sport`, if given. The HTTP `Host:` is the
/// target's address: the VIP for a check via the VIP.
pub async fn probe_from(
    target: SocketAddr,
    sport: Option<u16>,
    kind: &CheckKind,
    timeout: Duration,
) -> Result<(), String> {
    if let CheckKind::Udp { payload } = kind {
        return match tokio::time::timeout(timeout, udp_exchange(target, sport, payload)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
        };
    }
    let attempt = async {
        let mut stream = connect(target, sport).await.map_err(|e| match sport {
            Some(p) => format!("connect {target} from port {p}: {e}"),
            None => format!("connect {target}: {e}"),
        })?;
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
        match http_status(&head[..len]) {
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

/// The status code of an HTTP response's status line (`HTTP/1.x NNN ...`),
/// from the first bytes of the answer.
pub fn http_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let mut words = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    if !words.next()?.starts_with(b"HTTP/") {
        return None;
    }
    let code = words.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) || code[0] == b'0' {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
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

    /// A check via the VIP needs the exception interface, and names its
    /// backend by the slot.
    #[test]
    fn a_check_via_the_vip_says_why_it_cannot_run() {
        use crate::state::{BackendSettings, DesiredState};
        use lb_core::packet::MacAddr;
        use lb_core::snapshot::Proto;
        let vip = VipKey {
            addr: "198.51.100.10".parse().unwrap(),
            port: 80,
            proto: Proto::Tcp,
        };
        let be: IpAddr = "192.0.2.11".parse().unwrap();
        let mut s = DesiredState::default();
        s.create_vip(vip, None).unwrap();
        s.add_backend(&vip, be, BackendSettings::default()).unwrap();
        let slot = s.vips()[&vip].backends[&be].id.slot;
        let mut c = Control::new(s, MacAddr([2, 0, 0, 0, 0, 1]), || 0).unwrap();
        let e = c.vip_probe_port(&vip, &be).unwrap_err();
        assert!(e.contains("without --kernel-iface"), "{e}");
        c.set_kernel_iface(Some("lbd0".into()));
        assert_eq!(
            c.vip_probe_port(&vip, &be),
            Ok(lb_core::forward::PROBE_PORT_BASE + slot)
        );
        let other: IpAddr = "192.0.2.12".parse().unwrap();
        assert!(c.vip_probe_port(&vip, &other).is_err());
    }

    /// A check via the VIP leaves from the source port it is given, again
    /// and again (no TIME_WAIT on our side blocks the next one), and its
    /// HTTP `Host:` is the target.
    #[test]
    fn probes_from_a_fixed_source_port_repeat() {
        rt().block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok((mut s, peer)) = l.accept().await {
                    let mut buf = [0u8; 512];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let _ = tx.send((peer.port(), req));
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await;
                }
            });
            let http = CheckKind::Http {
                path: "/health".into(),
                status: 200,
            };
            let sport = lb_core::forward::probe_port(7).unwrap();
            for _ in 0..3 {
                let r = probe_from(addr, Some(sport), &http, Duration::from_millis(500)).await;
                assert_eq!(r, Ok(()));
                let (port, req) = rx.recv().await.unwrap();
                assert_eq!(port, sport);
                assert!(req.contains("Host: 127.0.0.1\r\n"), "{req}");
            }
            for _ in 0..3 {
                let r = probe_from(
                    addr,
                    Some(sport),
                    &CheckKind::Tcp,
                    Duration::from_millis(500),
                )
                .await;
                assert_eq!(r, Ok(()));
            }
        });
    }

    /// A UDP check passes on any datagram back, from a fixed source port
    /// again and again; a port nobody serves fails at once (ICMP port
    /// unreachable), a silent one at the timeout.
    #[test]
    fn udp_probes() {
        rt().block_on(async {
            let echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = echo.local_addr().unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while let Ok((n, peer)) = echo.recv_from(&mut buf).await {
                    let _ = tx.send((peer.port(), buf[..n].to_vec()));
                    let _ = echo.send_to(&buf[..n], peer).await;
                }
            });
            let udp = CheckKind::Udp {
                payload: "PING".into(),
            };
            let t = Duration::from_millis(500);
            let sport = lb_core::forward::probe_port(9).unwrap();
            for _ in 0..3 {
                assert_eq!(probe_from(addr, Some(sport), &udp, t).await, Ok(()));
                assert_eq!(rx.recv().await.unwrap(), (sport, b"PING".to_vec()));
            }
            assert_eq!(probe(addr, &udp, t).await, Ok(()));
            let closed = tokio::net::UdpSocket::bind("127.0.0.1:0")
                .await
                .unwrap()
                .local_addr()
                .unwrap();
            let e = probe(closed, &udp, t).await.unwrap_err();
            assert!(e.contains("refused"), "{e}");
            let mute = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let e = probe(mute.local_addr().unwrap(), &udp, Duration::from_millis(200))
                .await
                .unwrap_err();
            assert!(e.contains("no answer within 200 ms"), "{e}");
        });
    }

    #[test]
    fn status_lines() {
        assert_eq!(http_status(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(http_status(b"HTTP/1.0 200"), Some(200));
        for no in [
            &b""[..],
            b"HTTP/1.1",
            b"HTTP/1.1 20",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 +20 OK",
            b"HTTP/1.1 002 OK",
            b"SSH-2.0 200 x",
            b"\nHTTP/1.1 200 OK",
        ] {
            assert_eq!(http_status(no), None, "{:?}", String::from_utf8_lossy(no));
        }
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
