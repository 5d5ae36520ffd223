//! Fixtures for the tests: this node's configuration and Node, typed decoding and building
//! the rules' state. The real-shaped JSON builders live in `lb_kube::fake_api::objects`.
#![allow(dead_code)]

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
// Each test binary uses a different subset, as with the functions below.
#[allow(unused_imports)]
pub use lb_kube::fake_api::objects::{endpoint, node_json, patch, ready, service_json, slice_json};
use lb_kube::rules::{self, KubeDesiredState, KubeService, NodeConfig, ServiceName};
use serde_json::Value;

pub const NODE: &str = "node-a";

pub fn cfg() -> NodeConfig {
    NodeConfig {
        node_name: NODE.into(),
        ..NodeConfig::default()
    }
}

pub fn default_node() -> Value {
    node_json(NODE, &[("InternalIP", "198.18.0.10")], "zone-a")
}

pub fn svc(v: Value) -> Service {
    serde_json::from_value(v).expect("service JSON")
}
pub fn slice(v: Value) -> EndpointSlice {
    serde_json::from_value(v).expect("slice JSON")
}
pub fn node(v: Value) -> Node {
    serde_json::from_value(v).expect("node JSON")
}

/// Builds the state from JSON objects with the default node.
pub fn build(services: Vec<Value>, slices: Vec<Value>) -> KubeDesiredState {
    build_with(services, slices, Some(default_node()), &cfg())
}

pub fn build_with(
    services: Vec<Value>,
    slices: Vec<Value>,
    node_obj: Option<Value>,
    cfg: &NodeConfig,
) -> KubeDesiredState {
    let services: Vec<Service> = services.into_iter().map(svc).collect();
    let slices: Vec<EndpointSlice> = slices.into_iter().map(slice).collect();
    let node_obj = node_obj.map(node);
    rules::build(&services, &slices, node_obj.as_ref(), cfg)
}

pub fn get<'a>(state: &'a KubeDesiredState, name: &str) -> &'a KubeService {
    state
        .services
        .get(&ServiceName::new("default", name))
        .unwrap_or_else(|| {
            panic!(
                "service {name} missing; have {:?}",
                state.services.keys().collect::<Vec<_>>()
            )
        })
}
