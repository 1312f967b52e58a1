//! Maglev consistent hashing (Eisenbud et al., NSDI 2016) that fills a VIP's lookup table.
//!
//! The kernel only reads the table (slot = flow hash % M); userspace fills it with [`populate`].
//! Two properties matter, and both are why this is Maglev and not `hash % N`:
//!
//! - Gateways behind ECMP must agree. A flow that a router rehashes to another gateway must still
//!   reach the same backend, so every gateway, on any host and in any sluice version, must build
//!   a bit-identical table from the same backends, weights, seed and table size. The permutation
//!   hashes, the backend sort order and the fill order are part of that contract and are frozen
//!   by the tests below; changing any of them breaks agreement between gateways during a rolling
//!   upgrade.
//! - A backend change moves few flows: removing one of N backends changes the owner of roughly
//!   1/N of the slots, not all of them, so flows without conntrack state here (rehashed from
//!   another gateway, or evicted from the LRU) mostly keep their backend.
//!
//! lb-common has no allocator, so the caller passes the table and per-backend scratch space.

use core::cmp::Ordering;
use core::fmt;

use crate::maps::{DEFAULT_RING_SIZE, NO_BACKEND};

/// Smallest table size: with M = 2 every skip is 1, so all preference lists are rotations of
/// one another and Maglev degenerates to `hash % 2`.
pub const MIN_TABLE_SIZE: u32 = 3;
/// Largest table size: the largest prime below 2^24. A table that size is 64 MiB of ring slots
/// per VIP, far beyond what even `MAX_BACKENDS` backends need for even shares (M > 100·N), so
/// anything larger is a configuration mistake rather than a need.
pub const MAX_TABLE_SIZE: u32 = 16_777_213;

/// Whether `n` is prime. Trial division is enough: table sizes are checked once per
/// configuration change, and `MAX_TABLE_SIZE` takes about 1,400 divisions.
pub const fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    if n.is_multiple_of(3) {
        return n == 3;
    }
    // Every prime above 3 is 6k ± 1. `i <= n / i` instead of `i * i <= n` cannot overflow.
    let mut i = 5;
    while i <= n / i {
        if n.is_multiple_of(i) || n.is_multiple_of(i + 2) {
            return false;
        }
        i += 6;
    }
    true
}

/// Checks that `m` can be a Maglev table size.
///
/// M must be prime so that every skip in `1..M` is coprime with M, which is what makes each
/// backend's preference list a permutation of all slots (and the fill terminate).
pub fn check_table_size(m: u32) -> Result<(), MaglevError> {
    if m < MIN_TABLE_SIZE {
        Err(MaglevError::TooSmall { size: m })
    } else if m > MAX_TABLE_SIZE {
        Err(MaglevError::TooLarge { size: m })
    } else if !is_prime(m) {
        Err(MaglevError::NotPrime { size: m })
    } else {
        Ok(())
    }
}

/// Why a table could not be built. Every variant is a configuration or caller error; the table
/// is left untouched when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaglevError {
    /// Table size is not prime.
    NotPrime { size: u32 },
    /// Table size is below [`MIN_TABLE_SIZE`].
    TooSmall { size: u32 },
    /// Table size is above [`MAX_TABLE_SIZE`] (saturated to `u32::MAX` if the table slice is
    /// longer than that).
    TooLarge { size: u32 },
    /// The scratch slice is shorter than the backend list.
    ScratchTooSmall { needed: usize, got: usize },
    /// At least as many backends with a non-zero weight as table slots: some would get no slot.
    TooManyBackends { backends: usize, size: u32 },
    /// Backend `index` (position in the caller's slice) uses [`NO_BACKEND`] as its value, which
    /// marks empty slots and so cannot be written as an owner.
    ReservedValue { index: usize },
}

