//! The control hub: the desired state and what it holds at run time
//! (health verdicts, resolved backend MACs), the snapshot publisher, and
//! the changes on their way to the state file. The gRPC API, the health
//! checks, the monitor and the committer all go through it. It needs no
//! EAL: the workers' side of it is a snapshot reader and two queues.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use lb_core::neigh::{NeighConfig, NeighTable};
use lb_core::packet::MacAddr;
use lb_core::snapshot::{Publisher, Reader, Snapshot, SnapshotError, VipKey};
use tracing::info;

use crate::announce;
use crate::health;
use crate::state::{DesiredState, StateError};

/// How many learned MACs and resolution requests the queues between the
/// workers and the hub hold.
const NEIGH_QUEUE: usize = 1024;

/// Seconds between ARP requests / neighbour solicitations for each VIP
/// address (the first this long after start): nobody but the dataplane may
/// answer them, so an answer is a conflict (a backend without
/// arp_ignore=1) found within this time, even on a switch that never
/// floods that backend's other claims to us.
pub const VIP_CLAIM_PROBE_S: u32 = 10;

/// A (VIP, MAC) conflict is logged and sent as an event when first seen,
/// then at most this often while it goes on.
const CONFLICT_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// At most this many (VIP, MAC) pairs are kept: a flood of claims from
/// made-up MACs cannot grow the table without bound (the workers'
/// `vip_conflicts` counter still counts every claim).
const MAX_CONFLICTS: usize = 4096;

/// Another host's claims on a VIP address from one MAC.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// Claims seen since lbd started.
    pub count: u64,
    /// When the last claim was taken in.
    pub last_seen: std::time::SystemTime,
    /// When it was last logged and sent as an event.
    reported: std::time::Instant,
}

/// A change's acknowledgement channel, as the committer holds it.
pub(crate) type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The control side: the desired state, neighbour resolution and the
/// snapshot publisher, shared by the monitor loop and the gRPC API.
pub struct Control {
    /// The desired state: what the dataplane runs and the API shows.
    state: DesiredState,
    /// What the state file holds (`state` once the committer caught up).
    durable: DesiredState,
    /// Changes applied but not yet written: each is acknowledged when written.
    commits: Vec<Ack>,
    commit_wanted: Arc<tokio::sync::Notify>,
    state_path: Option<PathBuf>,
    mac: MacAddr,
    generation: u64,
    neigh: NeighTable,
    publisher: Publisher,
    /// The TSC stamp of a publication (`dataplane::dpdk::rdtsc` in lbd).
    clock: fn() -> u64,
    /// MACs the workers learned, for the hub to take in.
    learned: Arc<ArrayQueue<(IpAddr, MacAddr)>>,
    /// Backends to resolve, for the first worker to ask for.
    requests: Arc<ArrayQueue<IpAddr>>,
    /// Claims on VIP addresses by other MACs, as the workers saw them.
    conflict_queue: Arc<ArrayQueue<(IpAddr, MacAddr)>>,
    /// What the claims add up to, per (VIP address, MAC).
    conflicts: BTreeMap<(IpAddr, MacAddr), Conflict>,
    /// Whether the dataplane answers pings to VIPs (lbd --no-vip-ping).
    vip_ping: bool,
    /// The port's IP MTU (lbd --mtu), what tunnelled packets must fit.
    mtu: u16,
    /// The exception interface (lbd --kernel-iface), without which checks
    /// via the VIP cannot travel the DR path.
    kernel_iface: Option<String>,
    /// Health-check verdicts: runtime state, never written to the state file.
    health: HashMap<(VipKey, IpAddr), health::Status>,
    /// The workers' counters (lbd's; absent in tests that have none), and
    /// the ledger that keeps per-backend and per-VIP traffic monotonic.
    stats: Option<Arc<[lb_core::stats::WorkerStats]>>,
    traffic: crate::traffic::Ledger,
    /// When the VIP addresses were last asked for (see [`VIP_CLAIM_PROBE_S`]).
    vip_probed: Option<u32>,
    /// Each backend address's MAC in use and since when (as last published).
    mac_since: HashMap<IpAddr, (MacAddr, std::time::SystemTime)>,
    /// Events for `Watch` subscribers.
    events: tokio::sync::broadcast::Sender<lb_proto::v1::Event>,
    /// The VIP addresses the BGP speaker was last told to announce.
    announced: tokio::sync::watch::Receiver<BTreeSet<IpAddr>>,
    /// Whether routes are announced at all (--bgp-routes).
    announcing: bool,
    /// Set on the first SIGTERM/SIGINT.
    shutting_down: bool,
    /// Workers whose heartbeat stopped (the monitor's last look).
    stalled_workers: usize,
    /// Load feedback per backend with an agent ([`crate::feedback`]).
    feedback: HashMap<(VipKey, IpAddr), crate::feedback::Feedback>,
    /// VIPs with feedback waiting for their next rebuild, and when each
    /// was last rebuilt for feedback.
    feedback_pending: BTreeSet<VipKey>,
    feedback_rebuilt: HashMap<VipKey, std::time::Instant>,
    /// Backends over their cap of active flows: no new flows.
    capped: BTreeSet<(VipKey, IpAddr)>,
}

