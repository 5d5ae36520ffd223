//! The BPF maps, as the daemon sees them. [`BalancerMaps`] opens the balancer's pins and
//! reads them (the CLI, `explain`, adoption after a restart); [`MapWriter`] is the only code
//! that mutates them, and only the sync engine (`crate::sync`) holds one.
//! [`BackendSideMaps`] are the backend side's (the TC programs') maps, [`SocketMaps`] the
//! socket programs' target ports.

pub mod affinity_tables;
mod backend_side;
mod balancer;
pub mod batch;
pub mod flow_tables;
mod hash_sync;
mod ranges;
mod socket;
mod writer;

use std::{
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::maps::{Map, MapData, MapError, PerCpuValues};
use lb_common::Counter;

pub use backend_side::BackendSideMaps;
pub use balancer::BalancerMaps;
pub use socket::SocketMaps;
pub use writer::MapWriter;

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error(
        "cannot open pinned map {path}: {source} (is the datapath installed? see `ferrolb run`)"
    )]
    Open { path: PathBuf, source: MapError },
    #[error("map {map}: {source}")]
    Access { map: &'static str, source: MapError },
    #[error("map {map}: batch update: {source}")]
    Batch {
        map: &'static str,
        source: std::io::Error,
    },
    #[error("cannot count CPUs: {0}")]
    Cpus(String),
    #[error("map {map} is not installed (the socket programs load it: `ferrolb kube`)")]
    NotInstalled { map: &'static str },
    #[error("{map}: {wanted} entries do not fit its {capacity}")]
    DoesNotFit {
        map: &'static str,
        wanted: usize,
        capacity: u32,
    },
    #[error("pinned state is inconsistent: {0}")]
    Inconsistent(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: permission denied (reading the datapath's pinned maps needs root, or \
         CAP_BPF with access to the pin directory)"
    )]
    PermissionDenied { path: PathBuf },
}

/// Fails with [`MapsError::PermissionDenied`] when `path` cannot be looked at for lack of
/// permission, so a non-root user is told so instead of "not installed". A path that does
/// not exist is fine here: whoever opens it reports that.
pub fn check_access(path: &Path) -> Result<(), MapsError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(MapsError::PermissionDenied {
                path: path.to_path_buf(),
            })
        }
        _ => Ok(()),
    }
}

pub(crate) fn access(map: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Access { map, source }
}

pub(crate) fn open_map(pin_dir: &Path, name: &str) -> Result<Map, MapsError> {
    let path = pin_dir.join(name);
    check_access(&path)?;
    let data = MapData::from_pin(&path).map_err(|source| {
        // The pin is there but the kernel refused it (no CAP_BPF).
        if permission_refused(&source) {
            return MapsError::PermissionDenied { path: path.clone() };
        }
        MapsError::Open {
            path: path.clone(),
            source,
        }
    })?;
    Map::from_map_data(data).map_err(|source| MapsError::Open { path, source })
}

macro_rules! open_typed_impl {
    ($dir:expr, $name:expr) => {
        $crate::maps::open_map($dir, $name)?
            .try_into()
            .map_err(|source| $crate::maps::MapsError::Open {
                path: $dir.join($name),
                source,
            })?
    };
}

pub fn nr_cpus() -> Result<usize, MapsError> {
    aya::util::nr_cpus().map_err(|(what, e)| MapsError::Cpus(format!("{what}: {e}")))
}

/// The per-CPU reason counters pinned as `map` (summed over CPUs), or `None` when the
/// programs that own them are not installed.
pub fn pinned_reason_counters(
    pin_dir: &Path,
    map: &'static str,
) -> Result<Option<Vec<Counter>>, MapsError> {
    if !pin_dir.join(map).exists() {
        return Ok(None);
    }
    let counters: aya::maps::PerCpuArray<MapData, Counter> = open_typed!(pin_dir, map);
    counters
        .iter()
        .map(|v| v.map(|v| sum_counters(&v)))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
        .map_err(access(map))
}

pub(crate) fn sum_counters(values: &PerCpuValues<Counter>) -> Counter {
    values.iter().fold(Counter::default(), |acc, c| Counter {
        packets: acc.packets + c.packets,
        bytes: acc.bytes + c.bytes,
    })
}

pub(crate) use open_typed_impl as open_typed;

fn permission_refused(e: &MapError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cause {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
                return true;
            }
        }
        cause = err.source();
    }
    false
}

pub(crate) fn open_raw(pin_dir: &Path, name: &str) -> Result<MapData, MapsError> {
    MapData::from_pin(pin_dir.join(name)).map_err(|source| MapsError::Open {
        path: pin_dir.join(name),
        source,
    })
}

/// The kernel memory (`memlock` in the map's fdinfo: what the kernel charges for it,
/// preallocated elements and per-CPU copies included) of every map pinned in `pin_dir`,
/// by pin name. Pins that are not maps (links) are left out.
pub fn pinned_map_memory(pin_dir: &Path) -> Result<Vec<(String, u64)>, MapsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| MapsError::Io { path, source }
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(pin_dir).map_err(io(pin_dir))? {
        let path = entry.map_err(io(pin_dir))?.path();
        let Ok(map) = MapData::from_pin(&path) else {
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let nested = map
            .info()
            .is_ok_and(|i| matches!(i.map_type(), Ok(aya::maps::MapType::ArrayOfMaps)));
        let memory = if nested {
            nested_memory(map)?
        } else {
            map_memory(&map)?
        };
        out.push((name, memory));
    }
    out.sort();
    Ok(out)
}

/// An array of maps' kernel memory with its inner maps' (the flow cache's chunks, which
/// are pinned only through it).
fn nested_memory(outer: MapData) -> Result<u64, MapsError> {
    let mut total = map_memory(&outer)?;
    let outer: aya::maps::ArrayOfMaps<MapData, MapData> = aya::maps::Map::from_map_data(outer)
        .and_then(TryInto::try_into)
        .map_err(|e| MapsError::Inconsistent(format!("array of maps: {e}")))?;
    for index in 0..outer.len() {
        match outer.get(&index, 0) {
            Ok(inner) => total += map_memory(&inner)?,
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(e) => return Err(MapsError::Inconsistent(format!("array of maps: {e}"))),
        }
    }
    Ok(total)
}

/// The kernel memory of one map (`memlock` in its fdinfo).
pub(crate) fn map_memory(map: &MapData) -> Result<u64, MapsError> {
    let fdinfo = PathBuf::from(format!(
        "/proc/self/fdinfo/{}",
        std::os::fd::AsRawFd::as_raw_fd(&map.fd().as_fd())
    ));
    let text = std::fs::read_to_string(&fdinfo).map_err(|source| MapsError::Io {
        path: fdinfo.clone(),
        source,
    })?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| MapsError::Inconsistent(format!("{}: no memlock line", fdinfo.display())))
}
