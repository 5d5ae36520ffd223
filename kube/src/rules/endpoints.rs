//! Which endpoints serve a service port (rules 3, 4, 10, 11, 12, 16, 19 and 20 of
//! `docs/kube-proxy-semantics.md`): endpoints are read from the Service's slices (the first
//! address, the conditions, the target port per slice port), merged across slices, and
//! split per family into the Cluster set (ready, else serving-terminating; narrowed by
//! topology hints), the Local set (this node's) and the serving endpoints kept only for
//! established flows.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use k8s_openapi::api::discovery::v1::{self, EndpointSlice};

use super::{
    invalid::{object_id, Problems},
    node::{NodeConfig, NodeInfo},
    objects::served_slices,
    service_ports::{valid_port, ServicePortSpec},
    Endpoint, EndpointSets, InvalidObject, IpFamily, KubeDesiredState, Protocol, Skipped,
    TopologyMode, Verdict,
};

/// The API server refuses slices with more endpoints than this; a bigger one is hostile.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 1000;
/// More endpoints than the datapath's backend map holds cannot be served by any node.
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 65_536;
/// An endpoint as read from a slice, before the sets are chosen.
#[derive(Clone, Debug)]
pub(crate) struct SliceEndpoint {
    address: IpAddr,
    port: u16,
    ready: bool,
    serving: bool,
    terminating: bool,
    node_name: Option<String>,
    zone_hints: Option<Vec<String>>,
    node_hints: Option<Vec<String>>,
}

/// Endpoints keyed by the slice port (name, protocol) they serve (rules 3, 4).
pub(crate) type SliceEndpoints = BTreeMap<(String, Protocol), Vec<SliceEndpoint>>;

/// Reads every served slice of a Service whose families are `families`. `None` (with the
/// problem reported) when the Service has more endpoints than can be served.
pub(crate) fn read_slices(
    slices: &[&EndpointSlice],
    cfg: &NodeConfig,
    publish_not_ready: bool,
    families: &BTreeSet<IpFamily>,
    problems: &mut Problems,
) -> Option<SliceEndpoints> {
    let mut endpoints = SliceEndpoints::new();
    let mut total = 0usize;
    for slice in served_slices(slices, cfg) {
        total += read_slice(
            slice,
            publish_not_ready,
            families,
            &mut endpoints,
            &mut problems.found,
        );
    }
    if total > MAX_ENDPOINTS_PER_SERVICE {
        problems.skip(InvalidObject::TooManyEndpoints {
            count: total,
            max: MAX_ENDPOINTS_PER_SERVICE,
        });
        return None;
    }
    Some(endpoints)
}

/// Reads one slice into `into`; returns how many endpoints it counts towards the Service's
/// limit (none for a slice that is skipped or of a family the Service does not have).
fn read_slice(
    slice: &EndpointSlice,
    publish_not_ready: bool,
    families: &BTreeSet<IpFamily>,
    into: &mut SliceEndpoints,
    skipped: &mut Vec<Skipped>,
) -> usize {
    let id = object_id("EndpointSlice", &slice.metadata);
    let mut skip = |problem| {
        skipped.push(Skipped {
            object: id.clone(),
            problem,
        })
    };
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        // FQDN slices are for DNS-only Services: nothing to proxy, not an error.
        "FQDN" => return 0,
        other => {
            skip(InvalidObject::UnsupportedAddressType {
                value: other.to_owned(),
            });
            return 0;
        }
    };
    let endpoints = slice.endpoints.as_deref().unwrap_or(&[]);
    if endpoints.len() > MAX_ENDPOINTS_PER_SLICE {
        skip(InvalidObject::TooManyEndpoints {
            count: endpoints.len(),
            max: MAX_ENDPOINTS_PER_SLICE,
        });
        return 0;
    }
    if !families.contains(&family) {
        return 0;
    }
    let ports = slice_ports(slice, &mut skip);
    for (i, ep) in endpoints.iter().enumerate() {
        let Some(read) = read_endpoint(ep, i, family, slice, publish_not_ready, &mut skip) else {
            continue;
        };
        for (name, protocol, number) in &ports {
            into.entry((name.clone(), *protocol))
                .or_default()
                .push(SliceEndpoint {
                    port: *number,
                    ..read.clone()
                });
        }
    }
    endpoints.len()
}

