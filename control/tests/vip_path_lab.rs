//! Health checks along the DR path in the lab (`scripts/lab.sh`), with real
//! nginx and real Linux stacks. A check via the VIP (the default with an
//! exception interface) is a connection or datagram from the host to
//! VIP:port from source port `PROBE_PORT_BASE + slot`, routed by lbd's host
//! routes into the exception interface and steered by the dataplane to that
//! backend's MAC, exactly as a client's packet (the IP packet untouched),
//! and answered by the backend from the VIP. Beside it the real address is
//! checked too, so "server up, VIP path broken" is visible.
//!
//! In order: the VIP removed from a backend's `lo` under 50 long downloads;
//! nginx listening on a backend's own address only; a backend answering
//! ARP for the VIP (arp_ignore=0) and announcing it (arp_announce=0); a UDP
//! VIP checked with datagrams; host traffic to the VIP balanced as a
//! client's; a client whose source port is in the probe range.

use std::time::Duration;

use lb_testkit::lab::{complete, downloads, wait_until, Download, Lab};

const VIP: &str = "198.51.100.10:80/tcp";
const UDP_VIP: &str = "198.51.100.10:5353/udp";
const BACKENDS: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];

fn vip_on_lo(lab: &Lab, be: &str, op: &str) {
    lab.ok(&[
        "exec",
        be,
        "ip",
        "addr",
        op,
        "198.51.100.10/32",
        "dev",
        "lo",
    ]);
}

/// `lbctl diagnose` of one VIP: (exit status success, its table).
fn diagnose(lab: &Lab, vip: &str) -> (bool, String) {
    let out = lab.run(&["lbctl", "diagnose", vip, "--interval", "0"]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    )
}

#[test]
fn vip_path_lab() {
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(300));
    lab.ok(&["lbd-start"]);
    let check = lab.check();
    let slack = Duration::from_secs(2);
    lab.ok(&["lbctl", "vip", "add", VIP]);
    // No --via: with lbd's exception interface the checks go via the VIP.
    for be in BACKENDS {
        let mut add = vec!["lbctl", "backend", "add", VIP, be, "--check", "http:/name"];
        add.extend(check.options.iter().map(String::as_str));
        lab.ok(&add);
    }
    // Healthy means passed: the checks via the VIP went all the way.
    lab.wait_passing(Some(VIP), &BACKENDS, Duration::from_secs(20));
    let h = lab.health_of("192.0.2.11");
    assert_eq!(h["via"], "vip", "auto resolves to vip: {h}");
    assert_eq!(h["detail"], "http:/name via vip ok", "{h}");
    assert_eq!(h["vip_path"]["ok"], true, "{h}");
    assert_eq!(h["real"]["ok"], true, "both paths checked: {h}");
    assert!(lab.counter("probes_steered") > 0, "no probe was steered");
    let metrics = lab.metrics();
    for path in ["vip", "real"] {
        let selector = format!(
            "lb_backend_check_ok{{vip=\"198.51.100.10:80/tcp\",backend=\"192.0.2.11\",path=\"{path}\"}}"
        );
        assert_eq!(
            lb_testkit::exposition::value(&metrics, &selector),
            Some(1.0),
            "{selector} in\n{metrics}"
        );
    }
    // Nothing wrong yet: `lbctl diagnose` says so and exits 0.
    let (ok, fine) = diagnose(&lab, VIP);
    assert!(ok && fine.contains("no problem found"), "{fine}");
    let exported = lab.ok(&["lbctl", "export"]);
    assert!(
        !exported.contains("via ="),
        "auto is not written: {exported}"
    );
    let routes = lab.ok(&["exec", "lb", "ip", "route", "show", "dev", "lbk0"]);
    assert!(routes.contains("198.51.100.10"), "{routes}");

    vip_removed_under_downloads(&lab, &check, slack);
    server_on_its_own_address_only(&lab, &check, slack);
    backend_claims_the_vip(&lab);
    udp_vip_with_udp_checks(&lab, &check, slack);
    host_and_probe_range_traffic(&lab);

    lab.ok(&["lbd-stop"]);
}

