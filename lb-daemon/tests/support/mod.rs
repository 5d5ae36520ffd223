//! Helpers shared by the kernel tests: privilege checks and pin directories that clean up
//! after themselves, also when a test fails.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Kernel tests need root (BPF, netns). Outside CI they skip with a note; in CI (which
/// runs as root) a missing privilege is a failure, never a silent skip.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} needs root and CI runs as root: refusing to skip");
    }
    eprintln!("SKIPPED {what}: needs root");
    false
}

/// A pin directory under bpffs, removed with everything in it on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(tag: &str) -> Self {
        let path = PathBuf::from(format!(
            "/sys/fs/bpf/ferrolb-test-{tag}-{}",
            std::process::id()
        ));
        remove_pins(&path);
        Self { path }
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_pins(&self.path);
    }
}

pub fn remove_pins(path: &Path) {
    let _ = lb_daemon::loader::uninstall(path);
    let _ = std::fs::remove_dir_all(path);
}