/// The slice's ports as (name, protocol, target port); invalid ones are skipped, ports
/// without a number ignored.
fn slice_ports(
    slice: &EndpointSlice,
    skip: &mut impl FnMut(InvalidObject),
) -> Vec<(String, Protocol, u16)> {
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
            skip(InvalidObject::BadProtocol {
                field: format!("ports[{i}].protocol"),
                value: p.protocol.clone().unwrap_or_default(),
            });
            continue;
        };
        // Rule 3: the API allows a slice port without a number ("all ports"), which has
        // nothing to proxy; kube-proxy ignores it, and it is not invalid.
        let Some(given) = p.port else {
            continue;
        };
        let Some(number) = valid_port(i64::from(given)) else {
            skip(InvalidObject::BadPort {
                field: format!("ports[{i}].port"),
                value: i64::from(given),
            });
            continue;
        };
        ports.push((p.name.clone().unwrap_or_default(), protocol, number));
    }
    ports
}

/// Endpoint `i` of a slice of `family`, its port still unset; `None` when it has no
/// address or an invalid one (reported).
fn read_endpoint(
    ep: &v1::Endpoint,
    i: usize,
    family: IpFamily,
    slice: &EndpointSlice,
    publish_not_ready: bool,
    skip: &mut impl FnMut(InvalidObject),
) -> Option<SliceEndpoint> {
    // Rule 3: the first address is the endpoint's; the others are ignored by design.
    let text = ep.addresses.first()?;
    let address = match text.parse::<IpAddr>() {
        Ok(a) if !a.is_unspecified() && !a.is_multicast() => a,
        _ => {
            skip(InvalidObject::BadAddress {
                field: format!("endpoints[{i}].addresses[0]"),
                value: text.clone(),
            });
            return None;
        }
    };
    if IpFamily::of(address) != family {
        skip(InvalidObject::WrongFamily {
            field: format!("endpoints[{i}].addresses[0]"),
            value: address,
            address_type: slice.address_type.clone(),
        });
        return None;
    }
    // Rule 10: unset `ready` means ready; unset `serving` follows `ready`.
    let conditions = ep.conditions.as_ref();
    let ready_condition = conditions.and_then(|c| c.ready).unwrap_or(true);
    let hints = ep.hints.as_ref();
    Some(SliceEndpoint {
        address,
        port: 0,
        ready: publish_not_ready || ready_condition,
        serving: conditions
            .and_then(|c| c.serving)
            .unwrap_or(ready_condition),
        terminating: conditions.and_then(|c| c.terminating).unwrap_or(false),
        node_name: ep.node_name.clone(),
        zone_hints: hints
            .and_then(|h| h.for_zones.as_ref())
            .map(|z| z.iter().map(|z| z.name.clone()).collect()),
        node_hints: hints
            .and_then(|h| h.for_nodes.as_ref())
            .map(|n| n.iter().map(|n| n.name.clone()).collect()),
    })
}

/// The endpoint sets of one service port, per family of the Service.
pub(crate) fn sets_by_family(
    endpoints: &SliceEndpoints,
    port: &ServicePortSpec,
    families: &BTreeSet<IpFamily>,
    node: &NodeInfo,
) -> BTreeMap<IpFamily, EndpointSets> {
    let raw = endpoints
        .get(&(port.name.clone(), port.protocol))
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    families
        .iter()
        .map(|family| {
            let of_family: Vec<&SliceEndpoint> = raw
                .iter()
                .filter(|e| IpFamily::of(e.address) == *family)
                .collect();
            (*family, choose_sets(&of_family, node))
        })
        .collect()
}

/// Rules 11, 12 and 16 for one port and family.
fn choose_sets(raw: &[&SliceEndpoint], node: &NodeInfo) -> EndpointSets {
    // Rule 3: the same endpoint in several slices counts once; if the copies disagree, the
    // most available reading wins, so a stale slice cannot take a live endpoint away.
    let mut merged: BTreeMap<(IpAddr, u16), SliceEndpoint> = BTreeMap::new();
    for ep in raw {
        merged
            .entry((ep.address, ep.port))
            .and_modify(|seen| {
                seen.ready |= ep.ready;
                seen.serving |= ep.serving;
                seen.terminating &= ep.terminating;
            })
            .or_insert_with(|| (*ep).clone());
    }
    let all: Vec<&SliceEndpoint> = merged.values().collect();
    let is_local = |e: &SliceEndpoint| e.node_name.as_deref() == Some(node.name.as_str());

    let ready: Vec<&SliceEndpoint> = all.iter().copied().filter(|e| e.ready).collect();
    let topology = topology_from_hints(&ready, node);
    let cluster: Vec<&SliceEndpoint> = if ready.is_empty() {
        all.iter()
            .copied()
            .filter(|e| e.serving && e.terminating)
            .collect()
    } else {
        ready
            .iter()
            .copied()
            .filter(|e| hinted_for(e, topology, node))
            .collect()
    };
    let local_ready: Vec<&SliceEndpoint> = all
        .iter()
        .copied()
        .filter(|e| e.ready && is_local(e))
        .collect();
    let local = if local_ready.is_empty() {
        all.iter()
            .copied()
            .filter(|e| e.serving && e.terminating && is_local(e))
            .collect()
    } else {
        local_ready
    };
    let finish = |set: Vec<&SliceEndpoint>| -> Vec<Endpoint> {
        set.into_iter()
            .map(|e| Endpoint {
                address: e.address,
                port: e.port,
                ready: e.ready,
                serving: e.serving,
                terminating: e.terminating,
                local: is_local(e),
            })
            .collect()
    };
    let in_sets: BTreeSet<(IpAddr, u16)> = cluster
        .iter()
        .chain(local.iter())
        .map(|e| (e.address, e.port))
        .collect();
    let kept: Vec<&SliceEndpoint> = all
        .iter()
        .copied()
        .filter(|e| e.serving && !in_sets.contains(&(e.address, e.port)))
        .collect();
    EndpointSets {
        cluster: finish(cluster),
        local: finish(local),
        kept_for_flows: finish(kept),
        topology,
    }
}

