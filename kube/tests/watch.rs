//! The watch plumbing against a local HTTP server that speaks the API's list and watch
//! protocol (resourceVersions, label and field selectors, bookmarks, 410 Gone, event
//! replay after a reconnect) with real Kubernetes JSON. After each scenario the published
//! state must equal the pure model of the server's final objects.

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use common::*;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use lb_kube::{
    metrics::{KubeMetrics, Registry},
    model::{self, NodeConfig, ServiceName},
    projection::to_datapath,
    watch::{spawn, DesiredStateUpdate, SourceOptions, Updates},
};
use lb_model::Settings;
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

const SERVICES: &str = "services";
const SLICES: &str = "endpointslices";
const NODES: &str = "nodes";

fn kind_of(resource: &str) -> &'static str {
    match resource {
        SERVICES => "Service",
        SLICES => "EndpointSlice",
        _ => "Node",
    }
}

/// A parsed `labelSelector` / `fieldSelector`.
#[derive(Clone, Debug, Default)]
struct Filter {
    absent: Vec<String>,
    equal: Vec<(String, String)>,
    name: Option<String>,
}

impl Filter {
    fn parse(query: &BTreeMap<String, String>) -> Self {
        let mut f = Filter::default();
        for term in query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
        {
            if let Some(key) = term.strip_prefix('!') {
                f.absent.push(key.to_owned());
            } else if let Some((k, v)) = term.split_once('=') {
                f.equal.push((k.to_owned(), v.to_owned()));
            }
        }
        if let Some(fs) = query.get("fieldSelector") {
            f.name = fs.strip_prefix("metadata.name=").map(str::to_owned);
        }
        f
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        self.absent.iter().all(|k| labels.get(k).is_none())
            && self
                .equal
                .iter()
                .all(|(k, v)| labels.get(k).and_then(Value::as_str) == Some(v))
            && self
                .name
                .as_ref()
                .is_none_or(|n| obj["metadata"]["name"].as_str() == Some(n))
    }
}

struct Watcher {
    resource: String,
    filter: Filter,
    tx: mpsc::UnboundedSender<String>,
}

struct Change {
    rv: u64,
    resource: String,
    before: Option<Value>,
    after: Option<Value>,
}

#[derive(Default)]
struct ApiState {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    objects: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    /// "list services", "watch services 17", ... in arrival order.
    requests: Vec<String>,
}

/// The watch event a watcher with `filter` sees for a change, if any: objects moving into
/// or out of a selector appear as ADDED / DELETED, like the real API server's.
fn event_for(filter: &Filter, c: &Change) -> Option<String> {
    let was = c.before.as_ref().is_some_and(|o| filter.matches(o));
    let is = c.after.as_ref().is_some_and(|o| filter.matches(o));
    let (kind, obj) = match (was, is) {
        (false, true) => ("ADDED", c.after.clone()),
        (true, true) => ("MODIFIED", c.after.clone()),
        (true, false) => ("DELETED", c.after.clone().or_else(|| c.before.clone())),
        (false, false) => return None,
    };
    let mut obj = obj?;
    obj["metadata"]["resourceVersion"] = json!(c.rv.to_string());
    Some(json!({"type": kind, "object": obj}).to_string())
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<ApiState>>);

