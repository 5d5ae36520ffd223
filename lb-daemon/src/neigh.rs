//! The host's own network facts the datapath relies on: the interface's address (outer
//! source of IPIP), routes from the kernel's table, and neighbour resolution on request.
//!
//! The XDP program reads next hops with `bpf_fib_lookup`, which only reports a neighbour
//! the kernel already knows. This module asks the kernel to resolve one (an RTM_NEWNEIGH
//! with NTF_USE, the same request `ip neigh ... use` sends) without sending any packet of
//! its own.

use std::{
    ffi::CStr,
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr},
};

#[derive(Debug, thiserror::Error)]
pub enum NeighError {
    #[error("netlink: {0}")]
    Netlink(io::Error),
    #[error("kernel refused neighbour request for {addr}: {source}")]
    Refused { addr: IpAddr, source: io::Error },
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("interface {0} has no IPv4 address to use as the IPIP source")]
    NoAddress(String),
}

/// Every address of `iface`, in the kernel's order.
fn interface_addrs(iface: &str) -> Result<Vec<IpAddr>, NeighError> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return Err(NeighError::Netlink(io::Error::last_os_error()));
    }
    let mut found = Vec::new();
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: cursor walks the list getifaddrs returned.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        if entry.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a valid C string for every entry.
        let name = unsafe { CStr::from_ptr(entry.ifa_name) };
        if name.to_bytes() != iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null (checked above) and points at a sockaddr.
        match unsafe { (*entry.ifa_addr).sa_family } as i32 {
            libc::AF_INET => {
                // SAFETY: AF_INET entries carry a sockaddr_in.
                let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
                found.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: AF_INET6 entries carry a sockaddr_in6.
                let sin6 = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in6) };
                found.push(IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            _ => {}
        }
    }
    // SAFETY: frees the list allocated above.
    unsafe { libc::freeifaddrs(addrs) };
    Ok(found)
}

/// The first IPv4 address of `iface`.
pub fn interface_ipv4(iface: &str) -> Result<Ipv4Addr, NeighError> {
    interface_addrs(iface)?
        .into_iter()
        .find_map(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| NeighError::NoAddress(iface.to_string()))
}

/// The first global IPv6 address of `iface` (link-local and loopback addresses cannot be
/// an IP6IP6 source), if it has one.
pub fn interface_ipv6(iface: &str) -> Result<Option<std::net::Ipv6Addr>, NeighError> {
    Ok(interface_addrs(iface)?.into_iter().find_map(|a| match a {
        IpAddr::V6(v6) if !v6.is_loopback() && !v6.is_unicast_link_local() => Some(v6),
        _ => None,
    }))
}

/// A route from the kernel's main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub destination: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    pub metric: u32,
}

/// Parses /proc/net/route (addresses are hex in host byte order of a little-endian u32).
pub fn parse_routes(text: &str) -> Vec<Route> {
    let hex_addr = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.swap_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            const RTF_UP: u32 = 1;
            if flags & RTF_UP == 0 {
                return None;
            }
            let gateway = hex_addr(f[2])?;
            Some(Route {
                iface: f[0].to_string(),
                destination: hex_addr(f[1])?,
                mask: hex_addr(f[7])?,
                gateway: (!gateway.is_unspecified()).then_some(gateway),
                metric: f[6].parse().ok()?,
            })
        })
        .collect()
}

/// Longest-prefix match, lowest metric among equals.
pub fn route_for(routes: &[Route], addr: Ipv4Addr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| u32::from(addr) & u32::from(r.mask) == u32::from(r.destination))
        .max_by_key(|r| (u32::from(r.mask).count_ones(), std::cmp::Reverse(r.metric)))
}

/// The next hop (gateway, or the address itself when on-link) and its interface index.
pub fn next_hop(addr: Ipv4Addr) -> Result<Option<(Ipv4Addr, u32)>, NeighError> {
    let path = "/proc/net/route";
    let text = std::fs::read_to_string(path).map_err(|source| NeighError::Read {
        path: path.into(),
        source,
    })?;
    let routes = parse_routes(&text);
    let Some(route) = route_for(&routes, addr) else {
        return Ok(None);
    };
    let Ok(index) = crate::loader::interface_index(&route.iface) else {
        return Ok(None);
    };
    Ok(Some((route.gateway.unwrap_or(addr), index)))
}

