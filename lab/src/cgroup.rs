//! A lab's own cgroup v2 directories under the machine's cgroup2 mount. Socket programs
//! attach to them, so they see the lab's processes only and never the machine's root
//! cgroup. Removed on drop, also when a test panics, after killing what still runs in
//! them; leftovers of a crashed run (and their processes) are removed at the next start.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{netns_path, LabError};

#[derive(Debug)]
pub struct LabCgroup {
    pub path: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the machine mounts cgroup v2 (found as the daemon finds it, in /proc/mounts).
pub fn cgroup_root() -> Result<PathBuf, LabError> {
    lb_daemon::loader::default_cgroup_root().map_err(|e| LabError::Command {
        command: "find the cgroup2 mount".into(),
        stderr: e.to_string(),
    })
}

impl LabCgroup {
    /// Creates `<cgroup2 mount>/flb<tag><pid>-<role>`, after removing leftovers of earlier
    /// runs with this tag whose process is gone.
    pub fn create(tag: &str, role: &str) -> Result<Self, LabError> {
        let root = cgroup_root()?;
        remove_stale(tag);
        let path = root.join(format!("flb{tag}{}-{role}", std::process::id()));
        if path.exists() {
            remove(&path);
        }
        std::fs::create_dir(&path).map_err(io_error(&path))?;
        Ok(Self { path })
    }

    /// `program args…` run inside this cgroup and the network namespace `netns`.
    pub fn command(&self, netns: &str, program: &Path, args: &[&str]) -> Command {
        command_in(&self.path, netns, &program.display().to_string(), args)
    }
}

/// `program args…` run inside `cgroup` and the network namespace `netns`: the shell moves
/// itself into the cgroup, then becomes the program (nsenter enters the network namespace
/// only, as the labs do everywhere).
pub fn command_in(cgroup: &Path, netns: &str, program: &str, args: &[&str]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"echo $$ > "$1/cgroup.procs" && shift && exec nsenter "$@""#)
        .arg("sh")
        .arg(cgroup)
        .arg(netns_path(netns))
        .arg(program)
        .args(args);
    command
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
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pids(path).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    // The kernel frees a killed cgroup's last task asynchronously: rmdir can say EBUSY
    // for a moment after cgroup.procs reads empty.
    while std::fs::remove_dir(path).is_err() && path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes `flb<tag><pid>-…` cgroups whose process is gone.
pub fn remove_stale(tag: &str) {
    let lead = format!("flb{tag}");
    let Ok(root) = cgroup_root() else {
        return;
    };
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&lead) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists() {
            remove(&entry.path());
        }
    }
}

/// The cgroup v2 path of process `pid` relative to the cgroup2 mount (`/flb…-na`), from
/// /proc/PID/cgroup.
pub fn cgroup_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::").map(str::to_string))
}
