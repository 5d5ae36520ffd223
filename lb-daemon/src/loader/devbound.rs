//! The XDP balancer loaded device-bound, so it can read the VLAN tag a NIC took out of the
//! frame (rx VLAN stripping) from the packet's metadata.
//!
//! Metadata kfuncs (`bpf_xdp_metadata_rx_vlan_tag`) are callable only from a program
//! loaded for one device (`prog_ifindex` and `BPF_F_XDP_DEV_BOUND_ONLY`); aya's loader sets
//! neither and relocates no kfunc calls. So the eBPF object calls the kfunc as a helper
//! with a placeholder id (`lb_common::xdp_metadata`), and this module rewrites each such
//! call before the kernel sees the object: into the kfunc call for the device-bound load
//! here (which it then loads itself, with aya-obj's parser and relocations against the
//! maps aya created and pinned), and into `r0 = -EOPNOTSUPP` for every other load (test
//! runs, generic XDP), where the balancer falls back to reading the tag in band.

use std::{
    ffi::{CStr, CString},
    io, mem,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
    sync::OnceLock,
};

use aya::{maps::MapData, programs::Xdp};
use aya_obj::{
    btf::{Btf, BtfError, BtfKind},
    generated::{bpf_attach_type, bpf_attr, bpf_cmd, bpf_insn, bpf_prog_type},
    programs::XdpAttachType,
    relocation::EbpfRelocationError,
    Object,
};
use lb_common::{
    program_names,
    xdp_metadata::{DEVICE_BOUND_CALL, RX_VLAN_TAG_CALL, RX_VLAN_TAG_KFUNC},
};
use object::{Object as _, ObjectSection as _, SectionKind};

use crate::objects;

