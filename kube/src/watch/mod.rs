//! Watch plumbing: kube-rs watchers for Services, EndpointSlices and this node's Node feed
//! one loop that keeps the objects, recomputes (rules and projection) only the Services an
//! event touched, and publishes whole-state snapshots ([`DesiredStateUpdate`]) on a
//! `tokio::sync::watch` channel, each with the frontends the last snapshots changed so the
//! consumer can plan only those.
//!
//! Coalescing: the loop takes every event already waiting, applies them all, then
//! publishes one snapshot. A burst (a rolling update) is applied as fast as it arrives, but
//! a consumer only ever sees states computed from a complete set of objects: nothing is
//! published before all three initial lists are in, and a relist (after a 410 Gone)
//! replaces a store in one step when its list is complete.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    runtime::watcher::{self, watcher, Event},
    Api, Client, Config,
};
use lb_model::{DesiredState, Frontend, Settings};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::{debug, info, warn};

mod cache;
mod store;

use crate::{
    lenient::Lenient,
    metrics::KubeMetrics,
    projection::{ProjectionReport, Projector},
    rules::{KubeDesiredState, NodeConfig, LABEL_HEADLESS, LABEL_SERVICE_PROXY_NAME},
};
use cache::{Cache, Change};

/// How many snapshots' change sets a snapshot carries: a consumer that fell further behind
/// plans everything.
const RECENT_CHANGES: usize = 64;

/// An API resource the source reads and the verbs it uses; the ClusterRole in `deploy/`
/// must grant exactly these (checked by `tests/manifests.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchedResource {
    /// "" for the core group.
    pub api_group: &'static str,
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
}

/// Everything the source asks the API server for. The Node is watched with a field
/// selector (list + watch), never fetched with `get`.
pub const WATCHED_RESOURCES: &[WatchedResource] = &[
    WatchedResource {
        api_group: "",
        resource: "services",
        verbs: &["list", "watch"],
    },
    WatchedResource {
        api_group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
    },
    WatchedResource {
        api_group: "",
        resource: "nodes",
        verbs: &["list", "watch"],
    },
];

