//! Load from two samples, and the weight it maps to: pure functions, so
//! they are tested without a machine under load.
//!
//! - CPU: the share of the time the CPUs were not idle between two reads
//!   of `/proc/stat`'s `cpu` line (all CPUs): busy is user, nice, system,
//!   irq, softirq and steal; total is busy, idle and iowait (guest time is
//!   already inside user and nice, so it is not added again).
//! - NIC egress: bytes sent between two reads of
//!   `/sys/class/net/IFACE/statistics/tx_bytes`, as bits per second over
//!   the capacity in Mbit/s (10^6 bit/s).
//!
//! The load is the largest of the enabled sources; the weight is
//! `100 * (1 - load / ceiling)`, rounded to a whole percent, at least 1%
//! below the ceiling and 0% at or above it (0% is the agent's "no new
//! streams"). It never rises when the load rises.

use std::time::Duration;

/// The CPU line of `/proc/stat`, in clock ticks since boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
}

/// The aggregate `cpu ` line of `/proc/stat` (not `cpu0`, `cpu1`, ...).
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    if f.len() < 4 {
        return None;
    }
    let idle = at(3) + at(4);
    let busy = at(0) + at(1) + at(2) + at(5) + at(6) + at(7);
    Some(CpuTimes {
        busy,
        total: busy + idle,
    })
}

/// Percent of the CPU time between `a` and `b` that was busy; None when
/// no time passed or the counters went back.
pub fn cpu_percent(a: CpuTimes, b: CpuTimes) -> Option<f64> {
    let total = b.total.checked_sub(a.total)?;
    let busy = b.busy.checked_sub(a.busy)?;
    if total == 0 {
        return None;
    }
    Some((100.0 * busy as f64 / total as f64).min(100.0))
}

/// Percent of `capacity_mbps` that `tx_b - tx_a` bytes over `elapsed`
/// are; None when no time passed, the capacity is 0, or the counter went
/// back (the interface was reset). May exceed 100 when the capacity given
/// is below the link's.
pub fn nic_percent(tx_a: u64, tx_b: u64, elapsed: Duration, capacity_mbps: u64) -> Option<f64> {
    let bytes = tx_b.checked_sub(tx_a)?;
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 || capacity_mbps == 0 {
        return None;
    }
    let bits_per_sec = bytes as f64 * 8.0 / secs;
    Some(100.0 * bits_per_sec / (capacity_mbps as f64 * 1e6))
}

/// The weight for a load, both in percent (see the module's text).
pub fn weight_percent(load_percent: f64, ceiling_percent: f64) -> u8 {
    if load_percent.is_nan() || load_percent >= ceiling_percent {
        return 0;
    }
    let w = (100.0 * (1.0 - load_percent.max(0.0) / ceiling_percent)).round();
    w.clamp(1.0, 100.0) as u8
}

/// One reading of the enabled sources (None: not enabled, or not read).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When it was taken, on a monotonic clock.
    pub at: Duration,
    pub cpu: Option<CpuTimes>,
    pub tx_bytes: Option<u64>,
}

/// Which sources count, and the ceiling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Config {
    pub cpu: bool,
    /// The NIC's capacity in Mbit/s when the NIC counts.
    pub nic_capacity_mbps: Option<u64>,
    pub ceiling_percent: f64,
}

/// What a window between two samples measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    pub cpu_percent: Option<f64>,
    pub nic_percent: Option<f64>,
    /// The largest of the enabled sources; None when any of them could
    /// not be measured (the agent then says nothing about the weight).
    pub load_percent: Option<f64>,
    pub weight_percent: Option<u8>,
}

/// The window from `prev` to `cur`.
pub fn measure(cfg: &Config, prev: &Sample, cur: &Sample) -> Measured {
    let cpu_percent = match (prev.cpu, cur.cpu) {
        (Some(a), Some(b)) if cfg.cpu => cpu_percent(a, b),
        _ => None,
    };
    let nic_percent = match (cfg.nic_capacity_mbps, prev.tx_bytes, cur.tx_bytes) {
        (Some(cap), Some(a), Some(b)) => nic_percent(a, b, cur.at.saturating_sub(prev.at), cap),
        _ => None,
    };
    let wanted = [
        (cfg.cpu, cpu_percent),
        (cfg.nic_capacity_mbps.is_some(), nic_percent),
    ];
    let load_percent =
        if wanted.iter().any(|(on, _)| *on) && wanted.iter().all(|(on, v)| !on || v.is_some()) {
            wanted
                .iter()
                .filter_map(|(on, v)| v.filter(|_| *on))
                .reduce(f64::max)
        } else {
            None
        };
    Measured {
        cpu_percent,
        nic_percent,
        load_percent,
        weight_percent: load_percent.map(|l| weight_percent(l, cfg.ceiling_percent)),
    }
}