/// Why a change was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("the dataplane cannot take this configuration: {0}")]
    Snapshot(#[from] SnapshotError),
    #[error("{0}; the change was undone")]
    Persist(String),
}

/// A change's acknowledgement: ready once the state file holds it.
pub struct Commit(Option<tokio::sync::oneshot::Receiver<Result<(), String>>>);
// (None: nothing to wait for.)

impl Commit {
    pub async fn durable(self) -> Result<(), ChangeError> {
        let Some(rx) = self.0 else {
            return Ok(());
        };
        match rx.await {
            Ok(r) => r.map_err(ChangeError::Persist),
            Err(_) => Err(ChangeError::Persist("lbd is stopping".into())),
        }
    }
}

impl Control {
    /// The hub for `state` on a port with `mac`, its first snapshot
    /// (generation 1) published; `clock` stamps each later publication.
    /// No state file (see [`Control::with_state_file`]) and no route
    /// announcement (see [`Control::with_announcements`]).
    pub fn new(
        state: DesiredState,
        mac: MacAddr,
        clock: fn() -> u64,
    ) -> Result<Control, SnapshotError> {
        let mut neigh = NeighTable::new(NeighConfig::default());
        neigh.set_wanted(state.next_hops());
        let snapshot = Snapshot::build(&state.to_spec(1, mac, |_| None))?
            .with_vip_ping(true)
            .with_mtu(lb_core::tunnel::DEFAULT_MTU);
        let mut c = Control {
            durable: state.clone(),
            commits: Vec::new(),
            commit_wanted: Arc::new(tokio::sync::Notify::new()),
            state,
            state_path: None,
            mac,
            generation: 1,
            neigh,
            publisher: Publisher::new(snapshot),
            clock,
            learned: Arc::new(ArrayQueue::new(NEIGH_QUEUE)),
            requests: Arc::new(ArrayQueue::new(NEIGH_QUEUE)),
            conflict_queue: Arc::new(ArrayQueue::new(NEIGH_QUEUE)),
            conflicts: BTreeMap::new(),
            vip_ping: true,
            mtu: lb_core::tunnel::DEFAULT_MTU,
            kernel_iface: None,
            health: HashMap::new(),
            stats: None,
            traffic: crate::traffic::Ledger::default(),
            vip_probed: None,
            mac_since: HashMap::new(),
            events: tokio::sync::broadcast::channel(1024).0,
            announced: tokio::sync::watch::channel(BTreeSet::new()).1,
            announcing: false,
            shutting_down: false,
            stalled_workers: 0,
            feedback: HashMap::new(),
            feedback_pending: BTreeSet::new(),
            feedback_rebuilt: HashMap::new(),
            capped: BTreeSet::new(),
        };
        c.track_macs();
        Ok(c)
    }

    /// The workers' counters: traffic per backend and VIP is then kept
    /// monotonic across removals and slot reuse ([`crate::traffic`]).
    pub fn with_stats(mut self, stats: Arc<[lb_core::stats::WorkerStats]>) -> Control {
        self.traffic.published(&self.publisher.current(), &stats);
        self.stats = Some(stats);
        self
    }

    /// The traffic ledger (read it with the same counters given to
    /// [`Control::with_stats`]).
    pub fn traffic(&self) -> &crate::traffic::Ledger {
        &self.traffic
    }

    /// Write every accepted change to `path` before it is acknowledged.
    pub fn with_state_file(mut self, path: Option<PathBuf>) -> Control {
        self.state_path = path;
        self
    }

    /// Routes are announced (--bgp-routes): `announced` follows the set the
    /// speaker last applied.
    pub fn with_announcements(
        mut self,
        announced: tokio::sync::watch::Receiver<BTreeSet<IpAddr>>,
    ) -> Control {
        self.announced = announced;
        self.announcing = true;
        self
    }

    /// The desired state.
    pub fn state(&self) -> &DesiredState {
        &self.state
    }

