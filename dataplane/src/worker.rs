//! The poll loop of one worker lcore on its own RX/TX queue pair: burst RX,
//! load the snapshot once, prefetch packet data (with tunnels, the line
//! before it too), classify and hash every packet, prefetch the two
//! flow-table entries each lookup reads (the whole bucket for a SYN, which
//! will be placed), then decide and rewrite in place, burst TX, free and
//! count what was not sent.
//! Nothing here allocates, locks or makes a syscall; counters are published
//! once per burst. The worker owns the clock (the TSC) and hands `now` to
//! the pure decision.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::dpdk::{self, Burst, Fate, Mempool, Queue, BURST_SIZE};
use lb_core::drop_reason::DropReason;
use lb_core::flow::FlowTable;
use lb_core::forward::{self, Action, Classified, EchoLimiter};
use lb_core::packet::{build, MacAddr};
use lb_core::snapshot::{Reader, Snapshot};
use lb_core::stats::WorkerStats;

/// Flow-table buckets swept for expired entries per idle poll, and per busy
/// burst (so a worker that is never idle still frees expired flows).
const SWEEP_IDLE: usize = 64;
const SWEEP_BUSY: usize = 2;
/// Backend slots whose flow counts are published per idle poll, and per
/// busy burst: every slot within a few hundred bursts, a few stores each.
const PUBLISH_IDLE: usize = 64;
const PUBLISH_BUSY: usize = 4;
/// Neighbour requests sent per poll at most.
const REQUESTS_PER_POLL: usize = 4;
/// Echo replies per second per worker by default (lbd --vip-ping-rate), and
/// the most sent at once.
pub const ECHO_RATE: u32 = 1000;
pub const ECHO_BURST: u32 = 100;
/// ICMP too-big replies per second per worker by default (lbd
/// --too-big-rate), and the most sent at once: as Linux's
/// icmp_ratelimit, a client's path-MTU discovery needs one per flow.
pub const TOO_BIG_RATE: u32 = 1000;
pub const TOO_BIG_BURST: u32 = 100;

/// The worker's end of backend MAC resolution (see `neigh.rs`): what it
/// learns from ARP replies and neighbor advertisements goes to `learned`;
/// the worker given `requests` sends the ARP requests and solicitations the
/// control side asks for, built in mbufs from `pool`. Lock-free queues:
/// a full queue loses an entry (the next refresh repeats it), never blocks.
/// Another host's claims on a VIP address (ARP, neighbor advertisements)
/// go to `conflicts` the same way (a full queue loses the report; the
/// `vip_conflicts` counter still counts it).
#[derive(Clone, Copy)]
pub struct Neighbors<'a> {
    pub learned: &'a ArrayQueue<(IpAddr, MacAddr)>,
    pub conflicts: Option<&'a ArrayQueue<(IpAddr, MacAddr)>>,
    pub requests: Option<(&'a ArrayQueue<IpAddr>, &'static Mempool)>,
}

pub struct Worker<'a> {
    queue: Queue<'a>,
    /// This worker's queue pair on the exception interface (net_tap): what
    /// is for the host goes there, and what the host sends comes back out
    /// of `queue`.
    kernel: Option<Queue<'a>>,
    neighbors: Option<Neighbors<'a>>,
    snapshots: Reader,
    flows: FlowTable,
    stats: &'a WorkerStats,
    tsc_hz: u64,
    /// The generation of the last snapshot used; `None` before the first.
    generation: Option<u64>,
    /// Echo replies to VIPs, on the TSC clock.
    echo: EchoLimiter,
    /// ICMP too-big replies to clients, on the TSC clock.
    too_big: EchoLimiter,
    /// The next backend slot whose flow count is published.
    publish_cursor: usize,
}