impl FakeApi {
    fn lock(&self) -> std::sync::MutexGuard<'_, ApiState> {
        self.0.lock().unwrap()
    }

    fn key(resource: &str, obj: &Value) -> (String, String, String) {
        (
            resource.to_owned(),
            obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            obj["metadata"]["name"].as_str().unwrap().to_owned(),
        )
    }

    fn record(s: &mut ApiState, resource: &str, before: Option<Value>, after: Option<Value>) {
        let change = Change {
            rv: s.rv,
            resource: resource.to_owned(),
            before,
            after,
        };
        s.watchers.retain(|w| {
            if w.resource != change.resource {
                return true;
            }
            match event_for(&w.filter, &change) {
                Some(line) => w.tx.send(line).is_ok(),
                None => true,
            }
        });
        s.history.push(change);
    }

    fn apply(&self, resource: &str, mut obj: Value) {
        let mut s = self.lock();
        s.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let before = s.objects.insert(Self::key(resource, &obj), obj.clone());
        Self::record(&mut s, resource, before, Some(obj));
    }

    fn delete(&self, resource: &str, name: &str) {
        let mut s = self.lock();
        s.rv += 1;
        let ns = if resource == NODES { "" } else { "default" };
        let before = s
            .objects
            .remove(&(resource.to_owned(), ns.to_owned(), name.to_owned()));
        assert!(
            before.is_some(),
            "deleting {resource} {name} that does not exist"
        );
        Self::record(&mut s, resource, before, None);
    }

    fn bookmark(&self, resource: &str) -> u64 {
        let s = self.lock();
        let line = json!({"type": "BOOKMARK", "object": {
            "kind": kind_of(resource),
            "apiVersion": if resource == SLICES { "discovery.k8s.io/v1" } else { "v1" },
            "metadata": {"resourceVersion": s.rv.to_string(),
                         "annotations": {"k8s.io/initial-events-end": "false"}}}})
        .to_string();
        for w in s.watchers.iter().filter(|w| w.resource == resource) {
            let _ = w.tx.send(line.clone());
        }
        s.rv
    }

    /// Ends every watch (the connections close) and runs `meanwhile` before any client can
    /// reconnect.
    fn disconnect(&self, meanwhile: impl FnOnce(&FakeApi)) {
        let watchers = std::mem::take(&mut self.lock().watchers);
        drop(watchers);
        // The lock is not held across `meanwhile`, but reconnecting clients only see the
        // history, which `meanwhile` extends before they could have asked for it.
        meanwhile(self);
    }

    /// Compacts history: every open watch gets 410 Gone, and so does any watch resuming
    /// from before now.
    fn expire(&self) {
        let mut s = self.lock();
        s.compacted = s.rv;
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
            "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
            "message": "too old resource version"}})
        .to_string();
        for w in std::mem::take(&mut s.watchers) {
            let _ = w.tx.send(gone.clone());
        }
    }

    /// Waits (bounded) until each resource has an open watch, so that a disconnect or a
    /// 410 hits live streams rather than racing the initial watch requests.
    async fn watching(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let open = {
                let s = self.lock();
                [SERVICES, SLICES, NODES].iter().all(|r| {
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

    fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    fn objects<K: serde::de::DeserializeOwned>(&self, resource: &str) -> Vec<K> {
        self.lock()
            .objects
            .iter()
            .filter(|((r, _, _), _)| r == resource)
            .map(|(_, v)| serde_json::from_value(v.clone()).unwrap())
            .collect()
    }

    /// The pure model of the server's objects.
    fn model(&self, cfg: &NodeConfig) -> model::KubeDesiredState {
        let services: Vec<Service> = self.objects(SERVICES);
        let slices: Vec<EndpointSlice> = self.objects(SLICES);
        let nodes: Vec<Node> = self.objects(NODES);
        let node = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(cfg.node_name.as_str()));
        model::build(&services, &slices, node, cfg)
    }

    async fn serve(self) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(self.clone().handle(stream));
            }
        });
        port
    }

    async fn handle(self, mut stream: TcpStream) {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if head.len() > 64 * 1024 {
                return;
            }
        }
        let head = String::from_utf8_lossy(&head).to_string();
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        let resource = match path {
            "/api/v1/services" => SERVICES,
            "/apis/discovery.k8s.io/v1/endpointslices" => SLICES,
            "/api/v1/nodes" => NODES,
            _ => {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                return;
            }
        };
        let filter = Filter::parse(&query);
        if query.get("watch").map(String::as_str) == Some("true") {
            let from: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (tx, mut rx) = mpsc::unbounded_channel();
            {
                let mut s = self.lock();
                s.requests.push(format!("watch {resource} {from}"));
                if from < s.compacted {
                    let _ = tx.send(
                        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
                            "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
                            "message": "too old resource version"}})
                        .to_string(),
                    );
                } else {
                    for c in s
                        .history
                        .iter()
                        .filter(|c| c.resource == resource && c.rv > from)
                    {
                        if let Some(line) = event_for(&filter, c) {
                            let _ = tx.send(line);
                        }
                    }
                    s.watchers.push(Watcher {
                        resource: resource.to_owned(),
                        filter,
                        tx,
                    });
                }
            }
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            while let Some(line) = rx.recv().await {
                if stream
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
            let _ = stream.shutdown().await;
        } else {
            let body = {
                let mut s = self.lock();
                s.requests.push(format!("list {resource}"));
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|((r, _, _), o)| r == resource && filter.matches(o))
                    .map(|(_, o)| {
                        // List items come without kind and apiVersion, as from the server.
                        let mut o = o.clone();
                        o.as_object_mut().unwrap().remove("kind");
                        o.as_object_mut().unwrap().remove("apiVersion");
                        o
                    })
                    .collect();
                json!({"kind": format!("{}List", kind_of(resource)),
                       "apiVersion": if resource == SLICES { "discovery.k8s.io/v1" } else { "v1" },
                       "metadata": {"resourceVersion": s.rv.to_string()},
                       "items": items})
                .to_string()
            };
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Harness {
    api: FakeApi,
    updates: Updates,
    cfg: NodeConfig,
    registry: Registry,
    _task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(api: FakeApi, cfg: NodeConfig) -> Self {
        let port = api.clone().serve().await;
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let mut options = SourceOptions::new(cfg.clone());
        options.min_backoff = Duration::from_millis(10);
        options.max_backoff = Duration::from_millis(100);
        let registry = Registry::new();
        let metrics = KubeMetrics::new(&registry).unwrap();
        let (updates, task) = spawn(client, options, Some(metrics));
        Self {
            api,
            updates,
            cfg,
            registry,
            _task: task,
        }
    }

    /// Waits (bounded) until the published state equals the model of the server's objects.
    async fn converged(&mut self, what: &str) -> Arc<DesiredStateUpdate> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let expected = self.api.model(&self.cfg);
            if let Some(update) = self.updates.borrow_and_update().clone() {
                if *update.kube == expected {
                    let (datapath, report) = to_datapath(&expected, Settings::default());
                    assert_eq!(*update.datapath, datapath, "{what}: projection");
                    assert_eq!(*update.report, report, "{what}: report");
                    return update;
                }
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                let got = self.updates.borrow().clone();
                panic!(
                    "{what}: no convergence in 10 s\nexpected {:#?}\ngot {:#?}\nrequests {:?}",
                    expected.services.keys().collect::<Vec<_>>(),
                    got.map(|u| u.kube.services.keys().cloned().collect::<Vec<_>>()),
                    self.api.requests()
                );
            }
            // Changes on the server side do not wake us; poll at a short interval as well.
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(50)), self.updates.changed())
                    .await;
        }
    }
}

