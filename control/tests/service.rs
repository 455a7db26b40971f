//! The gRPC service and the metrics exposition in process, against a hub
//! built without EAL: the real `grpc::serve` on a Unix socket in a temporary
//! directory, the real committer, a fake TSC, worker counters set by hand.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use control::health::Status;
use control::state::DesiredState;
use lb_core::drop_reason::DropReason;
use lb_core::flow::BackendFlows;
use lb_core::snapshot::{BackendState, Proto, VipKey};
use lb_proto::v1 as pb;
use lb_testkit::exposition;
use tonic::Code;

mod common;
use common::{hub, next, temp_dir, Lbd, LCORES, MAC, TSC};

fn key(addr: &str, port: u32) -> pb::VipKey {
    pb::VipKey {
        address: addr.into(),
        port,
        protocol: pb::Protocol::Tcp as i32,
    }
}

fn vip_key(addr: &str, port: u16) -> VipKey {
    VipKey {
        addr: addr.parse().unwrap(),
        port,
        proto: Proto::Tcp,
    }
}

/// A VIP with the smallest Maglev table (quick to build).
fn create(k: pb::VipKey) -> pb::CreateVipRequest {
    pb::CreateVipRequest {
        vip: Some(k),
        table_size: 251,
        ..Default::default()
    }
}

fn backend(k: pb::VipKey, addr: &str) -> pb::AddBackendRequest {
    pb::AddBackendRequest {
        vip: Some(k),
        address: addr.into(),
        ..Default::default()
    }
}

fn health(healthy: bool, detail: &str) -> Status {
    Status {
        healthy,
        detail: detail.into(),
        successes: u32::from(healthy),
        failures: u32::from(!healthy),
        passed: true,
        via: control::state::CheckVia::Real,
        real: Some(control::health::PathResult {
            ok: healthy,
            detail: detail.into(),
        }),
        vip_path: None,
    }
}

fn config_event(kind: pb::event::Kind) -> pb::ConfigChanged {
    match kind {
        pb::event::Kind::Config(c) => c,
        other => panic!("expected a configuration event, got {other:?}"),
    }
}

fn load(path: &Path) -> DesiredState {
    DesiredState::from_config(&control::config::Config::load(path).unwrap()).unwrap()
}