const RTM_NEWNEIGH: u16 = 28;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NTF_USE: u8 = 0x1;
const NDA_DST: u16 = 1;
const NLMSG_ERROR: u16 = 2;

/// nlmsghdr (16) + ndmsg (12) + the NDA_DST attribute header (4).
const NEIGH_REQUEST_HEAD: usize = 32;

/// An RTM_NEWNEIGH request with NTF_USE for `addr` on `ifindex`: "resolve this", without
/// creating a static entry.
fn neigh_request(addr: IpAddr, ifindex: u32) -> Vec<u8> {
    let (family, dst): (u8, Vec<u8>) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec()),
    };
    let len = NEIGH_REQUEST_HEAD + dst.len();
    let mut req = Vec::with_capacity(len);
    req.extend_from_slice(&(len as u32).to_ne_bytes());
    req.extend_from_slice(&RTM_NEWNEIGH.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    req.extend_from_slice(&[family, 0, 0, 0]); // family, pad
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    req.extend_from_slice(&0u16.to_ne_bytes()); // state
    req.extend_from_slice(&[NTF_USE, 0]); // flags, type
    req.extend_from_slice(&((4 + dst.len()) as u16).to_ne_bytes());
    req.extend_from_slice(&NDA_DST.to_ne_bytes());
    req.extend_from_slice(&dst);
    req
}

/// Asks the kernel to resolve `addr` on interface `ifindex` (ARP or neighbour discovery),
/// so the datapath's next `bpf_fib_lookup` finds a neighbour.
pub fn request_resolution(addr: IpAddr, ifindex: u32) -> Result<(), NeighError> {
    // SAFETY: plain socket(2).
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(NeighError::Netlink(io::Error::last_os_error()));
    }
    let result = send_request(fd, addr, ifindex);
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

fn send_request(fd: i32, addr: IpAddr, ifindex: u32) -> Result<(), NeighError> {
    let req = neigh_request(addr, ifindex);
    // SAFETY: the kernel address is zeroed (pid 0 = kernel); req is a plain repr(C) buffer.
    let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    kernel.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: req and kernel are live buffers of the lengths passed with them.
    let sent = unsafe {
        libc::sendto(
            fd,
            req.as_ptr() as *const libc::c_void,
            req.len(),
            0,
            &kernel as *const libc::sockaddr_nl as *const libc::sockaddr,
            size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(NeighError::Netlink(io::Error::last_os_error()));
    }
    let mut buf = [0u8; 512];
    // SAFETY: reads into our buffer.
    let got = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if got < 0 {
        return Err(NeighError::Netlink(io::Error::last_os_error()));
    }
    let got = got as usize;
    if got >= 20 {
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        let code = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        if kind == NLMSG_ERROR && code != 0 {
            return Err(NeighError::Refused {
                addr,
                source: io::Error::from_raw_os_error(-code),
            });
        }
    }
    Ok(())
}

/// Asks for resolution of the next hop towards each address; failures are returned per
/// address so one unreachable backend does not hide the others.
pub fn warm(addrs: &[IpAddr]) -> Vec<(IpAddr, NeighError)> {
    let mut failures = Vec::new();
    for addr in addrs {
        let IpAddr::V4(v4) = addr else { continue };
        match next_hop(*v4) {
            Ok(Some((hop, index))) => {
                if let Err(e) = request_resolution(IpAddr::V4(hop), index) {
                    failures.push((*addr, e));
                }
            }
            Ok(None) => {}
            Err(e) => failures.push((*addr, e)),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010012C6\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000012C6\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t006412C6\t020012C6\t0003\t0\t0\t5\t00FFFFFF\t0\t0\t0
";

    #[test]
    fn longest_prefix_wins() {
        let routes = parse_routes(ROUTES);
        assert_eq!(routes.len(), 3);
        let on_link = route_for(&routes, Ipv4Addr::new(198, 18, 0, 11)).unwrap();
        assert_eq!((on_link.iface.as_str(), on_link.gateway), ("eth0", None));
        let via = route_for(&routes, Ipv4Addr::new(198, 18, 100, 7)).unwrap();
        assert_eq!(via.gateway, Some(Ipv4Addr::new(198, 18, 0, 2)));
        let default = route_for(&routes, Ipv4Addr::new(198, 19, 1, 1)).unwrap();
        assert_eq!(default.gateway, Some(Ipv4Addr::new(198, 18, 0, 1)));
    }
}
