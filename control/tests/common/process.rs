//! A real `lbd` process on DPDK's `net_null` (EAL arguments from
//! `lb_testkit::eal`, one worker), its API on a Unix socket in the test's
//! directory, driven by `lbctl`: what the end-to-end API tests share.

use lb_testkit::eal;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `lbctl` is built next to `lbd` (`make test` builds every binary first).
pub fn lbctl_path() -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_lbd")).with_file_name("lbctl");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p lbctl` (make test does)",
        p.display()
    );
    p
}

pub struct Lbd {
    child: Option<Child>,
    pub socket: PathBuf,
    /// lbd's stderr goes to a file: an unread pipe would fill and block it.
    pub log: PathBuf,
}

impl Lbd {
    pub fn start(dir: &Path, tag: &str) -> Lbd {
        Lbd::start_with(dir, tag, &[])
    }

    pub fn start_with(dir: &Path, tag: &str, extra: &[&str]) -> Lbd {
        Lbd::start_with_state(dir, &dir.join("state.toml"), tag, extra)
    }

    /// As [`Lbd::start_with`], its state file at `state`.
    pub fn start_with_state(dir: &Path, state: &Path, tag: &str, extra: &[&str]) -> Lbd {
        let socket = dir.join("lbd.sock");
        let mut args = eal::eal_args(tag, "0@0,1@1", &["net_null0,size=64"]);
        let state = state.display().to_string();
        let sock = socket.display().to_string();
        args.extend(
            [
                "--",
                "--port",
                "net_null0",
                "--state",
                &state,
                "--grpc-socket",
                &sock,
                "--flows",
                "4096",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = dir.join(format!("lbd-{tag}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_lbd"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let lbd = Lbd {
            child: Some(child),
            socket,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !lbd.ctl(&["info"]).status.success() {
            assert!(Instant::now() < deadline, "lbd did not serve its API");
            std::thread::sleep(Duration::from_millis(100));
        }
        lbd
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(lbctl_path())
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Run an lbctl command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "lbctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a))
            .unwrap_or_else(|e| panic!("lbctl {args:?}: not JSON: {e}"))
    }

    /// Run an lbctl command that must fail; its stderr.
    pub fn err(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(!out.status.success(), "lbctl {args:?} should have failed");
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn stop(mut self) -> String {
        let child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        // A stopping lbd closes what clients keep open (a Watch) after a
        // short grace: it must not wait for them.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut child = child;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("lbd did not stop within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stderr = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(status.success(), "lbd: {stderr}");
        stderr
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
