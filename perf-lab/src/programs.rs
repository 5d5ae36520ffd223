//! Loading and attaching perf-lab's own programs: the redirect ceiling, the counting
//! sink, the XDP_PASS program veth needs on receiving sides, and the parking that keeps
//! BPF_PROG_RUN cheap. The live-frame generator is in `generator`.

use aya::{
    maps::{Array, MapData, PerCpuArray},
    programs::{Xdp, XdpMode},
    Ebpf, EbpfLoader,
};

use crate::{
    netns::{Netns, NetnsError},
    objects::{
        layout::{
            RedirectConfig, COUNT_FRAMES, COUNT_IGNORED, MAP_COUNT, MAP_REDIRECT_CONFIG,
            PROG_COUNT, PROG_REDIRECT,
        },
        PERF_PROGRAMS,
    },
};

#[derive(Debug, thiserror::Error)]
pub enum ProgramsError {
    #[error("loading eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("program {0} missing from the object")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("building the template frame: {0}")]
    Template(String),
    #[error("generator returned {0} instead of XDP_TX")]
    GeneratorVerdict(u32),
}

pub(crate) fn prog_err(
    name: &'static str,
) -> impl FnOnce(aya::programs::ProgramError) -> ProgramsError {
    move |source| ProgramsError::Program { name, source }
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> ProgramsError {
    move |source| ProgramsError::Map { name, source }
}

/// Writes `value` into element 0 of the array map `name` (the one-element config maps).
pub(crate) fn set_first<T: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &'static str,
    value: T,
) -> Result<(), ProgramsError> {
    let map = ebpf.map_mut(name).ok_or(ProgramsError::Missing(name))?;
    Array::<_, T>::try_from(map)
        .map_err(map_err(name))?
        .set(0, value, 0)
        .map_err(map_err(name))
}

fn xdp<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, ProgramsError> {
    ebpf.program_mut(name)
        .ok_or(ProgramsError::Missing(name))?
        .try_into()
        .map_err(prog_err(name))
}

/// Loads `name` from `object` and attaches it to `iface` inside `ns` (driver mode, which
/// veth supports). The attachment lives as long as the returned object.
pub fn attach_in(
    ns: &Netns,
    object: &[u8],
    name: &'static str,
    iface: &str,
) -> Result<Ebpf, ProgramsError> {
    let mut ebpf = EbpfLoader::new().load(object)?;
    attach_loaded(ns, &mut ebpf, name, iface)?;
    Ok(ebpf)
}

/// Attaches an already loaded (or loadable) program inside `ns`.
pub fn attach_loaded(
    ns: &Netns,
    ebpf: &mut Ebpf,
    name: &'static str,
    iface: &str,
) -> Result<(), ProgramsError> {
    let prog = xdp(ebpf, name)?;
    if prog.fd().is_err() {
        prog.load().map_err(prog_err(name))?;
    }
    ns.run_inside(None, || {
        prog.attach(iface, XdpMode::Driver)
            .map(drop)
            .map_err(prog_err(name))
    })?
}

/// A veth pair that stays down, only there to hold XDP attachments.
///
/// BPF_PROG_RUN for XDP adds the program to the kernel's XDP dispatcher on entry and
/// removes it on exit; each change waits for an RCU grace period (about 10 ms here) when
/// other XDP programs are attached anywhere, which dominated small live-frame calls. A
/// program that is attached somewhere is already in the dispatcher, so parking it on a
/// veth that never sees a frame makes those changes no-ops.
pub const PARK_IFS: [&str; 2] = ["park0", "park1"];

pub fn create_parking(ns: &Netns) -> Result<(), ProgramsError> {
    ns.exec(
        "ip",
        &[
            "link",
            "add",
            PARK_IFS[0],
            "type",
            "veth",
            "peer",
            "name",
            PARK_IFS[1],
        ],
    )?;
    Ok(())
}

/// The ceiling: rewrites MACs and redirects to the DUT's egress veth.
pub fn attach_redirect(
    ns: &Netns,
    iface: &str,
    config: RedirectConfig,
) -> Result<Ebpf, ProgramsError> {
    let mut ebpf = EbpfLoader::new().load(PERF_PROGRAMS)?;
    set_first(&mut ebpf, MAP_REDIRECT_CONFIG, config)?;
    attach_loaded(ns, &mut ebpf, PROG_REDIRECT, iface)?;
    Ok(ebpf)
}

/// The counting sink on a backend-side veth.
pub struct Sink {
    counts: PerCpuArray<MapData, u64>,
    _ebpf: Ebpf,
}

impl Sink {
    pub fn attach(ns: &Netns, iface: &str) -> Result<Self, ProgramsError> {
        let mut ebpf = attach_in(ns, PERF_PROGRAMS, PROG_COUNT, iface)?;
        let map = ebpf
            .take_map(MAP_COUNT)
            .ok_or(ProgramsError::Missing(MAP_COUNT))?;
        let counts = PerCpuArray::try_from(map).map_err(map_err(MAP_COUNT))?;
        Ok(Self {
            counts,
            _ebpf: ebpf,
        })
    }

    fn slot(&self, index: u32) -> Result<u64, ProgramsError> {
        let values = self.counts.get(&index, 0).map_err(map_err(MAP_COUNT))?;
        Ok(values.iter().sum())
    }

    /// Frames delivered so far, all CPUs.
    pub fn frames(&self) -> Result<u64, ProgramsError> {
        self.slot(COUNT_FRAMES)
    }

    /// IPv6 control frames (neighbour discovery, MLD) the DUT's stack sent, not counted as
    /// delivered.
    pub fn ignored(&self) -> Result<u64, ProgramsError> {
        self.slot(COUNT_IGNORED)
    }
}
