//! The `ferrolb` command: daemon, backend setup, inspection and clean-up.

mod cli;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Result;
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use cli::Output;
use lb_common::DEFAULT_PIN_DIR;
use lb_daemon::{
    datapath::DatapathOptions,
    file_mode, kube_mode, loader,
    sync::{IcmpLimit, NewFlowBudget},
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
    /// Where daemons keep their lock files (one per pin directory, one per interface).
    #[arg(long, global = true, default_value = loader::DEFAULT_LOCK_DIR)]
    lock_dir: PathBuf,
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
    /// ICMP answers (port unreachable for a refused frontend, "fragmentation needed" /
    /// "packet too big") the balancer sends per second and per CPU; 0 sends none.
    #[arg(long, default_value_t = IcmpLimit::DEFAULT.per_second)]
    icmp_rate: u16,
    /// ICMP answers a CPU may send back to back before `--icmp-rate` applies.
    #[arg(long, default_value_t = IcmpLimit::DEFAULT.burst, value_parser = clap::value_parser!(u16).range(1..))]
    icmp_burst: u16,
    /// Maglev slots across all tables; each distinct backend set takes one region of its
    /// table size, and a table being replaced one more until the next sync (preallocated:
    /// the kernel's array takes 8 bytes a slot).
    #[arg(long, default_value_t = lb_common::limits::MAGLEV_SLOTS)]
    maglev_slots: u32,
    /// TCP flow-table entries (rounded up to sets of eight, preallocated; `ferrolb list`
    /// shows its memory). About twice the concurrent flows: a full set evicts its oldest.
    #[arg(long, alias = "flow-entries", default_value_t = lb_common::limits::DEFAULT_FLOWS)]
    tcp_flow_entries: u32,
    /// UDP flow-table entries (sets of eight, preallocated): a table of its own, so a flood of new
    /// UDP flows cannot evict TCP connections' entries.
    #[arg(long, default_value_t = lb_common::limits::DEFAULT_UDP_FLOWS)]
    udp_flow_entries: u32,
    /// Session-affinity entries per scope (LRU, preallocated; one table for the XDP
    /// balancer's clients, one for the socket programs'; `ferrolb list` shows their memory).
    #[arg(long, default_value_t = lb_common::limits::AFFINITY_ENTRIES, value_parser = clap::value_parser!(u32).range(1..))]
    affinity_entries: u32,
    /// New flow-table entries a CPU writes per second (0: no limit); new flows beyond it
    /// are forwarded by Maglev without an entry (`over_budget` in `ferrolb stats`).
    #[arg(long, default_value_t = NewFlowBudget::DEFAULT.per_second)]
    new_flow_rate: u32,
    /// New flow-table entries a CPU may write back to back before `--new-flow-rate` applies.
    #[arg(long, default_value_t = NewFlowBudget::DEFAULT.burst, value_parser = clap::value_parser!(u32).range(1..))]
    new_flow_burst: u32,
    /// Read VLAN tags the NIC took out of the frame from the packet's metadata (auto: by
    /// loading the balancer bound to the interface, in native mode only; where that fails
    /// the daemon warns and reads tags in the frame only). See docs/architecture.md, "VLANs".
    #[arg(long, value_enum, default_value = "auto")]
    vlan_metadata: VlanMetadataArg,
}

#[derive(Clone, Copy, ValueEnum)]
enum VlanMetadataArg {
    Auto,
    Off,
}

impl DatapathArgs {
    fn options(self, pin_dir: PathBuf, lock_dir: PathBuf) -> DatapathOptions {
        DatapathOptions {
            lock_dir,
            iface: self.iface,
            pin_dir,
            xdp_mode: match self.xdp_mode {
                Mode::Auto => XdpMode::Default,
                Mode::Driver => XdpMode::Driver,
                Mode::Skb => XdpMode::Skb,
            },
            vlan_metadata: match self.vlan_metadata {
                VlanMetadataArg::Auto => loader::VlanMetadata::Auto,
                VlanMetadataArg::Off => loader::VlanMetadata::Off,
            },
            encap_source: self.encap_source,
            encap_source6: self.encap_source6,
            nexthop_ttl: Duration::from_millis(self.nexthop_ttl_ms),
            icmp_limit: IcmpLimit {
                per_second: self.icmp_rate,
                burst: self.icmp_burst,
            },
            new_flow_budget: NewFlowBudget {
                per_second: self.new_flow_rate,
                burst: self.new_flow_burst,
            },
            map_sizes: loader::MapSizes {
                maglev_slots: self.maglev_slots,
                flows: self.tcp_flow_entries,
                udp_flows: self.udp_flow_entries,
                affinity: self.affinity_entries,
            },
        }
    }
}

/// This node and its kube-proxy-compatible settings.
#[derive(clap::Args)]
struct KubeArgs {
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
    /// cgroup v2 directory the socket programs attach to: connect() and datagrams to
    /// Services from every process in it or below are balanced at the socket (east-west).
    /// Default: the machine's cgroup2 mount (from /proc/mounts), which holds every pod and
    /// host process. In a container, mount the host's and give it here: the container's
    /// own /sys/fs/cgroup is its private cgroup namespace.
    #[arg(long, value_name = "PATH", conflicts_with = "no_socket_lb")]
    cgroup: Option<PathBuf>,
    /// Leave this node's pods' and processes' traffic to Services alone: no socket
    /// programs and no internal-scope frontends (traffic from the network is balanced
    /// either way). For when something else serves in-cluster Service traffic (kube-proxy
    /// or a CNI's service handling kept beside ferrolb), when cgroup v2 is not available,
    /// and in labs that must not attach programs to the machine's root cgroup.
    #[arg(long)]
    no_socket_lb: bool,
}