fn endpoints_of(update: &DesiredStateUpdate, name: &str) -> usize {
    update.kube.services[&ServiceName::new("default", name)].ports[0].endpoints
        [&model::IpFamily::V4]
        .cluster
        .len()
}

fn seeded() -> FakeApi {
    let api = FakeApi::default();
    api.apply(NODES, default_node());
    api.apply(
        NODES,
        node_json("node-b", &[("InternalIP", "198.18.0.11")], "zone-b"),
    );
    api.apply(SERVICES, service_json("web", "198.18.100.1"));
    api.apply(
        SLICES,
        slice_json(
            "web-abc12",
            "web",
            "IPv4",
            8080,
            vec![ready("198.19.0.1", NODE), ready("198.19.0.2", "node-b")],
        ),
    );
    api.apply(SERVICES, service_json("db", "198.18.100.2"));
    api.apply(
        SLICES,
        slice_json(
            "db-xyz34",
            "db",
            "IPv4",
            8080,
            vec![ready("198.19.0.3", "node-b")],
        ),
    );
    api
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test exceeded 30 s")
}

#[tokio::test]
async fn watch_initial_list_equals_the_model() {
    bounded(async {
        let mut h = Harness::start(seeded(), cfg()).await;
        let first = h.converged("initial list").await;
        assert_eq!(
            first.generation, 1,
            "one snapshot for the whole initial list"
        );
        assert_eq!(first.kube.services.len(), 2);
        assert_eq!(
            first.kube.node.node_port_addresses,
            ["198.18.0.10".parse::<std::net::IpAddr>().unwrap()]
        );
        let requests = h.api.requests();
        for r in ["list services", "list endpointslices", "list nodes"] {
            assert!(
                requests.iter().any(|q| q == r),
                "{r} missing from {requests:?}"
            );
        }
        let text = h.registry.render();
        assert!(text.contains("lb_kube_services_objects 2"), "{text}");
        assert!(
            text.contains("lb_kube_sync_latency_seconds_count 1"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn watch_events_add_modify_and_delete() {
    bounded(async {
        let mut h = Harness::start(seeded(), cfg()).await;
        h.converged("initial").await;
        h.api.apply(SERVICES, service_json("cache", "198.18.100.3"));
        h.api.apply(
            SLICES,
            slice_json(
                "cache-q",
                "cache",
                "IPv4",
                8080,
                vec![ready("198.19.0.4", NODE)],
            ),
        );
        h.converged("added").await;
        // Scale web up, then mark one endpoint terminating.
        h.api.apply(
            SLICES,
            slice_json(
                "web-abc12",
                "web",
                "IPv4",
                8080,
                vec![
                    ready("198.19.0.1", NODE),
                    ready("198.19.0.2", "node-b"),
                    ready("198.19.0.5", "node-b"),
                ],
            ),
        );
        let u = h.converged("scaled").await;
        assert_eq!(endpoints_of(&u, "web"), 3);
        h.api.apply(
            SLICES,
            slice_json(
                "web-abc12",
                "web",
                "IPv4",
                8080,
                vec![
                    endpoint("198.19.0.1", NODE, false, true, true),
                    ready("198.19.0.2", "node-b"),
                    ready("198.19.0.5", "node-b"),
                ],
            ),
        );
        let u = h.converged("terminating").await;
        assert_eq!(endpoints_of(&u, "web"), 2);
        h.api.delete(SERVICES, "db");
        h.api.delete(SLICES, "db-xyz34");
        let u = h.converged("deleted").await;
        assert!(!u
            .kube
            .services
            .contains_key(&ServiceName::new("default", "db")));
        // A node change that the model uses (a new address) recomputes NodePorts.
        h.api.apply(
            NODES,
            node_json(
                NODE,
                &[
                    ("InternalIP", "198.18.0.10"),
                    ("ExternalIP", "198.18.50.10"),
                ],
                "zone-a",
            ),
        );
        let u = h.converged("node changed").await;
        assert_eq!(u.kube.node.node_port_addresses.len(), 2);
    })
    .await;
}

#[tokio::test]
async fn watch_bookmarks_advance_the_resume_point() {
    bounded(async {
        let mut h = Harness::start(seeded(), cfg()).await;
        let before = h.converged("initial").await;
        // Changes to other resources move the resourceVersion on; the services watch only
        // learns of it through a bookmark.
        h.api.apply(
            SLICES,
            slice_json(
                "db-xyz34",
                "db",
                "IPv4",
                8080,
                vec![ready("198.19.0.6", "node-b")],
            ),
        );
        h.converged("slice change").await;
        h.api.watching().await;
        let bookmark_rv = h.api.bookmark(SERVICES);
        // Give the bookmark time to arrive, then force a reconnect.
        tokio::time::sleep(Duration::from_millis(200)).await;
        h.api.disconnect(|_| {});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let wanted = format!("watch services {bookmark_rv}");
        while !h.api.requests().contains(&wanted) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {wanted:?} in {:?}",
                h.api.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = h.converged("after bookmark").await;
        assert_eq!(before.kube.services.len(), after.kube.services.len());
        let lists = h
            .api
            .requests()
            .iter()
            .filter(|r| *r == "list services")
            .count();
        assert_eq!(lists, 1, "a bookmark and a reconnect need no relist");
    })
    .await;
}

#[tokio::test]
async fn watch_410_gone_forces_a_relist() {
    bounded(async {
        let mut h = Harness::start(seeded(), cfg()).await;
        h.converged("initial").await;
        h.api.watching().await;
        h.api.expire();
        h.api.apply(SERVICES, service_json("late", "198.18.100.4"));
        h.converged("after 410").await;
        let requests = h.api.requests();
        for r in ["list services", "list endpointslices", "list nodes"] {
            assert!(
                requests.iter().filter(|q| *q == r).count() >= 2,
                "{r} not relisted: {requests:?}"
            );
        }
        assert!(h
            .registry
            .render()
            .contains("lb_kube_watch_errors_total{resource=\"services\"}"));
    })
    .await;
}

#[tokio::test]
async fn watch_dropped_connection_resumes_and_replays() {
    bounded(async {
        let mut h = Harness::start(seeded(), cfg()).await;
        h.converged("initial").await;
        h.api.watching().await;
        h.api.disconnect(|api| {
            api.apply(
                SLICES,
                slice_json(
                    "web-abc12",
                    "web",
                    "IPv4",
                    8080,
                    vec![ready("198.19.0.9", "node-b")],
                ),
            );
        });
        let u = h.converged("after reconnect").await;
        assert_eq!(endpoints_of(&u, "web"), 1);
        let lists = h
            .api
            .requests()
            .iter()
            .filter(|r| *r == "list endpointslices")
            .count();
        assert_eq!(
            lists, 1,
            "a dropped connection resumes the watch, no relist"
        );
    })
    .await;
}

#[tokio::test]
async fn watch_object_deleted_while_disconnected() {
    bounded(async {
        let mut h = Harness::start(seeded(), cfg()).await;
        h.converged("initial").await;
        h.api.watching().await;
        // Resumed watch: the deletion is replayed.
        h.api.disconnect(|api| api.delete(SLICES, "db-xyz34"));
        let u = h.converged("replayed deletion").await;
        assert_eq!(endpoints_of(&u, "db"), 0);
        h.api.watching().await;
        // History compacted while away: 410 on resume, relist, the store drops the object.
        h.api.disconnect(|api| {
            api.delete(SERVICES, "db");
            api.expire();
        });
        let u = h.converged("deletion seen by relist").await;
        assert!(!u
            .kube
            .services
            .contains_key(&ServiceName::new("default", "db")));
        assert!(
            h.api
                .requests()
                .iter()
                .filter(|r| *r == "list services")
                .count()
                >= 2
        );
    })
    .await;
}

#[tokio::test]
async fn watch_service_proxy_name_label_turns_programming_off_and_on() {
    bounded(async {
        let mut h = Harness::start(seeded(), cfg()).await;
        h.converged("initial").await;
        let labelled = patch(
            service_json("web", "198.18.100.1"),
            json!({"metadata": {"labels": {"service.kubernetes.io/service-proxy-name": "other"}}}),
        );
        h.api.apply(SERVICES, labelled);
        let u = h.converged("handed to another proxy").await;
        assert!(!u
            .kube
            .services
            .contains_key(&ServiceName::new("default", "web")));
        h.api.apply(SERVICES, service_json("web", "198.18.100.1"));
        let u = h.converged("back").await;
        assert_eq!(endpoints_of(&u, "web"), 2);
    })
    .await;
}

#[tokio::test]
async fn watch_malformed_object_is_skipped_and_others_flow() {
    bounded(async {
        let api = seeded();
        let broken = patch(
            service_json("broken", "198.18.100.9"),
            json!({"spec": {"ports": [{"name": "http", "port": "eighty"}]}}),
        );
        api.apply(SERVICES, broken);
        let mut h = Harness::start(api, cfg()).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let update = loop {
            if let Some(u) = h.updates.borrow_and_update().clone() {
                break u;
            }
            assert!(tokio::time::Instant::now() < deadline, "no state in 10 s");
            let _ = tokio::time::timeout(Duration::from_millis(100), h.updates.changed()).await;
        };
        let names: Vec<&str> = update
            .kube
            .services
            .keys()
            .map(|n| n.name.as_str())
            .collect();
        assert_eq!(names, ["db", "web"]);
        assert_eq!(update.kube.skipped.len(), 1);
        assert_eq!(update.kube.skipped[0].problem.reason(), "malformed");
        assert_eq!(update.kube.skipped[0].object, "Service default/broken");
        assert!(h
            .registry
            .render()
            .contains("lb_kube_skipped_objects{reason=\"malformed\"} 1"));
        // Fixing it brings it in.
        h.api
            .apply(SERVICES, service_json("broken", "198.18.100.9"));
        h.converged("fixed").await;
    })
    .await;
}