impl<'a> Worker<'a> {
    pub fn new(
        queue: Queue<'a>,
        snapshots: Reader,
        flows: FlowTable,
        stats: &'a WorkerStats,
        tsc_hz: u64,
    ) -> Worker<'a> {
        stats.flow_capacity.set(flows.capacity() as u64);
        Worker {
            queue,
            kernel: None,
            neighbors: None,
            snapshots,
            flows,
            stats,
            tsc_hz: tsc_hz.max(1),
            generation: None,
            echo: EchoLimiter::new(ECHO_RATE, ECHO_BURST, tsc_hz),
            too_big: EchoLimiter::new(TOO_BIG_RATE, TOO_BIG_BURST, tsc_hz),
            publish_cursor: 0,
        }
    }

    /// Publish the flow counts of the next `n` backend slots (wrapping).
    #[inline]
    fn publish_backend_flows(&mut self, n: usize) {
        let slots = self.stats.backends.len();
        for _ in 0..n.min(slots) {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "slots are fewer than MAX_BACKEND_SLOTS, a u16"
            )]
            let flows = self.flows.backend_flows(self.publish_cursor as u16);
            self.stats.backends[self.publish_cursor].publish_flows(flows);
            self.publish_cursor = (self.publish_cursor + 1) % slots;
        }
    }

    /// Send at most `rate` echo replies per second (0: no limit), in bursts
    /// of up to [`ECHO_BURST`] (or `rate`, if lower).
    pub fn with_echo_rate(mut self, rate: u32) -> Worker<'a> {
        let burst = if rate == 0 { 1 } else { rate.min(ECHO_BURST) };
        self.echo = EchoLimiter::new(rate, burst, self.tsc_hz);
        self
    }

    /// Send at most `rate` ICMP too-big replies per second (0: no limit), in
    /// bursts of up to [`TOO_BIG_BURST`] (or `rate`, if lower).
    pub fn with_too_big_rate(mut self, rate: u32) -> Worker<'a> {
        let burst = if rate == 0 {
            1
        } else {
            rate.min(TOO_BIG_BURST)
        };
        self.too_big = EchoLimiter::new(rate, burst, self.tsc_hz);
        self
    }

    /// Pass host traffic to (and from) the kernel through `kernel`.
    pub fn with_kernel(mut self, kernel: Queue<'a>) -> Worker<'a> {
        self.kernel = Some(kernel);
        self
    }

    /// Report learned neighbours (and send requests, if given the queue).
    pub fn with_neighbors(mut self, neighbors: Neighbors<'a>) -> Worker<'a> {
        self.neighbors = Some(neighbors);
        self
    }

    /// Poll until `stop` is set (checked once per iteration).
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut burst = Burst::new();
        let mut loops = 0u64;
        while !stop.load(Ordering::Relaxed) {
            loops = loops.wrapping_add(1);
            // One store per 1024 polls keeps the stats line mostly unshared.
            if loops.is_multiple_of(1024) {
                self.stats.heartbeat.set(loops);
            }
            self.poll_once(&mut burst);
            self.poll_kernel(&mut burst);
            self.send_requests(&mut burst);
        }
    }

    /// Send the ARP requests / neighbor solicitations the control side asked for.
    #[inline]
    pub fn send_requests(&mut self, burst: &mut Burst) {
        let Some(Neighbors {
            requests: Some((queue, pool)),
            ..
        }) = self.neighbors
        else {
            return;
        };
        if queue.is_empty() {
            return;
        }
        let snap = self.snapshots.load();
        let mut frame = [0u8; 128];
        for _ in 0..REQUESTS_PER_POLL {
            let Some(target) = queue.pop() else { break };
            let len = match target {
                IpAddr::V4(t) => {
                    let src = snap.source_v4().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                    build::write_arp_request(&mut frame, snap.mac, src, t)
                }
                IpAddr::V6(t) => snap
                    .source_v6()
                    .and_then(|src| build::write_neighbor_solicit(&mut frame, snap.mac, src, t)),
            };
            let (Some(len), Some(mut m)) = (len, pool.alloc()) else {
                continue;
            };
            if m.extend_from_slice(&frame[..len]) && burst.push(m).is_ok() {
                self.stats.neigh_requests.add(1);
            }
        }
        let out = self.queue.tx(burst);
        self.stats.tx_packets.add(out.sent as u64);
        self.stats.tx_failed.add(out.dropped as u64);
    }

    /// What the host sent through the exception interface goes out of the
    /// port (the interface carries the port's MAC): unchanged, except what
    /// it sends to a VIP ([`forward::from_kernel`]): a health check via the
    /// VIP goes to the backend its source port names, other traffic is
    /// balanced as a client's, a ping of the VIP is answered back.
    #[inline]
    pub fn poll_kernel(&mut self, burst: &mut Burst) {
        let Some(k) = self.kernel.as_mut() else {
            return;
        };
        let n = k.rx(burst);
        if n == 0 {
            return;
        }
        let now = seconds(self.tsc_hz);
        let snap = self.snapshots.load();
        adopt(&mut self.generation, snap, self.stats, self.tsc_hz);
        let s = self.stats;
        let flows = &mut self.flows;
        let echo = &mut self.echo;
        let mut lens = [0u16; BURST_SIZE];
        let mut kept = 0;
        let (mut steered, mut balanced, mut new_flows, mut replies) = (0u64, 0u64, 0u64, 0u64);
        let mut encapsulated = 0u64;
        let mut drops = [0u64; DropReason::COUNT];
        let mut replies_burst = Burst::new();
        burst.triage(&mut replies_burst, |frame| {
            let fate = match forward::from_kernel(frame, snap, flows, now) {
                forward::FromKernel::Steered { slot, hash } => {
                    match forward::egress(frame, snap, slot, || hash) {
                        Ok(tunnelled) => encapsulated += u64::from(tunnelled),
                        Err(reason) => {
                            drops[reason as usize] += 1;
                            return Fate::Drop;
                        }
                    }
                    steered += 1;
                    Fate::Send(frame.len())
                }
                forward::FromKernel::Balanced {
                    slot,
                    new_flow,
                    hash,
                } => {
                    match forward::egress(frame, snap, slot, || hash) {
                        Ok(tunnelled) => encapsulated += u64::from(tunnelled),
                        Err(reason) => {
                            drops[reason as usize] += 1;
                            return Fate::Drop;
                        }
                    }
                    balanced += 1;
                    new_flows += u64::from(new_flow);
                    if let Some(b) = s.backends.get(usize::from(slot)) {
                        b.packets.add(1);
                        b.bytes.add(frame.len() as u64);
                        b.new_flows.add(u64::from(new_flow));
                    }
                    Fate::Send(frame.len())
                }
                forward::FromKernel::Reply if echo.allow(dpdk::rdtsc()) => {
                    replies += 1;
                    return Fate::Divert;
                }
                forward::FromKernel::Reply => {
                    drops[DropReason::EchoRateLimited as usize] += 1;
                    return Fate::Drop;
                }
                forward::FromKernel::Dropped(reason) => {
                    drops[reason as usize] += 1;
                    return Fate::Drop;
                }
                forward::FromKernel::Unchanged => Fate::Send(frame.len()),
            };
            #[allow(
                clippy::cast_possible_truncation,
                reason = "one segment's length, a u16"
            )]
            if let Some(l) = lens.get_mut(kept) {
                *l = frame.len() as u16;
            }
            kept += 1;
            fate
        });
        let out = self.queue.tx(burst);
        if !replies_burst.is_empty() {
            let ko = k.tx(&mut replies_burst);
            replies -= ko.dropped as u64;
            drops[DropReason::NoKernelPath as usize] += ko.dropped as u64;
        }
        s.from_kernel.add(n as u64);
        s.probes_steered.add(steered);
        s.encapsulated.add(encapsulated);
        s.host_balanced.add(balanced);
        s.new_flows.add(new_flows);
        s.host_replies.add(replies);
        s.host_dropped.add(drops.iter().sum());
        s.tx_packets.add(out.sent as u64);
        s.tx_bytes
            .add(lens[..out.sent].iter().map(|&l| u64::from(l)).sum());
        s.tx_failed.add(out.dropped as u64);
        for (c, d) in s.drops.iter().zip(drops) {
            if d != 0 {
                c.add(d);
            }
        }
    }

    /// Seconds of TSC time, the flow table's clock.
    #[inline]
    fn now(&self) -> u32 {
        seconds(self.tsc_hz)
    }

    /// One RX burst through to TX; returns how many packets arrived.
    #[inline]
    pub fn poll_once(&mut self, burst: &mut Burst) -> usize {
        let n = self.queue.rx(burst);
        let now = self.now();
        if n == 0 {
            let freed = self.flows.expire(now, SWEEP_IDLE);
            if freed > 0 {
                publish_flow_stats(self.stats, self.flows.stats());
            }
            self.publish_backend_flows(PUBLISH_IDLE);
            // Idle workers take new snapshots too: the old one can be freed,
            // and the control side sees every worker on the current one.
            let snap = self.snapshots.load();
            adopt(&mut self.generation, snap, self.stats, self.tsc_hz);
            return 0;
        }
        let snap = self.snapshots.load();
        adopt(&mut self.generation, snap, self.stats, self.tsc_hz);
        burst.prefetch_data(snap.tunnels());

        let mut classified = [Classified::ToKernel; BURST_SIZE];
        // Whole-packet lengths (several segments for a jumbo frame).
        let mut wire = [0usize; BURST_SIZE];
        for (i, c) in classified.iter_mut().enumerate().take(n) {
            let first = burst.data(i).unwrap_or_default();
            wire[i] = burst.pkt_len_of(i).unwrap_or(first.len());
            *c = forward::classify_segmented(first, wire[i], snap);
            c.prefetch_entries(&self.flows, dpdk::prefetch);
        }

        let mut counts = BurstCounts::default();
        let mut lens = [0usize; BURST_SIZE];
        let mut kept = 0;
        let mut i = 0;
        let flows = &mut self.flows;
        let has_kernel = self.kernel.is_some();
        let learned = self.neighbors.map(|n| n.learned);
        let conflicts = self.neighbors.and_then(|n| n.conflicts);
        let echo = &mut self.echo;
        let too_big = &mut self.too_big;
        let backend_stats = &self.stats.backends;
        let mut to_kernel = Burst::new();
        burst.triage(&mut to_kernel, |frame| {
            let mut bytes = wire[i];
            counts.rx_bytes += bytes as u64;
            let c = &classified[i];
            let action = forward::apply(*c, frame, snap, flows, now);
            i += 1;
            // A tunnelled backend's frame grows at the front.
            let mut egress = |frame: &mut lb_core::frame::Frame<'_>, slot, bytes: &mut usize| {
                let before = frame.len();
                match forward::egress(frame, snap, slot, || c.hash()) {
                    Ok(false) => Ok(()),
                    Ok(true) => {
                        counts.encapsulated += 1;
                        // Padding is cut: what goes out is the new frame
                        // plus whatever further segments carried.
                        *bytes = (*bytes + frame.len()).saturating_sub(before);
                        Ok(())
                    }
                    Err(reason) => Err(reason),
                }
            };
            let len = match action {
                Action::Forward {
                    slot: backend,
                    new_flow,
                    quic,
                    ..
                } => {
                    if let Some(route) = quic {
                        counts.quic[route as usize] += 1;
                    }
                    if let Err(reason) = egress(frame, backend, &mut bytes) {
                        counts.drops[reason as usize] += 1;
                        return Fate::Drop;
                    }
                    counts.forwarded += 1;
                    counts.new_flows += u64::from(new_flow);
                    if let Some(b) = backend_stats.get(usize::from(backend)) {
                        b.packets.add(1);
                        b.bytes.add(bytes as u64);
                        b.new_flows.add(u64::from(new_flow));
                    }
                    frame.len()
                }
                Action::IcmpToBackend { slot: backend, .. } => {
                    if let Err(reason) = egress(frame, backend, &mut bytes) {
                        counts.drops[reason as usize] += 1;
                        return Fate::Drop;
                    }
                    counts.forwarded += 1;
                    counts.icmp += 1;
                    if let Some(b) = backend_stats.get(usize::from(backend)) {
                        b.packets.add(1);
                        b.bytes.add(bytes as u64);
                    }
                    frame.len()
                }
                Action::TooBig { len } if too_big.allow(dpdk::rdtsc()) => {
                    counts.too_big += 1;
                    len
                }
                Action::TooBig { .. } => {
                    counts.drops[DropReason::TooBigRateLimited as usize] += 1;
                    return Fate::Drop;
                }
                Action::ArpReply => {
                    counts.arp += 1;
                    frame.len()
                }
                Action::NdAdvert { len } => {
                    counts.nd += 1;
                    len
                }
                // The clock is read for echo requests only, never on the flow path.
                Action::EchoReply if echo.allow(dpdk::rdtsc()) => {
                    counts.echo += 1;
                    frame.len()
                }
                Action::EchoReply => {
                    counts.drops[DropReason::EchoRateLimited as usize] += 1;
                    return Fate::Drop;
                }
                Action::VipConflict { vip_addr, mac } => {
                    counts.conflicts += 1;
                    if let Some(q) = conflicts {
                        let _ = q.push((vip_addr, mac));
                    }
                    // Dropped, not passed to the host: the frame only claims
                    // an address that is the dataplane's, and the kernel
                    // would point its own neighbour entry for the VIP at
                    // the claimant. Reported and counted, nothing is lost.
                    return Fate::Drop;
                }
                Action::Learned { ip, mac } => {
                    counts.learned += 1;
                    if let Some(q) = learned {
                        let _ = q.push((ip, mac));
                    }
                    // The host may be waiting for this reply too.
                    if has_kernel {
                        counts.to_kernel += 1;
                        return Fate::Divert;
                    }
                    return Fate::Drop;
                }
                Action::ToKernel if has_kernel => {
                    counts.to_kernel += 1;
                    return Fate::Divert;
                }
                Action::ToKernel => {
                    counts.drops[DropReason::NoKernelPath as usize] += 1;
                    return Fate::Drop;
                }
                Action::Drop(reason) => {
                    counts.drops[reason as usize] += 1;
                    return Fate::Drop;
                }
            };
            // A reply shrinks the frame; otherwise the whole packet goes out.
            lens[kept] = if len < frame.len() { len } else { bytes };
            kept += 1;
            Fate::Send(len)
        });
        let out = self.queue.tx(burst);
        if let Some(k) = self.kernel.as_mut() {
            if !to_kernel.is_empty() {
                let ko = k.tx(&mut to_kernel);
                counts.to_kernel -= ko.dropped as u64;
                counts.drops[DropReason::NoKernelPath as usize] += ko.dropped as u64;
            }
        }

        self.flows.expire(now, SWEEP_BUSY);
        self.publish_backend_flows(PUBLISH_BUSY);
        let s = self.stats;
        let fs = self.flows.stats();
        s.rx_packets.add(n as u64);
        s.rx_bytes.add(counts.rx_bytes);
        s.tx_packets.add(out.sent as u64);
        s.tx_bytes
            .add(lens[..out.sent].iter().map(|&l| l as u64).sum());
        s.tx_failed.add(out.dropped as u64);
        s.forwarded.add(counts.forwarded);
        s.icmp_to_backend.add(counts.icmp);
        s.encapsulated.add(counts.encapsulated);
        s.too_big_sent.add(counts.too_big);
        s.arp_replies.add(counts.arp);
        s.nd_adverts.add(counts.nd);
        s.echo_replies.add(counts.echo);
        s.vip_conflicts.add(counts.conflicts);
        s.to_kernel.add(counts.to_kernel);
        s.new_flows.add(counts.new_flows);
        s.neigh_learned.add(counts.learned);
        if counts.quic != [0; lb_core::quic::Route::COUNT] {
            let [by_id, initial, unknown, down, unparsed] = counts.quic;
            s.quic_by_id.add(by_id);
            s.quic_initial.add(initial);
            s.quic_unknown_id.add(unknown);
            s.quic_id_down.add(down);
            s.quic_unparsed.add(unparsed);
        }
        publish_flow_stats(s, fs);
        for (c, d) in s.drops.iter().zip(counts.drops) {
            if d != 0 {
                c.add(d);
            }
        }
        n
    }
}

