//! The in-process control side the service tests share: the real
//! `grpc::serve` on a Unix socket in a temporary directory, the hub built
//! without EAL, two workers' counters set by hand, a fake TSC, and (once
//! started) the real committer.

#![allow(dead_code)] // each test file uses its own part

pub mod certs;
pub mod process;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use control::hub::Control;
use control::state::DesiredState;
use control::{commit, grpc, metrics};
use lb_core::packet::MacAddr;
use lb_core::stats::WorkerStats;
use lb_proto::v1 as pb;
use pb::load_balancer_client::LoadBalancerClient;
use tonic::transport::Channel;

pub const MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
pub const LCORES: [u32; 2] = [1, 2];

/// The fake TSC: every publication gets a later stamp.
pub static TSC: AtomicU64 = AtomicU64::new(1_000);
pub fn clock() -> u64 {
    TSC.fetch_add(1, Ordering::SeqCst) + 1
}

/// The repository's root.
pub fn repo() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `target/` (or `$CARGO_TARGET_DIR`): lbd is `target/debug/lbd`.
pub fn target_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_lbd"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// A new, empty directory of this test process.
pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lbd-service-{}-{name}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn hub() -> Control {
    Control::new(DesiredState::default(), MAC, clock).unwrap()
}

/// An in-process lbd control side: the API on a Unix socket, the hub, two
/// workers' counters, and (once started) the committer.
pub struct Lbd {
    pub control: Arc<Mutex<Control>>,
    pub stats: Arc<[WorkerStats]>,
    client: LoadBalancerClient<Channel>,
    /// The API's connection, for other services on it (grpc.health.v1).
    pub channel: Channel,
    pub stop: Arc<AtomicBool>,
    dir: PathBuf,
}

impl Lbd {
    pub async fn start(name: &str, control: Control, committer: bool) -> Lbd {
        let dir = temp_dir(name);
        let stats: Arc<[WorkerStats]> = LCORES.iter().map(|_| WorkerStats::default()).collect();
        let control = Arc::new(Mutex::new(control.with_stats(Arc::clone(&stats))));
        let stop = Arc::new(AtomicBool::new(false));
        let socket = dir.join("lbd.sock");
        let listener = grpc::bind(&socket).await.unwrap();
        let api = grpc::Api {
            control: Arc::clone(&control),
            stats: Arc::clone(&stats),
            lcores: LCORES.to_vec(),
            port: "net_null0".into(),
            eal_args: vec!["--no-pci".into()],
        };
        let s = Arc::clone(&stop);
        tokio::spawn(async move { grpc::serve(listener, api, &s).await.unwrap() });
        let channel = lb_proto::connect_unix(socket).await.unwrap();
        let client = LoadBalancerClient::new(channel.clone());
        let lbd = Lbd {
            control,
            stats,
            client,
            channel,
            stop,
            dir,
        };
        if committer {
            lbd.start_committer();
        }
        lbd
    }

    pub fn start_committer(&self) {
        let (c, s) = (Arc::clone(&self.control), Arc::clone(&self.stop));
        tokio::spawn(async move { commit::committer(&c, &s).await });
    }

    pub fn hub(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap()
    }

    pub fn api(&self) -> LoadBalancerClient<Channel> {
        self.client.clone()
    }

    pub fn metrics(&self) -> String {
        metrics::render(&metrics::Source {
            control: Arc::clone(&self.control),
            stats: Arc::clone(&self.stats),
            lcores: LCORES.to_vec(),
            port: None,
            pool: None,
        })
    }
}

impl Drop for Lbd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next event of a `Watch` stream, within a second.
pub async fn next(events: &mut tonic::Streaming<pb::Event>) -> pb::event::Kind {
    tokio::time::timeout(Duration::from_secs(1), events.message())
        .await
        .expect("an event within a second")
        .unwrap()
        .expect("the stream goes on")
        .kind
        .unwrap()
}
