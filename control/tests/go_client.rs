//! The Go client (`clients/go`) against a real `lbd` on `net_null`: built
//! offline by `clients/go/build.sh` from Debian's Go packages (stubs
//! generated from `proto/lb.proto`, GOPATH mode against /usr/share/gocode,
//! no module proxy) into the target directory, then `lbdsmoke` run against
//! lbd's socket: a VIP, backends, a refusal with its code, the Watch events
//! of those changes, GetVip, GetStats and grpc.health.v1; `lbctl` checks
//! that lbd holds what the Go client created.

mod common;
use common::process::Lbd;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

#[test]
fn the_go_client_drives_lbd() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // target/ (or $CARGO_TARGET_DIR): lbd is target/debug/lbd.
    let out = Path::new(env!("CARGO_BIN_EXE_lbd"))
        .ancestors()
        .nth(2)
        .unwrap()
        .join("go");
    let t0 = Instant::now();
    let build = Command::new(repo.join("clients/go/build.sh"))
        .arg(&out)
        .output()
        .expect("running clients/go/build.sh");
    assert!(
        build.status.success(),
        "clients/go/build.sh (scripts/setup.sh installs the Debian packages it needs):\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
    let built = t0.elapsed();

    let dir = std::env::temp_dir().join(format!("lbd-go-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let lbd = Lbd::start(&dir, "go");
    let run = Command::new(out.join("bin/lbdsmoke"))
        .arg("-socket")
        .arg(&lbd.socket)
        .output()
        .unwrap();
    let shown =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    let vips = lbd.json(&["vip", "list"]);
    let log = lbd.stop();
    assert!(run.status.success(), "lbdsmoke:\n{shown}\nlbd:\n{log}");
    for line in [
        "info: port net_null0 workers [1]",
        "vip: 198.51.100.60:443 table 65537",
        "backend: 192.0.2.61 weight 1 state UP mac \"02:00:00:00:00:61\"",
        "backend: 192.0.2.62 weight 2 state UP mac \"\"",
        "refused: InvalidArgument: backend.weight: 10001 is above the maximum 10000",
        "event: vip 198.51.100.60:443/tcp created",
        "event: backend 192.0.2.61 added to 198.51.100.60:443/tcp",
        "event: backend 192.0.2.62 added to 198.51.100.60:443/tcp",
        "event: backend 192.0.2.63 added to 198.51.100.60:443/tcp",
        "get: 3 backends",
        "worker 1: rx ",
        "vip stats: 3 backends, 0 packets",
        "health: SERVING",
    ] {
        assert!(shown.contains(line), "missing {line:?} in\n{shown}");
    }
    let list = vips.as_array().unwrap();
    assert_eq!(list.len(), 1, "{vips}");
    assert_eq!(list[0]["vip"], "198.51.100.60:443/tcp", "{vips}");
    let weights: Vec<(String, u64)> = list[0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        weights,
        [
            ("192.0.2.61".to_string(), 1),
            ("192.0.2.62".to_string(), 2),
            ("192.0.2.63".to_string(), 0)
        ],
        "{vips}"
    );
    eprintln!(
        "go build {:.1} s, run {:.1} s",
        built.as_secs_f64(),
        (t0.elapsed() - built).as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
