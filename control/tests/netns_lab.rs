//! `lbd` with two queue pairs and two workers, plus its exception
//! interface, on the lab of `scripts/lab.sh` (the one the demo and dr_lab
//! run: a client, nginx backends that own the VIP on `lo`, the classic DR
//! setup, and lbd on `net_af_packet`, in network namespaces, documentation
//! address ranges only), here with one backend. Real Linux TCP on both
//! ends; the backend answers the client directly.

use std::time::{Duration, SystemTime};

use lb_testkit::lab::{event_time, tally, unaccounted, wait_until, Lab};

const VIP: &str = "198.51.100.10:80/tcp";
const VIP_ADDR: &str = "198.51.100.10";
const LOCAL: &str = "192.0.2.1";
const BACKEND: &str = "192.0.2.11";

#[test]
fn dr_through_two_workers_and_the_exception_path() {
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(240));
    // --json: the final counters. A closing timeout longer than the test,
    // so that every flow it makes is still in a table at the end.
    lab.ok_env(
        &[("LAB_WORKERS", "2")],
        &[
            "lbd-start",
            "--json",
            "--tcp-closing-timeout",
            "3600",
            "--vip-ping-rate",
            "50",
        ],
    );
    let events = lab.events();

    // The host answers a ping through DPDK: port -> tap -> kernel -> tap -> port.
    let ping = lab.run(&[
        "exec", "client", "ping", "-c", "3", "-i", "0.2", "-W", "2", LOCAL,
    ]);

    // One backend (be1), no MAC: lbd resolves it with ARP from the
    // dataplane. Its check is the lab's: fast, but `fall` misses to go down.
    lab.ok_env(&[("LAB_ORDER", "1")], &["configure"]);
    let check = lab.check();
    // The VIP answers a ping itself (the dataplane, not a backend), within
    // its rate: 5 a second here, under --vip-ping-rate 50; a flood (at
    // least 100 a second) is cut to the rate and the rest counted.
    let vip_ping = lab.run(&[
        "exec", "client", "ping", "-c", "3", "-i", "0.2", "-W", "2", VIP_ADDR,
    ]);
    let vip_flood = lab.run(&[
        "exec", "client", "ping", "-f", "-c", "400", "-W", "1", VIP_ADDR,
    ]);
    wait_until(
        "the backend's health check to pass",
        Duration::from_secs(20),
        || lab.health_of(BACKEND)["consecutive_successes"].as_u64() >= Some(1),
    );
    // Twenty HTTP requests through the VIP, each its own connection;
    // replies go straight back.
    let served = tally(&lab.ok(&["requests", "20"]));

    // The server dies: the HTTP check takes the backend down after `fall`
    // failures, within fall x interval + timeout (by lbd's clock); it
    // comes back after rise successes.
    let stopping = SystemTime::now();
    lab.ok(&["nginx-stop", "1"]);
    let stopped = SystemTime::now();
    let down = events.wait_for("the backend marked down", Duration::from_secs(20), |e| {
        e["kind"] == "backend"
            && e["event"]["address"] == BACKEND
            && e["event"]["health"] == "unhealthy"
    });
    let health = lab.health_of(BACKEND);
    let backend_state = lab.json(&["backend", "list", VIP])[0]["state"].clone();
    lab.ok(&["nginx-start", "1"]);
    wait_until("the backend to come back", Duration::from_secs(20), || {
        lab.health(BACKEND) == "healthy"
    });
    wait_until(
        "a request through the VIP after recovery",
        Duration::from_secs(20),
        || lab.run(&["requests", "1"]).stdout == b"be1\n",
    );
    let stats = lab.json(&["stats"]);
    // Prometheus, scraped inside lbd's namespace.
    let metrics = lab.metrics();
    let sample = |selector: &str| -> u64 {
        lb_testkit::exposition::value(&metrics, selector)
            .unwrap_or_else(|| panic!("no {selector} in\n{metrics}")) as u64
    };

    let backend_mac = lab.ok(&["exec", "be1", "cat", "/sys/class/net/eth0/address"]);
    let backend_mac = backend_mac.trim();
    // lab.sh fails this unless lbd exits with 0.
    lab.ok(&["lbd-stop"]);
    let report = lab.report();
    let log = lab.log();

    let at = event_time(&down);
    let earliest = at.duration_since(stopping).unwrap_or_default();
    let latest = at.duration_since(stopped).unwrap_or_default();
    assert!(
        earliest >= check.fastest_detection(),
        "down {earliest:?} after the stop: {down}"
    );
    assert!(
        latest < check.slowest_detection() + Duration::from_millis(600),
        "down {latest:?} after the stop: {down}"
    );
    assert!(
        health["consecutive_failures"].as_u64().unwrap() >= u64::from(check.fall),
        "down after fewer than fall = {} failed checks: {health}",
        check.fall
    );
    assert_eq!(
        backend_state, "down",
        "a failing backend is down for the dataplane"
    );
    assert!(
        stats["vips"][0]["packets"].as_u64().unwrap() >= 20,
        "{stats}"
    );
    assert!(
        sample("lb_vip_packets_total{vip=\"198.51.100.10:80/tcp\"}") >= 20,
        "{metrics}"
    );
    // The port's own counters, read live (not only at exit).
    assert!(
        sample("lb_port_rx_packets_total{port=\"net_af_packet0\"}") >= 20,
        "{metrics}"
    );
    assert_eq!(
        sample("lb_port_link_up{port=\"net_af_packet0\"}"),
        1,
        "{metrics}"
    );
    assert_eq!(
        sample("lb_port_rx_nombuf_total{port=\"net_af_packet0\"}"),
        0,
        "{metrics}"
    );
    assert!(
        sample("lb_backend_new_flows_total{vip=\"198.51.100.10:80/tcp\",backend=\"192.0.2.11\"}")
            >= 20
    );
    assert_eq!(
        sample("lb_backend_healthy{vip=\"198.51.100.10:80/tcp\",backend=\"192.0.2.11\"}"),
        1
    );
    assert!(
        sample("lb_worker_to_kernel_total{worker=\"1\"}")
            + sample("lb_worker_to_kernel_total{worker=\"2\"}")
            >= 3
    );
    assert!(
        ping.status.success(),
        "ping through the exception path: {}\n{report}",
        String::from_utf8_lossy(&ping.stdout)
    );
    assert!(
        vip_ping.status.success(),
        "a ping of the VIP, answered by the dataplane: {}\n{report}",
        String::from_utf8_lossy(&vip_ping.stdout)
    );
    let flood = String::from_utf8_lossy(&vip_flood.stdout);
    let total_echo = report["total"]["echo_replies"].as_u64().unwrap();
    let limited = report["total"]["drops"]["echo_rate_limited"]
        .as_u64()
        .unwrap();
    assert!(
        (3..400).contains(&total_echo) && limited > 0 && total_echo + limited >= 403,
        "the flood cut to the rate and counted (replies {total_echo}, limited {limited}): {flood}\n{report}"
    );
    assert_eq!(
        served.get("be1"),
        Some(&20),
        "every request through the VIP succeeded: {served:?}\n{report}"
    );
    let total = &report["total"];
    assert!(total["neigh_requests"].as_u64().unwrap() >= 1, "{report}");
    assert!(
        total["neigh_learned"].as_u64().unwrap() >= 1,
        "the backend's ARP reply was seen: {report}"
    );
    assert!(
        log.contains("backend resolved") && log.contains(backend_mac),
        "{log}"
    );
    assert!(total["to_kernel"].as_u64().unwrap() >= 3, "{report}");
    assert!(total["from_kernel"].as_u64().unwrap() >= 3, "{report}");
    assert!(
        total["arp_replies"].as_u64().unwrap() >= 1,
        "the client resolved the VIP through us: {report}"
    );
    assert!(total["new_flows"].as_u64().unwrap() >= 20, "{report}");
    let workers = report["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for w in workers {
        assert!(
            w["new_flows"].as_u64().unwrap() > 0,
            "both workers own flows in their own tables: {report}"
        );
    }
    let missing = unaccounted(workers);
    assert!(missing.is_empty(), "frames no counter took: {missing:?}");
    let flows: u64 = workers
        .iter()
        .map(|w| w["active_flows"].as_u64().unwrap())
        .sum();
    assert!(flows >= 20, "{report}");
}
