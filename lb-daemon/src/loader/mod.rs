//! Loading, attaching, pinning, adopting and removing the kernel programs.
//!
//! Maps are pinned by name in the pin directory and links are pinned next to them, so the
//! programs keep running after the daemon exits. A daemon that starts and finds a pinned
//! link loads the programs against the same pinned maps and swaps the program inside the
//! existing link atomically (`bpf_link_update`): forwarding never stops.

use std::{
    ffi::CString,
    io,
    path::{Path, PathBuf},
};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use lb_common::{maglev_words, map_names, program_names, FlowSet};

use crate::objects;

mod cgroup_link;
mod devbound;
mod flow_cache;
mod lock;
mod pins;
mod rx_metadata;
mod socket;
mod syn_filter;
mod tag_source;
mod vlan_tags;
pub use devbound::DevboundError;
pub use lock::{interface_lock_path, pin_dir_lock_path, DatapathLock, LockError, DEFAULT_LOCK_DIR};
use pins::{
    check_pinned_layouts, expected_layouts, possible_cpus, BACKEND_SIDE_MAPS, BALANCER_MAPS,
};
pub use pins::{prepare_pin_dir, MapSizes};
pub use rx_metadata::{reports_vlan_tag, RxMetadataError};
pub use socket::{default_cgroup_root, install_socket, load_socket, SOCK_LINKS};
pub use tag_source::{attached_tag_source, TagSourceError};
pub use vlan_tags::{VlanMetadata, VlanTagSource};

pub const XDP_LINK_PIN: &str = "link_xdp";
pub const TC_LINK_PIN: &str = "link_tc_ingress";
pub const TC_EGRESS_LINK_PIN: &str = "link_tc_egress";

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{0} is not on a BPF filesystem (mount -t bpf bpf /sys/fs/bpf)")]
    NotBpfFs(PathBuf),
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error(
        "pinned map {name} has key/value/entries {found:?}, this build expects {expected:?}; \
         run `ferrolb cleanup --pin-dir {dir}` to remove the old datapath first"
    )]
    IncompatibleMap {
        name: &'static str,
        found: (u32, u32, u32),
        expected: (u32, u32, u32),
        dir: String,
    },
    #[error("{0} is not a cgroup v2 directory (the socket programs attach only to cgroup v2; see `grep cgroup2 /proc/mounts`)")]
    NotCgroup2(PathBuf),
    #[error("no cgroup v2 filesystem is mounted (/proc/mounts lists no cgroup2; mount -t cgroup2 none /sys/fs/cgroup/unified)")]
    NoCgroup2,
    #[error("loading eBPF object: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("program {0} missing from the embedded object")]
    MissingProgram(&'static str),
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("pinned link {path}: {source}")]
    Link {
        path: PathBuf,
        source: aya::programs::links::LinkError,
    },
    #[error(transparent)]
    Devbound(#[from] DevboundError),
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> LoaderError + '_ {
    move |source| LoaderError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The interface's index in this network namespace.
pub fn ifindex(iface: &str) -> Result<u32, LoaderError> {
    let c = CString::new(iface).map_err(|_| LoaderError::NoInterface(iface.into()))?;
    // SAFETY: valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(LoaderError::NoInterface(iface.into()));
    }
    Ok(index)
}

fn program_err(name: &'static str) -> impl FnOnce(aya::programs::ProgramError) -> LoaderError {
    move |source| LoaderError::Program { name, source }
}

/// The program `name` of an object, as its concrete type.
fn program<'e, P>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut P, LoaderError>
where
    &'e mut P: TryFrom<&'e mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or(LoaderError::MissingProgram(name))?
        .try_into()
        .map_err(program_err(name))
}

fn open_pinned_link(path: &Path) -> Result<Option<FdLink>, LoaderError> {
    if !path.exists() {
        return Ok(None);
    }
    let link = PinnedLink::from_pin(path).map_err(|source| LoaderError::Link {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Some(link.into()))
}

/// What `install_*` did with the attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Attached for the first time and pinned.
    New,
    /// An earlier daemon's pinned link now runs this build's program.
    Replaced,
}

/// Loads the XDP balancer against the maps pinned in `pin_dir` (creating them on first use)
/// without attaching it; `test_run` fixtures and benchmarks use this directly.
pub fn load_balancer(pin_dir: &Path) -> Result<Ebpf, LoaderError> {
    load_balancer_sized(pin_dir, &MapSizes::default())
}

/// `load_balancer` with chosen map capacities.
pub fn load_balancer_sized(pin_dir: &Path, sizes: &MapSizes) -> Result<Ebpf, LoaderError> {
    load_object(
        pin_dir,
        sizes,
        BALANCER_MAPS,
        devbound::generic_balancer()?,
        program_names::XDP_BALANCER,
        |ebpf, name| {
            program::<Xdp>(ebpf, name)?
                .load()
                .map_err(program_err(name))
        },
    )
}

