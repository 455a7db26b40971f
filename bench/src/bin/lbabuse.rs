//! lbabuse: the API half of `bench/harness.sh --abuse`. N clients, each on
//! its own connection to lbd's gRPC socket, send requests as fast as the
//! replies come for S seconds while traffic flows: valid ones (VIPs and
//! backends created, changed and removed, SetBackends, Apply typed and TOML
//! after an Export, reads, event streams opened and dropped) and the API
//! probe's empty and hostile ones (`lb_testkit::probe`).
//!
//! Each client changes only its own VIPs (203.0.113.<client+1>, ports
//! 1000-1003) and keeps a model of them, so a valid request has one
//! expected status: OK, or ABORTED for an Apply whose `expected_revision`
//! another client's change overtook. The hostile ones expect the probe's
//! status. UNKNOWN, INTERNAL, UNAVAILABLE, CANCELLED, DATA_LOSS and
//! transport errors are failures; any other status than the expected one
//! is counted as unexpected. The VIPs given with `--protect` (the ones the
//! harness measures) are never touched, and are checked unchanged at the
//! end. Prints one JSON object; exits 1 on a failure, an unexpected status
//! or a protected VIP changed.
//!
//! `lbabuse --socket PATH [--clients 16] [--seconds 60] [--protect 198.51.100.10:443/udp]... [--seed N]`

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lb_proto::v1 as pb;
use lb_testkit::probe::{self, Req};
use pb::load_balancer_client::LoadBalancerClient;
use serde_json::json;
use tonic::transport::Channel;
use tonic::{Code, Status};

struct Options {
    socket: PathBuf,
    clients: usize,
    seconds: f64,
    protect: Vec<pb::VipKey>,
    seed: u64,
}

fn vip_key(v: &str) -> Result<pb::VipKey, String> {
    let (addr, rest) = v.rsplit_once(':').ok_or("--protect: ADDR:PORT/PROTO")?;
    let (port, proto) = rest.split_once('/').ok_or("--protect: ADDR:PORT/PROTO")?;
    Ok(pb::VipKey {
        address: addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: port.parse().map_err(|e| format!("--protect port: {e}"))?,
        protocol: match proto {
            "tcp" => pb::Protocol::Tcp,
            "udp" => pb::Protocol::Udp,
            p => return Err(format!("--protect: protocol {p}: tcp or udp")),
        } as i32,
    })
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        socket: PathBuf::new(),
        clients: 16,
        seconds: 60.0,
        protect: Vec::new(),
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    };
    let mut socket = None;
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a}: needs a value"))?;
        match a.as_str() {
            "--socket" => socket = Some(PathBuf::from(v)),
            "--clients" => o.clients = v.parse().map_err(|e| format!("--clients: {e}"))?,
            "--seconds" => o.seconds = v.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--seed" => o.seed = v.parse().map_err(|e| format!("--seed: {e}"))?,
            "--protect" => o.protect.push(vip_key(v)?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !(1..=250).contains(&o.clients) {
        return Err("--clients: 1 to 250 (one address of 203.0.113.0/24 each)".into());
    }
    if o.seconds.is_nan() || o.seconds <= 0.0 {
        return Err("--seconds: above 0".into());
    }
    o.socket = socket.ok_or("--socket is required")?;
    Ok(o)
}

/// xorshift64*: reproducible from `--seed`, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const PORTS: [u32; 4] = [1000, 1001, 1002, 1003];
const BACKENDS: u8 = 8;
/// Small tables (prime, 100 slots a backend at least): 64 VIPs of 65537
/// entries would make every snapshot the control side builds cost more
/// than the requests.
const TABLE_SIZE: u32 = 821;

/// One client's VIPs (by port) and their backends (last octet -> weight).
type Model = BTreeMap<u32, BTreeMap<u8, u32>>;

#[derive(Default)]
struct Tally {
    /// method -> status -> count.
    codes: BTreeMap<String, BTreeMap<String, u64>>,
    requests: u64,
    failures: Vec<String>,
    unexpected: Vec<String>,
    failure_count: u64,
    unexpected_count: u64,
    latency_us: Vec<f64>,
    watch_events: u64,
}

fn is_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown | Code::Internal | Code::Unavailable | Code::Cancelled | Code::DataLoss
    )
}

