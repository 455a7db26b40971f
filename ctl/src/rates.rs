//! Rates per second between two `GetStats` samples, for `stats --watch`:
//! the difference of each counter over the elapsed time actually measured
//! between the two samples. A counter that went down (lbd restarted between
//! them) or an object the first sample lacks has no rate (`None`), never a
//! negative or huge one.

use lb_proto::v1 as pb;
use std::time::Duration;

/// `after - before` per second over `elapsed`; `None` when the counter went
/// down or no time passed.
pub fn per_second(before: u64, after: u64, elapsed: Duration) -> Option<f64> {
    let secs = elapsed.as_secs_f64();
    (after >= before && secs > 0.0).then(|| (after - before) as f64 / secs)
}

/// One worker's rates (bits from its byte counters).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WorkerRates {
    pub rx_packets: Option<f64>,
    pub rx_bits: Option<f64>,
    pub tx_packets: Option<f64>,
    pub tx_bits: Option<f64>,
    pub forwarded: Option<f64>,
    pub new_flows: Option<f64>,
    /// Every drop reason together.
    pub drops: Option<f64>,
}

/// A VIP's or a backend's traffic rates.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrafficRates {
    pub packets: Option<f64>,
    pub bits: Option<f64>,
    pub new_flows: Option<f64>,
}

/// A VIP's rates and its backends', in the order of the later sample's
/// `backends`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct VipRates {
    pub traffic: TrafficRates,
    pub backends: Vec<TrafficRates>,
}

/// The rates of the later sample's workers and VIPs, index for index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rates {
    /// The measured time between the two samples.
    pub elapsed: Duration,
    pub workers: Vec<WorkerRates>,
    pub vips: Vec<VipRates>,
}

fn bits(before: u64, after: u64, elapsed: Duration) -> Option<f64> {
    per_second(before, after, elapsed).map(|b| b * 8.0)
}

/// The sum of a worker's drop counters per second: `None` if any of them
/// went down or is missing from the earlier sample.
fn drops(before: &pb::WorkerStats, after: &pb::WorkerStats, elapsed: Duration) -> Option<f64> {
    after.drops.iter().try_fold(0.0, |sum, d| {
        let b = before.drops.iter().find(|b| b.name == d.name)?;
        Some(sum + per_second(b.value, d.value, elapsed)?)
    })
}

fn worker(before: Option<&pb::WorkerStats>, after: &pb::WorkerStats, e: Duration) -> WorkerRates {
    let Some(b) = before else {
        return WorkerRates::default();
    };
    WorkerRates {
        rx_packets: per_second(b.rx_packets, after.rx_packets, e),
        rx_bits: bits(b.rx_bytes, after.rx_bytes, e),
        tx_packets: per_second(b.tx_packets, after.tx_packets, e),
        tx_bits: bits(b.tx_bytes, after.tx_bytes, e),
        forwarded: per_second(b.forwarded, after.forwarded, e),
        new_flows: per_second(b.new_flows, after.new_flows, e),
        drops: drops(b, after, e),
    }
}

fn traffic(before: Option<(u64, u64, u64)>, after: (u64, u64, u64), e: Duration) -> TrafficRates {
    let Some((packets, bytes, new_flows)) = before else {
        return TrafficRates::default();
    };
    TrafficRates {
        packets: per_second(packets, after.0, e),
        bits: bits(bytes, after.1, e),
        new_flows: per_second(new_flows, after.2, e),
    }
}

