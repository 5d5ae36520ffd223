//! The bare-metal configuration file: YAML in, `DesiredState` out, or an error that names
//! the line or the field at fault. Parsing and validation are pure.
//!
//! A file that would remove every service must say so: an empty file, a comments-only file
//! and a missing or null `services` are errors, and `services: []` needs `allow_empty: true`
//! beside it. An editor's or a tool's half-done write therefore never reads as "serve
//! nothing".

mod addresses;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use lb_hashing::maglev;
use serde::Deserialize;

use crate::health::{self, HealthChecks};
use lb_model::{
    BackendSpec, DesiredState, Frontend, IpNetwork, LocalTranslation, Protocol, Scope, ServiceSpec,
    Settings, DEFAULT_AFFINITY_TIMEOUT_S, MAX_AFFINITY_TIMEOUT_S,
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// yaml_serde's message already carries the field path, line and column.
    #[error("invalid YAML: {0}")]
    Syntax(#[from] yaml_serde::Error),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error(
        "the file holds no YAML document (empty or only comments); to serve no services, \
         write `services: []` and `allow_empty: true`"
    )]
    Empty,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    settings: Option<SettingsFile>,
    /// Required: a file without it (or with `services:` and nothing under it) is an error.
    #[serde(default)]
    services: Option<Vec<ServiceFile>>,
    /// Must be true for an empty `services: []` to be applied.
    #[serde(default)]
    allow_empty: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    flow_hash_seed: Option<u32>,
    maglev_seed: Option<u32>,
    max_table_size: Option<u32>,
    /// VLAN ids whose tagged frames are balanced besides untagged ones.
    #[serde(default)]
    vlans: Vec<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    name: String,
    vip: IpAddr,
    port: u16,
    protocol: Protocol,
    #[serde(default)]
    table_size: Option<u32>,
    #[serde(default)]
    backends: Vec<BackendFile>,
    /// Active health checks of the backends (`crate::health`).
    #[serde(default)]
    health: Option<health::HealthFile>,
    /// Only these sources may open flows (`loadBalancerSourceRanges`); none: everybody.
    #[serde(default)]
    source_ranges: Vec<String>,
    /// `session_affinity: { timeout_seconds: N }`: a client address keeps its backend.
    #[serde(default)]
    session_affinity: Option<SessionAffinityFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SessionAffinityFile {
    #[serde(default)]
    timeout_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendFile {
    address: IpAddr,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// Largest weight accepted; keeps weight arithmetic far from overflow.
pub const MAX_WEIGHT: u32 = 1_000_000;

pub fn load(path: &std::path::Path) -> Result<DesiredState, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<DesiredState, ConfigError> {
    parse_with_health(text).map(|(desired, _)| desired)
}

/// [`parse`], with the services' health checks by frontend.
pub fn parse_with_health(text: &str) -> Result<(DesiredState, HealthChecks), ConfigError> {
    if !holds_a_document(text) {
        return Err(ConfigError::Empty);
    }
    let file: ConfigFile = yaml_serde::from_str(text)?;
    let settings = settings(file.settings)?;
    let list = file.services.ok_or_else(|| {
        invalid(
            "services",
            "missing or null; list the services (to serve none, write `services: []` and \
             `allow_empty: true`)",
        )
    })?;
    if list.is_empty() && !file.allow_empty {
        return Err(invalid(
            "services",
            "the list is empty, which would remove every service; add `allow_empty: true` \
             if that is what you mean",
        ));
    }
    let mut services = BTreeMap::new();
    let mut checks = HealthChecks::new();
    let mut names = BTreeSet::new();
    for (i, mut svc) in list.into_iter().enumerate() {
        let field = format!("services[{i}]");
        if !names.insert(svc.name.clone()) {
            return Err(invalid(
                format!("{field}.name"),
                format!("service name {:?} is used twice", svc.name),
            ));
        }
        let health = svc.health.take();
        let (frontend, spec) = service(&field, svc, &settings)?;
        if let Some(h) = health {
            let check = health::config::validate(&format!("{field}.health"), h, frontend.port)
                .map_err(|e| invalid(e.field, e.message))?;
            checks.insert(frontend, check);
        }
        if let Some(other) = services.insert(frontend, Arc::new(spec)) {
            return Err(invalid(
                field.clone(),
                format!("{frontend} is already served by service {:?}", other.name),
            ));
        }
    }
    addresses::check_backends_are_not_vips(&services)?;
    Ok((
        DesiredState {
            services: services.into(),
            rejecting: Default::default(),
            settings,
        },
        checks,
    ))
}

/// Whether `text` has anything but blank lines, comments and YAML's document markers.
fn holds_a_document(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|line| !(line.is_empty() || line.starts_with('#') || line == "---" || line == "..."))
}

/// The settings every LB node must agree on, defaults where the file says nothing.
fn settings(file: Option<SettingsFile>) -> Result<Settings, ConfigError> {
    let mut settings = Settings::default();
    let Some(s) = file else {
        return Ok(settings);
    };
    if let Some(seed) = s.flow_hash_seed {
        settings.flow_hash_seed = seed;
    }
    if let Some(seed) = s.maglev_seed {
        settings.maglev_seed = seed;
    }
    if let Some(size) = s.max_table_size {
        maglev::validate_table_size(size)
            .map_err(|e| invalid("settings.max_table_size", e.to_string()))?;
        settings.max_table_size = size;
    }
    settings.allowed_vlans = allowed_vlans(&s.vlans)?;
    Ok(settings)
}

/// `settings.vlans`: distinct ids 1..=4094, at most `MAX_ALLOWED_VLANS` of them.
fn allowed_vlans(vlans: &[u16]) -> Result<lb_common::VlanList, ConfigError> {
    let mut list = [0; lb_common::MAX_ALLOWED_VLANS];
    if vlans.len() > list.len() {
        return Err(invalid(
            "settings.vlans",
            format!("at most {} VLAN ids, got {}", list.len(), vlans.len()),
        ));
    }
    for (i, &vid) in vlans.iter().enumerate() {
        if !(1..=4094).contains(&vid) {
            return Err(invalid(
                format!("settings.vlans[{i}]"),
                format!("VLAN id {vid} is outside 1..=4094"),
            ));
        }
        if vlans[..i].contains(&vid) {
            return Err(invalid(
                format!("settings.vlans[{i}]"),
                format!("VLAN id {vid} is listed twice"),
            ));
        }
        list[i] = vid;
    }
    Ok(list)
}

/// One service entry (at `field`), validated.
fn service(
    field: &str,
    svc: ServiceFile,
    settings: &Settings,
) -> Result<(Frontend, ServiceSpec), ConfigError> {
    if svc.name.is_empty() {
        return Err(invalid(format!("{field}.name"), "must not be empty"));
    }
    if svc.port == 0 {
        return Err(invalid(format!("{field}.port"), "must be 1-65535"));
    }
    addresses::check_vip(&format!("{field}.vip"), svc.vip)?;
    let backends = backends(field, &svc)?;
    let source_ranges = source_ranges(field, &svc)?;
    let active = backends.iter().filter(|b| b.weight > 0).count();
    let table_size = match svc.table_size {
        Some(size) => {
            maglev::validate_table_size(size)
                .map_err(|e| invalid(format!("{field}.table_size"), e.to_string()))?;
            if (size as usize) < active {
                return Err(invalid(
                    format!("{field}.table_size"),
                    format!("{size} slots cannot hold {active} backends"),
                ));
            }
            size
        }
        None => settings.table_size_for(active),
    };
    if active > table_size as usize {
        return Err(invalid(
            format!("{field}.backends"),
            format!(
                "{active} active backends do not fit a Maglev table of {table_size} slots \
                 (raise settings.max_table_size or set table_size)"
            ),
        ));
    }
    let frontend = Frontend {
        vip: svc.vip,
        port: svc.port,
        protocol: svc.protocol,
        scope: Scope::External,
    };
    let affinity_timeout_s = affinity_timeout(field, svc.session_affinity.as_ref())?;
    let spec = ServiceSpec {
        name: svc.name,
        backends,
        table_size,
        reject: false,
        source_ranges,
        affinity_timeout_s,
    };
    Ok((frontend, spec))
}

/// A service entry's source ranges: each `address/prefix-length` of the VIP's family,
/// without host bits, once.
fn source_ranges(field: &str, svc: &ServiceFile) -> Result<Vec<IpNetwork>, ConfigError> {
    let mut ranges = Vec::with_capacity(svc.source_ranges.len());
    for (j, text) in svc.source_ranges.iter().enumerate() {
        let bad = |message: String| invalid(format!("{field}.source_ranges[{j}]"), message);
        let range: IpNetwork = match text.split_once('/') {
            Some((_, len)) if !len.is_empty() && len.bytes().all(|b| b.is_ascii_digit()) => text
                .parse()
                .map_err(|e| bad(format!("{text:?} is not a CIDR: {e}")))?,
            _ => return Err(bad(format!("{text:?} is not ADDRESS/PREFIX-LENGTH"))),
        };
        if range.is_ipv4() != svc.vip.is_ipv4() {
            return Err(bad(format!(
                "{range} is of another address family than the VIP {}",
                svc.vip
            )));
        }
        if range.ip() != range.network() {
            return Err(bad(format!(
                "{range} has host bits set; the range is {}/{}",
                range.network(),
                range.prefix()
            )));
        }
        if ranges.contains(&range) {
            return Err(bad(format!("{range} is listed twice")));
        }
        ranges.push(range);
    }
    Ok(lb_model::source_ranges(ranges))
}

/// The timeout of a service's session affinity: kube-proxy's default when the entry gives
/// none, and Kubernetes' range (1 second to 1 day) otherwise.
fn affinity_timeout(
    field: &str,
    affinity: Option<&SessionAffinityFile>,
) -> Result<Option<u32>, ConfigError> {
    let Some(affinity) = affinity else {
        return Ok(None);
    };
    match affinity.timeout_seconds {
        None => Ok(Some(DEFAULT_AFFINITY_TIMEOUT_S)),
        Some(t) if (1..=MAX_AFFINITY_TIMEOUT_S).contains(&t) => Ok(Some(t)),
        Some(t) => Err(invalid(
            format!("{field}.session_affinity.timeout_seconds"),
            format!("{t} is outside 1-{MAX_AFFINITY_TIMEOUT_S} seconds"),
        )),
    }
}

/// A service entry's backends, validated and sorted by address.
fn backends(field: &str, svc: &ServiceFile) -> Result<Vec<BackendSpec>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut backends = Vec::with_capacity(svc.backends.len());
    for (j, be) in svc.backends.iter().enumerate() {
        let bfield = format!("{field}.backends[{j}]");
        if be.address.is_ipv4() != svc.vip.is_ipv4() {
            return Err(invalid(
                format!("{bfield}.address"),
                format!(
                    "{} is of another address family than the VIP {}: IPIP carries IPv4 \
                     to IPv4 backends and IP6IP6 IPv6 to IPv6 backends",
                    be.address, svc.vip
                ),
            ));
        }
        addresses::check_backend(&format!("{bfield}.address"), be.address)?;
        if !seen.insert(be.address) {
            return Err(invalid(
                format!("{bfield}.address"),
                format!("backend {} is listed twice", be.address),
            ));
        }
        if be.weight > MAX_WEIGHT {
            return Err(invalid(
                format!("{bfield}.weight"),
                format!("must be at most {MAX_WEIGHT}"),
            ));
        }
        backends.push(BackendSpec {
            address: be.address,
            weight: be.weight,
        });
    }
    backends.sort_by_key(|b| b.address);
    Ok(backends)
}

