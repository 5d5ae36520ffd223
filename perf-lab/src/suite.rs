//! One benchmark run: the layers in order, a progress display, and the outputs.

use std::{
    collections::HashMap,
    io::{IsTerminal, Write as _},
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

use crate::{
    control::{self, ControlError},
    cost::{self, CostError, CostPlan},
    netns,
    peers::{Peer, PeerError, PeerKind, Programmed},
    plot::{self, PlotError},
    preflight::{self, PreflightError},
    programs::{Generator, ProgramsError},
    rate::{self, FlowKind, RateError, RatePlan, RateResult},
    report::{self, Meta, Results},
    services::{Family, ServiceSet},
    tcp::{self, TcpError, TcpLoad, TcpPeer, TcpPlan, TcpResult},
};

#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("program cost: {0}")]
    Cost(Box<CostError>),
    #[error("packet rate: {0}")]
    Rate(Box<RateError>),
    #[error("control plane: {0}")]
    Control(Box<ControlError>),
    #[error("setting up {peer}: {source}")]
    Peer {
        peer: &'static str,
        source: Box<PeerError>,
    },
    #[error("generator: {0}")]
    Generator(Box<ProgramsError>),
    #[error("TCP ({peer}): {source}")]
    Tcp {
        peer: &'static str,
        source: Box<TcpError>,
    },
    #[error(transparent)]
    Plot(#[from] PlotError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

// The kernel-facing errors are large; boxing keeps every Result small.
macro_rules! boxed_from {
    ($($source:ty => $variant:ident),*) => {$(
        impl From<$source> for SuiteError {
            fn from(e: $source) -> Self {
                Self::$variant(Box::new(e))
            }
        }
    )*};
}
boxed_from!(CostError => Cost, RateError => Rate, ControlError => Control, ProgramsError => Generator);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layers {
    pub cost: bool,
    pub rate: bool,
    pub control: bool,
    pub tcp: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub profile: String,
    pub service_counts: Vec<u32>,
    pub backends: u32,
    pub runs: usize,
    pub peers: Vec<PeerKind>,
    /// Address families of the rate and cost layers (the TCP layer is IPv4 only).
    pub families: Vec<Family>,
    pub rate: RatePlan,
    pub cost: CostPlan,
    pub tcp: TcpPlan,
    pub layers: Layers,
    /// A netfilter load still running after this long is stopped and reported as not
    /// measured (kube-proxy's nftables layout loads in time quadratic in the services,
    /// see rules.rs), so one slow peer cannot stall the suite.
    pub load_timeout_s: f64,
    /// A control-plane load slower than this is timed once, not `runs` times.
    pub slow_load_s: f64,
}

impl Plan {
    /// A few minutes: 1 and 1,000 services, every peer, 5 runs.
    pub fn quick() -> Self {
        Self {
            profile: "quick".into(),
            service_counts: vec![1, 1_000],
            backends: 3,
            runs: 5,
            peers: PeerKind::ALL.to_vec(),
            families: Family::ALL.to_vec(),
            rate: RatePlan {
                seconds: 0.4,
                max_frames: 4_000_000,
                established_flows: 4_096,
            },
            cost: CostPlan {
                repeat: 1_000_000,
                single_runs: 20_000,
                fill_flow_table: true,
            },
            tcp: TcpPlan {
                connections: 64,
                requests: 20_000,
                concurrency: 16,
                connects: 2_000,
                seconds: 1.0,
                request_bytes: 64,
                response_bytes: 256,
                op_timeout_ms: 3_000,
            },
            layers: Layers {
                cost: true,
                rate: true,
                control: true,
                tcp: true,
            },
            load_timeout_s: 120.0,
            slow_load_s: 30.0,
        }
    }

    /// The full matrix. 8,000 is the largest round count ferrolb's Maglev slot array holds
    /// at the minimum table size (two 251-slot regions per service in 2^22 slots), so the
    /// ratios have a ferrolb point near 10k.
    pub fn full() -> Self {
        Self {
            profile: "full".into(),
            service_counts: vec![1, 1_000, 8_000, 10_000, 30_000],
            runs: 5,
            rate: RatePlan {
                seconds: 1.0,
                max_frames: 20_000_000,
                established_flows: 4_096,
            },
            cost: CostPlan {
                repeat: 2_000_000,
                single_runs: 100_000,
                fill_flow_table: true,
            },
            tcp: TcpPlan {
                connections: 64,
                requests: 200_000,
                concurrency: 32,
                connects: 20_000,
                seconds: 3.0,
                request_bytes: 64,
                response_bytes: 256,
                op_timeout_ms: 3_000,
            },
            load_timeout_s: 300.0,
            slow_load_s: 60.0,
            ..Self::quick()
        }
    }

    /// Seconds, for the end-to-end test: one service, two runs, short bursts.
    pub fn tiny() -> Self {
        Self {
            profile: "tiny".into(),
            service_counts: vec![1],
            backends: 2,
            runs: 2,
            rate: RatePlan {
                seconds: 0.1,
                max_frames: 200_000,
                established_flows: 256,
            },
            cost: CostPlan {
                repeat: 10_000,
                single_runs: 500,
                fill_flow_table: false,
            },
            tcp: TcpPlan {
                connections: 8,
                requests: 2_000,
                concurrency: 4,
                connects: 200,
                seconds: 0.5,
                request_bytes: 64,
                response_bytes: 256,
                op_timeout_ms: 3_000,
            },
            ..Self::quick()
        }
    }

    pub fn tcp_peers(&self) -> Vec<PeerKind> {
        self.peers
            .iter()
            .copied()
            .filter(|&k| tcp::applies_to(k))
            .collect()
    }

    fn load_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.load_timeout_s)
    }

    fn steps(&self) -> usize {
        let per_count = usize::from(self.layers.cost) * self.runs
            + usize::from(self.layers.control) * self.runs
            + usize::from(self.layers.rate)
                * self.runs
                * self.peers.len()
                * self.families.len()
                * FlowKind::ALL.len()
            + usize::from(self.layers.tcp)
                * self.runs
                * self.tcp_peers().len()
                * TcpLoad::ALL.len();
        per_count * self.service_counts.len()
    }
}

