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

/// Writes `values[i]` at index `keys[i]` of a `u32` array map, in as few syscalls as the
/// kernel allows. `Err` with `Unsupported` means the kernel has no batch updates for the
/// map; the caller falls back to single updates.
pub fn update_u32(map: BorrowedFd<'_>, keys: &[u32], values: &[u32]) -> io::Result<()> {
    update(map, keys, values, 1)
}

/// Writes `values[i * per_key .. (i + 1) * per_key]` for `keys[i]`, in order. `K` and `V`
/// must be the map's exact key and value layouts (`#[repr(C)]`, no implicit padding);
/// `per_key` is 1, or the possible CPUs for a per-CPU map whose value is 8-byte sized.
/// `Unsupported` as in [`update_u32`].
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
