//! What this node does as the home of endpoints: the (frontend, local endpoint) pairs whose
//! encapsulated packets it translates to the endpoint's address and target port. Pure.
//!
//! Every frontend kind is translated (ClusterIP, NodePort, ExternalIP, LoadBalancer): pods
//! do not carry service addresses on their loopback. A NodePort arrives addressed to
//! whichever node balanced it, an address this node's rules do not know, so its
//! translation has the unspecified address as frontend (node ports are unique per
//! protocol in a cluster); the datapath tries it when the exact frontend is unknown.
//! Endpoints outside the balanced sets (terminating, kept for established flows,
//! rule 19) are included, so their flows keep being delivered until they end.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use lb_model::{Frontend, LocalTranslation, Protocol as DpProtocol, Scope};

use crate::rules::{FrontendKind, IpFamily, KubeDesiredState, Protocol};

/// The translations for this node's endpoints, sorted. When two Services claim the same
/// frontend, the first in name order keeps it, as in the balancer's projection.
pub fn local_translations(state: &KubeDesiredState) -> Vec<LocalTranslation> {
    let mut chosen: BTreeMap<(Frontend, IpAddr), u16> = BTreeMap::new();
    for svc in state.services.values() {
        for port in &svc.ports {
            for fe in &port.frontends {
                let protocol = match fe.protocol {
                    Protocol::Tcp => DpProtocol::Tcp,
                    Protocol::Udp => DpProtocol::Udp,
                    Protocol::Sctp => continue,
                };
                let family = IpFamily::of(fe.address);
                let Some(sets) = port.endpoints.get(&family) else {
                    continue;
                };
                let vip = match (fe.kind, family) {
                    (FrontendKind::NodePort, IpFamily::V4) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    (FrontendKind::NodePort, IpFamily::V6) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                    _ => fe.address,
                };
                let frontend = Frontend {
                    vip,
                    port: fe.port,
                    protocol,
                    scope: Scope::External,
                };
                let endpoints = sets
                    .cluster
                    .iter()
                    .chain(&sets.local)
                    .chain(&sets.kept_for_flows);
                for e in endpoints.filter(|e| e.local) {
                    chosen.entry((frontend, e.address)).or_insert(e.port);
                }
            }
        }
    }
    chosen
        .into_iter()
        .map(|((frontend, endpoint), target_port)| LocalTranslation {
            frontend,
            endpoint,
            target_port,
        })
        .collect()
}
