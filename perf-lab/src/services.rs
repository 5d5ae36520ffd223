//! The synthetic service set every peer is programmed with: the same VIPs, ports and
//! endpoints for ferrolb, nftables and iptables, so they are compared on identical work.
//!
//! Addresses, IPv4 (all from 198.18.0.0/15): VIPs 198.19.0.0/16, endpoints 198.18.64.0/18
//! (a pool shared round-robin when services × backends exceeds it), new-flow sources
//! 198.18.128.0/17. IPv6 (all from 2001:db8::/32), the same numbers in their own /64s:
//! VIPs 2001:db8:19::/64, endpoints 2001:db8:64::/64, new-flow sources 2001:db8:128::/64
//! (the low 32 bits vary, as the IPv4 host part does).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use serde::{Deserialize, Serialize};

use lb_model::{BackendSpec, DesiredState, Frontend, Protocol, Scope, ServiceSpec, Settings};

pub const SERVICE_PORT: u16 = 80;
/// A port no service uses, for the not-a-service class.
pub const UNUSED_PORT: u16 = 8080;
pub const ENDPOINT_POOL: u32 = 16_000;
pub const ENDPOINT_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 64, 1);
pub const ENDPOINT_NET: &str = "198.18.64.0/18";
pub const VIP_NET: &str = "198.19.0.0/16";
/// kube-proxy's cluster CIDR stand-in: traffic from inside it is not masqueraded.
pub const CLUSTER_CIDR: &str = "198.18.0.0/15";
pub const SOURCE_BASE: Ipv4Addr = Ipv4Addr::new(198, 18, 128, 0);
pub const SOURCE_COUNT: u32 = 1 << 15;
/// The IPv6 twins of the ranges above; an IPv6 address is its prefix plus the same offset
/// the IPv4 address has from its base.
pub const VIP_BASE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x19, 0, 0, 0, 0, 0);
pub const VIP_NET6: &str = "2001:db8:19::/64";
pub const ENDPOINT_BASE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 1);
pub const ENDPOINT_NET6: &str = "2001:db8:64::/64";
pub const CLUSTER_CIDR6: &str = "2001:db8::/32";
pub const SOURCE_BASE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x128, 0, 0, 0, 0, 0);
/// Smallest Maglev table size ferrolb allows; the default (100 slots per backend, rounded
/// up to a listed prime) would be the same for up to two backends.
pub const MAGLEV_TABLE: u32 = 251;

/// An address family: every rate and cost figure is measured for each one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Ipv4, Family::Ipv6];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        }
    }

    /// The number on the command line (`--families 4,6`).
    pub fn number(self) -> u8 {
        match self {
            Self::Ipv4 => 4,
            Self::Ipv6 => 6,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.number() == n)
    }
}

/// `base` plus `offset` in the address's low 32 bits (the offsets used here never carry
/// into the upper bits).
pub fn v6_plus(base: Ipv6Addr, offset: u32) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(base) + u128::from(offset))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSet {
    pub services: u32,
    pub backends: u32,
}

impl ServiceSet {
    pub fn vip(&self, service: u32) -> Ipv4Addr {
        let base = u32::from(Ipv4Addr::new(198, 19, 0, 0));
        Ipv4Addr::from(base + service)
    }

    /// The service the generator targets: the last in rule order, the worst case for a
    /// linear rule list.
    pub fn target(&self) -> u32 {
        self.services - 1
    }

    pub fn endpoint(&self, service: u32, index: u32) -> Ipv4Addr {
        let slot = (service * self.backends + index) % ENDPOINT_POOL;
        Ipv4Addr::from(u32::from(ENDPOINT_BASE) + slot)
    }

    pub fn endpoints(&self, service: u32) -> Vec<Ipv4Addr> {
        (0..self.backends)
            .map(|j| self.endpoint(service, j))
            .collect()
    }

    /// The service's VIP in `family` (IPv6: the same offset in 2001:db8:19::/64).
    pub fn vip_in(&self, family: Family, service: u32) -> IpAddr {
        match family {
            Family::Ipv4 => self.vip(service).into(),
            Family::Ipv6 => v6_plus(VIP_BASE6, service).into(),
        }
    }

    /// The service's endpoints in `family` (IPv6: the same pool slots in 2001:db8:64::/64).
    pub fn endpoints_in(&self, family: Family, service: u32) -> Vec<IpAddr> {
        self.endpoints(service)
            .into_iter()
            .map(|a| match family {
                Family::Ipv4 => a.into(),
                Family::Ipv6 => {
                    v6_plus(ENDPOINT_BASE6, u32::from(a) - u32::from(ENDPOINT_BASE)).into()
                }
            })
            .collect()
    }

    /// The first endpoint of the pool in `family`: where the forwarding floor sends.
    pub fn first_endpoint(family: Family) -> IpAddr {
        match family {
            Family::Ipv4 => ENDPOINT_BASE.into(),
            Family::Ipv6 => ENDPOINT_BASE6.into(),
        }
    }

    /// The IPv4 services as ferrolb's desired state.
    pub fn desired_state(&self) -> DesiredState {
        self.desired_state_for(&[Family::Ipv4])
    }

