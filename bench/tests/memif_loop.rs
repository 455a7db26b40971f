//! The harness's DPDK programs, for real over net_memif: lbgen sends to
//! lbfwd (the baseline forwarder), or to dpdk-testpmd (the second
//! baseline), which sends every frame back; lbgen counts them and measures
//! their latency. (`bench/harness.sh` runs the
//! same pair, and lbd, for the figures.)

use lb_testkit::eal;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Run lbgen (with `gen_args` after the port options) against lbfwd over a
/// fresh memif link; the JSON reports of both.
fn generator_against_baseline(
    tag: &str,
    gen_args: &[&str],
) -> (serde_json::Value, serde_json::Value) {
    let (gen, fwd) = generator_against(tag, None, gen_args);
    (gen, serde_json::from_slice(&fwd).unwrap())
}

/// lbgen as the memif client on `sock`, to lbfwd's MAC, with `gen_args`.
fn generator(tag: &str, sock: &str, gen_args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lbgen"));
    c.args(eal::eal_args(
        &format!("gen{tag}"),
        "0@0",
        &[&format!("net_memif0,role=client,socket={sock}")],
    ))
    .args([
        "--",
        "--port",
        "net_memif0",
        "--dst-mac",
        "02:00:00:00:00:01",
        "--linger",
        "20",
    ])
    .args(gen_args)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    c
}

/// The shutdown order `--linger` exists for: lbgen reports and stops
/// polling, then the server stops (it stops polling, then closes the
/// link), then lbgen closes its port. The other way round, DPDK's memif
/// can free the rings under a server still polling them, and the server
/// crashes without its report (it did, once, in CI). Both outputs, with
/// lbgen's stdout just its report.
fn report_then_stop(mut gen: Child, server: Child) -> (Output, Output) {
    let mut err = gen.stderr.take().unwrap();
    let errs = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let mut report = String::new();
    let _ = BufReader::new(gen.stdout.take().unwrap()).read_line(&mut report);
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let server = server.wait_with_output().unwrap();
    let mut out = gen.wait_with_output().unwrap();
    out.stdout = report.into_bytes();
    out.stderr = errs.join().unwrap();
    (out, server)
}

/// Run lbgen against a memif server: lbfwd, or the given `dpdk-testpmd` in
/// macswap mode as the harness runs it. lbgen's JSON report and the
/// server's stdout.
fn generator_against(
    tag: &str,
    testpmd: Option<&str>,
    gen_args: &[&str],
) -> (serde_json::Value, Vec<u8>) {
    let sock = format!("/tmp/lbbench-test-{tag}-{}.sock", std::process::id());
    let vdev = format!("net_memif0,role=server,socket={sock},mac=02:00:00:00:00:01");
    let mut server = match testpmd {
        None => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_lbfwd"));
            c.args(eal::eal_args(&format!("fwd{tag}"), "0@1", &[&vdev]))
                .args(["--", "--port", "net_memif0", "--seconds", "20"]);
            c
        }
        Some(path) => {
            let mut c = Command::new(path);
            c.args(eal::eal_args(&format!("tpmd{tag}"), "0@0,1@1", &[&vdev]))
                .args([
                    "--",
                    "--forward-mode=macswap",
                    "--auto-start",
                    "--stats-period",
                    "1",
                    "--nb-cores",
                    "1",
                ]);
            c
        }
    };
    let fwd = server
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The server must listen before the client starts (an abstract socket).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ss = Command::new("ss").arg("-xl").output().unwrap();
        if String::from_utf8_lossy(&ss.stdout).contains(&format!("@{sock}")) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not listen on {sock}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (gen, fwd_out) = report_then_stop(generator(tag, &sock, gen_args).spawn().unwrap(), fwd);
    assert!(
        gen.status.success(),
        "lbgen: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    assert!(
        fwd_out.status.success(),
        "the server ({}): {}",
        fwd_out.status,
        String::from_utf8_lossy(&fwd_out.stderr)
    );
    (serde_json::from_slice(&gen.stdout).unwrap(), fwd_out.stdout)
}

