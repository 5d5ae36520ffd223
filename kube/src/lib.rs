//! ferrolb's Kubernetes source: Services, EndpointSlices and this node's Node from the API
//! into desired state, following kube-proxy's rules (`docs/kube-proxy-semantics.md`).
//!
//! - [`rules`]: pure; objects in, [`rules::KubeDesiredState`] out (everything kube-proxy
//!   would program on this node, per service port and frontend address).
//! - [`projection`]: pure; the part of that state today's datapath can program, as an
//!   [`lb_model::DesiredState`], and a report of what it cannot.
//! - [`backend_side`]: pure; the translations this node applies to encapsulated packets
//!   for its own endpoints (destination address and target port), and their replies.
//! - [`socket_side`]: pure; the target port of every endpoint of every internal-scope
//!   frontend, for the socket programs.
//! - [`watch`]: kube-rs watchers feeding whole-state snapshots to the daemon.
//! - [`metrics`]: the source's metrics, in an [`lb_telemetry::metrics::Registry`].
//! - `fake_api` (feature `fake-api`): a stand-in API server and real-shaped objects for
//!   tests.
//!
//! The node-local HTTP servers (health, metrics, healthCheckNodePorts) live in
//! `lb-telemetry`; [`rules::HealthCheckSpec`] is what the healthCheckNodePort servers serve.

pub mod backend_side;
#[cfg(feature = "fake-api")]
pub mod fake_api;
pub mod lenient;
pub mod metrics;
pub mod projection;
pub mod rules;
pub mod socket_side;
pub mod watch;

pub use projection::{to_datapath, ProjectionReport};
pub use rules::{build, KubeDesiredState, NodeConfig};
pub use watch::{spawn, DesiredStateUpdate, SourceOptions, WATCHED_RESOURCES};
