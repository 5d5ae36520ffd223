//! The multi-LB lab (issue 13): a router namespace running BIRD learns a VIP over eBGP
//! from three LB namespaces, each running its own `ferrolb run --announce-table` and
//! BIRD, and spreads the clients' connections over them by ECMP with L4 hashing; the
//! backends sit behind the LB nodes and answer straight back through the router (DSR).
//!
//! ```text
//!  client ── router (BIRD, ECMP) ── bridge ─┬─ lb1 lb2 lb3 (ferrolb + BIRD)
//!  198.19.1.10   .1.1 / .0.1                └─ b1 b2 b3 (backend side, VIP on lo)
//! ```
//!
//! Everything it creates carries the prefix `flbedgeb<pid>` and goes on drop.

pub mod bird;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    bridge_port, nsexec, process, process::Processes, remove_stale, run, wait_for, Binaries,
    LabError,
};

pub const VIP: &str = "198.19.100.1";
pub const PORT: u16 = 8080;
pub const CLIENT: &str = "198.19.1.10";
const ROUTER_CLIENT_SIDE: &str = "198.19.1.1";
pub const ROUTER: &str = "198.19.0.1";
/// The table each LB node's daemon announces its VIPs in.
pub const ANNOUNCE_TABLE: u32 = 100;
const TAG: &str = "edgeb";

/// One LB node: its namespace, address, pin directory and running processes.
pub struct LbNode {
    pub netns: String,
    pub addr: String,
    pub pin_dir: PathBuf,
    switch_port: String,
    daemon: Option<u32>,
    bird: Option<u32>,
}

pub struct BgpLab {
    prefix: String,
    switch: String,
    pub router: String,
    pub client: String,
    pub lbs: Vec<LbNode>,
    /// (namespace, address, pin dir) of each backend.
    pub backends: Vec<(String, String, PathBuf)>,
    pub dir: PathBuf,
    children: Processes,
}

