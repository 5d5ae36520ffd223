//! A lab in network namespaces: a client, an LB node and backends on one bridged L2 segment,
//! addresses from 198.18.0.0/15. Everything it creates carries its prefix and is removed on
//! drop, also when a test panics; leftovers of a crashed run are removed at the next start.

pub mod bgp;
pub mod cgroup;
pub mod cluster;
pub mod nft;
pub mod probe;
mod process;
pub mod traffic;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use process::Processes;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
}

pub const VIP: &str = "198.18.100.1";
pub const CLIENT_ADDR: &str = "198.18.0.10";
pub const LB_ADDR: &str = "198.18.0.2";
/// The same lab in IPv6 (2001:db8::/32, documentation space): every node has an address
/// in 2001:db8::/64 beside its IPv4 one, and the backends carry `VIP6` on their loopback.
pub const VIP6: &str = "2001:db8:100::1";
pub const CLIENT_ADDR6: &str = "2001:db8::10";
pub const LB_ADDR6: &str = "2001:db8::2";

/// Runs a command to completion; its failure is an error carrying stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    output_of(cmd, format!("{program} {}", args.join(" ")))
}

/// Runs `cmd` (described as `command` in errors) to completion: its stdout, or an error
/// carrying stderr.
fn output_of(mut cmd: Command, command: String) -> Result<String, LabError> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub struct Backend {
    pub name: String,
    pub netns: String,
    pub addr: String,
    pub addr6: String,
    pub pin_dir: PathBuf,
}

pub struct Lab {
    pub prefix: String,
    pub switch: String,
    pub client: String,
    pub lb: String,
    pub backends: Vec<Backend>,
    pub lb_pin_dir: PathBuf,
    pass_pin_dir: PathBuf,
    children: Processes,
}

fn netns_path(netns: &str) -> String {
    format!("--net=/run/netns/{netns}")
}

