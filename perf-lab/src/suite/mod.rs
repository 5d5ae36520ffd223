//! One benchmark run: the layers in order, each at every service set, then the outputs.

mod layer;
mod plan;
mod progress;
mod sockets;
mod steps;

use std::{
    path::{Path, PathBuf},
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use crate::{
    control::ControlError,
    cost::CostError,
    eastwest::EwError,
    netns,
    peers::PeerError,
    plot::{self, PlotError},
    preflight::{self, PreflightError},
    programs::ProgramsError,
    rate::RateError,
    report::{self, Meta, Results},
    services::{Family, ServiceSet},
    tcp::TcpError,
};

pub use plan::{Layers, Plan};

use layer::StoppedLoads;
use progress::Progress;

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
    #[error("east-west ({peer}): {source}")]
    EastWest {
        peer: &'static str,
        source: Box<EwError>,
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

/// Runs `plan`, writes `results.json`, `report.md` and the plots into `out`, and returns
/// the results.
pub fn run(plan: &Plan, out: &Path) -> Result<Results, SuiteError> {
    let mut suite = Suite::start(plan, out)?;
    let program_cost = suite.cost_layer()?;
    let control_plane = suite.control_layer()?;
    suite.remember_stopped_loads(&control_plane);
    let rate = suite.rate_layer()?;
    let tcp = suite.tcp_layer()?;
    let east_west = suite.east_west_layer()?;
    let mut results = Results {
        meta: suite.meta(),
        program_cost,
        rate,
        control_plane,
        tcp,
        east_west,
        ratios: Vec::new(),
        not_measured: not_measured(plan),
    };
    results.ratios = report::ratios(&results);
    write_outputs(&results, out)?;
    Ok(results)
}

/// A run in progress: its plan, where it is, and what the layers hand on to each other.
struct Suite<'a> {
    plan: &'a Plan,
    sets: Vec<ServiceSet>,
    started: Instant,
    cpus: usize,
    /// The generator's (and the TCP client's) CPU: the last one.
    generator_cpu: usize,
    progress: Progress,
    stopped: StoppedLoads,
}

impl<'a> Suite<'a> {
    /// Checks the machine, removes what crashed runs left and makes `out`.
    fn start(plan: &'a Plan, out: &Path) -> Result<Self, SuiteError> {
        preflight::check(preflight::Needs {
            netfilter: plan.needs_netfilter(),
            tcp: plan.layers.tcp || plan.layers.east_west,
            cgroup2: plan.layers.east_west,
        })?;
        netns::remove_stale();
        std::fs::create_dir_all(out).map_err(|source| SuiteError::Write {
            path: out.to_path_buf(),
            source,
        })?;
        let cpus = lb_daemon::maps::nr_cpus().unwrap_or(1);
        Ok(Self {
            plan,
            sets: plan.service_sets(),
            started: Instant::now(),
            cpus,
            generator_cpu: cpus.saturating_sub(1),
            progress: Progress::new(plan.steps()),
            stopped: StoppedLoads::default(),
        })
    }

    fn meta(&self) -> Meta {
        let plan = self.plan;
        Meta {
            profile: plan.profile.clone(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
                .saturating_sub(self.started.elapsed().as_secs()),
            seconds_total: self.started.elapsed().as_secs_f64(),
            kernel: kernel_release(),
            cpus: self.cpus,
            generator_cpu: self.generator_cpu,
            runs: plan.runs,
            service_counts: plan.service_counts.clone(),
            families: plan.families.clone(),
            backends_per_service: plan.backends,
            rate_plan: plan.rate,
            cost_plan: plan.cost,
            tcp_plan: plan.tcp,
            east_west_plan: plan.east_west,
        }
    }
}

/// What this run leaves out, for the report: always the same few items, plus the
/// families and layers the plan skips.
fn not_measured(plan: &Plan) -> Vec<String> {
    let mut items = vec![
        "TCP through bpf-redirect: the ceiling only rewrites MACs, it has no service to \
         answer"
            .to_string(),
        "TCP and east-west over IPv6 (those layers run IPv4 only); control-plane load times \
         are of the IPv4 rule sets (the rate layer loads one set per family, as kube-proxy \
         does)"
            .to_string(),
        "EndpointSlice-change-to-map-update latency (single-service updates)".to_string(),
    ];
    for family in Family::ALL {
        if !plan.families.contains(&family) {
            items.push(format!(
                "{} packet rate and program cost (not in --families)",
                family.name()
            ));
        }
    }
    let layers = &plan.layers;
    if layers.east_west {
        items.push(
            "east-west beyond pod → ClusterIP over TCP: UDP (sendto/recvfrom), host process → \
             ClusterIP, NodePort from inside the cluster, endpoints on another node"
                .to_string(),
        );
    }
    for (on, layer) in [
        (layers.rate, "packet rate"),
        (layers.cost, "program cost"),
        (layers.control, "control plane"),
        (layers.tcp, "TCP latency and connection rate"),
        (layers.east_west, "east-west (pod → ClusterIP)"),
    ] {
        if !on {
            items.push(format!("{layer} (layer disabled)"));
        }
    }
    items
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn write_outputs(results: &Results, out: &Path) -> Result<(), SuiteError> {
    let json = serde_json::to_string_pretty(results).expect("results serialize");
    write_file(&out.join("results.json"), &json)?;
    write_file(&out.join("report.md"), &report::markdown(results))?;
    plot::write_all(results, out)?;
    Ok(())
}

fn write_file(path: &Path, text: &str) -> Result<(), SuiteError> {
    std::fs::write(path, text).map_err(|source| SuiteError::Write {
        path: path.to_path_buf(),
        source,
    })
}
