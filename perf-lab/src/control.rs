//! Control-plane programming time: the same services written by ferrolb's sync engine
//! (planner and map writer, as the daemon runs them), by `nft -f` (kube-proxy nftables layout) and by `iptables-restore` (iptables
//! layout, both back ends), each from empty, in scratch namespaces and pin directories.
//!
//! The netfilter times include starting the tool (nsenter + nft / iptables-restore), as
//! kube-proxy pays it too; ferrolb's is in-process, as the daemon runs it.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use lb_daemon::{
    loader,
    maps::BalancerMaps,
    sync::{DatapathParams, SyncEngine, SyncError},
};
use serde::{Deserialize, Serialize};

use crate::{
    measured::NotMeasured,
    netfilter::RulesFile,
    netns::{Netns, NetnsError, PinDir},
    peers::{PeerError, PeerKind},
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
    #[error("ferrolb sync: {0}")]
    Sync(#[from] SyncError),
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

/// One timed load: its time, and for ferrolb the map operations it wrote.
struct Load {
    seconds: f64,
    ops: Option<usize>,
}

/// One timed programming from empty. `Err` is a failure of the harness; a tool that
/// cannot hold the set, or whose load was stopped, returns `Ok(Err(why))`.
fn once(
    scratch: &Scratch,
    tool: Tool,
    set: &ServiceSet,
    files: &Files,
    timeout: Duration,
) -> Result<Result<Load, NotMeasured>, ControlError> {
    let timed = |ns: &Netns, cmd: &str, args: &[&str]| {
        let start = Instant::now();
        match ns.exec_timeout(cmd, args, timeout) {
            Ok(_) => Ok(Ok(Load {
                seconds: start.elapsed().as_secs_f64(),
                ops: None,
            })),
            Err(NetnsError::Timeout { seconds, .. }) => Ok(Err(NotMeasured::LoadStopped {
                tool: cmd.to_string(),
                seconds,
            })),
            Err(e) => Err(ControlError::from(e)),
        }
    };
    match tool {
        Tool::FerrolbPlanApply => ferrolb_once(set),
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

/// ferrolb from an empty pin directory: the daemon's sync engine plans the set and writes
/// the plan. The figure is the engine's own planning and writing time; the datapath
/// config it writes first is not part of it (as the netfilter figures contain no
/// table set-up either).
fn ferrolb_once(set: &ServiceSet) -> Result<Result<Load, NotMeasured>, ControlError> {
    let pin = PinDir::new("cp");
    let _ebpf = loader::load_balancer_sized(&pin.path, &set.ferrolb_map_sizes())?;
    let params = DatapathParams {
        encap_source: Ipv4Addr::new(198, 18, 1, 2),
        encap_source6: None,
        nexthop_ttl: Duration::from_secs(1),
        icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
        new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
    };
    let mut engine = SyncEngine::adopt(BalancerMaps::open(&pin.path)?, &params)?;
    match engine.apply(&set.desired_state()) {
        Ok(applied) => Ok(Ok(Load {
            seconds: (applied.plan + applied.write).as_secs_f64(),
            ops: Some(applied.ops),
        })),
        Err(SyncError::Plan(e)) => Ok(Err(NotMeasured::cannot_hold(e))),
        Err(e) => Err(e.into()),
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
    let files = Files {
        nft: RulesFile::write("cp-nft", &nft_text)?,
        ipt: RulesFile::write("cp-ipt", &ipt_text)?,
        empty: RulesFile::write("cp-empty", rules::iptables_empty())?,
    };
    // Map operations ferrolb wrote; 0 if it could not hold the set.
    let mut ops_count = 0;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); Tool::ALL.len()];
    let mut unsupported: Vec<Option<NotMeasured>> = vec![None; Tool::ALL.len()];
    let mut notes: Vec<Option<String>> = vec![None; Tool::ALL.len()];
    for round in 0..runs {
        for (k, tool) in Tool::ALL.iter().enumerate() {
            if unsupported[k].is_some() || notes[k].is_some() {
                continue;
            }
            match once(scratch, *tool, set, &files, limits.timeout)? {
                Ok(Load { seconds: t, ops }) => {
                    if let Some(ops) = ops {
                        ops_count = ops as u64;
                    }
                    times[k].push(t);
                    if t > limits.slow.as_secs_f64() && round + 1 < runs {
                        notes[k] = Some(format!(
                            "{} of {runs} runs: a load took {t:.0} s (> {:.0} s)",
                            round + 1,
                            limits.slow.as_secs_f64()
                        ));
                    }
                }
                Err(why) => unsupported[k] = Some(why),
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