/// One line per step; on a terminal it rewrites itself in place.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total: total.max(1),
            done: 0,
            started: Instant::now(),
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn step(&mut self, what: &str) {
        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = elapsed / self.done as f64 * (self.total - self.done.min(self.total)) as f64;
        let line = format!(
            "[{:>4}/{:<4} {:>4.0}s elapsed, ~{:>4.0}s left] {what}",
            self.done, self.total, elapsed, left
        );
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            if self.done >= self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "{line}");
        }
    }
}

/// Programs one peer for `set` (or takes the reason of a load already stopped at its
/// deadline for this peer and size), logs the outcome and remembers a newly stopped load
/// for the later layers. Returns why the peer is not measured, if it is not.
fn program_peer(
    slow_loads: &mut HashMap<(PeerKind, u32), String>,
    kind: PeerKind,
    set: &ServiceSet,
    layer: &str,
    program: impl FnOnce() -> Result<Programmed, SuiteError>,
) -> Result<Option<String>, SuiteError> {
    let programmed = match slow_loads.get(&(kind, set.services)) {
        Some(reason) => Programmed::Unsupported(reason.clone()),
        None => program()?,
    };
    match programmed {
        Programmed::Done(took) => {
            tracing::info!(
                peer = kind.name(),
                services = set.services,
                layer,
                ?took,
                "programmed"
            );
            Ok(None)
        }
        Programmed::Unsupported(reason) => {
            tracing::warn!(
                peer = kind.name(),
                services = set.services,
                layer,
                reason,
                "not measured"
            );
            if reason.starts_with("not measured") {
                slow_loads.insert((kind, set.services), reason.clone());
            }
            Ok(Some(reason))
        }
    }
}

/// What a layer run at one service set shares with every other: where progress and
/// stopped loads are kept, and the run's shape.
struct LayerRun<'a> {
    progress: &'a mut Progress,
    slow_loads: &'a mut HashMap<(PeerKind, u32), String>,
    layer: &'static str,
    runs: usize,
}