#[tokio::test]
async fn invalid_requests_are_refused_naming_the_field() {
    let lbd = Lbd::start("invalid", hub(), true).await;
    let mut api = lbd.api();
    api.create_vip(create(key("10.0.0.1", 80))).await.unwrap();
    api.add_backend(backend(key("10.0.0.1", 80), "10.1.0.1"))
        .await
        .unwrap();
    let generation = lbd.hub().generation();
    let digest = lbd.hub().state().digest();

    let vip = || key("10.0.0.1", 80);
    let check = |f: fn(&mut pb::HealthCheck)| {
        let mut c = pb::HealthCheck {
            kind: "tcp".into(),
            ..Default::default()
        };
        f(&mut c);
        pb::AddBackendRequest {
            check: Some(c),
            ..backend(vip(), "10.1.0.2")
        }
    };
    let cases: Vec<(&str, Result<(), tonic::Status>)> = vec![
        (
            "vip: missing",
            api.create_vip(pb::CreateVipRequest::default())
                .await
                .map(drop),
        ),
        (
            "vip.address:",
            api.create_vip(create(key("ten", 80))).await.map(drop),
        ),
        (
            "vip.port:",
            api.create_vip(create(key("10.0.0.2", 70_000)))
                .await
                .map(drop),
        ),
        (
            "vip.protocol:",
            api.create_vip(create(pb::VipKey {
                protocol: 0,
                ..key("10.0.0.2", 80)
            }))
            .await
            .map(drop),
        ),
        (
            "vip.tcp_idle_timeout_s:",
            api.create_vip(pb::CreateVipRequest {
                tcp_idle_timeout_s: 70_000,
                ..create(key("10.0.0.2", 80))
            })
            .await
            .map(drop),
        ),
        (
            "vip.udp_idle_timeout_s:",
            api.create_vip(pb::CreateVipRequest {
                udp_idle_timeout_s: 70_000,
                ..create(key("10.0.0.2", 80))
            })
            .await
            .map(drop),
        ),
        (
            "vip.table_size:",
            api.create_vip(pb::CreateVipRequest {
                table_size: 1000,
                ..create(key("10.0.0.2", 80))
            })
            .await
            .map(drop),
        ),
        (
            "vip.address:",
            api.delete_vip(key("::zz", 80)).await.map(drop),
        ),
        (
            "backend.address:",
            api.add_backend(backend(vip(), "host")).await.map(drop),
        ),
        (
            "backend.mac:",
            api.add_backend(pb::AddBackendRequest {
                mac: "02:00:zz".into(),
                ..backend(vip(), "10.1.0.2")
            })
            .await
            .map(drop),
        ),
        (
            "backend.weight:",
            api.add_backend(pb::AddBackendRequest {
                weight: Some(u32::MAX),
                ..backend(vip(), "10.1.0.2")
            })
            .await
            .map(drop),
        ),
        (
            "backend.check.kind:",
            api.add_backend(check(|c| c.kind = "smtp".into()))
                .await
                .map(drop),
        ),
        (
            "backend.check.kind:",
            api.add_backend(check(|c| c.kind = "none".into()))
                .await
                .map(drop),
        ),
        (
            "backend.check.http_status:",
            api.add_backend(check(|c| {
                c.kind = "http:/health".into();
                c.http_status = 70_000;
            }))
            .await
            .map(drop),
        ),
        (
            "backend.check.port:",
            api.add_backend(check(|c| c.port = 70_000)).await.map(drop),
        ),
        (
            "backend: missing",
            api.update_backend(pb::UpdateBackendRequest::default())
                .await
                .map(drop),
        ),
        (
            "backend.mac:",
            api.update_backend(pb::UpdateBackendRequest {
                backend: Some(pb::BackendKey {
                    vip: Some(vip()),
                    address: "10.1.0.1".into(),
                }),
                mac: Some("nope".into()),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
        (
            "backend.address:",
            api.remove_backend(pb::BackendKey {
                vip: Some(vip()),
                address: "10.1.0".into(),
            })
            .await
            .map(drop),
        ),
        (
            "toml:",
            api.apply(pb::ApplyRequest {
                toml: "[[vip]\naddress = ".into(),
                ..Default::default()
            })
            .await
            .map(drop),
        ),
    ];
    for (field, result) in cases {
        let e = result.expect_err(field);
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(
            e.message().starts_with(field),
            "the message names {field:?}: {:?}",
            e.message()
        );
    }
    // Nothing was changed, published or written.
    assert_eq!(lbd.hub().generation(), generation);
    assert_eq!(lbd.hub().state().digest(), digest);
    let vips = api.list_vips(pb::Empty {}).await.unwrap().into_inner().vips;
    assert_eq!(vips.len(), 1);
    assert_eq!(vips[0].backends.len(), 1);
}

#[tokio::test]
async fn state_errors_map_to_their_codes() {
    let lbd = Lbd::start("codes", hub(), true).await;
    let mut api = lbd.api();
    let vip = || key("10.0.0.1", 80);
    api.create_vip(create(vip())).await.unwrap();
    api.add_backend(backend(vip(), "10.1.0.1")).await.unwrap();

    let e = api.create_vip(create(vip())).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let e = api
        .add_backend(backend(vip(), "10.1.0.1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");

    let other = || key("10.0.0.9", 80);
    let e = api.get_vip(other()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = api.delete_vip(other()).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("10.0.0.9"), "{e:?}");
    let e = api
        .add_backend(backend(other(), "10.1.0.1"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = api
        .remove_backend(pb::BackendKey {
            vip: Some(vip()),
            address: "10.1.0.7".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = api
        .update_backend(pb::UpdateBackendRequest {
            backend: Some(pb::BackendKey {
                vip: Some(vip()),
                address: "10.1.0.7".into(),
            }),
            weight: Some(3),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("backend 10.1.0.7"), "{e:?}");

    // A 251-slot table takes two backends at most (100 slots each).
    api.add_backend(backend(vip(), "10.1.0.2")).await.unwrap();
    let e = api
        .add_backend(backend(vip(), "10.1.0.3"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("too small"), "{e:?}");

    let vips = api.list_vips(pb::Empty {}).await.unwrap().into_inner().vips;
    let addrs: Vec<&str> = vips[0].backends.iter().map(|b| &*b.address).collect();
    assert_eq!(addrs, ["10.1.0.1", "10.1.0.2"]);
}

#[tokio::test]
async fn a_change_is_published_and_written_before_the_reply() {
    let dir = temp_dir("commit");
    let path = dir.join("lb.toml");
    let lbd = Lbd::start("commit", hub().with_state_file(Some(path.clone())), true).await;
    let mut api = lbd.api();
    let tsc_before = TSC.load(Ordering::SeqCst);
    assert_eq!(lbd.hub().generation(), 1);

    let v = api
        .create_vip(create(key("10.0.0.1", 80)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(v.table_size, 251);
    assert!(path.exists(), "written before the reply");
    assert_eq!(load(&path).vips().len(), 1);
    {
        let hub = lbd.hub();
        assert_eq!(hub.generation(), 2);
        let snap = hub.snapshot();
        assert_eq!(snap.generation, 2);
        assert_eq!(snap.vips()[0].key, vip_key("10.0.0.1", 80));
        assert!(
            snap.published_tsc() > tsc_before,
            "stamped by the hub's clock"
        );
    }

    let b = api
        .add_backend(pb::AddBackendRequest {
            mac: "02:00:00:00:00:aa".into(),
            weight: Some(5),
            ..backend(key("10.0.0.1", 80), "10.1.0.1")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(b.effective_mac, "02:00:00:00:00:aa");
    assert_eq!(b.state, pb::BackendState::Up as i32);
    let written = load(&path);
    let (addr, saved) = written.vips()[&vip_key("10.0.0.1", 80)]
        .backends
        .iter()
        .next()
        .unwrap();
    assert_eq!(addr.to_string(), "10.1.0.1");
    assert_eq!(saved.settings.weight, 5);

    let info = api.get_info(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(info.snapshot_generation, 3);
    assert_eq!(info.state_file, path.display().to_string());
    assert_eq!(info.config_digest, written.digest());
    assert_eq!(info.mac, MAC.to_string());
    assert_eq!(info.worker_lcores, LCORES);
    assert!(!info.announcing && !info.shutting_down);

    // Apply converges to a whole configuration; a dry run changes nothing.
    let toml = api.export(pb::Empty {}).await.unwrap().into_inner().toml;
    let toml = toml.replace("weight = 5", "weight = 7");
    let dry = api
        .apply(pb::ApplyRequest {
            toml: toml.clone(),
            dry_run: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.changes.len(), 1, "{:?}", dry.changes);
    assert_eq!(dry.snapshot_generation, 3);
    let applied = api
        .apply(pb::ApplyRequest {
            toml,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.changes, dry.changes);
    assert_eq!(applied.snapshot_generation, 4);
    let weight = load(&path).vips()[&vip_key("10.0.0.1", 80)].backends[&addr.clone()]
        .settings
        .weight;
    assert_eq!(weight, 7);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_write_undoes_the_changes_since_the_last_write() {
    let dir = temp_dir("undo");
    let sub = dir.join("state");
    std::fs::create_dir(&sub).unwrap();
    let path = sub.join("lb.toml");
    let lbd = Lbd::start("undo", hub().with_state_file(Some(path.clone())), true).await;
    let mut api = lbd.api();
    api.create_vip(create(key("10.0.0.1", 80))).await.unwrap();
    assert_eq!(load(&path).vips().len(), 1);

    // The state file's directory goes away: the next write fails.
    std::fs::remove_dir_all(&sub).unwrap();
    let mut events = lbd.hub().subscribe();
    let e = api
        .create_vip(create(key("10.0.0.2", 80)))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::Unavailable,
        "undone: the client may retry: {e:?}"
    );
    assert!(
        e.message().contains("writing the state file")
            && e.message().ends_with("the change was undone"),
        "{e:?}"
    );

    let created = config_event(events.recv().await.unwrap().kind.unwrap());
    assert_eq!(created.what, "vip 10.0.0.2:80/tcp created");
    let undone = config_event(events.recv().await.unwrap().kind.unwrap());
    assert!(
        undone.what.starts_with("undone: writing the state file"),
        "{undone:?}"
    );

    let vips = api.list_vips(pb::Empty {}).await.unwrap().into_inner().vips;
    let keys: Vec<&str> = vips
        .iter()
        .map(|v| &*v.key.as_ref().unwrap().address)
        .collect();
    assert_eq!(keys, ["10.0.0.1"], "back to what the file held");
    let hub = lbd.hub();
    assert_eq!(hub.state().vips().len(), 1);
    let snap = hub.snapshot();
    assert_eq!(snap.vips().len(), 1, "the undone VIP is not forwarded");
    assert_eq!(snap.vips()[0].key, vip_key("10.0.0.1", 80));
    assert_eq!(undone.generation, hub.generation());
    assert!(!path.exists());
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn concurrent_changes_share_one_snapshot_and_one_write() {
    let dir = temp_dir("group");
    let path = dir.join("lb.toml");
    // The committer starts once every change is queued.
    let lbd = Lbd::start("group", hub().with_state_file(Some(path.clone())), false).await;
    let mut events = lbd.hub().subscribe();
    let replies: Vec<_> = (1..=5)
        .map(|i| {
            let mut api = lbd.api();
            tokio::spawn(async move {
                api.create_vip(create(key(&format!("10.0.0.{i}"), 80)))
                    .await
            })
        })
        .collect();
    for _ in 0..5 {
        let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("every change is applied")
            .unwrap();
        let c = config_event(e.kind.unwrap());
        assert_eq!(c.generation, 2, "each is in the next snapshot: {c:?}");
    }
    {
        let hub = lbd.hub();
        assert_eq!(hub.state().vips().len(), 5);
        assert_eq!(hub.generation(), 1, "nothing published yet");
        assert!(hub.snapshot().vips().is_empty());
    }
    assert!(!path.exists(), "nothing written yet");

    lbd.start_committer();
    for r in replies {
        r.await.unwrap().expect("acknowledged once written");
    }
    let hub = lbd.hub();
    assert_eq!(hub.generation(), 2, "one snapshot for the five changes");
    assert_eq!(hub.snapshot().vips().len(), 5);
    let written = load(&path);
    assert_eq!(written.vips().len(), 5, "one write holds them all");
    assert_eq!(written.digest(), hub.state().digest());
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn health_verdicts_show_in_the_api_the_snapshot_and_the_events() {
    let lbd = Lbd::start("health", hub(), true).await;
    let mut api = lbd.api();
    let vip = vip_key("10.0.0.1", 80);
    let addr: IpAddr = "10.1.0.1".parse().unwrap();
    api.create_vip(create(key("10.0.0.1", 80))).await.unwrap();
    // Checked (by nobody here: the hub is told the verdicts directly).
    api.add_backend(pb::AddBackendRequest {
        mac: "02:00:00:00:00:aa".into(),
        check: Some(pb::HealthCheck {
            kind: "tcp".into(),
            ..Default::default()
        }),
        ..backend(key("10.0.0.1", 80), "10.1.0.1")
    })
    .await
    .unwrap();
    let mut events = api.watch(pb::Empty {}).await.unwrap().into_inner();
    let backend_of = |v: pb::Vip| v.backends.into_iter().next().unwrap();
    let generation = lbd.hub().generation();
    assert!(lbd.hub().servable().is_empty(), "no check passed yet");

    // A first verdict is no transition: no event, no new snapshot.
    lbd.hub().set_health(vip, addr, health(true, "tcp ok"));
    assert_eq!(lbd.hub().generation(), generation);
    let listed = api.list_health(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(listed.backends.len(), 1);
    assert_eq!(listed.backends[0].health, pb::Health::Healthy as i32);
    assert_eq!(listed.backends[0].detail, "tcp ok");
    assert_eq!(listed.backends[0].consecutive_successes, 1);
    assert_eq!(
        lbd.hub().servable(),
        BTreeSet::from(["10.0.0.1".parse::<IpAddr>().unwrap()])
    );
    let healthy = "lb_backend_healthy{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.1\"}";
    assert_eq!(exposition::value(&lbd.metrics(), healthy), Some(1.0));

    lbd.hub()
        .set_health(vip, addr, health(false, "tcp failed: refused"));
    let pb::event::Kind::Backend(down) = next(&mut events).await else {
        panic!("a backend event first");
    };
    assert_eq!(down.address, "10.1.0.1");
    assert_eq!(down.vip, Some(key("10.0.0.1", 80)));
    assert_eq!(down.health, pb::Health::Unhealthy as i32);
    assert_eq!(down.detail, "tcp failed: refused");
    assert_eq!(lbd.hub().generation(), generation + 1, "published again");
    let snap = lbd.hub().snapshot();
    let slot = snap.vips()[0].backends[0];
    assert_eq!(snap.backend(slot).unwrap().state, BackendState::Down);
    let b = backend_of(api.get_vip(key("10.0.0.1", 80)).await.unwrap().into_inner());
    assert_eq!(b.health, pb::Health::Unhealthy as i32);
    assert_eq!(
        b.state,
        pb::BackendState::Down as i32,
        "failing checks take it down"
    );
    assert!(lbd.hub().servable().is_empty());
    let text = lbd.metrics();
    assert_eq!(exposition::value(&text, healthy), Some(0.0), "{text}");
    let up = "lb_backend_up{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.1\"}";
    assert_eq!(exposition::value(&text, up), Some(0.0), "{text}");

    // The same verdict again (counts moved): nothing to tell.
    lbd.hub()
        .set_health(vip, addr, health(false, "tcp failed: timeout"));
    assert_eq!(lbd.hub().generation(), generation + 1);

    lbd.hub().set_health(vip, addr, health(true, "tcp ok"));
    let pb::event::Kind::Backend(up) = next(&mut events).await else {
        panic!("a backend event");
    };
    assert_eq!(up.health, pb::Health::Healthy as i32);
    assert_eq!(lbd.hub().generation(), generation + 2);
    let b = backend_of(api.get_vip(key("10.0.0.1", 80)).await.unwrap().into_inner());
    assert_eq!(b.state, pb::BackendState::Up as i32);
    let snap = lbd.hub().snapshot();
    assert_eq!(snap.backend(slot).unwrap().state, BackendState::Up);

    // A backend no longer checked has no verdict.
    lbd.hub().forget_health(&vip, &addr);
    let b = backend_of(api.get_vip(key("10.0.0.1", 80)).await.unwrap().into_inner());
    assert_eq!(b.health, pb::Health::Unspecified as i32);
}

#[tokio::test]
async fn watch_streams_configuration_events_in_order() {
    let lbd = Lbd::start("watch", hub(), true).await;
    let mut api = lbd.api();
    let mut events = api.watch(pb::Empty {}).await.unwrap().into_inner();
    api.create_vip(create(key("10.0.0.1", 80))).await.unwrap();
    api.add_backend(backend(key("10.0.0.1", 80), "10.1.0.1"))
        .await
        .unwrap();
    api.delete_vip(key("10.0.0.1", 80)).await.unwrap();
    let seen: Vec<(u64, String)> = [
        next(&mut events).await,
        next(&mut events).await,
        next(&mut events).await,
    ]
    .into_iter()
    .map(|k| {
        let c = config_event(k);
        (c.generation, c.what)
    })
    .collect();
    assert_eq!(
        seen,
        [
            (2, "vip 10.0.0.1:80/tcp created".to_string()),
            (3, "backend 10.1.0.1 added to 10.0.0.1:80/tcp".to_string()),
            (4, "vip 10.0.0.1:80/tcp deleted".to_string()),
        ]
    );
    // A refused change tells nobody.
    api.delete_vip(key("10.0.0.1", 80)).await.unwrap_err();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), events.message())
            .await
            .is_err(),
        "no event for a refused change"
    );
}

#[tokio::test]
async fn a_watcher_that_falls_behind_is_told_how_many_events_it_missed() {
    let lbd = Lbd::start("lagged", hub(), true).await;
    let mut api = lbd.api();
    let vip = vip_key("10.0.0.1", 80);
    let addr: IpAddr = "10.1.0.1".parse().unwrap();
    api.create_vip(create(key("10.0.0.1", 80))).await.unwrap();
    api.add_backend(backend(key("10.0.0.1", 80), "10.1.0.1"))
        .await
        .unwrap();
    let mut events = api.watch(pb::Empty {}).await.unwrap().into_inner();
    // 1100 transitions while the server cannot run (one thread, the hub
    // held): more than the 1024 events a subscriber's queue holds.
    {
        let mut hub = lbd.hub();
        hub.set_health(vip, addr, health(true, "first"));
        for i in 0..1100 {
            hub.set_health(vip, addr, health(i % 2 == 1, "flap"));
            hub.reap();
        }
    }
    let pb::event::Kind::Missed(missed) = next(&mut events).await else {
        panic!("first the count of what was missed");
    };
    assert_eq!(missed.count, 1100 - 1024);
    let pb::event::Kind::Backend(b) = next(&mut events).await else {
        panic!("then the events still queued");
    };
    // Event 76 (0-based) is the first kept: an even one, unhealthy.
    assert_eq!(b.health, pb::Health::Unhealthy as i32);
}

#[tokio::test]
async fn metrics_and_stats_report_the_worker_counters() {
    let (routes_tx, routes_rx) = tokio::sync::watch::channel(BTreeSet::new());
    let lbd = Lbd::start("metrics", hub().with_announcements(routes_rx), true).await;
    let mut api = lbd.api();
    api.create_vip(create(key("10.0.0.1", 80))).await.unwrap();
    api.add_backend(pb::AddBackendRequest {
        mac: "02:00:00:00:00:aa".into(),
        ..backend(key("10.0.0.1", 80), "10.1.0.1")
    })
    .await
    .unwrap();
    api.create_vip(create(key("10.0.0.2", 53))).await.unwrap();
    routes_tx.send_replace(BTreeSet::from(["10.0.0.1".parse().unwrap()]));

    let slot = lbd.hub().snapshot().vips()[0].backends[0];
    let (w0, w1) = (&lbd.stats[0], &lbd.stats[1]);
    w0.rx_packets.add(7);
    w0.tx_packets.add(6);
    w1.rx_packets.add(3);
    w1.drop(DropReason::NoBackend).add(3);
    w0.backends[usize::from(slot)].packets.add(5);
    w1.backends[usize::from(slot)].packets.add(4);
    w0.backends[usize::from(slot)].bytes.add(900);
    w0.backends[usize::from(slot)].new_flows.add(2);
    w0.snapshot_adoption.record(3);
    w1.active_flows.add(42);
    // Flows pinned to the backend, as each worker's flow table publishes
    // them: 3 + 2 of its own incarnation; a predecessor's count is not its.
    let incarnation = lbd.hub().snapshot().backend(slot).unwrap().incarnation;
    w0.backends[usize::from(slot)].publish_flows(BackendFlows {
        incarnation,
        active: 3,
    });
    w1.backends[usize::from(slot)].publish_flows(BackendFlows {
        incarnation,
        active: 2,
    });

    let text = lbd.metrics();
    let nb = DropReason::NoBackend.as_str();
    let types = exposition::types(&text);
    for (family, kind) in [
        ("lb_worker_rx_packets", "counter"),
        ("lb_worker_active_flows", "gauge"),
        ("lb_worker_snapshot_adoption_seconds", "histogram"),
        ("lb_build", "info"),
        ("lb_backend_active_flows", "gauge"),
        ("lb_backend_effective_weight", "gauge"),
    ] {
        assert!(
            types.contains(&(family.into(), kind.into())),
            "{family} {kind} missing from:\n{text}"
        );
    }
    let vip1 = "vip=\"10.0.0.1:80/tcp\",address=\"10.0.0.1\",port=\"80\",protocol=\"tcp\"";
    for (selector, want) in [
        ("lb_worker_rx_packets_total{worker=\"1\"}", 7),
        ("lb_worker_rx_packets_total{worker=\"2\"}", 3),
        ("lb_worker_tx_packets_total{worker=\"1\"}", 6),
        ("lb_worker_active_flows{worker=\"2\"}", 42),
        (
            &format!("lb_worker_drops_total{{worker=\"2\",reason=\"{nb}\"}}"),
            3,
        ),
        (
            &format!("lb_worker_drops_total{{worker=\"1\",reason=\"{nb}\"}}"),
            0,
        ),
        ("lb_worker_snapshot_adoption_seconds_count{worker=\"1\"}", 1),
        (
            "lb_worker_snapshot_adoption_seconds_bucket{worker=\"1\",le=\"+Inf\"}",
            1,
        ),
        ("lb_worker_snapshot_adoption_seconds_count{worker=\"2\"}", 0),
        (&format!("lb_vip_packets_total{{{vip1}}}"), 9),
        ("lb_vip_bytes_total{vip=\"10.0.0.1:80/tcp\"}", 900),
        (
            "lb_vip_new_flows_total{address=\"10.0.0.1\",port=\"80\",protocol=\"tcp\"}",
            2,
        ),
        ("lb_vip_packets_total{vip=\"10.0.0.2:53/tcp\"}", 0),
        (
            &format!("lb_backend_packets_total{{{vip1},backend=\"10.1.0.1\"}}"),
            9,
        ),
        (
            "lb_backend_up{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.1\"}",
            1,
        ),
        (
            "lb_backend_weight{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.1\"}",
            1,
        ),
        (
            "lb_backend_effective_weight{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.1\"}",
            1,
        ),
        (
            "lb_backend_active_flows{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.1\"}",
            5,
        ),
        (
            "lb_backend_drained{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.1\"}",
            0,
        ),
        ("lb_workers_stalled", 0),
        ("lb_snapshot_generation", 4),
        ("lb_vips", 2),
        ("lb_route_announced{address=\"10.0.0.1\"}", 1),
        ("lb_route_announced{address=\"10.0.0.2\"}", 0),
    ] {
        assert_eq!(
            exposition::value(&text, selector),
            Some(f64::from(want)),
            "{selector} in:\n{text}"
        );
    }
    assert!(
        !text.contains("lb_backend_healthy{"),
        "no verdict, no sample"
    );
    // Drained: on purpose, told apart from down; new flows follow weight 0.
    api.update_backend(pb::UpdateBackendRequest {
        backend: Some(pb::BackendKey {
            vip: Some(key("10.0.0.1", 80)),
            address: "10.1.0.1".into(),
        }),
        drain: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    let drained = lbd.metrics();
    for (selector, want) in [
        ("lb_backend_drained{backend=\"10.1.0.1\"}", 1.0),
        ("lb_backend_up{backend=\"10.1.0.1\"}", 0.0),
        ("lb_backend_effective_weight{backend=\"10.1.0.1\"}", 0.0),
        ("lb_backend_weight{backend=\"10.1.0.1\"}", 1.0),
    ] {
        assert_eq!(
            exposition::value(&drained, selector),
            Some(want),
            "{selector}"
        );
    }
    assert!(
        text.lines().any(
            |l| l.starts_with("lb_build_info{version=\"0.1.0\",revision=\"")
                && l.ends_with("\"} 1")
        ),
        "{text}"
    );

    let stats = api.get_stats(pb::Empty {}).await.unwrap().into_inner();
    let lcores: Vec<u32> = stats.workers.iter().map(|w| w.lcore).collect();
    assert_eq!(lcores, LCORES);
    assert_eq!(stats.workers[0].rx_packets, 7);
    assert_eq!(stats.workers[1].active_flows, 42);
    let drop = stats.workers[1]
        .drops
        .iter()
        .find(|c| c.name == nb)
        .unwrap();
    assert_eq!(drop.value, 3);
    assert_eq!(
        stats.workers[0]
            .snapshot_adoption
            .iter()
            .map(|b| b.count)
            .sum::<u64>(),
        1
    );
    let v = &stats.vips[0];
    assert_eq!((v.packets, v.bytes, v.new_flows), (9, 900, 2));
    assert_eq!(v.backends[0].address, "10.1.0.1");

    let info = api.get_info(pb::Empty {}).await.unwrap().into_inner();
    assert!(info.announcing);
    assert_eq!(info.announced, ["10.0.0.1"]);

    // Without --bgp-routes there is no route family at all.
    let quiet = Lbd::start("metrics-quiet", hub(), true).await;
    assert!(!quiet.metrics().contains("lb_route_announced"));
    assert!(quiet.metrics().contains("lb_vips 0\n"));
}

/// Counters only go up: a VIP's traffic is never less after one of its
/// backends is removed, and a backend that takes a freed slot starts at
/// zero under its own labels (the workers' slot counters are not reset).
#[tokio::test]
async fn traffic_counters_never_go_down_and_a_reused_slot_starts_at_zero() {
    let lbd = Lbd::start("traffic", hub(), true).await;
    let mut api = lbd.api();
    let vip = key("10.0.0.1", 80);
    api.create_vip(create(vip.clone())).await.unwrap();
    for (addr, mac) in [
        ("10.1.0.1", "02:00:00:00:00:01"),
        ("10.1.0.2", "02:00:00:00:00:02"),
    ] {
        api.add_backend(pb::AddBackendRequest {
            mac: mac.into(),
            ..backend(vip.clone(), addr)
        })
        .await
        .unwrap();
    }
    let slot_of = |addr: &str| {
        let snap = lbd.hub().snapshot();
        let slot = snap
            .backends()
            .find(|(_, b)| b.addr.to_string() == addr)
            .map(|(s, _)| s)
            .unwrap();
        slot
    };
    let (s1, s2) = (slot_of("10.1.0.1"), slot_of("10.1.0.2"));
    lbd.stats[0].backends[usize::from(s1)].packets.add(100);
    lbd.stats[1].backends[usize::from(s2)].packets.add(85);
    let incarnation = |slot| lbd.hub().snapshot().backend(slot).unwrap().incarnation;
    lbd.stats[1].backends[usize::from(s2)].publish_flows(BackendFlows {
        incarnation: incarnation(s2),
        active: 4,
    });
    let sample = |selector: &str| exposition::value(&lbd.metrics(), selector);
    let vip_packets = "lb_vip_packets_total{vip=\"10.0.0.1:80/tcp\"}";
    assert_eq!(sample(vip_packets), Some(185.0));
    let flows2 = "lb_backend_active_flows{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.2\"}";
    assert_eq!(sample(flows2), Some(4.0));
    let before = lbd.metrics();

    api.remove_backend(pb::BackendKey {
        vip: Some(vip.clone()),
        address: "10.1.0.2".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        sample(vip_packets),
        Some(185.0),
        "the removed backend's traffic stays"
    );
    // No counter of the scrape before is lower after the removal (a
    // removed backend's own samples are gone, not lower).
    let after = exposition::parse(&lbd.metrics());
    let counters: Vec<String> = exposition::types(&before)
        .into_iter()
        .filter(|(_, t)| t == "counter")
        .map(|(n, _)| format!("{n}_total"))
        .collect();
    let mut compared = 0;
    for b in exposition::parse(&before)
        .iter()
        .filter(|s| counters.contains(&s.name))
    {
        if let Some(a) = after
            .iter()
            .find(|a| a.name == b.name && a.labels == b.labels)
        {
            assert!(
                a.value >= b.value,
                "{} {:?} went down: {} -> {}",
                b.name,
                b.labels,
                b.value,
                a.value
            );
            compared += 1;
        }
    }
    assert!(compared > 20, "only {compared} counters compared");
    // A newcomer takes the freed slot: it has carried nothing yet, and the
    // flows the worker still counts for its predecessor are not its.
    api.add_backend(pb::AddBackendRequest {
        mac: "02:00:00:00:00:03".into(),
        ..backend(vip.clone(), "10.1.0.3")
    })
    .await
    .unwrap();
    let s3 = slot_of("10.1.0.3");
    assert_eq!(s3, s2, "the slot is reused (else this test proves nothing)");
    let newcomer = "lb_backend_packets_total{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.3\"}";
    let newcomer_flows = "lb_backend_active_flows{vip=\"10.0.0.1:80/tcp\",backend=\"10.1.0.3\"}";
    assert_eq!(sample(newcomer), Some(0.0));
    assert_eq!(sample(newcomer_flows), Some(0.0));
    assert_eq!(sample(vip_packets), Some(185.0));
    lbd.stats[0].backends[usize::from(s3)].packets.add(7);
    lbd.stats[0].backends[usize::from(s3)].publish_flows(BackendFlows {
        incarnation: incarnation(s3),
        active: 1,
    });
    assert_eq!(sample(newcomer), Some(7.0));
    assert_eq!(sample(newcomer_flows), Some(1.0));
    assert_eq!(sample(vip_packets), Some(192.0));
    let stats = api.get_stats(pb::Empty {}).await.unwrap().into_inner();
    let v = &stats.vips[0];
    assert_eq!(v.packets, 192, "the API agrees: {v:?}");
    let b3 = v.backends.iter().find(|b| b.address == "10.1.0.3").unwrap();
    assert_eq!(b3.packets, 7);
}

/// grpc.health.v1 on the API's socket: SERVING for the server and for
/// lb.v1.LoadBalancer while lbd forwards, NOT_SERVING once it is stopping.
#[tokio::test]
async fn grpc_health_follows_the_dataplane() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    let lbd = Lbd::start("grpc-health", hub(), true).await;
    let health = HealthClient::new(lbd.channel.clone());
    let status = |service: &str| {
        let mut h = health.clone();
        let service = service.to_string();
        async move {
            h.check(HealthCheckRequest { service })
                .await
                .map(|r| r.into_inner().status)
        }
    };
    for service in ["", "lb.v1.LoadBalancer"] {
        let mut s = status(service).await;
        for _ in 0..20 {
            if s.as_ref()
                .is_ok_and(|&v| v == ServingStatus::Serving as i32)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            s = status(service).await;
        }
        assert_eq!(s.unwrap(), ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = status("lb.v1.Nothing").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    lbd.hub().set_shutting_down(true);
    let mut s = status("lb.v1.LoadBalancer").await.unwrap();
    for _ in 0..20 {
        if s == ServingStatus::NotServing as i32 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        s = status("lb.v1.LoadBalancer").await.unwrap();
    }
    assert_eq!(s, ServingStatus::NotServing as i32);
}

/// A large broken input is refused as INVALID_ARGUMENT with a bounded
/// message (a message quoting all of it could exceed a client's trailer
/// limit and reach it as RESOURCE_EXHAUSTED).
#[tokio::test]
async fn a_huge_broken_apply_gets_a_bounded_invalid_argument() {
    let lbd = Lbd::start("huge-apply", hub(), true).await;
    let mut api = lbd.api();
    let toml = format!("[[vip]]\naddress = \"{}", "9".repeat(20_000));
    let e = api
        .apply(pb::ApplyRequest {
            toml,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().starts_with("toml: "), "{}", e.message());
    assert!(
        e.message().len() <= control::grpc::MAX_MESSAGE + 40,
        "{}",
        e.message().len()
    );
}

fn backend_config(addr: &str, weight: u32) -> pb::BackendConfig {
    pb::BackendConfig {
        address: addr.into(),
        weight: Some(weight),
        mac: "02:00:00:00:00:0a".into(),
        ..Default::default()
    }
}

/// The typed configuration: Apply it, read it back from Export, replace a
/// VIP's backends with SetBackends (those that stay keep their identity,
/// so their flows), and two controllers racing on one revision: the
/// second is ABORTED, told why in a PreconditionFailure. The revision is
/// kept in the state file across a restart.
#[tokio::test]
async fn typed_apply_set_backends_and_the_revision_precondition() {
    use tonic_types::StatusExt;
    let dir = temp_dir("typed");
    let path = dir.join("lb.toml");
    let lbd = Lbd::start("typed", hub().with_state_file(Some(path.clone())), true).await;
    let mut api = lbd.api();
    let info = api.get_info(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(info.config_revision, 0);
    let config = pb::Config {
        vips: vec![pb::VipConfig {
            key: Some(key("10.0.0.1", 80)),
            table_size: 251,
            backends: vec![backend_config("10.1.0.1", 1), backend_config("10.1.0.2", 2)],
            ..Default::default()
        }],
    };
    let applied = api
        .apply(pb::ApplyRequest {
            config: Some(config.clone()),
            expected_revision: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.changes.len(), 3, "{applied:?}");
    assert_eq!(applied.revision, 1, "one change, one revision");
    let exported = api.export(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(exported.revision, 1);
    assert_eq!(exported.config.as_ref().unwrap().vips[0].backends.len(), 2);
    assert!(exported.toml.contains("10.1.0.2") && !exported.toml.contains("revision"));
    // The same again: converged, nothing changes, the revision stays.
    let again = api
        .apply(pb::ApplyRequest {
            config: exported.config.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(again.changes.is_empty() && again.revision == 1, "{again:?}");

    let id_of = |addr: &str| {
        let a: IpAddr = addr.parse().unwrap();
        lbd.hub().state().vips()[&vip_key("10.0.0.1", 80)].backends[&a].id
    };
    let kept = id_of("10.1.0.2");
    let generation = lbd.hub().generation();
    let set = api
        .set_backends(pb::SetBackendsRequest {
            vip: Some(key("10.0.0.1", 80)),
            backends: vec![backend_config("10.1.0.2", 5), backend_config("10.1.0.3", 1)],
            expected_revision: Some(1),
            dry_run: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        set.changes,
        [
            "backend 10.1.0.1 removed from 10.0.0.1:80/tcp",
            "backend 10.1.0.2 of 10.0.0.1:80/tcp updated",
            "backend 10.1.0.3 added to 10.0.0.1:80/tcp",
        ]
    );
    assert_eq!(set.revision, 2);
    assert_eq!(lbd.hub().generation(), generation + 1, "one snapshot");
    assert_eq!(
        id_of("10.1.0.2"),
        kept,
        "the backend that stays keeps its flows"
    );
    let addrs: Vec<&str> = set
        .vip
        .as_ref()
        .unwrap()
        .backends
        .iter()
        .map(|b| b.address.as_str())
        .collect();
    assert_eq!(addrs, ["10.1.0.2", "10.1.0.3"]);

    // A second controller that read revision 1 is refused, and told why.
    let e = api
        .set_backends(pb::SetBackendsRequest {
            vip: Some(key("10.0.0.1", 80)),
            backends: vec![],
            expected_revision: Some(1),
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let details = e.get_error_details();
    let v = &details
        .precondition_failure()
        .expect("a PreconditionFailure")
        .violations[0];
    assert_eq!(v.r#type, "REVISION");
    assert!(v.description.contains("at revision 2, not 1"), "{v:?}");
    assert_eq!(
        lbd.hub().state().vips()[&vip_key("10.0.0.1", 80)]
            .backends
            .len(),
        2,
        "nothing changed"
    );

    // Error details: BadRequest naming the field, ResourceInfo for what is missing.
    let e = api
        .set_backends(pb::SetBackendsRequest {
            vip: Some(key("10.0.0.1", 80)),
            backends: vec![backend_config("10.1.0.2", 20_000)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(
        e.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "backends[0].weight",
        "{e:?}"
    );
    let e = api
        .set_backends(pb::SetBackendsRequest {
            vip: Some(key("10.0.0.9", 80)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    let info = e
        .get_error_details()
        .resource_info()
        .cloned()
        .expect("a ResourceInfo");
    assert_eq!(
        (info.resource_type.as_str(), info.resource_name.as_str()),
        ("vip", "10.0.0.9:80/tcp")
    );
    let e = api
        .apply(pb::ApplyRequest {
            toml: "x = 1".into(),
            config: Some(config),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().starts_with("config: give toml or config"),
        "{e:?}"
    );

    // The revision survives a restart: the state file keeps it.
    assert_eq!(load(&path).revision, 2);
}

/// An instance's own local_addresses stay its own: Export leaves them out,
/// an Apply without them keeps them, an Apply naming others is refused.
#[tokio::test]
async fn local_addresses_do_not_travel_between_instances() {
    let mut own = DesiredState::default();
    own.local_addresses = vec!["192.0.2.1".parse().unwrap()];
    let control = control::hub::Control::new(own, MAC, common::clock).unwrap();
    let lbd = Lbd::start("local", control, true).await;
    let mut api = lbd.api();
    let exported = api.export(pb::Empty {}).await.unwrap().into_inner();
    assert!(
        !exported.toml.contains("local_addresses"),
        "{}",
        exported.toml
    );
    let toml = "[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"\ntable_size = 251\n";
    api.apply(pb::ApplyRequest {
        toml: toml.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(lbd.hub().state().local_addresses, own_addrs(), "kept");
    // Naming its own is fine; naming others is refused, naming the field.
    api.apply(pb::ApplyRequest {
        toml: format!("local_addresses = [\"192.0.2.1\"]\n{toml}"),
        ..Default::default()
    })
    .await
    .unwrap();
    let e = api
        .apply(pb::ApplyRequest {
            toml: format!("local_addresses = [\"192.0.2.2\"]\n{toml}"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().starts_with("toml.local_addresses: "), "{e:?}");
    assert_eq!(lbd.hub().state().local_addresses, own_addrs());
    let info = api.get_info(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(info.local_addresses, ["192.0.2.1"]);
}

fn own_addrs() -> Vec<IpAddr> {
    vec!["192.0.2.1".parse().unwrap()]
}

/// Load feedback through the hub: an agent's percentage scales the weight
/// the snapshot gives new flows, applied at most every MIN_REBUILD per VIP
/// and all of one evaluation in one snapshot; drain and maint; a silent
/// agent gives the configured weight back; a cap drains the backend at its
/// high mark and gives it new flows again below its low mark. Each change
/// is an event, and shows in the API and the metrics.
#[tokio::test]
async fn agents_scale_weights_and_caps_drain_backends() {
    use control::feedback::{AgentState, Report, MIN_REBUILD, SILENT_AFTER};
    use std::time::Instant;
    let lbd = Lbd::start("feedback", hub(), true).await;
    let mut api = lbd.api();
    api.create_vip(create(key("10.0.0.1", 80))).await.unwrap();
    for (addr, mac) in [
        ("10.1.0.1", "02:00:00:00:00:01"),
        ("10.1.0.2", "02:00:00:00:00:02"),
    ] {
        api.add_backend(pb::AddBackendRequest {
            mac: mac.into(),
            weight: Some(20),
            agent: Some(pb::AgentCheck {
                kind: "tcp".into(),
                // Nothing listens there: the hub is fed by hand below.
                port: 9,
                interval_ms: 3_600_000,
                timeout_ms: 1000,
            }),
            max_flows: 100,
            ..backend(key("10.0.0.1", 80), addr)
        })
        .await
        .unwrap();
    }
    let vip = vip_key("10.0.0.1", 80);
    let (a1, a2): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
    let in_snapshot = |addr: IpAddr| {
        let snap = lbd.hub().snapshot();
        let (_, b) = snap.backends().find(|(_, b)| b.addr == addr).unwrap();
        (b.state, b.weight)
    };
    let mut events = lbd.hub().subscribe();
    let t0 = Instant::now();
    let report = |p: Option<u8>, s: Option<AgentState>| {
        Ok(Report {
            percent: p,
            state: s,
        })
    };
    lbd.hub().set_feedback(vip, a1, report(Some(50), None));
    lbd.hub().set_feedback(vip, a2, report(Some(26), None));
    let generation = lbd.hub().generation();
    assert_eq!(lbd.hub().flush_feedback(t0), 2);
    assert_eq!(
        lbd.hub().generation(),
        generation + 1,
        "both in one snapshot"
    );
    assert_eq!(in_snapshot(a1), (BackendState::Up, 10));
    assert_eq!(
        in_snapshot(a2),
        (BackendState::Up, 5),
        "26% is applied as 25%"
    );
    let mut reasons = Vec::new();
    for _ in 0..2 {
        match events.recv().await.unwrap().kind.unwrap() {
            pb::event::Kind::Load(l) => reasons.push((l.address, l.effective_weight, l.reason)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(reasons[0].0, "10.1.0.1");
    assert_eq!(reasons[0].1, 10);
    assert!(reasons[0].2.starts_with("agent: 50%"), "{reasons:?}");

    // Within MIN_REBUILD of the last rebuild the next answer waits.
    lbd.hub()
        .set_feedback(vip, a1, report(None, Some(AgentState::Drain)));
    assert_eq!(lbd.hub().flush_feedback(t0 + MIN_REBUILD / 2), 0);
    assert_eq!(in_snapshot(a1).0, BackendState::Up);
    assert_eq!(lbd.hub().flush_feedback(t0 + MIN_REBUILD), 1);
    assert_eq!(
        in_snapshot(a1).0,
        BackendState::Draining,
        "drain: its flows stay, no new ones"
    );
    let t1 = t0 + MIN_REBUILD;
    lbd.hub()
        .set_feedback(vip, a1, report(Some(100), Some(AgentState::Maint)));
    lbd.hub().flush_feedback(t1 + MIN_REBUILD);
    assert_eq!(in_snapshot(a1).0, BackendState::Down, "maint: out");
    // An answer within a step of the one in force changes nothing.
    lbd.hub().set_feedback(vip, a2, report(Some(28), None));
    assert_eq!(lbd.hub().flush_feedback(t1 + MIN_REBUILD * 2), 0);
    // Silence: the configured weight comes back after SILENT_AFTER polls.
    for _ in 0..SILENT_AFTER {
        lbd.hub()
            .set_feedback(vip, a2, Err("connection refused".into()));
    }
    lbd.hub().flush_feedback(t1 + MIN_REBUILD * 3);
    assert_eq!(in_snapshot(a2), (BackendState::Up, 20));
    let b2 = api
        .get_vip(key("10.0.0.1", 80))
        .await
        .unwrap()
        .into_inner()
        .backends
        .into_iter()
        .find(|b| b.address == "10.1.0.2")
        .unwrap();
    assert_eq!((b2.weight, b2.effective_weight), (20, 20));
    let status = b2.agent_status.unwrap();
    assert!(
        !status.answered && status.detail.contains("configured weight in force"),
        "{status:?}"
    );
    assert_eq!(b2.agent.unwrap().port, 9);
    assert_eq!((b2.max_flows, b2.min_flows), (100, 90));

    // The cap: at 100 flows (over both workers) no new flows, until below 90.
    let slot = |addr| lbd.hub().state().vips()[&vip].backends[&addr].id;
    let publish = |w: usize, n: u32| {
        let id = slot(a2);
        lbd.stats[w].backends[usize::from(id.slot)].publish_flows(BackendFlows {
            incarnation: id.incarnation,
            active: n,
        });
    };
    publish(0, 60);
    publish(1, 39);
    assert!(!lbd.hub().update_caps(), "99 flows: under the cap");
    publish(1, 40);
    assert!(lbd.hub().update_caps());
    assert_eq!(in_snapshot(a2).0, BackendState::Draining);
    let text = lbd.metrics();
    assert_eq!(
        exposition::value(&text, "lb_backend_capped{backend=\"10.1.0.2\"}"),
        Some(1.0)
    );
    assert_eq!(
        exposition::value(&text, "lb_backend_active_flows{backend=\"10.1.0.2\"}"),
        Some(100.0)
    );
    assert_eq!(
        exposition::value(&text, "lb_backend_effective_weight{backend=\"10.1.0.2\"}"),
        Some(0.0)
    );
    assert_eq!(
        exposition::value(&text, "lb_backend_weight{backend=\"10.1.0.2\"}"),
        Some(20.0)
    );
    assert_eq!(
        exposition::value(&text, "lb_backend_agent_percent{backend=\"10.1.0.2\"}"),
        Some(100.0)
    );
    publish(0, 51);
    assert!(!lbd.hub().update_caps(), "91: still above the low mark");
    publish(0, 49);
    assert!(lbd.hub().update_caps(), "89: below it");
    assert_eq!(in_snapshot(a2), (BackendState::Up, 20));
}