impl Tally {
    /// Count one reply; `expected` the statuses it may have.
    fn record(&mut self, method: &str, got: &Result<(), Status>, expected: &[Code], what: &str) {
        self.requests += 1;
        let code = got.as_ref().err().map_or(Code::Ok, Status::code);
        *self
            .codes
            .entry(method.to_string())
            .or_default()
            .entry(format!("{code:?}"))
            .or_default() += 1;
        let message = || {
            got.as_ref()
                .err()
                .map(|s| s.message().chars().take(200).collect::<String>())
                .unwrap_or_default()
        };
        if is_failure(code) {
            self.failure_count += 1;
            if self.failures.len() < 10 {
                self.failures
                    .push(format!("{method} {what}: {code:?} {:?}", message()));
            }
        } else if !expected.contains(&code) {
            self.unexpected_count += 1;
            if self.unexpected.len() < 10 {
                self.unexpected.push(format!(
                    "{method} {what}: {code:?} {:?}, expected {expected:?}",
                    message()
                ));
            }
        }
    }

    fn merge(&mut self, o: Tally) {
        for (m, codes) in o.codes {
            let mine = self.codes.entry(m).or_default();
            for (c, n) in codes {
                *mine.entry(c).or_default() += n;
            }
        }
        self.requests += o.requests;
        self.failure_count += o.failure_count;
        self.unexpected_count += o.unexpected_count;
        self.failures.extend(o.failures);
        self.unexpected.extend(o.unexpected);
        self.failures.truncate(10);
        self.unexpected.truncate(10);
        self.latency_us.extend(o.latency_us);
        self.watch_events += o.watch_events;
    }
}

struct Client {
    id: usize,
    api: LoadBalancerClient<Channel>,
    channel: Channel,
    rng: Rng,
    model: Model,
    tally: Tally,
    /// The probe's requests with their statuses, built once.
    probes: Vec<(Req, Code, &'static str)>,
}

impl Client {
    fn address(&self) -> String {
        format!("203.0.113.{}", self.id + 1)
    }

    fn key(&self, port: u32) -> pb::VipKey {
        pb::VipKey {
            address: self.address(),
            port,
            protocol: pb::Protocol::Tcp as i32,
        }
    }

    fn backend_address(&self, b: u8) -> String {
        format!("10.200.{}.{b}", self.id + 1)
    }

    /// Static MACs: nothing for the dataplane to resolve.
    fn backend_mac(&self, b: u8) -> String {
        format!("02:ab:00:00:{:02x}:{b:02x}", self.id + 1)
    }

    fn backend_config(&self, b: u8, weight: u32) -> pb::BackendConfig {
        pb::BackendConfig {
            address: self.backend_address(b),
            weight: Some(weight),
            mac: self.backend_mac(b),
            ..Default::default()
        }
    }

    fn vip_config(&self, port: u32, backends: &BTreeMap<u8, u32>) -> pb::VipConfig {
        pb::VipConfig {
            key: Some(self.key(port)),
            table_size: TABLE_SIZE,
            backends: backends
                .iter()
                .map(|(&b, &w)| self.backend_config(b, w))
                .collect(),
            ..Default::default()
        }
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        (!items.is_empty()).then(|| items[self.rng.below(items.len())])
    }

    fn existing(&self) -> Vec<u32> {
        self.model.keys().copied().collect()
    }

    fn missing(&self) -> Vec<u32> {
        PORTS
            .into_iter()
            .filter(|p| !self.model.contains_key(p))
            .collect()
    }