impl KubeArgs {
    fn options(self, datapath: DatapathOptions) -> kube_mode::KubeOptions {
        kube_mode::KubeOptions {
            datapath,
            kubeconfig: self.kubeconfig,
            node: NodeConfig {
                node_name: self.node_name,
                node_port_addresses: (!self.nodeport_addresses.is_empty())
                    .then_some(self.nodeport_addresses),
                node_port_on_loopback: self.nodeport_on_loopback,
                zone: self.zone,
                service_proxy_name: self.service_proxy_name,
            },
            health_addr: self.health_bind_address,
            metrics_addr: self.metrics_bind_address,
            health_check_ip: self.health_check_address,
            socket_lb: if self.no_socket_lb {
                kube_mode::SocketLb::Off
            } else {
                kube_mode::SocketLb::On {
                    cgroup: self.cgroup,
                }
            },
        }
    }
}

/// Config-file mode at the network's edge: VIP announcement and metrics.
#[derive(clap::Args)]
struct EdgeArgs {
    /// Announce each VIP this node can serve as a blackhole host route (proto 201) in this
    /// routing table, for a routing daemon to export over BGP (docs/bgp.md); withdrawn
    /// when its last backend fails, when the datapath goes and on exit.
    #[arg(long, value_name = "TABLE", value_parser = clap::value_parser!(u32).range(1..=0xffff_fffe))]
    announce_table: Option<u32>,
    /// Serve Prometheus metrics (health checks) on this address.
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
}

impl EdgeArgs {
    fn options(self) -> lb_daemon::edge::EdgeOptions {
        lb_daemon::edge::EdgeOptions {
            announce_table: self.announce_table,
            metrics_addr: self.metrics_address,
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
        /// How long a changed file must read the same before it is applied, in
        /// milliseconds (a writer caught half-way is not applied; SIGHUP applies at once).
        #[arg(long, default_value_t = 500)]
        settle_ms: u64,
        #[command(flatten)]
        edge: EdgeArgs,
    },
    /// Replace kube-proxy: program Services and EndpointSlices from the Kubernetes API.
    Kube {
        #[command(flatten)]
        datapath: DatapathArgs,
        #[command(flatten)]
        node: KubeArgs,
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
    /// Validate a config file without touching the kernel, including whether it fits the
    /// maps of a daemon run with these capacities.
    CheckConfig {
        config: PathBuf,
        /// The `--maglev-slots` of the daemon that will run it.
        #[arg(long, default_value_t = lb_common::limits::MAGLEV_SLOTS)]
        maglev_slots: u32,
    },
    /// Services of both scopes (the XDP balancer's, and the socket programs' marked
    /// "(socket)") and their backends, as the kernel maps hold them.
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
        /// As a connect() or datagram of this node's pods and processes meets it (the
        /// socket programs): the verdict, and the endpoints a socket may get with their
        /// shares and target ports. Which one a given socket gets depends on its cookie,
        /// which only the kernel knows.
        #[arg(long)]
        internal: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Detach the programs and remove every pin under --pin-dir. Refused while a daemon
    /// owns the pin directory.
    Cleanup {
        /// Remove the pins even under a running daemon (which re-installs within a second
        /// unless it is stopped too).
        #[arg(long)]
        force: bool,
    },
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
    let lock_dir = cli.lock_dir;
    match cli.command {
        Command::Run {
            datapath,
            config,
            poll_ms,
            settle_ms,
            edge,
        } => {
            let opts = file_mode::RunOptions {
                datapath: datapath.options(pin_dir, lock_dir),
                config,
                poll_interval: Duration::from_millis(poll_ms.max(10)),
                settle: Duration::from_millis(settle_ms),
                edge: edge.options(),
            };
            runtime()?.block_on(file_mode::run(opts))?;
        }
        Command::Kube { datapath, node } => {
            let opts = node.options(datapath.options(pin_dir, lock_dir));
            runtime()?.block_on(kube_mode::run(opts))?;
        }
        Command::Backend {
            iface,
            vips,
            translations,
        } => cli::setup::backend(&pin_dir, &iface, &vips, &translations)?,
        Command::CheckConfig {
            config,
            maglev_slots,
        } => cli::setup::check_config(&config, maglev_slots)?,
        Command::List { output } => cli::inspect::list(&pin_dir, output)?,
        Command::Stats { output } => cli::inspect::stats(&pin_dir, output)?,
        Command::Explain {
            tuple,
            batch,
            internal,
            output,
        } => cli::inspect::explain(&pin_dir, tuple, batch.as_deref(), internal, output)?,
        Command::Nat { output } => cli::inspect::nat(&pin_dir, output)?,
        Command::Cleanup { force } => cli::setup::cleanup(&pin_dir, &lock_dir, force)?,
    }
    Ok(())
}
