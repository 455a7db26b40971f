//! `kill -9` of lbd at a random moment while a client changes its
//! configuration, 20 times: the state file always loads (lbd restarts on
//! it and serves), and holds every change that was acknowledged. The one
//! change in flight at the kill may be there or not; nothing else may.
//! The revision survives with the configuration (one per change).

mod common;
use common::process::Lbd;

use std::collections::BTreeMap;
use std::time::Duration;

use lb_proto::v1 as pb;
use pb::load_balancer_client::LoadBalancerClient;
use tonic::transport::Channel;

/// VIP index -> backend last octet -> weight.
type State = BTreeMap<u8, BTreeMap<u8, u32>>;

const VIPS: u8 = 2;

fn key(v: u8) -> pb::VipKey {
    pb::VipKey {
        address: format!("198.51.100.{}", 10 + v),
        port: 443,
        protocol: pb::Protocol::Tcp as i32,
    }
}

fn backend(b: u8, weight: u32) -> pb::BackendConfig {
    pb::BackendConfig {
        address: format!("10.0.0.{b}"),
        weight: Some(weight),
        mac: format!("02:00:00:00:01:{b:02x}"),
        ..Default::default()
    }
}

fn config(s: &State) -> pb::Config {
    pb::Config {
        vips: s
            .iter()
            .map(|(&v, bs)| pb::VipConfig {
                key: Some(key(v)),
                table_size: 2039,
                backends: bs.iter().map(|(&b, &w)| backend(b, w)).collect(),
                ..Default::default()
            })
            .collect(),
    }
}

/// Change `k` from state `s`: its request and the state it leads to. Each
/// one changes something (backend 10.0.0.1's weight, or the backend set),
/// so each acknowledged change is one revision.
fn change(k: u64, s: &State) -> (Req, State) {
    let v = (k % u64::from(VIPS)) as u8;
    let mut next = s.clone();
    let first = s[&v][&1] % 100 + 1;
    let extra = 20 + (k % 10) as u8;
    let req = match k % 5 {
        0 => {
            let n = (k % 7) as u8 + 1;
            let bs: BTreeMap<u8, u32> = (1..=n).map(|b| (b, first)).collect();
            let r = pb::SetBackendsRequest {
                vip: Some(key(v)),
                backends: bs.iter().map(|(&b, &w)| backend(b, w)).collect(),
                ..Default::default()
            };
            next.insert(v, bs);
            Req::Set(r)
        }
        1 | 4 => {
            next.get_mut(&v).unwrap().insert(1, first);
            Req::Update(pb::UpdateBackendRequest {
                backend: Some(pb::BackendKey {
                    vip: Some(key(v)),
                    address: "10.0.0.1".into(),
                }),
                weight: Some(first),
                ..Default::default()
            })
        }
        2 if s[&v].contains_key(&extra) => {
            next.get_mut(&v).unwrap().remove(&extra);
            Req::Remove(pb::BackendKey {
                vip: Some(key(v)),
                address: format!("10.0.0.{extra}"),
            })
        }
        2 => {
            next.get_mut(&v).unwrap().insert(extra, 3);
            Req::Add(pb::AddBackendRequest {
                vip: Some(key(v)),
                address: format!("10.0.0.{extra}"),
                weight: Some(3),
                mac: format!("02:00:00:00:01:{extra:02x}"),
                ..Default::default()
            })
        }
        _ => {
            next.get_mut(&v).unwrap().insert(1, first);
            Req::Apply(pb::ApplyRequest {
                config: Some(config(&next)),
                ..Default::default()
            })
        }
    };
    (req, next)
}

enum Req {
    Set(pb::SetBackendsRequest),
    Update(pb::UpdateBackendRequest),
    Remove(pb::BackendKey),
    Add(pb::AddBackendRequest),
    Apply(pb::ApplyRequest),
}

async fn send(api: &mut LoadBalancerClient<Channel>, r: Req) -> Result<(), tonic::Status> {
    match r {
        Req::Set(r) => api.set_backends(r).await.map(drop),
        Req::Update(r) => api.update_backend(r).await.map(drop),
        Req::Remove(r) => api.remove_backend(r).await.map(drop),
        Req::Add(r) => api.add_backend(r).await.map(drop),
        Req::Apply(r) => api.apply(r).await.map(drop),
    }
}

