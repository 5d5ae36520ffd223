//! The projection of the rich Kubernetes state onto what today's datapath can program:
//! (VIP, port, protocol) → weighted backends, IPv4, IPIP DSR from the wire.
//!
//! What it cannot express is never approximated silently: a frontend it cannot serve
//! correctly is left out and listed in [`ProjectionReport::skipped`]; behaviour it serves
//! only partly is listed in [`ProjectionReport::unsupported`].
//!
//! - The balancer sends the packet unchanged (IPIP DSR); the endpoint's node translates the
//!   destination to the endpoint's address and target port ([`crate::backend_side`]), so
//!   NodePorts and `targetPort` ≠ `port` are served like any other frontend.
//! - IPv4 and IPv6 frontends, each balanced over the endpoints of its own family (rule 22);
//!   TCP and UDP only.
//! - The XDP program sees traffic arriving from the network, so the `external` verdict is
//!   the one programmed; the `internal` one (pods on this node) needs the east-west path.
//! - No reject: a frontend whose verdict is Reject or Drop is programmed with no backends,
//!   which drops; Reject is reported as served as a drop.
//! - No per-client affinity (flows stick per 5-tuple through the flow table).
//! - No source filtering: an LB frontend with `loadBalancerSourceRanges` is skipped rather
//!   than opened to everybody.

use std::{collections::BTreeMap, net::IpAddr};

use lb_hashing::maglev;
use lb_model::{
    BackendSpec, DesiredState, Frontend, Protocol as DpProtocol, ServiceSpec, Settings,
};
use serde::Serialize;

use crate::model::{
    EndpointSetKind, FrontendKind, IpFamily, KubeDesiredState, Protocol, ServiceName, Verdict,
};

/// Why a frontend was left out of the datapath.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum SkipFrontend {
    #[error("{0} is not served by the datapath")]
    Protocol(Protocol),
    #[error("loadBalancerSourceRanges cannot be enforced by the datapath yet")]
    SourceRanges,
    #[error("{address}:{port}/{protocol} is already served by {other}")]
    Conflict {
        address: IpAddr,
        port: u16,
        protocol: Protocol,
        other: ServiceName,
    },
}

impl SkipFrontend {
    /// Stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Protocol(_) => "protocol",
            Self::SourceRanges => "source_ranges",
            Self::Conflict { .. } => "conflict",
        }
    }
}

/// A behaviour kube-proxy has that the programmed frontend lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Unsupported {
    /// Rule 9: served as a drop instead of ICMP unreachable / TCP RST.
    RejectAsDrop,
    /// Rule 9: other ports of the ClusterIP are not rejected.
    RejectUnknownPorts,
    /// Rule 17.
    SessionAffinity,
    /// Rules 13/14: pod-originated traffic (the `internal` verdict) is not intercepted.
    InternalTraffic,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkippedFrontend {
    pub service: ServiceName,
    pub port_name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub kind: FrontendKind,
    pub reason: SkipFrontend,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProjectionReport {
    pub programmed: usize,
    pub skipped: Vec<SkippedFrontend>,
    /// Services whose programmed frontends lack a behaviour, once per (service, what).
    pub unsupported: Vec<(ServiceName, Unsupported)>,
}

impl ProjectionReport {
    /// Skipped frontends counted by [`SkipFrontend::reason`].
    pub fn skipped_by_reason(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for s in &self.skipped {
            *counts.entry(s.reason.reason()).or_default() += 1;
        }
        counts
    }
}

/// The datapath state for `state`, and what could not be programmed.
pub fn to_datapath(
    state: &KubeDesiredState,
    settings: Settings,
) -> (DesiredState, ProjectionReport) {
    let mut desired = DesiredState {
        services: BTreeMap::new(),
        settings,
    };
    let mut report = ProjectionReport::default();
    let mut owners: BTreeMap<Frontend, ServiceName> = BTreeMap::new();
    for svc in state.services.values() {
        let mut lacks = Vec::new();
        for port in &svc.ports {
            for fe in &port.frontends {
                let mut skip = |reason| {
                    report.skipped.push(SkippedFrontend {
                        service: svc.name.clone(),
                        port_name: port.name.clone(),
                        address: fe.address,
                        port: fe.port,
                        protocol: fe.protocol,
                        kind: fe.kind,
                        reason,
                    })
                };
                let protocol = match fe.protocol {
                    Protocol::Tcp => DpProtocol::Tcp,
                    Protocol::Udp => DpProtocol::Udp,
                    Protocol::Sctp => {
                        skip(SkipFrontend::Protocol(Protocol::Sctp));
                        continue;
                    }
                };
                if !fe.source_ranges.is_empty() {
                    skip(SkipFrontend::SourceRanges);
                    continue;
                }
                let endpoints = match fe.external {
                    Verdict::Forward(set) => port.endpoints_for(IpFamily::of(fe.address), set),
                    Verdict::Drop => &[],
                    Verdict::Reject => {
                        lacks.push(Unsupported::RejectAsDrop);
                        &[]
                    }
                };
                let frontend = Frontend {
                    vip: fe.address,
                    port: fe.port,
                    protocol,
                };
                if let Some(other) = owners.get(&frontend) {
                    skip(SkipFrontend::Conflict {
                        address: fe.address,
                        port: fe.port,
                        protocol: fe.protocol,
                        other: other.clone(),
                    });
                    continue;
                }
                if fe.internal != fe.external
                    || matches!(fe.internal, Verdict::Forward(EndpointSetKind::Local))
                {
                    lacks.push(Unsupported::InternalTraffic);
                }
                let mut backends: Vec<BackendSpec> = endpoints
                    .iter()
                    .map(|e| BackendSpec {
                        address: e.address,
                        weight: 1,
                    })
                    .collect();
                backends.sort_by_key(|b| b.address);
                backends.dedup_by_key(|b| b.address);
                let table_size = maglev::choose_table_size(
                    backends.len().max(1),
                    desired.settings.max_table_size,
                );
                owners.insert(frontend, svc.name.clone());
                desired.services.insert(
                    frontend,
                    ServiceSpec {
                        name: datapath_name(&svc.name, &port.name),
                        backends,
                        table_size,
                    },
                );
                report.programmed += 1;
            }
        }
        if svc.session_affinity_seconds.is_some() {
            lacks.push(Unsupported::SessionAffinity);
        }
        if !svc.cluster_ips.is_empty() {
            lacks.push(Unsupported::RejectUnknownPorts);
        }
        lacks.sort();
        lacks.dedup();
        report
            .unsupported
            .extend(lacks.into_iter().map(|what| (svc.name.clone(), what)));
    }
    (desired, report)
}

fn datapath_name(service: &ServiceName, port_name: &str) -> String {
    if port_name.is_empty() {
        service.to_string()
    } else {
        format!("{service}:{port_name}")
    }
}
