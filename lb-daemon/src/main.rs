//! The `ferrolb` command: daemon, backend setup, inspection and clean-up.

use std::{
    io::{BufRead, Write},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use lb_common::{TcReason, DEFAULT_PIN_DIR};
use lb_daemon::{
    config, daemon,
    inspect::{self, Tuple},
    kube_mode, loader,
    maps::{DecapMaps, LbMaps},
};
use lb_kube::rules::NodeConfig;

#[derive(Parser)]
#[command(
    name = "ferrolb",
    version,
    about = "Maglev + XDP + IPIP DSR load balancer"
)]
struct Cli {
    /// Where maps and links are pinned (one directory per datapath instance).
    #[arg(long, global = true, default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Let the kernel choose.
    Auto,
    /// Native (driver) XDP.
    Driver,
    /// Generic XDP in the stack, for NICs without native support.
    Skb,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

/// Where the balancer attaches and how it forwards.
#[derive(clap::Args)]
struct DatapathArgs {
    #[arg(long)]
    iface: String,
    #[arg(long, value_enum, default_value = "driver")]
    xdp_mode: Mode,
    /// Outer source of IPIP packets (default: the interface's first IPv4 address).
    #[arg(long)]
    encap_source: Option<Ipv4Addr>,
    /// Outer source of IP6IP6 packets (default: the interface's first global IPv6
    /// address; without one, IPv6 services are passed untouched).
    #[arg(long)]
    encap_source6: Option<std::net::Ipv6Addr>,
    /// How long a cached next hop is trusted, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    nexthop_ttl_ms: u64,
    /// Maglev slots across all tables; each distinct backend set takes one region of its
    /// table size, and a table being replaced one more until the next sync (preallocated:
    /// the kernel's array takes 8 bytes a slot).
    #[arg(long, default_value_t = lb_common::limits::MAGLEV_SLOTS)]
    maglev_slots: u32,
    /// Flow-table entries (LRU, preallocated).
    #[arg(long, default_value_t = lb_common::limits::DEFAULT_FLOWS)]
    flow_entries: u32,
}

impl DatapathArgs {
    fn options(self, pin_dir: PathBuf) -> daemon::DatapathOptions {
        daemon::DatapathOptions {
            iface: self.iface,
            pin_dir,
            xdp_mode: match self.xdp_mode {
                Mode::Auto => XdpMode::Default,
                Mode::Driver => XdpMode::Driver,
                Mode::Skb => XdpMode::Skb,
            },
            encap_source: self.encap_source,
            encap_source6: self.encap_source6,
            nexthop_ttl: Duration::from_millis(self.nexthop_ttl_ms),
            map_sizes: loader::MapSizes {
                maglev_slots: self.maglev_slots,
                flows: self.flow_entries,
            },
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

#[derive(Subcommand)]
enum Command {
    /// Attach the balancer to an interface and keep its maps equal to a config file.
    Run {
        #[command(flatten)]
        datapath: DatapathArgs,
        #[arg(long)]
        config: PathBuf,
        /// How often the config file is checked for changes, in milliseconds.
        #[arg(long, default_value_t = 200)]
        poll_ms: u64,
    },
    /// Replace kube-proxy: program Services and EndpointSlices from the Kubernetes API.
    Kube {
        #[command(flatten)]
        datapath: DatapathArgs,
        /// This node's name (set from the downward API in the DaemonSet).
        #[arg(long, env = "NODE_NAME")]
        node_name: String,
        /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, then in-cluster config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Serve only Services labelled service.kubernetes.io/service-proxy-name=NAME.
        #[arg(long)]
        service_proxy_name: Option<String>,
        /// Addresses NodePorts answer on (repeat); default: the Node's addresses.
        #[arg(long = "nodeport-address")]
        nodeport_addresses: Vec<IpAddr>,
        /// Also answer NodePorts on 127.0.0.1.
        #[arg(long)]
        nodeport_on_loopback: bool,
        /// Overrides the Node's topology.kubernetes.io/zone label.
        #[arg(long)]
        zone: Option<String>,
        /// /healthz and /livez, kube-proxy's port.
        #[arg(long, default_value = "0.0.0.0:10256")]
        health_bind_address: std::net::SocketAddr,
        /// Prometheus metrics (localhost by default).
        #[arg(long, default_value = "127.0.0.1:10249")]
        metrics_bind_address: std::net::SocketAddr,
        /// Address the healthCheckNodePort servers listen on.
        #[arg(long, default_value = "0.0.0.0")]
        health_check_address: IpAddr,
    },
    /// Backend side: decapsulate IPIP on an interface for these VIPs (assigned to lo), and
    /// translate frontends to local endpoints (pinned; no daemon).
    Backend {
        #[arg(long)]
        iface: String,
        #[arg(long = "vip", required_unless_present = "translations")]
        vips: Vec<IpAddr>,
        /// `FRONTEND=ENDPOINT:PORT`, e.g. `198.18.100.1:80/tcp=198.18.0.11:8080`: packets for
        /// the frontend sent to this endpoint go to the endpoint's address and port, and
        /// replies leave with the frontend as their source. Repeatable. A frontend address
        /// of 0.0.0.0 matches any address (a NodePort).
        #[arg(long = "translate", id = "translations")]
        translations: Vec<String>,
    },
    /// Backend-side translations as the kernel holds them.
    Nat {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Validate a config file without touching the kernel.
    CheckConfig { config: PathBuf },
    /// Services and backends as the kernel maps hold them.
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Datapath counters by reason (balancer, and the backend side if installed).
    Stats {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Which service, flow entry, Maglev slot and backend a 5-tuple meets, and why.
    Explain {
        /// `PROTO SRC:PORT DST:PORT`, e.g. `tcp 198.18.0.10:40000 198.18.100.1:80`.
        tuple: Option<String>,
        /// Read one tuple per line from this file (`-` for stdin) instead.
        #[arg(long)]
        batch: Option<PathBuf>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Detach the programs and remove every pin under --pin-dir.
    Cleanup,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let pin_dir = cli.pin_dir;
    match cli.command {
        Command::Run {
            datapath,
            config,
            poll_ms,
        } => {
            let opts = daemon::RunOptions {
                datapath: datapath.options(pin_dir),
                config,
                poll_interval: Duration::from_millis(poll_ms.max(10)),
            };
            runtime()?.block_on(daemon::run(opts))?;
        }
        Command::Kube {
            datapath,
            node_name,
            kubeconfig,
            service_proxy_name,
            nodeport_addresses,
            nodeport_on_loopback,
            zone,
            health_bind_address,
            metrics_bind_address,
            health_check_address,
        } => {
            let opts = kube_mode::KubeOptions {
                datapath: datapath.options(pin_dir),
                kubeconfig,
                node: NodeConfig {
                    node_name,
                    node_port_addresses: (!nodeport_addresses.is_empty())
                        .then_some(nodeport_addresses),
                    node_port_on_loopback: nodeport_on_loopback,
                    zone,
                    service_proxy_name,
                },
                health_addr: health_bind_address,
                metrics_addr: metrics_bind_address,
                health_check_ip: health_check_address,
            };
            runtime()?.block_on(kube_mode::run(opts))?;
        }
        Command::Backend {
            iface,
            vips,
            translations,
        } => {
            let translations = translations
                .iter()
                .map(|t| config::parse_translation(t).with_context(|| format!("--translate {t}")))
                .collect::<Result<Vec<_>>>()?;
            let attachment = loader::install_decap(&iface, &pin_dir)?;
            let mut maps = DecapMaps::open(&pin_dir)?;
            maps.set_vips(&vips)?;
            maps.set_translations(&translations)?;
            eprintln!(
                "decapsulating IPIP for {} on {iface} ({:?}); assign the VIPs to lo so the stack accepts them",
                vips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                attachment
            );
        }
        Command::CheckConfig { config: path } => {
            let state = config::load(&path).with_context(|| format!("{}", path.display()))?;
            println!(
                "{}: {} services, valid",
                path.display(),
                state.services.len()
            );
        }
        Command::List { output } => {
            let maps = LbMaps::open(&pin_dir)?;
            let services = inspect::list_services(&maps)?;
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&services)?);
            } else {
                print_services(&services);
            }
        }
        Command::Stats { output } => stats(&pin_dir, output)?,
        Command::Explain {
            tuple,
            batch,
            output,
        } => {
            let maps = LbMaps::open(&pin_dir)?;
            let tuples: Vec<Tuple> = match (tuple, batch) {
                (Some(t), None) => vec![t.parse().map_err(anyhow::Error::msg)?],
                (None, Some(path)) => read_tuples(&path)?,
                _ => bail!("give either one tuple or --batch FILE"),
            };
            let explainer = inspect::Explainer::new(&maps)?;
            let mut explanations = Vec::with_capacity(tuples.len());
            for t in tuples {
                explanations.push(explainer.explain(t)?);
            }
            if output == Output::Json {
                println!("{}", serde_json::to_string_pretty(&explanations)?);
            } else {
                for e in &explanations {
                    let t = e.tuple;
                    println!(
                        "{} {}:{} -> {}:{}  verdict={} backend={}\n  {}",
                        t.protocol,
                        t.src,
                        t.sport,
                        t.dst,
                        t.dport,
                        e.verdict,
                        e.backend.map_or("-".into(), |b| b.to_string()),
                        e.why
                    );
                }
            }
        }
        Command::Nat { output } => {
            let translations = DecapMaps::open(&pin_dir)?.translations()?;
            if output == Output::Json {
                let rows: Vec<serde_json::Value> = translations
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "frontend": t.frontend.to_string(),
                            "endpoint": t.endpoint.to_string(),
                            "target_port": t.target_port,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(rows));
            } else if translations.is_empty() {
                println!("no translations");
            } else {
                for t in &translations {
                    println!("{:<28} -> {}:{}", t.frontend, t.endpoint, t.target_port);
                }
            }
        }
        Command::Cleanup => {
            let removed = loader::uninstall(&pin_dir)?;
            println!(
                "removed links [{}] and maps [{}] from {}",
                removed.links.join(", "),
                removed.maps.join(", "),
                pin_dir.display()
            );
            if !removed.left.is_empty() {
                bail!(
                    "{} still holds files this build does not know: {}",
                    pin_dir.display(),
                    removed.left.join(", ")
                );
            }
        }
    }
    Ok(())
}

fn read_tuples(path: &Path) -> Result<Vec<Tuple>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| path.display().to_string())?,
        ))
    };
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        out.push(
            line.parse()
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

fn print_services(services: &[inspect::ServiceView]) {
    let mut out = std::io::stdout().lock();
    if services.is_empty() {
        let _ = writeln!(out, "no services");
    }
    for s in services {
        let _ = writeln!(
            out,
            "{:<28} id={:<5} table={:<6} packets={:<10} bytes={}",
            s.frontend, s.service_id, s.table_size, s.packets, s.bytes
        );
        for b in &s.backends {
            let _ = writeln!(
                out,
                "    backend {:<18} id={:<5} slots={:<6} ({:5.1}%) {:<8} packets={:<10} bytes={}",
                b.address.map_or("?".into(), |a| a.to_string()),
                b.id,
                b.slots,
                100.0 * f64::from(b.slots) / f64::from(s.table_size.max(1)),
                if b.active { "active" } else { "retired" },
                b.packets,
                b.bytes
            );
        }
    }
}

fn stats(pin_dir: &Path, output: Output) -> Result<()> {
    let balancer = LbMaps::open(pin_dir)
        .ok()
        .map(|maps| inspect::reason_counts(&maps))
        .transpose()?;
    let decap = DecapMaps::open(pin_dir)
        .ok()
        .map(|maps| maps.counters())
        .transpose()?
        .map(|counters| {
            TcReason::ALL
                .iter()
                .zip(counters)
                .map(|(r, c)| inspect::ReasonCount {
                    reason: r.name(),
                    packets: c.packets,
                    bytes: c.bytes,
                })
                .collect::<Vec<_>>()
        });
    if balancer.is_none() && decap.is_none() {
        bail!("nothing installed under {}", pin_dir.display());
    }
    if output == Output::Json {
        println!("{}", serde_json::json!({ "xdp": balancer, "tc": decap }));
        return Ok(());
    }
    // Prometheus text style, named lb_<subsystem>_<name>_total.
    for (subsystem, rows) in [("xdp", balancer), ("tc", decap)] {
        let Some(rows) = rows else { continue };
        for r in &rows {
            println!(
                "lb_{subsystem}_packets_total{{reason=\"{}\"}} {}",
                r.reason, r.packets
            );
        }
        for r in &rows {
            println!(
                "lb_{subsystem}_bytes_total{{reason=\"{}\"}} {}",
                r.reason, r.bytes
            );
        }
    }
    Ok(())
}
