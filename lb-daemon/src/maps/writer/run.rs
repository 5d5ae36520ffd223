//! How the map writer groups a run of batchable plan operations by the map they write,
//! and packs Maglev slots into the slot array's words.

use std::os::fd::AsFd;

use aya::maps::MapData;
use lb_common::{maglev_words, BackendValue, ServiceKey, ServiceValue};
use lb_model::Scope;

use super::super::{batch, MapsError};
use crate::planner::MapOp;

/// Operations a plan issues in long runs (a first sync: tens of thousands), which are
/// written a map at a time with batch updates.
pub(super) fn batchable(op: &MapOp) -> bool {
    matches!(
        op,
        MapOp::ResetBackendStats { .. }
            | MapOp::PutBackend { .. }
            | MapOp::ResetServiceStats { .. }
            | MapOp::WriteSlots { .. }
            | MapOp::PutService { .. }
    )
}

/// The one place a batched write falls back: where the kernel cannot batch this map
/// (`Unsupported`), `each` writes the same entries one syscall at a time.
pub(super) fn batch_or_each(
    map: &'static str,
    batched: std::io::Result<()>,
    each: impl FnOnce() -> Result<(), MapsError>,
) -> Result<(), MapsError> {
    match batched {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => each(),
        Err(source) => Err(MapsError::Batch { map, source }),
    }
}

/// One batch update of `keys`/`values` into `map`; nothing to do for no keys.
pub(super) fn batch_update<K: Copy, V: Copy>(
    map: &MapData,
    keys: &[K],
    values: &[V],
    per_key: usize,
) -> std::io::Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    batch::update(map.fd().as_fd(), keys, values, per_key)
}

/// The operations of `run` that `keep` selects, in order.
pub(super) fn run_of(run: &[MapOp], keep: impl Fn(&MapOp) -> bool) -> Vec<MapOp> {
    run.iter().filter(|op| keep(op)).cloned().collect()
}

/// The slot array's words holding a table written at `base` (word-aligned, as the
/// allocator hands out regions), as (word index, word): four slots per word, the lanes
/// past the table's end 0.
pub(super) fn packed_words(
    base: u32,
    slots: &[u32],
) -> impl ExactSizeIterator<Item = (u32, u64)> + '_ {
    debug_assert_eq!(
        base % maglev_words::SLOTS_PER_WORD,
        0,
        "tables are word-aligned"
    );
    let first = maglev_words::word_of(base);
    slots
        .chunks(maglev_words::SLOTS_PER_WORD as usize)
        .enumerate()
        .map(move |(i, lanes)| {
            let word = lanes.iter().enumerate().fold(0, |word, (lane, &id)| {
                maglev_words::with_id(word, lane as u32, id)
            });
            (first + i as u32, word)
        })
}

/// A run of batchable operations, grouped by the map they write.
#[derive(Default)]
pub(super) struct Run {
    pub(super) backend_stats: Vec<u32>,
    pub(super) backends: (Vec<u32>, Vec<BackendValue>),
    pub(super) service_stats: Vec<u32>,
    /// Whether `slots` holds the run's slot words (else they are written through the
    /// mapped slot array, straight from the operations).
    pub(super) pack_slots: bool,
    /// Word indices and packed words of the slot array.
    pub(super) slots: (Vec<u32>, Vec<u64>),
    /// Per scope: external, internal.
    pub(super) services: [(Vec<ServiceKey>, Vec<ServiceValue>); 2],
}

pub(super) fn scope_index(scope: Scope) -> usize {
    match scope {
        Scope::External => 0,
        Scope::Internal => 1,
    }
}

impl Run {
    pub(super) fn of(ops: &[MapOp], pack_slots: bool) -> Self {
        let mut run = Self {
            pack_slots,
            ..Self::default()
        };
        if pack_slots {
            let words: usize = ops
                .iter()
                .map(|op| match op {
                    MapOp::WriteSlots { slots, .. } => {
                        slots.len().div_ceil(maglev_words::SLOTS_PER_WORD as usize)
                    }
                    _ => 0,
                })
                .sum();
            run.slots.0.reserve_exact(words);
            run.slots.1.reserve_exact(words);
        }
        for op in ops {
            match op {
                MapOp::ResetBackendStats { backend_id } => run.backend_stats.push(*backend_id),
                MapOp::PutBackend { id, value } => {
                    run.backends.0.push(*id);
                    run.backends.1.push(*value);
                }
                MapOp::ResetServiceStats { service_id } => run.service_stats.push(*service_id),
                MapOp::WriteSlots { base, slots } if run.pack_slots => {
                    for (index, word) in packed_words(*base, slots) {
                        run.slots.0.push(index);
                        run.slots.1.push(word);
                    }
                }
                MapOp::WriteSlots { .. } => {}
                MapOp::PutService { scope, key, value } => {
                    let services = &mut run.services[scope_index(*scope)];
                    services.0.push(*key);
                    services.1.push(*value);
                }
                other => unreachable!("not batchable: {other:?}"),
            }
        }
        run
    }
}