/// The flow table's own counts (monotonic: the table lives as long as the
/// worker), a few stores on the worker's own counters.
#[inline(always)]
fn publish_flow_stats(s: &WorkerStats, fs: lb_core::flow::FlowStats) {
    s.flow_rejected.set(fs.rejected);
    s.flow_inserted.set(fs.inserts);
    s.flow_evicted_unconfirmed.set(fs.evicted_unconfirmed);
    s.flow_evicted_confirmed.set(fs.evicted_confirmed);
    s.flow_expired.set(fs.expired);
    s.active_flows.set(fs.active);
}

/// Seconds of TSC time at `tsc_hz`.
#[inline]
#[allow(
    clippy::cast_possible_truncation,
    reason = "seconds since the TSC started: a u32 wraps after 136 years"
)]
fn seconds(tsc_hz: u64) -> u32 {
    (dpdk::rdtsc() / tsc_hz) as u32
}

/// Note a snapshot the worker uses: when it is new to this worker, publish
/// its generation and record how long it took to get here.
#[inline(always)]
fn adopt(seen: &mut Option<u64>, snap: &Snapshot, stats: &WorkerStats, tsc_hz: u64) {
    if *seen != Some(snap.generation) {
        adopted(seen, snap, stats, tsc_hz);
    }
}

