//! The binary on loopback: both protocols' answers with `--fixed`, with
//! `--file` as the file changes, and measured from a fake /proc and /sys
//! whose counters a thread advances.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A port free now on 127.0.0.1 (the agent binds it right after).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Agent {
    child: Child,
    text: u16,
    http: u16,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let (text, http) = (free_port(), free_port());
        let child = Command::new(env!("CARGO_BIN_EXE_lb-agent"))
            .args(["--listen", &format!("127.0.0.1:{text}")])
            .args(["--http-listen", &format!("127.0.0.1:{http}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let a = Agent { child, text, http };
        // Listening: both ports accept.
        for port in [text, http] {
            let deadline = Instant::now() + Duration::from_secs(10);
            while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
                assert!(
                    Instant::now() < deadline,
                    "the agent does not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        a
    }

    /// The text protocol's reply, after sending something it must ignore.
    fn text(&self) -> String {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.text)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(b"state\n");
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// `GET path`: the status code, the Content-Type, the body.
    fn get(&self, path: &str) -> (u16, String, String) {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, self.http)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let content_type = head
            .lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_default();
        (status, content_type, body.to_string())
    }

    /// The JSON of `GET /load`, checked to be JSON.
    fn json(&self) -> serde_json::Value {
        let (status, content_type, body) = self.get("/load");
        assert_eq!((status, content_type.as_str()), (200, "application/json"));
        serde_json::from_str(&body).unwrap()
    }

    /// Poll the text protocol until it answers `want`.
    fn wait_text(&self, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got = self.text();
            if got == want {
                return;
            }
            assert!(Instant::now() < deadline, "wanted {want:?}, got {got:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("agent-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Written whole (a temporary file renamed), so the agent never reads half.
fn put(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn fixed_over_both_protocols() {
    let a = Agent::start(&["--fixed", "40"]);
    assert_eq!(a.text(), "ready 40%\n");
    assert_eq!(a.text(), "ready 40%\n", "again");
    assert_eq!(
        a.json(),
        serde_json::json!({"weight_percent": 40, "state": "ready"})
    );
    assert_eq!(a.get("/other").0, 404);
}

#[test]
fn the_file_is_read_on_each_request() {
    let dir = scratch("file");
    let file = dir.join("answer");
    let a = Agent::start(&["--file", file.to_str().unwrap()]);
    // Missing: ready, no weight.
    assert_eq!(a.text(), "ready\n");
    assert_eq!(a.json(), serde_json::json!({"state": "ready"}));
    put(&file, "50%\n");
    assert_eq!(a.text(), "50%\n");
    assert_eq!(a.json(), serde_json::json!({"weight_percent": 50}));
    put(&file, "drain\n");
    assert_eq!(a.text(), "drain\n");
    assert_eq!(a.json(), serde_json::json!({"state": "drain"}));
    put(&file, "MAINT,0%");
    assert_eq!(a.text(), "maint 0%\n");
    assert_eq!(
        a.json(),
        serde_json::json!({"weight_percent": 0, "state": "maint"})
    );
    put(&file, "ready 20% maxconn:10");
    assert_eq!(a.text(), "ready 20%\n");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(a.text(), "ready\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fake /proc/stat and /sys/class/net/fake0 whose counters a thread
/// advances every 20 ms: 4 busy and 6 idle ticks (40% CPU), and 5 MB
/// sent (2 Gbit/s, twice the fake link's 1000 Mbit/s).
struct FakeMachine {
    proc: PathBuf,
    sys: PathBuf,
    stop: Arc<AtomicBool>,
    /// Set: the writer removes the interface (so no write races the removal).
    unplug: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeMachine {
    fn start(dir: &Path) -> FakeMachine {
        let proc = dir.join("proc");
        let sys = dir.join("sys");
        let net = sys.join("class/net/fake0");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::create_dir_all(net.join("statistics")).unwrap();
        std::fs::write(net.join("speed"), "1000\n").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let unplug = Arc::new(AtomicBool::new(false));
        let write = {
            let (proc, net, unplug) = (proc.clone(), net.clone(), unplug.clone());
            move |i: u64| {
                put(
                    &proc.join("stat"),
                    &format!(
                        "cpu  {} 0 {} {} 0 0 0 0 0 0\ncpu0 1 1 1 1 0 0 0 0 0 0\nintr 1\n",
                        100 + 3 * i,
                        50 + i,
                        1000 + 6 * i
                    ),
                );
                if unplug.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_dir_all(&net);
                } else {
                    put(
                        &net.join("statistics/tx_bytes"),
                        &format!("{}\n", 5_000_000 * i),
                    );
                }
            }
        };
        write(0);
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut i = 1;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                    write(i);
                    i += 1;
                }
            })
        };
        FakeMachine {
            proc,
            sys,
            stop,
            unplug,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeMachine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn measured_from_proc_and_sys() {
    let dir = scratch("measured");
    let m = FakeMachine::start(&dir);
    let roots = [
        "--proc",
        m.proc.to_str().unwrap(),
        "--sys",
        m.sys.to_str().unwrap(),
        "--sample-ms",
        "200",
    ];

    // CPU alone: 40% load, ceiling 90: 100 * (1 - 40/90) = 56%.
    let cpu = Agent::start(&roots);
    cpu.wait_text("ready 56%\n");
    let j = cpu.json();
    assert_eq!(j["weight_percent"], 56, "{j}");
    assert_eq!(j["cpu_percent"], 40.0, "{j}");
    // A lower ceiling: 100 * (1 - 40/50) = 20%.
    let mut args = roots.to_vec();
    args.extend(["--ceiling-percent", "50"]);
    let low = Agent::start(&args);
    low.wait_text("ready 20%\n");

    // With the NIC (link speed from sysfs) sending twice its capacity:
    // the larger load wins, over the ceiling: 0%.
    let mut args = roots.to_vec();
    args.extend(["--iface", "fake0"]);
    let nic = Agent::start(&args);
    nic.wait_text("ready 0%\n");
    let j = nic.json();
    let p = j["nic_percent"].as_f64().unwrap();
    assert!(p > 100.0, "{j}");
    assert_eq!(j["load_percent"], j["nic_percent"], "{j}");
    // The same NIC counted over a capacity 10x larger: ~20%, so the CPU
    // (40%) is the load again.
    let mut args = roots.to_vec();
    args.extend(["--iface", "fake0", "--capacity-mbps", "10000"]);
    let big = Agent::start(&args);
    big.wait_text("ready 56%\n");

    // The interface gone: nothing is said about the weight.
    m.unplug.store(true, Ordering::Relaxed);
    nic.wait_text("ready\n");
    assert_eq!(nic.json(), serde_json::json!({"state": "ready"}));
    drop(m);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refuses_what_it_cannot_measure() {
    let dir = scratch("refuse");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lb-agent"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let sys = dir.to_str().unwrap();
    let e = run(&["--sys", sys, "--iface", "nope0"]);
    assert!(e.contains("give --capacity-mbps"), "{e}");
    std::fs::create_dir_all(dir.join("class/net/v0")).unwrap();
    std::fs::write(dir.join("class/net/v0/speed"), "-1\n").unwrap();
    let e = run(&["--sys", sys, "--iface", "v0"]);
    assert!(e.contains("link speed is unknown"), "{e}");
    let e = run(&["--sys", sys, "--iface", "v0", "--capacity-mbps", "100"]);
    assert!(e.contains("tx_bytes"), "{e}");
    let e = run(&["--no-cpu"]);
    assert!(e.contains("nothing to measure"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
