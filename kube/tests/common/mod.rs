//! Real-shaped Kubernetes JSON for the tests: objects as the API server returns them
//! (`kubectl get -o json` minus managedFields), built from a few parameters and patched
//! per test with JSON merge patches.
#![allow(dead_code)]

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use lb_kube::model::{self, KubeDesiredState, KubeService, NodeConfig, ServiceName};
use serde_json::{json, Value};

pub const NODE: &str = "node-a";

pub fn cfg() -> NodeConfig {
    NodeConfig {
        node_name: NODE.into(),
        ..NodeConfig::default()
    }
}

/// RFC 7386 merge patch.
pub fn patch(mut base: Value, patch: Value) -> Value {
    merge(&mut base, patch);
    base
}

fn merge(base: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !base.is_object() {
                *base = json!({});
            }
            let obj = base.as_object_mut().expect("object");
            for (k, v) in fields {
                if v.is_null() {
                    obj.remove(&k);
                } else {
                    merge(obj.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        other => *base = other,
    }
}

/// A ClusterIP Service with one TCP port `http` (port → targetPort 8080 unless patched).
pub fn service_json(name: &str, cluster_ip: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("0b7c7f34-1111-4c1e-9a1e-{:012x}", name.len()),
            "resourceVersion": "1001",
            "creationTimestamp": "2026-05-01T10:00:00Z",
            "labels": {"app": name}
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "internalTrafficPolicy": "Cluster",
            "sessionAffinity": "None",
            "selector": {"app": name},
            "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}]
        },
        "status": {"loadBalancer": {}}
    })
}

pub fn endpoint(address: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({
        "addresses": [address],
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
        "nodeName": node,
        "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("pod-{address}"),
                      "uid": "5e0f1a2b-0000-4000-8000-000000000001"},
        "zone": "zone-a"
    })
}

pub fn ready(address: &str, node: &str) -> Value {
    endpoint(address, node, true, true, false)
}

/// An EndpointSlice of `service` with port `http` on `port`.
pub fn slice_json(
    name: &str,
    service: &str,
    address_type: &str,
    port: i32,
    endpoints: Vec<Value>,
) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": "7d1e1f00-2222-4c1e-9a1e-000000000001",
            "resourceVersion": "2001",
            "generateName": format!("{service}-"),
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                 "uid": "0b7c7f34-1111-4c1e-9a1e-000000000001",
                                 "controller": true, "blockOwnerDeletion": true}]
        },
        "addressType": address_type,
        "endpoints": endpoints,
        "ports": [{"name": "http", "protocol": "TCP", "port": port}]
    })
}

pub fn node_json(name: &str, addresses: &[(&str, &str)], zone: &str) -> Value {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|(t, a)| json!({"type": t, "address": a}))
        .chain(std::iter::once(
            json!({"type": "Hostname", "address": name}),
        ))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "uid": "9a9a9a9a-3333-4c1e-9a1e-000000000001",
            "resourceVersion": "3001",
            "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}
        },
        "spec": {"podCIDR": "198.19.1.0/24", "podCIDRs": ["198.19.1.0/24"]},
        "status": {"addresses": addresses}
    })
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
    model::build(&services, &slices, node_obj.as_ref(), cfg)
}

pub fn get<'a>(state: &'a KubeDesiredState, name: &str) -> &'a KubeService {
    state
        .services
        .get(&ServiceName::new("default", name))
        .unwrap_or_else(|| panic!("service {name} missing; have {:?}", state.services.keys()))
}
