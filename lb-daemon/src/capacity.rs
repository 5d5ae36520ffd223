//! Whether a desired state fits the datapath's maps: services, backends and Maglev slots
//! against the capacities the maps are created with. `check-config` and the daemon both
//! check before programming, so a state that cannot fit is a validation error with the
//! numbers, not a write that fails and is retried.

use std::{collections::BTreeSet, net::IpAddr};

use lb_common::limits;
use lb_model::{DesiredState, Scope};

use crate::loader::MapSizes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapacityError {
    #[error("{scope:?} services: {wanted} do not fit the service map's {capacity} entries")]
    Services {
        scope: Scope,
        wanted: usize,
        capacity: u32,
    },
    #[error(
        "backends: {wanted} distinct backend addresses do not fit the backend map's \
         {capacity} entries"
    )]
    Backends { wanted: usize, capacity: u32 },
    #[error(
        "Maglev slots: {tables} distinct tables need {wanted} slots, the slot map has \
         {capacity} (raise --maglev-slots, lower settings.max_table_size or the services' \
         table_size, or share backend sets)"
    )]
    Slots {
        tables: usize,
        wanted: u64,
        capacity: u32,
    },
}

/// How much of each map a desired state takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub external_services: usize,
    pub internal_services: usize,
    pub backends: usize,
    pub tables: usize,
    pub slots: u64,
}

/// What a desired state takes of the maps; equal backend sets of equal size share one
/// table, as the planner places them.
pub fn usage(desired: &DesiredState) -> Usage {
    let mut usage = Usage::default();
    let mut backends: BTreeSet<IpAddr> = BTreeSet::new();
    let mut tables: BTreeSet<(Vec<(IpAddr, u32)>, u32)> = BTreeSet::new();
    for (frontend, spec) in &desired.services {
        match frontend.scope {
            Scope::External => usage.external_services += 1,
            Scope::Internal => usage.internal_services += 1,
        }
        backends.extend(spec.backends.iter().map(|b| b.address));
        let active: Vec<(IpAddr, u32)> = spec
            .backends
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| (b.address, b.weight))
            .collect();
        if !active.is_empty() {
            tables.insert((active, spec.table_size));
        }
    }
    usage.backends = backends.len();
    usage.tables = tables.len();
    usage.slots = tables.iter().map(|(_, size)| u64::from(*size)).sum();
    usage
}

/// Refuses a state that cannot fit maps of `sizes` in its steady state. (A change also
/// needs room for the tables it replaces while they are replaced; when that is missing
/// the write fails and is retried with back-off.)
pub fn check(desired: &DesiredState, sizes: &MapSizes) -> Result<Usage, CapacityError> {
    let usage = usage(desired);
    for (scope, wanted) in [
        (Scope::External, usage.external_services),
        (Scope::Internal, usage.internal_services),
    ] {
        if wanted > limits::MAX_SERVICES as usize {
            return Err(CapacityError::Services {
                scope,
                wanted,
                capacity: limits::MAX_SERVICES,
            });
        }
    }
    if usage.backends > limits::MAX_BACKENDS as usize {
        return Err(CapacityError::Backends {
            wanted: usage.backends,
            capacity: limits::MAX_BACKENDS,
        });
    }
    if usage.slots > u64::from(sizes.maglev_slots) {
        return Err(CapacityError::Slots {
            tables: usage.tables,
            wanted: usage.slots,
            capacity: sizes.maglev_slots,
        });
    }
    Ok(usage)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use lb_model::{BackendSpec, Frontend, Protocol, ServiceSpec};

    use super::*;

    fn state(services: usize, backends_each: usize, table_size: u32) -> DesiredState {
        let mut desired = DesiredState::default();
        for s in 0..services {
            let backends = (0..backends_each)
                .map(|b| BackendSpec {
                    address: IpAddr::from([10, (s >> 8) as u8, s as u8, b as u8]),
                    weight: 1,
                })
                .collect();
            let frontend = Frontend {
                vip: IpAddr::from([198, 18, 100, 1]),
                port: 1 + s as u16,
                protocol: Protocol::Tcp,
                scope: Scope::External,
            };
            let spec = ServiceSpec {
                name: format!("s{s}"),
                backends,
                table_size,
                reject: false,
                affinity_timeout_s: None,
                source_ranges: Vec::new(),
            };
            desired.services.insert(frontend, Arc::new(spec));
        }
        desired
    }

    #[test]
    fn a_state_over_the_backend_map_is_refused_with_the_numbers() {
        // 300 services of 250 backends each: 75,000 distinct addresses.
        let desired = state(300, 250, 65_537);
        let err = check(&desired, &MapSizes::default()).unwrap_err();
        assert_eq!(
            err,
            CapacityError::Backends {
                wanted: 75_000,
                capacity: limits::MAX_BACKENDS
            }
        );
        assert!(err.to_string().contains("75000"), "{err}");
    }

    #[test]
    fn a_state_over_the_slot_map_is_refused_and_shared_tables_count_once() {
        let sizes = MapSizes {
            maglev_slots: 10_000,
            flows: 1024,
            udp_flows: 1024,
            affinity: 1024,
        };
        let err = check(&state(3, 2, 4093), &sizes).unwrap_err();
        assert!(
            matches!(
                err,
                CapacityError::Slots {
                    tables: 3,
                    wanted: 12_279,
                    capacity: 10_000
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("--maglev-slots"), "{err}");
        // Two ports of one backend set share one table.
        let mut shared = state(1, 2, 4093);
        let (frontend, spec) = shared
            .services
            .iter()
            .next()
            .map(|(f, s)| (*f, s.clone()))
            .unwrap();
        shared.services.insert(
            Frontend {
                port: 999,
                ..frontend
            },
            spec,
        );
        let usage = check(&shared, &sizes).unwrap();
        assert_eq!(
            (usage.tables, usage.slots, usage.external_services),
            (1, 4093, 2)
        );
    }

    #[test]
    fn services_without_active_backends_take_no_slots() {
        let usage = check(&state(5, 0, 1021), &MapSizes::default()).unwrap();
        assert_eq!((usage.tables, usage.slots, usage.backends), (0, 0, 0));
    }
}
