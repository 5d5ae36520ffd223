//! Slot filling: on each turn a backend takes the first still-empty slot of
//! its permutation `offset, offset + skip, offset + 2 skip, ... (mod m)`.
//!
//! The permutation is never materialised. Each backend keeps a cursor into
//! it (O(n) state) and steps with an add and a conditional subtract. Which
//! slots are taken lives in a bitset (m / 8 bytes: 8 KiB for m = 65537, so it
//! stays in L1) rather than in the table, which is only ever written.
//!
//! The classic cost problem is the tail: with `r` slots left a probe hits an
//! empty slot with probability `r / m`, so walking costs `m / r` probes per
//! turn and `m * ln m` overall, most of it in the last few hundred slots.
//! Once few slots are left we switch to the inverse view: slot `s` sits at
//! position `j = (s - offset) * skip^-1 mod m` of a backend's permutation
//! (`m` is prime, so `skip` is invertible), and every position before the
//! cursor is already filled, so the backend's next slot is the empty slot of
//! smallest `j`. That costs `r` multiply-reduce steps per turn instead of
//! about `m / r` probes, and gives exactly the same table.

/// Where a backend's permutation starts and how it steps, and what the
/// table stores for its slots.
#[derive(Debug, Clone, Copy)]
pub(super) struct Permutation {
    pub offset: u32,
    pub skip: u32,
    pub label: u32,
}

/// Per-backend walking state: next candidate slot, step, table entry.
#[derive(Debug, Clone, Copy)]
struct Walk {
    cursor: u32,
    skip: u32,
    label: u32,
}

/// Fills a table of prime size `m`: on each of the `m` turns yielded by
/// `turns` (positions in `perms`), that backend claims its next empty slot,
/// which gets the backend's `label`. Every `offset < m`, `0 < skip < m`.
pub(super) fn fill(perms: &[Permutation], m: u32, turns: impl Iterator<Item = u32>) -> Vec<u32> {
    fill_with_tail_at(perms, m, turns, tail_threshold(m))
}

/// [`fill`] switching to the inverse view when `tail_at` slots are left;
/// separate so tests can check both views give the same table.
pub(super) fn fill_with_tail_at(
    perms: &[Permutation],
    m: u32,
    mut turns: impl Iterator<Item = u32>,
    tail_at: u32,
) -> Vec<u32> {
    let mut table = vec![super::NO_BACKEND; m as usize];
    let mut filled = Bitset::new(m);
    let mut walks: Vec<Walk> = perms
        .iter()
        .map(|p| Walk {
            cursor: p.offset,
            skip: p.skip,
            label: p.label,
        })
        .collect();

    let walked = m - tail_at.min(m);
    walk_phase(
        &mut table,
        &mut filled,
        &mut walks,
        m,
        turns.by_ref().take(walked as usize),
    );

    let mut tail = Tail::new(&filled, perms.len(), m);
    for b in turns {
        let perm = perms[b as usize];
        let slot = tail.take(b, perm);
        table[slot as usize] = perm.label;
    }
    table
}

/// Plays `turns` by walking. Kept as its own small function so the hot loop
/// has few live values (all in registers) and nothing of the tail around it.
#[inline(never)]
fn walk_phase(
    table: &mut [u32],
    filled: &mut Bitset,
    walks: &mut [Walk],
    m: u32,
    turns: impl Iterator<Item = u32>,
) {
    for b in turns {
        let walk = &mut walks[b as usize];
        let slot = advance(filled, walk, m);
        filled.insert(slot);
        table[slot as usize] = walk.label;
    }
}

/// Advances `walk` to its first empty slot and returns it; the cursor moves
/// past it.
#[inline(always)]
fn advance(filled: &Bitset, walk: &mut Walk, m: u32) -> u32 {
    let Walk { cursor, skip, .. } = *walk;
    let add = |c: u32, step: u32| add_mod(c, step, m);
    // Four probes per iteration, combined into a mask without branches.
    // Probe outcomes are close to coin flips for most of the fill, so a
    // branch per probe mispredicts often; here only the loop exit can, and
    // the four bitset loads run in parallel.
    let skip2 = add(skip, skip);
    let skip3 = add(skip2, skip);
    let skip4 = add(skip2, skip2);
    let mut c = cursor;
    let slot = loop {
        let probes = [c, add(c, skip), add(c, skip2), add(c, skip3)];
        let taken = filled.bit(probes[0])
            | filled.bit(probes[1]) << 1
            | filled.bit(probes[2]) << 2
            | filled.bit(probes[3]) << 3;
        let free = !taken & 0b1111;
        if free != 0 {
            // trailing_zeros of a nonzero 4-bit mask is < 4.
            break probes[(free.trailing_zeros() & 3) as usize];
        }
        c = add(c, skip4);
    };
    walk.cursor = add(slot, skip);
    slot
}

/// `(c + step) mod m` for `c < m`, `step <= m`, `m < 2^31` (so the sum
/// cannot overflow).
///
/// Whether the sum wraps is a coin flip, and LLVM otherwise likes to turn
/// this into a branch, which then mispredicts on every other probe; forcing
/// a conditional move halved the build time.
#[inline(always)]
fn add_mod(c: u32, step: u32, m: u32) -> u32 {
    let next = c + step;
    std::hint::select_unpredictable(next >= m, next.wrapping_sub(m), next)
}

/// Which slots are taken, one bit each.
struct Bitset(Vec<u64>);

impl Bitset {
    fn new(bits: u32) -> Self {
        Bitset(vec![0; (bits as usize).div_ceil(64)])
    }

