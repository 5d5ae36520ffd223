//! Lab cgroups: directories of the machine's cgroup v2 hierarchy that a lab's processes
//! run in, so socket programs attached to one act on that lab node's processes only (never
//! on the machine's root cgroup). Removal kills what still runs inside first.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crate::LabError;

/// Where the machine mounts cgroup v2, from /proc/mounts: `/sys/fs/cgroup` on a unified
/// host, `/sys/fs/cgroup/unified` on a hybrid one (v1 controllers beside it).
pub fn cgroup2_root() -> Result<PathBuf, LabError> {
    let mounts = std::fs::read_to_string("/proc/mounts").map_err(|source| LabError::Spawn {
        command: "read /proc/mounts".into(),
        source,
    })?;
    mounts
        .lines()
        .find_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
            // Mount points with spaces are written escaped; a lab machine has none.
            (fstype == "cgroup2").then(|| PathBuf::from(target))
        })
        .ok_or_else(|| LabError::Command {
            command: "find the cgroup2 mount".into(),
            stderr: "no cgroup2 file system in /proc/mounts".into(),
        })
}

fn io_error(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> LabError {
    let command = format!("{what} {}", path.display());
    move |source| LabError::Spawn { command, source }
}

/// A cgroup the lab made; killed and removed on drop.
#[derive(Debug)]
pub struct LabCgroup {
    pub path: PathBuf,
}

impl LabCgroup {
    /// Makes `name` directly under the cgroup2 mount (an earlier one of that name is
    /// removed first).
    pub fn create(name: &str) -> Result<Self, LabError> {
        let path = cgroup2_root()?.join(name);
        remove(&path);
        std::fs::create_dir(&path).map_err(io_error("mkdir", &path))?;
        Ok(Self { path })
    }

    /// The PIDs in the cgroup itself (children of it are not made by the lab).
    pub fn pids(&self) -> Vec<u32> {
        pids(&self.path)
    }
}

impl Drop for LabCgroup {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

fn pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills every process in the cgroup (`cgroup.kill`, Linux 5.14+), waits until it is
/// empty (at most 5 s) and removes the directory. Best effort: a cgroup that will not go
/// is left for the next run's stale removal.
fn remove(path: &Path) {
    if !path.exists() {
        return;
    }
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids(path).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The kernel frees a dying cgroup's last task asynchronously: rmdir can say EBUSY for
    // a moment after cgroup.procs reads empty.
    while std::fs::remove_dir(path).is_err() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes cgroups of earlier labs named `lead` + a PID whose process is gone.
pub fn remove_stale(lead: &str) {
    let Ok(root) = cgroup2_root() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(lead) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&entry.path());
        }
    }
}

/// The cgroup v2 path of process `pid`, relative to the cgroup2 mount (`/flb...-na`),
/// from /proc/PID/cgroup.
pub fn cgroup_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}
