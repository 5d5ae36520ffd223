//! Turn order of the weighted population: which backend places its next slot.
//!
//! Every turn fills exactly one slot, so a table of size `m` takes exactly
//! `m` turns and a backend's slot count is its number of turns. The order is
//! that of Katran's weighted Maglev ("v2"), with one refinement at the end:
//!
//! * Rounds `r = 1, 2, ...`: backend `i` (weight `w_i`, heaviest weight
//!   `W`) earns `w_i / W` of a turn per round and takes its `k`-th turn in
//!   round `ceil(k * W / w_i)`; within a round, turns go in backend order.
//!   This is the credit scheme "credit += w_i; if credit >= W { credit -= W;
//!   turn }", and it depends only on weight ratios.
//! * The table fills during some round `R`, which is usually only partly
//!   played. Its turns are ordered by the turn's ideal time `k_i / w_i`
//!   (ties by backend order) instead of by backend order, so the turns that
//!   are played are the ones a perfectly fair scheduler would play first.
//!
//! Result: the played turns are a prefix of "all turns sorted by `k / w_i`",
//! hence there is one scale `t` with `t * w_i - 1 <= slots_i <= t * w_i` for
//! every backend: shares are proportional to weight within one slot, and
//! equal weights give exactly `floor(m / n)` or `ceil(m / n)` slots.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// How the full rounds `1..R` are enumerated; both give the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FullRounds {
    /// Walk every backend every round with a credit counter: cheapest when
    /// rounds are dense (`rounds * n` close to `m`), e.g. equal weights.
    Credit,
    /// Pop due turns from a heap keyed by `(round, backend)`: needed when a
    /// few heavy backends make most rounds nearly empty, where walking all
    /// `n` backends per round would cost `rounds * n >> m`.
    Heap,
}

/// The `m` turns of a table of size `m`, in the order described in the
/// module docs. `weights` are all positive; `m >= weights.len()`.
pub(super) fn turns(weights: &[u32], m: u32) -> Turns<'_> {
    let heaviest = heaviest(weights);
    let last_round = last_round(weights, heaviest, m);
    let full_round_steps = u64::from(last_round - 1) * weights.len() as u64;
    // Walking all backends every round is fine while that costs at most a
    // few steps per slot; beyond that the heap's log(n) per turn wins.
    let mode = if full_round_steps <= 4 * u64::from(m) {
        FullRounds::Credit
    } else {
        FullRounds::Heap
    };
    turns_with(weights, m, mode)
}

/// [`turns`] with the full-round enumeration chosen by the caller; separate
/// so tests can check that both enumerations agree.
pub(super) fn turns_with(weights: &[u32], m: u32, mode: FullRounds) -> Turns<'_> {
    let heaviest = heaviest(weights);
    let last_round = last_round(weights, heaviest, m);
    let full_rounds = last_round - 1;
    let equal = weights.iter().all(|&w| u64::from(w) == heaviest);
    let full = match mode {
        FullRounds::Credit if equal => FullRoundsState::Equal {
            next: 0,
            turns_left: u64::from(full_rounds) * weights.len() as u64,
        },
        FullRounds::Credit => FullRoundsState::Credit {
            credit: vec![0; weights.len()],
            next: 0,
            rounds_left: full_rounds,
        },
        FullRounds::Heap => FullRoundsState::Heap {
            taken: vec![0; weights.len()],
            due: weights
                .iter()
                .enumerate()
                .map(|(i, &w)| Reverse((due_round(1, w, heaviest), i as u32)))
                .collect(),
            rounds: full_rounds,
        },
    };
    let played = turns_through(weights, heaviest, full_rounds);
    Turns {
        weights,
        heaviest,
        full,
        last: final_round(weights, heaviest, last_round, m - played as u32).into_iter(),
    }
}

/// Iterator over backend positions, one per turn.
pub(super) struct Turns<'a> {
    weights: &'a [u32],
    heaviest: u64,
    full: FullRoundsState,
    last: std::vec::IntoIter<u32>,
}