/// kube-proxy's selector for Services and EndpointSlices (rule 2): not headless, and no
/// other proxy named; with a proxy name, only objects naming this proxy.
pub fn label_selector(service_proxy_name: Option<&str>) -> String {
    match service_proxy_name {
        None => format!("!{LABEL_HEADLESS},!{LABEL_SERVICE_PROXY_NAME}"),
        Some(name) => format!("!{LABEL_HEADLESS},{LABEL_SERVICE_PROXY_NAME}={name}"),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no Kubernetes configuration (kubeconfig or in-cluster): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("cannot build a Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// A client from `kubeconfig` if given, else from `$KUBECONFIG`/`~/.kube/config`, else
/// from the in-cluster service account.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, SourceError> {
    let config = match kubeconfig {
        Some(path) => {
            let kubeconfig_error = |source| SourceError::Kubeconfig {
                path: path.display().to_string(),
                source,
            };
            let kc = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig_error)?;
            Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kubeconfig_error)?
        }
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

#[derive(Clone, Debug)]
pub struct SourceOptions {
    pub node: NodeConfig,
    /// Passed through to the datapath projection.
    pub settings: Settings,
    /// Project frontends in the internal scope too (the socket programs'): only for a
    /// datapath that has them installed. Off by default.
    pub internal_scope: bool,
    /// First retry delay after a list/watch error; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

impl SourceOptions {
    pub fn new(node: NodeConfig) -> Self {
        Self {
            node,
            settings: Settings::default(),
            internal_scope: false,
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// One published snapshot: the rich state, its datapath projection and what the
/// projection could not program. Consistent with each other and with one set of objects.
#[derive(Clone, Debug)]
pub struct DesiredStateUpdate {
    /// Counts snapshots from 1.
    pub generation: u64,
    pub kube: Arc<KubeDesiredState>,
    pub datapath: Arc<DesiredState>,
    pub report: Arc<ProjectionReport>,
    /// When the oldest API event folded into this snapshot was received; the daemon
    /// measures event-to-map latency from here.
    pub first_event_at: Instant,
    pub published_at: Instant,
    /// (generation, frontends whose datapath spec that snapshot changed) for this snapshot
    /// and the ones before it, oldest first, at most `RECENT_CHANGES` (64).
    pub recent_changes: Vec<(u64, Arc<BTreeSet<Frontend>>)>,
}

impl DesiredStateUpdate {
    /// The frontends whose datapath spec may differ between snapshot `applied` and this
    /// one; `None` when that is not known (`applied` is 0, from the future, or older than
    /// the change sets carried): then everything must be compared.
    pub fn changed_since(&self, applied: u64) -> Option<BTreeSet<Frontend>> {
        if applied == self.generation {
            return Some(BTreeSet::new());
        }
        if applied == 0 || applied > self.generation {
            return None;
        }
        if self.recent_changes.first()?.0 > applied + 1 {
            return None;
        }
        let mut changed = BTreeSet::new();
        for (generation, frontends) in &self.recent_changes {
            if *generation > applied {
                changed.extend(frontends.iter().copied());
            }
        }
        Some(changed)
    }
}

pub type Updates = watch::Receiver<Option<Arc<DesiredStateUpdate>>>;

/// Starts the source; the receiver holds `None` until the first complete snapshot. The
/// task ends when every receiver is dropped.
pub fn spawn(
    client: Client,
    options: SourceOptions,
    metrics: Option<KubeMetrics>,
) -> (Updates, JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(run(client, options, tx, metrics));
    (rx, task)
}

type Stamped = (Instant, Change);

/// Aborts the watcher tasks when the source stops.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn spawn_watcher<K>(
    api: Api<Lenient<K>>,
    config: watcher::Config,
    resource: &'static str,
    wrap: fn(Box<Event<Lenient<K>>>) -> Change,
    tx: mpsc::UnboundedSender<Stamped>,
    options: &SourceOptions,
    metrics: Option<KubeMetrics>,
) -> JoinHandle<()>
where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + 'static,
{
    let (min, max) = (options.min_backoff, options.max_backoff);
    tokio::spawn(async move {
        let mut stream = watcher(api, config).boxed();
        let mut delay = min;
        while let Some(item) = stream.next().await {
            match item {
                Ok(event) => {
                    delay = min;
                    if let Some(m) = &metrics {
                        m.watch_event(resource);
                    }
                    if tx.send((Instant::now(), wrap(Box::new(event)))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // The watcher recovers by itself (re-watch, or relist after 410 Gone);
                    // the pause keeps a failing API server from being hammered.
                    warn!(resource, error = %e, retry_in = ?delay, "watch error");
                    if let Some(m) = &metrics {
                        m.watch_error(resource);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(max);
                }
            }
        }
    })
}

/// The three watches, each feeding `tx`; they stop when the returned guard is dropped.
fn spawn_watchers(
    client: Client,
    options: &SourceOptions,
    tx: mpsc::UnboundedSender<Stamped>,
    metrics: Option<&KubeMetrics>,
) -> AbortOnDrop {
    let selector = label_selector(options.node.service_proxy_name.as_deref());
    AbortOnDrop(vec![
        spawn_watcher(
            Api::<Lenient<Service>>::all(client.clone()),
            watcher::Config::default().labels(&selector),
            "services",
            Change::Service,
            tx.clone(),
            options,
            metrics.cloned(),
        ),
        spawn_watcher(
            Api::<Lenient<EndpointSlice>>::all(client.clone()),
            watcher::Config::default().labels(&selector),
            "endpointslices",
            Change::Slice,
            tx.clone(),
            options,
            metrics.cloned(),
        ),
        spawn_watcher(
            Api::<Lenient<Node>>::all(client),
            watcher::Config::default().fields(&format!("metadata.name={}", options.node.node_name)),
            "nodes",
            Change::Node,
            tx,
            options,
            metrics.cloned(),
        ),
    ])
}

/// Runs the source until every receiver of `updates` is gone.
pub async fn run(
    client: Client,
    options: SourceOptions,
    updates: watch::Sender<Option<Arc<DesiredStateUpdate>>>,
    metrics: Option<KubeMetrics>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _watchers = spawn_watchers(client, &options, tx, metrics.as_ref());
    let mut cache = Cache::new(options.node.clone());
    let mut snapshots = Snapshots::new(options.settings, options.internal_scope);
    let mut first_event_at: Option<Instant> = None;
    loop {
        let received = tokio::select! {
            _ = updates.closed() => return,
            received = rx.recv() => received,
        };
        let Some((at, change)) = received else {
            return;
        };
        first_event_at.get_or_insert(at);
        cache.apply(change);
        // Fold in everything already waiting, then give the watcher tasks one turn to
        // deliver what they have decoded, so a burst becomes one snapshot.
        for round in 0..2 {
            while let Ok((_, change)) = rx.try_recv() {
                cache.apply(change);
            }
            if round == 0 {
                tokio::task::yield_now().await;
            }
        }
        if !cache.synced() {
            continue;
        }
        let first = first_event_at.take().unwrap_or_else(Instant::now);
        let update = snapshots.next(&mut cache, first, metrics.as_ref());
        if updates.send(Some(Arc::new(update))).is_err() {
            return;
        }
    }
}

/// Turns the cache's states into numbered snapshots with their datapath projection and
/// the change sets of the recent ones.
struct Snapshots {
    projector: Projector,
    recent: VecDeque<(u64, Arc<BTreeSet<Frontend>>)>,
    generation: u64,
}

impl Snapshots {
    fn new(settings: Settings, internal_scope: bool) -> Self {
        let projector = if internal_scope {
            Projector::new(settings)
        } else {
            Projector::external_only(settings)
        };
        Self {
            projector,
            recent: VecDeque::new(),
            generation: 0,
        }
    }

    fn next(
        &mut self,
        cache: &mut Cache,
        first_event_at: Instant,
        metrics: Option<&KubeMetrics>,
    ) -> DesiredStateUpdate {
        let (kube, rebuilt) = cache.snapshot();
        let kube = Arc::new(kube);
        let changed = self.projector.update(
            rebuilt
                .iter()
                .map(|name| (name, kube.services.get(name).map(|s| &**s))),
        );
        let report = Arc::clone(self.projector.report());
        self.generation += 1;
        let generation = self.generation;
        self.recent.push_back((generation, Arc::new(changed)));
        if self.recent.len() > RECENT_CHANGES {
            self.recent.pop_front();
        }
        let published_at = Instant::now();
        if let Some(m) = metrics {
            record(m, &kube, &report, published_at - first_event_at);
        }
        if generation == 1 {
            info!(
                services = kube.services.len(),
                frontends = report.programmed,
                skipped_frontends = report.skipped.len(),
                invalid = kube.skipped.len(),
                "initial Kubernetes state complete"
            );
        } else {
            debug!(
                generation,
                services = kube.services.len(),
                "desired state updated"
            );
        }
        DesiredStateUpdate {
            generation,
            kube,
            datapath: Arc::clone(self.projector.desired()),
            report,
            first_event_at,
            published_at,
            recent_changes: self.recent.iter().cloned().collect(),
        }
    }
}

fn record(m: &KubeMetrics, kube: &KubeDesiredState, report: &ProjectionReport, latency: Duration) {
    m.sync_latency.observe_duration(latency);
    m.services.set(kube.services.len() as f64);
    m.endpoints.set(kube.endpoint_count() as f64);
    m.frontends_programmed.set(report.programmed as f64);
    let mut invalid = BTreeMap::new();
    for s in &kube.skipped {
        *invalid.entry(s.problem.reason()).or_default() += 1;
    }
    m.set_skipped(&invalid, &report.skipped_by_reason());
    m.updates.inc();
}