    /// 1 if `bit` is set, else 0.
    #[inline(always)]
    fn bit(&self, bit: u32) -> u32 {
        ((self.0[bit as usize / 64] >> (bit % 64)) & 1) as u32
    }

    /// All clear bits below `bits`, ascending, a word at a time.
    fn clear_bits(&self, bits: u32) -> Vec<u32> {
        let mut clear = Vec::new();
        for (w, &word) in self.0.iter().enumerate() {
            let mut free = !word;
            while free != 0 {
                let bit = (w * 64) as u32 + free.trailing_zeros();
                if bit >= bits {
                    break;
                }
                clear.push(bit);
                free &= free - 1;
            }
        }
        clear
    }

    #[inline(always)]
    fn insert(&mut self, bit: u32) {
        self.0[bit as usize / 64] |= 1 << (bit % 64);
    }
}

/// State of the inverse view for the last few slots.
struct Tail {
    m: u32,
    empty: Vec<u32>,
    /// `skip^-1 mod m` per backend, 0 until first needed (never a real value).
    inverse: Vec<u32>,
    reduce: Barrett,
}

impl Tail {
    fn new(filled: &Bitset, backends: usize, m: u32) -> Self {
        Tail {
            m,
            empty: filled.clear_bits(m),
            inverse: vec![0; backends],
            reduce: Barrett::new(m),
        }
    }

    /// Backend `b` takes the empty slot that comes first in its permutation.
    fn take(&mut self, b: u32, Permutation { offset, skip, .. }: Permutation) -> u32 {
        let m = self.m;
        let inverse = match self.inverse[b as usize] {
            0 => {
                let inverse = inverse_mod(skip, m);
                self.inverse[b as usize] = inverse;
                inverse
            }
            known => known,
        };
        // Positions are distinct per backend, so the minimum is unique and
        // the order of `empty` (scrambled by swap_remove) does not matter.
        // `(s - offset) mod m` as `s + (m - offset)` reduced once.
        let back = m - offset;
        let mut best = (u32::MAX, 0usize);
        for (k, &s) in self.empty.iter().enumerate() {
            let position = self.reduce.mul_mod(add_mod(s, back, m), inverse);
            if position < best.0 {
                best = (position, k);
            }
        }
        self.empty.swap_remove(best.1)
    }
}

/// Remaining-slot count at which the inverse view becomes cheaper: walking
/// costs about `m / r` probes per turn, the inverse view `r` reductions of a
/// few cycles each, so they cross near `sqrt(m)` (tuned by benchmark).
fn tail_threshold(m: u32) -> u32 {
    m.isqrt()
}

/// Modular inverse of `a` modulo prime `m` (`0 < a < m`), by extended Euclid.
fn inverse_mod(a: u32, m: u32) -> u32 {
    let (mut r0, mut r1) = (i64::from(m), i64::from(a));
    let (mut t0, mut t1) = (0i64, 1i64);
    while r1 != 0 {
        let q = r0 / r1;
        (r0, r1) = (r1, r0 - q * r1);
        (t0, t1) = (t1, t0 - q * t1);
    }
    t0.rem_euclid(i64::from(m)) as u32
}

/// `a * b mod m` for `a, b < m < 2^31` without a hardware division:
/// Barrett reduction with `mu = floor((2^64 - 1) / m)`. With `a * b < 2^62`
/// the estimated quotient is at most one too small, so one conditional
/// subtract finishes.
#[derive(Debug, Clone, Copy)]
struct Barrett {
    m: u64,
    mu: u64,
}

impl Barrett {
    fn new(m: u32) -> Self {
        Barrett {
            m: u64::from(m),
            mu: u64::MAX / u64::from(m),
        }
    }

    #[inline]
    fn mul_mod(&self, a: u32, b: u32) -> u32 {
        let product = u64::from(a) * u64::from(b);
        let quotient = ((u128::from(product) * u128::from(self.mu)) >> 64) as u64;
        let rest = product - quotient * self.m;
        std::hint::select_unpredictable(rest >= self.m, rest.wrapping_sub(self.m), rest) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inverse_mod_inverts() {
        for m in [251u32, 65537, 655373] {
            for a in [1, 2, 3, m / 2, m - 2, m - 1] {
                let inv = inverse_mod(a, m);
                assert_eq!(
                    u64::from(a) * u64::from(inv) % u64::from(m),
                    1,
                    "{a} mod {m}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn barrett_matches_remainder(m in 2u32..(1 << 31), a: u32, b: u32) {
            let (a, b) = (a % m, b % m);
            let expected = (u64::from(a) * u64::from(b) % u64::from(m)) as u32;
            prop_assert_eq!(Barrett::new(m).mul_mod(a, b), expected);
        }

        #[test]
        fn tail_view_gives_the_walked_table(
            raw in proptest::collection::vec((any::<u32>(), any::<u32>()), 1..30),
            order_seed: u64,
            tail_at in 0u32..=1021,
        ) {
            let m = 1021;
            let perms: Vec<Permutation> = raw
                .iter()
                .enumerate()
                .map(|(i, &(o, s))| Permutation { offset: o % m, skip: s % (m - 1) + 1, label: i as u32 })
                .collect();
            let n = perms.len() as u64;
            // Any turn sequence will do; a pseudo-random one exercises
            // backends arriving at the tail in arbitrary states.
            let turns: Vec<u32> = (0..u64::from(m))
                .map(|t| (t.wrapping_mul(order_seed | 1).rotate_left(17) % n) as u32)
                .collect();
            let table = |tail_at: u32| fill_with_tail_at(&perms, m, turns.iter().copied(), tail_at);
            prop_assert_eq!(table(0), table(tail_at));
        }
    }
}
