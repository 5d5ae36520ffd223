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

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::fd::AsRawFd,
    path::Path,
    sync::{Arc, Mutex, MutexGuard},
    thread::JoinHandle,
    time::Duration,
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Semaphore},
};

use crate::model::{self, NodeConfig};

/// Largest request head read before the connection is dropped.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client that has not sent its request head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further ones wait for a free place.
const MAX_CONNECTIONS: usize = 64;
/// Events queued per watch; a watch that falls further behind is closed.
const WATCH_QUEUE: usize = 4096;
/// Changes kept for replay; past that the older half is compacted away.
const MAX_HISTORY: usize = 8192;
/// Requests kept in the [`FakeApi::requests`] log; past that the older half is dropped.
const MAX_REQUEST_LOG: usize = 8192;
/// How long [`FakeApi::serve_in_netns`] waits for its thread to listen.
const START_TIMEOUT: Duration = Duration::from_secs(10);

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
    resource: Resource,
    filter: Filter,
    tx: mpsc::Sender<String>,
}

impl Watcher {
    /// Queues a line; false when the watch is gone or too far behind (then it is dropped,
    /// which ends its stream, and the client resumes from its last resourceVersion).
    fn send(&self, line: String) -> bool {
        self.tx.try_send(line).is_ok()
    }
}

struct Change {
    rv: u64,
    resource: Resource,
    before: Option<Value>,
    after: Option<Value>,
}

type ObjectKey = (Resource, String, String);

#[derive(Default)]
struct ApiState {
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    /// "list services", "watch services 17", ... in arrival order.
    requests: Vec<String>,
}

impl ApiState {
    fn log_request(&mut self, request: String) {
        if self.requests.len() >= MAX_REQUEST_LOG {
            self.requests.drain(..MAX_REQUEST_LOG / 2);
        }
        self.requests.push(request);
    }

    fn record(&mut self, resource: Resource, before: Option<Value>, after: Option<Value>) {
        let change = Change {
            rv: self.rv,
            resource,
            before,
            after,
        };
        self.watchers.retain(|w| {
            if w.resource != change.resource {
                return true;
            }
            match event_for(&w.filter, &change) {
                Some(line) => w.send(line),
                None => true,
            }
        });
        self.history.push(change);
        if self.history.len() > MAX_HISTORY {
            let dropped: Vec<Change> = self.history.drain(..MAX_HISTORY / 2).collect();
            if let Some(last) = dropped.last() {
                self.compacted = self.compacted.max(last.rv);
            }
        }
    }
}

