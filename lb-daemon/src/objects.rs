//! The eBPF objects, compiled by build.rs and embedded so the binary is self-contained.

use aya::include_bytes_aligned;

/// The XDP balancer (`xdp_balancer`) and its maps.
pub static XDP_BALANCER: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp"));
/// A program that passes every frame; lab topologies attach it where veth needs one.
pub static XDP_PASS: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-xdp-pass"));
/// The backend-side decapsulation program (`tc_decap`) and its maps.
pub static BACKEND_SIDE: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-tc"));
/// The socket programs (`sock_connect4` … `sock_getpeername6`, cgroup sock_addr) and their
/// maps.
pub static SOCK: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lb-sock"));