    /// The services of every family in `families` as one desired state (dual stack: a
    /// service per family, as Kubernetes makes one ClusterIP per family).
    pub fn desired_state_for(&self, families: &[Family]) -> DesiredState {
        let mut services = BTreeMap::new();
        for &family in families {
            self.add_services(family, &mut services);
        }
        DesiredState {
            rejecting: Default::default(),
            services: services.into(),
            settings: Settings::default(),
        }
    }

    fn add_services(&self, family: Family, services: &mut BTreeMap<Frontend, Arc<ServiceSpec>>) {
        let suffix = match family {
            Family::Ipv4 => "",
            Family::Ipv6 => "-v6",
        };
        for i in 0..self.services {
            let mut backends: Vec<BackendSpec> = self
                .endpoints_in(family, i)
                .into_iter()
                .map(|address| BackendSpec { address, weight: 1 })
                .collect();
            backends.sort_by_key(|b| b.address);
            backends.dedup_by_key(|b| b.address);
            services.insert(
                Frontend {
                    vip: self.vip_in(family, i),
                    port: SERVICE_PORT,
                    protocol: Protocol::Tcp,
                    // Packets from the network, balanced by the XDP program.
                    scope: Scope::External,
                },
                Arc::new(ServiceSpec {
                    name: format!("svc{i}{suffix}"),
                    backends,
                    table_size: MAGLEV_TABLE,
                    reject: false,
                    source_ranges: Vec::new(),
                    affinity_timeout_s: None,
                }),
            );
        }
    }
}

impl ServiceSet {
    /// Map capacities that hold this set (two table regions per service, plus room), at
    /// least the daemon's defaults: the set is measured, not refused for a default size.
    pub fn ferrolb_map_sizes(&self) -> lb_daemon::loader::MapSizes {
        self.ferrolb_map_sizes_for(1)
    }

    /// As [`Self::ferrolb_map_sizes`] for this set in `families` families at once.
    pub fn ferrolb_map_sizes_for(&self, families: usize) -> lb_daemon::loader::MapSizes {
        let defaults = lb_daemon::loader::MapSizes::default();
        let services = u64::from(self.services) * families.max(1) as u64;
        let slots = services * 2 * u64::from(MAGLEV_TABLE) + (1 << 20);
        lb_daemon::loader::MapSizes {
            maglev_slots: (slots.min(u64::from(u32::MAX)) as u32).max(defaults.maglev_slots),
            ..defaults
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_stay_in_the_benchmark_ranges() {
        let set = ServiceSet {
            services: 30_000,
            backends: 3,
        };
        let bench = |a: Ipv4Addr| a.octets()[0] == 198 && (a.octets()[1] & 0xfe) == 18;
        assert_eq!(set.vip(0), Ipv4Addr::new(198, 19, 0, 0));
        assert!(bench(set.vip(set.target())));
        for i in [0, 1, 29_999] {
            for e in set.endpoints(i) {
                assert!(bench(e));
                assert_eq!(e.octets()[1], 18);
                assert!((64..128).contains(&e.octets()[2]), "{e} in 198.18.64.0/18");
            }
        }
        let last = u32::from(SOURCE_BASE) + SOURCE_COUNT - 1;
        assert_eq!(Ipv4Addr::from(last), Ipv4Addr::new(198, 18, 255, 255));
    }

    #[test]
    fn ipv6_addresses_stay_in_their_documentation_prefixes() {
        let set = ServiceSet {
            services: 30_000,
            backends: 3,
        };
        let in_net = |a: IpAddr, net: Ipv6Addr| match a {
            IpAddr::V6(a) => a.segments()[..4] == net.segments()[..4],
            IpAddr::V4(_) => false,
        };
        assert_eq!(
            set.vip_in(Family::Ipv6, 0),
            "2001:db8:19::".parse::<IpAddr>().unwrap()
        );
        assert!(in_net(set.vip_in(Family::Ipv6, set.target()), VIP_BASE6));
        for i in [0, 1, 29_999] {
            let v4 = set.endpoints(i);
            let v6 = set.endpoints_in(Family::Ipv6, i);
            assert_eq!(v4.len(), v6.len());
            for (a, b) in v4.iter().zip(&v6) {
                assert!(in_net(*b, ENDPOINT_BASE6), "{b}");
                // The same pool slot in both families.
                let IpAddr::V6(b) = b else { unreachable!() };
                assert_eq!(
                    u128::from(*b) - u128::from(ENDPOINT_BASE6),
                    u128::from(u32::from(*a) - u32::from(ENDPOINT_BASE))
                );
            }
        }
        let last = v6_plus(SOURCE_BASE6, SOURCE_COUNT - 1);
        assert_eq!(last, "2001:db8:128::7fff".parse::<Ipv6Addr>().unwrap());
    }

    #[test]
    fn desired_state_has_every_service_with_its_backends() {
        let set = ServiceSet {
            services: 10,
            backends: 3,
        };
        let state = set.desired_state();
        assert_eq!(state.services.len(), 10);
        assert!(state.services.values().all(|s| s.backends.len() == 3));
        let dual = set.desired_state_for(&Family::ALL);
        assert_eq!(dual.services.len(), 20);
        assert!(dual.services.iter().all(|(f, s)| s
            .backends
            .iter()
            .all(|b| b.address.is_ipv6() == f.vip.is_ipv6())));
    }
}