/// be1 loses the VIP on lo while 50 long downloads run: its check via the
/// VIP fails (the kernel drops a packet for an address it does not own)
/// while its real address answers; it is down within fall x interval, no
/// new connection fails after that, the downloads on the others complete,
/// and `diagnose` names it and the cause. The VIP back: be1 returns.
fn vip_removed_under_downloads(lab: &Lab, check: &lb_testkit::lab::Check, slack: Duration) {
    let running = lab.spawn_downloads(50, "1M");
    // Connected is not yet answered: give every download its response
    // headers (which name the backend) before be1 loses the VIP.
    std::thread::sleep(Duration::from_secs(1));
    vip_on_lo(lab, "be1", "del");
    let took = wait_until(
        "be1 down by its check via the VIP",
        check.slowest_detection() + slack,
        || lab.health("192.0.2.11") == "unhealthy",
    );
    eprintln!("be1 down {took:?} after losing the VIP");
    let h = lab.health_of("192.0.2.11");
    assert_eq!(h["vip_path"]["ok"], false, "{h}");
    assert_eq!(h["real"]["ok"], true, "the server itself is up: {h}");
    let (ok, text) = diagnose(lab, VIP);
    assert!(!ok, "diagnose must fail: {text}");
    assert!(
        text.contains("192.0.2.11 answers on its own address but not on the VIP")
            && text.contains("Is 198.51.100.10/32 on its lo"),
        "{text}"
    );
    assert!(
        !text.contains("tcp 192.0.2.12:") && !text.contains("tcp 192.0.2.13:"),
        "only be1 is named: {text}"
    );
    let table = lab.ok(&["lbctl", "health"]);
    assert!(
        table.lines().any(|l| l.contains("192.0.2.11")
            && l.contains("unhealthy")
            && l.contains(" ok ")
            && l.contains("failed")),
        "REAL ok, VIP PATH failed: {table}"
    );
    // Every new connection lands on the others.
    let out = lab.ok(&["requests", "60"]);
    assert!(!out.lines().any(|l| l == "be1" || l == "FAILED"), "{out}");

    let done: Vec<Download> = downloads(running);
    assert_eq!(done.len(), 50);
    let unanswered: Vec<&Download> = done.iter().filter(|d| d.backend.is_empty()).collect();
    assert!(
        unanswered.is_empty(),
        "downloads without an answer: {unanswered:?}"
    );
    let others: Vec<&Download> = done.iter().filter(|d| d.backend != "be1").collect();
    assert!(
        others.len() > 20,
        "most downloads were on be2, be3: {done:?}"
    );
    let broken: Vec<&&Download> = others.iter().filter(|d| !complete(d)).collect();
    assert!(broken.is_empty(), "downloads on be2, be3 broke: {broken:?}");

    vip_on_lo(lab, "be1", "add");
    let back = Duration::from_millis(u64::from(
        (check.rise + 1) * check.interval_ms + check.timeout_ms,
    ));
    wait_until("be1 healthy again", back + slack, || {
        lab.health("192.0.2.11") == "healthy"
    });
}

/// nginx on be2 listens on 192.0.2.12:80 only: the real address passes,
/// the VIP is refused (it is be2's, but nothing listens there); diagnose
/// says the server listens on its own address only.
fn server_on_its_own_address_only(lab: &Lab, check: &lb_testkit::lab::Check, slack: Duration) {
    lab.ok(&["nginx-listen", "2", "192.0.2.12"]);
    wait_until(
        "be2 down by its check via the VIP",
        check.slowest_detection() + slack,
        || lab.health("192.0.2.12") == "unhealthy",
    );
    let h = lab.health_of("192.0.2.12");
    assert_eq!(h["real"]["ok"], true, "{h}");
    assert_eq!(h["vip_path"]["ok"], false, "{h}");
    assert!(
        h["detail"].as_str().unwrap().contains("refused"),
        "the VIP is be2's, nothing listens on it: {h}"
    );
    let (ok, text) = diagnose(lab, VIP);
    assert!(!ok, "{text}");
    assert!(
        text.contains("192.0.2.12 answers on its own address but refuses the VIP")
            && text.contains("listens on 192.0.2.12 only"),
        "{text}"
    );
    lab.ok(&["nginx-listen", "2"]);
    wait_until(
        "be2 healthy again",
        Duration::from_millis(u64::from(
            (check.rise + 1) * check.interval_ms + check.timeout_ms,
        )) + slack,
        || lab.health("192.0.2.12") == "healthy",
    );
}

