//! `BPF_MAP_UPDATE_BATCH` for the balancer's maps. aya 0.14 has no batch operations, and
//! one syscall per entry costs about 1 µs here: a 10k-service initial sync (ten million
//! slots, 60,000 backends, their counters) spent most of its time in those syscalls.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`; the kernel zero-fills the rest of the union.
#[repr(C, align(8))]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `values[i * per_key .. (i + 1) * per_key]` for `keys[i]`, in order. `K` and `V`
/// must be the map's exact key and value layouts (`#[repr(C)]`, no implicit padding);
/// `per_key` is 1, or the possible CPUs for a per-CPU map whose value is 8-byte sized.
/// `Err` with `Unsupported` means the kernel has no batch updates for the map; the caller
/// falls back to single updates.
pub fn update<K: Copy, V: Copy>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
    per_key: usize,
) -> io::Result<()> {
    assert_eq!(keys.len() * per_key, values.len(), "per_key values per key");
    let mut done = 0usize;
    while done < keys.len() {
        let mut attr = BatchAttr {
            keys: keys[done..].as_ptr() as u64,
            values: values[done * per_key..].as_ptr() as u64,
            count: (keys.len() - done) as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: attr points at live key/value buffers of `count` elements each; the
        // kernel reads them and writes back `count`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        if rc < 0 {
            let error = io::Error::last_os_error();
            return Err(match error.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524) if done == 0 => {
                    io::Error::new(io::ErrorKind::Unsupported, error)
                }
                _ => error,
            });
        }
        if attr.count == 0 {
            return Err(io::Error::other("batch update made no progress"));
        }
        done += attr.count as usize;
    }
    Ok(())
}

/// Below this many entries a thread is not worth starting.
const PARALLEL_MIN_PER_THREAD: usize = 1 << 16;

/// [`update`] for a plain (not per-CPU) array map, split into contiguous parts written
/// from one thread each: the kernel copies a batch element by element, and an array map
/// takes no lock to write one, so disjoint parts go through on every core at once. Returns
/// when every part is written (or failed): entries written by a failed call stay written,
/// as with [`update`]. `Unsupported` only when every part was refused before writing.
pub fn update_array_parallel<K: Copy + Sync, V: Copy + Sync>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    // Asked only for a long run: it reads the cgroup's CPU limits.
    let threads = if keys.len() < 2 * PARALLEL_MIN_PER_THREAD {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(keys.len() / PARALLEL_MIN_PER_THREAD)
    };
    if threads < 2 {
        return update(map, keys, values, 1);
    }
    let chunk = keys.len().div_ceil(threads);
    let results: Vec<io::Result<()>> = std::thread::scope(|scope| {
        let parts: Vec<_> = keys
            .chunks(chunk)
            .zip(values.chunks(chunk))
            .map(|(k, v)| scope.spawn(move || update(map, k, v, 1)))
            .collect();
        parts
            .into_iter()
            .map(|part| part.join().expect("a batch write panicked"))
            .collect()
    });
    let mut unsupported = None;
    let mut written = false;
    for result in results {
        match result {
            Ok(()) => written = true,
            Err(e) if e.kind() == io::ErrorKind::Unsupported => unsupported = Some(e),
            Err(e) => return Err(e),
        }
    }
    match unsupported {
        None => Ok(()),
        Some(e) if !written => Err(e),
        // Some parts written, others refused as unsupported: not a kernel that lacks
        // batches, a real failure.
        Some(e) => Err(io::Error::other(e)),
    }
}
