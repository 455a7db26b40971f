//! Backend MAC resolution: which backend addresses need ARP (IPv4) or
//! neighbor solicitation (IPv6), and what was learned. The control side owns
//! a [`NeighTable`] and drives it with the time; a worker sends the requests
//! it asks for and reports the replies it sees. A static MAC overrides
//! resolution. A backend whose MAC is unknown is not used for forwarding.
//!
//! Timing: an unresolved address is asked for every `retry` seconds; a
//! resolved one is refreshed every `refresh` seconds, and forgotten after
//! `max_misses` requests (`retry` seconds apart) without an answer; its
//! flows then move to other backends.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::packet::MacAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NeighConfig {
    pub retry: u32,
    pub refresh: u32,
    pub max_misses: u32,
}

impl Default for NeighConfig {
    fn default() -> Self {
        NeighConfig {
            retry: 1,
            refresh: 30,
            max_misses: 3,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Static,
    Learned { confirmed: u32 },
    Unresolved,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Option<MacAddr>,
    source: Source,
    last_request: Option<u32>,
    misses: u32,
}

#[derive(Debug, Default)]
pub struct NeighTable {
    config: NeighConfig,
    entries: HashMap<IpAddr, Entry>,
}

impl NeighTable {
    pub fn new(config: NeighConfig) -> NeighTable {
        NeighTable {
            config,
            entries: HashMap::new(),
        }
    }

    /// The addresses to resolve (`None`) or to pin to a static MAC. Entries
    /// no longer wanted are forgotten; a learned MAC is kept across calls.
    pub fn set_wanted(&mut self, wanted: impl IntoIterator<Item = (IpAddr, Option<MacAddr>)>) {
        let mut next = HashMap::new();
        for (ip, fixed) in wanted {
            let e = match (fixed, self.entries.get(&ip)) {
                (Some(mac), _) => Entry {
                    mac: Some(mac),
                    source: Source::Static,
                    last_request: None,
                    misses: 0,
                },
                (None, Some(e)) if e.source != Source::Static => *e,
                (None, _) => Entry {
                    mac: None,
                    source: Source::Unresolved,
                    last_request: None,
                    misses: 0,
                },
            };
            next.insert(ip, e);
        }
        self.entries = next;
    }

    /// A reply (or any frame naming `ip` at `mac`) was seen. Returns whether
    /// a wanted address changed MAC, so the snapshot must be rebuilt.
    pub fn learn(&mut self, ip: IpAddr, mac: MacAddr, now: u32) -> bool {
        let Some(e) = self.entries.get_mut(&ip) else {
            return false;
        };
        if e.source == Source::Static {
            return false;
        }
        let changed = e.mac != Some(mac);
        e.mac = Some(mac);
        e.source = Source::Learned { confirmed: now };
        e.misses = 0;
        changed
    }

    /// The addresses to ask for now; marks them asked. Also forgets MACs
    /// that went unanswered too long: returns `(requests, changed)`.
    pub fn due(&mut self, now: u32) -> (Vec<IpAddr>, bool) {
        let c = self.config;
        let mut out = Vec::new();
        let mut changed = false;
        for (ip, e) in &mut self.entries {
            let since_request = e.last_request.map(|t| now.wrapping_sub(t));
            let ask = match e.source {
                Source::Static => false,
                Source::Unresolved => since_request.is_none_or(|s| s >= c.retry),
                Source::Learned { confirmed } => {
                    if now.wrapping_sub(confirmed) < c.refresh {
                        false
                    } else if e.misses >= c.max_misses {
                        e.mac = None;
                        e.source = Source::Unresolved;
                        e.misses = 0;
                        changed = true;
                        true
                    } else if since_request.is_none_or(|s| s >= c.retry) {
                        e.misses += 1;
                        true
                    } else {
                        false
                    }
                }
            };
            if ask {
                e.last_request = Some(now);
                out.push(*ip);
            }
        }
        out.sort_unstable();
        (out, changed)
    }

    pub fn mac(&self, ip: &IpAddr) -> Option<MacAddr> {
        self.entries.get(ip).and_then(|e| e.mac)
    }

    /// Wanted addresses without a MAC.
    pub fn unresolved(&self) -> usize {
        self.entries.values().filter(|e| e.mac.is_none()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 11));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 12));
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
    const OTHER: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x99]);

    #[test]
    fn unresolved_is_asked_every_retry_until_learned() {
        let mut t = NeighTable::new(NeighConfig::default());
        t.set_wanted([(A, None)]);
        assert_eq!(t.unresolved(), 1);
        assert_eq!(t.due(100).0, vec![A]);
        assert!(t.due(100).0.is_empty(), "not twice in the same second");
        assert_eq!(t.due(101).0, vec![A]);
        assert!(t.learn(A, MAC, 101));
        assert!(!t.learn(A, MAC, 102), "same MAC: no change");
        assert_eq!(t.mac(&A), Some(MAC));
        assert!(t.due(102).0.is_empty());
        assert_eq!(t.unresolved(), 0);
    }

    #[test]
    fn static_mac_overrides_and_is_never_asked() {
        let mut t = NeighTable::new(NeighConfig::default());
        t.set_wanted([(A, Some(MAC))]);
        assert!(t.due(0).0.is_empty());
        assert!(!t.learn(A, OTHER, 1));
        assert_eq!(t.mac(&A), Some(MAC));
    }

    #[test]
    fn unwanted_addresses_are_ignored_and_forgotten() {
        let mut t = NeighTable::new(NeighConfig::default());
        assert!(!t.learn(A, MAC, 0), "not wanted");
        t.set_wanted([(A, None), (B, None)]);
        t.learn(A, MAC, 1);
        t.set_wanted([(A, None)]);
        assert_eq!(
            t.mac(&A),
            Some(MAC),
            "learned MAC kept across reconfiguration"
        );
        assert_eq!(t.mac(&B), None);
    }

    #[test]
    fn learned_mac_is_refreshed_and_forgotten_when_silent() {
        let c = NeighConfig::default();
        let mut t = NeighTable::new(c);
        t.set_wanted([(A, None)]);
        t.due(0);
        t.learn(A, MAC, 0);
        assert!(t.due(c.refresh - 1).0.is_empty(), "fresh");
        let mut now = c.refresh;
        let mut forgotten_at = None;
        for _ in 0..10 * c.max_misses {
            let (asked, changed) = t.due(now);
            if changed {
                forgotten_at = Some(now);
                break;
            }
            assert_eq!(asked, vec![A], "refresh request at {now}");
            now += c.refresh;
        }
        assert!(forgotten_at.is_some(), "a silent neighbour is forgotten");
        assert_eq!(t.mac(&A), None);
        // An answer brings it back.
        assert!(t.learn(A, MAC, now + 1));
    }

    #[test]
    fn answered_refreshes_keep_it() {
        let c = NeighConfig::default();
        let mut t = NeighTable::new(c);
        t.set_wanted([(A, None)]);
        t.learn(A, MAC, 0);
        for k in 1..20 {
            let now = k * c.refresh;
            let (asked, changed) = t.due(now);
            assert!(!changed);
            if !asked.is_empty() {
                t.learn(A, MAC, now);
            }
        }
        assert_eq!(t.mac(&A), Some(MAC));
    }
}
