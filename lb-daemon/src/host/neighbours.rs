//! Neighbour resolution on request. An RTM_NEWNEIGH with NTF_USE (the request
//! `ip neigh ... use` sends) makes the kernel resolve an address by ARP or neighbour
//! discovery, or re-probe an entry it has, without creating a static entry and without
//! the daemon sending a packet of its own.

use std::net::IpAddr;

use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_route::{
    neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage},
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    netlink::{Kind, RouteSocket},
    routes::{main_routes, next_hop_in, Route},
    HostError,
};

/// "Resolve `addr` on `ifindex`": no state, NTF_USE.
fn neighbour_request(addr: IpAddr, ifindex: u32) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    message.header.ifindex = ifindex;
    message.header.flags = NeighbourFlags::Use;
    message
        .attributes
        .push(NeighbourAttribute::Destination(addr.into()));
    message
}

/// Asks the kernel to resolve `addr` on interface `ifindex` (ARP or neighbour discovery),
/// so the datapath's next `bpf_fib_lookup` finds a neighbour.
pub fn request_resolution(addr: IpAddr, ifindex: u32) -> Result<(), HostError> {
    request_on(&mut RouteSocket::open()?, addr, ifindex)
}

fn request_on(socket: &mut RouteSocket, addr: IpAddr, ifindex: u32) -> Result<(), HostError> {
    let request = RouteNetlinkMessage::NewNeighbour(neighbour_request(addr, ifindex));
    match socket.request("RTM_NEWNEIGH", request, Kind::Acknowledged(NLM_F_CREATE)) {
        Ok(_) => Ok(()),
        Err(HostError::Kernel { source, .. }) => Err(HostError::Refused { addr, source }),
        Err(e) => Err(e),
    }
}

/// Asks for resolution of the next hop towards each address; failures are returned per
/// address so one unreachable backend does not hide the others. Only IPv4 addresses are
/// warmed: IPv6 next hops are resolved when the datapath reports a miss.
pub fn warm(addrs: &[IpAddr]) -> Vec<(IpAddr, HostError)> {
    let mut failures = Vec::new();
    // One socket and one route dump serve every address; a failed dump is tried again for
    // the next address, so each address reports its own failure.
    let mut session: Option<(RouteSocket, Vec<Route>)> = None;
    for addr in addrs {
        let IpAddr::V4(v4) = addr else { continue };
        if session.is_none() {
            match open_session() {
                Ok(opened) => session = Some(opened),
                Err(e) => {
                    failures.push((*addr, e));
                    continue;
                }
            }
        }
        let Some((socket, routes)) = session.as_mut() else {
            continue;
        };
        let Some((hop, index)) = next_hop_in(routes, *v4) else {
            continue;
        };
        if let Err(e) = request_on(socket, IpAddr::V4(hop), index) {
            failures.push((*addr, e));
        }
    }
    failures
}

fn open_session() -> Result<(RouteSocket, Vec<Route>), HostError> {
    let mut socket = RouteSocket::open()?;
    let routes = main_routes(&mut socket)?;
    Ok((socket, routes))
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::host::netlink::encode;

    /// The request as the kernel's uapi lays it out (nlmsghdr, ndmsg, one NDA_DST
    /// attribute), spelled field by field to check the crate's encoding against.
    fn uapi_layout(addr: IpAddr, ifindex: u32, sequence: u32) -> Vec<u8> {
        const RTM_NEWNEIGH: u16 = 28;
        const FLAGS: u16 = 0x1 | 0x4 | 0x400; // NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        const NTF_USE: u8 = 0x1;
        const NDA_DST: u16 = 1;
        let (family, dst) = match addr {
            IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
            IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
        };
        let len = 16 + 12 + 4 + dst.len();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(len as u32).to_ne_bytes());
        bytes.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
        bytes.extend_from_slice(&FLAGS.to_ne_bytes());
        bytes.extend_from_slice(&sequence.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port: the kernel
        bytes.extend_from_slice(&[family, 0, 0, 0]);
        bytes.extend_from_slice(&ifindex.to_ne_bytes());
        bytes.extend_from_slice(&0u16.to_ne_bytes()); // state
        bytes.extend_from_slice(&[NTF_USE, 0]); // flags, type
        bytes.extend_from_slice(&((4 + dst.len()) as u16).to_ne_bytes());
        bytes.extend_from_slice(&NDA_DST.to_ne_bytes());
        bytes.extend_from_slice(&dst);
        bytes
    }

    #[test]
    fn the_resolution_request_is_ntf_use_with_the_destination_only() {
        for addr in [
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11)),
        ] {
            let request = RouteNetlinkMessage::NewNeighbour(neighbour_request(addr, 7));
            assert_eq!(
                encode(request, Kind::Acknowledged(NLM_F_CREATE), 3),
                uapi_layout(addr, 7, 3),
                "{addr}"
            );
        }
    }
}
