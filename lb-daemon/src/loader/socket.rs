//! The socket programs (east-west balancing at `connect()`): loaded against the balancer's
//! pinned maps and attached to a cgroup v2 directory, one pinned link per program, so they
//! keep working while the daemon restarts. Every socket of a process in that cgroup or
//! below it is served.

use std::{
    fs::File,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use aya::{
    programs::{CgroupAttachMode, CgroupSockAddr},
    Ebpf,
};
use lb_common::program_names;

use super::{
    cgroup_link, into_fd_link, io_err, load_object, pin_link,
    pins::{pinned_sizes, statfs_type, SOCKET_MAPS},
    program, program_err, Attachment, LoaderError,
};
use crate::objects;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Each socket program and the name of its pinned link.
pub const SOCK_LINKS: [(&str, &str); 8] = [
    (program_names::SOCK_CONNECT4, "link_sock_connect4"),
    (program_names::SOCK_CONNECT6, "link_sock_connect6"),
    (program_names::SOCK_SENDMSG4, "link_sock_sendmsg4"),
    (program_names::SOCK_SENDMSG6, "link_sock_sendmsg6"),
    (program_names::SOCK_RECVMSG4, "link_sock_recvmsg4"),
    (program_names::SOCK_RECVMSG6, "link_sock_recvmsg6"),
    (program_names::SOCK_GETPEERNAME4, "link_sock_getpeername4"),
    (program_names::SOCK_GETPEERNAME6, "link_sock_getpeername6"),
];

/// Where the machine mounts cgroup v2, from /proc/mounts: `/sys/fs/cgroup` on a unified
/// host, `/sys/fs/cgroup/unified` (or similar) on a hybrid one.
pub fn default_cgroup_root() -> Result<PathBuf, LoaderError> {
    let path = Path::new("/proc/mounts");
    let mounts = std::fs::read_to_string(path).map_err(io_err(path))?;
    cgroup2_mount(&mounts).ok_or(LoaderError::NoCgroup2)
}

/// The first cgroup2 mount point listed in a /proc/mounts text.
fn cgroup2_mount(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount_field(target)))
    })
}

/// /proc/mounts writes space, tab, newline and backslash in paths as `\ooo` octal.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|_| bytes[i] == b'\\');
        match octal.and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok()) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Refuses anything but a directory of a cgroup v2 hierarchy: a v1 controller directory
/// accepts no sock_addr programs, and the kernel's own error would not say why.
fn check_cgroup2(dir: &Path) -> Result<(), LoaderError> {
    let is_dir = std::fs::metadata(dir).map_err(io_err(dir))?.is_dir();
    if !is_dir || statfs_type(dir).map_err(io_err(dir))? != CGROUP2_SUPER_MAGIC {
        return Err(LoaderError::NotCgroup2(dir.to_path_buf()));
    }
    Ok(())
}

/// Loads the socket programs against the maps pinned in `pin_dir` (creating those that
/// are missing), unattached.
pub fn load_socket(pin_dir: &Path) -> Result<Ebpf, LoaderError> {
    load_object(
        pin_dir,
        &pinned_sizes(pin_dir),
        SOCKET_MAPS,
        objects::SOCK,
        program_names::SOCK_CONNECT4,
        |ebpf, _| {
            for (name, _) in SOCK_LINKS {
                program::<CgroupSockAddr>(ebpf, name)?
                    .load()
                    .map_err(program_err(name))?;
            }
            Ok(())
        },
    )
}

/// Loads the socket programs and attaches them to the cgroup v2 directory `cgroup`, each
/// through its link pinned in `pin_dir`: an earlier daemon's link on the same cgroup gets
/// this build's program swapped in atomically; a link left on another cgroup (or on one
/// that is gone) is replaced by a new one.
pub fn install_socket(cgroup: &Path, pin_dir: &Path) -> Result<Attachment, LoaderError> {
    check_cgroup2(cgroup)?;
    let dir = File::open(cgroup).map_err(io_err(cgroup))?;
    let cgroup_id = cgroup_link::cgroup_id(cgroup).map_err(io_err(cgroup))?;
    let mut ebpf = load_socket(pin_dir)?;
    let mut attachment = Attachment::Replaced;
    for (name, link) in SOCK_LINKS {
        let prog: &mut CgroupSockAddr = program(&mut ebpf, name)?;
        if attach(prog, name, &pin_dir.join(link), &dir, cgroup_id)? == Attachment::New {
            attachment = Attachment::New;
        }
    }
    Ok(attachment)
}

fn attach(
    prog: &mut CgroupSockAddr,
    name: &'static str,
    link_path: &Path,
    cgroup: &File,
    cgroup_id: u64,
) -> Result<Attachment, LoaderError> {
    if link_path.exists() {
        let link = cgroup_link::open_pinned(link_path).map_err(io_err(link_path))?;
        let attached_to = cgroup_link::cgroup_of(link.as_fd()).map_err(io_err(link_path))?;
        if attached_to == Some(cgroup_id) {
            let prog_fd = prog.fd().map_err(program_err(name))?;
            cgroup_link::replace_program(link.as_fd(), prog_fd.as_fd())
                .map_err(io_err(link_path))?;
            return Ok(Attachment::Replaced);
        }
        // Unpinned, the old link detaches once `link` (the last reference) is dropped.
        std::fs::remove_file(link_path).map_err(io_err(link_path))?;
    }
    let id = prog
        .attach(cgroup.as_fd(), CgroupAttachMode::Single)
        .map_err(program_err(name))?;
    let fd_link = into_fd_link(prog.take_link(id).map_err(program_err(name))?, name)?;
    pin_link(fd_link, link_path)?;
    Ok(Attachment::New)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_host() {
        let mounts = "\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,relatime,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
";
        assert_eq!(
            cgroup2_mount(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
    }

    #[test]
    fn finds_none_without_cgroup2_and_unescapes_paths() {
        assert_eq!(
            cgroup2_mount("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
        let mounts = "none /mnt/my\\040cgroups cgroup2 rw 0 0\n";
        assert_eq!(
            cgroup2_mount(mounts),
            Some(PathBuf::from("/mnt/my cgroups"))
        );
    }

    #[test]
    fn a_file_outside_cgroup2_is_refused() {
        let err = check_cgroup2(Path::new("/proc/self")).unwrap_err();
        assert!(matches!(err, LoaderError::NotCgroup2(_)), "{err}");
    }
}
