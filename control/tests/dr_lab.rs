//! The end-to-end DR lab (`scripts/lab.sh`, the same lab `make demo` runs):
//! a client, four nginx backends owning the VIP on `lo`, and `lbd` on
//! `net_af_packet`, in network namespaces on one bridge, configured through
//! `lbctl` only. Real Linux TCP on both ends. The scenarios run in order on
//! one lab (one lbd busy-polling a core is all these 2-core machines take).

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use lb_testkit::lab::{
    complete, downloads, event_time, tally, unaccounted, wait_until, Download, Lab,
};

const VIP: &str = "198.51.100.10:80/tcp";

#[test]
fn dr_lab() {
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(360));
    // --json: each run's final counters, to account for every frame.
    lab.ok(&["lbd-start", "--json"]);
    lab.ok(&["configure", "1", "1", "2"]);
    lab.ok(&["wait-healthy", "3"]);

    distribution(&lab);
    persistence_and_direct_return(&lab);
    failover(&lab);
    restart(&lab);
    bad_input_on_the_wire(&lab);
}

/// 3,000 new connections from many source ports follow the weights 1:1:2.
fn distribution(lab: &Lab) {
    let t = tally(&lab.ok(&["requests", "3000"]));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    for (backend, share) in [("be1", 0.25), ("be2", 0.25), ("be3", 0.5)] {
        let want = 3000.0 * share;
        let got = t.get(backend).copied().unwrap_or(0) as f64;
        assert!(
            (got - want).abs() <= 0.1 * want,
            "{backend}: {got} of 3000, want {want} ± 10%: {t:?}"
        );
    }
}

/// 50 long downloads stay on their backends, unbroken and unstalled, while
/// a backend is added, one is drained and weights change; meanwhile a
/// capture on lbd's port sees client-to-VIP packets only.
fn persistence_and_direct_return(lab: &Lab) {
    let pcap = format!("/tmp/lblab-{}/port.pcap", lab.id);
    let mut capture = lab
        .command(&[
            "exec", "lb", "tcpdump", "-i", "data0", "-n", "-w", &pcap, "-s", "96", "tcp",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));

    let running = lab.spawn_downloads(50, "1M");
    // A TCP connect check this time (the others are HTTP), the lab's timing.
    let check = lab.check();
    let mut add = vec![
        "lbctl",
        "backend",
        "add",
        VIP,
        "192.0.2.14",
        "--check",
        "tcp",
    ];
    add.extend(check.options.iter().map(String::as_str));
    lab.ok(&add);
    std::thread::sleep(Duration::from_millis(500));
    lab.ok(&["lbctl", "backend", "drain", VIP, "192.0.2.11"]);
    std::thread::sleep(Duration::from_millis(500));
    lab.ok(&["lbctl", "backend", "set-weight", VIP, "192.0.2.12", "3"]);
    lab.ok(&["lbctl", "backend", "set-weight", VIP, "192.0.2.13", "1"]);
    lab.ok(&["wait-healthy", "4"]);
    // New connections meanwhile: the drained backend gets none, the new one some.
    let t = tally(&lab.ok(&["requests", "300"]));
    let done = downloads(running);

    let _ = Command::new("kill")
        .args(["-INT", &capture.id().to_string()])
        .status();
    let _ = capture.wait();

    assert_eq!(done.len(), 50);
    let broken: Vec<&Download> = done.iter().filter(|d| !complete(d)).collect();
    assert!(broken.is_empty(), "downloads reset or stalled: {broken:?}");
    let on_drained = done.iter().filter(|d| d.backend == "be1").count();
    assert!(on_drained > 0, "some downloads ran on the drained backend");
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    assert_eq!(
        t.get("be1"),
        None,
        "the drained backend took new flows: {t:?}"
    );
    assert!(t.contains_key("be4"), "the added backend took none: {t:?}");

    // Direct return: 50 x 8 MiB went to the client, and not one packet of
    // it crossed the load balancer's port.
    let read = |filter: &str| -> usize {
        let out = lab.ok(&["exec", "lb", "tcpdump", "-n", "-r", &pcap, filter]);
        out.lines().count()
    };
    let to_vip = read("dst host 198.51.100.10 and dst port 80");
    // Replies from the VIP to lbd's own address are its checks via the VIP.
    let from_vip = read("src host 198.51.100.10 and not dst host 192.0.2.1");
    assert!(to_vip > 1000, "client packets seen: {to_vip}");
    assert_eq!(from_vip, 0, "replies crossed the load balancer");

    lab.ok(&["lbctl", "backend", "undrain", VIP, "192.0.2.11"]);
}

