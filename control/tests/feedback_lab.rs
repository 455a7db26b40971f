//! Load-aware balancing in the lab, with the real agent (`lb-agent --file`,
//! polled over HAProxy's agent-check protocol) on each backend: agents
//! reporting 100%, 50% and 25% split new connections by the effective
//! weights; 50 long downloads complete untouched while the weights move;
//! an agent saying "drain" gets no new connection while its downloads
//! finish; an agent that dies gives the configured weight back and its
//! backend stays up; a cap of active flows sends new connections
//! elsewhere, and below its low mark the backend takes them again.

use std::collections::BTreeMap;
use std::time::Duration;

use lb_testkit::lab::{complete, downloads, tally, wait_until, Lab};

const VIP: &str = "198.51.100.10:80/tcp";
const BACKENDS: [&str; 3] = ["192.0.2.11", "192.0.2.12", "192.0.2.13"];

/// Each backend's (effective weight, agent's percentage) as lbctl shows it.
fn effective(lab: &Lab) -> BTreeMap<String, (u64, u64)> {
    lab.json(&["backend", "list", VIP])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                (
                    b["effective_weight"].as_u64().unwrap(),
                    b["agent_status"]["percent"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn weights(lab: &Lab) -> Vec<u64> {
    let e = effective(lab);
    BACKENDS.iter().map(|b| e[*b].0).collect()
}

#[test]
fn feedback_lab() {
    let agent = std::path::Path::new(env!("CARGO_BIN_EXE_lbd")).with_file_name("lb-agent");
    assert!(
        agent.exists(),
        "{} is missing: cargo build --workspace builds it (make test does)",
        agent.display()
    );
    let lab = Lab::up(env!("CARGO_BIN_EXE_lbd"), "flat", Duration::from_secs(240));
    // Closed TCP flows leave the table after 2 s (not 60), so a cap's count
    // falls soon after its downloads end.
    lab.ok(&["lbd-start", "--tcp-closing-timeout", "2"]);
    lab.ok(&["configure", "20", "20", "20"]);
    lab.wait_passing(None, &BACKENDS, Duration::from_secs(20));
    for (i, answer) in [("1", "100%"), ("2", "50%"), ("3", "25%")] {
        lab.ok(&["agent", i, answer]);
    }
    for b in BACKENDS {
        lab.ok(&[
            "lbctl",
            "backend",
            "set-load",
            VIP,
            b,
            "--agent",
            "tcp",
            "--agent-interval",
            "200",
        ]);
    }
    wait_until("effective weights 20/10/5", Duration::from_secs(15), || {
        weights(&lab) == [20, 10, 5]
    });
    let listed = lab.ok(&["lbctl", "backend", "list", VIP]);
    assert!(
        listed.contains("EFF") && listed.contains("50% ready"),
        "{listed}"
    );

    // New connections split by the effective weights (20:10:5).
    let t = tally(&lab.ok(&["requests", "700"]));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    let n: usize = t.values().sum();
    for (be, want) in [
        ("be1", 20.0 / 35.0),
        ("be2", 10.0 / 35.0),
        ("be3", 5.0 / 35.0),
    ] {
        let share = *t.get(be).unwrap_or(&0) as f64 / n as f64;
        assert!(
            (share - want).abs() < 0.05,
            "{be}: {share:.3} of new connections, effective share {want:.3}: {t:?}"
        );
    }

    // 50 long downloads while the weights move: none is touched.
    let running = lab.spawn_downloads(50, "1M");
    let events = lab.events();
    for answers in [
        ["40%", "100%", "60%"],
        ["100%", "30%", "100%"],
        ["70%", "70%", "20%"],
    ] {
        for (i, a) in answers.iter().enumerate() {
            lab.ok(&["agent", &(i + 1).to_string(), a]);
        }
        std::thread::sleep(Duration::from_millis(2500));
    }
    let moved = events.wait_for("a load event", Duration::from_secs(5), |e| {
        e["kind"] == "load"
    });
    assert!(
        moved["event"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("agent: "),
        "{moved}"
    );
    let d = downloads(running);
    assert_eq!(d.len(), 50);
    let broken: Vec<_> = d.iter().filter(|d| !complete(d)).collect();
    assert!(
        broken.is_empty(),
        "downloads broken while weights moved: {broken:?}"
    );

    // Drain by the agent: no new connection, its downloads complete.
    for (i, a) in [("1", "100%"), ("2", "100%"), ("3", "100%")] {
        lab.ok(&["agent", i, a]);
    }
    wait_until("all at 100%", Duration::from_secs(10), || {
        weights(&lab) == [20, 20, 20]
    });
    // Downloads until be1 carries some: each lands there with chance 1/3,
    // so 15 can all miss (a drain with nothing running proves nothing).
    let be1_flows = || {
        lab.json(&["backend", "list", VIP]).as_array().unwrap()[0]["active_flows"]
            .as_u64()
            .unwrap()
    };
    // The earlier downloads' closed flows leave the table within 2 s: until
    // they have, a count above zero would not mean a new download.
    wait_until("be1's earlier flows gone", Duration::from_secs(15), || {
        be1_flows() == 0
    });
    let mut running = Vec::new();
    while running.is_empty() || be1_flows() == 0 {
        assert!(running.len() < 4, "60 downloads and none on be1");
        running.push(lab.spawn_downloads(15, "1M"));
    }
    lab.ok(&["agent", "1", "drain"]);
    wait_until("be1 drained by its agent", Duration::from_secs(10), || {
        weights(&lab)[0] == 0
    });
    let t = tally(&lab.ok(&["requests", "60"]));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    assert_eq!(
        t.get("be1"),
        None,
        "a drained backend got new connections: {t:?}"
    );
    let d: Vec<_> = running.into_iter().flat_map(downloads).collect();
    assert!(
        d.iter().any(|d| d.backend == "be1"),
        "no download on be1: {d:?}"
    );
    assert!(d.iter().all(complete), "{d:?}");

    // An agent that dies: the configured weight is back, the backend up.
    // (A drain lasts until the agent says ready, as HAProxy's does.)
    lab.ok(&["agent", "1", "ready 100%"]);
    lab.ok(&["agent", "2", "50%"]);
    wait_until("be2 at 50%", Duration::from_secs(10), || {
        weights(&lab) == [20, 10, 20]
    });
    lab.ok(&["agent-stop", "2"]);
    wait_until(
        "be2's configured weight back",
        Duration::from_secs(10),
        || weights(&lab)[1] == 20,
    );
    let b2 = lab.json(&["backend", "list", VIP]).as_array().unwrap()[1].clone();
    assert_eq!(b2["state"], "up", "{b2}");
    assert!(
        b2["agent_status"]["detail"]
            .as_str()
            .unwrap()
            .contains("configured weight in force"),
        "{b2}"
    );

    // A cap: be3 takes no new flows at 3 active flows, and again below 2.
    lab.ok(&[
        "lbctl",
        "backend",
        "set-load",
        VIP,
        "192.0.2.13",
        "--max-flows",
        "3",
        "--min-flows",
        "2",
    ]);
    let running = lab.spawn_downloads(30, "1M");
    let capped = || lab.json(&["backend", "list", VIP]).as_array().unwrap()[2]["capped"] == true;
    wait_until("be3 capped", Duration::from_secs(10), capped);
    let t = tally(&lab.ok(&["requests", "60"]));
    assert_eq!(t.get("FAILED"), None, "{t:?}");
    assert_eq!(
        t.get("be3"),
        None,
        "a capped backend got new connections: {t:?}"
    );
    let d = downloads(running);
    assert!(d.iter().all(complete), "{d:?}");
    // The downloads ended: once their flows leave the table (closed TCP
    // flows expire after 2 s here), be3 is below its low mark and takes
    // new connections again.
    wait_until("be3 uncapped", Duration::from_secs(30), || !capped());
    let t = tally(&lab.ok(&["requests", "60"]));
    assert!(
        t.contains_key("be3"),
        "be3 took no new connection after its cap: {t:?}"
    );
    let metrics = lab.metrics();
    assert!(
        lb_testkit::exposition::value(&metrics, "lb_backend_agent_percent{backend=\"192.0.2.11\"}")
            == Some(100.0),
        "{metrics}"
    );
    lab.ok(&["lbd-stop"]);
}