pub fn netns_list() -> Vec<String> {
    run("ip", &["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Removes namespaces and pins of earlier labs with this tag whose process is gone.
pub fn remove_stale(tag: &str) {
    let lead = format!("flb{tag}");
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix(&lead) else {
            continue;
        };
        let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "del", &ns]);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(rest) = name.strip_prefix(&lead) {
                let pid: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if pid.is_empty() || !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
}

impl Lab {
    /// Builds the topology. `tag` keeps concurrent labs apart (the process id is added).
    pub fn create(tag: &str, backends: usize) -> Result<Self, LabError> {
        remove_stale(tag);
        let prefix = format!("flb{tag}{}", std::process::id());
        let ns = |role: &str| format!("{prefix}-{role}");
        let mut lab = Self {
            switch: ns("sw"),
            client: ns("cl"),
            lb: ns("lb"),
            backends: (1..=backends)
                .map(|i| Backend {
                    name: format!("b{i}"),
                    netns: ns(&format!("b{i}")),
                    addr: format!("198.18.0.{}", 10 + i),
                    addr6: format!("2001:db8::{}", 10 + i),
                    pin_dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}-b{i}")),
                })
                .collect(),
            lb_pin_dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}-lb")),
            pass_pin_dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}-sw")),
            prefix,
            children: Processes::default(),
        };
        lab.build()?;
        Ok(lab)
    }

    /// (namespace, switch port, IPv4 address, IPv6 address) of every node.
    fn nodes(&self) -> Vec<(String, String, String, String)> {
        let mut nodes = vec![
            (
                self.client.clone(),
                "pcl".to_string(),
                CLIENT_ADDR.to_string(),
                CLIENT_ADDR6.to_string(),
            ),
            (
                self.lb.clone(),
                "plb".to_string(),
                LB_ADDR.to_string(),
                LB_ADDR6.to_string(),
            ),
        ];
        for b in &self.backends {
            nodes.push((
                b.netns.clone(),
                format!("p{}", b.name),
                b.addr.clone(),
                b.addr6.clone(),
            ));
        }
        nodes
    }

    fn build(&mut self) -> Result<(), LabError> {
        let sw = self.switch.clone();
        run("ip", &["netns", "add", &sw])?;
        self.exec_ok(&sw, "ip", &["link", "add", "br0", "type", "bridge"])?;
        self.exec_ok(&sw, "ip", &["link", "set", "br0", "up"])?;
        for (netns, port, addr, addr6) in self.nodes() {
            self.add_node(&sw, &netns, &port, &addr, &addr6)?;
        }
        self.route_client_and_lb()?;
        for b in &self.backends {
            self.exec(
                &b.netns,
                "ip",
                &["addr", "add", &format!("{VIP}/32"), "dev", "lo"],
            )?;
            self.exec(
                &b.netns,
                "ip",
                &["-6", "addr", "add", &format!("{VIP6}/128"), "dev", "lo"],
            )?;
        }
        Ok(())
    }

    /// One node's namespace, its veth on the bridge, its addresses.
    fn add_node(
        &mut self,
        sw: &str,
        netns: &str,
        port: &str,
        addr: &str,
        addr6: &str,
    ) -> Result<(), LabError> {
        run("ip", &["netns", "add", netns])?;
        bridge_port(sw, netns, port, addr, addr6)?;
        for key in [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.eth0.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            self.exec_ok(netns, "sysctl", &["-qw", key])?;
        }
        Ok(())
    }

    /// The client's routes to the VIPs through the LB, and forwarding on the LB.
    fn route_client_and_lb(&mut self) -> Result<(), LabError> {
        // Locally generated frames carry partial checksums on veth; once XDP forwards them
        // the backend would drop them (DESIGN.md §4). A real wire delivers full checksums.
        self.exec_ok(
            &self.client.clone(),
            "ethtool",
            &["-K", "eth0", "tx", "off"],
        )?;
        // Clients reach the VIP through the LB, with the link's MTU: the balancer's
        // "fragmentation needed" / "packet too big" answers make room for the outer header.
        self.exec_ok(
            &self.client.clone(),
            "ip",
            &["route", "add", "198.18.100.0/24", "via", LB_ADDR],
        )?;
        self.exec_ok(
            &self.client.clone(),
            "ip",
            &["-6", "route", "add", "2001:db8:100::/64", "via", LB_ADDR6],
        )?;
        self.exec_ok(
            &self.lb.clone(),
            "sysctl",
            &["-qw", "net.ipv4.ip_forward=1"],
        )?;
        // The datapath's IPv6 route lookups need forwarding on, as for IPv4.
        self.exec_ok(
            &self.lb.clone(),
            "sysctl",
            &["-qw", "net.ipv6.conf.all.forwarding=1"],
        )
    }

    /// Runs `program args` inside `netns` and waits for it (see [`nsexec`]).
    pub fn exec(&self, netns: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
        nsexec(netns, program, args)
    }

    fn exec_ok(&mut self, netns: &str, program: &str, args: &[&str]) -> Result<(), LabError> {
        self.exec(netns, program, args).map(drop)
    }

    /// Starts `program args` inside `netns` in the background; it is killed on drop unless
    /// taken back with `stop`.
    pub fn spawn(
        &mut self,
        netns: &str,
        program: &Path,
        args: &[&str],
        log: Option<&Path>,
    ) -> Result<u32, LabError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(netns_path(netns)).arg(program).args(args);
        let child = process::spawn_logged(cmd, log)?;
        Ok(self.children.push(child))
    }

    /// Sends SIGTERM to a background process and waits for it (SIGKILL after 5 s).
    pub fn stop(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        self.children.stop(pid)
    }

    pub fn pass_pin(&self) -> PathBuf {
        self.pass_pin_dir.join("link_xdp_pass_plb")
    }

    /// A pin dir for something the lab owns; removed with the lab.
    pub fn pin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![self.lb_pin_dir.clone(), self.pass_pin_dir.clone()];
        dirs.extend(self.backends.iter().map(|b| b.pin_dir.clone()));
        dirs
    }

    /// Counts packets from the VIP arriving at `netns`'s eth0 (netdev ingress hook, after
    /// XDP), split by whether they came from `via_mac`.
    pub fn count_vip_replies(
        &mut self,
        netns: &str,
        via_mac: Option<&str>,
    ) -> Result<(), LabError> {
        if let Some(mac) = via_mac {
            let matches = format!("ip saddr {VIP} ether saddr {mac}");
            nft::count_packets(netns, nft::Hook::Ingress, "via", &matches)?;
        }
        let matches = format!("ip saddr {VIP}");
        nft::count_packets(netns, nft::Hook::Ingress, "all", &matches)
    }

    /// Reads counters set up by `count_vip_replies`: (via MAC, all).
    pub fn vip_reply_counts(&self, netns: &str) -> Result<(u64, u64), LabError> {
        let counts = nft::packet_counts(netns)?;
        let count = |name: &str| counts.get(name).copied().unwrap_or(0);
        Ok((count("via"), count("all")))
    }

    pub fn mac_of(&self, netns: &str) -> Result<String, LabError> {
        eth0_mac(netns)
    }
}