impl fmt::Display for MaglevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::NotPrime { size } => write!(
                f,
                "Maglev table size {size} is not prime; use a prime such as {}",
                suggested_prime(size)
            ),
            Self::TooSmall { size } => write!(
                f,
                "Maglev table size {size} is too small; use a prime of at least {MIN_TABLE_SIZE} \
                 and over 100 times the number of backends (the default is {DEFAULT_RING_SIZE})"
            ),
            Self::TooLarge { size } => write!(
                f,
                "Maglev table size {size} is too large; the maximum is {MAX_TABLE_SIZE} \
                 (the default is {DEFAULT_RING_SIZE})"
            ),
            Self::ScratchTooSmall { needed, got } => write!(
                f,
                "Maglev scratch space has {got} entries but {needed} backends were given; \
                 pass a scratch slice at least as long as the backend list"
            ),
            Self::TooManyBackends { backends, size } => write!(
                f,
                "{backends} weighted backends do not fit a Maglev table of {size} slots; use a \
                 prime table size over 100 times the number of backends, such as {}",
                suggested_prime(
                    u32::try_from(backends.saturating_mul(100)).unwrap_or(MAX_TABLE_SIZE)
                )
            ),
            Self::ReservedValue { index } => write!(
                f,
                "backend #{index} has value {NO_BACKEND}, which marks empty Maglev slots; \
                 give it another id"
            ),
        }
    }
}

impl core::error::Error for MaglevError {}

/// The smallest allowed prime at or above `size`, for error messages.
const fn suggested_prime(size: u32) -> u32 {
    if size <= MIN_TABLE_SIZE {
        return MIN_TABLE_SIZE;
    }
    if size >= MAX_TABLE_SIZE {
        return MAX_TABLE_SIZE;
    }
    // Terminates: MAX_TABLE_SIZE is prime.
    let mut p = size;
    while !is_prime(p) {
        p += 1;
    }
    p
}

/// One backend as Maglev sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaglevBackend<'a> {
    /// Stable identity that decides the backend's slot preferences: its address octets (4 or
    /// 16 bytes, network order), optionally followed by port bytes. It must not be a local index
    /// or list position, which differ between gateways.
    pub identity: &'a [u8],
    /// Relative share of the slots; 0 takes no slots (e.g. a drained backend).
    pub weight: u32,
    /// What is written into the backend's slots (its backend id). Must not be [`NO_BACKEND`].
    pub value: u32,
}

/// Per-backend working state of [`populate`]; the caller provides it so that no allocation is
/// needed. Its contents are meaningless between calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct MaglevScratch {
    /// Slot credit accumulated from the backend's weight (weighted round robin).
    credit: u64,
    /// Position of the backend in the caller's slice.
    index: usize,
    /// The next slot of the backend's preference list to try: starts at its offset and
    /// advances by `skip` modulo M.
    slot: u32,
    /// Step between consecutive slots of the preference list (`1..M`).
    skip: u32,
    /// Copied from the backend so that the fill loop reads only this struct.
    weight: u32,
    value: u32,
}

