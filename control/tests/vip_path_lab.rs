//! Health checks via the VIP in the DR lab (`scripts/lab.sh`): a check of
//! backend N is a connection from the host to VIP:port from source port
//! `PROBE_PORT_BASE + slot`, routed by lbd's host routes into the exception
//! interface and steered by the dataplane to that backend's MAC, exactly as
//! a client's packet (the IP packet untouched), and answered by the backend
//! from the VIP. A backend that lacks the VIP on `lo` fails it; a check via
//! the real address does not notice.

use std::time::Duration;

use lb_testkit::lab::{wait_until, Lab};

const VIP: &str = "198.51.100.10:80/tcp";

#[test]
fn vip_path_lab() {
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(240));
    lab.ok(&["lbd-start"]);
    let check = lab.check();
    lab.ok(&["lbctl", "vip", "add", VIP]);
    // be1 and be2 checked via the VIP, be3 via its own address.
    for (be, via) in [
        ("192.0.2.11", "vip"),
        ("192.0.2.12", "vip"),
        ("192.0.2.13", "real"),
    ] {
        let mut add = vec![
            "lbctl",
            "backend",
            "add",
            VIP,
            be,
            "--check",
            "http:/name",
            "--via",
            via,
        ];
        add.extend(check.options.iter().map(String::as_str));
        lab.ok(&add);
    }
    // Healthy means passed: the checks via the VIP went all the way.
    wait_until(
        "three backends passing their checks",
        Duration::from_secs(20),
        || {
            ["192.0.2.11", "192.0.2.12", "192.0.2.13"].iter().all(|b| {
                lab.health_of(b)["consecutive_successes"]
                    .as_u64()
                    .unwrap_or(0)
                    >= 2
            })
        },
    );
    let detail = lab.health_of("192.0.2.11")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(detail, "http:/name via vip ok");
    assert!(lab.counter("probes_steered") > 0, "no probe was steered");
    // Nothing wrong yet: `lbctl diagnose` says so and exits 0.
    let fine = lab.ok(&["lbctl", "diagnose", "--interval", "0"]);
    assert!(fine.contains("no problem found"), "{fine}");
    let exported = lab.ok(&["lbctl", "export"]);
    assert!(exported.contains("via = \"vip\""), "{exported}");
    // The host routes lbd installed for the checks.
    let routes = lab.ok(&["exec", "lb", "ip", "route", "show", "dev", "lbk0"]);
    assert!(routes.contains("198.51.100.10"), "{routes}");

    // be1 loses the VIP on lo: its check via the VIP fails (the kernel
    // drops a packet for an address it does not own), be2 stays up.
    lab.ok(&[
        "exec",
        "be1",
        "ip",
        "addr",
        "del",
        "198.51.100.10/32",
        "dev",
        "lo",
    ]);
    let slack = Duration::from_secs(2);
    wait_until(
        "be1 down by its check via the VIP",
        check.slowest_detection() + slack,
        || lab.health("192.0.2.11") == "unhealthy",
    );
    let down = lab.health_of("192.0.2.11")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(down.starts_with("http:/name via vip failed"), "{down}");
    assert_eq!(lab.health("192.0.2.12"), "healthy");
    // `lbctl diagnose` names be1 and the likely cause, and fails.
    let diag = lab.run(&["lbctl", "diagnose", VIP, "--interval", "0"]);
    let text = String::from_utf8_lossy(&diag.stdout);
    assert!(!diag.status.success(), "diagnose must fail: {text}");
    assert!(
        text.contains("192.0.2.11 fails its check through the VIP")
            && text.contains("Is 198.51.100.10/32 on its lo"),
        "{text}"
    );
    assert!(!text.contains("192.0.2.12 fails"), "{text}");
    // Clients reach only the healthy backends meanwhile.
    let out = lab.ok(&["requests", "60"]);
    assert!(!out.lines().any(|l| l == "be1" || l == "FAILED"), "{out}");

    // Back on lo: back up within rise checks.
    lab.ok(&[
        "exec",
        "be1",
        "ip",
        "addr",
        "add",
        "198.51.100.10/32",
        "dev",
        "lo",
    ]);
    let back = Duration::from_millis(u64::from(
        (check.rise + 1) * check.interval_ms + check.timeout_ms,
    ));
    wait_until("be1 healthy again", back + slack, || {
        lab.health("192.0.2.11") == "healthy"
    });

    // be3, checked via its own address, does not notice it lacks the VIP:
    // what the check via the VIP is for.
    lab.ok(&[
        "exec",
        "be3",
        "ip",
        "addr",
        "del",
        "198.51.100.10/32",
        "dev",
        "lo",
    ]);
    std::thread::sleep(check.slowest_detection() + slack);
    assert_eq!(lab.health("192.0.2.13"), "healthy");
    lab.ok(&[
        "exec",
        "be3",
        "ip",
        "addr",
        "add",
        "198.51.100.10/32",
        "dev",
        "lo",
    ]);

    lab.ok(&["lbd-stop"]);
}
