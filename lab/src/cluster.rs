//! A two-node cluster lab: node namespaces on a fabric bridge (in a switch namespace), each
//! with pod namespaces behind routed veths, an external client on the fabric, and a lab
//! cgroup per node in which that node's pod and host processes run (the socket programs
//! of that node attach there); the nodes' daemons run in the lab's system cgroup.
//!
//! ```text
//!                    switch namespace: br0 (198.18.1.0/24, 2001:db8:1::/64)
//!          ┌───────────────────┬─────────┴─────────┬───────────────────┐
//!    clients .100 .101    node A .1 (eth0)      node B .2 (eth0)
//!                        198.18.10.0/24         198.18.11.0/24
//!                        2001:db8:a::/64        2001:db8:b::/64
//!                         va1 va2 va3            vb1 vb2 vb3   (routed veths)
//!                          │   │   │              │   │   │
//!                         pods a1 a2 a3          pods b1 b2 b3
//! ```
//!
//! The second client (.101, `2001:db8:1::101`) is another source outside the cluster, for
//! what depends on the client's address (source ranges, session affinity).
//!
//! A pod has its /32 (/128) on its eth0 and a default route to its node (198.18.1x.1 on
//! every host-side veth, fe80::1 for IPv6), as routed CNIs do; each node routes the other
//! node's pod CIDRs via that node's fabric address. Every name (namespaces, cgroups, pins)
//! carries the lab's prefix; all is removed on drop, also when a test panics, and leftovers
//! of a crashed run are removed at the next start.

mod topology;
mod traffic;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::{
    cgroup::{self, LabCgroup},
    netns_list, netns_path, nsexec, output_of,
    process::{self, Processes},
    remove_stale, run, LabError,
};

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
pub const CLIENT_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);
pub const CLIENT2_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 101);
pub const CLIENT2_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x101);
/// The pods' gateway on IPv6: the link-local address of every host-side pod veth.
pub const POD_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Room for the balancer's outer IPv4 (IPv6) header on paths the client sends through it.
const CLIENT_MTU: &str = "1480";
const CLIENT_MTU6: &str = "1440";

/// Where a process runs: a network namespace and, for a node's pods and host, that node's
/// lab cgroup.
#[derive(Clone, Debug)]
pub struct Place {
    pub netns: String,
    pub cgroup: Option<PathBuf>,
}

impl Place {
    fn command(&self, program: &str, args: &[&str]) -> Command {
        match &self.cgroup {
            Some(cgroup) => cgroup::command_in(cgroup, &self.netns, program, args),
            None => {
                let mut cmd = Command::new("nsenter");
                cmd.arg(netns_path(&self.netns)).arg(program).args(args);
                cmd
            }
        }
    }
}

#[derive(Clone, Debug)]
pub struct Pod {
    /// `a1`, `b2`, ...: the node's letter and the pod's number.
    pub name: String,
    pub netns: String,
    pub addr: Ipv4Addr,
    pub addr6: Ipv6Addr,
    /// The pod's veth on the node side.
    pub host_veth: String,
    pub place: Place,
}

#[derive(Debug)]
pub struct ClusterNode {
    /// The Kubernetes node name: `node-a`, `node-b`.
    pub name: String,
    pub netns: String,
    /// The fabric (InternalIP) addresses, on the node's `eth0`.
    pub addr: Ipv4Addr,
    pub addr6: Ipv6Addr,
    pub pod_cidr: String,
    pub pod_cidr6: String,
    /// The pods' default gateway (on every host-side pod veth).
    pub pod_gateway: Ipv4Addr,
    pub pods: Vec<Pod>,
    /// Where this node's daemon pins its maps and links.
    pub pin_dir: PathBuf,
    /// The host's processes: the node namespace, the node's cgroup.
    pub host: Place,
    /// The node's system processes (its ferrolb): the node namespace, outside the node's
    /// cgroup (in the lab's system cgroup, so a crashed run's daemons are found and
    /// killed at the next start).
    pub system: Place,
    cgroup: LabCgroup,
}

impl ClusterNode {
    /// The node's lab cgroup, where the socket programs attach.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup.path
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name} on {}", self.name))
    }
}

pub struct Cluster {
    pub prefix: String,
    pub switch: String,
    /// The external client: on the fabric, in no lab cgroup.
    pub client: Place,
    /// A second external client, like the first.
    pub client2: Place,
    pub nodes: Vec<ClusterNode>,
    pass_pin_dir: PathBuf,
    children: Processes,
    system: LabCgroup,
}

