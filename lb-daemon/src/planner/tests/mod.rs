//! The planner's tests: example plans (`plans`) and random change sequences
//! (`properties`), both checked against `FakeKernel`, an in-memory model of the maps.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use lb_common::{BackendValue, ServiceKey, ServiceValue, BACKEND_F_ACTIVE};

use super::{InstalledBackend, KernelState, MapOp};
use lb_model::{
    BackendSpec, DesiredState, Frontend, IpNetwork, Protocol, Scope, ServiceSpec, Settings,
};

mod affinity;
mod plans;
mod properties;
mod ranges;

/// The maps as a plain in-memory model, checked after every single operation.
#[derive(Default)]
struct FakeKernel {
    services: HashMap<(Scope, ServiceKey), ServiceValue>,
    backends: HashMap<u32, BackendValue>,
    slots: HashMap<u32, u32>,
    /// `LB_SRC_RANGES` as (service id, range).
    source_ranges: BTreeSet<(u32, IpNetwork)>,
}

impl FakeKernel {
    fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match op {
                MapOp::PutBackend { id, value } | MapOp::RetireBackend { id, value } => {
                    self.backends.insert(*id, *value);
                }
                MapOp::WriteSlots { base, slots } => {
                    for (offset, id) in slots.iter().enumerate() {
                        self.slots.insert(base + offset as u32, *id);
                    }
                }
                MapOp::PutService { scope, key, value } => {
                    self.services.insert((*scope, *key), *value);
                }
                MapOp::DeleteService { scope, key } => {
                    self.services.remove(&(*scope, *key));
                }
                MapOp::PutSourceRanges { service_id, ranges } => {
                    for r in ranges {
                        self.source_ranges.insert((*service_id, *r));
                    }
                }
                MapOp::DeleteSourceRanges { service_id, ranges } => {
                    for r in ranges {
                        self.source_ranges.remove(&(*service_id, *r));
                    }
                }
                MapOp::ResetServiceStats { .. }
                | MapOp::ResetBackendStats { .. }
                | MapOp::PurgeFlows { .. }
                | MapOp::PurgeAffinity { .. } => {}
            }
            self.assert_consistent(op);
        }
    }

    /// What a packet could observe right now: every slot of every live table names an
    /// active backend.
    fn assert_consistent(&self, after: &MapOp) {
        for (key, svc) in &self.services {
            for slot in svc.table_base..svc.table_base + svc.table_size {
                // Like a BPF array, an unwritten slot reads as zero.
                let id = self.slots.get(&slot).copied().unwrap_or(0);
                let backend = self.backends.get(&id).unwrap_or_else(|| {
                    panic!("{key:?}: slot {slot} names unwritten backend {id} after {after:?}")
                });
                assert_eq!(
                    backend.flags & BACKEND_F_ACTIVE,
                    BACKEND_F_ACTIVE,
                    "{key:?} slot {slot} names retired backend {id} after {after:?}"
                );
            }
        }
    }

    /// What a restarted daemon reads back.
    fn adopt(&self, capacity: u32) -> KernelState {
        let services: Vec<(Frontend, ServiceValue)> = self
            .services
            .iter()
            .map(|((scope, k), v)| (Frontend::from_scoped_key(k, *scope).unwrap(), *v))
            .collect();
        let mut regions = HashMap::new();
        for (_, v) in &services {
            for base in [v.table_base, v.spare_base] {
                regions.insert(
                    base,
                    (base..base + v.table_size)
                        .map(|i| self.slots.get(&i).copied().unwrap_or(0))
                        .collect(),
                );
            }
        }
        let mut generations = HashMap::new();
        let mut backends = Vec::new();
        for (id, b) in &self.backends {
            generations.insert(*id, b.generation);
            if b.flags & BACKEND_F_ACTIVE != 0 {
                let addr = IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]]);
                backends.push((
                    addr,
                    InstalledBackend {
                        id: *id,
                        generation: b.generation,
                    },
                ));
            }
        }
        let mut state =
            KernelState::adopt(capacity, services, &regions, backends, generations).unwrap();
        state.adopt_source_ranges(self.source_ranges.iter().copied().collect());
        state
    }

    fn service(&self, frontend: &Frontend) -> ServiceValue {
        self.services[&(frontend.scope, frontend.key())]
    }

    fn table(&self, frontend: &Frontend) -> Vec<IpAddr> {
        let svc = self.service(frontend);
        (svc.table_base..svc.table_base + svc.table_size)
            .map(|slot| {
                let b = self.backends[&self.slots.get(&slot).copied().unwrap_or(0)];
                IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]])
            })
            .collect()
    }
}

fn frontend(port: u16) -> Frontend {
    Frontend {
        vip: "198.18.100.1".parse().unwrap(),
        port,
        protocol: Protocol::Tcp,
        scope: Scope::External,
    }
}

fn spec(name: &str, backends: &[(u8, u32)], table_size: u32) -> ServiceSpec {
    let mut backends: Vec<BackendSpec> = backends
        .iter()
        .map(|&(last, weight)| BackendSpec {
            address: IpAddr::from([198, 18, 0, last]),
            weight,
        })
        .collect();
    backends.sort_by_key(|b| b.address);
    ServiceSpec {
        name: name.into(),
        backends,
        table_size,
        reject: false,
        source_ranges: Vec::new(),
        affinity_timeout_s: None,
    }
}

fn desired(services: Vec<(Frontend, ServiceSpec)>) -> DesiredState {
    DesiredState {
        rejecting: Default::default(),
        services: services
            .into_iter()
            .map(|(f, s)| (f, Arc::new(s)))
            .collect(),
        settings: Settings::default(),
    }
}

/// Operations with slot writes shortened to (base, count), for readable failures.
fn summary(ops: &[MapOp]) -> Vec<String> {
    ops.iter()
        .map(|op| match op {
            MapOp::WriteSlots { base, slots } => format!("WriteSlots {base}+{}", slots.len()),
            other => format!("{other:?}"),
        })
        .collect()
}

/// One random configuration: up to five services on ports 80-84, backends from a pool of
/// four (shared between services, so tables are shared and backends move between them).
/// (port offset, (backend, weight) pairs, big table) per service.
type Step = Vec<(u16, Vec<(u8, u32)>, bool)>;

fn configuration(step: Step) -> DesiredState {
    let mut services = BTreeMap::new();
    for (port, backends, big) in step {
        let mut seen = BTreeSet::new();
        let backends: Vec<(u8, u32)> = backends
            .into_iter()
            .filter(|(b, _)| seen.insert(*b))
            .collect();
        let size = if big { 1021 } else { 251 };
        services.insert(
            frontend(80 + port),
            Arc::new(spec(&format!("s{port}"), &backends, size)),
        );
    }
    DesiredState {
        rejecting: Default::default(),
        services: services.into(),
        settings: Settings::default(),
    }
}