fn gone() -> String {
    json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1",
        "metadata": {}, "status": "Failure", "reason": "Expired", "code": 410,
        "message": "too old resource version"}})
    .to_string()
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

    /// The pure model of the server's objects, as a node configured with `cfg` sees them.
    pub fn model(&self, cfg: &NodeConfig) -> model::KubeDesiredState {
        let services: Vec<Service> = self.objects(Resource::Services);
        let slices: Vec<EndpointSlice> = self.objects(Resource::EndpointSlices);
        let nodes: Vec<Node> = self.objects(Resource::Nodes);
        let node = nodes
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(cfg.node_name.as_str()));
        model::build(&services, &slices, node, cfg)
    }

    /// Listens on 127.0.0.1 (a free port, returned) and serves on the current tokio
    /// runtime until that runtime shuts down.
    pub async fn serve(&self) -> io::Result<u16> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let api = self.clone();
        let places = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                // As the real API server (Go sets it on every TCP connection): without it,
                // Nagle holds a watch event back until the previous one is acknowledged,
                // which the client's delayed ACK can put off for 40 ms.
                let _ = stream.set_nodelay(true);
                let Ok(place) = places.clone().acquire_owned().await else {
                    return;
                };
                let api = api.clone();
                tokio::spawn(async move {
                    api.handle(stream).await;
                    drop(place);
                });
            }
        });
        Ok(port)
    }

    /// Serves on 127.0.0.1 inside the network namespace at `netns` (such as
    /// `/run/netns/NAME`), from a thread of its own that entered it, so a process in that
    /// namespace reaches the server on its loopback. Stops when the handle is dropped.
    pub fn serve_in_netns(&self, netns: &Path) -> io::Result<NetnsServer> {
        let api = self.clone();
        let netns = netns.to_owned();
        let (started_tx, started_rx) = std::sync::mpsc::channel::<io::Result<u16>>();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fake-api".into())
            .spawn(move || {
                let runtime = enter_netns(&netns).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                let runtime = match runtime {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let port = api.serve().await;
                    let listening = port.is_ok();
                    let _ = started_tx.send(port);
                    if listening {
                        // Either a stop or the handle being dropped ends the wait.
                        let _ = stopped.await;
                    }
                });
                // Dropping the runtime drops every connection and open watch.
            })?;
        let port = started_rx
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "fake API did not start"))??;
        Ok(NetnsServer {
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    async fn handle(self, mut stream: TcpStream) {
        let Ok(Some(head)) = tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await
        else {
            return;
        };
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let query: BTreeMap<String, String> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), percent_decode(v)))
            .collect();
        let Some(resource) = Resource::from_path(path) else {
            let _ = stream
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        };
        let filter = Filter::parse(&query);
        if query.get("watch").map(String::as_str) == Some("true") {
            self.watch(stream, resource, filter, &query).await;
        } else {
            self.list(stream, resource, &filter).await;
        }
    }

    async fn watch(
        self,
        mut stream: TcpStream,
        resource: Resource,
        filter: Filter,
        query: &BTreeMap<String, String>,
    ) {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, mut rx) = mpsc::channel(WATCH_QUEUE);
        {
            let mut s = self.lock();
            s.log_request(format!("watch {} {from}", resource.plural()));
            if from < s.compacted {
                let _ = tx.try_send(gone());
            } else {
                let replay: Vec<String> = s
                    .history
                    .iter()
                    .filter(|c| c.resource == resource && c.rv > from)
                    .filter_map(|c| event_for(&filter, c))
                    .collect();
                let watcher = Watcher {
                    resource,
                    filter,
                    tx,
                };
                // A replay longer than the queue ends the stream at once; the client
                // resumes from what it received.
                if replay.into_iter().all(|line| watcher.send(line)) {
                    s.watchers.push(watcher);
                }
            }
        }
        let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n";
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
    }

    async fn list(self, mut stream: TcpStream, resource: Resource, filter: &Filter) {
        let body = {
            let mut s = self.lock();
            s.log_request(format!("list {}", resource.plural()));
            // Serialized straight from the stored objects: copying 10,000 objects into a
            // `Value` first made this server, not the client it serves, most of a
            // benchmark's list time. The bytes are the same.
            let items: Vec<ListItem<'_>> = s
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == resource && filter.matches(o))
                .map(|(_, o)| ListItem(o))
                .collect();
            let list = List {
                api_version: resource.api_version(),
                items,
                kind: format!("{}List", resource.kind()),
                metadata: json!({"resourceVersion": s.rv.to_string()}),
            };
            serde_json::to_string(&list).expect("JSON values serialize")
        };
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

/// A list response, its keys in the order `json!` would give them (sorted).
#[derive(serde::Serialize)]
struct List<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    items: Vec<ListItem<'a>>,
    kind: String,
    metadata: Value,
}

/// A stored object as a list item: without kind and apiVersion, as from the server.
struct ListItem<'a>(&'a Value);

impl serde::Serialize for ListItem<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Some(fields) = self.0.as_object() else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in fields {
            if key != "kind" && key != "apiVersion" {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// Reads up to the end of the request head; `None` if the client went away or the head
/// is too large.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_HEAD_BYTES {
            return None;
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
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

/// A [`FakeApi`] serving inside a network namespace; dropping it stops the server and
/// closes every connection.
pub struct NetnsServer {
    /// The port on 127.0.0.1 inside the namespace.
    pub port: u16,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsServer {
    /// The server's URL, as a client inside the namespace uses it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig pointing at the server, with no credentials.
    pub fn kubeconfig(&self) -> String {
        kubeconfig(&self.url())
    }
}

impl Drop for NetnsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A kubeconfig (YAML) for a server at `url` with no credentials.
pub fn kubeconfig(url: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
  - name: fake
    cluster:
      server: {url}
users:
  - name: anonymous
    user: {{}}
contexts:
  - name: fake
    context:
      cluster: fake
      user: anonymous
current-context: fake
"
    )
}

/// Moves the calling thread (only it) into the network namespace at `path`, such as
/// `/run/netns/NAME`. Sockets it creates from then on belong to that namespace.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns on a valid, open namespace file descriptor; CLONE_NEWNET changes only
    // the calling thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Real-shaped Kubernetes JSON: objects as the API server returns them (`kubectl get -o
/// json` minus managedFields), built from a few parameters and adjusted per test with JSON
/// merge patches. Namespaced objects live in `default`.
pub mod objects {
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
    pub fn endpoint(
        address: &str,
        node: &str,
        ready: bool,
        serving: bool,
        terminating: bool,
    ) -> Value {
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
}