enum FullRoundsState {
    /// Equal weights: every backend plays every round, in order; the credit
    /// scheme reduced to a counter (it is the common case, and this loop
    /// runs once per slot).
    Equal { next: u32, turns_left: u64 },
    Credit {
        credit: Vec<u64>,
        next: usize,
        rounds_left: u32,
    },
    Heap {
        /// Turns taken so far per backend.
        taken: Vec<u64>,
        /// Next turn of each backend keyed by `(round, backend)`.
        due: BinaryHeap<Reverse<(u64, u32)>>,
        rounds: u32,
    },
}

impl Iterator for Turns<'_> {
    type Item = u32;

    // Inlined into the fill loop: this runs once per slot.
    #[inline(always)]
    fn next(&mut self) -> Option<u32> {
        let full_round_turn = match &mut self.full {
            FullRoundsState::Equal { next, turns_left } => {
                if *turns_left == 0 {
                    None
                } else {
                    *turns_left -= 1;
                    let i = *next;
                    *next = if i + 1 == self.weights.len() as u32 {
                        0
                    } else {
                        i + 1
                    };
                    Some(i)
                }
            }
            FullRoundsState::Credit {
                credit,
                next,
                rounds_left,
            } => credit_next(self.weights, self.heaviest, credit, next, rounds_left),
            FullRoundsState::Heap { taken, due, rounds } => {
                heap_next(self.weights, self.heaviest, taken, due, *rounds)
            }
        };
        full_round_turn.or_else(|| self.last.next())
    }
}

#[inline(always)]
fn credit_next(
    weights: &[u32],
    heaviest: u64,
    credit: &mut [u64],
    next: &mut usize,
    rounds_left: &mut u32,
) -> Option<u32> {
    while *rounds_left > 0 {
        let i = *next;
        *next += 1;
        if *next == weights.len() {
            *next = 0;
            *rounds_left -= 1;
        }
        let c = &mut credit[i];
        *c += u64::from(weights[i]);
        if *c >= heaviest {
            *c -= heaviest;
            return Some(i as u32);
        }
    }
    None
}

#[inline(never)]
fn heap_next(
    weights: &[u32],
    heaviest: u64,
    taken: &mut [u64],
    due: &mut BinaryHeap<Reverse<(u64, u32)>>,
    rounds: u32,
) -> Option<u32> {
    let mut entry = due.peek_mut()?;
    let Reverse((round, i)) = *entry;
    if round > u64::from(rounds) {
        return None;
    }
    let k = &mut taken[i as usize];
    *k += 1;
    *entry = Reverse((due_round(*k + 1, weights[i as usize], heaviest), i));
    Some(i)
}

/// Round of a backend's `k`-th turn: `ceil(k * heaviest / w)`.
fn due_round(k: u64, w: u32, heaviest: u64) -> u64 {
    (k * heaviest).div_ceil(u64::from(w))
}

fn heaviest(weights: &[u32]) -> u64 {
    weights.iter().copied().max().map_or(1, u64::from)
}

/// Turns backend `w` has taken after `round` complete rounds.
fn turns_of(w: u32, heaviest: u64, round: u32) -> u64 {
    // round <= m < 2^21 and w < 2^32: the product fits in u64.
    u64::from(round) * u64::from(w) / heaviest
}

/// Total turns after `round` complete rounds.
fn turns_through(weights: &[u32], heaviest: u64, round: u32) -> u64 {
    weights.iter().map(|&w| turns_of(w, heaviest, round)).sum()
}

