//! lbd's monitoring files against a real Prometheus: the alert rules
//! (packaging/prometheus/lbd-alerts.yml) pass `promtool check rules` and
//! their unit tests (`promtool test rules`, lbd-alerts.test.yml); and on the
//! lab of `scripts/lab.sh` (real clients, nginx backends, lbd on
//! net_af_packet), with real traffic, a Prometheus started here in lbd's
//! namespace scrapes lbd every second with the rules loaded: every panel
//! of the Grafana dashboard (packaging/grafana/lbd.json) returns data,
//! every rule evaluates, and the alerts the lab can make true (drops by
//! reason, a full flow table, a VIP conflict, a backend down, a VIP with no
//! backend up, a withdrawn route) show as pending or firing, naming the
//! right backend, reason, worker, MAC or address.
//!
//! Needs prometheus and promtool (Debian's `prometheus`, scripts/setup.sh);
//! without them the tests fail, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lb_testkit::lab::{tally, wait_until, Lab};
use serde_json::Value;

const VIP: &str = "198.51.100.10:80/tcp";
const VIP_ADDR: &str = "198.51.100.10";
const BACKENDS: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];
/// Flows per worker: a SYN flood fills it within a second.
const FLOWS: &str = "256";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn rules() -> PathBuf {
    repo().join("packaging/prometheus/lbd-alerts.yml")
}

/// A Prometheus tool, or the test fails saying how to get it.
fn tool(name: &str, args: &[&str]) -> Output {
    Command::new(name).args(args).output().unwrap_or_else(|e| {
        panic!("{name}: {e}: install Debian's prometheus package (scripts/setup.sh does)")
    })
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The names of the rules file's alerts, in order.
fn alert_names() -> Vec<String> {
    std::fs::read_to_string(rules())
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let rules = rules();
    let check = tool("promtool", &["check", "rules", rules.to_str().unwrap()]);
    assert!(
        check.status.success(),
        "promtool check rules: {}",
        text(&check)
    );
    let names = alert_names();
    assert!(
        text(&check).contains(&format!("SUCCESS: {} rules found", names.len())),
        "every alert of the file is a rule: {names:?}\n{}",
        text(&check)
    );
    let tests = rules.with_file_name("lbd-alerts.test.yml");
    let unit = tool("promtool", &["test", "rules", tests.to_str().unwrap()]);
    assert!(
        unit.status.success(),
        "promtool test rules: {}",
        text(&unit)
    );
    // Every alert has a case that expects it to fire (and each case file
    // entry names one alert).
    let cases = std::fs::read_to_string(&tests).unwrap();
    for name in &names {
        assert!(
            cases.contains(&format!(
                "alertname: {name}\n      exp_alerts:\n      - exp_labels:"
            )),
            "no unit test in which {name} fires"
        );
    }
}

/// Prometheus, run in lbd's namespace (lbd's metrics listener is local
/// there); stopped on drop.
struct Prometheus<'a> {
    lab: &'a Lab,
    child: Child,
    /// Its HTTP API, inside the namespace.
    url: String,
}

impl Drop for Prometheus<'_> {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.lab.dir().join("prometheus/prometheus.log"))
                .unwrap_or_default();
            eprintln!("--- prometheus.log ---\n{log}");
        }
    }
}

