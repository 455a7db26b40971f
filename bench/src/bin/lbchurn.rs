//! lbchurn: the control-plane half of `bench/harness.sh --churn`. Changes a
//! backend's weight through lbd's gRPC API at a target rate (open loop,
//! with up to `--in-flight` requests waiting for their replies) while
//! traffic flows; each change rebuilds that VIP's Maglev table, publishes a
//! new snapshot and is acknowledged once the state file holds it. Measures
//! the changes per second acknowledged, the reply time, and the time from
//! each snapshot's publication to each worker's first burst on it (lbd's
//! workers measure it with the TSC: `snapshot_adoption` in the stats), and
//! checks that every worker reaches the last snapshot within a second.
//! Prints one JSON line.
//!
//! `lbchurn --socket PATH --vip 198.51.100.10:443/udp --backend 10.1.0.1 [--rate 1000] [--seconds 5] [--in-flight 8]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lb_proto::v1::load_balancer_client::LoadBalancerClient;
use lb_proto::v1::{BackendKey, DelayBucket, Empty, Protocol, Stats, UpdateBackendRequest, VipKey};
use tonic::transport::Channel;

struct Options {
    socket: PathBuf,
    vip: VipKey,
    backend: String,
    rate: f64,
    seconds: f64,
    in_flight: usize,
}

fn parse() -> Result<Options, String> {
    let mut socket = None;
    let mut vip = None;
    let mut backend = None;
    let (mut rate, mut seconds): (f64, f64) = (1000.0, 5.0);
    let mut in_flight = 8;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a}: needs a value"))?;
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(v)),
            "--backend" => backend = Some(v.clone()),
            "--rate" => rate = v.parse().map_err(|e| format!("--rate: {e}"))?,
            "--seconds" => seconds = v.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--in-flight" => in_flight = v.parse().map_err(|e| format!("--in-flight: {e}"))?,
            "--vip" => {
                let (addr, rest) = v.rsplit_once(':').ok_or("--vip: ADDR:PORT/PROTO")?;
                let (port, proto) = rest.split_once('/').ok_or("--vip: ADDR:PORT/PROTO")?;
                vip = Some(VipKey {
                    // [2001:db8::10]:443/udp for IPv6
                    address: addr
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_string(),
                    port: port.parse().map_err(|e| format!("--vip port: {e}"))?,
                    protocol: match proto {
                        "tcp" => Protocol::Tcp,
                        "udp" => Protocol::Udp,
                        p => return Err(format!("--vip: protocol {p}: tcp or udp")),
                    } as i32,
                });
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if rate.is_nan() || rate <= 0.0 {
        return Err("--rate: above 0".into());
    }
    if !(1..=256).contains(&in_flight) {
        return Err("--in-flight: 1 to 256".into());
    }
    Ok(Options {
        socket: socket.ok_or("--socket is required")?,
        vip: vip.ok_or("--vip is required")?,
        backend: backend.ok_or("--backend is required")?,
        rate,
        seconds,
        in_flight,
    })
}

async fn connect(path: PathBuf) -> Result<LoadBalancerClient<Channel>, String> {
    let channel = lb_proto::connect_unix(path)
        .await
        .map_err(|e| format!("connecting to lbd: {e}"))?;
    Ok(LoadBalancerClient::new(channel))
}

