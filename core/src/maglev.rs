//! Weighted Maglev consistent hashing (Eisenbud et al., NSDI 2016, section
//! 3.4), built on the control side, read by workers with one array index.
//!
//! - **Permutations.** Backend `i` visits slots `offset_i + j * skip_i (mod
//!   M)` for `j = 0, 1, ...`, with `offset_i = h1(key_i) mod M` and `skip_i =
//!   h2(key_i) mod (M - 1) + 1`. M is prime, so every permutation covers every
//!   slot.
//! - **Weights.** The fill goes in rounds over the backends; each round a
//!   backend earns its weight in credit and claims one slot (its next free
//!   one) per `max_weight` of credit. A backend of weight 2 thus claims twice
//!   as often as one of weight 1; weight 0 never claims.
//! - **Determinism.** The hash is defined here (FNV-1a then the murmur3
//!   finaliser, fixed seeds), not borrowed from std or a crate, so it cannot
//!   change with a toolchain; backends are processed in the order of their
//!   keys, so the table does not depend on the order the caller lists them.
//!   Every balancer instance with the same VIP config builds the same table.
//! - **Lookup.** `table[(hash * M) >> 64]`: a multiply-high reduction of a
//!   well-mixed 64-bit hash, cheaper than `%`.

const SEED_OFFSET: u64 = 0x6d61_676c_6576_3031; // "maglev01"
const SEED_SKIP: u64 = 0x6d61_676c_6576_3032; // "maglev02"
const EMPTY: u16 = u16::MAX;

/// Largest number of backends per table (indices are `u16`; one value marks empty slots).
pub const MAX_BACKENDS: usize = u16::MAX as usize - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("table size {0} is not prime")]
    NotPrime(u32),
    #[error("table size {size} is too small for {backends} backends: it must be larger than the number of backends (use at least 100 slots per backend for balance)")]
    TooSmall { size: u32, backends: usize },
    #[error("no backend has a weight above 0")]
    NoWeight,
    #[error("{0} backends: at most {MAX_BACKENDS} per table")]
    TooManyBackends(usize),
    #[error("two backends have the same key")]
    DuplicateKey,
}

/// A filled Maglev lookup table: slot -> index into the backends as given to
/// [`Maglev::new`].
#[derive(Clone, PartialEq, Eq)]
pub struct Maglev {
    table: Box<[u16]>,
}

impl std::fmt::Debug for Maglev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maglev")
            .field("size", &self.table.len())
            .finish()
    }
}

impl Maglev {
    /// Build a table of prime `size` over `backends` = (stable key, weight).
    pub fn new(size: u32, backends: &[(&[u8], u32)]) -> Result<Maglev, MaglevError> {
        let order = Maglev::check(size, backends)?;
        Ok(Maglev::fill(size, backends, order))
    }

    /// Would [`Maglev::new`] accept these? Cheap: no table is filled. On
    /// success, the backends with a weight, in key order.
    pub fn check(size: u32, backends: &[(&[u8], u32)]) -> Result<Vec<usize>, MaglevError> {
        if !is_prime(size) {
            return Err(MaglevError::NotPrime(size));
        }
        if backends.len() > MAX_BACKENDS {
            return Err(MaglevError::TooManyBackends(backends.len()));
        }
        if size as usize <= backends.len() {
            return Err(MaglevError::TooSmall {
                size,
                backends: backends.len(),
            });
        }
        let max_weight = backends.iter().map(|b| b.1).max().unwrap_or(0);
        if max_weight == 0 {
            return Err(MaglevError::NoWeight);
        }
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_unstable_by(|&a, &b| backends[a].0.cmp(backends[b].0));
        if order
            .windows(2)
            .any(|w| backends[w[0]].0 == backends[w[1]].0)
        {
            return Err(MaglevError::DuplicateKey);
        }
        order.retain(|&i| backends[i].1 > 0);
        Ok(order)
    }

