//! The health state file: the daemon writes every target's check and health after each
//! change; `ferrolb list` reads it. The pin directory is a bpffs, which holds only pins, so
//! the file lives under [`STATE_DIR`], named after the pin directory (one file per
//! datapath instance, found from `--pin-dir` alone).

use std::{
    io,
    net::IpAddr,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{BackendHealth, Target};

/// Where state files live (tmpfs on a systemd host, gone after a reboot like the pins).
pub const STATE_DIR: &str = "/run/ferrolb";

/// The state file of the datapath pinned at `pin_dir`.
pub fn state_path(pin_dir: &Path) -> PathBuf {
    let name: String = pin_dir
        .display()
        .to_string()
        .trim_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    Path::new(STATE_DIR).join(format!("{name}.health.json"))
}

/// One checked backend of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub frontend: String,
    pub backend: IpAddr,
    pub check: String,
    #[serde(flatten)]
    pub state: BackendHealth,
}

/// What the file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// The daemon that wrote it; `ferrolb list` marks the report stale once it is gone.
    pub pid: u32,
    pub targets: Vec<TargetView>,
}

impl HealthReport {
    pub fn new(targets: impl Iterator<Item = (Target, String, BackendHealth)>) -> Self {
        Self {
            pid: std::process::id(),
            targets: targets
                .map(|((frontend, backend), check, state)| TargetView {
                    frontend: frontend.to_string(),
                    backend,
                    check,
                    state,
                })
                .collect(),
        }
    }

    /// Whether the daemon that wrote it still runs.
    pub fn writer_alive(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// The checked backends of `frontend` (as `Frontend`'s `Display` writes it).
    pub fn of<'a>(&'a self, frontend: &'a str) -> impl Iterator<Item = &'a TargetView> + 'a {
        self.targets.iter().filter(move |t| t.frontend == frontend)
    }
}

/// Writes one datapath's state file, whole, by rename.
pub struct Publisher {
    path: PathBuf,
}

impl Publisher {
    pub fn new(pin_dir: &Path) -> Self {
        Self {
            path: state_path(pin_dir),
        }
    }

    pub fn write(&self, report: &HealthReport) -> io::Result<()> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(report)?)?;
        std::fs::rename(&tmp, &self.path)
    }

    /// Gone with the daemon: a stopped daemon checks nothing.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The state file of the datapath at `pin_dir`, if a daemon with checks wrote one.
pub fn read(pin_dir: &Path) -> io::Result<Option<HealthReport>> {
    match std::fs::read(state_path(pin_dir)) {
        Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_file_per_pin_dir() {
        assert_eq!(
            state_path(Path::new("/sys/fs/bpf/ferrolb")),
            Path::new("/run/ferrolb/sys_fs_bpf_ferrolb.health.json")
        );
        assert_ne!(
            state_path(Path::new("/sys/fs/bpf/a")),
            state_path(Path::new("/sys/fs/bpf/b"))
        );
    }
}
