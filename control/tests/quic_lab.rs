//! QUIC connection-ID routing in the lab (issue #19): real QUIC (quinn, in
//! quic-peer) between the client and three backends, each server issuing
//! connection IDs that carry its server id (quic-peer/src/cid.rs), lbd
//! routing a UDP VIP in QUIC mode by them. The servers share one
//! stateless-reset key, as a deployment behind lbd should.
//!
//! In order, on one lab: a client that moves to new ports mid-transfer, and
//! one that moves to its other address, completes on the same backend; the
//! same moves with QUIC mode off break the connection (a new 5-tuple is
//! placed by Maglev, elsewhere, and reset there); new connections, all from
//! one client socket, spread by weight (placed by their DCID); a backend's
//! server stopped: once it is down its connection's packets go elsewhere
//! and the connection fails, and new connections avoid it.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use lb_testkit::lab::{wait_until, Check, Lab};

const VIP: &str = "198.51.100.10:4433/udp";
/// (lab name, address, server id)
const BACKENDS: [(&str, &str, &str); 3] = [
    ("be1", "192.0.2.11", "0a01"),
    ("be2", "192.0.2.12", "0a02"),
    ("be3", "192.0.2.13", "0a03"),
];
/// Nine moves to a new local port within one transfer of 6 MB read at
/// 2 MB/s (about 3 s). Without QUIC mode each new 5-tuple is placed by
/// Maglev over three backends of equal weight: the connection survives
/// only if all nine land on its own backend, a chance of (1/3)^9 = 5e-5.
const REBINDS: &str = "500000,1000000,1500000,2000000,2500000,3000000,3500000,4000000,4500000";
const BYTES: &str = "6000000";
const RATE: &str = "2000000";

/// One line of quic-peer client's output per connection.
#[derive(Debug)]
struct Outcome {
    ok: bool,
    backend: String,
    /// Why it failed ("reset", "timeout", ...); empty when ok.
    kind: String,
    bytes: u64,
    rebinds: u64,
}

fn outcomes(stdout: &str) -> Vec<Outcome> {
    stdout
        .lines()
        .filter(|l| l.starts_with("ok ") || l.starts_with("failed "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let ok = f[0] == "ok";
            let (kind, rest) = if ok { ("", &f[2..]) } else { (f[2], &f[3..]) };
            Outcome {
                ok,
                backend: f[1].to_string(),
                kind: kind.to_string(),
                bytes: rest[0].parse().unwrap(),
                rebinds: rest[1].trim_start_matches("rebinds=").parse().unwrap(),
            }
        })
        .collect()
}

/// `lab.sh quic-client ARGS`: its exit status and one outcome per connection.
fn quic_client(lab: &Lab, args: &[&str]) -> (bool, Vec<Outcome>) {
    let mut a = vec!["quic-client"];
    a.extend_from_slice(args);
    let out = lab.run(&a);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let done = outcomes(&stdout);
    let mut by_backend = std::collections::BTreeMap::<String, usize>::new();
    for d in &done {
        let key = if d.ok {
            d.backend.clone()
        } else {
            format!("failed:{}", d.kind)
        };
        *by_backend.entry(key).or_default() += 1;
    }
    let one = match &done[..] {
        [d] => format!("{d:?} "),
        _ => String::new(),
    };
    eprintln!(
        "quic-client {args:?}: {one}{by_backend:?}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), done)
}

fn add_backend(lab: &Lab, check: &Check, addr: &str, id: &str, weight: &str) {
    let mut add = vec![
        "lbctl",
        "backend",
        "add",
        VIP,
        addr,
        "--server-id",
        id,
        "--weight",
        weight,
        "--check",
        "tcp",
        "--check-port",
        "4434",
    ];
    add.extend(check.options.iter().map(String::as_str));
    lab.ok(&add);
}

#[test]
fn quic_lab() {
    let started = Instant::now();
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(150));
    lab.ok(&["lbd-start"]);
    let check = lab.check();
    for (i, (_, _, id)) in BACKENDS.iter().enumerate() {
        lab.ok(&["quic-server", &(i + 1).to_string(), id]);
    }
    lab.ok(&["lbctl", "vip", "add", VIP, "--quic-server-id-len", "2"]);
    for (_, addr, id) in BACKENDS {
        add_backend(&lab, &check, addr, id, "1");
    }
    let addrs: Vec<&str> = BACKENDS.iter().map(|b| b.1).collect();
    lab.wait_passing(Some(VIP), &addrs, Duration::from_secs(20));

    migration(&lab);
    spread_by_weight(&lab);
    backend_down(&lab, &check);

    lab.ok(&["lbd-stop"]);
    eprintln!("quic_lab took {:?}", started.elapsed());
}