    /// Fill the table; `order` comes from [`Maglev::check`].
    ///
    /// The paper's fill, made fast without changing a single slot (the test
    /// `fill_matches_reference` holds it to the plain version):
    /// - free slots are tracked in a bitmap that stays in L1 (8 KiB at
    ///   M = 65537), and each walk's state sits in one small struct;
    /// - a probe looks at four positions of the permutation, each one step
    ///   of a precomputed multiple of the skip from the first (no chain of
    ///   additions), and picks the first free one with selects, not an
    ///   indexed load;
    /// - with equal weights (the usual case) turns are plain round robin;
    /// - once only `tail` slots are free, a walk would probe about M / free
    ///   slots per claim. Instead, each free slot's position in the backend's
    ///   permutation is computed, `(slot - offset) * skip^-1 mod M`, and the
    ///   smallest wins: a walk has passed only taken slots, so the first free
    ///   slot of its permutation is exactly where its probing would stop.
    fn fill(size: u32, backends: &[(&[u8], u32)], order: Vec<usize>) -> Maglev {
        let m = u64::from(size);
        let max_weight = u64::from(backends.iter().map(|b| b.1).max().unwrap_or(0));
        let index: Vec<u16> = order
            .iter()
            .map(|&i| u16::try_from(i).expect("check: at most MAX_BACKENDS backends"))
            .collect();
        let offset: Vec<u32> = order
            .iter()
            .map(|&i| rem(hash_bytes(backends[i].0, SEED_OFFSET), size))
            .collect();
        let skip: Vec<u32> = order
            .iter()
            .map(|&i| rem(hash_bytes(backends[i].0, SEED_SKIP), size - 1) + 1)
            .collect();
        let weight: Vec<u64> = order.iter().map(|&i| u64::from(backends[i].1)).collect();
        let mut turns = Turns::new(&weight, max_weight);

        let mut table = vec![EMPTY; size as usize].into_boxed_slice();
        let mut taken = vec![0u64; (size as usize).div_ceil(64)];
        let is_free = |taken: &[u64], q: u32| !taken[q as usize / 64] >> (q % 64) & 1;
        // Where probing (about M / free per claim) starts to cost more than
        // scanning the free slots (one multiply and reduction each).
        let tail = (size as usize / 4).isqrt().max(1);
        let mut walks: Vec<Walk> = (0..order.len())
            .map(|w| {
                let k1 = skip[w];
                let k2 = step(k1, k1, size);
                let k3 = step(k2, k1, size);
                Walk {
                    pos: offset[w],
                    strides: [k1, k2, k3, step(k3, k1, size)],
                    index: index[w],
                }
            })
            .collect();
        for _ in tail..size as usize {
            let w = turns.next();
            let walk = &mut walks[w];
            let (k, mut p) = (walk.strides, walk.pos);
            let slot = loop {
                let p1 = step(p, k[0], size);
                let p2 = step(p, k[1], size);
                let p3 = step(p, k[2], size);
                let mask = is_free(&taken, p)
                    | is_free(&taken, p1) << 1
                    | is_free(&taken, p2) << 2
                    | is_free(&taken, p3) << 3;
                if mask != 0 {
                    let low = if mask & 1 != 0 { p } else { p1 };
                    let high = if mask & 4 != 0 { p2 } else { p3 };
                    break if mask & 3 != 0 { low } else { high };
                }
                p = step(p, k[3], size);
            };
            walk.pos = step(slot, k[0], size);
            taken[slot as usize / 64] |= 1 << (slot % 64);
            table[slot as usize] = walk.index;
        }

        let mut free: Vec<u32> = Vec::with_capacity(tail);
        for (i, &word) in taken.iter().enumerate() {
            let mut f = !word;
            while f != 0 {
                #[allow(
                    clippy::cast_possible_truncation,
                    reason = "i < size.div_ceil(64), so i * 64 < size + 64 fits u32"
                )]
                let s = i as u32 * 64 + f.trailing_zeros();
                if s < size {
                    free.push(s);
                }
                f &= f - 1;
            }
        }
        let inverse: Vec<u64> = skip.iter().map(|&k| inverse_mod(k, size)).collect();
        #[allow(
            clippy::cast_possible_truncation,
            reason = "(2^64 - 1) / m <= u64::MAX for m >= 1"
        )]
        let barrett = (u128::from(u64::MAX) / u128::from(m)) as u64;
        while !free.is_empty() {
            let w = turns.next();
            let (o, inv) = (u64::from(offset[w]), inverse[w]);
            let place = |s: u32| {
                let d = u64::from(s) + m - o;
                reduce(if d >= m { d - m } else { d } * inv, m, barrett)
            };
            let (at, _) = free
                .iter()
                .enumerate()
                .min_by_key(|&(_, &s)| place(s))
                .expect("not empty");
            table[free.swap_remove(at) as usize] = index[w];
        }
        Maglev { table }
    }

    /// The backend index for a flow hash.
    #[inline(always)]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "(hash * len) >> 64 < len, an index"
    )]
    pub fn lookup(&self, hash: u64) -> u16 {
        let slot = ((u128::from(hash) * self.table.len() as u128) >> 64) as usize;
        self.table[slot]
    }

    pub fn size(&self) -> u32 {
        u32::try_from(self.table.len()).expect("built with a u32 size")
    }

    /// The table itself, slot by slot.
    pub fn slots(&self) -> &[u16] {
        &self.table
    }
}

