//! The TCP topology, one per peer: real sockets at both ends, the peer's datapath between.
//!
//! ```text
//!  client ns              DUT ns                                backend ns
//!  cli0 198.18.1.1 ── in0 198.18.1.2 │ out0 198.18.2.1 ── be0 198.18.2.2
//!  (Rust client,           (the peer's datapath)                 endpoints /32 on lo,
//!   tx csum offload off)                                          Rust server on :80
//!  ret0 198.18.3.1 ─────────────── DSR return link ──────────── bret0 198.18.3.2
//!                                   (ferrolb-dsr only)
//! ```
//!
//! The backend namespace holds every endpoint address of the target service on its
//! loopback, so DNAT (netfilter peers), plain routing (forward) and IPIP (ferrolb) all end
//! at the same listening socket. For ferrolb the backend is set up as `ferrolb backend`
//! does it (and as lb-daemon's e2e tests and the lab crate use it): the VIP on lo, the TC
//! decapsulation program on be0's ingress with the VIP in its map, and an XDP program on
//! be0 because veth drops redirected frames otherwise. Its replies leave from the VIP
//! straight to the client over the return link, never through the DUT (direct server
//! return); the netfilter peers need the replies back through the DUT for conntrack to
//! undo the DNAT, so they route via out0.

use std::net::Ipv4Addr;

use aya::Ebpf;
use lb_common::program_names;
use lb_daemon::{loader, maps::BackendSideMaps};

use crate::{
    netns::{Netns, NetnsError, PinDir},
    peers::PeerKind,
    programs::{self, ProgramsError},
    services::{ServiceSet, ENDPOINT_NET, VIP_NET},
    topology::{DUT_IN, DUT_OUT},
};

pub const CLIENT_IF: &str = "cli0";
pub const BACKEND_IF: &str = "be0";
pub const RETURN_CLIENT_IF: &str = "ret0";
pub const RETURN_BACKEND_IF: &str = "bret0";
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
pub const BACKEND_ADDR: &str = "198.18.2.2";
pub const CLIENT_NET: &str = "198.18.1.0/24";

