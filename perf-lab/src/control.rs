//! Control-plane programming time: the same services written by ferrolb's planner and map
//! writer, by `nft -f` (kube-proxy nftables layout) and by `iptables-restore` (iptables
//! layout, both back ends), each from empty, in scratch namespaces and pin directories.
//!
//! The netfilter times include starting the tool (nsenter + nft / iptables-restore), as
//! kube-proxy pays it too; ferrolb's is in-process, as the daemon runs it.

use std::time::{Duration, Instant};

use lb_daemon::{loader, maps::LbMaps, planner};
use serde::{Deserialize, Serialize};

use crate::{
    measured::NotMeasured,
    netns::{Netns, NetnsError, PinDir},
    peers::{PeerError, PeerKind, RulesFile},
    rules,
    services::{Family, ServiceSet},
    stats::Summary,
};

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("ferrolb loader: {0}")]
    Loader(#[from] loader::LoaderError),
    #[error("ferrolb maps: {0}")]
    Maps(#[from] lb_daemon::maps::MapsError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tool {
    FerrolbPlanApply,
    NftFile,
    IptablesLegacyRestore,
    IptablesNftRestore,
}

impl Tool {
    pub const ALL: [Tool; 4] = [
        Tool::FerrolbPlanApply,
        Tool::NftFile,
        Tool::IptablesLegacyRestore,
        Tool::IptablesNftRestore,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::FerrolbPlanApply => "ferrolb plan+apply",
            Self::NftFile => "nft -f",
            Self::IptablesLegacyRestore => "iptables-legacy-restore",
            Self::IptablesNftRestore => "iptables-nft-restore",
        }
    }

    /// The rate/TCP peer that loads the same rules with this tool.
    pub fn peer(self) -> Option<PeerKind> {
        match self {
            Self::FerrolbPlanApply => None,
            Self::NftFile => Some(PeerKind::Nftables),
            Self::IptablesLegacyRestore => Some(PeerKind::IptablesLegacy),
            Self::IptablesNftRestore => Some(PeerKind::IptablesNft),
        }
    }
}

/// Bounds on one netfilter load: stopped after `timeout`; after a load slower than
/// `slow` the tool is not timed again for this service count (one figure, said so).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub slow: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResult {
    pub tool: Tool,
    pub services: u32,
    pub backends: u32,
    pub unsupported: Option<NotMeasured>,
    pub seconds: Option<Summary>,
    /// Size of the input the tool was given (rules text; map operations for ferrolb).
    pub input_size: u64,
    pub input_unit: String,
    /// Why fewer than the planned runs were timed, if so.
    #[serde(default)]
    pub note: Option<String>,
}

/// Scratch namespaces for the netfilter tools; removed on drop.
pub struct Scratch {
    nft: Netns,
    legacy: Netns,
    iptnft: Netns,
}

impl Scratch {
    pub fn create() -> Result<Self, ControlError> {
        Ok(Self {
            nft: Netns::create("cp-nft")?,
            legacy: Netns::create("cp-iptl")?,
            iptnft: Netns::create("cp-iptn")?,
        })
    }
}