    fn random_backends(&mut self) -> BTreeMap<u8, u32> {
        let mut bs = BTreeMap::new();
        for b in 1..=BACKENDS {
            if self.rng.below(2) == 0 {
                bs.insert(b, 1 + self.rng.below(100) as u32);
            }
        }
        bs
    }

    async fn timed<T>(
        &mut self,
        f: impl std::future::Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let t = Instant::now();
        let r = f.await;
        self.tally.latency_us.push(t.elapsed().as_secs_f64() * 1e6);
        r
    }

    /// One request, chosen at random: 40% hostile or empty, 35% valid
    /// changes, 25% reads and event streams.
    async fn one(&mut self) {
        let roll = self.rng.below(100);
        if roll < 40 {
            let (req, want, part) = self.probes[self.rng.below(self.probes.len())].clone();
            let method = req.method();
            let channel = self.channel.clone();
            let got = self.timed(req.call(&channel)).await;
            let got = match got {
                Err(s) if s.code() == want && !s.message().contains(part) => Err(Status::new(
                    Code::FailedPrecondition,
                    format!("(message lacks {part:?}) {}", s.message()),
                )),
                other => other,
            };
            self.tally.record(method, &got, &[want], "(probe)");
        } else if roll < 75 {
            self.change().await;
        } else {
            self.read().await;
        }
    }

    async fn change(&mut self) {
        let mut api = self.api.clone();
        match self.rng.below(9) {
            0 => match self.pick(&self.missing()) {
                Some(port) => {
                    let r = pb::CreateVipRequest {
                        vip: Some(self.key(port)),
                        table_size: TABLE_SIZE,
                        ..Default::default()
                    };
                    let got = self.timed(api.create_vip(r)).await.map(drop);
                    if got.is_ok() {
                        self.model.insert(port, BTreeMap::new());
                    }
                    self.tally.record("CreateVip", &got, &[Code::Ok], "(own)");
                }
                None => self.delete().await,
            },
            1 => self.delete().await,
            2 => {
                let Some(port) = self.pick(&self.existing()) else {
                    return;
                };
                let free: Vec<u8> = (1..=BACKENDS)
                    .filter(|b| !self.model[&port].contains_key(b))
                    .collect();
                let Some(b) = self.pick(&free) else {
                    return;
                };
                let weight = 1 + self.rng.below(100) as u32;
                let r = pb::AddBackendRequest {
                    vip: Some(self.key(port)),
                    address: self.backend_address(b),
                    weight: Some(weight),
                    mac: self.backend_mac(b),
                    ..Default::default()
                };
                let got = self.timed(api.add_backend(r)).await.map(drop);
                if got.is_ok() {
                    self.model.get_mut(&port).expect("vip").insert(b, weight);
                }
                self.tally.record("AddBackend", &got, &[Code::Ok], "(own)");
            }
            3 => {
                let Some((port, b)) = self.some_backend() else {
                    return;
                };
                let r = pb::BackendKey {
                    vip: Some(self.key(port)),
                    address: self.backend_address(b),
                };
                let got = self.timed(api.remove_backend(r)).await.map(drop);
                if got.is_ok() {
                    self.model.get_mut(&port).expect("vip").remove(&b);
                }
                self.tally
                    .record("RemoveBackend", &got, &[Code::Ok], "(own)");
            }
            4 => {
                let Some((port, b)) = self.some_backend() else {
                    return;
                };
                let weight = 1 + self.rng.below(100) as u32;
                let r = pb::UpdateBackendRequest {
                    backend: Some(pb::BackendKey {
                        vip: Some(self.key(port)),
                        address: self.backend_address(b),
                    }),
                    weight: Some(weight),
                    ..Default::default()
                };
                let got = self.timed(api.update_backend(r)).await.map(drop);
                if got.is_ok() {
                    self.model.get_mut(&port).expect("vip").insert(b, weight);
                }
                self.tally
                    .record("UpdateBackend", &got, &[Code::Ok], "(own)");
            }
            5 => {
                let Some(port) = self.pick(&self.existing()) else {
                    return;
                };
                let r = pb::UpdateVipRequest {
                    vip: Some(self.key(port)),
                    drain_flows: Some(self.rng.below(2) as i32),
                    ..Default::default()
                };
                let got = self.timed(api.update_vip(r)).await.map(drop);
                self.tally.record("UpdateVip", &got, &[Code::Ok], "(own)");
            }
            6 => {
                let Some(port) = self.pick(&self.existing()) else {
                    return;
                };
                let backends = self.random_backends();
                let dry_run = self.rng.below(4) == 0;
                let r = pb::SetBackendsRequest {
                    vip: Some(self.key(port)),
                    backends: backends
                        .iter()
                        .map(|(&b, &w)| self.backend_config(b, w))
                        .collect(),
                    dry_run,
                    ..Default::default()
                };
                let got = self.timed(api.set_backends(r)).await.map(drop);
                if got.is_ok() && !dry_run {
                    self.model.insert(port, backends);
                }
                self.tally.record("SetBackends", &got, &[Code::Ok], "(own)");
            }
            7 => self.apply_typed().await,
            _ => self.apply_toml().await,
        }
    }

