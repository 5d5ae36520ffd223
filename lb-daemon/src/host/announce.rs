//! The routes that announce VIPs: one blackhole host route per VIP (`/32`, `/128`) in a
//! table of the operator's choosing, marked with ferrolb's route protocol number. No
//! lookup consults that table (no rule points at it), so the routes change nothing in
//! forwarding; a routing daemon (BIRD's `kernel` protocol with `learn`) reads the table and
//! exports the routes of this protocol to its BGP peers.

use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::{
    route::{
        RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
        RouteType,
    },
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    netlink::{Kind, RouteSocket},
    HostError,
};

/// The route protocol number ferrolb's announcement routes carry (`ip route ... proto
/// 201`; BIRD sees it as `krt_source = 201`). Not in iproute2's reserved list.
pub const ANNOUNCE_PROTO: u8 = 201;

fn host_route(table: u32, addr: IpAddr) -> RouteMessage {
    let mut message = RouteMessage::default();
    let (family, prefix, destination) = match addr {
        IpAddr::V4(v4) => (AddressFamily::Inet, 32, RouteAddress::Inet(v4)),
        IpAddr::V6(v6) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(v6)),
    };
    message.header.address_family = family;
    message.header.destination_prefix_length = prefix;
    // Ids above 255 only fit the attribute.
    message.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    message.header.protocol = RouteProtocol::from(ANNOUNCE_PROTO);
    message.header.scope = RouteScope::Universe;
    message.header.kind = RouteType::BlackHole;
    message
        .attributes
        .push(RouteAttribute::Destination(destination));
    message.attributes.push(RouteAttribute::Table(table));
    message
}

/// Installs (or keeps) the announcement route of `addr` in `table`.
pub fn announce(table: u32, addr: IpAddr) -> Result<(), HostError> {
    let request = RouteNetlinkMessage::NewRoute(host_route(table, addr));
    RouteSocket::open()?
        .request(
            "RTM_NEWROUTE",
            request,
            Kind::Acknowledged(NLM_F_CREATE | NLM_F_REPLACE),
        )
        .map(drop)
}

/// Removes the announcement route of `addr` from `table`; one already gone is fine.
pub fn withdraw(table: u32, addr: IpAddr) -> Result<(), HostError> {
    let request = RouteNetlinkMessage::DelRoute(host_route(table, addr));
    match RouteSocket::open()?.request("RTM_DELROUTE", request, Kind::Acknowledged(0)) {
        Ok(_) => Ok(()),
        Err(HostError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ESRCH) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// The addresses ferrolb's routes in `table` announce now (both families).
pub fn announced(table: u32) -> Result<Vec<IpAddr>, HostError> {
    let mut socket = RouteSocket::open()?;
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut request = RouteMessage::default();
        request.header.address_family = family;
        let answer = socket.request(
            "RTM_GETROUTE",
            RouteNetlinkMessage::GetRoute(request),
            Kind::Dump,
        )?;
        out.extend(answer.iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(route) => announced_addr(route, table),
            _ => None,
        }));
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The address a dumped route announces, if it is one of ours in `table`.
fn announced_addr(route: &RouteMessage, table: u32) -> Option<IpAddr> {
    let in_table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(id) => Some(*id),
            _ => None,
        })
        .unwrap_or(route.header.table.into());
    if in_table != table || u8::from(route.header.protocol) != ANNOUNCE_PROTO {
        return None;
    }
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4))
            if route.header.destination_prefix_length == 32 =>
        {
            Some(IpAddr::V4(*v4))
        }
        RouteAttribute::Destination(RouteAddress::Inet6(v6))
            if route.header.destination_prefix_length == 128 =>
        {
            Some(IpAddr::V6(*v6))
        }
        _ => None,
    })
}

/// Whether `iface` exists in this network namespace and is administratively up.
pub fn interface_up(iface: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return false;
    };
    if name.as_bytes().len() >= libc::IFNAMSIZ {
        return false;
    }
    // SAFETY: a plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return false;
    }
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.as_bytes()) {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name and writes the flags into the
    // ifreq we own; `fd` is a socket we opened and close right after.
    unsafe {
        let ok = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) == 0;
        libc::close(fd);
        ok && (request.ifr_ifru.ifru_flags as libc::c_int & libc::IFF_UP) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_routes_are_recognised_and_others_are_not() {
        let v4: IpAddr = "198.18.100.1".parse().unwrap();
        let v6: IpAddr = "2001:db8:100::1".parse().unwrap();
        assert_eq!(announced_addr(&host_route(201, v4), 201), Some(v4));
        assert_eq!(announced_addr(&host_route(1000, v6), 1000), Some(v6));
        assert_eq!(announced_addr(&host_route(201, v4), 202), None);
        let mut other = host_route(201, v4);
        other.header.protocol = RouteProtocol::Static;
        assert_eq!(announced_addr(&other, 201), None);
    }

    #[test]
    fn interfaces_that_do_not_exist_are_not_up() {
        assert!(interface_up("lo"));
        assert!(!interface_up("fl-edge-none0"));
        assert!(!interface_up("a-name-far-too-long-for-linux"));
    }
}