/// Loads the backend-side programs (ingress decapsulation and translation, egress reply
/// restoration) against their pinned maps, unattached.
pub fn load_backend_side(pin_dir: &Path) -> Result<Ebpf, LoaderError> {
    load_object(
        pin_dir,
        &MapSizes::default(),
        BACKEND_SIDE_MAPS,
        objects::BACKEND_SIDE,
        program_names::TC_DECAP,
        |ebpf, name| {
            program::<SchedClassifier>(ebpf, name)?
                .load()
                .map_err(program_err(name))?;
            let revnat = program_names::TC_REVNAT;
            program::<SchedClassifier>(ebpf, revnat)?
                .load()
                .map_err(program_err(revnat))
        },
    )
}

fn load_object(
    pin_dir: &Path,
    sizes: &MapSizes,
    maps: &[&str],
    object: &[u8],
    name: &'static str,
    load: impl FnOnce(&mut Ebpf, &'static str) -> Result<(), LoaderError>,
) -> Result<Ebpf, LoaderError> {
    prepare_pin_dir(pin_dir)?;
    check_pinned_layouts(pin_dir, sizes, maps)?;
    // A SYN filter this load creates beside a pinned TCP table is filled from the table.
    let filter_needs_rebuild = maps.contains(&map_names::FLOW_FILTER)
        && !pin_dir.join(map_names::FLOW_FILTER).exists()
        && pin_dir.join(map_names::FLOWS).exists();
    let mut ebpf = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .map_max_entries(map_names::MAGLEV, maglev_words::words(sizes.maglev_slots))
        .map_max_entries(map_names::FLOWS, FlowSet::sets(sizes.flows))
        .map_max_entries(map_names::FLOW_FILTER, FlowSet::sets(sizes.flows))
        .map_max_entries(map_names::UDP_FLOWS, FlowSet::sets(sizes.udp_flows))
        .map_max_entries(map_names::AFFINITY, sizes.affinity)
        .map_max_entries(map_names::SOCK_AFFINITY, sizes.affinity)
        .map_max_entries(
            map_names::FLOW_CACHE,
            flow_cache::outer_entries(possible_cpus()?),
        )
        .load(object)?;
    flow_cache::install(&mut ebpf, pin_dir)?;
    if filter_needs_rebuild {
        let sets = syn_filter::rebuild(&mut ebpf, crate::host::kernel_btf::array_value_skew())?;
        tracing::info!(
            sets,
            "filled the new SYN filter from the pinned TCP flow table"
        );
    }
    load(&mut ebpf, name)?;
    Ok(ebpf)
}

/// Attaches through the link pinned at `link_path` if an earlier daemon left one (the
/// kernel swaps the program atomically), else attaches anew and pins the link there.
fn attach_pinned<P, L>(
    prog: &mut P,
    name: &'static str,
    link_path: PathBuf,
    replace: impl FnOnce(&mut P, L) -> Result<(), aya::programs::ProgramError>,
    attach: impl FnOnce(&mut P) -> Result<FdLink, LoaderError>,
) -> Result<Attachment, LoaderError>
where
    L: TryFrom<FdLink, Error = aya::programs::links::LinkError>,
{
    if let Some(fd_link) = open_pinned_link(&link_path)? {
        let link = L::try_from(fd_link).map_err(|source| LoaderError::Link {
            path: link_path.clone(),
            source,
        })?;
        replace(prog, link).map_err(program_err(name))?;
        return Ok(Attachment::Replaced);
    }
    let fd_link = attach(prog)?;
    pin_link(fd_link, &link_path)?;
    Ok(Attachment::New)
}

/// Pins a new link at `path`: from then on it outlives the daemon.
fn pin_link(link: FdLink, path: &Path) -> Result<(), LoaderError> {
    link.pin(path).map(drop).map_err(|source| LoaderError::Pin {
        path: path.to_path_buf(),
        source,
    })
}

fn into_fd_link<L>(link: L, name: &'static str) -> Result<FdLink, LoaderError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    FdLink::try_from(link).map_err(|source| LoaderError::Link {
        path: PathBuf::from(name),
        source,
    })
}

/// Loads the XDP balancer against the pinned maps and attaches it to `iface`, or swaps it
/// into the link an earlier daemon pinned. With `vlan_metadata` on and a native mode, the
/// program is loaded bound to the interface so it reads VLAN tags from the packet's
/// metadata too; where that fails it is loaded as before, with one warning
/// ([`VlanTagSource`] says which).
pub fn install_balancer(
    iface: &str,
    pin_dir: &Path,
    mode: XdpMode,
    sizes: &MapSizes,
    vlan_metadata: VlanMetadata,
) -> Result<(Attachment, VlanTagSource), LoaderError> {
    let index = ifindex(iface)?;
    if let Some(attachment) =
        vlan_tags::install_bound(iface, index, pin_dir, mode, sizes, vlan_metadata)
    {
        return Ok((attachment, VlanTagSource::MetadataAndFrame));
    }
    let mut ebpf = load_balancer_sized(pin_dir, sizes)?;
    let prog: &mut Xdp = program(&mut ebpf, program_names::XDP_BALANCER)?;
    let attachment = attach_balancer(prog, iface, pin_dir, mode)?;
    Ok((attachment, VlanTagSource::FrameOnly))
}