impl Cluster {
    /// Builds two nodes with `pods` pods each. `tag` keeps concurrent labs apart (the
    /// process id is added); no tag may be a prefix of another's.
    pub fn create(tag: &str, pods: u8) -> Result<Self, LabError> {
        // Cgroups first: killing a crashed run's processes lets its namespaces go.
        cgroup::remove_stale(tag);
        remove_stale(tag);
        let prefix = format!("flb{tag}{}", std::process::id());
        let system = LabCgroup::create(tag, "sys")?;
        let mut nodes = Vec::new();
        for (index, letter) in ['a', 'b'].into_iter().enumerate() {
            let cgroup = LabCgroup::create(tag, &format!("n{letter}"))?;
            nodes.push(node_plan(
                &prefix,
                index as u8,
                letter,
                pods,
                cgroup,
                &system.path,
            ));
        }
        let cluster = Self {
            switch: format!("{prefix}-sw"),
            client: Place {
                netns: format!("{prefix}-cl"),
                cgroup: None,
            },
            client2: Place {
                netns: format!("{prefix}-c2"),
                cgroup: None,
            },
            nodes,
            pass_pin_dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}-sw")),
            prefix,
            children: Processes::default(),
            system,
        };
        topology::build(&cluster)?;
        Ok(cluster)
    }

    /// The lab's system cgroup (the daemons'), where no program is attached.
    pub fn system_cgroup(&self) -> &Path {
        &self.system.path
    }

    pub fn node(&self, name: &str) -> &ClusterNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Every pod of every node.
    pub fn pods(&self) -> impl Iterator<Item = (&ClusterNode, &Pod)> {
        self.nodes
            .iter()
            .flat_map(|n| n.pods.iter().map(move |p| (n, p)))
    }

    pub fn pod(&self, name: &str) -> &Pod {
        self.pods()
            .map(|(_, p)| p)
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// Runs `program args` at `place` and waits for it; its stdout.
    pub fn exec(&self, place: &Place, program: &str, args: &[&str]) -> Result<String, LabError> {
        let command = format!("{program} {}", args.join(" "));
        output_of(place.command(program, args), command)
    }

    /// Starts `program args` at `place` in the background, output to `log`; stopped on
    /// drop unless stopped or waited for before.
    pub fn spawn(
        &mut self,
        place: &Place,
        program: &Path,
        args: &[&str],
        log: Option<&Path>,
    ) -> Result<u32, LabError> {
        let program = program.display().to_string();
        let child = process::spawn_logged(place.command(&program, args), log)?;
        Ok(self.children.push(child))
    }

    /// SIGTERM, and SIGKILL after 5 s.
    pub fn stop(&mut self, pid: u32) -> Option<std::process::ExitStatus> {
        self.children.stop(pid)
    }

    /// Waits for a background process to finish by itself.
    pub fn wait(&mut self, pid: u32, timeout: Duration) -> Result<(), LabError> {
        self.children.wait(pid, timeout).map(drop)
    }

    /// Every pin directory the lab owns (the nodes' and the switch's).
    pub fn pin_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.pin_dir.clone()).collect();
        dirs.push(self.pass_pin_dir.clone());
        dirs
    }

    /// The switch port of a namespace on the fabric (`pna`, `pnb`, `pcl`, `pc2`).
    fn switch_port(netns: &str) -> String {
        let role = netns.rsplit('-').next().unwrap_or(netns);
        format!("p{role}")
    }

    /// Attaches a pass-everything XDP program to each node's switch port: a veth drops
    /// frames XDP_TX'd into it unless its peer runs an XDP program, and both nodes balance.
    pub fn attach_pass(&self, lab_tools: &Path) -> Result<(), LabError> {
        for node in &self.nodes {
            let port = Self::switch_port(&node.netns);
            let pin = self.pass_pin_dir.join(format!("link_xdp_pass_{port}"));
            nsexec(
                &self.switch,
                &lab_tools.display().to_string(),
                &[
                    "attach-pass",
                    "--iface",
                    &port,
                    "--pin",
                    &pin.display().to_string(),
                ],
            )?;
        }
        Ok(())
    }
}

/// One node's names and addresses (nothing is made yet). Node `index` 0 is `a`.
fn node_plan(
    prefix: &str,
    index: u8,
    letter: char,
    pods: u8,
    cgroup: LabCgroup,
    system: &Path,
) -> ClusterNode {
    let netns = format!("{prefix}-n{letter}");
    let subnet = 10 + index;
    let subnet6 = 0xa + u16::from(index);
    let pods = (1..=pods)
        .map(|i| {
            let name = format!("{letter}{i}");
            let pod_netns = format!("{prefix}-{name}");
            Pod {
                addr: Ipv4Addr::new(198, 18, subnet, 10 + i),
                addr6: Ipv6Addr::new(0x2001, 0xdb8, subnet6, 0, 0, 0, 0, 0x10 + u16::from(i)),
                host_veth: format!("v{name}"),
                place: Place {
                    netns: pod_netns.clone(),
                    cgroup: Some(cgroup.path.clone()),
                },
                netns: pod_netns,
                name,
            }
        })
        .collect();
    ClusterNode {
        name: format!("node-{letter}"),
        host: Place {
            netns: netns.clone(),
            cgroup: Some(cgroup.path.clone()),
        },
        system: Place {
            netns: netns.clone(),
            cgroup: Some(system.to_owned()),
        },
        netns,
        addr: Ipv4Addr::new(198, 18, 1, 1 + index),
        addr6: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1 + u16::from(index)),
        pod_cidr: format!("198.18.{subnet}.0/24"),
        pod_cidr6: format!("2001:db8:{subnet6:x}::/64"),
        pod_gateway: Ipv4Addr::new(198, 18, subnet, 1),
        pods,
        pin_dir: PathBuf::from(format!("/sys/fs/bpf/{prefix}-n{letter}")),
        cgroup,
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Daemons first (they hold pins), then the pins (their links hold the cgroups'
        // programs), then whatever still runs in the cgroups, then the namespaces.
        drop(std::mem::take(&mut self.children));
        for dir in self.pin_dirs() {
            let _ = std::fs::remove_dir_all(dir);
        }
        for node in std::mem::take(&mut self.nodes) {
            drop(node.cgroup);
        }
        for ns in netns_list() {
            if ns.starts_with(&self.prefix) {
                let _ = run("ip", &["netns", "del", &ns]);
            }
        }
    }
}