/// The harness's second baseline: DPDK's own testpmd (Debian's dpdk-dev,
/// installed by `make setup`) forwards lbgen's frames back over memif.
#[test]
fn generator_and_testpmd_loop_over_memif() {
    let testpmd = "/usr/bin/dpdk-testpmd";
    assert!(
        std::path::Path::new(testpmd).exists(),
        "{testpmd} is missing: run `make setup` (it installs Debian's dpdk-dev)"
    );
    let (r, out) = generator_against(
        "tpmd",
        Some(testpmd),
        &["--flows", "1000", "--seconds", "1", "--warmup", "0.3"],
    );
    assert!(r["rx"].as_u64().unwrap() > 10_000, "frames came back: {r}");
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.contains("macswap"),
        "testpmd forwarded in macswap mode: {out}"
    );
}

#[test]
fn generator_and_baseline_forwarder_loop_over_memif() {
    let (r, f) = generator_against_baseline(
        "udp4",
        &["--flows", "1000", "--seconds", "1", "--warmup", "0.3"],
    );
    let (tx, rx) = (r["tx"].as_u64().unwrap(), r["rx"].as_u64().unwrap());
    assert!(rx > 10_000, "frames came back: {r}");
    assert!(
        rx <= tx + 10_000,
        "no more back than sent (plus warm-up stragglers): {r}"
    );
    assert!(r["lat_p50_us"].as_f64().unwrap() > 0.0, "{r}");
    assert!(
        f["tx"].as_u64().unwrap() >= rx,
        "lbfwd sent what lbgen got back: {f} {r}"
    );
}

/// TCP over IPv6 to 3 VIPs at a set rate, renewing flows: only frames of
/// that kind count as returned, pacing holds the rate down, and flows are
/// renewed at about the asked pace.
#[test]
fn generator_paces_tcp6_and_renews_flows() {
    let (r, _) = generator_against_baseline(
        "tcp6",
        &[
            "--ipv6",
            "--proto",
            "tcp",
            "--vips",
            "3",
            "--size",
            "128",
            "--flows",
            "5000",
            "--rate-mpps",
            "0.05",
            "--new-flows-per-sec",
            "2000",
            "--seconds",
            "1",
            "--warmup",
            "0.3",
        ],
    );
    let (tx, rx) = (r["tx"].as_u64().unwrap(), r["rx"].as_u64().unwrap());
    assert!(rx > 1000, "IPv6/TCP frames came back: {r}");
    // 50,000 per second over the window as it ran (a descheduled generator
    // ends it late), plus a burst either side: pacing can only lower it.
    let measured = r["measured_s"].as_f64().unwrap();
    assert!(
        tx as f64 <= 50_000.0 * measured + 64.0,
        "the rate limit held: {r}"
    );
    let renewed = r["new_flows"].as_u64().unwrap();
    // Renewals follow their schedule from the start (warm-up included).
    let total = r["total_s"].as_f64().unwrap();
    assert!(
        renewed as f64 <= 2000.0 * total + 32.0,
        "renewals paced: {r}"
    );
    assert!(renewed > 0, "flows renewed: {r}");
    assert_eq!(r["proto"], "tcp");
    assert_eq!(r["ip"], 6);
}

/// A generator started before its server: its first connection finds no
/// one, and a memif client never tries again by itself, so lbgen starts
/// its port again until the link comes up (it once waited in vain in CI).
#[test]
fn generator_reconnects_to_a_late_server() {
    let sock = format!("/tmp/lbbench-test-late-{}.sock", std::process::id());
    let gen = generator(
        "late",
        &sock,
        &["--flows", "1000", "--seconds", "1", "--warmup", "0.3"],
    )
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let vdev = format!("net_memif0,role=server,socket={sock},mac=02:00:00:00:00:01");
    let fwd = Command::new(env!("CARGO_BIN_EXE_lbfwd"))
        .args(eal::eal_args("fwdlate", "0@1", &[&vdev]))
        .args(["--", "--port", "net_memif0", "--seconds", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (out, fwd) = report_then_stop(gen, fwd);
    assert!(fwd.status.success(), "lbfwd: {}", fwd.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "lbgen: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["rx"].as_u64().unwrap() > 10_000, "frames came back: {r}");
    // Either its start failed (no listener) or the link stayed down.
    assert!(
        stderr.contains("trying again") || stderr.contains("restarting the port"),
        "{stderr}"
    );
}
