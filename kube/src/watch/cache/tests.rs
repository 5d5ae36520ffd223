//! The cache on its own: events in, snapshots out, compared with the pure rules applied to
//! the same objects, and the set of Services each event makes the next snapshot recompute.

use k8s_openapi::{
    api::{
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::runtime::watcher::Event;
use serde_json::{json, Value};

use super::{Cache, Change};
use crate::{
    fake_api::objects::{node_json, patch, ready, service_json, slice_json},
    lenient::Lenient,
    rules::{self, InvalidObject, KubeDesiredState, NodeConfig, ServiceName},
};

const NODE: &str = "node-a";

fn cfg() -> NodeConfig {
    NodeConfig {
        node_name: NODE.into(),
        ..NodeConfig::default()
    }
}

fn node(address: &str) -> Value {
    node_json(NODE, &[("InternalIP", address)], "zone-a")
}

fn lenient<K: serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>>(
    v: Value,
) -> Lenient<K> {
    serde_json::from_value(v).expect("object JSON")
}

fn decoded<K>(event: Event<Value>) -> Box<Event<Lenient<K>>>
where
    K: serde::de::DeserializeOwned + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    Box::new(match event {
        Event::Apply(v) => Event::Apply(lenient(v)),
        Event::Delete(v) => Event::Delete(lenient(v)),
        Event::Init => Event::Init,
        Event::InitApply(v) => Event::InitApply(lenient(v)),
        Event::InitDone => Event::InitDone,
    })
}

fn service(event: Event<Value>) -> Change {
    Change::Service(decoded(event))
}
fn slice(event: Event<Value>) -> Change {
    Change::Slice(decoded(event))
}
fn node_event(event: Event<Value>) -> Change {
    Change::Node(decoded(event))
}

/// The initial list of one resource.
fn list(cache: &mut Cache, wrap: fn(Event<Value>) -> Change, objects: &[Value]) {
    cache.apply(wrap(Event::Init));
    for obj in objects {
        cache.apply(wrap(Event::InitApply(obj.clone())));
    }
    cache.apply(wrap(Event::InitDone));
}

/// A cache that has listed these objects and taken its first snapshot.
fn listed(services: &[Value], slices: &[Value], nodes: &[Value]) -> Cache {
    let mut cache = Cache::new(cfg());
    list(&mut cache, service, services);
    list(&mut cache, slice, slices);
    list(&mut cache, node_event, nodes);
    cache.snapshot();
    cache
}

fn web_slice(name: &str, addresses: &[&str]) -> Value {
    let eps = addresses.iter().map(|a| ready(a, NODE)).collect();
    slice_json(name, "web", "IPv4", 8080, eps)
}

/// What the pure rules make of the same objects.
fn expected(services: &[Value], slices: &[Value], node: Option<&Value>) -> KubeDesiredState {
    let services: Vec<Service> = services
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let slices: Vec<EndpointSlice> = slices
        .iter()
        .map(|v| serde_json::from_value(v.clone()).unwrap())
        .collect();
    let node: Option<Node> = node.map(|v| serde_json::from_value(v.clone()).unwrap());
    rules::build(&services, &slices, node.as_ref(), &cfg())
}

fn names(rebuilt: &[ServiceName]) -> Vec<&str> {
    rebuilt.iter().map(|n| n.name.as_str()).collect()
}

#[test]
fn synced_only_when_every_resource_has_listed() {
    let mut cache = Cache::new(cfg());
    list(&mut cache, service, &[service_json("web", "198.18.100.1")]);
    list(&mut cache, slice, &[]);
    assert!(!cache.synced());
    list(&mut cache, node_event, &[node("198.18.0.10")]);
    assert!(cache.synced());
}

#[test]
fn first_snapshot_equals_the_rules_and_rebuilds_every_service() {
    let services = [
        service_json("web", "198.18.100.1"),
        service_json("db", "198.18.100.2"),
    ];
    let slices = [web_slice("web-a", &["198.19.0.1"])];
    let nodes = [node("198.18.0.10")];
    let mut cache = Cache::new(cfg());
    list(&mut cache, service, &services);
    list(&mut cache, slice, &slices);
    list(&mut cache, node_event, &nodes);
    let (state, rebuilt) = cache.snapshot();
    assert_eq!(state, expected(&services, &slices, nodes.first()));
    assert_eq!(names(&rebuilt), ["db", "web"]);
    // Nothing happened since: nothing to recompute.
    assert!(cache.snapshot().1.is_empty());
}

#[test]
fn a_slice_event_recomputes_only_its_service() {
    let services = [
        service_json("web", "198.18.100.1"),
        service_json("db", "198.18.100.2"),
    ];
    let nodes = [node("198.18.0.10")];
    let mut cache = listed(&services, &[], &nodes);
    let slices = [web_slice("web-a", &["198.19.0.1", "198.19.0.2"])];
    cache.apply(slice(Event::Apply(slices[0].clone())));
    let (state, rebuilt) = cache.snapshot();
    assert_eq!(names(&rebuilt), ["web"]);
    assert_eq!(state, expected(&services, &slices, nodes.first()));
    cache.apply(slice(Event::Delete(slices[0].clone())));
    let (state, rebuilt) = cache.snapshot();
    assert_eq!(names(&rebuilt), ["web"]);
    assert_eq!(state, expected(&services, &[], nodes.first()));
}

#[test]
fn a_slice_moving_to_another_service_recomputes_both() {
    let services = [
        service_json("web", "198.18.100.1"),
        service_json("api", "198.18.100.3"),
    ];
    let nodes = [node("198.18.0.10")];
    let before = web_slice("shared", &["198.19.0.1"]);
    let mut cache = listed(&services, std::slice::from_ref(&before), &nodes);
    let after = patch(
        before,
        json!({"metadata": {"labels": {"kubernetes.io/service-name": "api"}}}),
    );
    cache.apply(slice(Event::Apply(after.clone())));
    let (state, rebuilt) = cache.snapshot();
    assert_eq!(names(&rebuilt), ["api", "web"]);
    assert_eq!(state, expected(&services, &[after], nodes.first()));
}

#[test]
fn only_a_node_change_the_rules_use_recomputes_every_service() {
    let services = [
        service_json("web", "198.18.100.1"),
        service_json("db", "198.18.100.2"),
    ];
    let mut cache = listed(&services, &[], &[node("198.18.0.10")]);
    // A label the rules do not read.
    let relabelled = patch(
        node("198.18.0.10"),
        json!({"metadata": {"labels": {"example.com/rack": "r7"}}}),
    );
    cache.apply(node_event(Event::Apply(relabelled)));
    assert!(cache.snapshot().1.is_empty());
    // A new address changes the NodePort addresses.
    let moved = node("198.18.0.11");
    cache.apply(node_event(Event::Apply(moved.clone())));
    let (state, rebuilt) = cache.snapshot();
    assert_eq!(names(&rebuilt), ["db", "web"]);
    assert_eq!(state, expected(&services, &[], Some(&moved)));
}

#[test]
fn a_node_that_does_not_parse_is_reported_and_the_node_taken_as_absent() {
    let services = [service_json("web", "198.18.100.1")];
    let mut cache = listed(&services, &[], &[node("198.18.0.10")]);
    let broken = patch(node("198.18.0.10"), json!({"spec": {"taints": "nope"}}));
    cache.apply(node_event(Event::Apply(broken)));
    let (state, rebuilt) = cache.snapshot();
    assert_eq!(names(&rebuilt), ["web"]);
    assert_eq!(state.node, expected(&services, &[], None).node);
    assert_eq!(state.skipped.len(), 1);
    assert_eq!(state.skipped[0].object, format!("Node /{NODE}"));
    assert!(matches!(
        state.skipped[0].problem,
        InvalidObject::Malformed { .. }
    ));
}

#[test]
fn a_broken_slice_is_reported_only_when_it_is_ours() {
    let services = [service_json("web", "198.18.100.1")];
    let mut cache = listed(&services, &[], &[node("198.18.0.10")]);
    let broken = patch(
        web_slice("web-a", &["198.19.0.1"]),
        json!({"endpoints": "nope"}),
    );
    cache.apply(slice(Event::Apply(broken.clone())));
    let (state, _) = cache.snapshot();
    assert_eq!(state.skipped.len(), 1);
    assert_eq!(state.skipped[0].object, "EndpointSlice default/web-a");
    // Handed to another proxy: not ours, not reported.
    let theirs = patch(
        broken,
        json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "other"}}}),
    );
    cache.apply(slice(Event::Apply(theirs)));
    assert!(cache.snapshot().0.skipped.is_empty());
}

#[test]
fn a_relist_drops_what_was_deleted_while_disconnected() {
    let services = [
        service_json("web", "198.18.100.1"),
        service_json("db", "198.18.100.2"),
    ];
    let nodes = [node("198.18.0.10")];
    let slices = [web_slice("web-a", &["198.19.0.1"])];
    let mut cache = listed(&services, &slices, &nodes);
    // After a 410 Gone both come back without `db` and without the slice.
    list(&mut cache, service, &services[..1]);
    list(&mut cache, slice, &[]);
    let (state, rebuilt) = cache.snapshot();
    assert_eq!(names(&rebuilt), ["db", "web"]);
    assert_eq!(state, expected(&services[..1], &[], nodes.first()));
}
