//! VIP conflicts (another host claiming a VIP address by ARP or ND) and
//! ping for VIPs on the control side, in process: conflicts as the workers
//! report them reach `ListHealth`, the `Watch` stream, the log's rate of
//! events and the metrics; the new worker counters reach `GetStats` and the
//! metrics; `--no-vip-ping` reaches the snapshot.

use std::net::IpAddr;

use control::hub::Control;
use control::state::DesiredState;
use lb_core::packet::MacAddr;
use lb_proto::v1 as pb;

mod common;
use common::{clock, hub, next, Lbd, MAC};

const BACKEND_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x11]);
const THIEF: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x66]);

#[tokio::test]
async fn reported_conflicts_show_in_health_events_and_metrics() {
    let lbd = Lbd::start("conflicts", hub(), true).await;
    let (control, stats) = (&lbd.control, &lbd.stats);
    let mut client = lbd.api();
    let render = || lbd.metrics();

    // A VIP with one backend of a known MAC.
    let key = pb::VipKey {
        address: "198.51.100.10".into(),
        port: 443,
        protocol: pb::Protocol::Tcp as i32,
    };
    client
        .create_vip(pb::CreateVipRequest {
            vip: Some(key.clone()),
            table_size: 251,
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .add_backend(pb::AddBackendRequest {
            vip: Some(key.clone()),
            address: "192.0.2.11".into(),
            mac: BACKEND_MAC.to_string(),
            ..Default::default()
        })
        .await
        .unwrap();
    let health = client.list_health(pb::Empty {}).await.unwrap().into_inner();
    assert!(health.conflicts.is_empty(), "{health:?}");
    assert!(!render().contains("lb_vip_conflicts_total{"));

    let mut events = client.watch(pb::Empty {}).await.unwrap().into_inner();
    let vip: IpAddr = "198.51.100.10".parse().unwrap();
    let vip6: IpAddr = "2001:db8::10".parse().unwrap();
    {
        let mut c = control.lock().unwrap();
        let q = c.conflicts();
        // What workers would push: the backend answers ARP for the VIP
        // twice, another host announces the IPv6 VIP once.
        q.push((vip, BACKEND_MAC)).unwrap();
        q.push((vip, BACKEND_MAC)).unwrap();
        q.push((vip6, THIEF)).unwrap();
        c.take_conflicts();
        assert!(q.is_empty(), "drained");
    }
    // One event per pair first seen, with its count so far and the backend
    // whose MAC it is.
    let mut got = Vec::new();
    for _ in 0..2 {
        match next(&mut events).await {
            pb::event::Kind::Conflict(c) => got.push(c),
            other => panic!("expected a conflict event, got {other:?}"),
        }
    }
    got.sort_by(|a, b| a.vip.cmp(&b.vip));
    assert_eq!(
        (got[0].vip.as_str(), got[0].mac.as_str(), got[0].count),
        ("198.51.100.10", "02:00:00:00:00:11", 2)
    );
    assert_eq!(got[0].backend, "192.0.2.11", "the backend with that MAC");
    assert_eq!(
        (got[1].vip.as_str(), got[1].mac.as_str(), got[1].count),
        ("2001:db8::10", "02:00:00:00:00:66", 1)
    );
    assert_eq!(got[1].backend, "", "no backend has the thief's MAC");
    assert!(got[0].last_seen_ms > 1_600_000_000_000, "{got:?}");

    // The same pair again at once: counted, but no new event within the
    // second (the next event is the configuration change made after it).
    {
        let mut c = control.lock().unwrap();
        c.conflicts().push((vip, BACKEND_MAC)).unwrap();
        c.take_conflicts();
    }
    client
        .update_backend(pb::UpdateBackendRequest {
            backend: Some(pb::BackendKey {
                vip: Some(key.clone()),
                address: "192.0.2.11".into(),
            }),
            weight: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        matches!(next(&mut events).await, pb::event::Kind::Config(_)),
        "no second conflict event within a second"
    );

    let health = client.list_health(pb::Empty {}).await.unwrap().into_inner();
    let shown: Vec<(&str, &str, u64, &str)> = health
        .conflicts
        .iter()
        .map(|c| (c.vip.as_str(), c.mac.as_str(), c.count, c.backend.as_str()))
        .collect();
    assert_eq!(
        shown,
        vec![
            ("198.51.100.10", "02:00:00:00:00:11", 3, "192.0.2.11"),
            ("2001:db8::10", "02:00:00:00:00:66", 1, ""),
        ]
    );

    // Metrics: the per-pair family and the worker counters.
    stats[0].vip_conflicts.add(3);
    stats[1].vip_conflicts.add(1);
    stats[0].echo_replies.add(7);
    let text = render();
    assert!(text.contains("# TYPE lb_vip_conflicts counter\n"), "{text}");
    assert!(
        text.contains(
            "lb_vip_conflicts_total{address=\"198.51.100.10\",mac=\"02:00:00:00:00:11\"} 3\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "lb_vip_conflicts_total{address=\"2001:db8::10\",mac=\"02:00:00:00:00:66\"} 1\n"
        ),
        "{text}"
    );
    assert!(text.contains("lb_worker_vip_conflicts_total{worker=\"1\"} 3\n"));
    assert!(text.contains("lb_worker_vip_conflicts_total{worker=\"2\"} 1\n"));
    assert!(text.contains("lb_worker_echo_replies_total{worker=\"1\"} 7\n"));
    assert!(text.contains("lb_worker_drops_total{worker=\"1\",reason=\"echo_rate_limited\"} 0\n"));
    let st = client.get_stats(pb::Empty {}).await.unwrap().into_inner();
    assert_eq!(
        st.workers
            .iter()
            .map(|w| (w.vip_conflicts, w.echo_replies))
            .collect::<Vec<_>>(),
        vec![(3, 7), (1, 0)]
    );
}

#[test]
fn no_vip_ping_reaches_the_snapshot() {
    let mut c = Control::new(DesiredState::default(), MAC, clock).unwrap();
    assert!(c.snapshot().vip_ping(), "on by default");
    let g = c.generation();
    c.set_vip_ping(true);
    assert_eq!(c.generation(), g, "no change, no snapshot");
    c.set_vip_ping(false);
    assert!(!c.snapshot().vip_ping());
    assert_eq!(c.generation(), g + 1);
    // Every later snapshot keeps it (a health verdict that changes republishes).
    let vip = lb_core::snapshot::VipKey {
        addr: "198.51.100.10".parse().unwrap(),
        port: 443,
        proto: lb_core::snapshot::Proto::Tcp,
    };
    let addr: IpAddr = "192.0.2.11".parse().unwrap();
    let status = |healthy| control::health::Status {
        healthy,
        detail: String::new(),
        successes: 0,
        failures: 0,
        passed: true,
        ..Default::default()
    };
    c.set_health(vip, addr, status(true));
    c.set_health(vip, addr, status(false));
    assert_eq!(c.generation(), g + 2, "republished");
    assert!(!c.snapshot().vip_ping(), "still off");
}

/// The dataplane asks for each VIP address every VIP_CLAIM_PROBE_S
/// seconds, the first that long after start (an answer is a conflict).
#[test]
fn vip_addresses_are_asked_for_every_probe_interval() {
    use control::hub::VIP_CLAIM_PROBE_S;
    let text = "[[vip]]\naddress = \"198.51.100.10\"\nport = 80\nprotocol = \"tcp\"\n\
                [[vip.backend]]\naddress = \"192.0.2.11\"\nmac = \"02:00:00:00:00:11\"\n\
                [[vip]]\naddress = \"198.51.100.10\"\nport = 443\nprotocol = \"tcp\"\n\
                [[vip]]\naddress = \"2001:db8::10\"\nport = 443\nprotocol = \"udp\"\n";
    let config: control::config::Config = toml::from_str(text).unwrap();
    let state = DesiredState::from_config(&config).unwrap();
    let mut c = Control::new(state, MAC, clock).unwrap();
    let requests = c.requests();
    let drain = || {
        let mut v = Vec::new();
        while let Some(ip) = requests.pop() {
            v.push(ip.to_string());
        }
        v.sort();
        v
    };
    let vips = vec!["198.51.100.10".to_string(), "2001:db8::10".to_string()];
    c.resolve_neighbors(100);
    assert_eq!(drain(), Vec::<String>::new(), "not at start");
    c.resolve_neighbors(100 + VIP_CLAIM_PROBE_S - 1);
    assert_eq!(drain(), Vec::<String>::new());
    c.resolve_neighbors(100 + VIP_CLAIM_PROBE_S);
    assert_eq!(drain(), vips, "each address once, the static backend never");
    c.resolve_neighbors(100 + 2 * VIP_CLAIM_PROBE_S - 1);
    assert_eq!(drain(), Vec::<String>::new());
    c.resolve_neighbors(100 + 2 * VIP_CLAIM_PROBE_S);
    assert_eq!(drain(), vips);
}