impl<'a> LayerRun<'a> {
    fn new(
        progress: &'a mut Progress,
        slow_loads: &'a mut HashMap<(PeerKind, u32), String>,
        layer: &'static str,
        runs: usize,
    ) -> Self {
        Self {
            progress,
            slow_loads,
            layer,
            runs,
        }
    }

    /// At every set of `sets`: programs every peer (`program`; its reason, if it is not measured, goes into every
    /// one of its results), makes one result per peer and cell (`new_result`, peer-major),
    /// then runs `runs` rounds, each running every peer through every cell (a family ×
    /// flow kind, a TCP load) with `run`, the peer order rotated every round so no peer
    /// always runs right after the same one. Unsupported peers only count their steps.
    fn measure<P, C: Copy, R>(
        &mut self,
        sets: &[ServiceSet],
        peers: &mut [P],
        cells: &[(C, String)],
        mut program: impl FnMut(&mut P, &ServiceSet) -> Result<Programmed, SuiteError>,
        new_result: impl Fn(&P, &ServiceSet, C, Option<String>) -> R,
        mut run: impl FnMut(&P, C) -> Result<R::Sample, SuiteError>,
    ) -> Result<Vec<R>, SuiteError>
    where
        P: LayerPeer,
        R: Cell,
    {
        let mut all = Vec::new();
        for set in sets {
            all.extend(self.measure_set(set, peers, cells, &mut program, &new_result, &mut run)?);
        }
        Ok(all)
    }

    /// [`Self::measure`] at one service set.
    fn measure_set<P, C: Copy, R>(
        &mut self,
        set: &ServiceSet,
        peers: &mut [P],
        cells: &[(C, String)],
        program: &mut impl FnMut(&mut P, &ServiceSet) -> Result<Programmed, SuiteError>,
        new_result: &impl Fn(&P, &ServiceSet, C, Option<String>) -> R,
        run: &mut impl FnMut(&P, C) -> Result<R::Sample, SuiteError>,
    ) -> Result<Vec<R>, SuiteError>
    where
        P: LayerPeer,
        R: Cell,
    {
        let mut results = Vec::new();
        let mut supported = Vec::new();
        for peer in peers.iter_mut() {
            let unsupported = program_peer(self.slow_loads, peer.kind(), set, self.layer, || {
                program(peer, set)
            })?;
            supported.push(unsupported.is_none());
            for (cell, _) in cells {
                results.push(new_result(peer, set, *cell, unsupported.clone()));
            }
        }
        let n = peers.len();
        for round in 0..self.runs {
            for i in 0..n {
                let p = (i + round) % n;
                for (c, (cell, cell_name)) in cells.iter().enumerate() {
                    if supported[p] {
                        let sample = run(&peers[p], *cell)?;
                        results[p * cells.len() + c].push(sample);
                    }
                    self.progress.step(&format!(
                        "{}, {} services, {} {cell_name}, run {}/{}",
                        self.layer,
                        set.services,
                        peers[p].kind().name(),
                        round + 1,
                        self.runs
                    ));
                }
            }
        }
        for r in &mut results {
            r.finish();
        }
        Ok(results)
    }
}

/// A peer of a layer, on its own topology.
trait LayerPeer {
    fn kind(&self) -> PeerKind;
}

impl LayerPeer for Peer {
    fn kind(&self) -> PeerKind {
        self.kind
    }
}

impl LayerPeer for TcpPeer {
    fn kind(&self) -> PeerKind {
        self.kind
    }
}

/// A layer's result for one peer and cell, filled run by run.
trait Cell {
    type Sample;
    fn push(&mut self, sample: Self::Sample);
    fn finish(&mut self);
}

