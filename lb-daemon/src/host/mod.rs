//! Host set-up: what the datapath needs from the host's own network stack.
//!
//! - [`forwarding`]: the per-interface forwarding sysctl, without which `bpf_fib_lookup`
//!   answers "forwarding disabled".
//! - [`addresses`]: the interface's addresses, the outer source of IPIP and IP6IP6.
//! - [`routes`]: the kernel's main routing table, to find the next hop towards a backend.
//! - [`announce`]: the routes that announce VIPs to a routing daemon (BGP scale-out).
//! - [`neighbours`]: neighbour resolution on request. The XDP program reads next hops with
//!   `bpf_fib_lookup`, which only reports a neighbour the kernel already knows, so the
//!   daemon asks the kernel to resolve one without sending any packet of its own.
//!
//! - [`tick`]: the kernel's timer tick, the unit of the XDP program's next-hop TTL.
//! - [`kernel_btf`]: where the kernel puts an array map's values, for the flow cache's
//!   line alignment.
//!
//! Addresses, routes and neighbours speak rtnetlink through [`netlink`] on a synchronous
//! socket opened for each call: the callers are the daemon's sync loop and start-up, and
//! every call is a few round trips to the kernel.

mod addresses;
mod announce;
mod forwarding;
pub mod kernel_btf;
mod neighbours;
mod netlink;
mod routes;
pub mod tick;

use std::{io, net::IpAddr};

pub use addresses::{interface_ipv4, interface_ipv6};
pub use announce::{announce, announced, interface_up, withdraw, ANNOUNCE_PROTO};
pub use forwarding::{ensure_forwarding, ForwardingError};
pub use neighbours::{request_resolution, warm};
pub use routes::{next_hop, route_for, Route};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("netlink: {0}")]
    Netlink(io::Error),
    #[error("netlink: undecodable answer to {request}: {reason}")]
    Decode {
        request: &'static str,
        reason: String,
    },
    #[error("kernel refused {request}: {source}")]
    Kernel {
        request: &'static str,
        source: io::Error,
    },
    #[error("kernel refused neighbour request for {addr}: {source}")]
    Refused { addr: IpAddr, source: io::Error },
    #[error("interface {0} has no IPv4 address to use as the IPIP source")]
    NoAddress(String),
}
