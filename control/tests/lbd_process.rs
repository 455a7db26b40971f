//! `lbd` as an operator runs it: several workers, stopped by a signal, and
//! clear errors for a bad command line.

use lb_testkit::eal;

use std::process::{Command, Stdio};
use std::time::Duration;

fn lbd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lbd"))
}

#[test]
fn two_workers_share_the_port_and_sigterm_stops_them() {
    let mut args = eal::eal_args("lbd-workers", "0@0,1@1,2@1", &["net_null0,size=64"]);
    args.extend(["--", "--port", "net_null0", "--json", "--no-grpc"].map(String::from));
    let child = lbd()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lbd");
    std::thread::sleep(Duration::from_millis(1500));
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "lbd exits cleanly on SIGTERM: {stderr}"
    );
    assert!(stderr.contains("forwarding"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape codes in a log to a pipe: {stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let workers = report["workers"].as_array().expect("workers");
    assert_eq!(workers.len(), 2, "{report}");
    for w in workers {
        let rx = w["rx_packets"].as_u64().unwrap();
        assert!(rx > 0, "every worker polled its own queue: {report}");
        let accounted = w["tx_packets"].as_u64().unwrap()
            + w["tx_failed"].as_u64().unwrap()
            + w["drops"]
                .as_object()
                .unwrap()
                .values()
                .map(|v| v.as_u64().unwrap())
                .sum::<u64>();
        assert_eq!(rx, accounted, "every packet accounted for: {report}");
    }
    assert_eq!(
        report["total"]["rx_packets"].as_u64().unwrap(),
        workers
            .iter()
            .map(|w| w["rx_packets"].as_u64().unwrap())
            .sum::<u64>()
    );
}

/// `--log-format json`: every line of lbd's own log is a JSON object with
/// its level and message (EAL's few lines stay DPDK's plain text).
#[test]
fn the_log_in_json() {
    let mut args = eal::eal_args("lbd-json", "0@0,1@1", &["net_null0,size=64,no-rx=1"]);
    args.extend(
        [
            "--",
            "--port",
            "net_null0",
            "--no-grpc",
            "--log-format",
            "json",
            "--exit-idle-ms",
            "300",
        ]
        .map(String::from),
    );
    let out = lbd().args(&args).output().expect("run lbd");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ours: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        ours.iter().any(|v| v["level"] == "INFO"
            && v["fields"]["message"] == "forwarding"
            && v["fields"]["port"] == "net_null0"),
        "{stderr}"
    );
    for l in stderr.lines().filter(|l| !l.starts_with('{')) {
        assert!(
            l.starts_with("EAL: ") || l.starts_with("TELEMETRY: "),
            "a line of lbd's log not in JSON: {l}"
        );
    }
}

#[test]
fn errors_are_one_clear_line() {
    let run = |args: Vec<String>| {
        let out = lbd().args(&args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    let mut a = eal::eal_args("lbd-nolcore", "0", &["net_null0"]);
    a.extend(["--", "--port", "net_null0", "--no-grpc"].map(String::from));
    let e = run(a);
    assert!(e.contains("no worker lcore"), "{e}");

    let mut a = eal::eal_args("lbd-noport", "0@0,1@1", &["net_null0"]);
    a.extend(["--", "--port", "net_bogus0", "--no-grpc"].map(String::from));
    let e = run(a);
    assert!(
        e.contains("net_bogus0") && e.contains("net_null0"),
        "names the port and the available ones: {e}"
    );

    let bad_config = std::env::temp_dir().join(format!("lbd-bad-{}.toml", std::process::id()));
    std::fs::write(
        &bad_config,
        "[[vip]]\naddress = \"198.51.100.10\"\nport = 443\nprotocol = \"sctp\"\n",
    )
    .unwrap();
    let e = run(vec![
        "--".into(),
        "--port".into(),
        "x".into(),
        "--config".into(),
        bad_config.display().to_string(),
    ]);
    assert!(
        e.contains("protocol") && e.contains("sctp"),
        "names the field and the value: {e}"
    );
    let _ = std::fs::remove_file(&bad_config);

    let e = run(["--", "--port", "x", "--config", "/nonexistent/lb.toml"]
        .map(String::from)
        .to_vec());
    assert!(e.contains("/nonexistent/lb.toml"), "{e}");

    let e = run(["--bogus-eal-flag", "--", "--port", "x", "--no-grpc"]
        .map(String::from)
        .to_vec());
    assert!(e.contains("rte_eal_init failed"), "{e}");
}
