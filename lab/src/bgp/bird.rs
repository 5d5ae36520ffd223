//! BIRD 2 configurations of the BGP lab: the router learns each LB node's VIP routes over
//! eBGP and installs them as one ECMP route; each LB node's BIRD learns the routes
//! ferrolb puts in its announcement table and exports exactly those. The LB side is the
//! sample of docs/bgp.md.

/// The router's AS; every LB node is in [`LB_AS`], so their paths are equal and merge.
pub const ROUTER_AS: u32 = 65000;
pub const LB_AS: u32 = 65010;

/// Timers short enough for a test: a stopped peer's routes go within a few seconds even
/// when its session does not close cleanly.
const TIMERS: &str = "hold time 3; keepalive time 1; connect retry time 1; error wait time 1, 2;";

/// The router: one eBGP session per LB node, all paths to a VIP merged into one
/// multipath kernel route (`merge paths`).
pub fn router(router_id: &str, lb_addrs: &[String], log: &str) -> String {
    let mut text = format!(
        "log \"{log}\" all;\nrouter id {router_id};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel {{\n  ipv4 {{ import none; export all; }};\n  merge paths on;\n}}\n\
         template bgp lbs {{\n  local as {ROUTER_AS};\n  {TIMERS}\n  ipv4 {{ import all; export none; }};\n}}\n"
    );
    for (i, addr) in lb_addrs.iter().enumerate() {
        text.push_str(&format!(
            "protocol bgp lb{} from lbs {{ neighbor {addr} as {LB_AS}; }}\n",
            i + 1
        ));
    }
    text
}

/// An LB node: learn ferrolb's routes (protocol `proto`) from kernel table `table`,
/// export only those to the router, next hop this node.
pub fn lb_node(router_id: &str, router_addr: &str, table: u32, proto: u8, log: &str) -> String {
    format!(
        "log \"{log}\" all;\nrouter id {router_id};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel ferrolb_vips {{\n  kernel table {table};\n  learn;\n  scan time 1;\n  \
         ipv4 {{ import where krt_source = {proto}; export none; }};\n}}\n\
         protocol bgp uplink {{\n  local as {LB_AS};\n  neighbor {router_addr} as {ROUTER_AS};\n  {TIMERS}\n  \
         ipv4 {{ import none; export where krt_source = {proto}; next hop self; }};\n}}\n"
    )
}
