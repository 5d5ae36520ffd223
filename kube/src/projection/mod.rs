//! The projection of the rich Kubernetes state onto what today's datapath can program:
//! (VIP, port, protocol, scope) → weighted backends.
//!
//! What it cannot express is never approximated silently: a frontend it cannot serve
//! correctly is left out and listed in [`ProjectionReport::skipped`]; behaviour it serves
//! only partly is listed in [`ProjectionReport::unsupported`].
//!
//! - Every frontend is programmed in two scopes (`lb_model::Scope`): the external one, for
//!   packets arriving from the network (the XDP balancer), with the `external` verdict;
//!   and the internal one, for this node's pods and processes (the socket programs, at
//!   `connect()`/`sendmsg()`), with the `internal` verdict: the internal policy's set for
//!   ClusterIPs, the Cluster set for every other kind (rules 13, 14).
//! - The balancer sends the packet unchanged (IPIP DSR); the endpoint's node translates the
//!   destination to the endpoint's address and target port ([`crate::backend_side`]); the
//!   socket programs connect straight to the endpoint's target port
//!   ([`crate::socket_side`]). So NodePorts and `targetPort` ≠ `port` are served like any
//!   other frontend.
//! - IPv4 and IPv6 frontends, each balanced over the endpoints of its own family (rule 22);
//!   TCP and UDP only.
//! - Reject (rule 9), in both scopes: a rejecting frontend is programmed without backends
//!   and flagged, so the XDP balancer answers ICMP port unreachable and the socket
//!   programs fail the call with ECONNREFUSED; every ClusterIP goes into
//!   `DesiredState::rejecting`, so a (port, protocol) its Service does not define is
//!   refused the same way.
//! - No per-client affinity (flows stick per 5-tuple through the flow table).
//! - Source ranges: an LB frontend's `loadBalancerSourceRanges` (of its family) go with its
//!   external spec, and the XDP balancer drops new flows from other sources. The socket
//!   programs cannot see a `connect()`'s source, so such a frontend is left out of the
//!   internal scope (its traffic leaves for the network like an external client's) and
//!   reported, rather than opened to every pod.
//! - `sessionAffinity: ClientIP` (rule 17): the timeout travels in both scopes' specs; the
//!   XDP balancer keys it on the client address, the socket programs on the caller's
//!   network namespace.

mod projector;

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use lb_model::{
    BackendSpec, DesiredState, Frontend, Protocol as DpProtocol, Scope, ServiceSpec, Settings,
};
use serde::Serialize;

pub use projector::Projector;

use crate::rules::{
    FrontendKind, IpFamily, KubeDesiredState, KubeFrontend, KubeService, KubeServicePort, Protocol,
    ServiceName, Verdict,
};

/// Why a frontend was left out of the datapath.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum SkipFrontend {
    #[error("{0} is not served by the datapath")]
    Protocol(Protocol),
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
            Self::Conflict { .. } => "conflict",
        }
    }
}

/// A behaviour kube-proxy has that the programmed frontend lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Unsupported {
    /// Rule 18: an LB frontend with source ranges is not balanced at the socket (the
    /// source of a `connect()` is unknown there); pods' and host processes' traffic to it
    /// goes to the network unbalanced.
    SourceRangesAtSocket,
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
    /// Frontends (address, port, protocol) programmed, each counted once whatever the
    /// scopes it is programmed in.
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

/// The datapath state for `state` in both scopes, and what could not be programmed.
pub fn to_datapath(
    state: &KubeDesiredState,
    settings: Settings,
) -> (DesiredState, ProjectionReport) {
    let mut desired = DesiredState {
        services: Default::default(),
        rejecting: Arc::new(state.reject_unknown_ports_on()),
        settings,
    };
    let mut report = ProjectionReport::default();
    // The first claim of a frontend (in service name order) holds it, in both scopes.
    let mut owners: BTreeMap<Frontend, ServiceName> = BTreeMap::new();
    for svc in state.services.values() {
        let claims = claims_of(svc, &settings, true);
        for claim in &claims.claims {
            match claim {
                Claim::Skipped(s) => report.skipped.push(s.clone()),
                Claim::Serve(serve) => {
                    if let Some(other) = owners.get(&serve.frontend) {
                        report.skipped.push(serve.conflict(&svc.name, other));
                        continue;
                    }
                    owners.insert(serve.frontend, svc.name.clone());
                    for (frontend, spec) in serve.programs() {
                        desired.services.insert(frontend, Arc::clone(spec));
                    }
                    report.programmed += 1;
                }
            }
        }
        report
            .unsupported
            .extend(claims.lacks.iter().map(|what| (svc.name.clone(), *what)));
    }
    (desired, report)
}

/// The datapath protocol of a frontend the projection programs, or why it leaves the
/// frontend out (of both scopes). [`crate::socket_side`] asks too, so both agree on who
/// holds a frontend.
pub(crate) fn servable(fe: &KubeFrontend) -> Result<DpProtocol, SkipFrontend> {
    let protocol = match fe.protocol {
        Protocol::Tcp => DpProtocol::Tcp,
        Protocol::Udp => DpProtocol::Udp,
        Protocol::Sctp => return Err(SkipFrontend::Protocol(Protocol::Sctp)),
    };
    Ok(protocol)
}

/// Whether the projection programs `fe` in the internal scope (the socket programs):
/// not when source ranges apply to it, which the socket programs cannot check. A
/// rejecting frontend is: it refuses every source alike, as kube-proxy does without
/// endpoints (rule 9). [`crate::socket_side`] asks too.
pub(crate) fn served_at_socket(fe: &KubeFrontend) -> bool {
    fe.source_ranges.is_empty() || fe.internal == Verdict::Reject
}

