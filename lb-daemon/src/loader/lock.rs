//! One owner per datapath. A daemon holds an exclusive `flock` on two lock files for as
//! long as it runs: one for its pin directory and one for its interface (by network
//! namespace and ifindex, so labs in other namespaces never collide). Each file holds the
//! holder's PID, so whoever is refused can be told who holds it. bpffs cannot hold regular
//! files, so the files live in a lock directory (`/run/ferrolb` by default). The kernel
//! drops a `flock` when its holder exits, also on `kill -9`, so no lock outlives its
//! daemon; the files stay (empty) and are reused: unlinking them would let two processes
//! lock two different files of one name.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Seek, Write},
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
};

/// Where lock files live unless `--lock-dir` says otherwise.
pub const DEFAULT_LOCK_DIR: &str = "/run/ferrolb";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{what} is in use by ferrolb process {pid} (lock {path}); one daemon owns a datapath: \
         stop that one first"
    )]
    Held {
        what: String,
        pid: String,
        path: PathBuf,
    },
    #[error("lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A held lock file; released (and its PID cleared) on drop.
#[derive(Debug)]
struct LockFile {
    path: PathBuf,
    file: File,
}

impl LockFile {
    /// Takes the lock at `path` without waiting, or names its holder.
    fn acquire(path: PathBuf, what: String) -> Result<Self, LockError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(&path)(err));
            }
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = match pid.trim() {
                "" => "(unknown)".to_string(),
                p => p.to_string(),
            };
            return Err(LockError::Held { what, pid, path });
        }
        file.set_len(0).map_err(io_err(&path))?;
        file.rewind().map_err(io_err(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        Ok(Self { path, file })
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // The PID goes first, so nobody reads a stale holder; closing the file unlocks.
        if let Err(e) = self.file.set_len(0) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot clear the lock's PID");
        }
    }
}

/// The locks of one datapath, held until dropped.
#[derive(Debug)]
pub struct DatapathLock {
    _files: Vec<LockFile>,
}

impl DatapathLock {
    /// Locks the pin directory and the interface (in that order), or says who holds them.
    pub fn acquire(lock_dir: &Path, pin_dir: &Path, ifindex: u32) -> Result<Self, LockError> {
        let pin = Self::pin_dir(lock_dir, pin_dir)?;
        let iface = LockFile::acquire(
            interface_lock_path(lock_dir, ifindex)?,
            format!("interface index {ifindex} (this network namespace)"),
        )?;
        let mut files = pin._files;
        files.push(iface);
        Ok(Self { _files: files })
    }

    /// Locks only the pin directory (`ferrolb cleanup` takes this one).
    pub fn pin_dir(lock_dir: &Path, pin_dir: &Path) -> Result<Self, LockError> {
        let file = LockFile::acquire(
            pin_dir_lock_path(lock_dir, pin_dir),
            format!("pin directory {}", pin_dir.display()),
        )?;
        Ok(Self { _files: vec![file] })
    }
}

/// The lock file of a pin directory: its absolute path, escaped into one file name
/// (`/` as `-`, other characters than letters, digits and `.` as `%XX`).
pub fn pin_dir_lock_path(lock_dir: &Path, pin_dir: &Path) -> PathBuf {
    let absolute = std::fs::canonicalize(pin_dir)
        .or_else(|_| std::path::absolute(pin_dir))
        .unwrap_or_else(|_| pin_dir.to_path_buf());
    let mut name = String::from("pin");
    for byte in absolute.as_os_str().as_encoded_bytes() {
        match byte {
            b'/' => name.push('-'),
            b if b.is_ascii_alphanumeric() || *b == b'.' => name.push(char::from(*b)),
            b => name.push_str(&format!("%{b:02X}")),
        }
    }
    lock_dir.join(format!("{name}.lock"))
}

/// The lock file of an interface: ifindexes are per network namespace, so the
/// namespace's inode is part of the name.
pub fn interface_lock_path(lock_dir: &Path, ifindex: u32) -> Result<PathBuf, LockError> {
    let ns = Path::new("/proc/self/ns/net");
    let netns = std::fs::metadata(ns).map_err(io_err(ns))?.ino();
    Ok(lock_dir.join(format!("iface-netns{netns}-if{ifindex}.lock")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fl-hard-lock-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A second holder (another open file description, as another process has) is refused.
    #[test]
    fn a_second_owner_of_a_pin_dir_is_refused_with_the_holders_pid() {
        let locks = scratch("pin");
        let first = DatapathLock::acquire(&locks, Path::new("/sys/fs/bpf/fl-hard-a"), 7).unwrap();
        let err = DatapathLock::acquire(&locks, Path::new("/sys/fs/bpf/fl-hard-a"), 8).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&std::process::id().to_string()) && msg.contains("fl-hard-a"),
            "{msg}"
        );
        // Cleanup's lock is the same pin-directory lock.
        assert!(DatapathLock::pin_dir(&locks, Path::new("/sys/fs/bpf/fl-hard-a")).is_err());
        drop(first);
        DatapathLock::acquire(&locks, Path::new("/sys/fs/bpf/fl-hard-a"), 8).unwrap();
        let _ = std::fs::remove_dir_all(&locks);
    }

    #[test]
    fn a_second_owner_of_an_interface_is_refused_whatever_its_pin_dir() {
        let locks = scratch("iface");
        let _first = DatapathLock::acquire(&locks, Path::new("/sys/fs/bpf/fl-hard-b"), 9).unwrap();
        let err = DatapathLock::acquire(&locks, Path::new("/sys/fs/bpf/fl-hard-c"), 9).unwrap_err();
        assert!(err.to_string().contains("interface index 9"), "{err}");
        // The refused attempt left the other pin directory unlocked.
        DatapathLock::pin_dir(&locks, Path::new("/sys/fs/bpf/fl-hard-c")).unwrap();
        let _ = std::fs::remove_dir_all(&locks);
    }

    #[test]
    fn lock_names_keep_distinct_pin_dirs_apart() {
        let dir = Path::new("/run/x");
        let a = pin_dir_lock_path(dir, Path::new("/sys/fs/bpf/a-b"));
        let b = pin_dir_lock_path(dir, Path::new("/sys/fs/bpf/a/b"));
        assert_ne!(a, b);
        assert_eq!(a, dir.join("pin-sys-fs-bpf-a%2Db.lock"));
    }
}
