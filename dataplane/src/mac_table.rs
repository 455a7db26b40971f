//! The first forwarder's decision: a fixed table from a frame's Ethernet
//! destination to the next hop's MAC. The IP packet is never touched; only
//! the Ethernet addresses are rewritten (destination = next hop, source =
//! our port), as a DR hop does. `forward.rs` replaces this with the VIP
//! decision; the worker loop stays the same.

use crate::stats::DropReason;

const ETH_HEADER: usize = 14;

/// What to do with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten in place; transmit it.
    Forward,
    Drop(DropReason),
}

/// Destination MAC -> next-hop MAC. Small (a handful of entries), scanned linearly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacTable {
    routes: Vec<([u8; 6], [u8; 6])>,
}

impl MacTable {
    /// Build from (destination, next hop) pairs; a later pair for the same
    /// destination replaces an earlier one.
    pub fn new(pairs: impl IntoIterator<Item = ([u8; 6], [u8; 6])>) -> MacTable {
        let mut routes: Vec<([u8; 6], [u8; 6])> = Vec::new();
        for (dst, next) in pairs {
            match routes.iter_mut().find(|(d, _)| *d == dst) {
                Some(r) => r.1 = next,
                None => routes.push((dst, next)),
            }
        }
        MacTable { routes }
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn next_hop(&self, dst: &[u8; 6]) -> Option<[u8; 6]> {
        self.routes.iter().find(|(d, _)| d == dst).map(|(_, n)| *n)
    }

    /// Decide for one frame and rewrite it in place when it is forwarded.
    #[inline]
    pub fn rewrite(&self, frame: &mut [u8], port_mac: [u8; 6]) -> Verdict {
        let Some(header) = frame.get_mut(..ETH_HEADER) else {
            return Verdict::Drop(DropReason::Runt);
        };
        let (dst, rest) = header.split_at_mut(6);
        let dst: &mut [u8; 6] = dst.try_into().expect("6 bytes");
        match self.next_hop(dst) {
            Some(next) => {
                *dst = next;
                rest[..6].copy_from_slice(&port_mac);
                Verdict::Forward
            }
            None => Verdict::Drop(DropReason::NoRoute),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PORT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const VIP: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];
    const BACKEND: [u8; 6] = [0x02, 0, 0, 0, 0, 0xbb];

    fn frame(dst: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = vec![0x5a; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xcc]);
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f
    }

    #[test]
    fn forwards_known_destination_rewriting_only_macs() {
        let t = MacTable::new([(VIP, BACKEND)]);
        let mut f = frame(VIP, 64);
        let before = f.clone();
        assert_eq!(t.rewrite(&mut f, PORT), Verdict::Forward);
        assert_eq!(&f[..6], &BACKEND);
        assert_eq!(&f[6..12], &PORT);
        assert_eq!(&f[12..], &before[12..]);
    }

    #[test]
    fn drops_unknown_destination_untouched() {
        let t = MacTable::new([(VIP, BACKEND)]);
        let mut f = frame(BACKEND, 64);
        let before = f.clone();
        assert_eq!(t.rewrite(&mut f, PORT), Verdict::Drop(DropReason::NoRoute));
        assert_eq!(f, before);
    }

    #[test]
    fn drops_runts() {
        let t = MacTable::new([(VIP, BACKEND)]);
        for len in 0..ETH_HEADER {
            let mut f = frame(VIP, 14)[..len].to_vec();
            assert_eq!(t.rewrite(&mut f, PORT), Verdict::Drop(DropReason::Runt));
        }
        let mut f = frame(VIP, 14);
        assert_eq!(t.rewrite(&mut f, PORT), Verdict::Forward);
    }

    #[test]
    fn later_pair_replaces_earlier() {
        let t = MacTable::new([(VIP, BACKEND), (VIP, PORT)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_hop(&VIP), Some(PORT));
    }

    proptest! {
        #[test]
        fn never_panics_and_touches_only_macs(bytes in proptest::collection::vec(any::<u8>(), 0..200), hit in any::<bool>()) {
            let t = MacTable::new([(VIP, BACKEND)]);
            let mut f = bytes.clone();
            if hit && f.len() >= 6 { f[..6].copy_from_slice(&VIP); }
            let orig = f.clone();
            match t.rewrite(&mut f, PORT) {
                Verdict::Forward => {
                    prop_assert!(orig.len() >= ETH_HEADER);
                    prop_assert_eq!(&f[..6], &BACKEND);
                    prop_assert_eq!(&f[6..12], &PORT);
                    prop_assert_eq!(&f[12..], &orig[12..]);
                }
                Verdict::Drop(_) => prop_assert_eq!(f, orig),
            }
        }
    }
}
