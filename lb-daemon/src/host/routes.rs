//! The kernel's main IPv4 routing table, read with an RTM_GETROUTE dump, and the next hop
//! it gives towards an address.

use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;
use netlink_packet_route::{
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType},
    AddressFamily, RouteNetlinkMessage,
};

use super::{
    netlink::{Kind, RouteSocket},
    HostError,
};

/// A route from the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The interface it sends out of; `None` for routes that send nowhere (unreachable,
    /// prohibit, blackhole).
    pub ifindex: Option<u32>,
    pub destination: Ipv4Network,
    pub gateway: Option<Ipv4Addr>,
    pub metric: u32,
}

/// Every IPv4 route of the main table.
pub(super) fn main_routes(socket: &mut RouteSocket) -> Result<Vec<Route>, HostError> {
    let mut request = RouteMessage::default();
    request.header.address_family = AddressFamily::Inet;
    let answer = socket.request(
        "RTM_GETROUTE",
        RouteNetlinkMessage::GetRoute(request),
        Kind::Dump,
    )?;
    Ok(answer
        .iter()
        .filter_map(|message| match message {
            RouteNetlinkMessage::NewRoute(route) => route_from(route),
            _ => None,
        })
        .collect())
}

/// The main-table IPv4 route `message` describes. Broadcast and multicast entries are not
/// forwarding routes and are left out, as /proc/net/route leaves them out. A multipath
/// route is taken by its first hop.
fn route_from(message: &RouteMessage) -> Option<Route> {
    let header = &message.header;
    if header.address_family != AddressFamily::Inet
        || matches!(header.kind, RouteType::Broadcast | RouteType::Multicast)
    {
        return None;
    }
    // Table ids above 255 only fit the attribute; the header then says RT_TABLE_COMPAT.
    let table = message
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(id) => Some(*id),
            _ => None,
        })
        .unwrap_or(header.table.into());
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    // A default route carries no destination attribute.
    let mut destination = Ipv4Addr::UNSPECIFIED;
    let (mut ifindex, mut gateway, mut metric) = (None, None, 0);
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(addr)) => destination = *addr,
            RouteAttribute::Oif(index) => ifindex = Some(*index),
            RouteAttribute::Gateway(RouteAddress::Inet(addr)) => gateway = Some(*addr),
            RouteAttribute::Priority(priority) => metric = *priority,
            RouteAttribute::MultiPath(hops) => {
                if let Some(first) = hops.first() {
                    ifindex = Some(first.interface_index);
                    gateway = first.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(addr)) => Some(*addr),
                        _ => None,
                    });
                }
            }
            _ => {}
        }
    }
    Some(Route {
        ifindex,
        destination: Ipv4Network::new(destination, header.destination_prefix_length).ok()?,
        gateway,
        metric,
    })
}

/// Longest-prefix match, lowest metric among equals.
pub fn route_for(routes: &[Route], addr: Ipv4Addr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| r.destination.contains(addr))
        .max_by_key(|r| (r.destination.prefix(), std::cmp::Reverse(r.metric)))
}

/// The next hop towards `addr` (its gateway, or `addr` itself when on-link) and the index
/// of the interface it is reached on; `None` when no route sends it anywhere.
pub(super) fn next_hop_in(routes: &[Route], addr: Ipv4Addr) -> Option<(Ipv4Addr, u32)> {
    let route = route_for(routes, addr)?;
    Some((route.gateway.unwrap_or(addr), route.ifindex?))
}

