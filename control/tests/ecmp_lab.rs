//! Several balancers behind ECMP (`LAB_TOPO=ecmp scripts/lab.sh`): a router
//! namespace running BIRD with multipath and L4 hashing, two lbd instances
//! each announcing the VIP over BGP through its own BIRD (the session runs
//! over lbd's exception path), a client behind the router and three nginx
//! backends replying straight to the client. The scenarios run in order on
//! one lab.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use lb_testkit::lab::{complete, downloads, event_time, tally, wait_until, Download, Lab};

const VIP: &str = "198.51.100.10:80/tcp";

#[test]
fn ecmp_lab() {
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "ecmp", Duration::from_secs(360));
    let lb2 = lab.instance(2);
    lab.ok(&["lbd-start"]);
    lb2.ok(&["lbd-start"]);
    lab.ok(&["configure"]);
    // The second instance gets its backends in another order: Maglev must
    // not care (backends are ordered by address, not by insertion).
    lb2.ok_env(&[("LAB_ORDER", "3 2 1")], &["configure"]);
    lab.ok(&["wait-healthy", "3"]);
    lb2.ok(&["wait-healthy", "3"]);
    wait_until("both instances' routes", Duration::from_secs(20), || {
        nexthops(&lab) == ["192.0.2.1", "192.0.2.2"]
    });
    wait_until(
        "BFD up with both instances",
        Duration::from_secs(10),
        || bfd_sessions(&lab) == ["192.0.2.1 Up", "192.0.2.2 Up"],
    );

    digests(&lab, &lb2);
    let placement = both_carry_traffic(&lab, &lb2);
    hard_crash(&lab, &lb2, &placement);
    graceful_stop(&lab, &lb2, &placement);
    withdrawn_without_backends(&lab, &lb2);

    // Two are the scenarios' (the kill, the stop); any more were flaps.
    let log = std::fs::read_to_string(lab.dir().join("router/bird.log")).unwrap();
    let expired = log.lines().filter(|l| l.ends_with(" expired")).count();
    eprintln!("the router's BFD sessions expired {expired} times (2 by the kill and the stop)");
}

/// The router's next hops for the VIP, sorted.
fn nexthops(lab: &Lab) -> Vec<String> {
    lab.ok(&["nexthops"]).lines().map(str::to_string).collect()
}