    async fn delete(&mut self) {
        let Some(port) = self.pick(&self.existing()) else {
            return;
        };
        let mut api = self.api.clone();
        let got = self.timed(api.delete_vip(self.key(port))).await.map(drop);
        if got.is_ok() {
            self.model.remove(&port);
        }
        self.tally.record("DeleteVip", &got, &[Code::Ok], "(own)");
    }

    fn some_backend(&mut self) -> Option<(u32, u8)> {
        let all: Vec<(u32, u8)> = self
            .model
            .iter()
            .flat_map(|(&p, bs)| bs.keys().map(move |&b| (p, b)))
            .collect();
        self.pick(&all)
    }

    async fn export(&mut self) -> Option<pb::ExportResponse> {
        let mut api = self.api.clone();
        let got = self.timed(api.export(pb::Empty {})).await;
        let r = got.as_ref().map(drop).map_err(Clone::clone);
        self.tally.record("Export", &r, &[Code::Ok], "(read)");
        got.ok().map(|r| r.into_inner())
    }

    /// Export, then the whole configuration back with one of our VIPs
    /// added, replaced or removed, guarded by the revision exported: the
    /// others' VIPs go back as they were read.
    async fn apply_typed(&mut self) {
        let Some(export) = self.export().await else {
            return;
        };
        let mut config = export.config.unwrap_or_default();
        let ours = self.address();
        let port = PORTS[self.rng.below(PORTS.len())];
        config.vips.retain(|v| {
            v.key
                .as_ref()
                .is_none_or(|k| k.address != ours || k.port != port)
        });
        let remove = self.model.contains_key(&port) && self.rng.below(2) == 0;
        let backends = self.random_backends();
        if !remove {
            config.vips.push(self.vip_config(port, &backends));
        }
        let r = pb::ApplyRequest {
            config: Some(config),
            expected_revision: Some(export.revision),
            ..Default::default()
        };
        let mut api = self.api.clone();
        let got = self.timed(api.apply(r)).await.map(drop);
        if got.is_ok() {
            if remove {
                self.model.remove(&port);
            } else {
                self.model.insert(port, backends);
            }
        }
        self.tally
            .record("Apply", &got, &[Code::Ok, Code::Aborted], "(typed, own)");
    }

