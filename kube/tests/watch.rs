//! The watch plumbing against a local HTTP server that speaks the API's list and watch
//! protocol (resourceVersions, label and field selectors, bookmarks, 410 Gone, event
//! replay after a reconnect) with real Kubernetes JSON. After each scenario the published
//! state must equal what the pure rules make of the server's final objects.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use lb_kube::{
    fake_api::{FakeApi, Resource},
    metrics::KubeMetrics,
    projection::to_datapath,
    rules::{self, NodeConfig, ServiceName},
    watch::{spawn, DesiredStateUpdate, SourceOptions, Updates},
};
use lb_model::Settings;
use lb_telemetry::metrics::Registry;
use serde_json::json;

const SERVICES: Resource = Resource::Services;
const SLICES: Resource = Resource::EndpointSlices;
const NODES: Resource = Resource::Nodes;

struct Harness {
    api: FakeApi,
    updates: Updates,
    cfg: NodeConfig,
    registry: Registry,
    _task: tokio::task::JoinHandle<()>,
}

impl Harness {
    async fn start(api: FakeApi, cfg: NodeConfig) -> Self {
        let port = api.serve().await.expect("fake API listens");
        let config = kube::Config::new(format!("http://127.0.0.1:{port}").parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        let mut options = SourceOptions::new(cfg.clone());
        // As `ferrolb kube` runs it: both scopes, as `to_datapath` projects them.
        options.internal_scope = true;
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

    /// Waits (bounded) until the published state equals the rules' state of the server's
    /// objects.
    async fn converged(&mut self, what: &str) -> Arc<DesiredStateUpdate> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let expected = self.api.expected_state(&self.cfg);
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
        [&rules::IpFamily::V4]
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
        // A node change that the rules use (a new address) recomputes NodePorts.
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
        // The state converges once the Services are relisted; the other watchers may still
        // be in their retry pause, so their relists are waited for (bounded).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        for r in ["list services", "list endpointslices", "list nodes"] {
            while h.api.requests().iter().filter(|q| *q == r).count() < 2 {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{r} not relisted: {:?}",
                    h.api.requests()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
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
