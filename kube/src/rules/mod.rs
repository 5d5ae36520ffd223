//! kube-proxy's rules, pure: (Services, EndpointSlices, this node's Node, [`NodeConfig`]) →
//! everything kube-proxy would program on this node ([`KubeDesiredState`]). No I/O.
//!
//! Rule numbers refer to `docs/kube-proxy-semantics.md`. The files split the rules by what
//! they decide:
//! - `objects.rs`: which Services and EndpointSlices count (rules 1, 2, 3);
//! - `node.rs`: this node's NodePort addresses, zone and eligibility (rules 6, 16, 21);
//! - `service_ports.rs`: the served ports, healthCheckNodePort and session affinity
//!   (rules 4, 15, 17);
//! - `endpoints.rs`: the endpoint sets per port and family, and stale UDP flows (rules 3, 4,
//!   10, 11, 12, 16, 19, 20);
//! - `frontends.rs`: the addresses a Service answers on and each frontend's verdicts
//!   (rules 5, 6, 7, 8, 9, 13, 14, 18, 22);
//! - `state.rs`: the result types; `invalid.rs`: what is skipped and why.
//!
//! Objects (or parts of objects) that are invalid are skipped and recorded as [`Skipped`]
//! entries; they never affect other Services.

mod endpoints;
mod frontends;
mod invalid;
mod node;
mod objects;
mod service_ports;
mod state;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Node, Service, ServiceSpec},
    discovery::v1::EndpointSlice,
};

pub use endpoints::{stale_udp_endpoints, MAX_ENDPOINTS_PER_SERVICE, MAX_ENDPOINTS_PER_SLICE};
pub use invalid::{sort_skipped, InvalidObject, Skipped};
pub use node::{node_info, NodeConfig, NodeInfo, LABEL_ZONE, TAINT_TO_BE_DELETED};
pub use objects::{
    labels_select, service_name, slice_service, LABEL_HEADLESS, LABEL_SERVICE_NAME,
    LABEL_SERVICE_PROXY_NAME,
};
pub use service_ports::{DEFAULT_AFFINITY_TIMEOUT_SECONDS, MAX_AFFINITY_TIMEOUT_SECONDS};
pub use state::{
    Endpoint, EndpointSetKind, EndpointSets, FrontendKind, HealthCheckSpec, IpFamily,
    KubeDesiredState, KubeFrontend, KubeService, KubeServicePort, Protocol, ServiceName,
    TopologyMode, Verdict,
};

use frontends::{Addresses, TrafficPolicy};
use invalid::{object_id, Problems};

/// Builds the whole desired state. Slices are matched to Services here; the watch keeps a
/// per-service cache and calls [`build_service`] only for what changed.
pub fn build(
    services: &[Service],
    slices: &[EndpointSlice],
    node: Option<&Node>,
    cfg: &NodeConfig,
) -> KubeDesiredState {
    let mut skipped = Vec::new();
    let node = node_info(node, cfg, &mut skipped);
    let mut by_service: BTreeMap<ServiceName, Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(name) = slice_service(slice) {
            by_service.entry(name).or_default().push(slice);
        }
    }
    let mut state = KubeDesiredState {
        node,
        services: imbl::OrdMap::new(),
        skipped,
    };
    for svc in services {
        let Some(name) = service_name(svc) else {
            state.skipped.push(Skipped {
                object: object_id("Service", &svc.metadata),
                problem: InvalidObject::Unnamed,
            });
            continue;
        };
        let slices = by_service.get(&name).map(Vec::as_slice).unwrap_or(&[]);
        let built = build_service(svc, slices, &state.node, cfg);
        state.skipped.extend(built.skipped);
        if let Some(service) = built.service {
            state.services.insert(Arc::new(name), Arc::new(service));
        }
    }
    sort_skipped(&mut state.skipped);
    state
}

/// One Service's result: `service` is `None` when the Service is not ours to program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuiltService {
    pub service: Option<KubeService>,
    pub skipped: Vec<Skipped>,
}

/// Builds one Service from its object and its slices.
pub fn build_service(
    svc: &Service,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    cfg: &NodeConfig,
) -> BuiltService {
    let Some((name, spec)) = objects::served(svc, cfg) else {
        return BuiltService::default();
    };
    let mut problems = Problems::new(format!("Service {name}"));
    let service = served_service(name, svc, spec, slices, node, cfg, &mut problems);
    BuiltService {
        service,
        skipped: problems.found,
    }
}

/// The steps for a Service this proxy serves, in the order its problems are reported:
/// addresses, per-Service settings, endpoints, then each port with its endpoint sets and
/// frontends. `None` when nothing of it can be programmed.
fn served_service(
    name: ServiceName,
    svc: &Service,
    spec: &ServiceSpec,
    slices: &[&EndpointSlice],
    node: &NodeInfo,
    cfg: &NodeConfig,
    problems: &mut Problems,
) -> Option<KubeService> {
    let addresses = Addresses::read(svc, spec, problems)?;
    let families = addresses.families();
    let policy = TrafficPolicy::of(spec);
    let session_affinity_seconds = service_ports::session_affinity(spec, problems);
    let health_check_node_port = service_ports::health_check_node_port(spec, &policy, problems);
    let publish_not_ready = spec.publish_not_ready_addresses.unwrap_or(false);
    let slice_endpoints =
        endpoints::read_slices(slices, cfg, publish_not_ready, &families, problems)?;

    let mut local_ready: BTreeSet<IpAddr> = BTreeSet::new();
    let mut ports = Vec::new();
    for sp in service_ports::served_ports(spec, problems) {
        let endpoints = endpoints::sets_by_family(&slice_endpoints, &sp, &families, node);
        for sets in endpoints.values() {
            local_ready.extend(sets.local.iter().filter(|e| e.ready).map(|e| e.address));
        }
        let mut port = KubeServicePort {
            name: sp.name,
            protocol: sp.protocol,
            port: sp.port,
            node_port: sp.node_port,
            endpoints,
            frontends: Vec::new(),
        };
        port.frontends = frontends::frontends_for(&port, &addresses, node, &policy);
        ports.push(port);
    }

    Some(KubeService {
        name,
        cluster_ips: addresses.cluster_ips,
        ports,
        session_affinity_seconds,
        external_policy_local: policy.external_local,
        internal_policy_local: policy.internal_local,
        health_check_node_port,
        local_ready_endpoints: local_ready.len(),
    })
}
