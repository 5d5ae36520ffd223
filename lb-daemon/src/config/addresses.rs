//! Which addresses may be a service address (VIP) or a backend: none that the host keeps
//! to itself (loopback), that never leaves the link (link-local), that names no single
//! host (unspecified, multicast, broadcast), and no backend that is itself a VIP (its
//! packets would come back to the balancer).

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use lb_model::{Frontend, ServiceSpec};

use super::{invalid, ConfigError};

/// Why `addr` cannot be a VIP or a backend, if it cannot.
fn unusable(addr: IpAddr) -> Option<&'static str> {
    if addr.is_unspecified() {
        return Some("the unspecified address names no host");
    }
    if addr.is_multicast() {
        return Some("a multicast address names no single host");
    }
    if addr.is_loopback() {
        return Some("a loopback address never leaves its host");
    }
    match addr {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address names no single host"),
        IpAddr::V4(v4) if v4.is_link_local() => {
            Some("a link-local address (169.254.0.0/16) is not routed")
        }
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            Some("a link-local address (fe80::/10) is not routed")
        }
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address: write the IPv4 address")
        }
        _ => None,
    }
}

pub(super) fn check_vip(field: &str, vip: IpAddr) -> Result<(), ConfigError> {
    match unusable(vip) {
        Some(why) => Err(invalid(
            field,
            format!("{vip} cannot be a service address: {why}"),
        )),
        None => Ok(()),
    }
}

pub(super) fn check_backend(field: &str, addr: IpAddr) -> Result<(), ConfigError> {
    match unusable(addr) {
        Some(why) => Err(invalid(
            field,
            format!("{addr} cannot be a backend address: {why}"),
        )),
        None => Ok(()),
    }
}

/// A backend that is some service's VIP would have its packets balanced again.
pub(super) fn check_backends_are_not_vips(
    services: &BTreeMap<Frontend, Arc<ServiceSpec>>,
) -> Result<(), ConfigError> {
    let vips: BTreeMap<IpAddr, &str> = services
        .iter()
        .map(|(f, spec)| (f.vip, spec.name.as_str()))
        .collect();
    for spec in services.values() {
        for b in &spec.backends {
            if let Some(owner) = vips.get(&b.address) {
                return Err(invalid(
                    format!("service {:?}: backend {}", spec.name, b.address),
                    format!(
                        "is the VIP of service {owner:?}: its packets would come back to the \
                         balancer"
                    ),
                ));
            }
        }
    }
    Ok(())
}