/// Both layers' results keep their runs in `samples` and summarise them in `finish`.
macro_rules! cell {
    ($($result:ty => $sample:ty),*) => {$(
        impl Cell for $result {
            type Sample = $sample;
            fn push(&mut self, sample: Self::Sample) {
                self.samples.push(sample);
            }
            fn finish(&mut self) {
                <$result>::finish(self);
            }
        }
    )*};
}
cell!(RateResult => rate::RateSample, TcpResult => tcp::TcpSample);

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn write_file(path: &Path, text: &str) -> Result<(), SuiteError> {
    std::fs::write(path, text).map_err(|source| SuiteError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Runs `plan`, writes `results.json`, `report.md` and the plots into `out`, and returns
/// the results.
pub fn run(plan: &Plan, out: &Path) -> Result<Results, SuiteError> {
    let netfilter = plan.layers.control
        || plan.peers.iter().any(|p| {
            matches!(
                p,
                PeerKind::Nftables | PeerKind::IptablesLegacy | PeerKind::IptablesNft
            )
        });
    preflight::check(netfilter, plan.layers.tcp)?;
    netns::remove_stale();
    std::fs::create_dir_all(out).map_err(|source| SuiteError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let started = Instant::now();
    let cpus = lb_daemon::maps::nr_cpus().unwrap_or(1);
    let generator_cpu = cpus.saturating_sub(1);
    let mut progress = Progress::new(plan.steps());
    let sets: Vec<ServiceSet> = plan
        .service_counts
        .iter()
        .map(|&services| ServiceSet {
            services,
            backends: plan.backends,
        })
        .collect();

    let mut program_cost = Vec::new();
    if plan.layers.cost {
        for set in &sets {
            tracing::info!(services = set.services, "program cost");
            let result = cost::measure(set, &plan.families, &plan.cost, plan.runs, |round| {
                progress.step(&format!(
                    "program cost, {} services, round {round}/{}",
                    set.services, plan.runs
                ))
            })?;
            if let Some(reason) = &result.unsupported {
                tracing::warn!(
                    services = set.services,
                    reason,
                    "ferrolb cannot hold this set"
                );
                for round in 0..plan.runs {
                    progress.step(&format!(
                        "program cost, {} services, skipped {round}",
                        set.services
                    ));
                }
            }
            program_cost.push(result);
        }
    }

    let mut control_plane = Vec::new();
    if plan.layers.control {
        let scratch = control::Scratch::create()?;
        for set in &sets {
            tracing::info!(services = set.services, "control plane");
            let limits = control::Limits {
                timeout: plan.load_timeout(),
                slow: std::time::Duration::from_secs_f64(plan.slow_load_s),
            };
            control_plane.extend(control::measure(
                &scratch,
                set,
                plan.runs,
                limits,
                |round| {
                    progress.step(&format!(
                        "control plane, {} services, round {round}/{}",
                        set.services, plan.runs
                    ))
                },
            )?);
        }
    }

    // Loads already stopped at the deadline are not tried again by the later layers: the
    // same rule file would only take as long again.
    let mut slow_loads: HashMap<(PeerKind, u32), String> = control_plane
        .iter()
        .filter_map(|c| {
            let reason = c.unsupported.as_ref()?;
            let peer = c.tool.peer()?;
            reason
                .starts_with("not measured")
                .then(|| ((peer, c.services), reason.clone()))
        })
        .collect();

    let mut rates = Vec::new();
    if plan.layers.rate {
        let park = netns::Netns::create("park").map_err(ProgramsError::from)?;
        let mut generator = Generator::load(generator_cpu, &park)?;
        let mut peers = Vec::new();
        for &kind in &plan.peers {
            peers.push(Peer::create(kind, plan.families.len()).map_err(|source| {
                SuiteError::Peer {
                    peer: kind.name(),
                    source: Box::new(source),
                }
            })?);
        }
        // Every peer is measured in every family on the same topology and programming.
        let cells: Vec<((Family, FlowKind), String)> = plan
            .families
            .iter()
            .flat_map(|&family| FlowKind::ALL.map(|flows| (family, flows)))
            .map(|(family, flows)| {
                (
                    (family, flows),
                    format!("{} {}", family.name(), flows.name()),
                )
            })
            .collect();
        rates = LayerRun::new(&mut progress, &mut slow_loads, "rate", plan.runs).measure(
            &sets,
            &mut peers,
            &cells,
            |peer, set| {
                peer.program(set, &plan.families, plan.load_timeout())
                    .map_err(|source| SuiteError::Peer {
                        peer: peer.kind.name(),
                        source: Box::new(source),
                    })
            },
            |peer, set, (family, flows), unsupported| {
                RateResult::new(peer.kind, family, set, flows, unsupported)
            },
            |peer, (family, flows)| {
                Ok(rate::run_once(
                    &mut generator,
                    peer,
                    family,
                    flows,
                    &plan.rate,
                )?)
            },
        )?;
    }

    let mut tcp_results = Vec::new();
    if plan.layers.tcp {
        // Client and server on different CPUs (where there are two), the client on the
        // generator's CPU as in the rate layer.
        let server_cpu = (cpus > 1).then_some(0);
        let client_cpu = Some(generator_cpu);
        let mut peers = Vec::new();
        for kind in plan.tcp_peers() {
            peers.push(
                TcpPeer::create(kind, server_cpu, &plan.tcp).map_err(|source| SuiteError::Tcp {
                    peer: kind.name(),
                    source: Box::new(source),
                })?,
            );
        }
        let tcp_err = |peer: &TcpPeer| {
            let name = peer.kind.name();
            move |source| SuiteError::Tcp {
                peer: name,
                source: Box::new(source),
            }
        };
        let cells: Vec<(TcpLoad, String)> = TcpLoad::ALL
            .iter()
            .map(|&load| (load, load.name().to_string()))
            .collect();
        tcp_results = LayerRun::new(&mut progress, &mut slow_loads, "tcp", plan.runs).measure(
            &sets,
            &mut peers,
            &cells,
            |peer, set| {
                let programmed = peer
                    .program(set, plan.load_timeout())
                    .map_err(tcp_err(peer))?;
                if let Programmed::Done(_) = programmed {
                    peer.warm_up(&plan.tcp).map_err(tcp_err(peer))?;
                }
                Ok(programmed)
            },
            |peer, set, load, unsupported| TcpResult::new(peer.kind, set, load, unsupported),
            |peer, load| {
                peer.run_once(load, &plan.tcp, client_cpu)
                    .map_err(tcp_err(peer))
            },
        )?;
        for peer in &mut peers {
            peer.stop_server().map_err(tcp_err(peer))?;
        }
    }

    let mut not_measured = vec![
        "TCP through bpf-redirect: the ceiling only rewrites MACs, it has no service to \
         answer"
            .to_string(),
        "TCP over IPv6 (the TCP layer runs IPv4 only); control-plane load times are of the \
         IPv4 rule sets (the rate layer loads one set per family, as kube-proxy does)"
            .to_string(),
        "EndpointSlice-change-to-map-update latency (single-service updates)".to_string(),
    ];
    for family in Family::ALL {
        if !plan.families.contains(&family) {
            not_measured.push(format!(
                "{} packet rate and program cost (not in --families)",
                family.name()
            ));
        }
    }
    if !plan.layers.rate {
        not_measured.push("packet rate (layer disabled)".into());
    }
    if !plan.layers.cost {
        not_measured.push("program cost (layer disabled)".into());
    }
    if !plan.layers.control {
        not_measured.push("control plane (layer disabled)".into());
    }
    if !plan.layers.tcp {
        not_measured.push("TCP latency and connection rate (layer disabled)".into());
    }
    let mut results = Results {
        meta: Meta {
            profile: plan.profile.clone(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .saturating_sub(started.elapsed().as_secs()),
            seconds_total: started.elapsed().as_secs_f64(),
            kernel: kernel_release(),
            cpus,
            generator_cpu,
            runs: plan.runs,
            service_counts: plan.service_counts.clone(),
            families: plan.families.clone(),
            backends_per_service: plan.backends,
            rate_plan: plan.rate,
            cost_plan: plan.cost,
            tcp_plan: plan.tcp,
        },
        program_cost,
        rate: rates,
        control_plane,
        tcp: tcp_results,
        ratios: Vec::new(),
        not_measured,
    };
    results.ratios = report::ratios(&results);
    let json = serde_json::to_string_pretty(&results).expect("results serialize");
    write_file(&out.join("results.json"), &json)?;
    write_file(&out.join("report.md"), &report::markdown(&results))?;
    plot::write_all(&results, out)?;
    Ok(results)
}
