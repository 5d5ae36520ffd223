//! The rate-test topology, one per peer so peers never share kernel state:
//!
//! ```text
//!  src ns                DUT ns                              sink ns
//!  gen0 198.18.1.1 ── in0 198.18.1.2 │ out0 198.18.2.1 ── sink0 198.18.2.2
//!  2001:db8:1::1        2001:db8:1::2 │ 2001:db8:2::1        2001:db8:2::2
//!  (live-frame            (the peer's datapath)               (counting XDP,
//!   generator)                                                  drops all)
//! ```
//!
//! Endpoints (198.18.64.0/18, 2001:db8:64::/64) are routed via the sink's address with a
//! permanent neighbour entry, so one sink counts every delivered frame whatever endpoint
//! it was sent to, and no ARP or neighbour discovery is needed (the sink drops
//! everything). Both families are always configured, so IPv4 and IPv6 are measured on the
//! identical topology. IPv6 runs without duplicate address detection, router
//! solicitations or link-local addresses, which keeps the DUT's own IPv6 chatter to a few
//! MLD reports; the sink recognises and leaves those out of its count.

use crate::netns::{Netns, NetnsError};
use crate::services::{ENDPOINT_NET, ENDPOINT_NET6};

pub const GEN_IF: &str = "gen0";
pub const DUT_IN: &str = "in0";
pub const DUT_OUT: &str = "out0";
pub const SINK_IF: &str = "sink0";
pub const DUT_OUT_ADDR: [u8; 4] = [198, 18, 2, 1];
pub const SINK_ADDR: &str = "198.18.2.2";
pub const DUT_OUT_ADDR6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const SINK_ADDR6: &str = "2001:db8:2::2";

/// Turns IPv6 on for `iface` in `ns` (namespaces start with it off), quietly: no DAD, no
/// router solicitations, no link-local address.
fn enable_ipv6(ns: &Netns, iface: &str) -> Result<(), NetnsError> {
    for key in [
        "accept_dad=0",
        "router_solicitations=0",
        "addr_gen_mode=1",
        "disable_ipv6=0",
    ] {
        ns.sysctl(&format!("net.ipv6.conf.{iface}.{key}"))?;
    }
    Ok(())
}
pub struct Topology {
    pub src: Netns,
    pub dut: Netns,
    pub sink: Netns,
    pub gen_ifindex: u32,
    pub gen_mac: [u8; 6],
    pub in_mac: [u8; 6],
    pub out_mac: [u8; 6],
    pub out_ifindex: u32,
    pub sink_mac: [u8; 6],
}

impl Topology {
    pub fn create(tag: &str) -> Result<Self, NetnsError> {
        let src = Netns::create(&format!("{tag}-src"))?;
        let dut = Netns::create(&format!("{tag}-dut"))?;
        let sink = Netns::create(&format!("{tag}-sink"))?;
        src.exec(
            "ip",
            &[
                "link", "add", GEN_IF, "type", "veth", "peer", "name", DUT_IN, "netns", &dut.name,
            ],
        )?;
        dut.exec(
            "ip",
            &[
                "link", "add", DUT_OUT, "type", "veth", "peer", "name", SINK_IF, "netns",
                &sink.name,
            ],
        )?;
        for (ns, iface, addr, addr6) in [
            (&src, GEN_IF, "198.18.1.1/24", "2001:db8:1::1/64"),
            (&dut, DUT_IN, "198.18.1.2/24", "2001:db8:1::2/64"),
            (&dut, DUT_OUT, "198.18.2.1/24", "2001:db8:2::1/64"),
            (&sink, SINK_IF, "198.18.2.2/24", "2001:db8:2::2/64"),
        ] {
            enable_ipv6(ns, iface)?;
            ns.exec("ip", &["addr", "add", addr, "dev", iface])?;
            ns.exec("ip", &["-6", "addr", "add", addr6, "dev", iface, "nodad"])?;
            ns.exec("ip", &["link", "set", iface, "up"])?;
        }
        dut.sysctl("net.ipv4.ip_forward=1")?;
        dut.sysctl("net.ipv6.conf.all.forwarding=1")?;
        for iface in [DUT_IN, DUT_OUT] {
            dut.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter=0"))?;
        }
        let sink_mac = sink.mac(SINK_IF)?;
        let lladdr = crate::netns::format_mac(&sink_mac);
        for (family, addr, net) in [
            ("-4", SINK_ADDR, ENDPOINT_NET),
            ("-6", SINK_ADDR6, ENDPOINT_NET6),
        ] {
            dut.exec(
                "ip",
                &[
                    family,
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &lladdr,
                    "dev",
                    DUT_OUT,
                    "nud",
                    "permanent",
                ],
            )?;
            dut.exec("ip", &[family, "route", "add", net, "via", addr])?;
        }
        Ok(Self {
            gen_ifindex: src.ifindex(GEN_IF)?,
            gen_mac: src.mac(GEN_IF)?,
            in_mac: dut.mac(DUT_IN)?,
            out_mac: dut.mac(DUT_OUT)?,
            out_ifindex: dut.ifindex(DUT_OUT)?,
            sink_mac,
            src,
            dut,
            sink,
        })
    }
}