/// The configuration the demo runs with when none is given.
pub const DEMO_CONFIG: &str = include_str!("../../demo.yaml");

/// Parses `FRONTEND=ENDPOINT:PORT` (`198.18.100.1:80/tcp=198.18.0.11:8080`; IPv6 in
/// brackets) into a backend-side translation.
pub fn parse_translation(text: &str) -> Result<LocalTranslation, ConfigError> {
    let bad = |message: &str| invalid(text, message);
    let (frontend, endpoint) = text
        .split_once('=')
        .ok_or_else(|| bad("expected FRONTEND=ENDPOINT:PORT"))?;
    let (address, protocol) = frontend
        .rsplit_once('/')
        .ok_or_else(|| bad("the frontend needs a protocol, as in 198.18.100.1:80/tcp"))?;
    let protocol = match protocol {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => return Err(bad(&format!("protocol {other:?} is neither tcp nor udp"))),
    };
    let frontend: std::net::SocketAddr = address
        .parse()
        .map_err(|e| bad(&format!("frontend {address:?}: {e}")))?;
    let endpoint: std::net::SocketAddr = endpoint
        .parse()
        .map_err(|e| bad(&format!("endpoint {endpoint:?}: {e}")))?;
    if frontend.port() == 0 || endpoint.port() == 0 {
        return Err(bad("port 0 is not a port"));
    }
    if frontend.is_ipv4() != endpoint.is_ipv4() {
        return Err(bad("frontend and endpoint must be of one address family"));
    }
    if endpoint.ip().is_unspecified() {
        return Err(bad("the endpoint needs a real address"));
    }
    Ok(LocalTranslation {
        frontend: Frontend {
            vip: frontend.ip(),
            port: frontend.port(),
            protocol,
            scope: Scope::External,
        },
        endpoint: endpoint.ip(),
        target_port: endpoint.port(),
    })
}

#[cfg(test)]
mod tests;