/// Rule 16, as kube-proxy decides it from the hints alone (whatever the Service's
/// `trafficDistribution` or annotations say): node hints when every ready endpoint carries
/// some and one names this node; else zone hints when every ready endpoint carries some
/// and one names this node's zone (a node without a zone matches none); else none.
fn topology_from_hints(ready: &[&SliceEndpoint], node: &NodeInfo) -> TopologyMode {
    let usable = |hints: fn(&SliceEndpoint) -> Option<&Vec<String>>, want: Option<&str>| {
        let all_hinted = ready
            .iter()
            .all(|e| hints(e).is_some_and(|h| !h.is_empty()));
        let any_here = want.is_some_and(|want| {
            ready
                .iter()
                .any(|e| hints(e).is_some_and(|h| h.iter().any(|n| n == want)))
        });
        all_hinted && any_here
    };
    if usable(|e| e.node_hints.as_ref(), Some(node.name.as_str())) {
        TopologyMode::PreferSameNode
    } else if usable(|e| e.zone_hints.as_ref(), node.zone.as_deref()) {
        TopologyMode::PreferSameZone
    } else {
        TopologyMode::None
    }
}

/// Whether a ready endpoint is in the Cluster set under `mode` (rule 16).
fn hinted_for(e: &SliceEndpoint, mode: TopologyMode, node: &NodeInfo) -> bool {
    let names = |hints: &Option<Vec<String>>, want: Option<&str>| {
        want.is_some_and(|w| hints.iter().flatten().any(|n| n == w))
    };
    match mode {
        TopologyMode::None => true,
        TopologyMode::PreferSameNode => names(&e.node_hints, Some(node.name.as_str())),
        TopologyMode::PreferSameZone => names(&e.zone_hints, node.zone.as_deref()),
    }
}

/// Rule 19: (UDP frontend address, port, endpoint) triples whose endpoint was in use
/// before and is no longer serving the frontend after; the datapath should forget flows on
/// them (kube-proxy clears their conntrack entries) so clients do not keep sending into a
/// hole. Endpoints that are still serving (e.g. terminating) keep their flows.
pub fn stale_udp_endpoints(
    before: &KubeDesiredState,
    after: &KubeDesiredState,
) -> Vec<(IpAddr, u16, IpAddr)> {
    type ByFrontend = BTreeMap<(IpAddr, u16), BTreeSet<IpAddr>>;
    let mut used: ByFrontend = BTreeMap::new();
    for (_, port, fe) in before.frontends() {
        if fe.protocol != Protocol::Udp {
            continue;
        }
        let entry = used.entry((fe.address, fe.port)).or_default();
        for verdict in [fe.external, fe.internal] {
            if let Verdict::Forward(set) = verdict {
                entry.extend(
                    port.endpoints_for(IpFamily::of(fe.address), set)
                        .iter()
                        .map(|e| e.address),
                );
            }
        }
    }
    let mut serving: ByFrontend = BTreeMap::new();
    for (_, port, fe) in after.frontends() {
        if fe.protocol != Protocol::Udp {
            continue;
        }
        if let Some(sets) = port.endpoints.get(&IpFamily::of(fe.address)) {
            serving.entry((fe.address, fe.port)).or_default().extend(
                sets.cluster
                    .iter()
                    .chain(&sets.local)
                    .chain(&sets.kept_for_flows)
                    .filter(|e| e.serving)
                    .map(|e| e.address),
            );
        }
    }
    let mut stale = Vec::new();
    for ((addr, port), endpoints) in used {
        let still = serving.get(&(addr, port));
        for ep in endpoints {
            if !still.is_some_and(|s| s.contains(&ep)) {
                stale.push((addr, port, ep));
            }
        }
    }
    stale
}
