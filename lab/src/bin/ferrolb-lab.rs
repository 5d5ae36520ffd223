//! `ferrolb-lab`: the demo, and the small tools labs run inside their namespaces (backend
//! name servers, flow generators, the pass program for veth peers).

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use lb_lab::{
    probe,
    traffic::{self, FlowResult},
    Binaries, Lab, CLIENT_ADDR, CLIENT_ADDR6, VIP,
};

#[derive(Parser)]
#[command(
    name = "ferrolb-lab",
    about = "ferrolb's demo and lab tools (namespaces, traffic)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a throwaway lab, balance real TCP and UDP traffic through it, report, remove it.
    Demo {
        /// TCP connections and UDP flows to drive (each).
        #[arg(long, default_value_t = 600)]
        flows: u16,
        /// Keep the daemon's log here instead of a temporary file.
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// Answer every TCP line and UDP datagram with NAME (runs until killed).
    Serve {
        #[arg(long)]
        name: String,
        /// TCP addresses to listen on (repeat).
        #[arg(long)]
        tcp: Vec<SocketAddr>,
        /// UDP addresses to listen on (repeat).
        #[arg(long)]
        udp: Vec<SocketAddr>,
        /// Answer "NAME PEER", PEER being the client's address as this server sees it.
        #[arg(long)]
        report_peer: bool,
    },
    /// One TCP connection per source port; prints JSON results.
    TcpFlows(#[command(flatten)] FlowArgs),
    /// One UDP flow per source port; prints JSON results.
    UdpFlows(#[command(flatten)] FlowArgs),
    /// Hold connections open and ping each until the duration passes or --stop-file exists.
    Hold {
        #[command(flatten)]
        flows: FlowArgs,
        #[arg(long, default_value_t = 30_000)]
        max_ms: u64,
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        #[arg(long)]
        ready_file: Option<PathBuf>,
        #[arg(long)]
        stop_file: Option<PathBuf>,
        /// Replaced after every round with `{"round": N, "lost": K}`.
        #[arg(long)]
        progress_file: Option<PathBuf>,
    },
    /// Fresh sockets to a frontend (balanced at the socket): which endpoint answered and
    /// the peer the socket reports, or the error; prints JSON results.
    SockProbe {
        #[arg(long)]
        target: SocketAddr,
        #[arg(long, value_enum)]
        proto: ProbeProto,
        /// Sockets to open, one after the other.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// UDP: datagrams each socket sends (unconnected, `sendto`/`recvfrom`).
        #[arg(long, default_value_t = 1)]
        datagrams: u32,
        /// How long a connect, or an answer, may take (default: 5 s for TCP, 500 ms for
        /// each UDP datagram, which is sent up to three times).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// TCP: ask for ICMP errors on each socket's error queue (IP_RECVERR /
        /// IPV6_RECVERR), so a refusal answered while `connect()` still holds the socket
        /// ends the connect at once (a balancer in the same kernel answers that fast).
        #[arg(long)]
        icmp_errors: bool,
    },
    /// Attach a pass-everything XDP program to IFACE and pin its link at PIN.
    AttachPass {
        #[arg(long)]
        iface: String,
        #[arg(long)]
        pin: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ProbeProto {
    Tcp,
    Udp,
}

/// Where flows go and which source ports they use (one flow per port).
#[derive(clap::Args)]
struct FlowArgs {
    #[arg(long)]
    target: SocketAddr,
    /// Default: the lab client's address of the target's family.
    #[arg(long)]
    src: Option<IpAddr>,
    #[arg(long)]
    sport: u16,
    #[arg(long)]
    count: u16,
}

impl FlowArgs {
    fn src(&self) -> Result<IpAddr> {
        let default = if self.target.is_ipv4() {
            CLIENT_ADDR
        } else {
            CLIENT_ADDR6
        };
        Ok(self.src.unwrap_or(default.parse()?))
    }

    fn sports(&self) -> Result<std::ops::Range<u16>> {
        let end = self
            .sport
            .checked_add(self.count)
            .context("source ports run past 65535")?;
        Ok(self.sport..end)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            name,
            tcp,
            udp,
            report_peer,
        } => traffic::serve(&name, &tcp, &udp, report_peer)?,
        Command::TcpFlows(f) => {
            let results = traffic::tcp_flows(f.src()?, f.target, f.sports()?);
            println!("{}", serde_json::to_string(&results)?)
        }
        Command::UdpFlows(f) => {
            let results = traffic::udp_flows(f.src()?, f.target, f.sports()?);
            println!("{}", serde_json::to_string(&results)?)
        }
        Command::Hold {
            flows,
            max_ms,
            interval_ms,
            ready_file,
            stop_file,
            progress_file,
        } => {
            let held = traffic::hold(
                flows.src()?,
                flows.target,
                flows.sports()?,
                Duration::from_millis(max_ms),
                Duration::from_millis(interval_ms),
                traffic::HoldFiles {
                    ready: ready_file.as_deref(),
                    stop: stop_file.as_deref(),
                    progress: progress_file.as_deref(),
                },
            );
            println!("{}", serde_json::to_string(&held)?);
        }
        Command::SockProbe {
            target,
            proto,
            count,
            datagrams,
            timeout_ms,
            icmp_errors,
        } => {
            let timeout = |default| timeout_ms.map_or(default, Duration::from_millis);
            let probes = match proto {
                ProbeProto::Tcp => {
                    probe::tcp(target, count, timeout(traffic::IO_TIMEOUT), icmp_errors)
                }
                ProbeProto::Udp => {
                    let timeout = timeout(Duration::from_millis(500));
                    probe::udp(target, count, datagrams, timeout)
                }
            };
            println!("{}", serde_json::to_string(&probes)?);
        }
        Command::AttachPass { iface, pin } => lb_daemon::loader::install_pass(&iface, &pin)?,
        Command::Demo { flows, log } => demo(flows, log)?,
    }
    Ok(())
}

const TCP_PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

fn bar(share: f64) -> String {
    "█".repeat((share * 40.0).round() as usize)
}

fn tally(results: &[FlowResult]) -> (BTreeMap<String, usize>, usize) {
    let mut per = BTreeMap::new();
    let mut failed = 0;
    for r in results {
        match &r.backend {
            Some(b) => *per.entry(b.clone()).or_default() += 1,
            None => failed += 1,
        }
    }
    (per, failed)
}

fn demo(flows: u16, log: Option<PathBuf>) -> Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo builds network namespaces and loads BPF programs: run it as root");
    }
    let bins = Binaries::beside(&std::env::current_exe()?);
    for bin in [&bins.ferrolb, &bins.lab] {
        if !bin.exists() {
            bail!(
                "{} is missing; build with `cargo build -p lb-daemon`",
                bin.display()
            );
        }
    }
    let work = std::env::temp_dir().join(format!("ferrolb-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let config = work.join("config.yaml");
    std::fs::write(&config, lb_daemon::config::DEMO_CONFIG)?;
    let log = log.unwrap_or_else(|| work.join("ferrolb.log"));

    println!("ferrolb demo: client -> LB node (XDP + Maglev + IPIP) -> 3 backends, replies straight back (DSR)\n");
    println!("[1/5] building the lab: namespaces for a client, the LB node and 3 backends on one bridge (198.18.0.0/24)");
    let mut lab = Lab::create("demo", 3)?;
    println!(
        "      prefix {}; VIP {VIP} routed via the LB (198.18.0.2)",
        lab.prefix
    );
    lab.attach_pass(&bins)?;
    println!("[2/5] backends: IPIP decap on tc ingress (`ferrolb backend`), VIP on lo, name servers on :{TCP_PORT}/tcp and :{UDP_PORT}/udp");
    lab.start_backends(&bins, TCP_PORT, UDP_PORT)?;
    let lb_mac = lab.mac_of(&lab.lb.clone())?;
    let client = lab.client.clone();
    let lb = lab.lb.clone();
    lab.count_vip_replies(&client, Some(&lb_mac))?;
    lab.count_vip_replies(&lb, None)?;
    println!(
        "[3/5] starting `ferrolb run` on the LB with the built-in config (log: {})",
        log.display()
    );
    lab.start_daemon(&bins, &config, &log)?;
    lab.wait_synced(&bins, &[(TCP_PORT, 3), (UDP_PORT, 3)])
        .with_context(|| format!("daemon did not program the maps; see {}", log.display()))?;

    println!("[4/5] driving {flows} TCP connections and {flows} UDP flows at the VIP, one source port each");
    let tcp_target = format!("{VIP}:{TCP_PORT}");
    let udp_target = format!("{VIP}:{UDP_PORT}");
    let count = flows.to_string();
    let tcp: Vec<FlowResult> = lab.client(
        &bins,
        &[
            "tcp-flows",
            "--target",
            &tcp_target,
            "--sport",
            "20000",
            "--count",
            &count,
        ],
    )?;
    let udp: Vec<FlowResult> = lab.client(
        &bins,
        &[
            "udp-flows",
            "--target",
            &udp_target,
            "--sport",
            "20000",
            "--count",
            &count,
        ],
    )?;

    println!("[5/5] report\n");
    let mut ok = report_spread(&lab, &tcp_target, &tcp, &udp_target, &udp);
    ok &= report_dsr(&mut lab, &client, &lb, &lb_mac)?;
    report_views(&lab, &bins)?;

    println!("\nremoving the lab (namespaces, links, pins)...");
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
    if !ok {
        bail!("the demo saw failures (see above)");
    }
    println!("done.");
    Ok(())
}

/// Flows per backend for each protocol; true when every flow was answered.
fn report_spread(
    lab: &Lab,
    tcp_target: &str,
    tcp: &[FlowResult],
    udp_target: &str,
    udp: &[FlowResult],
) -> bool {
    let mut ok = true;
    for (title, results) in [
        (format!("TCP {tcp_target}"), tcp),
        (format!("UDP {udp_target}"), udp),
    ] {
        let (per, failed) = tally(results);
        let answered = results.len() - failed;
        println!(
            "{title}: {} flows, {answered} answered, {failed} failed",
            results.len()
        );
        for b in &lab.backends {
            let n = per.get(&b.name).copied().unwrap_or(0);
            let share = n as f64 / answered.max(1) as f64;
            println!(
                "  {} {:<12} {:>5} flows {:>5.1}%  {}",
                b.name,
                b.addr,
                n,
                100.0 * share,
                bar(share)
            );
        }
        ok &= failed == 0;
    }
    ok
}

/// The nftables evidence that replies bypassed the LB; true when they all did.
fn report_dsr(lab: &mut Lab, client: &str, lb: &str, lb_mac: &str) -> Result<bool> {
    let (via_lb, direct) = lab.vip_reply_counts(client)?;
    let (_, at_lb) = lab.vip_reply_counts(lb)?;
    println!("\nDirect server return (nftables counters on ingress, after XDP):");
    println!("  packets from the VIP received by the client:        {direct}");
    println!("  ... of them sent by the LB's MAC ({lb_mac}): {via_lb}");
    println!("  packets from the VIP that reached the LB node:      {at_lb}");
    let dsr = direct > 0 && via_lb == 0 && at_lb == 0;
    println!(
        "  => {}",
        if dsr {
            "every reply went from the backends straight to the client"
        } else {
            "replies did NOT bypass the LB"
        }
    );
    Ok(dsr)
}

/// What the CLI shows of the datapath: counters, the kernel's services, one `explain`.
fn report_views(lab: &Lab, bins: &Binaries) -> Result<()> {
    let pin = lab.lb_pin_dir.display().to_string();
    let ferrolb = bins.ferrolb.display().to_string();
    println!("\nDatapath counters (`ferrolb stats`), packets by reason, zeros left out:");
    let stats = lb_lab::run(&ferrolb, &["--pin-dir", &pin, "stats"])?;
    for line in stats.lines() {
        if line.contains("_packets_total") && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    println!("\nKernel view (`ferrolb list`):");
    print!("{}", lb_lab::run(&ferrolb, &["--pin-dir", &pin, "list"])?);
    let explain_tuple = format!("tcp {CLIENT_ADDR}:20000 {VIP}:{TCP_PORT}");
    println!("\nWhy the first TCP flow went where it did (`ferrolb explain '{explain_tuple}'`):");
    print!(
        "{}",
        lb_lab::run(&ferrolb, &["--pin-dir", &pin, "explain", &explain_tuple])?
    );
    Ok(())
}
