//! The checker against real sockets on localhost: a backend whose listener closes is
//! drained after `fall` failures and returns after `rise` successes.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc, time::Duration};

use lb_model::{BackendSpec, DesiredState, Frontend, Protocol, Scope, ServiceSpec};
use tokio::net::TcpListener;

use super::{config::Probe, HealthCheck, HealthChecker, HealthChecks};

fn frontend() -> Frontend {
    Frontend {
        vip: "198.18.100.1".parse().unwrap(),
        port: 80,
        protocol: Protocol::Tcp,
        scope: Scope::External,
    }
}

fn desired(backends: &[IpAddr]) -> DesiredState {
    let spec = ServiceSpec {
        name: "web".into(),
        backends: backends
            .iter()
            .map(|a| BackendSpec {
                address: *a,
                weight: 1,
            })
            .collect(),
        table_size: 251,
        reject: false,
        source_ranges: Vec::new(),
        affinity_timeout_s: None,
    };
    DesiredState {
        services: [(frontend(), Arc::new(spec))].into_iter().collect(),
        rejecting: Default::default(),
        settings: Default::default(),
    }
}

fn checks(port: u16) -> HealthChecks {
    BTreeMap::from([(
        frontend(),
        HealthCheck {
            probe: Probe::Tcp,
            port,
            interval: Duration::from_millis(50),
            timeout: Duration::from_millis(50),
            rise: 2,
            fall: 2,
        },
    )])
}

/// Feeds results until a transition; the number of results it took.
async fn until_transition(checker: &mut HealthChecker) -> usize {
    for n in 1..=100 {
        let outcome = checker.next().await;
        if checker.record(outcome) {
            return n;
        }
    }
    panic!("no transition within 100 results");
}

fn weights(state: &DesiredState) -> Vec<u32> {
    state.services[&frontend()]
        .backends
        .iter()
        .map(|b| b.weight)
        .collect()
}

#[tokio::test]
async fn a_closed_backend_is_drained_and_returns_when_it_listens_again() {
    // Two backends on 127.0.0.1 and 127.0.0.2, one port: only the first listens at first.
    let first = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = first.local_addr().unwrap().port();
    let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    let state = desired(&[a, b]);
    let mut checker = HealthChecker::new(None, None);
    checker.configure(&state, &checks(port));
    assert_eq!(weights(&checker.effective(&state)), [1, 1]);

    // 127.0.0.2 refuses: two failures in a row drain it (and only it).
    assert!(until_transition(&mut checker).await >= 2);
    assert_eq!(weights(&checker.effective(&state)), [1, 0]);
    let report = checker.report();
    let down = report.targets.iter().find(|t| t.backend == b).unwrap();
    assert!(down
        .state
        .last_error
        .as_deref()
        .unwrap()
        .contains("connect"));

    // It listens: two successes bring it back.
    let _second = TcpListener::bind(("127.0.0.2", port)).await.unwrap();
    until_transition(&mut checker).await;
    assert_eq!(weights(&checker.effective(&state)), [1, 1]);

    // A reconfiguration without the check stops checking and drains nothing.
    checker.configure(&state, &HealthChecks::new());
    assert!(checker.report().targets.is_empty());
    assert_eq!(weights(&checker.effective(&state)), [1, 1]);
}

#[test]
fn the_config_file_carries_checks_per_service_with_field_errors() {
    let text = "
services:
  - name: web
    vip: 198.18.100.1
    port: 80
    protocol: tcp
    backends: [{address: 198.18.0.11}]
    health: {type: http, path: /healthz, interval_ms: 200, fall: 2}
  - {name: dns, vip: 198.18.100.1, port: 53, protocol: udp}
";
    let (desired, checks) = crate::config::parse_with_health(text).unwrap();
    assert_eq!(desired.services.len(), 2);
    let check = &checks[&frontend()];
    assert_eq!(check.port, 80);
    assert_eq!(check.fall, 2);
    assert_eq!(checks.len(), 1);
    let bad = text.replace("fall: 2", "fall: 0");
    let err = crate::config::parse_with_health(&bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("services[0].health.fall"), "{err}");
}