/// Runs `program args` inside `netns` and waits for it. Only the network namespace is
/// entered (nsenter), not a new mount namespace as `ip netns exec` makes: pins under
/// /sys/fs/bpf must be the host's, visible to the CLI and removable by the lab.
pub fn nsexec(netns: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
    let net = netns_path(netns);
    let mut full = vec![net.as_str(), program];
    full.extend_from_slice(args);
    run("nsenter", &full)
}

/// `netns`'s `eth0` on the bridge `br0` of the switch namespace `sw` (through switch port
/// `port`), at `addr`/24 and `addr6`/64, up, with its loopback.
fn bridge_port(sw: &str, netns: &str, port: &str, addr: &str, addr6: &str) -> Result<(), LabError> {
    let veth = [
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns,
    ];
    nsexec(sw, "ip", &veth)?;
    nsexec(sw, "ip", &["link", "set", port, "master", "br0", "up"])?;
    let addr = format!("{addr}/24");
    nsexec(netns, "ip", &["addr", "add", &addr, "dev", "eth0"])?;
    // nodad: usable at once, no duplicate-address detection to wait for.
    let addr6 = format!("{addr6}/64");
    nsexec(
        netns,
        "ip",
        &["-6", "addr", "add", &addr6, "dev", "eth0", "nodad"],
    )?;
    nsexec(netns, "ip", &["link", "set", "eth0", "up"])?;
    nsexec(netns, "ip", &["link", "set", "lo", "up"]).map(drop)
}

/// The MAC address of `eth0` in `netns`.
pub fn eth0_mac(netns: &str) -> Result<String, LabError> {
    // `ip -br link`: "eth0@if12  UP  02:..:..  <...>"
    let text = nsexec(netns, "ip", &["-br", "link", "show", "dev", "eth0"])?;
    text.split_whitespace()
        .nth(2)
        .map(str::to_string)
        .ok_or_else(|| LabError::Command {
            command: "ip -br link show dev eth0".into(),
            stderr: format!("unexpected output {text:?}"),
        })
}

impl Drop for Lab {
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.children));
        for ns in netns_list() {
            if ns.starts_with(&self.prefix) {
                let _ = run("ip", &["netns", "del", &ns]);
            }
        }
        for dir in self.pin_dirs() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Kernel and namespace tests need root. Outside CI they skip with a note; under CI (which
/// runs as root) a missing privilege is a failure, never a silent skip.
pub fn require_root(what: &str) -> bool {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc_geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{what} needs root and CI runs as root: refusing to skip");
    }
    eprintln!("SKIPPED {what}: needs root");
    false
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// A scratch directory for one test or run, removed with everything in it on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!("ferrolb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T, LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(LabError::Timeout(timeout, what.to_string()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Paths of the two binaries a lab drives.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub ferrolb: PathBuf,
    pub lab: PathBuf,
}

