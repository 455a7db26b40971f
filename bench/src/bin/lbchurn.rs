//! lbchurn: the control-plane half of `bench/harness.sh --churn`. Changes a
//! backend's weight through lbd's gRPC API at a target rate while traffic
//! flows (each change rebuilds that VIP's Maglev table and publishes a new
//! snapshot), and measures for each change the time from the request to
//! every worker forwarding with the new snapshot (workers report the
//! generation of their last burst). Prints one JSON line.
//!
//! `lbchurn --socket PATH --vip 198.51.100.10:443/udp --backend 10.1.0.1 [--rate 1000] [--seconds 5]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_proto::v1::load_balancer_client::LoadBalancerClient;
use lb_proto::v1::{BackendKey, Empty, Protocol, UpdateBackendRequest, VipKey};
use tonic::transport::Channel;

struct Options {
    socket: PathBuf,
    vip: VipKey,
    backend: String,
    rate: f64,
    seconds: f64,
}

fn parse() -> Result<Options, String> {
    let mut socket = None;
    let mut vip = None;
    let mut backend = None;
    let (mut rate, mut seconds): (f64, f64) = (1000.0, 5.0);
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a}: needs a value"))?;
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(v)),
            "--backend" => backend = Some(v.clone()),
            "--rate" => rate = v.parse().map_err(|e| format!("--rate: {e}"))?,
            "--seconds" => seconds = v.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--vip" => {
                let (addr, rest) = v.rsplit_once(':').ok_or("--vip: ADDR:PORT/PROTO")?;
                let (port, proto) = rest.split_once('/').ok_or("--vip: ADDR:PORT/PROTO")?;
                vip = Some(VipKey {
                    address: addr.to_string(),
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
    Ok(Options {
        socket: socket.ok_or("--socket is required")?,
        vip: vip.ok_or("--vip is required")?,
        backend: backend.ok_or("--backend is required")?,
        rate,
        seconds,
    })
}

async fn connect(path: PathBuf) -> Result<LoadBalancerClient<Channel>, String> {
    let channel = lb_proto::connect_unix(path)
        .await
        .map_err(|e| format!("connecting to lbd: {e}"))?;
    Ok(LoadBalancerClient::new(channel))
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn run(o: Options) -> Result<(), String> {
    let mut c = connect(o.socket.clone()).await?;
    let drops = |s: &lb_proto::v1::Stats| -> u64 {
        s.workers
            .iter()
            .flat_map(|w| w.drops.iter().map(|d| d.value))
            .sum()
    };
    let before = c
        .get_stats(Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let period = Duration::from_secs_f64(1.0 / o.rate);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.seconds);
    let (mut changes, mut not_adopted) = (0u64, 0u64);
    let mut adoption = Vec::new();
    let mut next = start;
    while Instant::now() < end {
        let sent = Instant::now();
        let weight = 1 + (changes % 2) as u32;
        c.update_backend(UpdateBackendRequest {
            backend: Some(BackendKey {
                vip: Some(o.vip.clone()),
                address: o.backend.clone(),
            }),
            weight: Some(weight),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("update_backend: {}", e.message()))?;
        changes += 1;
        let generation = c
            .get_info(Empty {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner()
            .snapshot_generation;
        // Every worker has forwarded a burst with it (or a later one).
        let adopted = loop {
            let s = c
                .get_stats(Empty {})
                .await
                .map_err(|e| e.to_string())?
                .into_inner();
            if s.workers
                .iter()
                .all(|w| w.snapshot_generation >= generation)
            {
                break true;
            }
            if sent.elapsed() > Duration::from_secs(1) {
                break false;
            }
        };
        if adopted {
            adoption.push(sent.elapsed().as_secs_f64() * 1e6);
        } else {
            not_adopted += 1;
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let after = c
        .get_stats(Empty {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    adoption.sort_by(f64::total_cmp);
    println!(
        "{{\"target_per_s\":{},\"changes\":{changes},\"changes_per_s\":{:.1},\"adoption_p50_us\":{:.0},\"adoption_p99_us\":{:.0},\"not_adopted_within_1s\":{not_adopted},\"dataplane_drops\":{}}}",
        o.rate,
        changes as f64 / secs,
        percentile(&adoption, 0.5),
        percentile(&adoption, 0.99),
        drops(&after) - drops(&before)
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