/// One backend's walk through its permutation while filling.
struct Walk {
    /// Its next position.
    pos: u32,
    /// `j * skip mod M` for j = 1..=4.
    strides: [u32; 4],
    index: u16,
}

/// Whose turn it is to claim a slot: backends in key order, round after
/// round, each earning its weight in credit per round and claiming once per
/// `max_weight` of credit. With equal weights (the usual case) that is
/// plain round robin, taken without the credit.
struct Turns<'a> {
    weight: &'a [u64],
    max_weight: u64,
    credit: Vec<u64>,
    /// The last to claim (round robin), or the one earning (credit).
    at: usize,
    equal: bool,
}

impl<'a> Turns<'a> {
    fn new(weight: &'a [u64], max_weight: u64) -> Turns<'a> {
        let equal = weight.iter().all(|&w| w == max_weight);
        let mut credit = vec![0; weight.len()];
        credit[0] = weight[0];
        Turns {
            weight,
            max_weight,
            credit,
            at: if equal { weight.len() - 1 } else { 0 },
            equal,
        }
    }

    #[inline(always)]
    fn next(&mut self) -> usize {
        if self.equal {
            self.at = if self.at + 1 == self.weight.len() {
                0
            } else {
                self.at + 1
            };
            return self.at;
        }
        while self.credit[self.at] < self.max_weight {
            self.at = if self.at + 1 == self.weight.len() {
                0
            } else {
                self.at + 1
            };
            self.credit[self.at] += self.weight[self.at];
        }
        self.credit[self.at] -= self.max_weight;
        self.at
    }
}

#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "pos, skip < size, so next < 2 * size and the result < size"
)]
fn step(pos: u32, skip: u32, size: u32) -> u32 {
    let next = pos as u64 + skip as u64;
    if next >= size as u64 {
        (next - size as u64) as u32
    } else {
        next as u32
    }
}

/// `x mod m`, which is below `m` and so fits its `u32`.
#[inline(always)]
#[allow(clippy::cast_possible_truncation, reason = "x % m < m <= u32::MAX")]
fn rem(x: u64, m: u32) -> u32 {
    (x % u64::from(m)) as u32
}

/// `x mod m` for `x < m^2` with `r = (2^64 - 1) / m`: the quotient estimate is
/// at most two short, so two conditional subtractions finish it.
#[inline(always)]
fn reduce(x: u64, m: u64, r: u64) -> u64 {
    let q = ((u128::from(x) * u128::from(r)) >> 64) as u64;
    let mut y = x - q * m;
    if y >= m {
        y -= m;
    }
    if y >= m {
        y -= m;
    }
    y
}

/// `a^-1 mod m` for prime `m` and `0 < a < m` (extended Euclid).
fn inverse_mod(a: u32, m: u32) -> u64 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    debug_assert_eq!(r0, 1, "{a} has no inverse mod {m}");
    t0.rem_euclid(i64::from(m)) as u64
}