/// Attaches a loaded balancer (through the pinned link if there is one).
fn attach_balancer(
    prog: &mut Xdp,
    iface: &str,
    pin_dir: &Path,
    mode: XdpMode,
) -> Result<Attachment, LoaderError> {
    let name = program_names::XDP_BALANCER;
    attach_pinned(
        prog,
        name,
        pin_dir.join(XDP_LINK_PIN),
        |prog, link: XdpLink| prog.attach_to_link(link).map(drop),
        |prog| {
            let id = prog.attach(iface, mode).map_err(program_err(name))?;
            into_fd_link(prog.take_link(id).map_err(program_err(name))?, name)
        },
    )
}

/// Loads the backend-side programs and attaches them to `iface` (tcx): decapsulation and
/// translation on ingress, reply restoration on egress, each through its pinned link.
pub fn install_backend_side(iface: &str, pin_dir: &Path) -> Result<Attachment, LoaderError> {
    ifindex(iface)?;
    let mut ebpf = load_backend_side(pin_dir)?;
    let mut attachment = Attachment::Replaced;
    for (name, direction, link) in [
        (program_names::TC_DECAP, TcAttachType::Ingress, TC_LINK_PIN),
        (
            program_names::TC_REVNAT,
            TcAttachType::Egress,
            TC_EGRESS_LINK_PIN,
        ),
    ] {
        let prog: &mut SchedClassifier = program(&mut ebpf, name)?;
        let done = attach_pinned(
            prog,
            name,
            pin_dir.join(link),
            |prog, link: SchedClassifierLink| prog.attach_to_link(link).map(drop),
            |prog| {
                let id = prog.attach(iface, direction).map_err(program_err(name))?;
                into_fd_link(prog.take_link(id).map_err(program_err(name))?, name)
            },
        )?;
        if done == Attachment::New {
            attachment = Attachment::New;
        }
    }
    Ok(attachment)
}

/// Attaches the pass-everything XDP program to `iface` and pins its link at `link_pin`
/// (veth needs an XDP program on the side that receives redirected frames).
pub fn install_pass(iface: &str, link_pin: &Path) -> Result<(), LoaderError> {
    if let Some(parent) = link_pin.parent() {
        prepare_pin_dir(parent)?;
    }
    ifindex(iface)?;
    let mut ebpf = EbpfLoader::new().load(objects::XDP_PASS)?;
    let name = program_names::XDP_PASS;
    let prog: &mut Xdp = program(&mut ebpf, name)?;
    prog.load().map_err(program_err(name))?;
    let id = prog
        .attach(iface, XdpMode::Driver)
        .map_err(program_err(name))?;
    let fd_link = into_fd_link(prog.take_link(id).map_err(program_err(name))?, name)?;
    pin_link(fd_link, link_pin)
}

/// What `uninstall` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub links: Vec<String>,
    pub maps: Vec<String>,
    pub left: Vec<String>,
}

/// Detaches the socket programs (removes their pinned links); returns the links removed.
pub fn uninstall_socket(pin_dir: &Path) -> Result<Vec<&'static str>, LoaderError> {
    let mut removed = Vec::new();
    for (_, link) in SOCK_LINKS {
        let path = pin_dir.join(link);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed.push(link);
        }
    }
    Ok(removed)
}

/// Detaches everything installed under `pin_dir` and removes the pins and the directory.
/// Links go first (unpinning the last reference detaches the program), then maps. Files it
/// does not know are left alone and reported.
pub fn uninstall(pin_dir: &Path) -> Result<Removed, LoaderError> {
    let mut removed = Removed::default();
    if !pin_dir.exists() {
        return Ok(removed);
    }
    removed.links = uninstall_socket(pin_dir)?
        .into_iter()
        .map(str::to_string)
        .collect();
    for link in [XDP_LINK_PIN, TC_LINK_PIN, TC_EGRESS_LINK_PIN] {
        let path = pin_dir.join(link);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed.links.push(link.to_string());
        }
    }
    // Only the names matter here; the flow cache is re-made at each load, so it has no
    // layout to check but is pinned all the same.
    let names = expected_layouts(&MapSizes::default())
        .into_iter()
        .map(|(name, _)| name)
        .chain([map_names::FLOW_CACHE]);
    for name in names {
        let path = pin_dir.join(name);
        if path.exists() {
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            removed.maps.push(name.to_string());
        }
    }
    for entry in std::fs::read_dir(pin_dir).map_err(io_err(pin_dir))? {
        let entry = entry.map_err(io_err(pin_dir))?;
        removed
            .left
            .push(entry.file_name().to_string_lossy().into_owned());
    }
    if removed.left.is_empty() {
        std::fs::remove_dir(pin_dir).map_err(io_err(pin_dir))?;
    }
    Ok(removed)
}