/// The rates from `before` to `after`, `elapsed` apart. Workers match by
/// lcore, VIPs by key, backends by address.
pub fn rates(before: &pb::Stats, after: &pb::Stats, elapsed: Duration) -> Rates {
    let workers = after
        .workers
        .iter()
        .map(|w| {
            let b = before.workers.iter().find(|b| b.lcore == w.lcore);
            worker(b, w, elapsed)
        })
        .collect();
    let vips = after
        .vips
        .iter()
        .map(|v| {
            let bv = before.vips.iter().find(|b| b.key == v.key);
            VipRates {
                traffic: traffic(
                    bv.map(|b| (b.packets, b.bytes, b.new_flows)),
                    (v.packets, v.bytes, v.new_flows),
                    elapsed,
                ),
                backends: v
                    .backends
                    .iter()
                    .map(|be| {
                        let bb =
                            bv.and_then(|bv| bv.backends.iter().find(|b| b.address == be.address));
                        traffic(
                            bb.map(|b| (b.packets, b.bytes, b.new_flows)),
                            (be.packets, be.bytes, be.new_flows),
                            elapsed,
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    Rates {
        elapsed,
        workers,
        vips,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u32) -> Option<pb::VipKey> {
        Some(pb::VipKey {
            address: "198.51.100.10".into(),
            port,
            protocol: pb::Protocol::Tcp as i32,
        })
    }

    fn worker_stats(lcore: u32, n: u64, drop: u64) -> pb::WorkerStats {
        pb::WorkerStats {
            lcore,
            rx_packets: n,
            rx_bytes: n * 100,
            tx_packets: n / 2,
            tx_bytes: n * 50,
            forwarded: n / 2,
            new_flows: n / 10,
            drops: vec![
                pb::Counter {
                    name: "not_for_us".into(),
                    value: drop,
                },
                pb::Counter {
                    name: "no_backend".into(),
                    value: 2 * drop,
                },
            ],
            ..Default::default()
        }
    }

    fn vip_stats(port: u32, n: u64) -> pb::VipStats {
        pb::VipStats {
            key: key(port),
            packets: n,
            bytes: n * 1000,
            new_flows: n / 4,
            backends: vec![
                pb::BackendStats {
                    address: "192.0.2.11".into(),
                    packets: n,
                    bytes: n * 1000,
                    new_flows: n / 4,
                },
                pb::BackendStats {
                    address: "192.0.2.12".into(),
                    packets: 0,
                    bytes: 0,
                    new_flows: 0,
                },
            ],
        }
    }

    #[test]
    fn per_second_over_the_elapsed_time() {
        assert_eq!(per_second(100, 400, Duration::from_secs(2)), Some(150.0));
        assert_eq!(
            per_second(0, 1000, Duration::from_millis(2500)),
            Some(400.0),
            "the measured time, fractions included"
        );
        assert_eq!(per_second(7, 7, Duration::from_secs(1)), Some(0.0));
        assert_eq!(
            per_second(400, 100, Duration::from_secs(2)),
            None,
            "a counter that went down (lbd restarted) has no rate"
        );
        assert_eq!(per_second(1, 2, Duration::ZERO), None, "no time passed");
        assert_eq!(
            per_second(0, u64::MAX, Duration::from_secs(1)),
            Some(u64::MAX as f64)
        );
    }

    #[test]
    fn rates_per_worker_vip_and_backend() {
        let before = pb::Stats {
            workers: vec![worker_stats(1, 1000, 10), worker_stats(2, 0, 0)],
            vips: vec![vip_stats(443, 100)],
            ..Default::default()
        };
        let after = pb::Stats {
            // In another order: matched by lcore, not position.
            workers: vec![worker_stats(2, 500, 5), worker_stats(1, 3000, 30)],
            vips: vec![vip_stats(443, 500), vip_stats(80, 10)],
            ..Default::default()
        };
        let r = rates(&before, &after, Duration::from_secs(2));
        assert_eq!(r.elapsed, Duration::from_secs(2));
        assert_eq!(
            r.workers[1],
            WorkerRates {
                rx_packets: Some(1000.0),
                rx_bits: Some(1000.0 * 100.0 * 8.0),
                tx_packets: Some(500.0),
                tx_bits: Some(1000.0 * 50.0 * 8.0),
                forwarded: Some(500.0),
                new_flows: Some(100.0),
                drops: Some((20.0 + 40.0) / 2.0),
            }
        );
        assert_eq!(r.workers[0].rx_packets, Some(250.0));
        assert_eq!(r.workers[0].drops, Some(7.5));
        assert_eq!(
            r.vips[0].traffic,
            TrafficRates {
                packets: Some(200.0),
                bits: Some(200.0 * 1000.0 * 8.0),
                new_flows: Some(50.0),
            }
        );
        assert_eq!(r.vips[0].backends[0].packets, Some(200.0));
        assert_eq!(
            r.vips[0].backends[1],
            TrafficRates {
                packets: Some(0.0),
                bits: Some(0.0),
                new_flows: Some(0.0),
            }
        );
        assert_eq!(
            r.vips[1],
            VipRates {
                traffic: TrafficRates::default(),
                backends: vec![TrafficRates::default(); 2],
            },
            "a VIP the first sample lacks has no rates yet"
        );
    }

    #[test]
    fn a_restarted_lbd_shows_no_rate() {
        let before = pb::Stats {
            workers: vec![worker_stats(1, 5000, 50)],
            vips: vec![vip_stats(443, 5000)],
            ..Default::default()
        };
        // lbd restarted: every counter started again from 0.
        let after = pb::Stats {
            workers: vec![worker_stats(1, 20, 0)],
            vips: vec![vip_stats(443, 20)],
            ..Default::default()
        };
        let r = rates(&before, &after, Duration::from_secs(2));
        assert_eq!(r.workers[0], WorkerRates::default(), "{r:?}");
        assert_eq!(r.vips[0].traffic, TrafficRates::default());
        assert_eq!(r.vips[0].backends[0], TrafficRates::default());
        // A backend whose counters stayed 0 is no evidence of a reset.
        assert_eq!(r.vips[0].backends[1].packets, Some(0.0));

        // One drop counter down, the other up: the sum has no rate.
        let mut w = worker_stats(1, 5000, 50);
        w.drops[0].value = 10;
        w.drops[1].value = 1000;
        let after = pb::Stats {
            workers: vec![w],
            ..Default::default()
        };
        let r = rates(&before, &after, Duration::from_secs(2));
        assert_eq!(r.workers[0].drops, None);
        assert_eq!(r.workers[0].rx_packets, Some(0.0));
    }
}