/// nginx stops on one backend: after `fall` failed checks, within fall x
/// interval + timeout (lbd's own event time), its check takes it down; new
/// connections all succeed on the others, a player looping over an HLS
/// playlist sees no failure beyond one retry, and downloads on the other
/// backends go on.
fn failover(lab: &Lab) {
    let check = lab.check();
    let events = lab.events();
    let running = lab.spawn_downloads(30, "1M");
    let player = lab.spawn(&["hls", "8"]);
    std::thread::sleep(Duration::from_secs(2));
    let stopping = SystemTime::now();
    lab.ok(&["nginx-stop", "2"]);
    let stopped = SystemTime::now();
    let down = events.wait_for("be2 marked down", Duration::from_secs(10), |e| {
        e["kind"] == "backend"
            && e["event"]["address"] == "192.0.2.12"
            && e["event"]["health"] == "unhealthy"
    });
    let health = lab.health_of("192.0.2.12");
    let t = tally(&lab.ok(&["requests", "300"]));
    let done = downloads(running);
    let player = player.wait_with_output().unwrap();
    let player = String::from_utf8(player.stdout).unwrap();

    // By lbd's clock: no sooner than `fall` checks allow, and within the configured bound of the
    // server being gone, plus 500 ms for a loaded machine's scheduling.
    let at = event_time(&down);
    let earliest = at.duration_since(stopping).unwrap_or_default();
    let latest = at.duration_since(stopped).unwrap_or_default();
    assert!(
        earliest >= check.fastest_detection(),
        "down {earliest:?} after the stop: {down}"
    );
    assert!(
        latest < check.slowest_detection() + Duration::from_millis(500),
        "down {latest:?} after the stop: {down}"
    );
    assert!(
        health["consecutive_failures"].as_u64().unwrap() >= u64::from(check.fall),
        "down after fewer than fall = {} failed checks: {health}",
        check.fall
    );
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    assert_eq!(t.get("be2"), None, "{t:?}");
    let f: Vec<&str> = player.split_whitespace().collect();
    assert_eq!(f.len(), 4, "{player}");
    assert!(f[1].parse::<u32>().unwrap() > 20, "{player}");
    assert_eq!(f[3], "0", "player fetches failed: {player}");
    let others: Vec<&Download> = done.iter().filter(|d| d.backend != "be2").collect();
    // Half of the weight is elsewhere: about 15 of 30 (binomial; 5 is far out).
    assert!(others.len() >= 5, "{done:?}");
    let broken: Vec<&&Download> = others.iter().filter(|d| !complete(d)).collect();
    assert!(
        broken.is_empty(),
        "downloads on healthy backends: {broken:?}"
    );

    lab.ok(&["nginx-start", "2"]);
    wait_until("be2 to come back", Duration::from_secs(10), || {
        lab.health("192.0.2.12") == "healthy"
    });
}

/// lbd restarts from its state file: the same configuration, and flows in
/// flight keep their backends (the same Maglev tables pick them again).
/// The run that stopped (everything so far) counted every frame it received.
fn restart(lab: &Lab) {
    let before = lab.ok(&["lbctl", "export"]);
    let running = lab.spawn_downloads(30, "1M");
    lab.ok(&["lbd-stop"]);
    let report = lab.report();
    lab.ok(&["lbd-start", "--json"]);
    let after = lab.ok(&["lbctl", "export"]);
    let done = downloads(running);
    let missing = unaccounted(report["workers"].as_array().unwrap());
    assert!(missing.is_empty(), "frames no counter took: {missing:?}");
    assert_eq!(
        before, after,
        "the restarted lbd has the same configuration"
    );
    let broken: Vec<&Download> = done.iter().filter(|d| !complete(d)).collect();
    assert!(
        broken.is_empty(),
        "downloads across the restart: {broken:?}"
    );
    lab.ok(&["wait-healthy", "4"]);
}

/// hping3 floods from the client (SYNs, TCP headers with a bad data offset,
/// UDP to a port that is no VIP, fragments) while downloads run: lbd keeps
/// forwarding, counts the drops by reason, no download fails, and every
/// frame lbd received, the floods' included, was counted by its outcome.
fn bad_input_on_the_wire(lab: &Lab) {
    let before = lab.drops();
    let running = lab.spawn_downloads(20, "1M");
    let hping = |args: &[&str]| {
        let mut a = vec!["exec", "client", "timeout", "3", "hping3", "-q"];
        a.extend_from_slice(args);
        a.push("198.51.100.10");
        lab.command(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let floods = [
        hping(&["-S", "-p", "80", "-i", "u200"]),
        hping(&["-S", "-p", "80", "-O", "2", "-i", "u500"]),
        hping(&["--udp", "-p", "5000", "-i", "u500"]),
        // net_af_packet's fanout has the kernel reassemble fragments
        // before lbd sees them, if it does (its reassembly memory is
        // limited, and a lost fragment loses the datagram): what arrives
        // whole is larger than lbd's frame and counted as truncated, what
        // arrives as fragments is forwarded. Which, and how many, is the
        // kernel's timing: the accounting below holds either way. (On a
        // NIC, fragments arrive as sent.)
        hping(&["-A", "-p", "80", "-f", "-d", "3000", "-i", "u5000"]),
    ];
    for mut f in floods {
        let _ = f.wait();
    }
    let t = tally(&lab.ok(&["requests", "200"]));
    let done = downloads(running);
    let after = lab.drops();
    let grew = |r: &str| after.get(r).unwrap_or(&0) - before.get(r).unwrap_or(&0);

    assert_eq!(t.get("FAILED"), None, "forwarding after the floods: {t:?}");
    let broken: Vec<&Download> = done.iter().filter(|d| !complete(d)).collect();
    assert!(broken.is_empty(), "downloads during the floods: {broken:?}");
    // Thousands of each were sent; the kernel delivers nearly all of them.
    assert!(grew("bad_header_length") > 100, "{after:?}");
    assert!(grew("unknown_vip_port") > 100, "{after:?}");

    lab.ok(&["lbd-stop"]);
    let report = lab.report();
    let missing = unaccounted(report["workers"].as_array().unwrap());
    assert!(missing.is_empty(), "frames no counter took: {missing:?}");
}