/// One timed programming from empty. `Err` is a failure of the harness; a tool that
/// cannot hold the set, or whose load was stopped, returns `Ok(Err(why))`.
fn once(
    scratch: &Scratch,
    tool: Tool,
    set: &ServiceSet,
    files: &Files,
    timeout: Duration,
) -> Result<Result<f64, NotMeasured>, ControlError> {
    let timed = |ns: &Netns, cmd: &str, args: &[&str]| {
        let start = Instant::now();
        match ns.exec_timeout(cmd, args, timeout) {
            Ok(_) => Ok(Ok(start.elapsed().as_secs_f64())),
            Err(NetnsError::Timeout { seconds, .. }) => Ok(Err(NotMeasured::LoadStopped {
                tool: cmd.to_string(),
                seconds,
            })),
            Err(e) => Err(ControlError::from(e)),
        }
    };
    match tool {
        Tool::FerrolbPlanApply => {
            let pin = PinDir::new("cp");
            let _ebpf = loader::load_balancer_sized(&pin.path, &set.ferrolb_map_sizes())?;
            let mut maps = LbMaps::open(&pin.path)?;
            let empty = maps.read_state()?;
            let desired = set.desired_state();
            let start = Instant::now();
            let (ops, _next) = match planner::plan(&empty, &desired) {
                Ok(p) => p,
                Err(e) => return Ok(Err(NotMeasured::cannot_hold(e))),
            };
            maps.apply(&ops)?;
            Ok(Ok(start.elapsed().as_secs_f64()))
        }
        Tool::NftFile => {
            scratch.nft.exec("nft", &["flush", "ruleset"])?;
            let path = files.nft.path.to_string_lossy();
            let result = timed(&scratch.nft, "nft", &["-f", &path]);
            // A stopped load may leave nothing or a partial table; the next round
            // flushes first either way.
            result
        }
        Tool::IptablesLegacyRestore | Tool::IptablesNftRestore => {
            let (ns, cmd) = if tool == Tool::IptablesLegacyRestore {
                (&scratch.legacy, "iptables-legacy-restore")
            } else {
                (&scratch.iptnft, "iptables-nft-restore")
            };
            ns.exec(cmd, &[&files.empty.path.to_string_lossy()])?;
            let path = files.ipt.path.to_string_lossy();
            timed(ns, cmd, &[&path])
        }
    }
}

struct Files {
    nft: RulesFile,
    ipt: RulesFile,
    empty: RulesFile,
}

/// Every tool, `runs` interleaved rounds, for one service set.
pub fn measure(
    scratch: &Scratch,
    set: &ServiceSet,
    runs: usize,
    limits: Limits,
    mut progress: impl FnMut(usize),
) -> Result<Vec<ControlResult>, ControlError> {
    let nft_text = rules::nftables(set, Family::Ipv4, false);
    let ipt_text = rules::iptables(set, Family::Ipv4);
    let ops_count = planner::plan(
        &lb_daemon::planner::KernelState::new(set.ferrolb_map_sizes().maglev_slots),
        &set.desired_state(),
    )
    .map(|(ops, _)| ops.len() as u64)
    .unwrap_or(0);
    let files = Files {
        nft: RulesFile::write("cp-nft", &nft_text)?,
        ipt: RulesFile::write("cp-ipt", &ipt_text)?,
        empty: RulesFile::write("cp-empty", rules::iptables_empty())?,
    };
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); Tool::ALL.len()];
    let mut unsupported: Vec<Option<NotMeasured>> = vec![None; Tool::ALL.len()];
    let mut notes: Vec<Option<String>> = vec![None; Tool::ALL.len()];
    for round in 0..runs {
        for (k, tool) in Tool::ALL.iter().enumerate() {
            if unsupported[k].is_some() || notes[k].is_some() {
                continue;
            }
            match once(scratch, *tool, set, &files, limits.timeout)? {
                Ok(t) => {
                    times[k].push(t);
                    if t > limits.slow.as_secs_f64() && round + 1 < runs {
                        notes[k] = Some(format!(
                            "{} of {runs} runs: a load took {t:.0} s (> {:.0} s)",
                            round + 1,
                            limits.slow.as_secs_f64()
                        ));
                    }
                }
                Err(reason) => unsupported[k] = Some(reason),
            }
        }
        progress(round + 1);
    }
    Ok(Tool::ALL
        .iter()
        .enumerate()
        .map(|(k, tool)| {
            let (input_size, input_unit) = match tool {
                Tool::FerrolbPlanApply => (ops_count, "map operations"),
                Tool::NftFile => (nft_text.len() as u64, "bytes of nft input"),
                _ => (ipt_text.len() as u64, "bytes of iptables-restore input"),
            };
            ControlResult {
                tool: *tool,
                services: set.services,
                backends: set.backends,
                unsupported: unsupported[k].clone(),
                seconds: Summary::of(&times[k]),
                input_size,
                input_unit: input_unit.to_string(),
                note: notes[k].clone(),
            }
        })
        .collect())
}