/// One frontend of one Service, before frontends claimed twice are resolved.
#[derive(Clone, Debug, PartialEq)]
enum Claim {
    /// Left out for a reason of its own.
    Skipped(SkippedFrontend),
    /// Programmed unless an earlier claim holds the frontend.
    Serve(Serve),
}

#[derive(Clone, Debug, PartialEq)]
struct Serve {
    /// The frontend's address, port and protocol, in the external scope; claims are
    /// resolved on it, so one Service holds a frontend in both scopes.
    frontend: Frontend,
    /// For packets from the network (the XDP balancer): the `external` verdict.
    external: Arc<ServiceSpec>,
    /// For this node's pods and processes (the socket programs): the `internal` verdict;
    /// `None` when the projection leaves the internal scope out.
    internal: Option<Arc<ServiceSpec>>,
    port_name: String,
    protocol: Protocol,
    kind: FrontendKind,
}

impl Serve {
    /// The spec this claim programs in `scope`.
    fn spec(&self, scope: Scope) -> Option<&Arc<ServiceSpec>> {
        match scope {
            Scope::External => Some(&self.external),
            Scope::Internal => self.internal.as_ref(),
        }
    }

    /// Each scoped frontend this claim programs, with its spec.
    fn programs(&self) -> impl Iterator<Item = (Frontend, &Arc<ServiceSpec>)> + '_ {
        [Scope::External, Scope::Internal]
            .into_iter()
            .filter_map(|scope| Some((self.frontend.in_scope(scope), self.spec(scope)?)))
    }

    fn conflict(&self, service: &ServiceName, other: &ServiceName) -> SkippedFrontend {
        SkippedFrontend {
            service: service.clone(),
            port_name: self.port_name.clone(),
            address: self.frontend.vip,
            port: self.frontend.port,
            protocol: self.protocol,
            kind: self.kind,
            reason: SkipFrontend::Conflict {
                address: self.frontend.vip,
                port: self.frontend.port,
                protocol: self.protocol,
                other: other.clone(),
            },
        }
    }
}

/// One Service's frontends, and what it lacks whatever the conflicts (sorted, once each).
#[derive(Clone, Debug, PartialEq)]
struct ServiceClaims {
    claims: Vec<Claim>,
    lacks: Vec<Unsupported>,
    /// The Service's ClusterIPs, which refuse the ports it does not define (rule 9).
    rejecting: Vec<IpAddr>,
}

/// Everything about one Service's projection that depends on that Service alone; the
/// internal scope only when `internal_scope`.
fn claims_of(svc: &KubeService, settings: &Settings, internal_scope: bool) -> ServiceClaims {
    let mut claims = Vec::new();
    let mut lacks = Vec::new();
    for port in &svc.ports {
        for fe in &port.frontends {
            let protocol = match servable(fe) {
                Ok(protocol) => protocol,
                Err(reason) => {
                    claims.push(Claim::Skipped(SkippedFrontend {
                        service: svc.name.clone(),
                        port_name: port.name.clone(),
                        address: fe.address,
                        port: fe.port,
                        protocol: fe.protocol,
                        kind: fe.kind,
                        reason,
                    }));
                    continue;
                }
            };
            let name = datapath_name(&svc.name, &port.name);
            let family = IpFamily::of(fe.address);
            let affinity = svc.session_affinity_seconds;
            let mut external = spec(&name, port, family, fe.external, settings, affinity);
            // kube-proxy filters sources only while the Service has endpoints: without
            // any, every source is refused alike (rule 9).
            if fe.external != Verdict::Reject && !fe.source_ranges.is_empty() {
                Arc::make_mut(&mut external).source_ranges =
                    lb_model::source_ranges(fe.source_ranges.iter().copied());
            }
            if internal_scope && !served_at_socket(fe) {
                lacks.push(Unsupported::SourceRangesAtSocket);
            }
            let internal = (internal_scope && served_at_socket(fe))
                .then(|| spec(&name, port, family, fe.internal, settings, affinity));
            claims.push(Claim::Serve(Serve {
                frontend: Frontend {
                    vip: fe.address,
                    port: fe.port,
                    protocol,
                    scope: Scope::External,
                },
                external,
                internal,
                port_name: port.name.clone(),
                protocol: fe.protocol,
                kind: fe.kind,
            }));
        }
    }
    lacks.sort();
    lacks.dedup();
    ServiceClaims {
        claims,
        lacks,
        rejecting: svc.cluster_ips.clone(),
    }
}

/// The spec of one frontend in one scope: the verdict's set of the frontend's family, one
/// backend per address, a table of the size policy's choice, the Service's affinity.
fn spec(
    name: &str,
    port: &KubeServicePort,
    family: IpFamily,
    verdict: Verdict,
    settings: &Settings,
    affinity_timeout_s: Option<u32>,
) -> Arc<ServiceSpec> {
    let endpoints = match verdict {
        Verdict::Forward(set) => port.endpoints_for(family, set),
        Verdict::Drop | Verdict::Reject => &[],
    };
    let mut backends: Vec<BackendSpec> = endpoints
        .iter()
        .map(|e| BackendSpec {
            address: e.address,
            weight: 1,
        })
        .collect();
    backends.sort_by_key(|b| b.address);
    backends.dedup_by_key(|b| b.address);
    let table_size = settings.table_size_for(backends.len());
    Arc::new(ServiceSpec {
        name: name.to_owned(),
        backends,
        table_size,
        reject: verdict == Verdict::Reject,
        source_ranges: Vec::new(),
        affinity_timeout_s,
    })
}

fn datapath_name(service: &ServiceName, port_name: &str) -> String {
    if port_name.is_empty() {
        service.to_string()
    } else {
        format!("{service}:{port_name}")
    }
}
