//! The Go client (`clients/go`) against a real `lbd` on `net_null`: built
//! offline by `clients/go/build.sh` from Debian's Go packages (stubs
//! generated from `proto/lb.proto`, GOPATH mode against /usr/share/gocode,
//! no module proxy) into the target directory, then `lbdsmoke` run against
//! each of lbd's listeners, its Unix socket and its TCP listener on
//! 127.0.0.1 over mutual TLS (a client certificate of the test CA), each
//! with its own VIP: backends, a refusal with its code, the Watch events
//! of those changes, GetVip, GetStats and grpc.health.v1; `lbctl` checks
//! that lbd holds what the Go client created on both.

mod common;
use common::certs::TlsLbd;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

fn shown(run: &Output) -> String {
    String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr)
}

/// What lbdsmoke prints for the VIP `vip` (backends 192.0.2.61-63).
fn expect(shown: &str, vip: &str) {
    for line in [
        "info: port net_null0 workers [1]".to_string(),
        format!("vip: {vip}:443 table 65537"),
        "backend: 192.0.2.61 weight 1 state UP mac \"02:00:00:00:00:61\"".to_string(),
        "backend: 192.0.2.62 weight 2 state UP mac \"\"".to_string(),
        "refused: InvalidArgument: backend.weight: 10001 is above the maximum 10000".to_string(),
        format!("event: vip {vip}:443/tcp created"),
        format!("event: backend 192.0.2.61 added to {vip}:443/tcp"),
        format!("event: backend 192.0.2.62 added to {vip}:443/tcp"),
        format!("event: backend 192.0.2.63 added to {vip}:443/tcp"),
        "get: 3 backends".to_string(),
        "worker 1: rx ".to_string(),
        "vip stats: 3 backends, 0 packets".to_string(),
        "health: SERVING".to_string(),
    ] {
        assert!(shown.contains(&line), "missing {line:?} in\n{shown}");
    }
}

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

    let dir = common::temp_dir("go");
    let TlsLbd {
        lbd,
        addr,
        ca,
        cert,
        key,
    } = TlsLbd::start(&dir, "go");
    let unix = Command::new(out.join("bin/lbdsmoke"))
        .arg("-socket")
        .arg(&lbd.socket)
        .output()
        .unwrap();
    let tls = Command::new(out.join("bin/lbdsmoke"))
        .args(["-vip", "198.51.100.70", "-addr", &addr, "-ca"])
        .arg(&ca)
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .output()
        .unwrap();
    // Without a client certificate lbdsmoke refuses to try.
    let no_cert = Command::new(out.join("bin/lbdsmoke"))
        .args(["-addr", &addr, "-ca"])
        .arg(&ca)
        .output()
        .unwrap();
    let vips = lbd.json(&["vip", "list"]);
    let log = lbd.stop();
    let (unix_shown, tls_shown) = (shown(&unix), shown(&tls));
    assert!(
        unix.status.success(),
        "lbdsmoke on the socket:\n{unix_shown}\nlbd:\n{log}"
    );
    assert!(
        tls.status.success(),
        "lbdsmoke over TLS on {addr}:\n{tls_shown}\nlbd:\n{log}"
    );
    expect(&unix_shown, "198.51.100.60");
    expect(&tls_shown, "198.51.100.70");
    assert!(!no_cert.status.success(), "{}", shown(&no_cert));
    assert!(
        shown(&no_cert).contains("-addr needs -ca, -cert and -key"),
        "{}",
        shown(&no_cert)
    );
    let list = vips.as_array().unwrap();
    assert_eq!(list.len(), 2, "{vips}");
    for (i, vip) in ["198.51.100.60", "198.51.100.70"].iter().enumerate() {
        assert_eq!(list[i]["vip"], format!("{vip}:443/tcp"), "{vips}");
        let weights: Vec<(String, u64)> = list[i]["backends"]
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
    }
    eprintln!(
        "go build {:.1} s, run {:.1} s",
        built.as_secs_f64(),
        (t0.elapsed() - built).as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