/// be3 with arp_ignore=0 answers lbd's periodic ARP request for the VIP
/// (a reply to lbd's MAC); with arp_announce=0 it sends ARP requests from
/// the VIP. Either way the conflict is counted against be3's MAC,
/// reported as an event, and named by diagnose with the sysctl fix.
fn backend_claims_the_vip(lab: &Lab) {
    let events = lab.events();
    std::thread::sleep(Duration::from_millis(500));
    lab.ok(&[
        "exec",
        "be3",
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.arp_ignore=0",
        "net.ipv4.conf.all.arp_announce=0",
    ]);
    // An answer to lbd's own request for the VIP (every 10 s).
    let e = events.wait_for(
        "a conflict naming be3",
        Duration::from_secs(u64::from(control::hub::VIP_CLAIM_PROBE_S) + 5),
        |e| e["kind"] == "conflict",
    );
    assert_eq!(e["event"]["backend"], "192.0.2.13", "{e}");
    let claims = lab.json(&["health"]);
    let conflict = claims
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| {
            c.get("vip_conflict")
                .filter(|c| c["backend"] == "192.0.2.13")
        })
        .cloned()
        .unwrap_or_else(|| panic!("no conflict of be3 in {claims}"));
    let before = conflict["count"].as_u64().unwrap();
    assert!(before >= 1, "{conflict}");
    // A request sent from the VIP (arp_announce=0 takes the source address
    // of the packet that needs it): seen too.
    lab.ok(&["exec", "be3", "ip", "neigh", "flush", "dev", "eth0"]);
    let _ = lab.run(&[
        "exec",
        "be3",
        "ping",
        "-c",
        "1",
        "-W",
        "1",
        "-I",
        "198.51.100.10",
        "192.0.2.100",
    ]);
    wait_until("a second claim", Duration::from_secs(5), || {
        lab.json(&["health"])
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.get("vip_conflict"))
            .any(|c| c["backend"] == "192.0.2.13" && c["count"].as_u64().unwrap() > before)
    });
    assert!(lab.counter("vip_conflicts") > before);
    let (ok, text) = diagnose(lab, VIP);
    assert!(!ok, "{text}");
    assert!(
        text.contains("192.0.2.13")
            && text.contains("answers ARP/ND for the VIP")
            && text.contains("arp_ignore=1"),
        "{text}"
    );
    lab.ok(&[
        "exec",
        "be3",
        "sysctl",
        "-qw",
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
    ]);
}

/// A UDP VIP, each backend running a UDP echo server bound to the VIP,
/// checked with datagrams via the VIP: up; be1's server stopped: its
/// check fails ("refused": ICMP port unreachable) and it goes down; a
/// client's datagram through the VIP is answered from the VIP.
fn udp_vip_with_udp_checks(lab: &Lab, check: &lb_testkit::lab::Check, slack: Duration) {
    lab.ok(&["lbctl", "vip", "add", UDP_VIP]);
    for (i, be) in BACKENDS.iter().enumerate() {
        lab.ok(&["udp-echo", &(i + 1).to_string(), "5353"]);
        let mut add = vec!["lbctl", "backend", "add", UDP_VIP, be, "--check", "udp"];
        add.extend(check.options.iter().map(String::as_str));
        lab.ok(&add);
    }
    lab.wait_passing(Some(UDP_VIP), &BACKENDS, Duration::from_secs(20));
    for b in BACKENDS {
        let h = lab.health_on(UDP_VIP, b);
        assert_eq!(h["vip_path"]["ok"], true, "{h}");
    }
    assert_eq!(
        lab.health_on(UDP_VIP, "192.0.2.11")["detail"],
        "udp via vip ok"
    );
    // A client's datagram: balanced to a backend, echoed from the VIP.
    let reply = lab.ok(&[
        "exec",
        "client",
        "python3",
        "-c",
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); \
         s.connect(('198.51.100.10', 5353)); s.send(b'hello'); print(s.recv(100).decode())",
    ]);
    assert_eq!(reply.trim(), "hello");
    lab.ok(&["udp-echo-stop", "1"]);
    wait_until(
        "be1 down on the UDP VIP",
        check.slowest_detection() + slack,
        || lab.health_on(UDP_VIP, "192.0.2.11")["health"] == "unhealthy",
    );
    let h = lab.health_on(UDP_VIP, "192.0.2.11");
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .starts_with("udp via vip failed"),
        "{h}"
    );
    assert_eq!(
        lab.health_on(VIP, "192.0.2.11")["health"],
        "healthy",
        "the TCP VIP's check of be1 is its own"
    );
}

/// A process on lbd's host reaches the VIP as a client does (balanced,
/// answered by a backend); a source port of the probe range naming no
/// backend goes nowhere; a client whose source port is in the range is
/// balanced as any other.
fn host_and_probe_range_traffic(lab: &Lab) {
    let curl = |ns: &str, extra: &[&str]| {
        let mut a = vec![
            "exec",
            ns,
            "curl",
            "-s",
            "--max-time",
            "3",
            "-o",
            "-",
            "-w",
            " %{http_code}",
        ];
        a.extend_from_slice(extra);
        a.push("http://198.51.100.10/name");
        lab.run(&a)
    };
    let before = lab.counter("host_balanced");
    let out = curl("lb", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("be") && text.ends_with(" 200"),
        "the host's request: {text}"
    );
    assert!(lab.counter("host_balanced") > before);
    // Slot 4000 is nobody's: dropped, never balanced to a backend.
    let dropped = lab.drops().get("probe_no_backend").copied().unwrap_or(0);
    let out = curl("lb", &["--local-port", "65440"]);
    assert!(
        !out.status.success(),
        "a probe port of no backend got through"
    );
    assert!(lab.drops()["probe_no_backend"] > dropped);
    // A client from the range: balanced as any other.
    for port in ["61440", "61441", "61442"] {
        let out = curl("client", &["--local-port", port]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.ends_with(" 200"),
            "client from port {port}: {text}"
        );
    }
}
