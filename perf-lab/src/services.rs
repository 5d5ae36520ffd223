//! The synthetic service set every peer is programmed with: the same VIPs, ports and
//! endpoints for ferrolb, nftables and iptables, so they are compared on identical work.
//!
//! Addresses (all from 198.18.0.0/15): VIPs 198.19.0.0/16, endpoints 198.18.64.0/18
//! (a pool shared round-robin when services × backends exceeds it), new-flow sources
//! 198.18.128.0/17.

use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc};

use lb_daemon::model::{BackendSpec, DesiredState, Frontend, Protocol, ServiceSpec, Settings};

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
/// Smallest Maglev table size ferrolb allows; the default (100 slots per backend, rounded
/// up to a listed prime) would be the same for up to two backends.
pub const MAGLEV_TABLE: u32 = 251;

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

    /// The same services as ferrolb's desired state.
    pub fn desired_state(&self) -> DesiredState {
        let mut services = BTreeMap::new();
        for i in 0..self.services {
            let mut backends: Vec<BackendSpec> = self
                .endpoints(i)
                .into_iter()
                .map(|a| BackendSpec {
                    address: a.into(),
                    weight: 1,
                })
                .collect();
            backends.sort_by_key(|b| b.address);
            backends.dedup_by_key(|b| b.address);
            services.insert(
                Frontend {
                    vip: self.vip(i).into(),
                    port: SERVICE_PORT,
                    protocol: Protocol::Tcp,
                },
                Arc::new(ServiceSpec {
                    name: format!("svc{i}"),
                    backends,
                    table_size: MAGLEV_TABLE,
                }),
            );
        }
        DesiredState {
            services,
            settings: Settings::default(),
        }
    }
}

impl ServiceSet {
    /// Map capacities that hold this set (two table regions per service, plus room), at
    /// least the daemon's defaults: the set is measured, not refused for a default size.
    pub fn ferrolb_map_sizes(&self) -> lb_daemon::loader::MapSizes {
        let defaults = lb_daemon::loader::MapSizes::default();
        let slots = (self.services as u64) * 2 * u64::from(MAGLEV_TABLE) + (1 << 20);
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
    fn desired_state_has_every_service_with_its_backends() {
        let set = ServiceSet {
            services: 10,
            backends: 3,
        };
        let state = set.desired_state();
        assert_eq!(state.services.len(), 10);
        assert!(state.services.values().all(|s| s.backends.len() == 3));
    }
}