    /// Export, then its TOML back with one VIP of ours appended (or as it
    /// is, as a dry run), guarded by the revision exported.
    async fn apply_toml(&mut self) {
        let Some(export) = self.export().await else {
            return;
        };
        let mut toml = export.toml;
        let port = self.pick(&self.missing());
        let backends = self.random_backends();
        if let Some(port) = port {
            toml += &format!(
                "\n[[vip]]\naddress = \"{}\"\nport = {port}\nprotocol = \"tcp\"\ntable_size = {TABLE_SIZE}\n",
                self.address()
            );
            for (&b, &w) in &backends {
                toml += &format!(
                    "\n[[vip.backend]]\naddress = \"{}\"\nweight = {w}\nmac = \"{}\"\n",
                    self.backend_address(b),
                    self.backend_mac(b)
                );
            }
        }
        let r = pb::ApplyRequest {
            toml,
            dry_run: port.is_none(),
            expected_revision: Some(export.revision),
            ..Default::default()
        };
        let mut api = self.api.clone();
        let got = self.timed(api.apply(r)).await.map(drop);
        if let (Ok(()), Some(port)) = (&got, port) {
            self.model.insert(port, backends);
        }
        self.tally
            .record("Apply", &got, &[Code::Ok, Code::Aborted], "(toml, own)");
    }

    async fn read(&mut self) {
        let mut api = self.api.clone();
        let e = pb::Empty {};
        let (method, got) = match self.rng.below(8) {
            0 => ("ListVips", self.timed(api.list_vips(e)).await.map(drop)),
            1 => ("ListHealth", self.timed(api.list_health(e)).await.map(drop)),
            2 => ("GetStats", self.timed(api.get_stats(e)).await.map(drop)),
            3 => ("GetInfo", self.timed(api.get_info(e)).await.map(drop)),
            4 => {
                self.export().await;
                return;
            }
            5 => match self.pick(&self.existing()) {
                Some(port) => (
                    "GetVip",
                    self.timed(api.get_vip(self.key(port))).await.map(drop),
                ),
                None => ("ListVips", self.timed(api.list_vips(e)).await.map(drop)),
            },
            _ => {
                // An event stream opened, read briefly, dropped.
                let got = self.timed(api.watch(e)).await;
                let got = match got {
                    Ok(s) => {
                        let mut s = s.into_inner();
                        let wait = Duration::from_millis(1 + self.rng.below(50) as u64);
                        let deadline = tokio::time::Instant::now() + wait;
                        loop {
                            match tokio::time::timeout_at(deadline, s.message()).await {
                                Ok(Ok(Some(_))) => self.tally.watch_events += 1,
                                Ok(Ok(None)) | Err(_) => break Ok(()),
                                Ok(Err(status)) => break Err(status),
                            }
                        }
                    }
                    Err(s) => Err(s),
                };
                ("Watch", got)
            }
        };
        self.tally.record(method, &got, &[Code::Ok], "(read)");
    }

    /// Remove what is left of ours.
    async fn clean_up(&mut self) {
        for port in self.existing() {
            self.delete_port(port).await;
        }
    }