/// `BPF_F_XDP_DEV_BOUND_ONLY`: bound to `prog_ifindex` without being offloaded to it.
const BPF_F_XDP_DEV_BOUND_ONLY: u32 = 1 << 6;
/// `src_reg` of a call instruction that calls a kernel function by BTF id.
pub(super) const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
/// `BPF_JMP | BPF_CALL`.
pub(super) const OP_CALL: u8 = 0x85;
/// `BPF_ALU64 | BPF_MOV | BPF_K`.
const OP_MOV64_IMM: u8 = 0xb7;
pub(super) const INSN_LEN: usize = 8;
/// Verifier log kept when a load fails (the kernel keeps its tail, where the error is).
const LOG_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum DevboundError {
    #[error("reading the XDP object's sections: {0}")]
    Elf(#[from] object::Error),
    #[error("the XDP object has no {RX_VLAN_TAG_KFUNC} placeholder call to rewrite")]
    NoPlaceholder,
    #[error("finding {RX_VLAN_TAG_KFUNC} in the kernel's BTF: {0}")]
    KernelBtf(#[source] BtfError),
    #[error("parsing the XDP object: {0}")]
    Parse(#[from] aya_obj::ParseError),
    #[error("relocating the XDP object: {0}")]
    Relocate(#[from] EbpfRelocationError),
    #[error("pinned map {path}: {source}")]
    Map {
        path: PathBuf,
        source: aya::maps::MapError,
    },
    #[error("program {0} missing from the XDP object")]
    MissingProgram(&'static str),
    #[error("device-bound load for interface index {ifindex}: {source}{log}")]
    Load {
        ifindex: u32,
        source: io::Error,
        log: String,
    },
    #[error("handing the device-bound program over through {path}: {source}")]
    Handover { path: PathBuf, source: io::Error },
    #[error("opening the device-bound program: {0}")]
    Open(#[source] aya::programs::ProgramError),
    #[error("the interface's driver does not report VLAN tags in XDP metadata (no vlan-tag in its xdp-rx-metadata-features)")]
    DriverReportsNoVlanTag,
    #[error("asking the driver's XDP metadata features: {0}")]
    RxMetadata(#[from] super::RxMetadataError),
}

/// What each placeholder call becomes.
#[derive(Clone, Copy)]
enum Rewrite {
    /// A call of the kfunc with this id in vmlinux's BTF.
    Kfunc { btf_id: u32 },
    /// `r0 = -EOPNOTSUPP`: the balancer reads the tag in band only.
    Unsupported,
}

/// An ELF image in 8-byte-aligned storage: the ELF reader reads headers in place and
/// refuses misaligned ones.
pub struct PatchedObject {
    words: Vec<u64>,
    len: usize,
}

impl PatchedObject {
    fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: `words` owns at least `bytes.len()` initialised bytes, u8 has no
        // alignment, and the two buffers are distinct allocations.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                words.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            )
        };
        Self {
            words,
            len: bytes.len(),
        }
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the first `len` bytes of `words` are initialised (see `new`) and live
        // as long as `self`.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, borrowed mutably through `self`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// Rewrites every placeholder call in the object's executable sections; returns the
/// patched copy and how many tag reads (`RX_VLAN_TAG_CALL`) it rewrote. Every
/// `DEVICE_BOUND_CALL` becomes the constant the load is: 1 for a device-bound one.
fn patch(elf: &[u8], rewrite: Rewrite) -> Result<(PatchedObject, usize), DevboundError> {
    let file = object::File::parse(elf)?;
    let mut ranges = Vec::new();
    for section in file.sections() {
        if section.kind() == SectionKind::Text {
            if let Some(range) = section.file_range() {
                ranges.push(range);
            }
        }
    }
    let mut patched = PatchedObject::new(elf);
    let mut count = 0;
    for (offset, size) in ranges {
        let (start, end) = (offset as usize, (offset + size) as usize);
        let Some(text) = patched.bytes_mut().get_mut(start..end) else {
            continue;
        };
        // A wide (16-byte) instruction's second half has opcode 0, so stepping by 8
        // never reads one as a call.
        for insn in text.chunks_exact_mut(INSN_LEN) {
            let placeholder = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            // Opcode; dst_reg (low nibble) and src_reg (high nibble) both 0 in a helper call.
            if insn[0] != OP_CALL || insn[1] != 0 {
                continue;
            }
            let bound = matches!(rewrite, Rewrite::Kfunc { .. });
            let (op, regs, imm) = match (placeholder, rewrite) {
                (RX_VLAN_TAG_CALL, Rewrite::Kfunc { btf_id }) => {
                    (OP_CALL, BPF_PSEUDO_KFUNC_CALL << 4, btf_id as i32)
                }
                (RX_VLAN_TAG_CALL, Rewrite::Unsupported) => (OP_MOV64_IMM, 0, -libc::EOPNOTSUPP),
                (DEVICE_BOUND_CALL, _) => (OP_MOV64_IMM, 0, i32::from(bound)),
                _ => continue,
            };
            count += usize::from(placeholder == RX_VLAN_TAG_CALL);
            insn[0] = op;
            insn[1] = regs;
            insn[2..4].copy_from_slice(&0i16.to_le_bytes());
            insn[4..8].copy_from_slice(&imm.to_le_bytes());
        }
    }
    Ok((patched, count))
}

/// The balancer's object for every load that is not device-bound: each placeholder call
/// answers "not supported", so the balancer reads VLAN tags in band only.
pub fn generic_balancer() -> Result<&'static [u8], DevboundError> {
    static GENERIC: OnceLock<PatchedObject> = OnceLock::new();
    if let Some(object) = GENERIC.get() {
        return Ok(object.bytes());
    }
    let (object, _) = patch(objects::XDP_BALANCER, Rewrite::Unsupported)?;
    Ok(GENERIC.get_or_init(|| object).bytes())
}

/// Loads the balancer bound to interface `ifindex`, reading VLAN tags from the packet's
/// metadata, against the maps pinned in `pin_dir` (created there by aya first). It can
/// attach to that interface only, and in native (driver) mode only.
pub fn load_balancer_bound(pin_dir: &Path, ifindex: u32) -> Result<Xdp, DevboundError> {
    let btf_id = Btf::from_sys_fs()
        .and_then(|btf| btf.id_by_type_name_kind(RX_VLAN_TAG_KFUNC, BtfKind::Func))
        .map_err(DevboundError::KernelBtf)?;
    let (object, count) = patch(objects::XDP_BALANCER, Rewrite::Kfunc { btf_id })?;
    if count == 0 {
        return Err(DevboundError::NoPlaceholder);
    }
    let program = Relocated::new(object.bytes(), pin_dir)?;
    let fd = program.load(ifindex)?;
    open_as_xdp(&fd, pin_dir)
}

/// The balancer's instructions with maps and calls resolved, and the maps they name
/// (open until the kernel has taken its own references at load).
struct Relocated {
    instructions: Vec<bpf_insn>,
    license: CString,
    _maps: Vec<MapData>,
}

impl Relocated {
    fn new(elf: &[u8], pin_dir: &Path) -> Result<Self, DevboundError> {
        let mut obj = Object::parse(elf)?;
        let defs: Vec<(String, aya_obj::Map)> = obj.maps.drain().collect();
        let mut maps = Vec::with_capacity(defs.len());
        for (name, _) in &defs {
            let path = pin_dir.join(name);
            let map = MapData::from_pin(&path).map_err(|source| DevboundError::Map {
                path: path.clone(),
                source,
            })?;
            maps.push(map);
        }
        let text_sections = obj.functions.keys().map(|(section, _)| *section).collect();
        obj.relocate_maps(
            defs.iter()
                .zip(&maps)
                .map(|((name, def), map)| (name.as_str(), map.fd().as_fd().as_raw_fd(), def)),
            &text_sections,
        )?;
        obj.relocate_calls(&text_sections)?;
        let name = program_names::XDP_BALANCER;
        let program = obj
            .programs
            .get(name)
            .ok_or(DevboundError::MissingProgram(name))?;
        let function = obj
            .functions
            .get(&program.function_key())
            .ok_or(DevboundError::MissingProgram(name))?;
        Ok(Self {
            instructions: function.instructions.clone(),
            license: program.license.clone(),
            _maps: maps,
        })
    }

    /// `BPF_PROG_LOAD`, device-bound; on failure again with the verifier's log, for the
    /// error.
    fn load(&self, ifindex: u32) -> Result<OwnedFd, DevboundError> {
        let first = match self.prog_load(ifindex, &mut []) {
            Ok(fd) => return Ok(fd),
            Err(error) => error,
        };
        let mut log = vec![0u8; LOG_BYTES];
        let retried = self.prog_load(ifindex, &mut log);
        retried.map_err(|_| DevboundError::Load {
            ifindex,
            source: first,
            log: log_tail(&log),
        })
    }

    fn prog_load(&self, ifindex: u32, log: &mut [u8]) -> io::Result<OwnedFd> {
        // SAFETY: bpf_attr is plain data; all zeroes is its "unset" value.
        let mut attr: bpf_attr = unsafe { mem::zeroed() };
        // SAFETY: writing the BPF_PROG_LOAD member of the zeroed union.
        let load = unsafe { &mut attr.__bindgen_anon_3 };
        load.prog_type = bpf_prog_type::BPF_PROG_TYPE_XDP as u32;
        load.expected_attach_type = bpf_attach_type::BPF_XDP as u32;
        load.insns = self.instructions.as_ptr() as u64;
        load.insn_cnt = self.instructions.len() as u32;
        load.license = self.license.as_ptr() as u64;
        load.prog_ifindex = ifindex;
        load.prog_flags = BPF_F_XDP_DEV_BOUND_ONLY;
        let name = program_names::XDP_BALANCER.as_bytes();
        for (dst, src) in load.prog_name.iter_mut().zip(name.iter().take(15)) {
            *dst = *src as libc::c_char;
        }
        if !log.is_empty() {
            load.log_level = 1;
            load.log_buf = log.as_mut_ptr() as u64;
            load.log_size = log.len() as u32;
        }
        let fd = sys_bpf(bpf_cmd::BPF_PROG_LOAD, &mut attr)?;
        // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// The verifier log's last lines, where it says why it refused.
fn log_tail(log: &[u8]) -> String {
    let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(12)..].join("\n");
    if tail.is_empty() {
        String::new()
    } else {
        format!("\nverifier log (tail):\n{tail}")
    }
}

pub(super) fn sys_bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<i32> {
    // SAFETY: `attr` is a valid bpf_attr whose pointers (instructions, license, log,
    // path) outlive the call; the size passed is its size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_int,
            attr as *mut bpf_attr,
            mem::size_of::<bpf_attr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(ret as i32)
}

/// Hands a program loaded here to aya as an [`Xdp`] (aya opens programs only from a pin):
/// pins it under a name of this process in `pin_dir`, opens it, removes the pin.
fn open_as_xdp(fd: &OwnedFd, pin_dir: &Path) -> Result<Xdp, DevboundError> {
    let path = pin_dir.join(format!("xdp_bound_{}", std::process::id()));
    let handover = |source| DevboundError::Handover {
        path: path.clone(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| handover(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    pin(fd, &c_path).map_err(handover)?;
    let opened = Xdp::from_pin(&path, XdpAttachType::Interface).map_err(DevboundError::Open);
    std::fs::remove_file(&path).map_err(handover)?;
    opened
}

fn pin(fd: &OwnedFd, path: &CStr) -> io::Result<()> {
    // SAFETY: bpf_attr is plain data; all zeroes is its "unset" value.
    let mut attr: bpf_attr = unsafe { mem::zeroed() };
    // SAFETY: writing the BPF_OBJ_PIN member of the zeroed union.
    let obj = unsafe { &mut attr.__bindgen_anon_4 };
    obj.pathname = path.as_ptr() as u64;
    obj.bpf_fd = fd.as_raw_fd() as u32;
    sys_bpf(bpf_cmd::BPF_OBJ_PIN, &mut attr).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The call sites of the placeholder, as (opcode, regs, imm) after a rewrite.
    fn rewritten(rewrite: Rewrite) -> (usize, Vec<(u8, u8, i32)>) {
        let (object, count) = patch(objects::XDP_BALANCER, rewrite).expect("patch");
        let file = object::File::parse(object.bytes()).expect("parse");
        let mut seen = Vec::new();
        for section in file.sections() {
            if section.kind() != SectionKind::Text {
                continue;
            }
            for insn in section.data().expect("data").chunks_exact(INSN_LEN) {
                let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
                seen.push((insn[0], insn[1], imm));
            }
        }
        (count, seen)
    }

    #[test]
    fn every_placeholder_call_becomes_not_supported_outside_a_device_bound_load() {
        let (count, insns) = rewritten(Rewrite::Unsupported);
        assert!(count >= 1, "the balancer calls the placeholder");
        assert!(!insns.contains(&(OP_CALL, 0, RX_VLAN_TAG_CALL)));
        let answers = insns
            .iter()
            .filter(|i| **i == (OP_MOV64_IMM, 0, -libc::EOPNOTSUPP))
            .count();
        assert!(answers >= count);
        assert!(!insns.contains(&(OP_CALL, 0, DEVICE_BOUND_CALL)));
        assert!(insns.contains(&(OP_MOV64_IMM, 0, 0)));
    }

    #[test]
    fn every_placeholder_call_becomes_the_kfunc_call_in_a_device_bound_load() {
        let (count, insns) = rewritten(Rewrite::Kfunc { btf_id: 4242 });
        assert!(count >= 1);
        assert!(!insns.contains(&(OP_CALL, 0, RX_VLAN_TAG_CALL)));
        let calls = insns
            .iter()
            .filter(|i| **i == (OP_CALL, BPF_PSEUDO_KFUNC_CALL << 4, 4242))
            .count();
        assert_eq!(calls, count);
        assert!(!insns.contains(&(OP_CALL, 0, DEVICE_BOUND_CALL)));
        assert!(insns.contains(&(OP_MOV64_IMM, 0, 1)));
    }
}