/// The murmur3 64-bit finaliser: a bijective mix of all input bits.
#[inline(always)]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// FNV-1a over `data` from `seed`, then [`mix64`]. Fixed forever: tables and
/// flow placement depend on it.
pub fn hash_bytes(data: &[u8], seed: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325 ^ seed;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// Deterministic primality test for table sizes (trial division; sizes are
/// at most a few million, and tables are built off the packet path).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3u32;
    while (d as u64) * (d as u64) <= n as u64 {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn keys(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256).into_bytes())
            .collect()
    }

    fn build(size: u32, keys: &[Vec<u8>], weights: &[u32]) -> Maglev {
        let b: Vec<(&[u8], u32)> = keys
            .iter()
            .zip(weights)
            .map(|(k, &w)| (&k[..], w))
            .collect();
        Maglev::new(size, &b).unwrap()
    }

    fn shares(t: &Maglev, n: usize) -> Vec<f64> {
        let mut c = vec![0usize; n];
        for &s in t.slots() {
            c[usize::from(s)] += 1;
        }
        c.iter().map(|&x| x as f64 / t.size() as f64).collect()
    }

    fn assert_balanced(size: u32, weights: &[u32]) {
        let k = keys(weights.len());
        let t = build(size, &k, weights);
        assert!(
            t.slots().iter().all(|&s| usize::from(s) < weights.len()),
            "every slot filled"
        );
        let total: u32 = weights.iter().sum();
        for (i, s) in shares(&t, weights.len()).iter().enumerate() {
            let want = f64::from(weights[i]) / f64::from(total);
            assert!(
                (s - want).abs() <= 0.01 * want,
                "backend {i}: share {s:.5}, weight share {want:.5} (M={size})"
            );
        }
    }

    #[test]
    fn primes() {
        let p: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(p, vec![2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65537) && is_prime(655373) && !is_prime(65536) && !is_prime(655371));
    }

    #[test]
    fn balance_equal_weights() {
        for n in [1, 2, 3, 10, 100, 500] {
            assert_balanced(65537, &vec![1; n]);
        }
    }

    #[test]
    fn balance_mixed_weights() {
        assert_balanced(65537, &[1, 1, 2]);
        assert_balanced(65537, &(1..=10).collect::<Vec<_>>());
        assert_balanced(65537, &[100, 1, 50, 7, 3]);
    }

    #[test]
    fn weight_zero_takes_no_slot() {
        let k = keys(4);
        let t = build(251, &k, &[1, 0, 3, 1]);
        assert!(t.slots().iter().all(|&s| s != 1));
    }

    #[test]
    fn independent_of_input_order() {
        let k = keys(50);
        let w: Vec<u32> = (0..50).map(|i| 1 + i % 3).collect();
        let a = build(65537, &k, &w);
        let mut rev_k = k.clone();
        rev_k.reverse();
        let mut rev_w = w.clone();
        rev_w.reverse();
        let b = build(65537, &rev_k, &rev_w);
        for (sa, sb) in a.slots().iter().zip(b.slots()) {
            assert_eq!(
                k[usize::from(*sa)],
                rev_k[usize::from(*sb)],
                "same key in every slot"
            );
        }
    }

    /// Removing one of N backends: the measured share of slots that change,
    /// and of slots that belonged to a survivor but move to another survivor
    /// (the paper's extra disruption, which the permutation fill keeps small).
    fn removal(n: usize) -> (f64, f64) {
        let k = keys(n);
        let before = build(65537, &k, &vec![1; n]);
        let gone = n / 2;
        let rest: Vec<Vec<u8>> = k
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != gone)
            .map(|(_, k)| k.clone())
            .collect();
        let after = build(65537, &rest, &vec![1; n - 1]);
        let (mut changed, mut survivor_moved) = (0, 0);
        for (b, a) in before.slots().iter().zip(after.slots()) {
            let (kb, ka) = (&k[usize::from(*b)], &rest[usize::from(*a)]);
            if kb != ka {
                changed += 1;
                if usize::from(*b) != gone {
                    survivor_moved += 1;
                }
            }
        }
        let m = f64::from(before.size());
        (changed as f64 / m, survivor_moved as f64 / m)
    }

    #[test]
    fn removing_one_backend_moves_about_one_nth() {
        for n in [10usize, 100] {
            let (changed, extra) = removal(n);
            println!(
                "N={n}: {:.4} of slots changed (1/N = {:.4}), {:.4} moved between survivors",
                changed,
                1.0 / n as f64,
                extra
            );
            // The removed backend's own slots (1/N) must move; the rest is
            // Maglev's extra disruption, which stays a fraction of 1/N.
            assert!(
                changed >= 1.0 / n as f64 * 0.99,
                "at least the removed backend's slots"
            );
            assert!(
                extra <= 1.0 / n as f64,
                "extra disruption {extra:.4} exceeds 1/N at N={n}"
            );
        }
    }

    #[test]
    fn adding_one_backend_takes_about_one_n_plus_oneth() {
        let n = 20;
        let k = keys(n + 1);
        let before = build(65537, &k[..n], &vec![1; n]);
        let after = build(65537, &k, &vec![1; n + 1]);
        let to_new = after
            .slots()
            .iter()
            .filter(|&&s| usize::from(s) == n)
            .count() as f64
            / 65537.0;
        let changed = before
            .slots()
            .iter()
            .zip(after.slots())
            .filter(|(b, a)| b != a)
            .count() as f64
            / 65537.0;
        let want = 1.0 / (n + 1) as f64;
        assert!(
            (to_new - want).abs() < 0.01 * want,
            "new backend share {to_new}"
        );
        assert!(
            changed < 2.0 * want,
            "changed {changed:.4} vs 1/(N+1) {want:.4}"
        );
    }

    /// Golden table: a refactor that changes the hash, the fill order or the
    /// weight scheme would silently move every flow on a rolling upgrade.
    #[test]
    fn golden_table_never_changes() {
        let k = keys(5);
        let t = build(65537, &k, &[1, 2, 1, 3, 1]);
        let bytes: Vec<u8> = t.slots().iter().flat_map(|s| s.to_le_bytes()).collect();
        let digest = hash_bytes(&bytes, 0);
        let head: Vec<u16> = t.slots()[..16].to_vec();
        assert_eq!(head, GOLDEN_HEAD, "first slots");
        assert_eq!(digest, GOLDEN_DIGEST, "table digest {digest:#x}");
    }

    const GOLDEN_HEAD: [u16; 16] = [1, 3, 3, 1, 3, 4, 3, 1, 1, 3, 4, 0, 0, 3, 1, 3];
    const GOLDEN_DIGEST: u64 = 0x970f_e4b4_090a_6409;

    #[test]
    fn errors() {
        let k = keys(3);
        let b: Vec<(&[u8], u32)> = k.iter().map(|k| (&k[..], 1)).collect();
        assert_eq!(
            Maglev::new(65536, &b).unwrap_err(),
            MaglevError::NotPrime(65536)
        );
        assert_eq!(
            Maglev::new(3, &b).unwrap_err(),
            MaglevError::TooSmall {
                size: 3,
                backends: 3
            }
        );
        assert_eq!(Maglev::new(251, &[]).unwrap_err(), MaglevError::NoWeight);
        assert_eq!(
            Maglev::new(251, &[(b"a", 0)]).unwrap_err(),
            MaglevError::NoWeight
        );
        assert_eq!(
            Maglev::new(251, &[(b"a", 1), (b"a", 2)]).unwrap_err(),
            MaglevError::DuplicateKey
        );
        assert!(MaglevError::TooSmall {
            size: 3,
            backends: 3
        }
        .to_string()
        .contains("larger than the number of backends"));
    }

    #[test]
    fn lookup_spreads_hashes_over_all_slots() {
        let t = build(251, &keys(2), &[1, 1]);
        let mut seen = [false; 2];
        for h in 0..1000u64 {
            seen[usize::from(t.lookup(mix64(h)))] = true;
        }
        assert_eq!(seen, [true, true]);
        assert_eq!(t.lookup(0), t.slots()[0]);
        assert_eq!(t.lookup(u64::MAX), t.slots()[250]);
    }

    /// Build times in release mode: `cargo test --release -p lb-core maglev_build_time -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn maglev_build_time() {
        for (m, n) in [
            (65537u32, 10usize),
            (65537, 100),
            (65537, 1000),
            (655373, 1000),
        ] {
            let k = keys(n);
            let b: Vec<(&[u8], u32)> = k.iter().map(|k| (&k[..], 1)).collect();
            let start = std::time::Instant::now();
            let runs = 20;
            for _ in 0..runs {
                std::hint::black_box(Maglev::new(m, &b).unwrap());
            }
            println!(
                "M={m} N={n}: {:.3} ms per build",
                start.elapsed().as_secs_f64() * 1e3 / runs as f64
            );
        }
    }

    /// The paper's fill as written: probe each walk's permutation until a
    /// free slot. `Maglev::fill` must produce exactly this table.
    fn reference(size: u32, backends: &[(&[u8], u32)]) -> Vec<u16> {
        let order = Maglev::check(size, backends).unwrap();
        let max_weight = u64::from(backends.iter().map(|b| b.1).max().unwrap());
        let m = u64::from(size);
        let mut walks: Vec<(u16, u32, u32, u64, u64)> = order
            .iter()
            .map(|&i| {
                let key = backends[i].0;
                let pos = u32::try_from(hash_bytes(key, SEED_OFFSET) % m).unwrap();
                let skip = u32::try_from(hash_bytes(key, SEED_SKIP) % (m - 1) + 1).unwrap();
                (
                    u16::try_from(i).unwrap(),
                    pos,
                    skip,
                    u64::from(backends[i].1),
                    0,
                )
            })
            .collect();
        let mut table = vec![EMPTY; size as usize];
        let mut filled = 0;
        loop {
            for (index, pos, skip, weight, credit) in &mut walks {
                *credit += *weight;
                while *credit >= max_weight {
                    *credit -= max_weight;
                    while table[*pos as usize] != EMPTY {
                        *pos = (*pos + *skip) % size;
                    }
                    table[*pos as usize] = *index;
                    *pos = (*pos + *skip) % size;
                    filled += 1;
                    if filled == size {
                        return table;
                    }
                }
            }
        }
    }

    #[test]
    fn fill_matches_reference_at_full_sizes() {
        let k = keys(1000);
        let w: Vec<u32> = (0..1000).map(|i| 1 + i % 7).collect();
        let b: Vec<(&[u8], u32)> = k.iter().zip(&w).map(|(k, &w)| (&k[..], w)).collect();
        for (m, n) in [(65537, 10), (65537, 1000), (655373, 100)] {
            let t = Maglev::new(m, &b[..n]).unwrap();
            assert!(t.slots() == reference(m, &b[..n]), "M={m} N={n}");
        }
    }

    #[test]
    fn inverses() {
        for m in [2u32, 3, 251, 65537, 655373] {
            for a in [1, 2, m / 2, m - 1] {
                if a > 0 && a < m {
                    assert_eq!(
                        u64::from(a) * inverse_mod(a, m) % u64::from(m),
                        1,
                        "{a} mod {m}"
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn fill_matches_reference(
            weights in proptest::collection::vec(0u32..6, 1..40),
            size in prop::sample::select(vec![41u32, 251, 1009, 4099, 10007]),
            seed in any::<u64>(),
        ) {
            prop_assume!(weights.iter().any(|&w| w > 0) && (size as usize) > weights.len());
            let k: Vec<Vec<u8>> = (0..weights.len()).map(|i| (seed ^ i as u64).to_le_bytes().to_vec()).collect();
            let b: Vec<(&[u8], u32)> = k.iter().zip(&weights).map(|(k, &w)| (&k[..], w)).collect();
            let t = Maglev::new(size, &b).unwrap();
            prop_assert_eq!(t.slots(), &reference(size, &b)[..]);
        }

        #[test]
        fn any_backend_set_fills_every_slot_deterministically(
            weights in proptest::collection::vec(0u32..5, 1..30),
            seed in any::<u64>(),
        ) {
            prop_assume!(weights.iter().any(|&w| w > 0));
            let k: Vec<Vec<u8>> = (0..weights.len()).map(|i| (seed ^ i as u64).to_le_bytes().to_vec()).collect();
            let t = build(1009, &k, &weights);
            for &s in t.slots() {
                prop_assert!(usize::from(s) < weights.len());
                prop_assert!(weights[usize::from(s)] > 0, "weight-0 backend in the table");
            }
            let mut rk = k.clone(); rk.reverse();
            let mut rw = weights.clone(); rw.reverse();
            let r = build(1009, &rk, &rw);
            for (a, b) in t.slots().iter().zip(r.slots()) {
                prop_assert_eq!(&k[usize::from(*a)], &rk[usize::from(*b)]);
            }
        }
    }
}
