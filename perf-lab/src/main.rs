//! `perf-lab quick` / `perf-lab full`: ferrolb against kube-proxy's datapaths on this
//! machine, in network namespaces the tool makes and removes.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lb_perf_lab::{
    external,
    peers::PeerKind,
    services::Family,
    suite::{self, Plan},
};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Options {
    /// Output directory (default: perf-lab-results/<profile>-<unix time>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Interleaved runs per figure (at least 5 for publishable figures).
    #[arg(long)]
    runs: Option<usize>,
    /// Service counts, comma separated (e.g. 1,1000,10000).
    #[arg(long, value_delimiter = ',')]
    services: Option<Vec<u32>>,
    /// Backends per service.
    #[arg(long)]
    backends: Option<u32>,
    /// Peers to run, comma separated (bpf-redirect, forward, nftables, iptables-legacy,
    /// iptables-nft, ferrolb-dsr).
    #[arg(long, value_delimiter = ',')]
    peers: Option<Vec<String>>,
    /// Address families of the rate and cost layers, comma separated (default 4,6).
    #[arg(long, value_delimiter = ',')]
    families: Option<Vec<u8>>,
    #[arg(long)]
    skip_cost: bool,
    #[arg(long)]
    skip_rate: bool,
    #[arg(long)]
    skip_control: bool,
    /// Skip the TCP latency / connection-rate layer.
    #[arg(long)]
    skip_tcp: bool,
    /// Skip the east-west layer (pod → ClusterIP: socket programs, direct, kube-proxy DNAT).
    #[arg(long)]
    skip_east_west: bool,
    /// A JSON file of peers you bring (your XDP object and fill command, or setup and
    /// teardown commands for the DUT namespace); they run beside the built-in peers in
    /// every layer (see the README, "External peers").
    #[arg(long)]
    external_peers: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// A few minutes: 1 and 1k services, every peer and layer, 5 runs.
    Quick(Options),
    /// The full matrix: 1 / 1k / 8k / 10k / 30k services.
    Full(Options),
    /// Only check that this machine can run the suite.
    Check,
}

fn peer_by_name(name: &str) -> anyhow::Result<PeerKind> {
    PeerKind::all()
        .into_iter()
        .find(|p| p.name() == name)
        .with_context(|| format!("unknown peer {name:?}"))
}

fn apply(mut plan: Plan, o: &Options) -> anyhow::Result<Plan> {
    if let Some(runs) = o.runs {
        plan.runs = runs.max(1);
    }
    if let Some(services) = &o.services {
        anyhow::ensure!(
            services.iter().all(|&n| n > 0),
            "service counts must be > 0"
        );
        plan.service_counts = services.clone();
    }
    if let Some(backends) = o.backends {
        anyhow::ensure!(backends > 0, "backends must be > 0");
        plan.backends = backends;
    }
    if let Some(peers) = &o.peers {
        plan.peers = peers
            .iter()
            .map(|p| peer_by_name(p))
            .collect::<anyhow::Result<_>>()?;
    }
    if let Some(families) = &o.families {
        let mut chosen = Vec::new();
        for &n in families {
            let family =
                Family::from_number(n).with_context(|| format!("unknown family {n} (4 or 6)"))?;
            if !chosen.contains(&family) {
                chosen.push(family);
            }
        }
        anyhow::ensure!(!chosen.is_empty(), "--families needs 4, 6 or both");
        chosen.sort();
        plan.families = chosen;
    }
    plan.layers.cost &= !o.skip_cost;
    plan.layers.rate &= !o.skip_rate;
    plan.layers.control &= !o.skip_control;
    plan.layers.tcp &= !o.skip_tcp;
    plan.layers.east_west &= !o.skip_east_west;
    Ok(plan)
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (plan, options) = match &cli.command {
        Command::Check => {
            lb_perf_lab::preflight::check(lb_perf_lab::preflight::Needs::ALL)?;
            println!("ok: root, tools, namespaces and XDP live frames are available");
            return Ok(());
        }
        Command::Quick(o) | Command::Full(o) => {
            if let Some(path) = &o.external_peers {
                let reserved: Vec<&str> = PeerKind::ALL.iter().map(|p| p.name()).collect();
                external::register(external::read(path)?, &reserved)?;
            }
            let plan = match &cli.command {
                Command::Full(_) => Plan::full(),
                _ => Plan::quick(),
            };
            (apply(plan, o)?, o)
        }
    };
    let out = options.out.clone().unwrap_or_else(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        PathBuf::from(format!("perf-lab-results/{}-{now}", plan.profile))
    });
    let results = suite::run(&plan, &out)?;
    println!(
        "{}",
        lb_perf_lab::report::rate_table(&results, lb_perf_lab::report::Metric::Wall)
    );
    println!(
        "{}",
        lb_perf_lab::report::rate_table(&results, lb_perf_lab::report::Metric::PerCpuSecond)
    );
    if !results.tcp.is_empty() {
        println!("{}", lb_perf_lab::report::tcp_tables(&results));
    }
    if !results.east_west.is_empty() {
        println!("{}", lb_perf_lab::report::east_west_tables(&results));
    }
    println!(
        "wrote {0}/results.json, {0}/report.md and SVG plots",
        out.display()
    );
    Ok(())
}
