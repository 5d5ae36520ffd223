//! A stand-in for the Kubernetes API server, for tests (cargo feature `fake-api`).
//!
//! No kube-apiserver can run on the test machines, so this speaks just enough of the API's
//! list/watch protocol, with real Kubernetes JSON, to drive the watch plumbing and the
//! daemon: Services, EndpointSlices and Nodes; resourceVersions; `labelSelector`
//! (`key=value`, `!key`) and `fieldSelector=metadata.name=...`; watch replay from a
//! resourceVersion; bookmarks; dropped connections; 410 Gone after compaction.
//!
//! It only ever listens on 127.0.0.1 and keeps every resource bounded: request heads,
//! concurrent connections, per-watch queues (a watcher that falls behind is disconnected
//! and resumes, as from a real server) and the event history (compacted, after which old
//! resourceVersions get 410). [`FakeApi::serve_in_netns`] runs it inside a network
//! namespace, so a daemon running there reaches it on its own loopback.

mod history;
mod netns;
pub mod objects;
mod server;

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use serde_json::{json, Value};

pub use netns::{enter_netns, kubeconfig, NetnsServer};

use crate::rules::{self, NodeConfig};
use history::{gone, ApiState, ObjectKey};

/// The resources the server knows, all cluster-wide (`/api/v1/services`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    Services,
    EndpointSlices,
    Nodes,
}

impl Resource {
    pub const ALL: [Resource; 3] = [Self::Services, Self::EndpointSlices, Self::Nodes];

    /// The plural name, as in URLs and the request log.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices",
            Self::Nodes => "nodes",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Self::Services => "Service",
            Self::EndpointSlices => "EndpointSlice",
            Self::Nodes => "Node",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Self::EndpointSlices => "discovery.k8s.io/v1",
            Self::Services | Self::Nodes => "v1",
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        match path {
            "/api/v1/services" => Some(Self::Services),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Self::EndpointSlices),
            "/api/v1/nodes" => Some(Self::Nodes),
            _ => None,
        }
    }

    fn namespaced(self) -> bool {
        self != Self::Nodes
    }
}

/// The fake server's objects and open watches. Clones share them: a test keeps one to
/// change objects while the server (on any runtime or thread) serves another.
#[derive(Clone, Default)]
pub struct FakeApi(Arc<Mutex<ApiState>>);

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, ApiState> {
        // A panicking test thread must not take the server down with it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(resource: Resource, obj: &Value) -> ObjectKey {
        (
            resource,
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            obj["metadata"]["name"].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Creates or replaces an object (by namespace and name) and tells the watches.
    /// Returns the object's new resourceVersion.
    pub fn apply(&self, resource: Resource, mut obj: Value) -> u64 {
        let mut s = self.lock();
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let before = s.objects.insert(Self::key(resource, &obj), obj.clone());
        s.record(resource, before, Some(obj));
        s.rv
    }

    /// Deletes an object of namespace `default` (or the cluster-scoped Node) by name and
    /// tells the watches.
    ///
    /// # Panics
    /// If there is no such object: a test deleting what it never created is wrong.
    pub fn delete(&self, resource: Resource, name: &str) {
        let mut s = self.lock();
        s.rv += 1;
        let namespace = if resource.namespaced() { "default" } else { "" };
        let before = s
            .objects
            .remove(&(resource, namespace.to_owned(), name.to_owned()));
        assert!(
            before.is_some(),
            "deleting {} {name} that does not exist",
            resource.plural()
        );
        s.record(resource, before, None);
    }

    /// Sends a BOOKMARK at the current resourceVersion to every watch of `resource`;
    /// returns that resourceVersion.
    pub fn bookmark(&self, resource: Resource) -> u64 {
        let s = self.lock();
        let line = json!({"type": "BOOKMARK", "object": {
            "kind": resource.kind(),
            "apiVersion": resource.api_version(),
            "metadata": {"resourceVersion": s.rv.to_string(),
                         "annotations": {"k8s.io/initial-events-end": "false"}}}})
        .to_string();
        for w in s.watchers.iter().filter(|w| w.resource == resource) {
            w.send(line.clone());
        }
        s.rv
    }

    /// Ends every watch (the connections close) and runs `meanwhile` before any client can
    /// reconnect.
    pub fn disconnect(&self, meanwhile: impl FnOnce(&FakeApi)) {
        let watchers = std::mem::take(&mut self.lock().watchers);
        drop(watchers);
        // The lock is not held across `meanwhile`, but reconnecting clients only see the
        // history, which `meanwhile` extends before they could have asked for it.
        meanwhile(self);
    }

    /// Compacts history: every open watch gets 410 Gone, and so does any watch resuming
    /// from before now.
    pub fn expire(&self) {
        let mut s = self.lock();
        s.compacted = s.rv;
        s.history.clear();
        for w in std::mem::take(&mut s.watchers) {
            w.send(gone());
        }
    }

    /// Waits (at most 10 s) until each resource has an open watch, so that a disconnect or
    /// a 410 hits live streams rather than racing the initial watch requests.
    ///
    /// # Panics
    /// If the watches do not open in time.
    pub async fn watching(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let open = {
                let s = self.lock();
                Resource::ALL.iter().all(|r| {
                    s.watchers
                        .iter()
                        .any(|w| w.resource == *r && !w.tx.is_closed())
                })
            };
            if open {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "watches not open: {:?}",
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// "list services", "watch services 17" (the resourceVersion resumed from), ... in
    /// arrival order; only the most recent few thousand are kept.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// The current objects of `resource`, decoded as `K`.
    ///
    /// # Panics
    /// If an object does not decode as `K`.
    pub fn objects<K: serde::de::DeserializeOwned>(&self, resource: Resource) -> Vec<K> {
        self.lock()
            .objects
            .iter()
            .filter(|((r, _, _), _)| *r == resource)
            .map(|(_, v)| {
                serde_json::from_value(v.clone())
                    .unwrap_or_else(|e| panic!("{} object does not decode: {e}", resource.kind()))
            })
            .collect()
    }

    /// What the rules make of the server's objects, as a node configured with `cfg` sees
    /// them: the state a source reading this server must converge to.
    pub fn expected_state(&self, cfg: &NodeConfig) -> rules::KubeDesiredState {
        let services: Vec<Service> = self.objects(Resource::Services);
        let slices: Vec<EndpointSlice> = self.objects(Resource::EndpointSlices);
        let nodes: Vec<Node> = self.objects(Resource::Nodes);
        let node = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(cfg.node_name.as_str()));
        rules::build(&services, &slices, node, cfg)
    }
}
