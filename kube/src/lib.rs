//! ferrolb's Kubernetes source: Services, EndpointSlices and this node's Node from the API
//! into desired state, following kube-proxy's rules (`shared/kube-proxy-semantics.md`).
//!
//! - [`model`]: pure; objects in, [`model::KubeDesiredState`] out (everything kube-proxy
//!   would program on this node, per service port and frontend address).
//! - [`projection`]: pure; the part of that state today's datapath can program, as an
//!   [`lb_model::DesiredState`], and a report of what it cannot.
//! - [`backend_side`]: pure; the translations this node applies to encapsulated packets
//!   for its own endpoints (destination address and target port), and their replies.
//! - [`watch`]: kube-rs watchers feeding whole-state snapshots to the daemon.
//! - [`http`]: `/healthz`, `/livez`, healthCheckNodePort servers and the metrics server.
//! - [`metrics`]: a small Prometheus registry and the source's metrics.
//! - `fake_api` (feature `fake-api`): a stand-in API server and real-shaped objects for
//!   tests.

pub mod backend_side;
#[cfg(feature = "fake-api")]
pub mod fake_api;
pub mod http;
pub mod lenient;
pub mod metrics;
pub mod model;
pub mod projection;
pub mod watch;

pub use model::{build, KubeDesiredState, NodeConfig};
pub use projection::{to_datapath, ProjectionReport};
pub use watch::{spawn, DesiredStateUpdate, SourceOptions, WATCHED_RESOURCES};