    async fn delete_port(&mut self, port: u32) {
        let mut api = self.api.clone();
        let got = api.delete_vip(self.key(port)).await.map(drop);
        if got.is_ok() {
            self.model.remove(&port);
        }
        self.tally
            .record("DeleteVip", &got, &[Code::Ok], "(clean-up)");
    }
}

async fn connect(path: PathBuf) -> Result<(Channel, LoadBalancerClient<Channel>), String> {
    let channel = lb_proto::connect_unix(path)
        .await
        .map_err(|e| format!("connecting to lbd: {e}"))?;
    Ok((channel.clone(), LoadBalancerClient::new(channel)))
}

fn protected(export: &pb::ExportResponse, keys: &[pb::VipKey]) -> Vec<Option<pb::VipConfig>> {
    let vips = export.config.as_ref().map_or(&[][..], |c| &c.vips[..]);
    keys.iter()
        .map(|k| vips.iter().find(|v| v.key.as_ref() == Some(k)).cloned())
        .collect()
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

async fn run(o: Options) -> Result<bool, String> {
    let (_, mut api) = connect(o.socket.clone()).await?;
    let err = |e: Status| format!("{:?}: {}", e.code(), e.message());
    let before = api.export(pb::Empty {}).await.map_err(err)?.into_inner();
    let kept = protected(&before, &o.protect);
    if let Some(i) = kept.iter().position(Option::is_none) {
        return Err(format!("--protect: no VIP {:?}", o.protect[i]));
    }
    let drops = |s: &pb::Stats| -> u64 {
        s.workers
            .iter()
            .flat_map(|w| w.drops.iter().map(|d| d.value))
            .sum()
    };
    let tx_failed = |s: &pb::Stats| -> u64 { s.workers.iter().map(|w| w.tx_failed).sum() };
    let stats_before = api.get_stats(pb::Empty {}).await.map_err(err)?.into_inner();
    // The probe's VIP: its hostile requests expect it there.
    match api
        .create_vip(pb::CreateVipRequest {
            vip: Some(probe::v()),
            ..Default::default()
        })
        .await
    {
        Ok(_) => {
            api.add_backend(pb::AddBackendRequest {
                vip: Some(probe::v()),
                address: probe::B.into(),
                mac: "02:00:00:00:00:77".into(),
                ..Default::default()
            })
            .await
            .map_err(err)?;
        }
        Err(e) if e.code() == Code::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }

    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.seconds);
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..o.clients {
        let (channel, api) = connect(o.socket.clone()).await?;
        let mut c = Client {
            id,
            api,
            channel,
            rng: Rng((o.seed ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1),
            model: Model::new(),
            tally: Tally::default(),
            probes: probe::empty_requests()
                .into_iter()
                .chain(probe::hostile_requests())
                .collect(),
        };
        clients.spawn(async move {
            while Instant::now() < end {
                c.one().await;
            }
            c.clean_up().await;
            c.tally
        });
    }
    let mut tally = Tally::default();
    while let Some(t) = clients.join_next().await {
        tally.merge(t.map_err(|e| format!("a client: {e}"))?);
    }
    let secs = start.elapsed().as_secs_f64();
    api.delete_vip(probe::v()).await.map_err(err)?;

    let after = api.export(pb::Empty {}).await.map_err(err)?.into_inner();
    let unchanged = protected(&after, &o.protect) == kept;
    let stats_after = api.get_stats(pb::Empty {}).await.map_err(err)?.into_inner();
    // What the clients left: nothing of theirs, the probe's VIP removed.
    let left: Vec<String> = after
        .config
        .iter()
        .flat_map(|c| &c.vips)
        .filter_map(|v| v.key.as_ref())
        .filter(|k| k.address.starts_with("203.0.113.") || *k == &probe::v())
        .map(|k| format!("{}:{}", k.address, k.port))
        .collect();
    tally.latency_us.sort_by(f64::total_cmp);
    let ok =
        tally.failure_count == 0 && tally.unexpected_count == 0 && unchanged && left.is_empty();
    let report = json!({
        "clients": o.clients,
        "seconds": secs,
        "seed": o.seed,
        "requests": tally.requests,
        "requests_per_s": tally.requests as f64 / secs.max(1e-3),
        "reply_p50_us": percentile(&tally.latency_us, 0.5),
        "reply_p99_us": percentile(&tally.latency_us, 0.99),
        "reply_max_us": percentile(&tally.latency_us, 1.0),
        "by_method": tally.codes,
        "failures": tally.failure_count,
        "failure_examples": tally.failures,
        "unexpected": tally.unexpected_count,
        "unexpected_examples": tally.unexpected,
        "watch_events": tally.watch_events,
        "protected_unchanged": unchanged,
        "left_behind": left,
        "revision_before": before.revision,
        "revision_after": after.revision,
        "dataplane_drops": drops(&stats_after) - drops(&stats_before),
        "tx_failed": tx_failed(&stats_after) - tx_failed(&stats_before),
        "ok": ok,
    });
    println!("{report}");
    Ok(ok)
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("lbabuse: {e}");
            std::process::exit(2);
        }
    };
    // One thread, as lbchurn: the harness pins it beside the generator.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(o)) {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("lbabuse: failures, unexpected statuses, or a protected VIP changed (see the report)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("lbabuse: {e}");
            std::process::exit(1);
        }
    }
}