impl BgpLab {
    /// Builds the topology and starts the backends and the router's BIRD (no LB node
    /// yet: [`Self::start_lb`]).
    pub fn create(bins: &Binaries, dir: &Path, health: &str) -> Result<Self, LabError> {
        remove_stale(TAG);
        let prefix = format!("flb{TAG}{}", std::process::id());
        let ns = |role: &str| format!("{prefix}-{role}");
        let mut lab = Self {
            switch: ns("sw"),
            router: ns("rt"),
            client: ns("cl"),
            lbs: (1..=3)
                .map(|i| LbNode {
                    netns: ns(&format!("lb{i}")),
                    addr: format!("198.19.0.{}", 1 + i),
                    pin_dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}-lb{i}")),
                    switch_port: format!("plb{i}"),
                    daemon: None,
                    bird: None,
                })
                .collect(),
            backends: (1..=3)
                .map(|i| {
                    (
                        ns(&format!("b{i}")),
                        format!("198.19.0.{}", 10 + i),
                        PathBuf::from(format!("/sys/fs/bpf/{prefix}-b{i}")),
                    )
                })
                .collect(),
            dir: dir.to_owned(),
            prefix,
            children: Processes::default(),
        };
        lab.build(bins)?;
        lab.write_lb_configs(health)?;
        lab.start_router()?;
        Ok(lab)
    }

    fn build(&mut self, bins: &Binaries) -> Result<(), LabError> {
        run("ip", &["netns", "add", &self.switch])?;
        nsexec(
            &self.switch,
            "ip",
            &["link", "add", "br0", "type", "bridge"],
        )?;
        nsexec(&self.switch, "ip", &["link", "set", "br0", "up"])?;
        self.build_router_and_client()?;
        for i in 0..self.lbs.len() {
            let (netns, port, addr) = {
                let lb = &self.lbs[i];
                (lb.netns.clone(), lb.switch_port.clone(), lb.addr.clone())
            };
            self.node(&netns, &port, &addr)?;
            nsexec(&netns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
            // veth drops frames XDP_TX'd into it unless its peer runs an XDP program.
            let pin = format!("/sys/fs/bpf/{}-sw/link_xdp_pass_{port}", self.prefix);
            nsexec(
                &self.switch,
                &bins.lab.display().to_string(),
                &["attach-pass", "--iface", &port, "--pin", &pin],
            )?;
        }
        for i in 0..self.backends.len() {
            let (netns, addr, pin) = self.backends[i].clone();
            self.node(&netns, &format!("pb{}", i + 1), &addr)?;
            nsexec(
                &netns,
                "ip",
                &["addr", "add", &format!("{VIP}/32"), "dev", "lo"],
            )?;
            // Direct server return: replies leave through the router.
            nsexec(&netns, "ip", &["route", "add", "default", "via", ROUTER])?;
            let ferrolb = bins.ferrolb.display().to_string();
            let pin = pin.display().to_string();
            nsexec(
                &netns,
                &ferrolb,
                &[
                    "--pin-dir",
                    &pin,
                    "backend",
                    "--iface",
                    "eth0",
                    "--vip",
                    VIP,
                ],
            )?;
            let (name, tcp) = (format!("b{}", i + 1), format!("0.0.0.0:{PORT}"));
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net=/run/netns/{netns}"))
                .arg(&bins.lab)
                .args(["serve", "--name", &name, "--tcp", &tcp]);
            self.children.push(process::spawn_logged(cmd, None)?);
        }
        Ok(())
    }

    /// A namespace on the bridge with IPv4 `addr`/24 and no reverse-path filter.
    fn node(&self, netns: &str, port: &str, addr: &str) -> Result<(), LabError> {
        run("ip", &["netns", "add", netns])?;
        let last = addr.rsplit('.').next().unwrap_or("0");
        bridge_port(
            &self.switch,
            netns,
            port,
            addr,
            &format!("2001:db8:e0::{last}"),
        )?;
        for key in [
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            nsexec(netns, "sysctl", &["-qw", key])?;
        }
        Ok(())
    }

    /// The router (eth0 on the bridge, eth1 to the client) with L4 multipath hashing,
    /// and the client behind it.
    fn build_router_and_client(&mut self) -> Result<(), LabError> {
        let (rt, cl) = (self.router.clone(), self.client.clone());
        self.node(&rt, "prt", ROUTER)?;
        run("ip", &["netns", "add", &cl])?;
        nsexec(
            &rt,
            "ip",
            &[
                "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &cl,
            ],
        )?;
        nsexec(
            &rt,
            "ip",
            &[
                "addr",
                "add",
                &format!("{ROUTER_CLIENT_SIDE}/24"),
                "dev",
                "eth1",
            ],
        )?;
        nsexec(&rt, "ip", &["link", "set", "eth1", "up"])?;
        for key in [
            "net.ipv4.ip_forward=1",
            "net.ipv6.conf.all.forwarding=1",
            // Hash on the 5-tuple, so one client's connections spread over the LB nodes.
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv6.fib_multipath_hash_policy=1",
        ] {
            nsexec(&rt, "sysctl", &["-qw", key])?;
        }
        nsexec(
            &cl,
            "ip",
            &["addr", "add", &format!("{CLIENT}/24"), "dev", "eth0"],
        )?;
        nsexec(&cl, "ip", &["link", "set", "eth0", "up"])?;
        nsexec(&cl, "ip", &["link", "set", "lo", "up"])?;
        // The route's MTU leaves room for the IPIP header the LB nodes add.
        nsexec(
            &cl,
            "ip",
            &[
                "route",
                "add",
                "default",
                "via",
                ROUTER_CLIENT_SIDE,
                "mtu",
                "1480",
            ],
        )?;
        // Locally generated frames carry partial checksums on veth; a wire has full ones.
        nsexec(&cl, "ethtool", &["-K", "eth0", "tx", "off"]).map(drop)
    }

    fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn write_lb_configs(&self, health: &str) -> Result<(), LabError> {
        let backends: Vec<String> = self
            .backends
            .iter()
            .map(|(_, addr, _)| format!("{{address: {addr}}}"))
            .collect();
        let config = format!(
            "services:\n  - name: web\n    vip: {VIP}\n    port: {PORT}\n    protocol: tcp\n    \
             backends: [{}]\n    health: {health}\n",
            backends.join(", ")
        );
        write(&self.dir.join("lb.yaml"), &config)?;
        for (i, lb) in self.lbs.iter().enumerate() {
            let log = self.file(&format!("bird-lb{}.log", i + 1));
            let text = bird::lb_node(
                &lb.addr,
                ROUTER,
                ANNOUNCE_TABLE,
                lb_daemon::host::ANNOUNCE_PROTO,
                &log,
            );
            write(&self.dir.join(format!("bird-lb{}.conf", i + 1)), &text)?;
        }
        Ok(())
    }

    fn start_router(&mut self) -> Result<(), LabError> {
        let addrs: Vec<String> = self.lbs.iter().map(|l| l.addr.clone()).collect();
        let text = bird::router(ROUTER, &addrs, &self.file("bird-rt.log"));
        write(&self.dir.join("bird-rt.conf"), &text)?;
        let rt = self.router.clone();
        self.spawn_bird(&rt, "rt")?;
        Ok(())
    }

    fn spawn_bird(&mut self, netns: &str, name: &str) -> Result<u32, LabError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{netns}")).args([
            "bird",
            "-f",
            "-c",
            &self.file(&format!("bird-{name}.conf")),
            "-s",
            &self.file(&format!("bird-{name}.ctl")),
            "-P",
            &self.file(&format!("bird-{name}.pid")),
        ]);
        let log = self.dir.join(format!("bird-{name}.out"));
        Ok(self.children.push(process::spawn_logged(cmd, Some(&log))?))
    }

    /// Starts LB node `i`'s daemon and BIRD.
    pub fn start_lb(&mut self, bins: &Binaries, i: usize) -> Result<(), LabError> {
        let (netns, pin) = (
            self.lbs[i].netns.clone(),
            self.lbs[i].pin_dir.display().to_string(),
        );
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{netns}"))
            .arg(&bins.ferrolb)
            .args([
                "--pin-dir",
                &pin,
                "run",
                "--iface",
                "eth0",
                "--config",
                &self.file("lb.yaml"),
                "--poll-ms",
                "100",
                "--announce-table",
                &ANNOUNCE_TABLE.to_string(),
            ]);
        let log = self.dir.join(format!("daemon-lb{}.log", i + 1));
        self.lbs[i].daemon = Some(self.children.push(process::spawn_logged(cmd, Some(&log))?));
        self.lbs[i].bird = Some(self.spawn_bird(&netns, &format!("lb{}", i + 1))?);
        Ok(())
    }

    /// Stops LB node `i` as a node goes: its daemon (which withdraws the VIP), its BIRD
    /// (the BGP session closes) and its datapath.
    pub fn stop_lb(&mut self, bins: &Binaries, i: usize) -> Result<(), LabError> {
        if let Some(pid) = self.lbs[i].daemon.take() {
            self.children.stop(pid);
        }
        if let Some(pid) = self.lbs[i].bird.take() {
            self.children.stop(pid);
        }
        let pin = self.lbs[i].pin_dir.display().to_string();
        nsexec(
            &self.lbs[i].netns,
            &bins.ferrolb.display().to_string(),
            &["--pin-dir", &pin, "cleanup"],
        )
        .map(drop)
    }

    /// The router's next hops towards the VIP (none when it has no route).
    pub fn router_nexthops(&self) -> Result<Vec<IpAddr>, LabError> {
        let text = nsexec(&self.router, "ip", &["-j", "route", "show", VIP])?;
        let routes: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| LabError::Command {
                command: "ip -j route show".into(),
                stderr: format!("{e}: {text}"),
            })?;
        let mut hops: Vec<IpAddr> = Vec::new();
        for route in routes.as_array().into_iter().flatten() {
            let gateways: Vec<serde_json::Value> = route["nexthops"]
                .as_array()
                .map(|hops| hops.iter().map(|h| h["gateway"].clone()).collect())
                .unwrap_or_else(|| vec![route["gateway"].clone()]);
            hops.extend(
                gateways
                    .iter()
                    .filter_map(|g| g.as_str()?.parse::<IpAddr>().ok()),
            );
        }
        hops.sort();
        Ok(hops)
    }

    /// Waits until the router's next hops towards the VIP are the LB nodes `expected`.
    pub fn wait_nexthops(&self, expected: &[usize], timeout: Duration) -> Result<(), LabError> {
        let mut want: Vec<IpAddr> = expected
            .iter()
            .filter_map(|i| self.lbs[*i].addr.parse().ok())
            .collect();
        want.sort();
        wait_for(timeout, &format!("router next hops {want:?}"), || {
            (self.router_nexthops().ok()? == want).then_some(())
        })
    }

    /// Starts `ferrolb-lab args` in the client namespace, stdout to `output`.
    pub fn client_background(
        &mut self,
        bins: &Binaries,
        args: &[&str],
        output: &Path,
    ) -> Result<u32, LabError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.client))
            .arg(&bins.lab)
            .args(args);
        Ok(self
            .children
            .push(process::spawn_logged(cmd, Some(output))?))
    }

    /// Runs `ferrolb-lab args` in the client namespace and returns its stdout.
    pub fn client(&self, bins: &Binaries, args: &[&str]) -> Result<String, LabError> {
        nsexec(&self.client, &bins.lab.display().to_string(), args)
    }

    pub fn wait(&mut self, pid: u32, timeout: Duration) -> Result<(), LabError> {
        self.children.wait(pid, timeout).map(drop)
    }

    /// Runs `program args` in LB node `i`'s namespace.
    pub fn exec_lb(&self, i: usize, program: &str, args: &[&str]) -> Result<String, LabError> {
        nsexec(&self.lbs[i].netns, program, args)
    }
}

fn write(path: &Path, text: &str) -> Result<(), LabError> {
    std::fs::write(path, text).map_err(|source| LabError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Drop for BgpLab {
    fn drop(&mut self) {
        drop(std::mem::take(&mut self.children));
        for ns in crate::netns_list() {
            if ns.starts_with(&self.prefix) {
                let _ = run("ip", &["netns", "del", &ns]);
            }
        }
        let mut pins: Vec<PathBuf> = self.lbs.iter().map(|l| l.pin_dir.clone()).collect();
        pins.extend(self.backends.iter().map(|b| b.2.clone()));
        pins.push(PathBuf::from(format!("/sys/fs/bpf/{}-sw", self.prefix)));
        for dir in pins {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