/// Domain separation bytes, so the offset and skip hashes are independent functions.
const DOMAIN_OFFSET: u8 = 1;
const DOMAIN_SKIP: u8 = 2;
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The permutation hash: FNV-1a 64 over `domain || seed (4 bytes, little-endian) || identity`,
/// then the splitmix64 finaliser (FNV alone mixes its last bytes poorly, and identities that
/// differ only in their last octet are the common case).
///
/// Fully specified and byte-oriented so it gives the same value on every host. Changing anything
/// here changes every table, and gateways running different versions then disagree on where flows
/// go.
fn permutation_hash(domain: u8, seed: u32, identity: &[u8]) -> u64 {
    let fnv = |h: u64, byte: &u8| (h ^ u64::from(*byte)).wrapping_mul(FNV_PRIME);
    let mut h = fnv(FNV_OFFSET_BASIS, &domain);
    h = seed.to_le_bytes().iter().fold(h, fnv);
    h = identity.iter().fold(h, fnv);
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[expect(
    clippy::cast_possible_truncation,
    reason = "the remainder is below `m`, which is a u32"
)]
fn reduce(h: u64, m: u32) -> u32 {
    (h % u64::from(m)) as u32
}

/// The slot after `slot` in a preference list: `(slot + skip) % m`, without a division.
///
/// The `j`-th slot of a preference list is `(offset + j * skip) % m`; stepping from one to the
/// next adds `skip` and wraps once at most, because both are below `m`. This is the same
/// sequence as the formula (the frozen tables below pin it) at a fraction of the cost: the
/// fill makes about `M ln M` steps (some 730,000 for the default M), and a 64-bit division
/// per step was most of the build time.
fn next_slot(slot: u32, skip: u32, m: u32) -> u32 {
    // `slot < m` and `skip < m` with `m <= MAX_TABLE_SIZE < 2^24`: the sum cannot overflow.
    let next = slot + skip;
    if next >= m {
        next - m
    } else {
        next
    }
}

/// The order in which backends take turns. It depends only on what the backends are, never on
/// where they sit in the caller's slice: gateways may list backends in different orders (config
/// file order, map iteration order) and must still build the same table. Weight is the last tie
/// breaker so that entries comparing equal are identical and their relative order cannot matter.
fn turn_order(a: &MaglevBackend<'_>, b: &MaglevBackend<'_>) -> Ordering {
    a.identity
        .cmp(b.identity)
        .then(a.value.cmp(&b.value))
        .then(a.weight.cmp(&b.weight))
}

/// Fills `table` (whose length is the table size M) with the backends' values.
///
/// Each backend's preference list is the permutation `(offset + j * skip) % M` with offset and
/// skip derived from its identity and `seed` only (so adding or removing another backend leaves
/// its preferences unchanged). Backends take turns sorted by (identity, value, weight), so the
/// order of `backends` does not matter: gateways may list them in different orders and still
/// build the same table. On each turn a backend earns credit equal to its weight and, once it
/// has the largest weight's worth, claims its next preferred slot that is still free. Shares are
/// therefore proportional to weight: with N backends of nonzero weight summing to W, a backend
/// of weight w gets `M * w / W` slots give or take `1 + N * w / W` (the rounding of every
/// backend's count in the last, partial round; 2 slots at equal weights). A backend whose share
/// is under one slot may get none.
///
/// `seed` lets VIPs that share backends get unrelated tables; every gateway must use the same
/// seed for a VIP. No backends, or only zero weights, gives a table of [`NO_BACKEND`].
///
/// The fill takes about `N * M * max_weight / total_weight` turns, i.e. `M` at equal weights;
/// one heavy backend among many light ones multiplies that by up to N.
///
/// `scratch` must be at least as long as `backends`. On error the table is not modified.
pub fn populate(
    backends: &[MaglevBackend<'_>],
    seed: u32,
    table: &mut [u32],
    scratch: &mut [MaglevScratch],
) -> Result<(), MaglevError> {
    let m = u32::try_from(table.len()).unwrap_or(u32::MAX);
    check_table_size(m)?;
    if scratch.len() < backends.len() {
        return Err(MaglevError::ScratchTooSmall {
            needed: backends.len(),
            got: scratch.len(),
        });
    }
    if let Some(index) = backends.iter().position(|b| b.value == NO_BACKEND) {
        return Err(MaglevError::ReservedValue { index });
    }
    let active = backends.iter().filter(|b| b.weight > 0).count();
    // With N >= M some backend could get no slot even at equal weights.
    if active >= table.len() {
        return Err(MaglevError::TooManyBackends {
            backends: active,
            size: m,
        });
    }

    table.fill(NO_BACKEND);
    if active == 0 {
        return Ok(());
    }

    let scratch = &mut scratch[..active];
    let weighted = backends.iter().enumerate().filter(|(_, b)| b.weight > 0);
    for (s, (index, b)) in scratch.iter_mut().zip(weighted) {
        *s = MaglevScratch {
            credit: 0,
            index,
            slot: reduce(permutation_hash(DOMAIN_OFFSET, seed, b.identity), m),
            skip: reduce(permutation_hash(DOMAIN_SKIP, seed, b.identity), m - 1) + 1,
            weight: b.weight,
            value: b.value,
        };
    }
    scratch.sort_unstable_by(|a, b| turn_order(&backends[a.index], &backends[b.index]));

    // Every turn of the heaviest backend claims a slot, so each round makes progress; each claim
    // finds a free slot because a preference list covers all M slots and some are still free.
    let max_weight = backends
        .iter()
        .map(|b| u64::from(b.weight))
        .max()
        .unwrap_or(1);
    let mut filled = 0;
    loop {
        for s in scratch.iter_mut() {
            // Credit stays below 2 * max_weight, so at most one claim per turn.
            s.credit += u64::from(s.weight);
            if s.credit < max_weight {
                continue;
            }
            s.credit -= max_weight;
            // Terminates: the list visits every slot, and one is still free (`filled < M`).
            let slot = loop {
                let slot = s.slot as usize;
                s.slot = next_slot(s.slot, s.skip, m);
                if table[slot] == NO_BACKEND {
                    break slot;
                }
            };
            table[slot] = s.value;
            filled += 1;
            if filled == table.len() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;
    use std::vec;
    use std::vec::Vec;

    use super::*;

    const M: u32 = DEFAULT_RING_SIZE;

    /// Identities like the daemon builds: IPv4 octets followed by a big-endian port.
    fn identities(n: usize) -> Vec<[u8; 6]> {
        (0..n)
            .map(|i| {
                let [hi, lo] = u16::try_from(i).unwrap().to_be_bytes();
                [10, 1, hi, lo, 0x1f, 0x90]
            })
            .collect()
    }

    fn backends<'a>(ids: &'a [[u8; 6]], weights: &[u32]) -> Vec<MaglevBackend<'a>> {
        ids.iter()
            .zip(weights)
            .enumerate()
            .map(|(i, (id, &weight))| MaglevBackend {
                identity: id,
                weight,
                value: u32::try_from(i).unwrap(),
            })
            .collect()
    }

    fn build(backends: &[MaglevBackend<'_>], seed: u32, m: u32) -> Vec<u32> {
        let mut table = vec![0; m as usize];
        let mut scratch = vec![MaglevScratch::default(); backends.len()];
        populate(backends, seed, &mut table, &mut scratch).unwrap();
        table
    }

    fn counts(table: &[u32], n: usize) -> Vec<u32> {
        let mut c = vec![0; n];
        for &v in table {
            c[v as usize] += 1;
        }
        c
    }

    /// Worst |actual - expected| / expected over all backends.
    fn worst_share_deviation(table: &[u32], weights: &[u32]) -> f64 {
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let c = counts(table, weights.len());
        let len = f64::from(u32::try_from(table.len()).unwrap());
        weights
            .iter()
            .zip(&c)
            .map(|(&w, &got)| {
                let expected = len * f64::from(w) / total;
                (f64::from(got) - expected).abs() / expected
            })
            .fold(0.0, f64::max)
    }

    fn fnv1a_u32s(table: &[u32]) -> u64 {
        table
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .fold(FNV_OFFSET_BASIS, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
            })
    }

    /// Deterministic Fisher-Yates shuffle (lb-common has no `rand` dev-dependency).
    fn shuffle<T>(items: &mut [T], mut state: u64) {
        for i in (1..items.len()).rev() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let j = usize::try_from((state >> 33) % (i as u64 + 1)).unwrap();
            items.swap(i, j);
        }
    }

    #[test]
    fn primes() {
        for n in [0, 1, 4, 6, 9, 25, 65535, 65536, 16_777_215, u32::MAX] {
            assert!(!is_prime(n), "{n}");
        }
        for n in [2, 3, 5, 7, 13, 251, 65537, MAX_TABLE_SIZE, 4_294_967_291] {
            assert!(is_prime(n), "{n}");
        }
        // Cross-check trial division against a sieve.
        let mut sieve = vec![true; 10_000];
        sieve[0] = false;
        sieve[1] = false;
        for i in 2..100 {
            if sieve[i] {
                for k in (i * i..sieve.len()).step_by(i) {
                    sieve[k] = false;
                }
            }
        }
        for (n, &p) in sieve.iter().enumerate() {
            assert_eq!(is_prime(u32::try_from(n).unwrap()), p, "{n}");
        }
        // MAX_TABLE_SIZE is the largest prime below 2^24.
        assert!(((MAX_TABLE_SIZE + 1)..(1 << 24)).all(|n| !is_prime(n)));
    }

    #[test]
    fn table_sizes() {
        assert_eq!(check_table_size(0), Err(MaglevError::TooSmall { size: 0 }));
        assert_eq!(check_table_size(1), Err(MaglevError::TooSmall { size: 1 }));
        assert_eq!(check_table_size(2), Err(MaglevError::TooSmall { size: 2 }));
        assert_eq!(check_table_size(4), Err(MaglevError::NotPrime { size: 4 }));
        assert_eq!(
            check_table_size(65535),
            Err(MaglevError::NotPrime { size: 65535 })
        );
        assert_eq!(
            check_table_size(65536),
            Err(MaglevError::NotPrime { size: 65536 })
        );
        assert_eq!(
            check_table_size(16_777_259),
            Err(MaglevError::TooLarge { size: 16_777_259 })
        );
        for m in [3, 13, 251, 65537, MAX_TABLE_SIZE] {
            assert_eq!(check_table_size(m), Ok(()), "{m}");
        }
    }

    #[test]
    fn error_messages_suggest_a_fix() {
        assert_eq!(
            MaglevError::NotPrime { size: 65536 }.to_string(),
            "Maglev table size 65536 is not prime; use a prime such as 65537"
        );
        assert!(MaglevError::NotPrime { size: 1000 }
            .to_string()
            .ends_with("such as 1009"));
        assert!(MaglevError::TooManyBackends {
            backends: 20,
            size: 13
        }
        .to_string()
        .ends_with("such as 2003"));
        assert!(MaglevError::ScratchTooSmall { needed: 5, got: 2 }
            .to_string()
            .contains("2 entries but 5 backends"));
    }

    #[test]
    fn errors_are_returned_not_panics() {
        let ids = identities(3);
        let b = backends(&ids, &[1, 1, 1]);
        let mut scratch = [MaglevScratch::default(); 3];

        let mut table = [7; 13];
        let mut short = [MaglevScratch::default(); 2];
        assert_eq!(
            populate(&b, 0, &mut table, &mut short),
            Err(MaglevError::ScratchTooSmall { needed: 3, got: 2 })
        );
        assert_eq!(table, [7; 13], "table untouched on error");

        for (len, err) in [
            (0, MaglevError::TooSmall { size: 0 }),
            (2, MaglevError::TooSmall { size: 2 }),
            (12, MaglevError::NotPrime { size: 12 }),
            (1000, MaglevError::NotPrime { size: 1000 }),
        ] {
            let mut table = vec![7; len];
            assert_eq!(populate(&b, 0, &mut table, &mut scratch), Err(err));
            assert!(table.iter().all(|&v| v == 7));
        }
        // Checked before anything else, even with no backends.
        assert_eq!(
            populate(&[], 0, &mut [0; 4], &mut []),
            Err(MaglevError::NotPrime { size: 4 })
        );

        let mut table = [0; 3];
        assert_eq!(
            populate(&b, 0, &mut table, &mut scratch),
            Err(MaglevError::TooManyBackends {
                backends: 3,
                size: 3
            })
        );
        // Zero weights do not count towards N.
        let mut two = b.clone();
        two[0].weight = 0;
        populate(&two, 0, &mut table, &mut scratch).unwrap();
        assert!(!table.contains(&0) && table.contains(&1) && table.contains(&2));

        let mut reserved = b.clone();
        reserved[1].value = NO_BACKEND;
        assert_eq!(
            populate(&reserved, 0, &mut [0; 13], &mut scratch),
            Err(MaglevError::ReservedValue { index: 1 })
        );
    }

    #[test]
    fn empty_and_zero_weight() {
        let mut table = [0; 13];
        populate(&[], 0, &mut table, &mut []).unwrap();
        assert_eq!(table, [NO_BACKEND; 13]);

        let ids = identities(3);
        let b = backends(&ids, &[0, 0, 0]);
        let mut table = [0; 13];
        populate(&b, 0, &mut table, &mut [MaglevScratch::default(); 3]).unwrap();
        assert_eq!(table, [NO_BACKEND; 13]);

        let b = backends(&ids, &[5, 0, 5]);
        let table = build(&b, 0, M);
        assert_eq!(counts(&table, 3), [32769, 0, 32768]);
    }

    #[test]
    fn every_slot_filled_when_n_is_close_to_m() {
        let ids = identities(12);
        let table = build(&backends(&ids, &[1; 12]), 7, 13);
        let c = counts(&table, 12);
        assert!(c.iter().all(|&n| n >= 1), "{c:?}");
    }

    #[test]
    fn equal_shares() {
        let ids = identities(10);
        let weights = [1; 10];
        let table = build(&backends(&ids, &weights), 0, M);
        let worst = worst_share_deviation(&table, &weights);
        std::println!("equal weights, N=10, M={M}: worst share deviation {worst:.6}");
        assert!(worst <= 0.01, "{worst}");
    }

    #[test]
    fn weighted_shares() {
        let ids = identities(20);
        for weights in [
            (1..=10).collect::<Vec<u32>>(),
            (1..=20).collect(),
            vec![1, 100, 1, 100, 50],
            vec![u32::MAX, u32::MAX - 1, u32::MAX / 2, 1 << 31],
        ] {
            let table = build(&backends(&ids, &weights), 0, M);
            let worst = worst_share_deviation(&table, &weights);
            std::println!("weights {weights:?}: worst share deviation {worst:.6}");
            assert!(worst <= 0.01, "{weights:?}: {worst}");
        }
    }

    #[test]
    fn removing_a_backend_moves_few_slots() {
        // Disruption = fraction of all M slots whose owner changed when one backend is removed:
        // the removed backend's own slots (~1/N) plus any slot reshuffled between survivors.
        // It must stay within 1/N + 0.01 (issue 14 sets that bound up to N = 1000). Up to
        // N = 20 every backend is tried as the one removed; beyond, ten spread over the list
        // (each try is a full build).
        for n in [5_u32, 10, 20, 100, 1000] {
            let ids = identities(n as usize);
            let all = backends(&ids, &vec![1; n as usize]);
            let before = build(&all, 0, M);
            let bound = 1.0 / f64::from(n) + 0.01;
            let mut worst = 0.0_f64;
            let step = if n <= 20 { 1 } else { n as usize / 10 };
            for removed in (0..n as usize).step_by(step) {
                let mut rest = all.clone();
                rest.remove(removed);
                let after = build(&rest, 0, M);
                let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let frac = f64::from(u32::try_from(changed).unwrap()) / f64::from(M);
                assert!(frac <= bound, "N={n} removed {removed}: {frac} > {bound}");
                worst = worst.max(frac);
            }
            std::println!(
                "N={n}: worst disruption {worst:.6} (1/N = {:.6})",
                1.0 / f64::from(n)
            );
        }
    }

    /// Maglev bounds disruption on average, not for every backend set: two backends whose
    /// preference lists are arithmetic progressions with equal (or simply related) skips walk
    /// the same cycle, and removing a third reshuffles their interleaving. Over random small
    /// sets (where that matters most) the extra disruption beyond 1/N stays under 0.2 % on
    /// average and within 1 % for at least 99 % of sets; the worst sets seen moved up to 19 %
    /// more (N = 3, two equal skips out of 65536), as with any Maglev built this way (Katran's
    /// too). The sets are seeded, so this pins the behaviour rather than sampling it.
    #[test]
    fn removing_a_backend_from_random_small_sets_moves_little_on_average() {
        const SETS: usize = 300;
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 16
        };
        for n in [3_usize, 4, 5] {
            let (mut within, mut extra_sum) = (0, 0.0);
            for _ in 0..SETS {
                let ids: Vec<[u8; 6]> = (0..n)
                    .map(|_| {
                        let mut id = [0; 6];
                        id.copy_from_slice(&next().to_le_bytes()[..6]);
                        id
                    })
                    .collect();
                let seed = u32::try_from(next() & 0xffff_ffff).unwrap();
                let all = backends(&ids, &vec![1; n]);
                let before = build(&all, seed, M);
                let mut rest = all.clone();
                rest.remove(usize::try_from(next()).unwrap() % n);
                let after = build(&rest, seed, M);
                let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count();
                let extra = f64::from(u32::try_from(changed).unwrap()) / f64::from(M)
                    - 1.0 / f64::from(u32::try_from(n).unwrap());
                extra_sum += extra;
                if extra <= 0.01 {
                    within += 1;
                }
            }
            let mean = extra_sum / f64::from(u32::try_from(SETS).unwrap());
            assert!(mean <= 0.002, "N={n}: mean extra disruption {mean}");
            assert!(
                within * 100 >= SETS * 99,
                "N={n}: {within} of {SETS} within 1 %"
            );
        }
    }

    #[test]
    fn order_independent() {
        let ids = identities(20);
        let weights: Vec<u32> = (1..=20).collect();
        let mut b = backends(&ids, &weights);
        // Same identity twice with different values: ordered by value.
        b.push(MaglevBackend {
            identity: &ids[3],
            weight: 2,
            value: 100,
        });
        let reference = build(&b, 9, 65537);
        b.reverse();
        assert_eq!(build(&b, 9, 65537), reference);
        for state in 1..5 {
            shuffle(&mut b, state);
            assert_eq!(build(&b, 9, 65537), reference, "shuffle {state}");
        }
    }

    #[test]
    fn stepping_walks_the_preference_formula() {
        // `next_slot` must give `(offset + j * skip) % m` for every j, including at the
        // largest table size where `slot + skip` comes closest to overflowing.
        for (m, offset, skip) in [
            (13, 0, 1),
            (13, 12, 12),
            (65_537, 65_536, 65_535),
            (MAX_TABLE_SIZE, MAX_TABLE_SIZE - 1, MAX_TABLE_SIZE - 1),
            (MAX_TABLE_SIZE, 7, 9_999_991),
        ] {
            let mut slot = offset;
            for j in 0..3 * u64::from(m.min(100_000)) {
                let formula = (u64::from(offset) + j * u64::from(skip)) % u64::from(m);
                assert_eq!(
                    u64::from(slot),
                    formula,
                    "m={m} offset={offset} skip={skip} j={j}"
                );
                slot = next_slot(slot, skip, m);
            }
        }
    }

    #[test]
    fn seed_changes_the_table() {
        let ids = identities(5);
        let b = backends(&ids, &[1; 5]);
        assert_ne!(build(&b, 0, 251), build(&b, 1, 251));
    }

    // Gateways of different versions must agree on where every flow goes: an accidental change
    // of the mapping (hashes, sort order, fill order) must fail CI. Never update these values
    // without a plan for mixed-version gateways.
    const FROZEN_IDS: [[u8; 4]; 3] = [[198, 18, 10, 2], [198, 18, 11, 2], [198, 18, 12, 2]];
    // Cross-checked against an independent Python implementation of the documented algorithm.
    const FROZEN_HASHES: [u64; 2] = [9_153_275_010_413_960_389, 11_125_512_841_766_104_597];
    const FROZEN_TABLE_13: [u32; 13] = [2, 0, 0, 1, 2, 0, 0, 2, 1, 1, 1, 0, 2];
    /// FNV-1a 64 over the table's u32s as little-endian bytes.
    const FROZEN_CHECKSUM_65537: u64 = 17_458_717_064_686_685_623;
    /// Same, with weights 1, 2, 3 and seed 7 (freezes the weighted fill and the seed's use).
    const FROZEN_CHECKSUM_WEIGHTED: u64 = 13_530_214_996_574_800_517;

    fn frozen_backends(weights: [u32; 3]) -> Vec<MaglevBackend<'static>> {
        FROZEN_IDS
            .iter()
            .zip(weights)
            .zip(0..)
            .map(|((id, weight), value)| MaglevBackend {
                identity: id,
                weight,
                value,
            })
            .collect()
    }

    #[test]
    fn frozen() {
        let b = frozen_backends([1, 1, 1]);
        let hashes = [
            permutation_hash(DOMAIN_OFFSET, 0, &FROZEN_IDS[0]),
            permutation_hash(DOMAIN_SKIP, 0, &FROZEN_IDS[0]),
        ];
        assert_eq!(hashes, FROZEN_HASHES);
        assert_eq!(build(&b, 0, 13), FROZEN_TABLE_13);
        assert_eq!(fnv1a_u32s(&build(&b, 0, 65537)), FROZEN_CHECKSUM_65537);
        let weighted = build(&frozen_backends([1, 2, 3]), 7, 65537);
        assert_eq!(fnv1a_u32s(&weighted), FROZEN_CHECKSUM_WEIGHTED);
        assert_eq!(counts(&weighted, 3), [10923, 21846, 32768]);
    }
}
