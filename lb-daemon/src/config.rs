//! The bare-metal configuration file: YAML in, `DesiredState` out, or an error that names
//! the line or the field at fault. Parsing and validation are pure.

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
    #[serde(default)]
    services: Vec<ServiceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsFile {
    flow_hash_seed: Option<u32>,
    maglev_seed: Option<u32>,
    max_table_size: Option<u32>,
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

/// [`load`], with the services' health checks.
pub fn load_with_health(
    path: &std::path::Path,
) -> Result<(DesiredState, HealthChecks), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_with_health(&text)
}

/// [`parse`], with the services' health checks by frontend.
pub fn parse_with_health(text: &str) -> Result<(DesiredState, HealthChecks), ConfigError> {
    let file: ConfigFile = yaml_serde::from_str(text)?;
    let settings = settings(file.settings)?;
    let mut services = BTreeMap::new();
    let mut checks = HealthChecks::new();
    let mut names = BTreeSet::new();
    for (i, mut svc) in file.services.into_iter().enumerate() {
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
    Ok((
        DesiredState {
            services,
            rejecting: Default::default(),
            settings,
        },
        checks,
    ))
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
    Ok(settings)
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
    if svc.vip.is_unspecified() || svc.vip.is_multicast() || is_broadcast(svc.vip) {
        return Err(invalid(
            format!("{field}.vip"),
            format!("{} cannot be a service address", svc.vip),
        ));
    }
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
        None => maglev::choose_table_size(active.max(1), settings.max_table_size),
    };
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
        if be.address.is_unspecified() || be.address.is_multicast() || is_broadcast(be.address) {
            return Err(invalid(
                format!("{bfield}.address"),
                format!("{} cannot be a backend address", be.address),
            ));
        }
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

fn is_broadcast(addr: IpAddr) -> bool {
    matches!(addr, IpAddr::V4(v4) if v4.is_broadcast())
}

/// The configuration the demo runs with when none is given.
pub const DEMO_CONFIG: &str = include_str!("../demo.yaml");

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
mod tests {
    use super::*;

    #[test]
    fn translations_parse_and_bad_ones_say_why() {
        let t = parse_translation("198.18.100.1:80/tcp=198.18.0.11:8080").unwrap();
        assert_eq!(t.frontend.to_string(), "198.18.100.1:80/tcp");
        assert_eq!(t.endpoint, "198.18.0.11".parse::<IpAddr>().unwrap());
        assert_eq!(t.target_port, 8080);
        let any = parse_translation("0.0.0.0:30080/udp=198.18.0.11:53").unwrap();
        assert!(any.frontend.vip.is_unspecified());
        let v6 = parse_translation("[2001:db8::1]:80/tcp=[2001:db8::11]:8080").unwrap();
        assert_eq!(v6.target_port, 8080);
        for (text, says) in [
            ("198.18.100.1:80/tcp", "FRONTEND=ENDPOINT:PORT"),
            ("198.18.100.1:80=198.18.0.11:8080", "protocol"),
            ("198.18.100.1:80/sctp=198.18.0.11:8080", "sctp"),
            ("198.18.100.1/tcp=198.18.0.11:8080", "frontend"),
            ("198.18.100.1:80/tcp=198.18.0.11", "endpoint"),
            ("198.18.100.1:0/tcp=198.18.0.11:80", "port 0"),
            ("198.18.100.1:80/tcp=198.18.0.11:0", "port 0"),
            ("198.18.100.1:80/tcp=[2001:db8::11]:80", "family"),
            ("198.18.100.1:80/tcp=0.0.0.0:80", "real address"),
            ("198.18.100.1:80/tcp=198.18.0.11:65536", "endpoint"),
        ] {
            let err = parse_translation(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    const GOOD: &str = "
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    backends:
      - address: 198.18.0.12
      - address: 198.18.0.11
        weight: 3
  - name: dns
    vip: 198.18.100.1
    port: 53
    protocol: udp
    table_size: 251
    backends: []
";

    #[test]
    fn parses_services_and_sorts_backends() {
        let state = parse(GOOD).unwrap();
        assert_eq!(state.services.len(), 2);
        let web = state.services.values().find(|s| s.name == "web").unwrap();
        assert_eq!(web.backends[0].address.to_string(), "198.18.0.11");
        assert_eq!(web.backends[0].weight, 3);
        assert_eq!(web.backends[1].weight, 1);
        assert_eq!(web.table_size, maglev::choose_table_size(2, 65_537));
        let dns = state.services.values().find(|s| s.name == "dns").unwrap();
        assert_eq!(dns.table_size, 251);
        assert!(dns.backends.is_empty());
    }

    #[test]
    fn demo_config_is_valid() {
        let state = parse(DEMO_CONFIG).unwrap();
        assert!(!state.services.is_empty());
    }

    fn error_of(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let msg = error_of("services:\n  - name: a\n    vip: 198.18.0.1\n    port: [\n");
        assert!(msg.contains("line"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            ("port: 0", "services[0].port"),
            ("port: 70000", "port"),
            ("vip: 300.1.1.1", "vip"),
            ("protocol: sctp", "protocol"),
            ("table_size: 1000", "services[0].table_size"),
            ("colour: blue", "colour"),
        ];
        for (line, field) in cases {
            let key = line.split(':').next().unwrap();
            let mut fields = vec!["name: a", "vip: 198.18.100.1", "port: 80", "protocol: tcp"];
            fields.retain(|f| !f.starts_with(key));
            fields.push(line);
            let text = format!("services:\n  - {}\n", fields.join("\n    "));
            let msg = error_of(&text);
            assert!(msg.contains(field), "{line}: {msg}");
        }
    }

    #[test]
    fn session_affinity_takes_a_timeout_in_kubernetes_range() {
        let with = |affinity: &str| {
            format!("services:\n  - {{name: a, vip: 198.18.100.1, port: 80, protocol: tcp{affinity}}}\n")
        };
        let timeout = |text: &str| {
            parse(text)
                .unwrap()
                .services
                .values()
                .next()
                .unwrap()
                .affinity_timeout_s
        };
        assert_eq!(timeout(&with("")), None);
        assert_eq!(timeout(&with(", session_affinity: {}")), Some(10_800));
        assert_eq!(
            timeout(&with(", session_affinity: {timeout_seconds: 30}")),
            Some(30)
        );
        for bad in ["0", "86401"] {
            let msg = error_of(&with(&format!(
                ", session_affinity: {{timeout_seconds: {bad}}}"
            )));
            assert!(
                msg.contains("services[0].session_affinity.timeout_seconds"),
                "{msg}"
            );
            assert!(msg.contains("outside 1-86400"), "{msg}");
        }
        let msg = error_of(&with(", session_affinity: {timeout: 5}"));
        assert!(msg.contains("timeout"), "{msg}");
    }

    #[test]
    fn duplicates_are_rejected() {
        let dup_backend = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, backends: [{address: 198.18.0.1}, {address: 198.18.0.1}]}
";
        assert!(error_of(dup_backend).contains("services[0].backends[1].address"));
        let dup_frontend = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp}
  - {name: b, vip: 198.18.100.1, port: 80, protocol: tcp}
";
        assert!(error_of(dup_frontend).contains("already served by service \"a\""));
        let dup_name = "
services:
  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp}
  - {name: a, vip: 198.18.100.1, port: 81, protocol: tcp}
";
        assert!(error_of(dup_name).contains("services[1].name"));
    }

    #[test]
    fn source_ranges_parse_and_bad_ones_name_the_entry() {
        let ok = "services:\n  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, \
                  source_ranges: ['198.18.1.0/24', 198.18.0.10/32]}\n";
        let spec = parse(ok).unwrap().services.into_values().next().unwrap();
        let shown: Vec<String> = spec.source_ranges.iter().map(|r| r.to_string()).collect();
        assert_eq!(shown, ["198.18.0.10/32", "198.18.1.0/24"]);
        for (range, says) in [
            ("banana", "not ADDRESS/PREFIX-LENGTH"),
            ("198.18.1.0", "not ADDRESS/PREFIX-LENGTH"),
            ("198.18.1.0/255.255.255.0", "not ADDRESS/PREFIX-LENGTH"),
            ("198.18.1.0/33", "not a CIDR"),
            ("2001:db8::/32", "another address family"),
            ("198.18.1.7/24", "host bits set; the range is 198.18.1.0/24"),
        ] {
            let text = format!(
                "services:\n  - {{name: a, vip: 198.18.100.1, port: 80, protocol: tcp, \
                 source_ranges: ['198.18.9.0/24', '{range}']}}\n"
            );
            let err = error_of(&text);
            assert!(
                err.contains("services[0].source_ranges[1]") && err.contains(says),
                "{range}: {err}"
            );
        }
        let twice = "services:\n  - {name: a, vip: 198.18.100.1, port: 80, protocol: tcp, \
                     source_ranges: ['198.18.9.0/24', '198.18.9.0/24']}\n";
        assert!(error_of(twice).contains("listed twice"));
    }

    #[test]
    fn ipv6_services_parse_and_mixed_families_are_refused_clearly() {
        let v6 = "
services:
  - {name: a, vip: '2001:db8::1', port: 80, protocol: tcp,
     backends: [{address: '2001:db8::11'}, {address: '2001:db8::12'}]}
";
        let state = parse(v6).unwrap();
        let spec = state.services.values().next().unwrap();
        assert_eq!(spec.backends.len(), 2);
        let mixed = "
services:
  - {name: a, vip: '2001:db8::1', port: 80, protocol: tcp, backends: [{address: 198.18.0.11}]}
";
        let err = error_of(mixed);
        assert!(
            err.contains("services[0].backends[0].address")
                && err.contains("another address family"),
            "{err}"
        );
    }
}
