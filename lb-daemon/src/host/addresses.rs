//! The interface's own addresses: its first IPv4 address is the outer source of IPIP, its
//! first global IPv6 address that of IP6IP6.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_route::{
    address::{AddressAttribute, AddressMessage},
    link::{LinkAttribute, LinkMessage},
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    netlink::{Kind, RouteSocket},
    HostError,
};

/// The first IPv4 address of `iface`.
pub fn interface_ipv4(iface: &str) -> Result<Ipv4Addr, HostError> {
    first_ipv4(&interface_addrs(iface, AddressFamily::Inet)?)
        .ok_or_else(|| HostError::NoAddress(iface.to_string()))
}

/// The first global IPv6 address of `iface` (link-local and loopback addresses cannot be
/// an IP6IP6 source), if it has one.
pub fn interface_ipv6(iface: &str) -> Result<Option<Ipv6Addr>, HostError> {
    Ok(first_global_ipv6(&interface_addrs(
        iface,
        AddressFamily::Inet6,
    )?))
}

fn first_ipv4(addrs: &[IpAddr]) -> Option<Ipv4Addr> {
    addrs.iter().find_map(|a| match a {
        IpAddr::V4(v4) => Some(*v4),
        IpAddr::V6(_) => None,
    })
}

fn first_global_ipv6(addrs: &[IpAddr]) -> Option<Ipv6Addr> {
    addrs.iter().find_map(|a| match a {
        IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unicast_link_local() => Some(*v6),
        _ => None,
    })
}

/// Every `family` address of `iface`, in the kernel's order; none when there is no such
/// interface.
fn interface_addrs(iface: &str, family: AddressFamily) -> Result<Vec<IpAddr>, HostError> {
    let mut socket = RouteSocket::open()?;
    let Some(index) = interface_index(&mut socket, iface)? else {
        return Ok(Vec::new());
    };
    let mut request = AddressMessage::default();
    request.header.family = family;
    let answer = socket.request(
        "RTM_GETADDR",
        RouteNetlinkMessage::GetAddress(request),
        Kind::Dump,
    )?;
    Ok(addresses_of(&answer, index))
}

/// The index of the interface named `iface`, `None` if there is none.
fn interface_index(socket: &mut RouteSocket, iface: &str) -> Result<Option<u32>, HostError> {
    let mut request = LinkMessage::default();
    request
        .attributes
        .push(LinkAttribute::IfName(iface.to_string()));
    let answer = match socket.request(
        "RTM_GETLINK",
        RouteNetlinkMessage::GetLink(request),
        Kind::Acknowledged(0),
    ) {
        Err(HostError::Kernel { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {
            return Ok(None)
        }
        answer => answer?,
    };
    Ok(answer.iter().find_map(|message| match message {
        RouteNetlinkMessage::NewLink(link) => Some(link.header.index),
        _ => None,
    }))
}

/// The addresses the dump `answer` gives interface `index`. As getifaddrs(3) does, the
/// local end (IFA_LOCAL) stands for the address where a point-to-point link has both ends.
fn addresses_of(answer: &[RouteNetlinkMessage], index: u32) -> Vec<IpAddr> {
    answer
        .iter()
        .filter_map(|message| match message {
            RouteNetlinkMessage::NewAddress(addr) if addr.header.index == index => {
                let local = addr.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                local.or_else(|| {
                    addr.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(ip) => Some(*ip),
                        _ => None,
                    })
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{DoneMessage, NetlinkPayload};

    use super::*;
    use crate::host::netlink::{kernel_datagram, read_answer};

    fn address(
        index: u32,
        attributes: Vec<AddressAttribute>,
    ) -> NetlinkPayload<RouteNetlinkMessage> {
        let mut message = AddressMessage::default();
        message.header.index = index;
        message.attributes = attributes;
        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(message))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_dump_yields_the_interfaces_addresses_in_order_local_end_first() {
        let datagram = kernel_datagram(
            vec![
                address(1, vec![AddressAttribute::Address(ip("127.0.0.1"))]),
                address(2, vec![AddressAttribute::Address(ip("198.18.0.2"))]),
                address(
                    2,
                    vec![
                        AddressAttribute::Address(ip("198.19.0.1")),
                        AddressAttribute::Local(ip("198.18.1.2")),
                    ],
                ),
                address(3, vec![AddressAttribute::Address(ip("198.18.3.2"))]),
                NetlinkPayload::Done(DoneMessage::default()),
            ],
            1,
        );
        let answer = read_answer(&[datagram]).unwrap();
        assert_eq!(
            addresses_of(&answer, 2),
            [ip("198.18.0.2"), ip("198.18.1.2")]
        );
        assert!(addresses_of(&answer, 4).is_empty());
    }

    #[test]
    fn the_ip6ip6_source_is_the_first_global_address() {
        let addrs = [
            ip("198.18.0.2"),
            ip("::1"),
            ip("fe80::1"),
            ip("2001:db8::2"),
            ip("2001:db8::3"),
        ];
        assert_eq!(
            first_global_ipv6(&addrs),
            Some("2001:db8::2".parse().unwrap())
        );
        assert_eq!(first_global_ipv6(&addrs[..3]), None);
        assert_eq!(first_ipv4(&addrs), Some(Ipv4Addr::new(198, 18, 0, 2)));
        assert_eq!(first_ipv4(&addrs[1..]), None);
    }
}