/// Nine moves to new ports, then a move to the client's other address
/// (and new ports there): each transfer completes on the backend it began
/// on, routed by the server id in its DCID (`quic_by_id`). QUIC mode off:
/// the same nine moves break the connection.
fn migration(lab: &Lab) {
    let by_id = lab.counter("quic_by_id");
    for to in ["192.0.2.100:0", "192.0.2.101:0"] {
        let (ok, done) = quic_client(
            lab,
            &[
                "--bytes",
                BYTES,
                "--rate-limit",
                RATE,
                "--rebind-after",
                REBINDS,
                "--rebind-to",
                to,
            ],
        );
        assert!(ok, "moving to {to} in QUIC mode: {done:?}");
        assert_eq!(done.len(), 1, "{done:?}");
        let d = &done[0];
        assert!(
            d.ok && d.bytes == 6_000_000 && d.rebinds == 9 && d.backend.starts_with("be"),
            "all of it, from one backend, after 9 moves to {to}: {d:?}"
        );
    }
    // The client's packets of two transfers: ACKs mostly, hundreds each.
    let routed = lab.counter("quic_by_id") - by_id;
    eprintln!("quic_by_id +{routed}");
    assert!(routed > 200, "quic_by_id grew by {routed} only");

    lab.ok(&["lbctl", "vip", "set", VIP, "--no-quic"]);
    let by_id = lab.counter("quic_by_id");
    let (ok, done) = quic_client(
        lab,
        &[
            "--bytes",
            BYTES,
            "--rate-limit",
            RATE,
            "--rebind-after",
            REBINDS,
        ],
    );
    assert!(!ok, "without QUIC mode the moves must break it: {done:?}");
    assert_eq!(done.len(), 1, "{done:?}");
    let d = &done[0];
    assert!(
        !d.ok && d.backend.starts_with("be") && d.bytes < 6_000_000,
        "it began, then broke on a move: {d:?}"
    );
    assert_eq!(
        lab.counter("quic_by_id"),
        by_id,
        "nothing routed by id with QUIC mode off"
    );
    lab.ok(&["lbctl", "vip", "set", VIP, "--quic-server-id-len", "2"]);
}

/// Weights 1:1:2, 300 new connections from one client socket (one
/// 5-tuple: only their DCIDs tell them apart): about 75, 75, 150. Each
/// count is binomial (sd 7.5 and 8.7): ±35% is 3.5 sd or more, a chance
/// of about 1.5e-3 that any of the three strays that far.
fn spread_by_weight(lab: &Lab) {
    lab.ok(&["lbctl", "backend", "set-weight", VIP, "192.0.2.13", "2"]);
    let initial = lab.counter("quic_initial");
    let (ok, done) = quic_client(lab, &["--bytes", "1000", "--connections", "300"]);
    assert!(ok, "{done:?}");
    assert_eq!(done.len(), 300);
    for (name, share) in [("be1", 0.25), ("be2", 0.25), ("be3", 0.5)] {
        let want = 300.0 * share;
        let got = done.iter().filter(|d| d.backend == name).count() as f64;
        assert!(
            (got - want).abs() <= 0.35 * want,
            "{name}: {got} of 300 connections, want {want} ± 35%"
        );
    }
    let placed = lab.counter("quic_initial") - initial;
    assert!(
        placed >= 300,
        "quic_initial grew by {placed} for 300 connections"
    );
    lab.ok(&["lbctl", "backend", "set-weight", VIP, "192.0.2.13", "1"]);
}

/// A transfer runs; its backend's server is stopped (no CONNECTION_CLOSE,
/// as in a crash), its TCP check fails and lbd takes it down. From then on
/// the connection's packets (the client's keep-alives) carry the id of a
/// backend that is down (`quic_id_down`): placed afresh on another, which
/// knows no such connection and answers with a stateless reset (the
/// servers share the key, so the client believes it). The transfer fails;
/// new connections land on the other two.
fn backend_down(lab: &Lab, check: &Check) {
    let id_down = lab.counter("quic_id_down");
    let mut client = lab.spawn(&["quic-client", "--bytes", "30000000", "--rate-limit", RATE]);
    let mut lines = BufReader::new(client.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let name = first
        .strip_prefix("connected 1 ")
        .unwrap_or_else(|| panic!("quic-client began with {first:?}"))
        .to_string();
    let (n, (_, addr, _)) = BACKENDS
        .iter()
        .enumerate()
        .find(|(_, b)| b.0 == name)
        .unwrap_or_else(|| panic!("served by {name:?}"));
    std::thread::sleep(Duration::from_millis(500));
    let stop = Instant::now();
    lab.ok(&["quic-server-stop", &(n + 1).to_string()]);
    eprintln!("{name}'s server stopped in {:?}", stop.elapsed());
    let took = wait_until(
        "the stopped backend down",
        check.slowest_detection() + Duration::from_secs(2),
        || lab.health_on(VIP, addr)["health"] == "unhealthy",
    );
    eprintln!("{name} down {took:?} after its server stopped");
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = client.wait().unwrap();
    let done = outcomes(&rest.join("\n"));
    assert!(
        !status.success(),
        "the connection to {name} must fail: {rest:?}"
    );
    assert_eq!(done.len(), 1, "{rest:?}");
    let d = &done[0];
    assert!(!d.ok && d.backend == name && d.bytes < 30_000_000, "{d:?}");
    let grew = lab.counter("quic_id_down") - id_down;
    assert!(grew > 0, "no packet with the id of the down backend");
    eprintln!(
        "{name}'s connection: {} after {} bytes; quic_id_down +{grew}",
        d.kind, d.bytes
    );

    let (ok, done) = quic_client(lab, &["--bytes", "1000", "--connections", "60"]);
    assert!(ok, "{done:?}");
    assert_eq!(done.len(), 60);
    let on_down = done.iter().filter(|d| d.backend == name).count();
    assert_eq!(on_down, 0, "new connections on the down {name}: {done:?}");
}
