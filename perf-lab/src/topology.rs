//! The rate-test topology, one per peer so peers never share kernel state:
//!
//! ```text
//!  src ns                DUT ns                              sink ns
//!  gen0 198.18.1.1 ── in0 198.18.1.2 │ out0 198.18.2.1 ── sink0 198.18.2.2
//!  (live-frame            (the peer's datapath)               (counting XDP,
//!   generator)                                                  drops all)
//! ```
//!
//! Endpoints (198.18.64.0/18) are routed via 198.18.2.2 with a permanent neighbour entry,
//! so one sink counts every delivered frame whatever endpoint it was sent to, and no ARP
//! is needed (the sink drops everything, ARP included).

use crate::netns::{Netns, NetnsError};
use crate::services::ENDPOINT_NET;

pub const GEN_IF: &str = "gen0";
pub const DUT_IN: &str = "in0";
pub const DUT_OUT: &str = "out0";
pub const SINK_IF: &str = "sink0";
pub const DUT_OUT_ADDR: [u8; 4] = [198, 18, 2, 1];
pub const SINK_ADDR: &str = "198.18.2.2";

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
        for (ns, iface, addr) in [
            (&src, GEN_IF, "198.18.1.1/24"),
            (&dut, DUT_IN, "198.18.1.2/24"),
            (&dut, DUT_OUT, "198.18.2.1/24"),
            (&sink, SINK_IF, "198.18.2.2/24"),
        ] {
            ns.exec("ip", &["addr", "add", addr, "dev", iface])?;
            ns.exec("ip", &["link", "set", iface, "up"])?;
        }
        dut.sysctl("net.ipv4.ip_forward=1")?;
        for iface in [DUT_IN, DUT_OUT] {
            dut.sysctl(&format!("net.ipv4.conf.{iface}.rp_filter=0"))?;
        }
        let sink_mac = sink.mac(SINK_IF)?;
        dut.exec(
            "ip",
            &[
                "neigh",
                "replace",
                SINK_ADDR,
                "lladdr",
                &crate::netns::format_mac(&sink_mac),
                "dev",
                DUT_OUT,
                "nud",
                "permanent",
            ],
        )?;
        dut.exec("ip", &["route", "add", ENDPOINT_NET, "via", SINK_ADDR])?;
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