#[cold]
#[inline(never)]
fn adopted(seen: &mut Option<u64>, snap: &Snapshot, stats: &WorkerStats, tsc_hz: u64) {
    // The first snapshot was published before the worker started: its
    // delay is the start-up, not a config change reaching the worker (and
    // it is not taken, so it is not counted for all workers either).
    if seen.is_some() && snap.published_tsc() != 0 {
        let cycles = dpdk::rdtsc().saturating_sub(snap.published_tsc());
        let us = u128::from(cycles) * 1_000_000 / u128::from(tsc_hz);
        let us = u64::try_from(us).unwrap_or(u64::MAX);
        stats.snapshot_adoption.record(us);
        if snap.take() {
            stats.snapshot_all_workers.record(us);
        }
    }
    *seen = Some(snap.generation);
    stats.snapshot_generation.set(snap.generation);
}

#[derive(Default)]
struct BurstCounts {
    rx_bytes: u64,
    forwarded: u64,
    icmp: u64,
    arp: u64,
    nd: u64,
    echo: u64,
    conflicts: u64,
    to_kernel: u64,
    new_flows: u64,
    learned: u64,
    encapsulated: u64,
    too_big: u64,
    /// Indexed by `quic::Route as usize`.
    quic: [u64; lb_core::quic::Route::COUNT],
    drops: [u64; DropReason::COUNT],
}
