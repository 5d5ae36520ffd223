//! Real-shaped Kubernetes JSON: objects as the API server returns them (`kubectl get -o
//! json` minus managedFields), built from a few parameters and adjusted per test with JSON
//! merge patches. Namespaced objects live in `default`.

use serde_json::{json, Value};

/// RFC 7386 merge patch: objects merge, `null` removes, anything else (arrays too)
/// replaces.
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
            if let Some(obj) = base.as_object_mut() {
                for (k, v) in fields {
                    if v.is_null() {
                        obj.remove(&k);
                    } else {
                        merge(obj.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *base = other,
    }
}

/// A ClusterIP Service with one TCP port `http` (port 80 → targetPort 8080 unless
/// patched).
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

/// One endpoint of a slice, with its three conditions.
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

/// A ready, serving, not terminating endpoint.
pub fn ready(address: &str, node: &str) -> Value {
    endpoint(address, node, true, true, false)
}

/// A pod shutting down that still answers (ready=false, serving=true, terminating=true).
pub fn terminating(address: &str, node: &str) -> Value {
    endpoint(address, node, false, true, true)
}

/// An EndpointSlice of `service` with TCP port `http` on `port`.
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

/// A Node with `(type, address)` pairs (`InternalIP`, `ExternalIP`) and a zone label.
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