/// The next hop (gateway, or the address itself when on-link) and its interface index.
pub fn next_hop(addr: Ipv4Addr) -> Result<Option<(Ipv4Addr, u32)>, HostError> {
    let routes = main_routes(&mut RouteSocket::open()?)?;
    Ok(next_hop_in(&routes, addr))
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::{DoneMessage, NetlinkPayload};
    use netlink_packet_route::route::RouteNextHop;

    use super::*;
    use crate::host::netlink::{kernel_datagram, read_answer};

    const ETH0: u32 = 2;
    const ETH1: u32 = 3;

    /// A main-table unicast route to `destination/prefix`.
    fn route(destination: [u8; 4], prefix: u8, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = RouteHeader::RT_TABLE_MAIN;
        message.header.kind = RouteType::Unicast;
        message.header.destination_prefix_length = prefix;
        if prefix > 0 {
            message
                .attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    destination.into(),
                )));
        }
        message.attributes.extend(attributes);
        message
    }

    fn via(gateway: [u8; 4]) -> RouteAttribute {
        RouteAttribute::Gateway(RouteAddress::Inet(gateway.into()))
    }

    /// The routes a dump of `messages` yields, after a trip through the wire format.
    fn dumped(messages: Vec<RouteMessage>) -> Vec<Route> {
        let mut payloads: Vec<_> = messages
            .into_iter()
            .map(|m| NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(m)))
            .collect();
        payloads.push(NetlinkPayload::Done(DoneMessage::default()));
        read_answer(&[kernel_datagram(payloads, 1)])
            .unwrap()
            .iter()
            .filter_map(|message| match message {
                RouteNetlinkMessage::NewRoute(route) => route_from(route),
                _ => None,
            })
            .collect()
    }

    /// The main table of the test lab: a default route, the LAN on-link, a far network
    /// through a second router; plus entries a dump also returns that are not routes to
    /// forward by (the local table's, a broadcast entry).
    fn lab_table() -> Vec<RouteMessage> {
        let mut local = route([198, 18, 0, 2], 32, vec![RouteAttribute::Oif(ETH0)]);
        local.header.table = 255;
        local.header.kind = RouteType::Local;
        let mut broadcast = route([198, 18, 0, 255], 32, vec![RouteAttribute::Oif(ETH0)]);
        broadcast.header.kind = RouteType::Broadcast;
        vec![
            route(
                [0; 4],
                0,
                vec![via([198, 18, 0, 1]), RouteAttribute::Oif(ETH0)],
            ),
            route([198, 18, 0, 0], 24, vec![RouteAttribute::Oif(ETH0)]),
            local,
            broadcast,
            route(
                [198, 18, 100, 0],
                24,
                vec![
                    via([198, 18, 0, 2]),
                    RouteAttribute::Oif(ETH1),
                    RouteAttribute::Priority(5),
                ],
            ),
        ]
    }

    #[test]
    fn longest_prefix_wins() {
        let routes = dumped(lab_table());
        assert_eq!(routes.len(), 3);
        let on_link = route_for(&routes, Ipv4Addr::new(198, 18, 0, 11)).unwrap();
        assert_eq!((on_link.ifindex, on_link.gateway), (Some(ETH0), None));
        let via = route_for(&routes, Ipv4Addr::new(198, 18, 100, 7)).unwrap();
        assert_eq!(via.gateway, Some(Ipv4Addr::new(198, 18, 0, 2)));
        let default = route_for(&routes, Ipv4Addr::new(198, 19, 1, 1)).unwrap();
        assert_eq!(default.gateway, Some(Ipv4Addr::new(198, 18, 0, 1)));
    }

    #[test]
    fn the_next_hop_is_the_gateway_or_the_address_on_link() {
        let routes = dumped(lab_table());
        let backend = Ipv4Addr::new(198, 18, 0, 11);
        assert_eq!(next_hop_in(&routes, backend), Some((backend, ETH0)));
        assert_eq!(
            next_hop_in(&routes, Ipv4Addr::new(198, 18, 100, 7)),
            Some((Ipv4Addr::new(198, 18, 0, 2), ETH1))
        );
    }

    #[test]
    fn lower_metric_wins_among_equal_prefixes_and_a_rejecting_route_gives_no_hop() {
        let mut unreachable = route([198, 18, 200, 0], 24, vec![]);
        unreachable.header.kind = RouteType::Unreachable;
        let mut hops = vec![RouteNextHop::default(), RouteNextHop::default()];
        hops[0].interface_index = ETH1;
        hops[0].attributes.push(via([198, 18, 0, 3]));
        hops[1].interface_index = ETH0;
        hops[1].attributes.push(via([198, 18, 0, 4]));
        let routes = dumped(vec![
            route(
                [0; 4],
                0,
                vec![via([198, 18, 0, 1]), RouteAttribute::Oif(ETH0)],
            ),
            route(
                [198, 18, 50, 0],
                24,
                vec![
                    via([198, 18, 0, 9]),
                    RouteAttribute::Oif(ETH0),
                    RouteAttribute::Priority(10),
                ],
            ),
            route([198, 18, 50, 0], 24, vec![RouteAttribute::MultiPath(hops)]),
            unreachable,
        ]);
        assert_eq!(
            next_hop_in(&routes, Ipv4Addr::new(198, 18, 50, 1)),
            Some((Ipv4Addr::new(198, 18, 0, 3), ETH1))
        );
        assert_eq!(next_hop_in(&routes, Ipv4Addr::new(198, 18, 200, 1)), None);
        let table_attribute = {
            let mut far = route([198, 18, 60, 0], 24, vec![RouteAttribute::Oif(ETH0)]);
            far.header.table = 252;
            far.attributes.push(RouteAttribute::Table(1000));
            far
        };
        assert!(dumped(vec![table_attribute]).is_empty());
    }
}
