//! Driving `scripts/lab.sh` from the end-to-end tests (dr_lab, ecmp_lab):
//! one lab per test, removed when the test ends, pass or fail.

#![allow(dead_code)] // each test uses its own part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Lab {
    pub id: String,
    script: PathBuf,
    /// Which lbd the lab commands address (LB=1 or 2).
    lb: u8,
    /// Only the lab itself tears down; instance views do not.
    owner: bool,
}

impl Lab {
    /// A lab of topology `topo` (flat or ecmp); torn down after `limit`
    /// even if the test hangs, so a hung step fails instead of blocking.
    pub fn up(topo: &str, limit: Duration) -> Lab {
        let lab = Lab {
            id: format!("t{}", std::process::id() % 100_000),
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab.sh"),
            lb: 1,
            owner: true,
        };
        let bin = Path::new(env!("CARGO_BIN_EXE_lbd"));
        assert!(
            bin.with_file_name("lbctl").exists(),
            "lbctl is missing beside lbd: `cargo build --workspace` (make test does)"
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
            lb,
            owner: false,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let bin = Path::new(env!("CARGO_BIN_EXE_lbd"));
        let mut c = Command::new("bash");
        c.arg(&self.script)
            .args(args)
            .env("LAB_ID", &self.id)
            .env("LB", self.lb.to_string())
            .env("LBD", bin)
            .env("LBCTL", bin.with_file_name("lbctl"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Run a lab command that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "lab.sh {args:?} (lbd {}): {}{}",
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

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["lbctl", "--output", "json"];
        a.extend_from_slice(args);
        let out = self.ok(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{a:?}: {e}: {out}"))
    }

    pub fn health(&self, backend: &str) -> String {
        self.json(&["health"])
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["address"] == backend)
            .map(|h| h["health"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
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
        let sfx = if self.lb == 1 {
            String::new()
        } else {
            self.lb.to_string()
        };
        format!("/tmp/lblab-{}/lbd{sfx}.sock", self.id)
    }

    fn logs(&self) -> String {
        let dir = format!("/tmp/lblab-{}", self.id);
        ["lbd.log", "lbd2.log"]
            .iter()
            .filter_map(|f| {
                let text = std::fs::read_to_string(format!("{dir}/{f}")).ok()?;
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
