//! The lab (`scripts/lab.sh`) with lbd on `net_af_xdp` instead of
//! `net_af_packet`: an XDP socket on the veth (generic XDP), as lbd would
//! take a cloud VM's NIC. HTTP through the VIP reaches every backend and
//! is answered directly, the checks travel the exception path (via the
//! VIP), a backend whose server stops goes down, and every frame received
//! is counted by an outcome.

use std::time::Duration;

use lb_testkit::lab::{tally, unaccounted, wait_until, Lab};

#[test]
fn xdp_lab() {
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(180));
    lab.ok_env(&[("LAB_PORT", "af_xdp")], &["lbd-start"]);
    let info = lab.json(&["info"]);
    assert_eq!(info["port"], "net_af_xdp0", "{info}");
    lab.ok(&["configure"]);
    lab.wait_passing(
        None,
        &["192.0.2.11", "192.0.2.12", "192.0.2.13"],
        Duration::from_secs(20),
    );
    let h = lab.health_of("192.0.2.11");
    assert_eq!(h["via"], "vip", "{h}");
    assert!(
        lab.counter("probes_steered") > 0,
        "no check went via the VIP"
    );

    let t = tally(&lab.ok(&["requests", "60"]));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    for be in ["be1", "be2", "be3"] {
        assert!(t.contains_key(be), "{be} served none: {t:?}");
    }

    lab.ok(&["nginx-stop", "2"]);
    let check = lab.check();
    wait_until(
        "be2 down",
        check.slowest_detection() + Duration::from_secs(2),
        || lab.health("192.0.2.12") == "unhealthy",
    );
    let t = tally(&lab.ok(&["requests", "30"]));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    assert_eq!(t.get("be2"), None, "{t:?}");
    lab.ok(&["nginx-start", "2"]);

    let stats = lab.json(&["stats"]);
    assert_eq!(
        unaccounted(stats["workers"].as_array().unwrap()),
        Vec::<String>::new()
    );
    lab.ok(&["lbd-stop"]);
}
