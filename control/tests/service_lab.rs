//! `lbd` as a service, in the lab (`scripts/lab.sh`) with real nginx:
//! `/readyz` and `/healthz` on the metrics listener from an empty state to
//! serving and back to nothing servable; SIGHUP with a changed state file
//! applied while 30 downloads run, without a packet lost; SIGHUP with a
//! broken file (not TOML, then a field that does not validate) refused
//! with the reason logged and nothing changed; a log written to a file
//! carries no escape codes.

use std::time::Duration;

use lb_testkit::lab::{complete, downloads, unaccounted, wait_until, Lab};

const VIP: &str = "198.51.100.10:80/tcp";

/// (status, body) of GET `path` on the metrics listener.
fn get(lab: &Lab, path: &str) -> (u16, String) {
    let out = lab.ok(&["http", path]);
    let (body, code) = out.rsplit_once(' ').expect("body and status");
    (
        code.trim().parse().expect("an HTTP status"),
        body.to_string(),
    )
}

fn backends(lab: &Lab) -> Vec<String> {
    lab.json(&["backend", "list", VIP])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["address"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn service_lab() {
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(240));
    lab.ok(&["lbd-start"]);
    // Up, alive, but nothing to serve yet.
    assert_eq!(get(&lab, "/healthz"), (200, "ok\n".into()));
    let (code, body) = get(&lab, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no VIP is configured"), "{body}");
    assert_eq!(get(&lab, "/nothing").0, 404);

    lab.ok(&["configure"]);
    lab.ok(&["wait-healthy", "3"]);
    // Ready once a backend passed a check (a restarted lbd attracts no
    // traffic before): within a check or two.
    wait_until("ready", Duration::from_secs(5), || {
        get(&lab, "/readyz").0 == 200
    });
    assert_eq!(get(&lab, "/readyz").1, "ready: serving 198.51.100.10\n");

    // SIGHUP with a changed file (a fourth backend) under traffic.
    let events = lab.events();
    let running = lab.spawn_downloads(30, "1M");
    let drops_before = lab.drops();
    let state = lab.dir().join("state.toml");
    let written = std::fs::read_to_string(&state).unwrap();
    // Appended after the last [[vip]]'s sections: one more of its backends.
    let changed = format!("{written}\n[[vip.backend]]\naddress = \"192.0.2.14\"\n");
    std::fs::write(&state, &changed).unwrap();
    lab.ok(&["lbd-reload"]);
    wait_until("be4 added by the reload", Duration::from_secs(5), || {
        backends(&lab).contains(&"192.0.2.14".to_string())
    });
    let e = events.wait_for("the reload's change", Duration::from_secs(5), |e| {
        e["kind"] == "config"
            && e["event"]["what"]
                .as_str()
                .is_some_and(|w| w.starts_with("reload: "))
    });
    assert!(
        e["event"]["what"].as_str().unwrap().contains("192.0.2.14"),
        "{e}"
    );
    let exported = lab.ok(&["lbctl", "export"]);

    // Broken files: refused, the reason logged, nothing changed.
    let refusals = || lab.log().matches("reload refused").count();
    for (broken, reason) in [
        ("[[vip]\naddress = ", "state.toml"),
        (
            &*format!("{changed}\n[[vip.backend]]\naddress = \"192.0.2.15\"\nmac = \"zz\"\n"),
            "backend.mac",
        ),
    ] {
        let seen = refusals();
        std::fs::write(&state, broken).unwrap();
        lab.ok(&["lbd-reload"]);
        wait_until("the reload refused", Duration::from_secs(5), || {
            refusals() > seen
        });
        let log = lab.log();
        let line = log.lines().rfind(|l| l.contains("reload refused")).unwrap();
        assert!(line.contains(reason), "{line}");
        assert_eq!(lab.ok(&["lbctl", "export"]), exported, "nothing changed");
    }
    std::fs::write(&state, &changed).unwrap();

    // Every download completed, and the counters say no packet was lost.
    let done = downloads(running);
    assert_eq!(done.len(), 30);
    let broken: Vec<_> = done.iter().filter(|d| !complete(d)).collect();
    assert!(broken.is_empty(), "downloads broke: {broken:?}");
    assert_eq!(lab.drops(), drops_before, "a drop during the reloads");
    let stats = lab.json(&["stats"]);
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(unaccounted(workers), Vec::<String>::new());
    assert!(workers.iter().all(|w| w["tx_failed"] == 0), "{stats}");

    // Nothing servable: be4 (no check: up while its MAC is known) removed,
    // every server stopped: not ready, still alive.
    lab.ok(&["lbctl", "backend", "del", VIP, "192.0.2.14"]);
    for i in ["1", "2", "3", "4"] {
        lab.ok(&["nginx-stop", i]);
    }
    let check = lab.check();
    wait_until(
        "not ready with every backend down",
        check.slowest_detection() + Duration::from_secs(2),
        || get(&lab, "/readyz").0 == 503,
    );
    let (_, body) = get(&lab, "/readyz");
    assert!(body.contains("none of the 1 VIP(s) is servable"), "{body}");
    assert_eq!(get(&lab, "/healthz").0, 200);
    for i in ["1", "2", "3", "4"] {
        lab.ok(&["nginx-start", i]);
    }

    lab.ok(&["lbd-stop"]);
    let log = lab.log();
    assert!(!log.is_empty());
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log written to a file"
    );
}