/// The router's BFD sessions, "ADDRESS STATE", sorted.
fn bfd_sessions(lab: &Lab) -> Vec<String> {
    lab.ok(&["bfd-sessions"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Instance 2 crashes (SIGKILL: no withdrawal, no grace) with 50 downloads
/// in flight: BFD takes its route away within a second (the BGP hold time
/// is 3 s), new connections through instance 1 connect at their first SYN
/// (a retransmitted one costs 1 s), every download completes through
/// instance 1. Restarted from its state file, instance 2 rejoins: its
/// route and BFD session back, the same backend for each of the 100
/// source ports, new connections through it again.
fn hard_crash(lab: &Lab, lb2: &Lab, placement: &BTreeMap<u16, String>) {
    let before = lb2.counter("new_flows");
    // 500 kB/s (16 s each): at 1 MB/s the 2-core VMs' kernels dropped
    // packets of their own (softnet backlog), now and then a new SYN.
    // ECMP_DOWNLOAD_RATE (curl's --limit-rate) tries another rate.
    let rate = std::env::var("ECMP_DOWNLOAD_RATE").unwrap_or_else(|_| "500K".into());
    let running = lab.spawn_downloads(50, &rate);
    let carried = lb2.counter("new_flows") - before;
    assert!(carried >= 10, "instance 2 took {carried} of the downloads");
    // The kill mid-download, not in the burst of the 50 curls'
    // own start, which on 2 cores held an lbd's monitor up for a second
    // (it withdrew its route: "a worker is stalled").
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(nexthops(lab), ["192.0.2.1", "192.0.2.2"]);
    let killed: u64 = lb2.ok(&["lbd-kill"]).trim().parse().unwrap();
    // Watched from after the kill (a watch from before could take a flap
    // for it); a route gone before the watch's first poll counts as gone
    // at that poll.
    let seen = lab.run(&["nexthops-wait", "192.0.2.1"]);
    assert!(seen.status.success(), "{seen:?}");
    let seen: u64 = String::from_utf8_lossy(&seen.stdout)
        .trim()
        .parse()
        .unwrap();
    let gone = Duration::from_millis(seen.saturating_sub(killed));
    eprintln!("hard crash: instance 2's route gone {gone:?} after SIGKILL (polled every 20 ms)");
    assert!(gone < Duration::from_secs(1), "route gone after {gone:?}");
    let bgp = lab.ok(&["bgp-sessions"]);
    assert!(
        bgp.lines()
            .any(|l| l.starts_with("lb2 ") && l.contains("BFD session down")),
        "the router's session to instance 2 did not end by BFD:\n{bgp}"
    );

    // While instance 2 is gone: new connections, all through instance 1.
    let before = lab.counter("new_flows");
    let backlog = softnet_drops();
    let connects = lab.ok(&["connects", "20"]);
    let backlog = softnet_drops() - backlog;
    let through_one = lab.counter("new_flows") - before;
    let mut times: Vec<f64> = connects
        .lines()
        .map(|l| {
            let (t, backend) = l.split_once(' ').unwrap();
            assert!(backend.starts_with("be"), "{connects}");
            t.parse().unwrap()
        })
        .collect();
    assert_eq!(times.len(), 20, "{connects}");
    times.sort_by(f64::total_cmp);
    eprintln!(
        "hard crash: 20 new connections through instance 1 (downloads at {rate}/s), connect \
         time median {:.1} ms, max {:.1} ms; meanwhile the kernel's backlog dropped {backlog} \
         packets, instance 1's port: {}",
        times[10] * 1e3,
        times[19] * 1e3,
        port_losses(lab)
    );
    assert!(
        times[19] < 1.0,
        "a connection took {} s: {connects}\ninstance 1's port: {}; \
         the kernel's backlog dropped {backlog} packets meanwhile",
        times[19],
        port_losses(lab)
    );
    assert!(
        through_one >= 20,
        "new flows through instance 1: {through_one}"
    );

    let done = downloads(running);
    assert_eq!(done.len(), 50);
    let broken: Vec<&Download> = done.iter().filter(|d| !complete(d)).collect();
    eprintln!(
        "hard crash: {} of 50 downloads complete (about {carried} started through instance 2)",
        50 - broken.len()
    );
    assert!(broken.is_empty(), "downloads across the crash: {broken:?}");

    // The restart: lbd's state file holds its configuration; its BIRD kept
    // running without the interface and takes the new one.
    let start = Instant::now();
    lb2.ok(&["lbd-start"]);
    lab.ok(&["lbctl", "--socket", &lb2.socket(), "digest"]);
    wait_until(
        "instance 2 back in the route",
        Duration::from_secs(20),
        || nexthops(lab) == ["192.0.2.1", "192.0.2.2"],
    );
    let routed = start.elapsed();
    wait_until("BFD up with instance 2", Duration::from_secs(10), || {
        bfd_sessions(lab) == ["192.0.2.1 Up", "192.0.2.2 Up"]
    });
    assert_eq!(lb2.ok(&["bfd-sessions", "lb"]), "192.0.2.254 Up\n");
    eprintln!(
        "hard crash: instance 2 restarted, routed again after {routed:?}, BFD up after {:?}",
        start.elapsed()
    );
    let again = both_carry_traffic(lab, lb2);
    let moved: Vec<(&u16, &String, &String)> = placement
        .iter()
        .filter_map(|(p, b)| {
            let now = again.get(p)?;
            (now != b).then_some((p, b, now))
        })
        .collect();
    assert!(moved.is_empty(), "port, backend before, after: {moved:?}");
}

/// What an lbd's port lost (its receive queues full) and its drops, to
/// explain a lost SYN.
fn port_losses(lab: &Lab) -> String {
    let metrics = lab.metrics();
    let missed = metrics
        .lines()
        .filter(|l| l.starts_with("lb_port_rx_missed") || l.starts_with("lb_port_tx_errors"));
    format!("{:?}, drops {:?}", missed.collect::<Vec<_>>(), lab.drops())
}

/// Packets the kernel dropped for a full per-CPU backlog (every namespace).
fn softnet_drops() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .unwrap()
        .lines()
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .sum()
}

/// `lbctl digest` over both instances agrees, and tells a difference.
fn digests(lab: &Lab, lb2: &Lab) {
    let both = ["lbctl", "--socket", &lb2.socket(), "digest"];
    let out = lab.ok(&both);
    let digests: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(digests.len(), 2, "{out}");
    assert_eq!(digests[0], digests[1], "{out}");
    assert!(out.contains("announced: 198.51.100.10"), "{out}");

    lb2.ok(&["lbctl", "backend", "set-weight", VIP, "192.0.2.11", "2"]);
    let differ = lab.run(&both);
    assert!(
        !differ.status.success(),
        "a different weight went unnoticed"
    );
    assert!(
        String::from_utf8_lossy(&differ.stderr).contains("differ"),
        "{differ:?}"
    );
    lb2.ok(&["lbctl", "backend", "set-weight", VIP, "192.0.2.11", "1"]);
    lab.ok(&both);
}

/// New connections spread over both instances (ECMP), and each of 100
/// fixed source ports gets a backend; returns port -> backend.
fn both_carry_traffic(lab: &Lab, lb2: &Lab) -> BTreeMap<u16, String> {
    let before = (lab.counter("new_flows"), lb2.counter("new_flows"));
    let t = tally(&lab.ok(&["requests", "400"]));
    let after = (lab.counter("new_flows"), lb2.counter("new_flows"));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    let (one, two) = (after.0 - before.0, after.1 - before.1);
    assert!(
        one >= 80 && two >= 80,
        "400 connections, new flows per instance: {one} and {two}"
    );
    let placement = port_requests(lab);
    assert!(
        placement.values().all(|b| b.starts_with("be")),
        "{placement:?}"
    );
    placement
}

fn port_requests(lab: &Lab) -> BTreeMap<u16, String> {
    lab.ok(&["port-requests", "42000", "100"])
        .lines()
        .map(|l| {
            let (p, b) = l.split_once(' ').unwrap();
            (p.parse().unwrap(), b.to_string())
        })
        .collect()
}

/// Stopping instance 1 withdraws its route at once and keeps forwarding
/// for the grace period; the long downloads it carried move to instance 2
/// and keep their backends (none fails); every 5-tuple seen before gets
/// the same backend through instance 2 alone.
fn graceful_stop(lab: &Lab, lb2: &Lab, placement: &BTreeMap<u16, String>) {
    let events = lab.events();
    let running = lab.spawn_downloads(50, "1M");
    let carried = lab.counter("active_flows");
    assert!(carried >= 10, "instance 1 carries {carried} flows");

    let (start, signalled) = (Instant::now(), SystemTime::now());
    let stopping = lab.spawn(&["lbd-stop"]);
    let withdrawing = events.wait_for("instance 1 withdrawing", Duration::from_secs(5), |e| {
        e["kind"] == "routes" && e["event"]["announced"] == serde_json::json!([])
    });
    let withdrawn = wait_until(
        "instance 1's route withdrawn",
        Duration::from_secs(10),
        || nexthops(lab) == ["192.0.2.2"],
    );
    let stopped = stopping.wait_with_output().unwrap();
    let stop_time = start.elapsed();
    assert!(stopped.status.success(), "{stopped:?}");
    // lbd withdraws at once (its own clock), and the router has moved the
    // flows while lbd still forwarded, through its 3 s grace period.
    let at_once = event_time(&withdrawing)
        .duration_since(signalled)
        .unwrap_or_default();
    assert!(
        at_once < Duration::from_secs(1),
        "withdrawn by lbd {at_once:?} after the signal: {withdrawing}"
    );
    assert!(
        withdrawn < stop_time,
        "the router withdrew after {withdrawn:?}, lbd stopped after {stop_time:?}"
    );
    assert!(
        stop_time >= Duration::from_secs(3),
        "stopped after {stop_time:?}"
    );

    let before = lb2.counter("new_flows");
    let again = port_requests(lab);
    let through_two = lb2.counter("new_flows") - before;
    let done = downloads(running);

    // (A port whose last flow is still in instance 2's table reuses it.)
    assert!(
        through_two >= 80,
        "new flows through instance 2: {through_two}"
    );
    let moved: Vec<(&u16, &String, &String)> = placement
        .iter()
        .filter_map(|(p, b)| {
            let now = again.get(p)?;
            (now != b).then_some((p, b, now))
        })
        .collect();
    assert!(
        moved.is_empty(),
        "port, backend before, after: {moved:?}\nhealth on #2: {}",
        lb2.ok(&["lbctl", "health"])
    );
    assert_eq!(done.len(), 50);
    let broken: Vec<&Download> = done.iter().filter(|d| !complete(d)).collect();
    assert!(broken.is_empty(), "downloads across the stop: {broken:?}");
}

/// Instance 1 rejoins; then with every backend down both withdraw the VIP
/// (the router has no route left), and one backend back announces it again.
fn withdrawn_without_backends(lab: &Lab, lb2: &Lab) {
    // Watch instance 2's events from here: 3 backends down, the routes
    // withdrawn, one backend up, the routes announced.
    let events = lb2.events();
    lab.ok(&["lbd-start"]);
    wait_until(
        "instance 1 back in the route",
        Duration::from_secs(20),
        || nexthops(lab) == ["192.0.2.1", "192.0.2.2"],
    );
    for i in ["1", "2", "3"] {
        lab.ok(&["nginx-stop", i]);
    }
    wait_until("the VIP withdrawn", Duration::from_secs(10), || {
        nexthops(lab).is_empty()
    });
    let info = lb2.json(&["info"]);
    assert_eq!(info["announced"], serde_json::json!([]), "{info}");
    let metrics = lb2.metrics();
    assert!(
        metrics.contains("lb_route_announced{address=\"198.51.100.10\"} 0"),
        "{metrics}"
    );
    // (curl fails, so the command does too: read its output regardless.)
    let t = tally(&String::from_utf8_lossy(
        &lab.run(&["requests", "3"]).stdout,
    ));
    assert_eq!(t.get("FAILED"), Some(&3), "no route, no service: {t:?}");

    lab.ok(&["nginx-start", "1"]);
    wait_until("the VIP announced again", Duration::from_secs(10), || {
        nexthops(lab) == ["192.0.2.1", "192.0.2.2"]
    });
    let t = tally(&lab.ok(&["requests", "20"]));
    assert_eq!(t.get("be1"), Some(&20), "{t:?}");

    // Instance 2's route events up to the announcement, in order.
    let mut routes = Vec::new();
    events.wait_for("instance 2 announcing again", Duration::from_secs(5), |e| {
        if e["kind"] != "routes" {
            return false;
        }
        routes.push(e["event"]["announced"].clone());
        e["event"]["announced"] != serde_json::json!([])
    });
    assert_eq!(
        routes,
        [serde_json::json!([]), serde_json::json!(["198.51.100.10"])],
    );
    lab.ok(&["nginx-start", "2"]);
    lab.ok(&["nginx-start", "3"]);
}
