//! Measures the Maglev table size policy (`lb_model::Settings::table_size_for`) against the
//! earlier one (smallest listed size with 100 slots per backend,
//! `lb_hashing::maglev::choose_table_size`): the share of flows that move when a service
//! scales N -> N-1 -> N and another LB node (no flow table) takes over at each step, and
//! the slot memory per distinct backend set at 2 bytes a slot (packed slots).
//!
//! Run: `cargo run --release -p lb-benches --bin table_size_policy`

use lb_hashing::maglev::{build, choose_table_size, MaglevBackend, DEFAULT_SEED};
use lb_model::Settings;

/// Bytes per Maglev slot once slots are packed (backend ids in 16 bits).
const SLOT_BYTES: u32 = 2;
/// Flow hashes sampled per measurement (uniform over the table, as the flow hash is).
const FLOWS: u64 = 200_000;

fn addresses(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("198.18.1.{}", i + 1)).collect()
}

/// The owner (an address) of every slot of the table of `ids` at `size`.
fn owners(ids: &[String], size: u32) -> Vec<String> {
    let inputs: Vec<MaglevBackend<'_>> = ids
        .iter()
        .map(|id| MaglevBackend {
            identity: id.as_bytes(),
            weight: 1,
        })
        .collect();
    build(&inputs, size, DEFAULT_SEED)
        .expect("a valid table")
        .into_iter()
        .map(|i| ids[i as usize].clone())
        .collect()
}

/// The pick of a flow with hash `h` in `table`.
fn pick(table: &[String], h: u64) -> &str {
    &table[(h % table.len() as u64) as usize]
}

/// Share of the flows not on the removed backend that change backend at the scale-down,
/// and at the scale-up, each step seen by a node without a flow table.
fn moved(n: usize, size_of: impl Fn(usize) -> u32) -> (f64, f64) {
    let all = addresses(n);
    let fewer: Vec<String> = all[..n - 1].to_vec();
    let removed = all[n - 1].clone();
    let before = owners(&all, size_of(n));
    let during = owners(&fewer, size_of(n - 1));
    let after = owners(&all, size_of(n));
    let (mut kept, mut down, mut up) = (0u64, 0u64, 0u64);
    for i in 0..FLOWS {
        // A well-mixed hash per flow, as the flow hash gives.
        let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
        if pick(&before, h) == removed {
            continue;
        }
        kept += 1;
        down += u64::from(pick(&during, h) != pick(&before, h));
        up += u64::from(pick(&after, h) != pick(&during, h) && pick(&after, h) != removed);
    }
    (down as f64 / kept as f64, up as f64 / kept as f64)
}

fn main() {
    let settings = Settings::default();
    println!("| backends N | policy | size N / N-1 | moved at N->N-1 (of the survivors' flows) | moved back at N-1->N (not to the returning one) | slot bytes per set |");
    println!("|---|---|---|---|---|---|");
    for n in [2usize, 3, 4, 6, 10, 11, 20, 40] {
        let old = |k: usize| choose_table_size(k.max(1), settings.max_table_size);
        let new = |k: usize| settings.table_size_for(k);
        for (name, size_of) in [
            ("100 slots/backend (before)", &old as &dyn Fn(usize) -> u32),
            ("size classes (now)", &new),
        ] {
            let (down, up) = moved(n, size_of);
            println!(
                "| {n} | {name} | {} / {} | {:.1}% | {:.1}% | {} |",
                size_of(n),
                size_of(n - 1),
                100.0 * down,
                100.0 * up,
                size_of(n) * SLOT_BYTES
            );
        }
    }
}