impl Binaries {
    /// Both next to the running executable (the demo) or given by cargo (tests).
    pub fn beside(exe: &Path) -> Self {
        let dir = exe.parent().unwrap_or(Path::new("."));
        Self {
            ferrolb: dir.join("ferrolb"),
            lab: dir.join("ferrolb-lab"),
        }
    }
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl Lab {
    /// veth drops frames XDP_TX'd into it unless its peer runs an XDP program.
    pub fn attach_pass(&mut self, bins: &Binaries) -> Result<(), LabError> {
        let pin = path_str(&self.pass_pin());
        let sw = self.switch.clone();
        self.exec(
            &sw,
            &path_str(&bins.lab),
            &["attach-pass", "--iface", "plb", "--pin", &pin],
        )
        .map(drop)
    }

    /// Installs IPIP decapsulation on every backend and starts its name server on the VIP.
    pub fn start_backends(
        &mut self,
        bins: &Binaries,
        tcp_port: u16,
        udp_port: u16,
    ) -> Result<(), LabError> {
        let specs: Vec<(String, String)> = self
            .backends
            .iter()
            .map(|b| (b.netns.clone(), path_str(&b.pin_dir)))
            .collect();
        for (netns, pin) in specs {
            self.exec(
                &netns,
                &path_str(&bins.ferrolb),
                &[
                    "--pin-dir",
                    &pin,
                    "backend",
                    "--iface",
                    "eth0",
                    "--vip",
                    VIP,
                    "--vip",
                    VIP6,
                ],
            )?;
        }
        self.start_servers(bins, VIP, tcp_port, udp_port)?;
        self.start_servers(bins, &format!("[{VIP6}]"), tcp_port, udp_port)
    }

    /// Starts every backend's name server on `bind` (an address, or 0.0.0.0 for all of
    /// the backend's) and waits until each listens.
    pub fn start_servers(
        &mut self,
        bins: &Binaries,
        bind: &str,
        tcp_port: u16,
        udp_port: u16,
    ) -> Result<(), LabError> {
        let tcp = format!("{bind}:{tcp_port}");
        let udp = format!("{bind}:{udp_port}");
        let specs: Vec<(String, String)> = self
            .backends
            .iter()
            .map(|b| (b.netns.clone(), b.name.clone()))
            .collect();
        for (netns, name) in specs {
            self.spawn(
                &netns,
                &bins.lab,
                &["serve", "--name", &name, "--tcp", &tcp, "--udp", &udp],
                None,
            )?;
        }
        // Servers bind at once; give them a moment, then check they listen.
        for b in &self.backends {
            let netns = b.netns.clone();
            wait_for(
                Duration::from_secs(5),
                &format!("server in {netns}"),
                || {
                    self.exec(&netns, "ss", &["-ltn", &format!("sport = :{tcp_port}")])
                        .ok()
                        .filter(|out| out.contains(&format!("{bind}:{tcp_port}")))
                },
            )?;
        }
        Ok(())
    }

    /// Starts the daemon in the LB namespace; returns its pid.
    pub fn start_daemon(
        &mut self,
        bins: &Binaries,
        config: &Path,
        log: &Path,
    ) -> Result<u32, LabError> {
        let lb = self.lb.clone();
        let pin = path_str(&self.lb_pin_dir);
        let config = path_str(config);
        self.spawn(
            &lb,
            &bins.ferrolb,
            &[
                "--pin-dir",
                &pin,
                "run",
                "--iface",
                "eth0",
                "--config",
                &config,
                "--poll-ms",
                "50",
            ],
            Some(log),
        )
    }

    /// `ferrolb list -o json` as the kernel maps hold them.
    pub fn list_json(&self, bins: &Binaries) -> Result<serde_json::Value, LabError> {
        let out = run(
            &path_str(&bins.ferrolb),
            &[
                "--pin-dir",
                &path_str(&self.lb_pin_dir),
                "list",
                "-o",
                "json",
            ],
        )?;
        serde_json::from_str(&out).map_err(|e| LabError::Command {
            command: "ferrolb list -o json".into(),
            stderr: e.to_string(),
        })
    }

    /// Waits until the kernel holds `services` services and, for each, the backend count
    /// `backends_of` names for its port.
    pub fn wait_synced(&self, bins: &Binaries, expected: &[(u16, usize)]) -> Result<(), LabError> {
        wait_for(
            Duration::from_secs(20),
            "daemon to program the maps",
            || {
                let list = self.list_json(bins).ok()?;
                let services = list.as_array()?;
                let ok = services.len() == expected.len()
                    && expected.iter().all(|(port, n)| {
                        services.iter().any(|s| {
                            s["port"].as_u64() == Some(u64::from(*port))
                                && s["backends"]
                                    .as_array()
                                    .map(|b| b.iter().filter(|b| b["active"] == true).count())
                                    == Some(*n)
                        })
                    });
                ok.then_some(())
            },
        )
    }

    /// Runs a `ferrolb-lab` client subcommand in the client namespace and parses its JSON.
    pub fn client<T: serde::de::DeserializeOwned>(
        &self,
        bins: &Binaries,
        args: &[&str],
    ) -> Result<T, LabError> {
        let out = self.exec(&self.client, &path_str(&bins.lab), args)?;
        serde_json::from_str(&out).map_err(|e| LabError::Command {
            command: format!("ferrolb-lab {}", args.join(" ")),
            stderr: format!("bad JSON ({e}): {out}"),
        })
    }

    /// `count` new flows of `protocol` ("tcp" or "udp", one source port each, from
    /// `first_sport` up) from the client to `target`, each with the backend that answered.
    pub fn flows(
        &self,
        bins: &Binaries,
        protocol: &str,
        target: &str,
        first_sport: u16,
        count: u16,
    ) -> Result<Vec<traffic::FlowResult>, LabError> {
        let command = format!("{protocol}-flows");
        self.client(
            bins,
            &[
                &command,
                "--target",
                target,
                "--sport",
                &first_sport.to_string(),
                "--count",
                &count.to_string(),
            ],
        )
    }

    /// Same as `client`, in the background, with stdout to `output`.
    pub fn client_background(
        &mut self,
        bins: &Binaries,
        args: &[&str],
        output: &Path,
    ) -> Result<u32, LabError> {
        let client = self.client.clone();
        self.spawn(&client, &bins.lab, args, Some(output))
    }

    /// Waits for a background process to finish by itself (no signal).
    pub fn wait(&mut self, pid: u32, timeout: Duration) -> Result<(), LabError> {
        self.children.wait(pid, timeout).map(drop)
    }
}
