//! A lab's own cgroup v2 directory under the machine's cgroup2 mount. Socket programs
//! attach to it, so they see the lab's processes only and never the machine's root
//! cgroup. Removed on drop, also when a test panics; leftovers of a crashed run are
//! removed at the next start.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::LabError;

pub struct LabCgroup {
    pub path: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn cgroup_root() -> Result<PathBuf, LabError> {
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
        remove_stale(&root, tag);
        let path = root.join(format!("flb{tag}{}-{role}", std::process::id()));
        if path.exists() {
            remove(&path);
        }
        std::fs::create_dir(&path).map_err(io_error(&path))?;
        Ok(Self { path })
    }

    /// `program args…` run inside this cgroup and the network namespace `netns`: the
    /// shell moves itself into the cgroup, then becomes the program.
    pub fn command(&self, netns: &str, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(r#"echo $$ > "$1/cgroup.procs" && ns=$2 && shift 2 && exec ip netns exec "$ns" "$@""#)
            .arg("sh")
            .arg(&self.path)
            .arg(netns)
            .arg(program)
            .args(args);
        command
    }
}

impl Drop for LabCgroup {
    fn drop(&mut self) {
        remove(&self.path);
    }
}

/// Moves whatever still runs in `path` to its parent, then removes it.
fn remove(path: &Path) {
    if let (Some(parent), Ok(procs)) = (
        path.parent(),
        std::fs::read_to_string(path.join("cgroup.procs")),
    ) {
        for pid in procs.lines() {
            let _ = std::fs::write(parent.join("cgroup.procs"), pid);
        }
    }
    let _ = std::fs::remove_dir(path);
}

/// Removes `flb<tag><pid>-…` cgroups whose process is gone.
fn remove_stale(root: &Path, tag: &str) {
    let lead = format!("flb{tag}");
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
