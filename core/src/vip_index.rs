//! The per-packet VIP lookups of a snapshot in one small open-addressed
//! table: "is this destination a VIP address?" and "which VIP serves this
//! address, port and protocol?". Built with the snapshot, read-only after.
//!
//! Every packet asks at least one of these, so they must cost a few
//! nanoseconds: one multiply for the hash (addresses as 128-bit integers
//! plus their family), a probe over 32-byte slots that usually ends at the
//! first, no `Hasher` state machine and no enum comparisons. An address is
//! stored as its own entry with port 0 (no VIP has port 0).

use std::net::IpAddr;

/// One entry: 32 bytes, two per cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    addr: Addr,
    port: u16,
    proto: u8,
    used: bool,
    vip: u32,
}

/// An address as a number and its family (an IPv4 address and the IPv6
/// address that maps it are different destinations on the wire).
type Addr = (u128, bool);

const EMPTY: Slot = Slot {
    addr: (0, false),
    port: 0,
    proto: 0,
    used: false,
    vip: 0,
};

#[derive(Debug, Clone)]
pub struct VipIndex {
    slots: Box<[Slot]>,
    mask: usize,
}

#[inline(always)]
fn addr_bits(a: IpAddr) -> Addr {
    match a {
        IpAddr::V4(v4) => (u128::from(v4.to_bits()), false),
        IpAddr::V6(v6) => (u128::from(v6), true),
    }
}

#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "the address is folded: its low and high 64 bits"
)]
fn hash((addr, v6): Addr, port: u16, proto: u8) -> u64 {
    let folded = (addr as u64) ^ ((addr >> 64) as u64).rotate_left(29) ^ u64::from(v6) << 40;
    let h = (folded ^ u64::from(port) << 8 ^ u64::from(proto)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

impl VipIndex {
    /// An index of `services` (address, port, protocol number) -> VIP
    /// number; their addresses are entered too. At most a quarter full, so
    /// probes stay short. A service listed twice keeps its first number.
    pub fn new(services: impl IntoIterator<Item = (IpAddr, u16, u8, u32)>) -> VipIndex {
        let entries: Vec<(Addr, u16, u8, u32)> = services
            .into_iter()
            .flat_map(|(a, port, proto, vip)| {
                let addr = addr_bits(a);
                [(addr, port, proto, vip), (addr, 0, 0, 0)]
            })
            .collect();
        let size = (entries.len() * 4).next_power_of_two().max(16);
        let mut index = VipIndex {
            slots: vec![EMPTY; size].into_boxed_slice(),
            mask: size - 1,
        };
        for (addr, port, proto, vip) in entries {
            #[allow(
                clippy::cast_possible_truncation,
                reason = "the hash is folded: only the bits under mask count"
            )]
            let mut i = hash(addr, port, proto) as usize & index.mask;
            loop {
                let s = &mut index.slots[i];
                if !s.used {
                    *s = Slot {
                        addr,
                        port,
                        proto,
                        used: true,
                        vip,
                    };
                    break;
                }
                if (s.addr, s.port, s.proto) == (addr, port, proto) {
                    break;
                }
                i = (i + 1) & index.mask;
            }
        }
        index
    }

    #[inline(always)]
    fn find(&self, addr: Addr, port: u16, proto: u8) -> Option<u32> {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "the hash is folded: only the bits under mask count"
        )]
        let mut i = hash(addr, port, proto) as usize & self.mask;
        loop {
            let s = &self.slots[i];
            if !s.used {
                return None;
            }
            if s.addr == addr && s.port == port && s.proto == proto {
                return Some(s.vip);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The VIP serving (`addr`, `port`, IP protocol `proto`).
    #[inline(always)]
    pub fn service(&self, addr: IpAddr, port: u16, proto: u8) -> Option<u32> {
        if port == 0 {
            return None;
        }
        self.find(addr_bits(addr), port, proto)
    }

    /// Is `addr` the address of any VIP?
    #[inline(always)]
    pub fn is_vip_addr(&self, addr: IpAddr) -> bool {
        self.find(addr_bits(addr), 0, 0).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_services_and_addresses_and_nothing_else() {
        let idx = VipIndex::new([
            (ip("198.51.100.10"), 443, 6, 0),
            (ip("198.51.100.10"), 443, 17, 1),
            (ip("2001:db8::10"), 443, 6, 2),
            (ip("198.51.100.10"), 80, 6, 3),
        ]);
        assert_eq!(idx.service(ip("198.51.100.10"), 443, 6), Some(0));
        assert_eq!(idx.service(ip("198.51.100.10"), 443, 17), Some(1));
        assert_eq!(idx.service(ip("2001:db8::10"), 443, 6), Some(2));
        assert_eq!(idx.service(ip("198.51.100.10"), 80, 6), Some(3));
        assert_eq!(idx.service(ip("198.51.100.10"), 80, 17), None);
        assert_eq!(
            idx.service(ip("198.51.100.10"), 0, 0),
            None,
            "port 0 is no service"
        );
        assert_eq!(idx.service(ip("198.51.100.11"), 443, 6), None);
        // The IPv4-mapped IPv6 address is a different address on the wire.
        assert_eq!(idx.service(ip("::ffff:198.51.100.10"), 443, 6), None);
        assert!(!idx.is_vip_addr(ip("::ffff:198.51.100.10")));
        assert!(!idx.is_vip_addr(ip("::c633:640a")));
        assert!(idx.is_vip_addr(ip("198.51.100.10")));
        assert!(idx.is_vip_addr(ip("2001:db8::10")));
        assert!(!idx.is_vip_addr(ip("192.0.2.1")));
        assert!(!VipIndex::new([]).is_vip_addr(ip("0.0.0.0")));
    }

    proptest! {
        #[test]
        fn agrees_with_a_map(
            services in proptest::collection::vec((any::<u32>(), 1u16..4, prop_oneof![Just(6u8), Just(17u8)]), 0..300),
            probes in proptest::collection::vec((any::<u32>(), 0u16..4, prop_oneof![Just(6u8), Just(17u8)]), 0..300),
        ) {
            // Few distinct addresses and ports, so probes hit often.
            let addr = |a: u32| IpAddr::from((a % 50).to_be_bytes());
            let mut map = HashMap::new();
            let list: Vec<_> = services.iter().enumerate().map(|(i, &(a, p, proto))| {
                let i = u32::try_from(i).unwrap();
                map.entry((addr(a), p, proto)).or_insert(i);
                (addr(a), p, proto, i)
            }).collect();
            let idx = VipIndex::new(list);
            for (a, p, proto) in services.iter().chain(&probes) {
                prop_assert_eq!(idx.service(addr(*a), *p, *proto), map.get(&(addr(*a), *p, *proto)).copied());
                prop_assert_eq!(
                    idx.is_vip_addr(addr(*a)),
                    map.keys().any(|k| k.0 == addr(*a))
                );
            }
        }
    }
}