    pub fn state_path(&self) -> Option<&Path> {
        self.state_path.as_deref()
    }

    /// The port's MAC, the source of every forwarded frame.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The generation of the last snapshot published.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The snapshot the workers run now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.publisher.current()
    }

    /// A reader of the published snapshots, for a worker.
    pub fn reader(&self) -> Reader {
        self.publisher.reader()
    }

    /// Free the snapshots every reader has left.
    pub fn reap(&mut self) -> usize {
        self.publisher.reap()
    }

    /// Where workers report the MACs they learn.
    pub fn learned(&self) -> Arc<ArrayQueue<(IpAddr, MacAddr)>> {
        Arc::clone(&self.learned)
    }

    /// Where workers report other hosts' claims on VIP addresses.
    pub fn conflicts(&self) -> Arc<ArrayQueue<(IpAddr, MacAddr)>> {
        Arc::clone(&self.conflict_queue)
    }

    /// Answer pings to VIPs or not (lbd --no-vip-ping); republishes when it
    /// changes.
    pub fn set_vip_ping(&mut self, on: bool) {
        if self.vip_ping != on {
            self.vip_ping = on;
            self.republish();
        }
    }

    /// The port's IP MTU (lbd --mtu); republishes when it changes.
    pub fn set_mtu(&mut self, mtu: u16) {
        if self.mtu != mtu {
            self.mtu = mtu;
            self.republish();
        }
    }

    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The exception interface the host's checks leave through (lbd
    /// --kernel-iface); `None`: checks via the VIP fail, saying why.
    pub fn set_kernel_iface(&mut self, name: Option<String>) {
        self.kernel_iface = name;
    }

    pub fn kernel_iface(&self) -> Option<&str> {
        self.kernel_iface.as_deref()
    }

    /// The source port a check via the VIP of backend `addr` of `vip` uses
    /// (`PROBE_PORT_BASE` + its slot), or why it cannot be sent.
    pub fn vip_probe_port(&self, vip: &VipKey, addr: &IpAddr) -> Result<u16, String> {
        if self.kernel_iface.is_none() {
            return Err(
                "via vip: lbd runs without --kernel-iface, so the check cannot travel the DR path"
                    .into(),
            );
        }
        let slot = self
            .state
            .vips()
            .get(vip)
            .and_then(|v| v.backends.get(addr))
            .map(|b| b.id.slot)
            .ok_or_else(|| format!("via vip: {addr} is no longer a backend of {vip}"))?;
        lb_core::forward::probe_port(slot)
            .ok_or_else(|| format!("via vip: slot {slot} has no probe port"))
    }

    /// Take in the claims workers saw on VIP addresses: counted per (VIP,
    /// MAC); a pair first seen, or not reported for a second, is logged as
    /// a warning and sent as an event.
    pub fn take_conflicts(&mut self) {
        let now = std::time::Instant::now();
        let mut due = BTreeSet::new();
        while let Some((vip, mac)) = self.conflict_queue.pop() {
            if self.conflicts.len() >= MAX_CONFLICTS && !self.conflicts.contains_key(&(vip, mac)) {
                continue;
            }
            let c = self.conflicts.entry((vip, mac)).or_insert_with(|| {
                due.insert((vip, mac));
                Conflict {
                    count: 0,
                    last_seen: std::time::SystemTime::now(),
                    reported: now,
                }
            });
            c.count += 1;
            c.last_seen = std::time::SystemTime::now();
            if now.duration_since(c.reported) >= CONFLICT_REPORT_EVERY {
                c.reported = now;
                due.insert((vip, mac));
            }
        }
        for key in due {
            let pb = self.pb_conflict(&key, &self.conflicts[&key]);
            tracing::warn!(
                vip = %key.0,
                mac = %key.1,
                count = pb.count,
                backend = pb.backend,
                "another host claims a VIP address (ARP/ND from a MAC not ours)"
            );
            self.emit(lb_proto::v1::event::Kind::Conflict(pb));
        }
    }

    /// Every (VIP address, MAC) claim seen, in address then MAC order.
    pub fn vip_conflicts(&self) -> Vec<lb_proto::v1::VipConflict> {
        self.conflicts
            .iter()
            .map(|(k, c)| self.pb_conflict(k, c))
            .collect()
    }

    fn pb_conflict(
        &self,
        (vip, mac): &(IpAddr, MacAddr),
        c: &Conflict,
    ) -> lb_proto::v1::VipConflict {
        // Only a backend on the segment, whose MAC in use is its own (not
        // a gateway's), can be the claimant.
        let backend = self
            .state
            .backends()
            .filter(|(_, addr, s)| self.state.next_hop(addr, s).0 == **addr)
            .find(|(_, addr, s)| self.backend_mac(addr, s) == Some(*mac))
            .map(|(_, addr, _)| addr.to_string())
            .unwrap_or_default();
        lb_proto::v1::VipConflict {
            vip: vip.to_string(),
            mac: mac.to_string(),
            count: c.count,
            backend,
            last_seen_ms: c
                .last_seen
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        }
    }

    /// Where the hub asks a worker to resolve a backend.
    pub fn requests(&self) -> Arc<ArrayQueue<IpAddr>> {
        Arc::clone(&self.requests)
    }

    /// The health-check verdict of a checked backend.
    pub fn health(&self, vip: &VipKey, addr: &IpAddr) -> Option<&health::Status> {
        self.health.get(&(*vip, *addr))
    }

    /// Every health-check verdict.
    pub fn health_all(&self) -> impl Iterator<Item = (&(VipKey, IpAddr), &health::Status)> {
        self.health.iter()
    }

    /// The backend is no longer checked (or its check changed).
    pub fn forget_health(&mut self, vip: &VipKey, addr: &IpAddr) {
        self.health.remove(&(*vip, *addr));
    }

    /// Events from now on (configuration, health, routes).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<lb_proto::v1::Event> {
        self.events.subscribe()
    }

    /// The VIP addresses the BGP speaker was last told to announce.
    pub fn announced(&self) -> BTreeSet<IpAddr> {
        self.announced.borrow().clone()
    }

    /// Whether routes are announced at all (--bgp-routes).
    pub fn announcing(&self) -> bool {
        self.announcing
    }

    /// How many workers the monitor last found stalled (for `/healthz`).
    pub fn set_stalled_workers(&mut self, n: usize) {
        self.stalled_workers = n;
    }

    pub fn stalled_workers(&self) -> usize {
        self.stalled_workers
    }

    /// Whether lbd is stopping (a first SIGTERM/SIGINT came).
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    pub fn set_shutting_down(&mut self, stopping: bool) {
        self.shutting_down = stopping;
    }

    /// Woken when a change is queued for the committer.
    pub(crate) fn commit_wanted(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.commit_wanted)
    }

    /// The changes queued since the last call, one snapshot published for
    /// them all, and what to write: `None` when nothing is queued or the
    /// batch is settled already (no state file: acknowledged; refused by
    /// the dataplane: undone).
    pub(crate) fn take_batch(&mut self) -> Option<(DesiredState, PathBuf, Vec<Ack>)> {
        if self.commits.is_empty() {
            return None;
        }
        let batch = std::mem::take(&mut self.commits);
        // One snapshot for the batch (tables of untouched VIPs reused).
        if !self.republish() {
            self.undo_uncommitted("the dataplane refused the configuration", batch);
            return None;
        }
        let Some(path) = self.state_path.clone() else {
            for tx in batch {
                let _ = tx.send(Ok(()));
            }
            return None;
        };
        Some((self.state.clone(), path, batch))
    }

    /// Whether changes wait for the committer.
    pub(crate) fn has_commits(&self) -> bool {
        !self.commits.is_empty()
    }

    /// The state file now holds `state`: acknowledge `batch`.
    pub(crate) fn committed(&mut self, state: DesiredState, batch: Vec<Ack>) {
        self.durable = state;
        for tx in batch {
            let _ = tx.send(Ok(()));
        }
    }

    /// Apply a change to a copy of the state and check that the dataplane
    /// can take it (a refused change leaves everything as it was); then make
    /// it current and queue it. The committer publishes one snapshot and
    /// writes the state file once for all changes queued together (group
    /// commit); the caller acknowledges a change once [`Commit::durable`],
    /// and a failed write undoes them all.
    pub fn change<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut DesiredState) -> Result<T, StateError>,
    ) -> Result<(T, Commit), ChangeError> {
        let mut next = self.state.clone();
        let out = f(&mut next)?;
        next.check_tunnels()?;
        next.revision = self.state.revision + 1;
        Snapshot::check(&self.spec(&next))?;
        self.state = next;
        self.neigh.set_wanted(self.state.next_hops());
        // The next snapshot published is the first to hold it.
        let generation = self.generation + 1;
        info!(generation, what, "configuration changed");
        self.emit(lb_proto::v1::event::Kind::Config(
            lb_proto::v1::ConfigChanged {
                generation,
                what: what.to_string(),
            },
        ));
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commits.push(tx);
        self.commit_wanted.notify_one();
        Ok((out, Commit(Some(rx))))
    }

    /// Converge to `desired` (an Apply, a SIGHUP reload) as one change,
    /// all or nothing: the changes it makes (empty: nothing to do) and,
    /// unless `dry_run`, its acknowledgement.
    pub fn converge(
        &mut self,
        desired: &DesiredState,
        dry_run: bool,
        source: &str,
    ) -> Result<(Vec<String>, Option<Commit>), ChangeError> {
        let changes = self.state.clone().converge(desired)?;
        if changes.is_empty() || dry_run {
            return Ok((changes, None));
        }
        let what = format!("{source}: {}", changes.join("; "));
        let (_, done) = self.change(&what, |s| s.converge(desired))?;
        Ok((changes, Some(done)))
    }

    /// The state file could not be written: go back to what it holds and
    /// fail every change not yet acknowledged.
    pub(crate) fn undo_uncommitted(&mut self, reason: &str, batch: Vec<Ack>) {
        tracing::error!(
            reason,
            "state file not written; undoing the changes since the last write"
        );
        self.state = self.durable.clone();
        self.neigh.set_wanted(self.state.next_hops());
        self.republish();
        self.emit(lb_proto::v1::event::Kind::Config(
            lb_proto::v1::ConfigChanged {
                generation: self.generation,
                what: format!("undone: {reason}"),
            },
        ));
        for tx in batch.into_iter().chain(std::mem::take(&mut self.commits)) {
            let _ = tx.send(Err(reason.to_string()));
        }
    }

    pub(crate) fn emit(&self, kind: lb_proto::v1::event::Kind) {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        // No subscriber is not an error.
        let _ = self.events.send(lb_proto::v1::Event {
            time_ms,
            kind: Some(kind),
        });
    }

    /// The snapshot of `state` as the dataplane must see it: resolved MACs
    /// filled in, backends failing their health checks down.
    fn build_snapshot(&self, state: &DesiredState) -> Result<Snapshot, SnapshotError> {
        Snapshot::build_from(&self.spec(state), Some(&self.publisher.current()))
            .map(|s| s.with_vip_ping(self.vip_ping).with_mtu(self.mtu))
    }

    fn spec(&self, state: &DesiredState) -> lb_core::snapshot::SnapshotSpec {
        let mut spec = state.to_spec(self.generation + 1, self.mac, |a| self.neigh.mac(a));
        for v in &mut spec.vips {
            for b in &mut v.backends {
                (b.state, b.weight) = self.in_force(&v.key, &b.addr, b.state, b.weight);
            }
        }
        spec
    }

    /// A backend's state and weight as the dataplane takes them, from its
    /// configured ones: failing checks and an agent's `maint` take it down;
    /// an agent's `drain` or 0%, or its cap, drain it; the agent's
    /// percentage scales its weight.
    fn in_force(
        &self,
        vip: &VipKey,
        addr: &IpAddr,
        state: lb_core::snapshot::BackendState,
        weight: u32,
    ) -> (lb_core::snapshot::BackendState, u32) {
        use crate::feedback::AgentState;
        use lb_core::snapshot::BackendState::{Down, Draining, Up};
        let key = (*vip, *addr);
        let mut state = state;
        let mut weight = weight;
        if self.health.get(&key).is_some_and(|h| !h.healthy) {
            state = Down;
        }
        if let Some(f) = self.feedback.get(&key) {
            weight = crate::feedback::scaled(weight, f.percent);
            match f.state {
                AgentState::Maint => state = Down,
                AgentState::Drain if state == Up => state = Draining,
                _ if f.percent == 0 && state == Up => state = Draining,
                _ => {}
            }
        }
        if self.capped.contains(&key) && state == Up {
            state = Draining;
        }
        (state, weight)
    }

    /// The state the dataplane gives a backend with `settings` (see
    /// `Control::in_force`).
    pub fn state_in_force(
        &self,
        vip: &VipKey,
        addr: &IpAddr,
        settings: &crate::state::BackendSettings,
    ) -> lb_core::snapshot::BackendState {
        self.in_force(vip, addr, settings.state(), settings.weight)
            .0
    }

    /// The weight new flows follow now (0 while the backend takes none).
    pub fn effective_weight(&self, vip: &VipKey, addr: &IpAddr) -> u32 {
        let Some(b) = self
            .state
            .vips()
            .get(vip)
            .and_then(|v| v.backends.get(addr))
        else {
            return 0;
        };
        let (state, weight) = self.in_force(vip, addr, b.settings.state(), b.settings.weight);
        let resolved = self.backend_mac(addr, &b.settings).is_some();
        if state == lb_core::snapshot::BackendState::Up && resolved {
            weight
        } else {
            0
        }
    }

    /// An agent's answer (or its silence); applied at the VIP's next
    /// rebuild ([`Control::flush_feedback`]).
    pub fn set_feedback(
        &mut self,
        vip: VipKey,
        addr: IpAddr,
        result: Result<crate::feedback::Report, String>,
    ) {
        if self
            .feedback
            .entry((vip, addr))
            .or_default()
            .observe(result)
        {
            self.feedback_pending.insert(vip);
        }
    }

    /// The agent of this backend is gone: its feedback no longer counts.
    pub fn forget_feedback(&mut self, vip: &VipKey, addr: &IpAddr) {
        if let Some(f) = self.feedback.remove(&(*vip, *addr)) {
            if (f.percent, f.state) != (100, crate::feedback::AgentState::Ready) {
                self.republish();
            }
        }
    }

    /// The feedback of this backend, if it has an agent.
    pub fn feedback(&self, vip: &VipKey, addr: &IpAddr) -> Option<&crate::feedback::Feedback> {
        self.feedback.get(&(*vip, *addr))
    }

    /// The flows pinned to the backend in the workers' flow tables (0
    /// without the workers' counters).
    pub fn active_flows(&self, vip: &VipKey, addr: &IpAddr) -> u64 {
        let (Some(stats), Some(b)) = (
            &self.stats,
            self.state
                .vips()
                .get(vip)
                .and_then(|v| v.backends.get(addr)),
        ) else {
            return 0;
        };
        lb_core::stats::WorkerStats::backend_active_flows(stats, b.id.slot, b.id.incarnation)
    }

    /// Whether the backend is over its cap.
    pub fn capped(&self, vip: &VipKey, addr: &IpAddr) -> bool {
        self.capped.contains(&(*vip, *addr))
    }

    /// Put waiting feedback in force, for each VIP whose last feedback
    /// rebuild is at least [`crate::feedback::MIN_REBUILD`] old: one
    /// snapshot for all of them. Returns how many backends changed.
    pub fn flush_feedback(&mut self, now: std::time::Instant) -> usize {
        let due: Vec<VipKey> = self
            .feedback_pending
            .iter()
            .filter(|v| {
                self.feedback_rebuilt
                    .get(v)
                    .is_none_or(|t| now.duration_since(*t) >= crate::feedback::MIN_REBUILD)
            })
            .copied()
            .collect();
        let mut changed = Vec::new();
        for vip in &due {
            self.feedback_pending.remove(vip);
            for ((v, addr), f) in self.feedback.iter_mut().filter(|((v, _), _)| v == vip) {
                if f.apply() {
                    changed.push((*v, *addr, f.detail.clone()));
                }
            }
        }
        if changed.is_empty() {
            return 0;
        }
        // Events in a stable order (VIP, then backend), not the map's.
        changed.sort_by_key(|(v, a, _)| (*v, *a));
        for (vip, _, _) in &changed {
            self.feedback_rebuilt.insert(*vip, now);
        }
        self.republish();
        for (vip, addr, detail) in &changed {
            info!(%vip, backend = %addr, detail, "load feedback applied");
            self.emit_load(vip, addr, format!("agent: {detail}"));
        }
        changed.len()
    }

    /// Follow the caps: a backend at `max_flows` active flows (over all
    /// workers, as their flow tables count them) takes no new flows until
    /// it is below `min_flows`. Returns whether any changed.
    pub fn update_caps(&mut self) -> bool {
        let Some(stats) = self.stats.clone() else {
            return false;
        };
        let mut changes = Vec::new();
        for (vip, v) in self.state.vips() {
            for (addr, b) in &v.backends {
                let key = (*vip, *addr);
                let Some((high, low)) = b.settings.load.cap() else {
                    if self.capped.contains(&key) {
                        changes.push((key, false, 0));
                    }
                    continue;
                };
                let flows = lb_core::stats::WorkerStats::backend_active_flows(
                    &stats,
                    b.id.slot,
                    b.id.incarnation,
                );
                let capped = self.capped.contains(&key);
                if !capped && flows >= u64::from(high) {
                    changes.push((key, true, flows));
                } else if capped && flows < u64::from(low) {
                    changes.push((key, false, flows));
                }
            }
        }
        // Backends removed while capped.
        let gone: Vec<(VipKey, IpAddr)> = self
            .capped
            .iter()
            .filter(|(v, a)| {
                self.state
                    .vips()
                    .get(v)
                    .is_none_or(|d| !d.backends.contains_key(a))
            })
            .copied()
            .collect();
        for key in gone {
            self.capped.remove(&key);
        }
        if changes.is_empty() {
            return false;
        }
        for &(key, capped, _) in &changes {
            if capped {
                self.capped.insert(key);
            } else {
                self.capped.remove(&key);
            }
        }
        self.republish();
        for ((vip, addr), capped, flows) in changes {
            let reason = if capped {
                format!("{flows} active flows, at its cap: no new flows")
            } else {
                format!("{flows} active flows, below its low mark: new flows again")
            };
            info!(%vip, backend = %addr, reason, "backend cap");
            self.emit_load(&vip, &addr, reason);
        }
        true
    }

    fn emit_load(&self, vip: &VipKey, addr: &IpAddr, reason: String) {
        let weight = self
            .state
            .vips()
            .get(vip)
            .and_then(|v| v.backends.get(addr))
            .map_or(0, |b| b.settings.weight);
        self.emit(lb_proto::v1::event::Kind::Load(
            lb_proto::v1::BackendLoadChanged {
                vip: Some(crate::grpc::pb_key(vip)),
                address: addr.to_string(),
                weight,
                effective_weight: self.effective_weight(vip, addr),
                capped: self.capped(vip, addr),
                reason,
            },
        ));
    }

    /// Every backend with a feedback agent: (VIP, address, agent).
    pub fn agents(&self) -> Vec<(VipKey, IpAddr, crate::state::AgentCheck)> {
        self.state
            .vips()
            .iter()
            .flat_map(|(k, v)| {
                v.backends.iter().filter_map(move |(a, b)| {
                    b.settings.load.agent.clone().map(|agent| (*k, *a, agent))
                })
            })
            .collect()
    }

    /// Publish the current state again (health or a MAC changed; the state
    /// file does not).
    pub(crate) fn republish(&mut self) -> bool {
        match self.build_snapshot(&self.state) {
            Ok(s) => {
                self.generation += 1;
                self.publisher.publish(s, (self.clock)());
                if let Some(stats) = &self.stats {
                    self.traffic.published(&self.publisher.current(), stats);
                }
                self.track_macs();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot publish; keeping the current snapshot");
                false
            }
        }
    }

    /// A health check's verdict changed (or was first given).
    pub fn set_health(&mut self, vip: VipKey, addr: IpAddr, status: health::Status) {
        let was = self.health.insert((vip, addr), status.clone());
        let changed = was.as_ref().is_none_or(|w| w.healthy != status.healthy);
        if changed && was.is_some() {
            if status.healthy {
                info!(%vip, backend = %addr, detail = status.detail, "backend up");
            } else {
                tracing::warn!(%vip, backend = %addr, detail = status.detail, "backend down");
            }
            self.republish();
            let health = if status.healthy {
                lb_proto::v1::Health::Healthy
            } else {
                lb_proto::v1::Health::Unhealthy
            };
            self.emit(lb_proto::v1::event::Kind::Backend(
                lb_proto::v1::BackendHealthChanged {
                    vip: Some(crate::grpc::pb_key(&vip)),
                    address: addr.to_string(),
                    health: health as i32,
                    detail: status.detail.clone(),
                },
            ));
        }
    }

    /// The VIP addresses this instance can serve now (see `announce`).
    pub fn servable(&self) -> BTreeSet<IpAddr> {
        announce::servable(&self.state, |vip, addr| {
            self.health
                .get(&(*vip, *addr))
                .is_some_and(|h| h.healthy && h.passed)
        })
    }

    /// Note when each backend address's MAC took its current value: every
    /// MAC change is published, so this runs after each publication.
    fn track_macs(&mut self) {
        let now = std::time::SystemTime::now();
        let mut next = HashMap::new();
        let macs: Vec<(IpAddr, MacAddr)> = self
            .state
            .backends()
            .filter_map(|(_, addr, s)| self.backend_mac(addr, s).map(|m| (*addr, m)))
            .collect();
        for (addr, mac) in macs {
            let since = match self.mac_since.get(&addr) {
                Some(&(m, since)) if m == mac => since,
                _ => now,
            };
            next.insert(addr, (mac, since));
        }
        self.mac_since = next;
    }

    /// When backend `addr`'s MAC in use took its current value; `None`
    /// while unresolved.
    pub fn mac_since(&self, addr: &IpAddr) -> Option<std::time::SystemTime> {
        self.mac_since.get(addr).map(|&(_, t)| t)
    }

    /// A neighbour's MAC: static, resolved, or none yet.
    pub fn effective_mac(&self, addr: &IpAddr, fixed: Option<MacAddr>) -> Option<MacAddr> {
        fixed.or_else(|| self.neigh.mac(addr))
    }

    /// The MAC a backend's frames go to: its own (DR, static or resolved),
    /// or its next hop's (tunnelled: its route's gateway, or itself on the
    /// segment); `None` while unresolved, and then it takes no traffic.
    pub fn backend_mac(&self, addr: &IpAddr, s: &crate::state::BackendSettings) -> Option<MacAddr> {
        let (hop, fixed) = self.state.next_hop(addr, s);
        self.effective_mac(&hop, fixed)
    }

    /// Take in what workers learned, ask for what is due, and publish a new
    /// snapshot when a backend's MAC changed.
    pub fn resolve_neighbors(&mut self, now: u32) {
        let mut changed = false;
        while let Some((ip, mac)) = self.learned.pop() {
            if self.neigh.learn(ip, mac, now) {
                info!(%ip, %mac, "backend resolved");
                changed = true;
            }
        }
        let (due, forgotten) = self.neigh.due(now);
        for ip in due {
            let _ = self.requests.push(ip);
        }
        // The first round a probe interval after start: lbd's own first
        // frames are the traffic's (and a golden run stays byte-exact).
        let since = *self.vip_probed.get_or_insert(now);
        if now.wrapping_sub(since) >= VIP_CLAIM_PROBE_S {
            self.vip_probed = Some(now);
            let addrs: BTreeSet<IpAddr> = self.state.vips().keys().map(|k| k.addr).collect();
            for ip in addrs {
                let _ = self.requests.push(ip);
            }
        }
        if changed || forgotten {
            self.republish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{BackendSettings, ForwardMethod, Route};
    use lb_core::snapshot::Proto;

    /// What the hub resolves are next hops: a tunnelled backend behind a
    /// gateway takes the gateway's MAC once the gateway answers, and is
    /// never asked for itself; the MTU reaches the snapshot.
    #[test]
    fn tunnelled_backends_follow_their_next_hop() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let vip = VipKey {
            addr: ip("198.51.100.10"),
            port: 443,
            proto: Proto::Tcp,
        };
        let mut s = DesiredState::default();
        s.local_addresses = vec![ip("192.0.2.1")];
        s.set_routes(vec![Route {
            prefix: "10.20.0.0/16".parse().unwrap(),
            gateway: ip("192.0.2.254"),
            mac: None,
        }])
        .unwrap();
        s.create_vip(vip, None).unwrap();
        let gue = BackendSettings {
            forward: ForwardMethod::Gue,
            ..BackendSettings::default()
        };
        s.add_backend(&vip, ip("10.20.0.11"), gue.clone()).unwrap();
        s.add_backend(&vip, ip("192.0.2.11"), BackendSettings::default())
            .unwrap();
        let mut c = Control::new(s, MacAddr([2, 0, 0, 0, 0, 1]), || 0).unwrap();
        c.resolve_neighbors(1);
        let mut asked = Vec::new();
        while let Some(a) = c.requests().pop() {
            asked.push(a);
        }
        asked.sort();
        assert_eq!(
            asked,
            [ip("192.0.2.11"), ip("192.0.2.254")],
            "next hops only"
        );
        assert_eq!(c.backend_mac(&ip("10.20.0.11"), &gue), None);
        assert_eq!(
            c.effective_weight(&vip, &ip("10.20.0.11")),
            0,
            "no traffic yet"
        );
        let gw = MacAddr([2, 0, 0, 0, 0, 0xfe]);
        let learned = c.learned();
        learned.push((ip("192.0.2.254"), gw)).unwrap();
        // The backend's own address answering changes nothing.
        learned
            .push((ip("10.20.0.11"), MacAddr([2, 0, 0, 0, 0, 0x11])))
            .unwrap();
        c.resolve_neighbors(2);
        let snap = c.snapshot();
        let (_, b) = snap
            .backends()
            .find(|(_, b)| b.addr == ip("10.20.0.11"))
            .unwrap();
        assert_eq!(b.mac, Some(gw), "the gateway's MAC");
        assert!(b.wrap.is_some());
        assert_eq!(c.backend_mac(&ip("10.20.0.11"), &gue), Some(gw));
        assert_eq!(c.effective_weight(&vip, &ip("10.20.0.11")), 1);
        assert!(c.mac_since(&ip("10.20.0.11")).is_some());
        c.set_mtu(9000);
        assert_eq!(c.snapshot().mtu(), 9000);
    }
}