impl Measured {
    /// The figures for the JSON document (`load_percent`, `cpu_percent`,
    /// `nic_percent`, one decimal), beside the answer's own fields.
    pub fn json_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        for (k, v) in [
            ("load_percent", self.load_percent),
            ("cpu_percent", self.cpu_percent),
            ("nic_percent", self.nic_percent),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), ((v * 10.0).round() / 10.0).into());
            }
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_A: &str = "cpu  1000 50 300 8000 100 20 30 0 0 0\n\
        cpu0 500 25 150 4000 50 10 15 0 0 0\n\
        cpu1 500 25 150 4000 50 10 15 0 0 0\n\
        intr 12345\nctxt 999\n";
    // 400 busy ticks (+250 user, +50 nice, +80 system, +10 irq, +10
    // softirq) and 600 idle (+550 idle, +50 iowait): 40%.
    const STAT_B: &str = "cpu  1250 100 380 8550 150 30 40 0 77 0\n\
        cpu0 600 50 190 4275 75 15 20 0 0 0\n";

    #[test]
    fn cpu_from_two_reads_of_proc_stat() {
        let a = parse_proc_stat(STAT_A).unwrap();
        assert_eq!(
            a,
            CpuTimes {
                busy: 1400,
                total: 9500
            }
        );
        let b = parse_proc_stat(STAT_B).unwrap();
        assert_eq!(cpu_percent(a, b), Some(40.0));
        // No time passed, or counters back: nothing measured.
        assert_eq!(cpu_percent(a, a), None);
        assert_eq!(cpu_percent(b, a), None);
        // An old kernel's four fields.
        assert_eq!(
            parse_proc_stat("cpu 1 2 3 4\n"),
            Some(CpuTimes { busy: 6, total: 10 })
        );
        assert_eq!(parse_proc_stat("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 x 3 4\n"), None);
        assert_eq!(parse_proc_stat("cpu 1 2\n"), None);
    }

    #[test]
    fn nic_from_two_reads_of_tx_bytes() {
        // 62.5 MB in 1 s is 500 Mbit/s: half of 1000.
        let p = nic_percent(1_000, 62_501_000, Duration::from_secs(1), 1000);
        assert_eq!(p, Some(50.0));
        // The same bytes over 2 s on a 10G link: 2.5%.
        let p = nic_percent(0, 62_500_000, Duration::from_secs(2), 10_000).unwrap();
        assert!((p - 2.5).abs() < 1e-9, "{p}");
        assert_eq!(nic_percent(5, 4, Duration::from_secs(1), 1000), None);
        assert_eq!(nic_percent(0, 4, Duration::ZERO, 1000), None);
        assert_eq!(nic_percent(0, 4, Duration::from_secs(1), 0), None);
        // Over the capacity given: over 100.
        assert_eq!(
            nic_percent(0, 250_000_000, Duration::from_secs(1), 1000),
            Some(200.0)
        );
    }

    #[test]
    fn the_mapping() {
        let w = |l| weight_percent(l, 90.0);
        assert_eq!(w(0.0), 100);
        assert_eq!(w(-3.0), 100);
        assert_eq!(w(45.0), 50);
        assert_eq!(w(30.0), 67);
        assert_eq!(w(89.9), 1, "below the ceiling, never 0");
        assert_eq!(w(90.0), 0);
        assert_eq!(w(250.0), 0);
        assert_eq!(w(f64::NAN), 0);
        assert_eq!(weight_percent(50.0, 100.0), 50);
        assert_eq!(weight_percent(100.0, 100.0), 0);
        // Monotone: more load, never more weight.
        let mut last = 100;
        for i in 0..=1200 {
            let now = w(f64::from(i) / 10.0);
            assert!(now <= last, "{i}");
            last = now;
        }
    }

    fn sample(at_ms: u64, stat: &str, tx: u64) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            cpu: parse_proc_stat(stat),
            tx_bytes: Some(tx),
        }
    }

    #[test]
    fn load_is_the_largest_enabled_source() {
        let a = sample(0, STAT_A, 0);
        // 60% of 1000 Mbit/s over 1 s.
        let b = sample(1000, STAT_B, 75_000_000);
        let both = Config {
            cpu: true,
            nic_capacity_mbps: Some(1000),
            ceiling_percent: 90.0,
        };
        let m = measure(&both, &a, &b);
        assert_eq!(m.cpu_percent, Some(40.0));
        assert_eq!(m.nic_percent, Some(60.0));
        assert_eq!(m.load_percent, Some(60.0));
        assert_eq!(m.weight_percent, Some(33));
        assert_eq!(
            serde_json::Value::Object(m.json_fields()),
            serde_json::json!({"load_percent": 60.0, "cpu_percent": 40.0, "nic_percent": 60.0})
        );

        let cpu_only = Config {
            nic_capacity_mbps: None,
            ..both
        };
        let m = measure(&cpu_only, &a, &b);
        assert_eq!((m.load_percent, m.nic_percent), (Some(40.0), None));
        assert_eq!(m.weight_percent, Some(56));

        let nic_only = Config { cpu: false, ..both };
        let m = measure(&nic_only, &a, &b);
        assert_eq!((m.load_percent, m.cpu_percent), (Some(60.0), None));

        // A 10G link at the same rate: the CPU is the larger.
        let ten_g = Config {
            nic_capacity_mbps: Some(10_000),
            ..both
        };
        assert_eq!(measure(&ten_g, &a, &b).load_percent, Some(40.0));
    }

    #[test]
    fn an_unreadable_source_says_nothing_about_the_weight() {
        let both = Config {
            cpu: true,
            nic_capacity_mbps: Some(1000),
            ceiling_percent: 90.0,
        };
        let a = sample(0, STAT_A, 0);
        let mut b = sample(1000, STAT_B, 1000);
        b.tx_bytes = None;
        let m = measure(&both, &a, &b);
        assert_eq!(m.cpu_percent, Some(40.0));
        assert_eq!((m.load_percent, m.weight_percent), (None, None));
        // The counter went back (the interface was reset).
        let b = sample(1000, STAT_B, 0);
        let a = sample(0, STAT_A, 10);
        assert_eq!(measure(&both, &a, &b).weight_percent, None);
        // Nothing enabled: nothing.
        let none = Config {
            cpu: false,
            nic_capacity_mbps: None,
            ceiling_percent: 90.0,
        };
        assert_eq!(measure(&none, &a, &b), Measured::default());
    }
}
