//! The harness's two DPDK programs, for real over net_memif: lbgen sends to
//! lbfwd (the baseline forwarder), which sends every frame back; lbgen
//! counts them and measures their latency. (`bench/harness.sh` runs the
//! same pair, and lbd, for the figures.)

#[path = "../../dataplane/tests/common/eal.rs"]
mod eal;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn generator_and_baseline_forwarder_loop_over_memif() {
    let sock = format!("/tmp/lbbench-test-{}.sock", std::process::id());
    let fwd = Command::new(env!("CARGO_BIN_EXE_lbfwd"))
        .args(eal::eal_args(
            "fwd",
            "0@1",
            &[&format!(
                "net_memif0,role=server,socket={sock},mac=02:00:00:00:00:01"
            )],
        ))
        .args(["--", "--port", "net_memif0", "--seconds", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The server must listen before the client starts (an abstract socket).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ss = Command::new("ss").arg("-xl").output().unwrap();
        if String::from_utf8_lossy(&ss.stdout).contains(&format!("@{sock}")) {
            break;
        }
        assert!(Instant::now() < deadline, "lbfwd did not listen on {sock}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let gen = Command::new(env!("CARGO_BIN_EXE_lbgen"))
        .args(eal::eal_args(
            "gen",
            "0@0",
            &[&format!("net_memif0,role=client,socket={sock}")],
        ))
        .args([
            "--",
            "--port",
            "net_memif0",
            "--dst-mac",
            "02:00:00:00:00:01",
            "--flows",
            "1000",
            "--seconds",
            "1",
            "--warmup",
            "0.3",
        ])
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &fwd.id().to_string()])
        .status();
    let fwd_out = fwd.wait_with_output().unwrap();
    assert!(
        gen.status.success(),
        "lbgen: {}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&gen.stdout).unwrap();
    let (tx, rx) = (r["tx"].as_u64().unwrap(), r["rx"].as_u64().unwrap());
    assert!(rx > 10_000, "frames came back: {r}");
    assert!(
        rx <= tx + 10_000,
        "no more back than sent (plus warm-up stragglers): {r}"
    );
    assert!(r["lat_p50_us"].as_f64().unwrap() > 0.0, "{r}");
    let f: serde_json::Value = serde_json::from_slice(&fwd_out.stdout).unwrap();
    assert!(
        f["tx"].as_u64().unwrap() >= rx,
        "lbfwd sent what lbgen got back: {f} {r}"
    );
}
