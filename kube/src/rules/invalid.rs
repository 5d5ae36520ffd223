//! What the rules skip and why: an invalid object, or an invalid part of one, never
//! affects other Services; it is left out and reported as a [`Skipped`] entry (counted by
//! reason in the metrics). Applies to every rule of `docs/kube-proxy-semantics.md`.

use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;

/// Why (part of) an object was skipped. One variant per reason, so the metrics can count
/// by [`InvalidObject::reason`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
pub enum InvalidObject {
    #[error("{field}: {value:?} is not an IP address")]
    BadAddress { field: String, value: String },
    #[error("{field}: {value} is not a port (1-65535)")]
    BadPort { field: String, value: i64 },
    #[error("{field}: protocol {value:?} is not TCP, UDP or SCTP")]
    BadProtocol { field: String, value: String },
    #[error("{field}: port {key} is defined twice")]
    DuplicatePort { field: String, key: String },
    #[error("{field}: {value:?} is not a CIDR")]
    BadCidr { field: String, value: String },
    #[error("{field}: {value} is out of range, using {used}")]
    BadAffinityTimeout {
        field: String,
        value: i64,
        used: u32,
    },
    #[error("{count} endpoints exceed the limit of {max}")]
    TooManyEndpoints { count: usize, max: usize },
    #[error("addressType {value:?} is not IPv4 or IPv6")]
    UnsupportedAddressType { value: String },
    #[error("{field}: {value} does not match the slice's addressType {address_type}")]
    WrongFamily {
        field: String,
        value: IpAddr,
        address_type: String,
    },
    #[error("object without a name")]
    Unnamed,
    #[error("object does not parse: {error}")]
    Malformed { error: String },
}

impl InvalidObject {
    /// Stable label for metrics (`reason="..."`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadAddress { .. } => "bad_address",
            Self::BadPort { .. } => "bad_port",
            Self::BadProtocol { .. } => "bad_protocol",
            Self::DuplicatePort { .. } => "duplicate_port",
            Self::BadCidr { .. } => "bad_cidr",
            Self::BadAffinityTimeout { .. } => "bad_affinity_timeout",
            Self::TooManyEndpoints { .. } => "too_many_endpoints",
            Self::UnsupportedAddressType { .. } => "unsupported_address_type",
            Self::WrongFamily { .. } => "wrong_family",
            Self::Unnamed => "unnamed",
            Self::Malformed { .. } => "malformed",
        }
    }
}

/// One skipped object or part of one, with the object it came from (`Kind ns/name`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub object: String,
    pub problem: InvalidObject,
}

/// The canonical order of [`super::KubeDesiredState::skipped`], so states built in different
/// orders compare equal.
pub fn sort_skipped(skipped: &mut [Skipped]) {
    skipped.sort_by_cached_key(|s| (s.object.clone(), s.problem.to_string()));
}

/// `Kind ns/name`, for warnings.
pub(crate) fn object_id(kind: &str, meta: &ObjectMeta) -> String {
    format!(
        "{kind} {}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

/// The problems found while building one Service (its own, and those of its slices), in
/// the order found.
pub(crate) struct Problems {
    object: String,
    pub(crate) found: Vec<Skipped>,
}

impl Problems {
    pub(crate) fn new(object: String) -> Self {
        Self {
            object,
            found: Vec::new(),
        }
    }

    /// A problem of the Service itself.
    pub(crate) fn skip(&mut self, problem: InvalidObject) {
        self.found.push(Skipped {
            object: self.object.clone(),
            problem,
        });
    }
}
