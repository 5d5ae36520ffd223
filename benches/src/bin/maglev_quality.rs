//! Prints markdown tables comparing `lb_hashing::maglev` with the `maglev`
//! crate (0.2.1) on the same inputs: disruption when one of N backends is
//! removed, imbalance, and build time (median of several runs, side by side
//! in one process).
//!
//! Run: `cargo run --release -p lb-benches --bin maglev_quality`
//! Add `--include-huge` to also run the maglev crate at n=1000, m=655373
//! (it allocates about 5.2 GB per build).

use std::time::{Duration, Instant};

use lb_benches::{
    baseline, baseline_feasible, baseline_table, identities, ours, BACKEND_COUNTS, TABLE_SIZES,
};
use lb_hashing::maglev::{build, disruption, imbalance, MaglevBackend, DEFAULT_SEED};

/// Median wall time of `runs` calls of `f`.
fn median_time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

struct Row {
    build: Duration,
    changed: f64,
    changed_surviving: f64,
    imbalance: f64,
}

/// Builds `table_of(ids)` and `table_of(ids without one)`, and compares them
/// by identity per slot.
fn measure(
    ids: &[String],
    runs: usize,
    table_of: impl Fn(&[String]) -> Vec<u32>,
    timed: impl Fn(&[String]),
) -> Row {
    let removed = ids.len() / 2;
    let mut survivors = ids.to_vec();
    survivors.remove(removed);
    let before = table_of(ids);
    let after = table_of(&survivors);
    let owner_before: Vec<&str> = before.iter().map(|&i| ids[i as usize].as_str()).collect();
    let owner_after: Vec<&str> = after
        .iter()
        .map(|&i| survivors[i as usize].as_str())
        .collect();
    let gone = ids[removed].as_str();
    let d = disruption(&owner_before, &owner_after, |owner| *owner != gone);
    Row {
        build: median_time(runs, || timed(ids)),
        changed: d.changed_share,
        changed_surviving: d.changed_share_among_surviving,
        imbalance: imbalance(&before, &vec![1; ids.len()]),
    }
}

fn print_row(n: usize, m: u32, name: &str, row: &Row) {
    println!(
        "| {n} | {m} | {name} | {:.3} | {:.2}% | {:.2}% | {:.4} |",
        row.build.as_secs_f64() * 1e3,
        row.changed * 100.0,
        row.changed_surviving * 100.0,
        row.imbalance,
    );
}

fn main() {
    let include_huge = std::env::args().any(|a| a == "--include-huge");
    println!("Remove backend n/2 of n; disruption compares slot owners by identity.");
    println!("Ideal: changed = 1/n, changed among survivors = 0, imbalance = 1.\n");
    println!(
        "| n | m | implementation | build ms (median) | changed | changed among survivors | imbalance (max/mean) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for m in TABLE_SIZES {
        for n in BACKEND_COUNTS {
            let ids = identities(n);
            let runs = if m > 100_000 { 5 } else { 21 };
            let row = measure(&ids, runs, |ids| ours(ids, m), |ids| drop(ours(ids, m)));
            print_row(n, m, "lb_hashing", &row);
            if baseline_feasible(n, m) || include_huge {
                let baseline_runs = if u64::from(m) * n as u64 > 10_000_000 {
                    3
                } else {
                    runs
                };
                let row = measure(
                    &ids,
                    baseline_runs,
                    |ids| baseline_table(ids, m),
                    |ids| drop(baseline(ids, m)),
                );
                print_row(n, m, "maglev 0.2.1", &row);
            } else {
                println!("| {n} | {m} | maglev 0.2.1 | skipped: n x m matrix is 5.2 GB (--include-huge) | | | |");
            }
        }
    }

    println!("\nlb_hashing with unequal weights (1, 2, 3, 4 repeating); the maglev crate has no weights.\n");
    println!(
        "| n | m | imbalance of slots/weight (max/mean) | worst share error vs ideal (slots) |"
    );
    println!("|---|---|---|---|");
    for m in TABLE_SIZES {
        for n in BACKEND_COUNTS {
            let ids = identities(n);
            let weights: Vec<u32> = (0..n as u32).map(|i| i % 4 + 1).collect();
            let backends: Vec<MaglevBackend<'_>> = ids
                .iter()
                .zip(&weights)
                .map(|(id, &weight)| MaglevBackend {
                    identity: id.as_bytes(),
                    weight,
                })
                .collect();
            let table = build(&backends, m, DEFAULT_SEED).expect("valid inputs");
            let mut slots = vec![0u64; n];
            for &e in &table {
                slots[e as usize] += 1;
            }
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let worst = slots
                .iter()
                .zip(&weights)
                .map(|(&s, &w)| (s as f64 - f64::from(m) * f64::from(w) / total as f64).abs())
                .fold(0.0, f64::max);
            println!(
                "| {n} | {m} | {:.4} | {worst:.2} |",
                imbalance(&table, &weights)
            );
        }
    }
}
