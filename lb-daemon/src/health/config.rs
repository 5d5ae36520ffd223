//! The `health:` block of a service in the config file: how its backends are checked.
//! Parsing and validation are pure; the file's parser (`config`) calls [`validate`] for
//! every service that has the block and keeps the result beside the desired state.

use std::time::Duration;

use serde::Deserialize;

/// A value of the `health:` block at fault.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {message}")]
pub struct HealthConfigError {
    pub field: String,
    pub message: String,
}

/// The block as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthFile {
    #[serde(rename = "type")]
    kind: ProbeKind,
    /// Default: the service's port.
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    interval_ms: Option<u64>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    rise: Option<u32>,
    #[serde(default)]
    fall: Option<u32>,
    /// HTTP only.
    #[serde(default)]
    path: Option<String>,
    /// HTTP only.
    #[serde(default)]
    expect_status: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProbeKind {
    Tcp,
    Http,
}

/// What one check does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Probe {
    /// A TCP connection is accepted.
    Tcp,
    /// `GET path` answers with `expect_status`.
    Http { path: String, expect_status: u16 },
}

/// A validated check of every backend of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub probe: Probe,
    /// The backend's port the check connects to.
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend back.
    pub rise: u32,
    /// Consecutive failures that take an up backend out.
    pub fall: u32,
}

pub const DEFAULT_INTERVAL_MS: u64 = 1_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 500;
pub const DEFAULT_RISE: u32 = 2;
pub const DEFAULT_FALL: u32 = 3;
/// Below this a check loop is a load generator, not a health check.
pub const MIN_INTERVAL_MS: u64 = 50;
/// Counts above this would take minutes to act on at the longest sane interval.
pub const MAX_COUNT: u32 = 100;
pub const MAX_INTERVAL_MS: u64 = 3_600_000;

/// Validates the block at `field` (e.g. `services[0].health`) of a service on `port`.
pub fn validate(
    field: &str,
    file: HealthFile,
    service_port: u16,
) -> Result<HealthCheck, HealthConfigError> {
    let bad = |name: &str, message: String| HealthConfigError {
        field: format!("{field}.{name}"),
        message,
    };
    let port = file.port.unwrap_or(service_port);
    if port == 0 {
        return Err(bad("port", "must be 1-65535".into()));
    }
    let interval_ms = file.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS);
    if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&interval_ms) {
        return Err(bad(
            "interval_ms",
            format!("must be {MIN_INTERVAL_MS}-{MAX_INTERVAL_MS}"),
        ));
    }
    let timeout_ms = file
        .timeout_ms
        .unwrap_or(DEFAULT_TIMEOUT_MS.min(interval_ms));
    if timeout_ms == 0 || timeout_ms > interval_ms {
        return Err(bad(
            "timeout_ms",
            format!("must be 1-{interval_ms} (at most the interval, so checks never overlap)"),
        ));
    }
    let count = |name: &str, value: Option<u32>, default: u32| match value.unwrap_or(default) {
        n @ 1..=MAX_COUNT => Ok(n),
        _ => Err(bad(name, format!("must be 1-{MAX_COUNT}"))),
    };
    let rise = count("rise", file.rise, DEFAULT_RISE)?;
    let fall = count("fall", file.fall, DEFAULT_FALL)?;
    let probe = match file.kind {
        ProbeKind::Tcp => {
            if file.path.is_some() || file.expect_status.is_some() {
                return Err(bad(
                    "type",
                    "path and expect_status belong to type: http".into(),
                ));
            }
            Probe::Tcp
        }
        ProbeKind::Http => {
            let path = file.path.unwrap_or_else(|| "/".into());
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(
                    "path",
                    format!("{path:?} is not an absolute path without spaces"),
                ));
            }
            let expect_status = file.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err(bad("expect_status", "must be 100-599".into()));
            }
            Probe::Http {
                path,
                expect_status,
            }
        }
    };
    Ok(HealthCheck {
        probe,
        port,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_millis(timeout_ms),
        rise,
        fall,
    })
}

impl std::fmt::Display for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.probe {
            Probe::Tcp => write!(f, "tcp :{}", self.port)?,
            Probe::Http {
                path,
                expect_status,
            } => write!(f, "http :{}{path} = {expect_status}", self.port)?,
        }
        write!(
            f,
            " every {:?} (timeout {:?}, rise {}, fall {})",
            self.interval, self.timeout, self.rise, self.fall
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<HealthCheck, HealthConfigError> {
        let file: HealthFile = yaml_serde::from_str(yaml).expect("syntax");
        validate("services[0].health", file, 80)
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let c = check("{type: tcp}").unwrap();
        assert_eq!(c.probe, Probe::Tcp);
        assert_eq!(c.port, 80);
        assert_eq!(c.interval, Duration::from_millis(DEFAULT_INTERVAL_MS));
        assert_eq!((c.rise, c.fall), (DEFAULT_RISE, DEFAULT_FALL));
        let h = check("{type: http, port: 8081, path: /healthz, expect_status: 204, interval_ms: 200, timeout_ms: 100, rise: 1, fall: 2}").unwrap();
        assert_eq!(
            h.probe,
            Probe::Http {
                path: "/healthz".into(),
                expect_status: 204
            }
        );
        assert_eq!(h.port, 8081);
        assert_eq!(h.timeout, Duration::from_millis(100));
        // A short interval caps the default timeout.
        let short = check("{type: tcp, interval_ms: 100}").unwrap();
        assert_eq!(short.timeout, Duration::from_millis(100));
    }

    #[test]
    fn bad_values_name_the_field() {
        for (yaml, field) in [
            ("{type: tcp, port: 0}", "services[0].health.port"),
            ("{type: tcp, interval_ms: 10}", "interval_ms"),
            (
                "{type: tcp, interval_ms: 100, timeout_ms: 200}",
                "timeout_ms",
            ),
            ("{type: tcp, timeout_ms: 0}", "timeout_ms"),
            ("{type: tcp, rise: 0}", "rise"),
            ("{type: tcp, fall: 1000}", "fall"),
            ("{type: tcp, path: /x}", "type"),
            ("{type: http, path: nope}", "path"),
            ("{type: http, path: '/a b'}", "path"),
            ("{type: http, expect_status: 42}", "expect_status"),
        ] {
            let err = check(yaml).unwrap_err().to_string();
            assert!(err.contains(field), "{yaml}: {err}");
        }
        assert!(yaml_serde::from_str::<HealthFile>("{type: icmp}").is_err());
        assert!(yaml_serde::from_str::<HealthFile>("{type: tcp, colour: blue}").is_err());
    }
}
