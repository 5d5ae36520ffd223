//! Where the installed balancer reads VLAN tags, asked of the kernel rather than of the
//! daemon that installed it: the device-bound balancer's translated code calls a kernel
//! function (the metadata kfunc), the generic one's none (the loader put
//! `r0 = -EOPNOTSUPP` in its place). The kernel reports an offload device in
//! `bpf_prog_info` but not a device binding, hence the look at the code. `ferrolb list`
//! shows it.

use std::{
    io, mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
};

use aya::programs::links::{FdLink, LinkError, PinnedLink};
use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

use super::{
    devbound::{sys_bpf, BPF_PSEUDO_KFUNC_CALL, INSN_LEN, OP_CALL},
    VlanTagSource,
};

#[derive(Debug, thiserror::Error)]
pub enum TagSourceError {
    #[error("pinned link {path}: {source}")]
    Link { path: PathBuf, source: LinkError },
    #[error("the program behind {path}: {source}")]
    Program { path: PathBuf, source: io::Error },
}

/// How the balancer attached through the link pinned at `link` reads VLAN tags; `None`
/// when no link is pinned there.
pub fn attached_tag_source(link: &Path) -> Result<Option<VlanTagSource>, TagSourceError> {
    if !link.exists() {
        return Ok(None);
    }
    let link_err = |source| TagSourceError::Link {
        path: link.to_path_buf(),
        source,
    };
    let fd_link = FdLink::from(PinnedLink::from_pin(link).map_err(link_err)?);
    let prog_id = fd_link.info().map_err(link_err)?.program_id();
    let bound = calls_kfunc(prog_id).map_err(|source| TagSourceError::Program {
        path: link.to_path_buf(),
        source,
    })?;
    Ok(Some(if bound {
        VlanTagSource::MetadataAndFrame
    } else {
        VlanTagSource::FrameOnly
    }))
}

/// Whether program `prog_id`'s translated instructions call a kernel function.
fn calls_kfunc(prog_id: u32) -> io::Result<bool> {
    // SAFETY: bpf_attr is plain data; all zeroes is its "unset" value.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    attr.__bindgen_anon_6.__bindgen_anon_1.prog_id = prog_id;
    let fd = sys_bpf(bpf_cmd::BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: BPF_PROG_GET_FD_BY_ID returned a new file descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(fd) };
    // First the length of the translated code, then the code.
    let len = prog_info(&prog, |_| ())?.xlated_prog_len as usize;
    let mut code = vec![0u8; len];
    prog_info(&prog, |info| {
        info.xlated_prog_len = len as u32;
        info.xlated_prog_insns = code.as_mut_ptr() as u64;
    })?;
    Ok(code
        .chunks_exact(INSN_LEN)
        .any(|insn| insn[0] == OP_CALL && insn[1] >> 4 == BPF_PSEUDO_KFUNC_CALL))
}

/// `BPF_OBJ_GET_INFO_BY_FD` for a program, with `ask` filling in what to copy out.
fn prog_info(prog: &OwnedFd, ask: impl FnOnce(&mut bpf_prog_info)) -> io::Result<bpf_prog_info> {
    // SAFETY: bpf_prog_info is plain data; the kernel fills what it knows.
    let mut info: bpf_prog_info = unsafe { mem::zeroed() };
    ask(&mut info);
    // SAFETY: bpf_attr is plain data; all zeroes is its "unset" value.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    attr.info.bpf_fd = prog.as_raw_fd() as u32;
    attr.info.info_len = mem::size_of::<bpf_prog_info>() as u32;
    attr.info.info = &mut info as *mut bpf_prog_info as u64;
    sys_bpf(bpf_cmd::BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info)
}