/// What lbd serves: its VIPs' backends and weights, and its revision.
async fn served(api: &mut LoadBalancerClient<Channel>) -> (State, u64) {
    let vips = api.list_vips(pb::Empty {}).await.unwrap().into_inner().vips;
    let mut s = State::new();
    for vip in vips {
        let k = vip.key.unwrap();
        let v = (0..VIPS).find(|&v| key(v) == k).expect("one of ours");
        let bs = vip
            .backends
            .iter()
            .map(|b| {
                let octet = b.address.rsplit('.').next().unwrap().parse().unwrap();
                (octet, b.weight)
            })
            .collect();
        s.insert(v, bs);
    }
    let revision = api
        .get_info(pb::Empty {})
        .await
        .unwrap()
        .into_inner()
        .config_revision;
    (s, revision)
}

/// xorshift64*, seeded from the clock (printed, to replay a failure).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[tokio::test]
async fn the_state_file_survives_kill_9_with_every_acknowledged_change() {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = common::temp_dir("crash");
    let state_file = dir.join("lb.toml");

    // history[n]: the state after the first n changes; revisions[n] its revision.
    let mut history: Vec<State> = vec![(0..VIPS).map(|v| (v, BTreeMap::from([(1, 1)]))).collect()];
    let lbd = Lbd::start_with_state(&dir, &state_file, "crash0", &[]);
    let mut api =
        LoadBalancerClient::new(lb_proto::connect_unix(lbd.socket.clone()).await.unwrap());
    api.apply(pb::ApplyRequest {
        config: Some(config(&history[0])),
        ..Default::default()
    })
    .await
    .unwrap();
    let (s, mut revision) = served(&mut api).await;
    assert_eq!(s, history[0]);
    let mut lbd = Some(lbd);
    let (mut acked_total, mut in_flight_kills, mut in_flight_kept) = (0, 0, 0);

    for round in 1..=20 {
        // Changes one at a time; lbd is killed after a random delay,
        // whatever it is doing.
        let start = history.len() - 1;
        // Set while a change is sent and not yet acknowledged.
        let in_flight = std::cell::Cell::new(false);
        let delay = Duration::from_millis(5 + rng.below(150));
        {
            let drive = async {
                loop {
                    let n = history.len() - 1;
                    let (req, next) = change(n as u64 + 1, &history[n]);
                    in_flight.set(true);
                    send(&mut api, req)
                        .await
                        .unwrap_or_else(|e| panic!("change {}: {e}", n + 1));
                    in_flight.set(false);
                    history.push(next);
                }
            };
            tokio::select! {
                _ = drive => {}
                _ = tokio::time::sleep(delay) => {}
            }
        }
        // Drop: SIGKILL, then reaped.
        drop(lbd.take());
        let acked = history.len() - 1;
        acked_total += acked - start;
        let pending = in_flight
            .get()
            .then(|| change(acked as u64 + 1, &history[acked]).1);
        in_flight_kills += usize::from(in_flight.get());

        let restarted = Lbd::start_with_state(&dir, &state_file, &format!("crash{round}"), &[]);
        api = LoadBalancerClient::new(
            lb_proto::connect_unix(restarted.socket.clone())
                .await
                .unwrap(),
        );
        let (s, r) = served(&mut api).await;
        let expected_revision = revision + (acked - start) as u64;
        if s == history[acked] {
            assert_eq!(
                r, expected_revision,
                "round {round}: the revision with its changes"
            );
        } else {
            assert_eq!(
                Some(&s),
                pending.as_ref(),
                "round {round} (seed {seed}): lbd restarted with neither the last acknowledged \
                 state (change {acked}) nor the one in flight: {s:?}, acknowledged {:?}",
                history[acked]
            );
            assert_eq!(
                r,
                expected_revision + 1,
                "round {round}: the revision with its changes"
            );
            history.push(s);
            in_flight_kept += 1;
        }
        revision = r;
        lbd = Some(restarted);
    }
    drop(lbd);
    eprintln!(
        "{acked_total} changes acknowledged over 20 kills, {in_flight_kills} kills with one in \
         flight, {in_flight_kept} of those found in the state file after"
    );
    assert!(
        acked_total > 0,
        "no change was acknowledged before any kill"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
