//! Node-local HTTP endpoints on loopback with ephemeral ports: proxy health (rule 21),
//! healthCheckNodePort servers (rule 15), metrics.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::*;
use lb_kube::{
    metrics::KubeMetrics,
    rules::{HealthCheckSpec, ServiceName},
};
use lb_telemetry::{
    http::{serve_metrics, serve_proxy_health, ProxyHealth, ServiceHealthServers},
    metrics::Registry,
};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .expect("connect timeout")
        .expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut response))
        .await
        .expect("read timeout")
        .unwrap();
    let text = String::from_utf8(response).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A port free right now on loopback (healthCheckNodePorts are fixed numbers, not 0).
async fn free_port() -> u16 {
    let l = TcpListener::bind(loopback()).await.unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test]
async fn rule_21_healthz_and_livez_follow_sync_and_node_eligibility() {
    let health = ProxyHealth::new(Duration::from_millis(300));
    let server = serve_proxy_health(loopback(), health.clone())
        .await
        .unwrap();
    let addr = server.local_addr;
    // Never synced: neither healthy nor live.
    assert_eq!(get(addr, "/healthz").await.0, 503);
    assert_eq!(get(addr, "/livez").await.0, 503);
    health.queued();
    health.synced();
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["nodeEligible"], json!(true));
    assert!(body["lastUpdated"].as_str().unwrap().ends_with('Z'));
    // Node tainted ToBeDeletedByClusterAutoscaler: /healthz fails, /livez does not.
    health.set_node_eligible(false);
    assert_eq!(get(addr, "/healthz").await.0, 503);
    assert_eq!(get(addr, "/livez").await.0, 200);
    health.set_node_eligible(true);
    // A queued change not applied within the timeout: unhealthy until synced.
    health.queued();
    assert_eq!(
        get(addr, "/healthz").await.0,
        200,
        "pending but within the timeout"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(addr, "/healthz").await.0, 503);
    assert_eq!(get(addr, "/livez").await.0, 503);
    health.synced();
    assert_eq!(get(addr, "/livez").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn rule_15_health_check_node_port_server_200_then_503() {
    let proxy = ProxyHealth::new(Duration::from_secs(60));
    proxy.synced();
    let mut servers = ServiceHealthServers::new("127.0.0.1".parse().unwrap(), proxy.clone());
    let port = free_port().await;
    // The spec comes from the rules' state of a real eTP=Local LoadBalancer Service.
    let svc = patch(
        service_json("lb", "198.18.100.30"),
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": port,
                        "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 80, "nodePort": 30081}]},
               "status": {"loadBalancer": {"ingress": [{"ip": "198.18.70.1"}]}}}),
    );
    let slice_with = |eps| slice_json("lb-a", "lb", "IPv4", 80, eps);
    let state = build(
        vec![svc.clone()],
        vec![slice_with(vec![
            ready("198.19.0.1", NODE),
            ready("198.19.0.2", NODE),
        ])],
    );
    let errors = servers.sync(&state.health_checks()).await;
    assert!(errors.is_empty(), "{errors:?}");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (status, body) = get(addr, "/healthz").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["service"],
        json!({"namespace": "default", "name": "lb"})
    );
    assert_eq!(body["localEndpoints"], json!(2));

    // Local pods terminating: still served via fallback, but the check fails.
    let state = build(
        vec![svc],
        vec![slice_with(vec![endpoint(
            "198.19.0.1",
            NODE,
            false,
            true,
            true,
        )])],
    );
    servers.sync(&state.health_checks()).await;
    let (status, body) = get(addr, "/").await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["localEndpoints"],
        json!(0)
    );

    // The Service goes away: the port is closed.
    servers.sync(&[]).await;
    assert!(servers.ports().is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn health_check_port_in_use_is_reported_and_others_still_start() {
    let proxy = ProxyHealth::new(Duration::from_secs(60));
    proxy.synced();
    let taken = TcpListener::bind(loopback()).await.unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let free = free_port().await;
    let mut servers = ServiceHealthServers::new("127.0.0.1".parse().unwrap(), proxy);
    let checks = [
        HealthCheckSpec {
            service: ServiceName::new("default", "a"),
            port: taken_port,
            local_ready_endpoints: 1,
        },
        HealthCheckSpec {
            service: ServiceName::new("default", "b"),
            port: free,
            local_ready_endpoints: 1,
        },
    ];
    let errors = servers.sync(&checks).await;
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, taken_port);
    assert_eq!(servers.ports(), [free]);
    assert_eq!(
        get(format!("127.0.0.1:{free}").parse().unwrap(), "/")
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn metrics_endpoint_serves_the_registry() {
    let registry = Registry::new();
    let metrics = KubeMetrics::new(&registry).unwrap();
    metrics.services.set(3.0);
    metrics.sync_latency.observe(0.002);
    metrics.watch_error("services");
    let gauge = registry
        .gauge(
            "lb_maps_occupancy_entries",
            "Entries per map.",
            &[("map", "services")],
        )
        .unwrap();
    gauge.set(42.0);
    let server = serve_metrics(loopback(), registry).await.unwrap();
    let (status, body) = get(server.local_addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "lb_kube_services_objects 3",
        "lb_kube_sync_latency_seconds_bucket{le=\"0.0025\"} 1",
        "lb_kube_watch_errors_total{resource=\"services\"} 1",
        "lb_maps_occupancy_entries{map=\"services\"} 42",
    ] {
        assert!(body.contains(line), "{line} missing in\n{body}");
    }
    assert_eq!(get(server.local_addr, "/other").await.0, 404);
}

#[test]
fn default_bind_addresses_are_kube_proxys() {
    assert_eq!(
        lb_telemetry::http::DEFAULT_HEALTH_ADDR.to_string(),
        "0.0.0.0:10256"
    );
    assert_eq!(
        lb_telemetry::http::DEFAULT_METRICS_ADDR.to_string(),
        "127.0.0.1:10249"
    );
}
