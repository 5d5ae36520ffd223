//! The flow cache's chunks: the object declares `LB_FLOW_CACHE` as an array of maps, and
//! the loader creates one small array per chunk (see `lb_common::FlowCacheChunk` for why
//! small ones) and puts it in its slot.
//!
//! Unlike the other maps the cache is not reused across loads: aya creates a fresh outer
//! array for each load (its entries are only copies of flow-table entries, which are
//! pinned), and the loader pins it in place of the previous one, so `explain` reads the
//! cache of the program loaded last. A slot left empty is a miss, never a wrong answer.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd},
    path::Path,
};

use aya::{
    maps::{ArrayOfMaps, MapData, MapError},
    Ebpf,
};
use lb_common::{limits, map_names, FlowCacheChunk};

use super::{io_err, LoaderError};

/// Puts `chunks[i]` in slot `i` of the array of maps `outer` in one batch; `false` where
/// the kernel has no batches for arrays of maps (the caller then sets slot by slot).
/// Every single update of a map-in-map waits for an RCU grace period (so no program still
/// sees the old inner map when the call returns): 272 slots took 2–3 s one by one here,
/// the datapath's re-install gap after its pins were removed; a batch waits once.
fn fill_batch(outer: BorrowedFd<'_>, chunks: &[MapData]) -> Result<bool, MapError> {
    let keys: Vec<u32> = (0..chunks.len() as u32).collect();
    let fds: Vec<u32> = chunks
        .iter()
        .map(|chunk| chunk.fd().as_fd().as_raw_fd() as u32)
        .collect();
    match crate::maps::batch::update(outer, &keys, &fds, 1) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::Unsupported => Ok(false),
        Err(io_error) => Err(MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_update_batch",
            io_error,
        })),
    }
}

/// One chunk: an array of one `FlowCacheChunk`.
fn new_chunk() -> Result<MapData, MapError> {
    let params = aya_obj::Map::new_from_params(
        aya_obj::generated::bpf_map_type::BPF_MAP_TYPE_ARRAY as u32,
        std::mem::size_of::<u32>() as u32,
        std::mem::size_of::<FlowCacheChunk>() as u32,
        1,
        0,
    );
    MapData::create(params, "flow_cache_chunk", None)
}

/// Outer entries of the flow cache: `FLOW_CACHE_CHUNKS_PER_CPU` for each of `cpus` CPUs.
pub(super) fn outer_entries(cpus: u32) -> u32 {
    limits::FLOW_CACHE_CHUNKS_PER_CPU * cpus
}

/// Fills the loaded object's flow cache with fresh chunks and pins it in `pin_dir`,
/// replacing the cache an earlier load pinned there. Objects without a flow cache are left
/// alone.
pub(super) fn install(ebpf: &mut Ebpf, pin_dir: &Path) -> Result<(), LoaderError> {
    let name = map_names::FLOW_CACHE;
    let Some(map) = ebpf.map_mut(name) else {
        return Ok(());
    };
    let failed = |source: MapError| LoaderError::Map { name, source };
    let chunks = {
        let outer: ArrayOfMaps<&MapData, MapData> = ArrayOfMaps::try_from(&*map).map_err(failed)?;
        (0..outer.len())
            .map(|_| new_chunk())
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed)?
    };
    // Closed once the outer array holds them (the end of this function).
    let batched = match &*map {
        aya::maps::Map::ArrayOfMaps(data) => {
            fill_batch(data.fd().as_fd(), &chunks).map_err(failed)?
        }
        _ => false,
    };
    if !batched {
        let mut outer: ArrayOfMaps<&mut MapData, MapData> =
            ArrayOfMaps::try_from(&mut *map).map_err(failed)?;
        for (index, chunk) in chunks.iter().enumerate() {
            outer.set(index as u32, chunk, 0).map_err(failed)?;
        }
    }
    let path = pin_dir.join(name);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err(&path)(e)),
        _ => {}
    }
    map.pin(&path)
        .map_err(|source| LoaderError::Pin { path, source })
}
