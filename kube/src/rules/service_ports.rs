//! A Service's ports and per-Service settings (rules 4, 15 and 17 of
//! `docs/kube-proxy-semantics.md`): which `spec.ports` entries are served, the
//! healthCheckNodePort of an eTP=Local LoadBalancer, and ClientIP session affinity.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::ServiceSpec;

use super::{frontends::TrafficPolicy, invalid::Problems, InvalidObject, Protocol};

/// Kubernetes' default and upper bound for `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECONDS: u32 = 10_800;
pub const MAX_AFFINITY_TIMEOUT_SECONDS: u32 = 86_400;

/// A port number: 1 to 65535.
pub(crate) fn valid_port(value: i64) -> Option<u16> {
    u16::try_from(value).ok().filter(|p| *p != 0)
}

/// One served entry of `spec.ports`.
pub(crate) struct ServicePortSpec {
    /// "" for an unnamed port.
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) port: u16,
    pub(crate) node_port: Option<u16>,
}

/// Rule 4: (name, protocol) identifies a port; an entry with a bad protocol or port, or a
/// duplicate key or duplicate (port, protocol), is skipped, keeping the first.
pub(crate) fn served_ports(spec: &ServiceSpec, problems: &mut Problems) -> Vec<ServicePortSpec> {
    let mut ports = Vec::new();
    let mut seen_keys = BTreeSet::new();
    let mut seen_numbers = BTreeSet::new();
    for (i, sp) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        let Some(protocol) = Protocol::parse(sp.protocol.as_deref()) else {
            problems.skip(InvalidObject::BadProtocol {
                field: format!("{field}.protocol"),
                value: sp.protocol.clone().unwrap_or_default(),
            });
            continue;
        };
        let Some(port) = valid_port(i64::from(sp.port)) else {
            problems.skip(InvalidObject::BadPort {
                field: format!("{field}.port"),
                value: i64::from(sp.port),
            });
            continue;
        };
        let name = sp.name.clone().unwrap_or_default();
        if !seen_keys.insert((name.clone(), protocol)) || !seen_numbers.insert((port, protocol)) {
            problems.skip(InvalidObject::DuplicatePort {
                field: field.clone(),
                key: format!("{name:?} {port}/{protocol}"),
            });
            continue;
        }
        let node_port = optional_port(sp.node_port, &format!("{field}.nodePort"), problems);
        ports.push(ServicePortSpec {
            name,
            protocol,
            port,
            node_port,
        });
    }
    ports
}

/// An optional port field: unset or 0 means none; out of range is skipped as none.
fn optional_port(value: Option<i32>, field: &str, problems: &mut Problems) -> Option<u16> {
    match value {
        None | Some(0) => None,
        Some(p) => {
            let port = valid_port(i64::from(p));
            if port.is_none() {
                problems.skip(InvalidObject::BadPort {
                    field: field.to_owned(),
                    value: i64::from(p),
                });
            }
            port
        }
    }
}

/// Rule 17: `Some(timeout seconds)` for `sessionAffinity: ClientIP`; a timeout out of range
/// is reported and replaced by the default.
pub(crate) fn session_affinity(spec: &ServiceSpec, problems: &mut Problems) -> Option<u32> {
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let configured = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds);
    Some(match configured {
        None => DEFAULT_AFFINITY_TIMEOUT_SECONDS,
        Some(t) if t > 0 && t as u32 <= MAX_AFFINITY_TIMEOUT_SECONDS => t as u32,
        Some(t) => {
            problems.skip(InvalidObject::BadAffinityTimeout {
                field: "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                value: i64::from(t),
                used: DEFAULT_AFFINITY_TIMEOUT_SECONDS,
            });
            DEFAULT_AFFINITY_TIMEOUT_SECONDS
        }
    })
}

/// Rule 15: only LoadBalancer Services with eTP Local have a healthCheckNodePort.
pub(crate) fn health_check_node_port(
    spec: &ServiceSpec,
    policy: &TrafficPolicy,
    problems: &mut Problems,
) -> Option<u16> {
    if !(policy.load_balancer && policy.external_local) {
        return None;
    }
    optional_port(
        spec.health_check_node_port,
        "spec.healthCheckNodePort",
        problems,
    )
}