#[derive(Debug, thiserror::Error)]
pub enum TcpTopologyError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Programs(#[from] ProgramsError),
    #[error("ferrolb backend side: {0}")]
    Loader(#[from] loader::LoaderError),
    #[error("ferrolb backend maps: {0}")]
    Maps(#[from] lb_daemon::maps::MapsError),
}

pub struct TcpTopology {
    pub client: Netns,
    pub dut: Netns,
    pub backend: Netns,
    /// Addresses currently on the backend's loopback (endpoints, and the VIP for DSR).
    local: Vec<Ipv4Addr>,
    decap: Option<PinDir>,
    _backend_xdp: Ebpf,
}

impl TcpTopology {
    /// The topology of a TCP-layer peer: the return link and the backend side only for
    /// ferrolb-dsr.
    pub fn create(kind: PeerKind) -> Result<Self, TcpTopologyError> {
        Self::build(&format!("t{}", kind.tag()), kind == PeerKind::FerrolbDsr)
    }

    /// The same three namespaces with the DUT a plain router between two pods, no return
    /// link, no backend side: the east-west layer's topology (namespaces `<tag>-cli`,
    /// `<tag>-dut`, `<tag>-be`).
    pub fn plain(tag: &str) -> Result<Self, TcpTopologyError> {
        Self::build(tag, false)
    }

    fn build(tag: &str, dsr: bool) -> Result<Self, TcpTopologyError> {
        let client = Netns::create(&format!("{tag}-cli"))?;
        let dut = Netns::create(&format!("{tag}-dut"))?;
        let backend = Netns::create(&format!("{tag}-be"))?;
        wire(&client, &dut, &backend, dsr)?;
        set_up_client(&client)?;
        set_up_dut(&dut, &backend)?;
        if dsr {
            backend.exec(
                "ip",
                &[
                    "route",
                    "add",
                    CLIENT_NET,
                    "via",
                    "198.18.3.1",
                    "dev",
                    RETURN_BACKEND_IF,
                ],
            )?;
        } else {
            backend.exec("ip", &["route", "add", "default", "via", "198.18.2.1"])?;
        }
        // Redirected frames vanish in veth unless the receiving side runs XDP; every peer
        // gets it so the backend's receive path is the same for all.
        let backend_xdp = programs::attach_in(
            &backend,
            lb_daemon::objects::XDP_PASS,
            program_names::XDP_PASS,
            BACKEND_IF,
        )?;
        let decap = if dsr {
            let pin = PinDir::new(&format!("{tag}-decap"));
            backend.run_inside(None, || loader::install_backend_side(BACKEND_IF, &pin.path))??;
            Some(pin)
        } else {
            None
        };
        Ok(Self {
            client,
            dut,
            backend,
            local: Vec::new(),
            decap,
            _backend_xdp: backend_xdp,
        })
    }

    /// Puts the target service's endpoints (and, for DSR, its VIP) on the backend and
    /// tells the decapsulation program about the VIP.
    pub fn serve(&mut self, set: &ServiceSet) -> Result<(), TcpTopologyError> {
        let mut wanted = set.endpoints(set.target());
        if self.decap.is_some() {
            wanted.push(set.vip(set.target()));
        }
        wanted.sort();
        wanted.dedup();
        for old in std::mem::take(&mut self.local) {
            if !wanted.contains(&old) {
                self.backend
                    .exec("ip", &["addr", "del", &format!("{old}/32"), "dev", "lo"])?;
            }
        }
        for addr in &wanted {
            self.backend.exec(
                "ip",
                &["addr", "replace", &format!("{addr}/32"), "dev", "lo"],
            )?;
        }
        self.local = wanted;
        if let Some(pin) = &self.decap {
            let vip = set.vip(set.target());
            let mut maps = BackendSideMaps::open(&pin.path)?;
            maps.set_vips(&[vip.into()])?;
        }
        Ok(())
    }
}

/// A veth pair from `ns` to `peer_ns`: `name` in `ns`, `peer` in `peer_ns`.
fn veth(ns: &Netns, name: &str, peer: &str, peer_ns: &Netns) -> Result<(), NetnsError> {
    ns.exec(
        "ip",
        &[
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &peer_ns.name,
        ],
    )?;
    Ok(())
}

/// The links of the drawing in the module comment, addressed and up (the return link
/// only for DSR).
fn wire(client: &Netns, dut: &Netns, backend: &Netns, dsr: bool) -> Result<(), NetnsError> {
    veth(client, CLIENT_IF, DUT_IN, dut)?;
    veth(dut, DUT_OUT, BACKEND_IF, backend)?;
    let mut links = vec![
        (client, CLIENT_IF, "198.18.1.1/24"),
        (dut, DUT_IN, "198.18.1.2/24"),
        (dut, DUT_OUT, "198.18.2.1/24"),
        (backend, BACKEND_IF, "198.18.2.2/24"),
    ];
    if dsr {
        veth(client, RETURN_CLIENT_IF, RETURN_BACKEND_IF, backend)?;
        links.push((client, RETURN_CLIENT_IF, "198.18.3.1/24"));
        links.push((backend, RETURN_BACKEND_IF, "198.18.3.2/24"));
    }
    for (ns, iface, addr) in links {
        ns.exec("ip", &["addr", "add", addr, "dev", iface])?;
        ns.exec("ip", &["link", "set", iface, "up"])?;
    }
    Ok(())
}

fn set_up_client(client: &Netns) -> Result<(), NetnsError> {
    // Locally generated segments carry a partial checksum on veth; once XDP redirects
    // them nobody completes it and the backend drops them (TcpInCsumErrors, DESIGN.md
    // §4). Off for every peer, so all of them pay the same software checksum.
    client.exec("ethtool", &["-K", CLIENT_IF, "tx", "off"])?;
    // Room for the IPIP header on the way to the backend, for every peer alike.
    for net in [VIP_NET, ENDPOINT_NET] {
        client.exec(
            "ip",
            &["route", "add", net, "via", "198.18.1.2", "mtu", "1480"],
        )?;
    }
    // The client closes first and holds TIME_WAIT; reuse and a wide port range keep
    // thousands of connect/close cycles per run from running out of ports.
    client.sysctl("net.ipv4.tcp_tw_reuse=1")?;
    client.sysctl("net.ipv4.ip_local_port_range=1024 65535")?;
    Ok(())
}

fn set_up_dut(dut: &Netns, backend: &Netns) -> Result<(), NetnsError> {
    dut.sysctl("net.ipv4.ip_forward=1")?;
    for iface in [DUT_IN, DUT_OUT] {
        dut.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter=0"))?;
    }
    // ferrolb resolves the next hop with bpf_fib_lookup and needs a neighbour entry
    // (the daemon would resolve it; here it is fixed). The other peers use the stack's
    // ARP, which would find the same MAC.
    let backend_mac = backend.mac(BACKEND_IF)?;
    dut.exec(
        "ip",
        &[
            "neigh",
            "replace",
            BACKEND_ADDR,
            "lladdr",
            &crate::netns::format_mac(&backend_mac),
            "dev",
            DUT_OUT,
            "nud",
            "permanent",
        ],
    )?;
    dut.exec("ip", &["route", "add", ENDPOINT_NET, "via", BACKEND_ADDR])?;
    Ok(())
}