impl<'a> Prometheus<'a> {
    fn start(lab: &'a Lab) -> Prometheus<'a> {
        assert!(
            tool("prometheus", &["--version"]).status.success(),
            "prometheus --version"
        );
        // lbd's listener as lab.sh gives it ($METRICS).
        let script = std::fs::read_to_string(repo().join("scripts/lab.sh")).unwrap();
        let metrics = script
            .lines()
            .find_map(|l| l.strip_prefix("METRICS="))
            .and_then(|l| l.split_whitespace().next())
            .expect("METRICS= in lab.sh")
            .to_string();
        let dir = lab.dir().join("prometheus");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {}\n\
                 scrape_configs:\n  - job_name: lbd\n    static_configs:\n      - targets: [\"{metrics}\"]\n",
                rules().display()
            ),
        )
        .unwrap();
        // A free port in the namespace.
        let port = lab
            .ok(&[
                "exec",
                "lb",
                "python3",
                "-c",
                "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])",
            ])
            .trim()
            .to_string();
        let listen = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = lab
            .command(&[
                "exec",
                "lb",
                "prometheus",
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address={listen}"),
                "--storage.tsdb.retention.time=1h",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let p = Prometheus {
            lab,
            child,
            url: format!("http://{listen}"),
        };
        wait_until("Prometheus ready", Duration::from_secs(30), || {
            p.curl(&["/-/ready"]).status.success()
        });
        // Its first scrape of lbd done: what the test does next is seen.
        wait_until("Prometheus scraping lbd", Duration::from_secs(10), || {
            has_data(&p.query("up{job=\"lbd\"} == 1"))
        });
        p
    }

    fn curl(&self, args: &[&str]) -> Output {
        let url = format!("{}{}", self.url, args[0]);
        let mut a = vec!["exec", "lb", "curl", "-sf", "--max-time", "5", "-G", &url];
        for extra in &args[1..] {
            a.extend(["--data-urlencode", extra]);
        }
        self.lab.run(&a)
    }

    /// GET an API path; its `data`.
    fn api(&self, args: &[&str]) -> Value {
        let out = self.curl(args);
        assert!(out.status.success(), "GET {args:?}: {}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("GET {args:?}: {e}: {}", text(&out)));
        assert_eq!(v["status"], "success", "GET {args:?}: {v}");
        v["data"].clone()
    }

    /// An instant query's result vector.
    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&["/api/v1/query", &format!("query={expr}")]);
        match &data["result"] {
            Value::Array(r) => r.clone(),
            // A scalar (none of the panels is one).
            other => vec![other.clone()],
        }
    }

    /// The alerts now pending or firing.
    fn alerts(&self) -> Vec<Value> {
        self.api(&["/api/v1/alerts"])["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Until an alert `name` whose labels include every one of `labels`
    /// is pending or firing; that alert.
    fn wait_alert(&self, name: &str, labels: &[(&str, &str)], limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let alerts = self.alerts();
            if let Some(a) = alerts.iter().find(|a| matches(a, name, labels)) {
                return a.clone();
            }
            if start.elapsed() > limit {
                // The rule's expression, for what it gives now.
                let rules = self.api(&["/api/v1/rules"]);
                let expr = rules["groups"][0]["rules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["name"] == name)
                    .map(|r| r["query"].as_str().unwrap().to_string())
                    .unwrap_or_default();
                let base = expr
                    .rsplit_once(['>', '='])
                    .map_or(&*expr, |(l, _)| l.trim_end_matches('='));
                panic!(
                    "no alert {name} {labels:?} pending or firing after {limit:?}; {base} is {:?}; the alerts: {alerts:#?}",
                    self.query(base)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn matches(alert: &Value, name: &str, labels: &[(&str, &str)]) -> bool {
    alert["labels"]["alertname"] == name && labels.iter().all(|(k, v)| alert["labels"][*k] == *v)
}

/// Whether a query result holds a sample with a number (NaN is none:
/// Grafana draws nothing for it).
fn has_data(result: &[Value]) -> bool {
    result.iter().any(|s| {
        s["value"][1]
            .as_str()
            .is_some_and(|v| v.parse::<f64>().is_ok_and(|v| !v.is_nan()))
    })
}

/// Every (panel title, expression) of the dashboard, its template
/// variables substituted as Grafana would with "All" selected, rate
/// windows shortened for a 1 s scrape.
fn panel_queries() -> Vec<(String, String)> {
    let path = repo().join("packaging/grafana/lbd.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["DS_PROMETHEUS", "instance", "vip"], "{path:?}");
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?}: the datasource variable"
        );
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title:?}: a target without expr"))
                .replace("$__rate_interval", "10s")
                .replace("$instance", ".+")
                .replace("$vip", ".+");
            assert!(
                !expr.contains('$'),
                "panel {title:?}: unknown variable in {expr}"
            );
            out.push((title.clone(), expr));
        }
    }
    out
}

/// An ARP reply claiming the VIP, from be4's own MAC to lbd's port only
/// (unicast, so that no other host takes it): what a backend without
/// arp_ignore sends. Its MAC.
fn claim_vip_from_be4(lab: &Lab) -> String {
    let lbd_mac = lab.ok(&["exec", "lb", "cat", "/sys/class/net/data0/address"]);
    let out = lab.ok(&[
        "exec",
        "be4",
        "python3",
        "-c",
        r#"
import socket, struct, sys, time
vip, dst = socket.inet_aton(sys.argv[1]), bytes.fromhex(sys.argv[2].replace(":", ""))
mac = open("/sys/class/net/eth0/address").read().strip()
src = bytes.fromhex(mac.replace(":", ""))
arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2) + src + vip + dst + b"\0\0\0\0"
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
for _ in range(5):
    s.send((dst + src + b"\x08\x06" + arp).ljust(60, b"\0"))
    time.sleep(0.05)
print(mac)
"#,
        VIP_ADDR,
        lbd_mac.trim(),
    ]);
    out.trim().to_string()
}

#[test]
fn dashboard_and_alerts_on_the_lab() {
    let started = Instant::now();
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(200));
    // Routes announced (to no speaker: the reload is `true`), so that
    // lb_route_announced exists; a tiny flow table for the flood to fill.
    let routes = lab.dir().join("vips.conf");
    lab.ok_env(
        &[("LAB_FLOWS", FLOWS)],
        &[
            "lbd-start",
            "--bgp-routes",
            routes.to_str().unwrap(),
            "--bgp-reload",
            "true",
            // The flood's flows stay while the test looks.
            "--new-flow-timeout",
            "120",
        ],
    );
    lab.ok(&["configure"]);
    lab.wait_passing(None, &BACKENDS, Duration::from_secs(20));
    let prom = Prometheus::start(&lab);

    // Traffic: 30 requests through the VIP; SYNs to a port no VIP has
    // (drops, reason unknown_vip_port), fast enough for the drops rule
    // (over 10/s averaged over 5 minutes); a SYN flood from random
    // sources at the VIP, 3,000 new flows for a table of 256; a VIP
    // conflict.
    let served = tally(&lab.ok(&["requests", "30"]));
    assert_eq!(served.get("FAILED"), None, "{served:?}");
    let scan = lab.run(&[
        "exec", "client", "hping3", "-q", "-S", "-p", "81", "-i", "u50", "-c", "20000", VIP_ADDR,
    ]);
    let flood = lab.run(&[
        "exec",
        "client",
        "hping3",
        "-q",
        "-S",
        "-p",
        "80",
        "--rand-source",
        "-i",
        "u200",
        "-c",
        "3000",
        VIP_ADDR,
    ]);
    let thief = claim_vip_from_be4(&lab);
    let drops = lab.drops();
    assert!(
        drops.get("unknown_vip_port").copied().unwrap_or(0) >= 5000,
        "the SYNs to port 81 were dropped: {drops:?}\n{}",
        text(&scan)
    );
    assert!(
        lab.counter("new_flows") >= 2000,
        "the flood's flows: {}\n{}",
        lab.counter("new_flows"),
        text(&flood)
    );

    // What the traffic made true (first: the flood's flows expire).
    let dropping = prom.wait_alert(
        "LbDropsRising",
        &[("reason", "unknown_vip_port"), ("job", "lbd")],
        Duration::from_secs(15),
    );
    assert_eq!(dropping["state"], "pending", "for: 5m: {dropping}");
    let full = prom.wait_alert(
        "LbFlowTableNearFull",
        &[("worker", "1")],
        Duration::from_secs(15),
    );
    assert_eq!(full["state"], "pending", "{full}");
    let conflict = prom.wait_alert(
        "LbVipConflict",
        &[("address", VIP_ADDR), ("mac", &thief)],
        Duration::from_secs(15),
    );
    assert_eq!(conflict["state"], "firing", "no for: {conflict}");
    // Every panel's every query returns data (rate windows fill within a
    // few scrapes; a snapshot per round for the adoption histograms).
    let queries = panel_queries();
    assert!(queries.len() >= 40, "{} queries", queries.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut weight = 1;
    let empty = loop {
        let empty: Vec<String> = queries
            .iter()
            .filter(|(_, e)| !has_data(&prom.query(e)))
            .map(|(t, e)| format!("{t:?}: {e}"))
            .collect();
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        weight = 3 - weight;
        lab.ok(&[
            "lbctl",
            "backend",
            "set-weight",
            VIP,
            BACKENDS[2],
            &weight.to_string(),
        ]);
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    lab.ok(&["lbctl", "backend", "set-weight", VIP, BACKENDS[2], "1"]);

    // Every rule is loaded from the file and evaluates.
    let names = alert_names();
    let groups = prom.api(&["/api/v1/rules"])["groups"].clone();
    let loaded: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    let loaded_names: Vec<&str> = loaded.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(loaded_names, names, "the rules Prometheus loaded");
    for r in &loaded {
        assert_eq!(r["health"], "ok", "rule {}: {r}", r["name"]);
        assert!(
            r["lastEvaluation"]
                .as_str()
                .is_some_and(|t| !t.starts_with("0001")),
            "{r}"
        );
    }

    // ... and what it did not: all backends up, a VIP with backends, no
    // drops for other reasons, a scrape that works, the route announced.
    let alerts = prom.alerts();
    for (name, labels) in [
        ("LbBackendDown", vec![]),
        ("LbVipNoBackendUp", vec![]),
        ("LbVipWithdrawn", vec![]),
        ("LbdDown", vec![]),
        ("LbBackendVipPathBroken", vec![]),
        ("LbDropsRising", vec![("reason", "truncated")]),
        ("LbDropsRising", vec![("reason", "no_backend")]),
    ] {
        assert!(
            !alerts.iter().any(|a| matches(a, name, &labels)),
            "{name} {labels:?} with every backend up: {alerts:#?}"
        );
    }

    // A backend's server dies: its check fails, the backend is down.
    lab.ok(&["nginx-stop", "3"]);
    let down = prom.wait_alert(
        "LbBackendDown",
        &[("backend", BACKENDS[2]), ("vip", VIP)],
        Duration::from_secs(20),
    );
    assert_eq!(down["state"], "pending", "for: 2m: {down}");
    let others = prom.alerts();
    for b in &BACKENDS[..2] {
        assert!(
            !others
                .iter()
                .any(|a| matches(a, "LbBackendDown", &[("backend", b)])),
            "{b} is up: {others:#?}"
        );
    }
    assert!(
        !others.iter().any(|a| matches(a, "LbVipNoBackendUp", &[])),
        "two backends are up: {others:#?}"
    );

    // Every server dies: the VIP has no backend up, its route is withdrawn.
    lab.ok(&["nginx-stop", "1"]);
    lab.ok(&["nginx-stop", "2"]);
    let none = prom.wait_alert(
        "LbVipNoBackendUp",
        &[
            ("vip", VIP),
            ("address", VIP_ADDR),
            ("port", "80"),
            ("protocol", "tcp"),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(none["state"], "pending", "for: 1m: {none}");
    let withdrawn = prom.wait_alert(
        "LbVipWithdrawn",
        &[("address", VIP_ADDR)],
        Duration::from_secs(20),
    );
    assert_eq!(withdrawn["state"], "pending", "for: 1m: {withdrawn}");
    for b in BACKENDS {
        prom.wait_alert("LbBackendDown", &[("backend", b)], Duration::from_secs(20));
    }

    drop(prom);
    lab.ok(&["lbd-stop"]);
    eprintln!("prometheus_lab: {:?}", started.elapsed());
}
