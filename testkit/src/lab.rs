//! Driving `scripts/lab.sh` from the end-to-end tests (dr_lab, ecmp_lab,
//! netns_lab in control/tests): one lab per test, removed when the test
//! ends, pass or fail. The namespaces, addresses and wait loops live in the
//! script only; this is how a test calls them and reads what they print.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub struct Lab {
    pub id: String,
    script: PathBuf,
    /// The lbd binary the lab runs (lbctl is beside it).
    lbd: PathBuf,
    /// Which lbd the lab commands address (LB=1 or 2).
    lb: u8,
    /// Only the lab itself tears down; instance views do not.
    owner: bool,
}

impl Lab {
    /// A lab of topology `topo` (flat, ecmp or tunnel) running the `lbd` binary at
    /// `lbd` (a test passes `env!("CARGO_BIN_EXE_lbd")`); torn down after
    /// `limit` even if the test hangs, so a hung step fails instead of
    /// blocking.
    pub fn up(lbd: impl AsRef<Path>, topo: &str, limit: Duration) -> Lab {
        let lab = Lab {
            id: format!("t{}", std::process::id() % 100_000),
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab.sh"),
            lbd: lbd.as_ref().to_path_buf(),
            lb: 1,
            owner: true,
        };
        assert!(
            lab.lbd.with_file_name("lbctl").exists(),
            "lbctl is missing beside {}: `cargo build --workspace` (make test does)",
            lab.lbd.display()
        );
        let (id, script) = (lab.id.clone(), lab.script.clone());
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            eprintln!("lab {id}: still running after {limit:?}; removing the lab");
            let _ = Command::new("bash")
                .arg(&script)
                .arg("down")
                .env("LAB_ID", &id)
                .status();
            std::process::exit(1);
        });
        let out = lab.command(&["up"]).env("LAB_TOPO", topo).output().unwrap();
        assert!(
            out.status.success(),
            "lab.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// The same lab, addressing lbd number `lb`.
    pub fn instance(&self, lb: u8) -> Lab {
        Lab {
            id: self.id.clone(),
            script: self.script.clone(),
            lbd: self.lbd.clone(),
            lb,
            owner: false,
        }
    }

    /// The lab's directory (state files, logs, captures).
    pub fn dir(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/lblab-{}", self.id))
    }

    fn suffix(&self) -> String {
        if self.lb == 1 {
            String::new()
        } else {
            self.lb.to_string()
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .args(args)
            .env("LAB_ID", &self.id)
            .env("LB", self.lb.to_string())
            .env("LBD", &self.lbd)
            .env("LBCTL", self.lbd.with_file_name("lbctl"))
            .env("QUIC_PEER", self.lbd.with_file_name("quic-peer"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run a lab command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_env(&[], args)
    }

    /// [`Lab::ok`] with environment variables for lab.sh (LAB_ORDER,
    /// LAB_WORKERS, ...).
    pub fn ok_env(&self, env: &[(&str, &str)], args: &[&str]) -> String {
        let out = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "lab.sh {args:?} {env:?} (lbd {}): {}{}",
            self.lb,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    }

    /// `lab.sh downloads n rate`, returned once all `n` have connected
    /// (curl's own trace says so), so what a test does next happens while
    /// the downloads run, however slowly the machine starts them. Read the
    /// result with [`downloads`].
    ///
    /// If they do not all connect within 20 s (lab.sh prints which did
    /// not, and the client's sockets), they are stopped and started once
    /// more; a second failure fails the test.
    pub fn spawn_downloads(&self, n: usize, rate: &str) -> Child {
        let count = n.to_string();
        let mut child = self.spawn(&["downloads", &count, rate]);
        let connected = first_line(&mut child);
        if connected == format!("connected {n}") {
            return child;
        }
        eprintln!(
            "lab {}: downloads: {connected:?}; starting them again",
            self.id
        );
        let _ = self.run(&["exec", "client", "pkill", "-f", "large[?]d="]);
        let _ = child.kill();
        let _ = child.wait();
        let mut child = self.spawn(&["downloads", &count, rate]);
        let connected = first_line(&mut child);
        assert_eq!(
            connected,
            format!("connected {n}"),
            "lab {}: downloads",
            self.id
        );
        child
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["lbctl", "--output", "json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{a:?}: {e}: {out}"))
    }

    /// A backend's entry of `lbctl health` (Null when it has none).
    pub fn health_of(&self, backend: &str) -> serde_json::Value {
        self.json(&["health"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"] == backend)
            .cloned()
            .unwrap_or_default()
    }

    /// A backend's entry of `lbctl health` for one VIP ("ADDR:PORT/PROTO").
    pub fn health_on(&self, vip: &str, backend: &str) -> serde_json::Value {
        self.json(&["health"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["vip"] == vip && h["address"] == backend)
            .cloned()
            .unwrap_or_default()
    }

    /// Until every one of `backends` (on `vip`, "ADDR:PORT/PROTO", or its
    /// first VIP) passed two checks in a row: healthy by a check, not by
    /// default (a backend counts as healthy until checked).
    pub fn wait_passing(&self, vip: Option<&str>, backends: &[&str], limit: Duration) {
        wait_until("backends passing their checks", limit, || {
            backends.iter().all(|b| {
                let h = match vip {
                    Some(v) => self.health_on(v, b),
                    None => self.health_of(b),
                };
                h["consecutive_successes"].as_u64().unwrap_or(0) >= 2
            })
        });
    }

    pub fn health(&self, backend: &str) -> String {
        self.health_of(backend)["health"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A counter summed over this lbd's workers.
    pub fn counter(&self, name: &str) -> u64 {
        self.json(&["stats"])["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w[name].as_u64().unwrap())
            .sum()
    }

    pub fn drops(&self) -> BTreeMap<String, u64> {
        let mut total = BTreeMap::new();
        for w in self.json(&["stats"])["workers"].as_array().unwrap() {
            for (k, v) in w["drops"].as_object().unwrap() {
                *total.entry(k.clone()).or_default() += v.as_u64().unwrap();
            }
        }
        total
    }

    /// This lbd's API socket.
    pub fn socket(&self) -> String {
        format!("{}/lbd{}.sock", self.dir().display(), self.suffix())
    }

    /// This lbd's Prometheus metrics.
    pub fn metrics(&self) -> String {
        self.ok(&["metrics"])
    }

    /// This lbd's stderr (its log) so far, every run of it.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join(format!("lbd{}.log", self.suffix())))
            .unwrap_or_default()
    }

    /// What this lbd's last run printed on stdout: with `lbd-start --json`,
    /// after `lbd-stop`, its final counters.
    pub fn report(&self) -> serde_json::Value {
        let out = std::fs::read_to_string(self.dir().join(format!("lbd{}.out", self.suffix())))
            .unwrap_or_default();
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("lbd's report: {e}: {out}\n{}", self.log()))
    }

    /// The health-check timing `configure` gives the backends.
    pub fn check(&self) -> Check {
        let options: Vec<String> = self
            .ok(&["check-options"])
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let value = |name: &str| -> u32 {
            let i = options
                .iter()
                .position(|o| o == name)
                .unwrap_or_else(|| panic!("no {name} in {options:?}"));
            options[i + 1].parse().unwrap()
        };
        Check {
            interval_ms: value("--interval"),
            timeout_ms: value("--timeout"),
            rise: value("--rise"),
            fall: value("--fall"),
            options: options.clone(),
        }
    }

    /// This lbd's events (`lbctl events`) from now on, until dropped.
    /// lbctl takes a moment to subscribe (nothing says when): start the
    /// watch well before what it must see, e.g. before starting the
    /// traffic of a scenario.
    pub fn events(&self) -> Events {
        // (Its complaint when lbd stops and closes the stream is no news.)
        let mut child = self
            .command(&["lbctl", "--output", "json", "events"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Events { child, rx }
    }

    fn logs(&self) -> String {
        // (The BIRD logs of the ecmp topology: sessions and BFD changes.)
        [
            "lbd.log",
            "lbd.out",
            "lbd2.log",
            "lbd2.out",
            "router/bird.log",
            "lb1/bird.log",
            "lb2/bird.log",
        ]
        .iter()
        .filter_map(|f| {
            let text = std::fs::read_to_string(self.dir().join(f)).ok()?;
            Some(format!("--- {f} ---\n{text}"))
        })
        .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        let _ = self.run(&["down"]);
    }
}

/// A backend health check's timing, as `lab.sh check-options` gives it.
#[derive(Debug, Clone)]
pub struct Check {
    pub interval_ms: u32,
    pub timeout_ms: u32,
    pub rise: u32,
    pub fall: u32,
    /// The lbctl options themselves (`--interval 200 ...`).
    pub options: Vec<String>,
}

impl Check {
    /// The earliest a backend can be marked down after its server dies:
    /// `fall` failed checks, a check every interval, so `fall - 1`
    /// intervals between the first and the last, less a timeout (the first
    /// to fail may have begun just before the server died).
    pub fn fastest_detection(&self) -> Duration {
        let ms = (self.fall.saturating_sub(1) * self.interval_ms).saturating_sub(self.timeout_ms);
        Duration::from_millis(u64::from(ms))
    }

    /// The latest, as configured: the next check comes within an interval,
    /// and each of `fall` may take its timeout.
    pub fn slowest_detection(&self) -> Duration {
        Duration::from_millis(u64::from(self.fall * self.interval_ms + self.timeout_ms))
    }
}

/// An `lbctl events` stream; its process is stopped on drop.
pub struct Events {
    child: Child,
    rx: mpsc::Receiver<serde_json::Value>,
}

impl Events {
    /// The next event for which `f` holds (earlier ones are skipped).
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(e) if f(&e) => return e,
                Ok(_) => {}
                Err(_) => panic!("no event: {what} within {limit:?}"),
            }
        }
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An event's time (lbd's clock, Unix milliseconds) as a SystemTime.
pub fn event_time(e: &serde_json::Value) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(e["time_ms"].as_u64().unwrap())
}

/// Per worker of an lbd report (or `lbctl stats` workers), the frames it
/// received that no outcome counted: every received frame is forwarded (a
/// backend's, ICMP errors included, encapsulated or not), answered (ARP
/// reply, neighbor advertisement, echo reply, ICMP too-big for a packet
/// that would not fit once encapsulated), passed to the host, taken as a VIP conflict
/// (dropped, counted as such), or dropped by a counted reason. Drops of
/// what the host sent (`host_dropped`) share the reasons but were never
/// received from the port. Empty when every worker's counters add up.
pub fn unaccounted(workers: &[serde_json::Value]) -> Vec<String> {
    let n = |w: &serde_json::Value, k: &str| w[k].as_u64().unwrap_or(0);
    workers
        .iter()
        .enumerate()
        .filter_map(|(i, w)| {
            let dropped: u64 = w["drops"]
                .as_object()
                .map(|d| d.values().filter_map(|v| v.as_u64()).sum())
                .unwrap_or(0)
                - n(w, "host_dropped");
            let outcomes = n(w, "forwarded")
                + n(w, "arp_replies")
                + n(w, "nd_adverts")
                + n(w, "echo_replies")
                + n(w, "too_big_sent")
                + n(w, "to_kernel")
                + n(w, "vip_conflicts")
                + dropped;
            let rx = n(w, "rx_packets");
            (rx != outcomes).then(|| {
                format!("worker {i}: received {rx}, counted {outcomes} (drops {dropped}): {w}")
            })
        })
        .collect()
}

/// Count of each backend in `lab.sh requests` output ("FAILED" included).
pub fn tally(out: &str) -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    for l in out.lines() {
        *t.entry(l.trim().to_string()).or_default() += 1;
    }
    t
}

/// One download as `lab.sh downloads` reports it.
#[derive(Debug)]
pub struct Download {
    pub exit: i32,
    pub status: String,
    pub size: u64,
    pub backend: String,
}

/// A line of a child's stdout, read byte by byte so the rest stays in the
/// pipe for [`downloads`].
fn first_line(child: &mut Child) -> String {
    let out = child.stdout.as_mut().expect("spawned with a piped stdout");
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

pub fn downloads(child: Child) -> Vec<Download> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Download {
                exit: f[0].parse().unwrap(),
                status: f.get(1).unwrap_or(&"").to_string(),
                size: f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                backend: f.get(3).unwrap_or(&"").to_string(),
            }
        })
        .collect()
}

pub const LARGE: u64 = 8 << 20; // lab.sh's /large

pub fn complete(d: &Download) -> bool {
    d.exit == 0 && d.status == "200" && d.size == LARGE
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}
