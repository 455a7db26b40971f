//! lbchurn against a real lbd (on net_null, whose endless packets keep the
//! worker's bursts, and so its snapshot generation, moving): changes go
//! through the API, every one is adopted by the worker, which measures how
//! long each took to reach it, and the report says so.

use lb_testkit::eal;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn churn_changes_are_adopted_by_every_worker() {
    let lbd = Path::new(env!("CARGO_BIN_EXE_lbchurn")).with_file_name("lbd");
    assert!(
        lbd.exists(),
        "{} is missing: `cargo build --workspace` first (make test does)",
        lbd.display()
    );
    let dir = std::env::temp_dir().join(format!("lbchurn-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("lb.toml");
    std::fs::write(
        &state,
        "[[vip]]\naddress = \"198.51.100.10\"\nport = 443\nprotocol = \"udp\"\n\
         [[vip.backend]]\naddress = \"10.1.0.2\"\nmac = \"02:be:00:00:00:02\"\n\
         [[vip.backend]]\naddress = \"10.1.0.3\"\nmac = \"02:be:00:00:00:03\"\n",
    )
    .unwrap();
    let socket = dir.join("lbd.sock");
    let mut child = Command::new(&lbd)
        .args(eal::eal_args("churn", "0@0,1@1", &["net_null0,size=64"]))
        .args(["--", "--port", "net_null0", "--flows", "4096", "--state"])
        .arg(&state)
        .arg("--grpc-socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "lbd did not open its API socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_lbchurn"))
        .arg("--socket")
        .arg(&socket)
        .args([
            "--vip",
            "198.51.100.10:443/udp",
            "--backend",
            "10.1.0.2",
            "--rate",
            "20",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "lbchurn: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["changes"].as_u64().unwrap() >= 5, "{r}");
    assert_eq!(r["workers_behind_after_1s"], 0, "{r}");
    // One worker, a snapshot every 50 ms: it takes each (a stall of 50 ms
    // could cost one), and the delay it measured for each is counted.
    let (snapshots, adopted) = (
        r["snapshots"].as_u64().unwrap(),
        r["adopted"].as_u64().unwrap(),
    );
    assert!(snapshots >= 5, "{r}");
    assert!(adopted <= snapshots && adopted + 1 >= snapshots, "{r}");
    // The only worker is the last to take each snapshot it takes.
    assert_eq!(r["all_workers_snapshots"], r["adopted"], "{r}");
    let (p50, max) = (
        r["adoption_p50_us"].as_u64().unwrap(),
        r["adoption_max_us"].as_u64().unwrap(),
    );
    assert!(p50 <= max && max < 1_000_000, "{r}");
}