/// The round in which turn number `m` is played: the smallest `r` with
/// `turns_through(r) >= m`.
///
/// With `W` the weight sum and `h` the heaviest weight, `turns_through(r)`
/// lies in `(r W / h - n, r W / h]`, so `r` lies in
/// `[m h / W, (m + n) h / W + 1]`, a range of about `n h / W + 1` rounds
/// (1 or 2 for equal weights). Binary search over that range needs few
/// evaluations of the O(n), division-heavy `turns_through`.
fn last_round(weights: &[u32], heaviest: u64, m: u32) -> u32 {
    let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let n = weights.len() as u64;
    // The heaviest backend plays every round, so r <= m always.
    let mut lo = (u64::from(m) * heaviest / total).clamp(1, u64::from(m)) as u32;
    let mut hi = ((u64::from(m) + n) * heaviest / total + 1).clamp(1, u64::from(m)) as u32;
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if turns_through(weights, heaviest, mid) >= u64::from(m) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

/// The first `budget` turns of round `round`, ordered by ideal time.
fn final_round(weights: &[u32], heaviest: u64, round: u32, budget: u32) -> Vec<u32> {
    // (backend, turn number k reached in this round)
    let mut members: Vec<(u32, u64)> = weights
        .iter()
        .enumerate()
        .filter_map(|(i, &w)| {
            let k = turns_of(w, heaviest, round);
            (k > turns_of(w, heaviest, round - 1)).then_some((i as u32, k))
        })
        .collect();
    // Compare k_a / w_a with k_b / w_b exactly: k < 2^21, w < 2^32.
    members.sort_unstable_by(|&(a, ka), &(b, kb)| {
        let lhs = ka * u64::from(weights[b as usize]);
        let rhs = kb * u64::from(weights[a as usize]);
        match lhs.cmp(&rhs) {
            Ordering::Equal => a.cmp(&b),
            unequal => unequal,
        }
    });
    members
        .into_iter()
        .take(budget as usize)
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn turns(weights: &[u32], m: u32, mode: FullRounds) -> Vec<u32> {
        turns_with(weights, m, mode).collect()
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let order = turns(&[7, 7, 7], 11, FullRounds::Credit);
        assert_eq!(order, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1]);
    }

    #[test]
    fn last_round_is_ordered_by_ideal_time() {
        // Weights 1 and 2: round 1 plays only backend 1, round 2 plays both.
        // With m = 2 the table fills in round 2; backend 1's 2nd turn (ideal
        // time 2/2) ties backend 0's 1st (1/1) and wins on backend order...
        assert_eq!(turns(&[1, 2], 2, FullRounds::Credit), [1, 0]);
        // ...and with weights 2 and 3, backend 0's 1st turn (1/2) precedes
        // backend 1's 2nd (2/3) although both fall in round 2.
        assert_eq!(turns(&[2, 3], 2, FullRounds::Credit), [1, 0]);
        assert_eq!(turns(&[3, 2], 2, FullRounds::Credit), [0, 1]);
    }

    proptest! {
        #[test]
        fn heap_and_credit_enumerations_agree(
            weights in proptest::collection::vec(1u32..1000, 1..40),
            extra in 0u32..3000,
        ) {
            let m = weights.len() as u32 + extra;
            prop_assert_eq!(
                turns(&weights, m, FullRounds::Credit),
                turns(&weights, m, FullRounds::Heap)
            );
        }

        #[test]
        fn exactly_m_turns_within_one_of_proportional(
            weights in proptest::collection::vec(1u32..u32::MAX, 1..40),
            extra in 0u32..3000,
        ) {
            let m = weights.len() as u32 + extra;
            let order = turns(&weights, m, FullRounds::Heap);
            prop_assert_eq!(order.len(), m as usize);
            let mut count = vec![0u64; weights.len()];
            for i in order {
                count[i as usize] += 1;
            }
            // A scale t with c_i <= t w_i <= c_i + 1 for all i exists iff
            // max c_i / w_i <= min (c_i + 1) / w_i (cross-multiplied).
            for (a, (&ca, &wa)) in count.iter().zip(&weights).enumerate() {
                for (b, (&cb, &wb)) in count.iter().zip(&weights).enumerate() {
                    prop_assert!(
                        u128::from(ca) * u128::from(wb) <= u128::from(cb + 1) * u128::from(wa),
                        "backend {} ({}/{}) vs {} ({}/{})", a, ca, wa, b, cb, wb
                    );
                }
            }
        }
    }
}