async fn generation(c: &mut LoadBalancerClient<Channel>) -> Result<u64, String> {
    Ok(c.get_info(Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .snapshot_generation)
}

/// Snapshot delays recorded between two reads of the stats (lbd measures
/// them), from the buckets `of` picks out of a read: each worker's delays
/// to its first burst on a snapshot, or the delays until every worker had it.
fn delays_since<'a>(
    before: &'a Stats,
    after: &'a Stats,
    of: impl Fn(&'a Stats) -> Vec<&'a DelayBucket>,
) -> Vec<DelayBucket> {
    let mut counts: BTreeMap<u64, i128> = BTreeMap::new();
    for (s, sign) in [(after, 1), (before, -1)] {
        for b in of(s) {
            *counts.entry(b.max_us).or_default() += sign * i128::from(b.count);
        }
    }
    counts
        .into_iter()
        .filter(|&(_, c)| c > 0)
        .map(|(max_us, count)| DelayBucket {
            max_us,
            count: count as u64,
        })
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// What the API side saw: (sent -> acknowledged) per change, and when the
/// last reply came (a backlog stretches the run beyond `--seconds`).
#[derive(Default)]
struct Acks {
    latency_us: Vec<f64>,
    last: Option<Instant>,
}

async fn run(o: Options) -> Result<(), String> {
    let mut c = connect(o.socket.clone()).await?;
    // Packets lost: dropped by the decision, and refused on transmit.
    let drops = |s: &lb_proto::v1::Stats| -> u64 {
        s.workers
            .iter()
            .flat_map(|w| w.drops.iter().map(|d| d.value))
            .sum()
    };
    let tx_failed =
        |s: &lb_proto::v1::Stats| -> u64 { s.workers.iter().map(|w| w.tx_failed).sum() };
    let before = c
        .get_stats(Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let first_generation = generation(&mut c).await?;
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.seconds);
    // Open loop: change k is due at start + k x period, whoever is free
    // sends it; `in_flight` clients at most wait for their replies.
    let next = Arc::new(AtomicU64::new(0));
    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut senders = tokio::task::JoinSet::new();
    for _ in 0..o.in_flight {
        let (mut c, next, acks, vip, backend) = (
            c.clone(),
            Arc::clone(&next),
            Arc::clone(&acks),
            o.vip.clone(),
            o.backend.clone(),
        );
        senders.spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let due = start + period.mul_f64(k as f64);
                if due >= end {
                    return Ok::<(), String>(());
                }
                tokio::time::sleep_until(due.into()).await;
                let sent = Instant::now();
                c.update_backend(UpdateBackendRequest {
                    backend: Some(BackendKey {
                        vip: Some(vip.clone()),
                        address: backend.clone(),
                    }),
                    weight: Some(1 + (k % 2) as u32),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("update_backend: {}", e.message()))?;
                let now = Instant::now();
                let mut a = acks.lock().expect("acks");
                a.latency_us.push((now - sent).as_secs_f64() * 1e6);
                a.last = Some(now);
            }
        });
    }
    senders
        .join_all()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, String>>()?;
    // Then every worker on the last snapshot (or later), within a second.
    let last_generation = generation(&mut c).await?;
    let waited = Instant::now();
    let after = loop {
        let s = c
            .get_stats(Empty {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let behind = s
            .workers
            .iter()
            .filter(|w| w.snapshot_generation < last_generation)
            .count();
        if behind == 0 || waited.elapsed() > Duration::from_secs(1) {
            break (s, behind);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (mut acks, last) = {
        let mut a = acks.lock().expect("acks");
        (std::mem::take(&mut a.latency_us), a.last)
    };
    let secs = last.map_or(o.seconds, |t| (t - start).as_secs_f64().max(o.seconds));
    acks.sort_by(f64::total_cmp);
    let adoption = delays_since(&before, &after.0, |s| {
        s.workers
            .iter()
            .flat_map(|w| &w.snapshot_adoption)
            .collect()
    });
    let adopted: u64 = adoption.iter().map(|b| b.count).sum();
    let q = |q| lb_proto::delay_quantile(&adoption, q).unwrap_or(0);
    let all = delays_since(&before, &after.0, |s| {
        s.snapshot_all_workers.iter().collect()
    });
    let all_n: u64 = all.iter().map(|b| b.count).sum();
    let all_q = |q| lb_proto::delay_quantile(&all, q).unwrap_or(0);
    println!(
        "{{\"target_per_s\":{},\"in_flight\":{},\"changes\":{},\"changes_per_s\":{:.1},\"ack_p50_us\":{:.0},\"ack_p99_us\":{:.0},\"snapshots\":{},\"adopted\":{},\"adoption_p50_us\":{},\"adoption_p99_us\":{},\"adoption_max_us\":{},\"all_workers_snapshots\":{},\"all_workers_p50_us\":{},\"all_workers_p99_us\":{},\"all_workers_max_us\":{},\"workers_behind_after_1s\":{},\"dataplane_drops\":{},\"tx_failed\":{}}}",
        o.rate,
        o.in_flight,
        acks.len(),
        acks.len() as f64 / secs.max(1e-3),
        percentile(&acks, 0.5),
        percentile(&acks, 0.99),
        last_generation - first_generation,
        adopted,
        q(0.5),
        q(0.99),
        q(1.0),
        all_n,
        all_q(0.5),
        all_q(0.99),
        all_q(1.0),
        after.1,
        drops(&after.0) - drops(&before),
        tx_failed(&after.0) - tx_failed(&before)
    );
    Ok(())
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lbchurn: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(o)) {
        eprintln!("lbchurn: {e}");
        std::process::exit(1);
    }
}
