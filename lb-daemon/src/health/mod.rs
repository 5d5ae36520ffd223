//! Active health checks (config-file mode): every backend of a service with a `health:`
//! block is checked on its own timer; one that fails `fall` times in a row is drained
//! (weight 0) until it passes `rise` times in a row. In cluster mode the EndpointSlice
//! conditions decide and nothing here runs.
//!
//! Why drain and not remove: a drained backend keeps its backend record, so the flow
//! table's entries for it stay valid and its established flows stay on it (a backend that
//! is merely slow keeps its connections), while its Maglev slots go to the others for new
//! flows. Removing it would retire the record and send its established flows through
//! Maglev to another backend, which answers them with a reset.
//!
//! - [`config`]: the `health:` block of the file;
//! - [`probe`]: one TCP or HTTP check;
//! - [`state`]: the rise/fall state of one backend;
//! - [`publish`]: the state file `ferrolb list` reads.

pub mod config;
pub mod probe;
pub mod publish;
pub mod state;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use lb_model::{DesiredState, Frontend};
use lb_telemetry::metrics::Registry;
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::{info, warn};

pub use config::{HealthCheck, HealthConfigError, HealthFile};
pub use state::{BackendHealth, Health};

/// The checks the config file asks for, by frontend.
pub type HealthChecks = BTreeMap<Frontend, HealthCheck>;

/// One backend of one service.
pub type Target = (Frontend, IpAddr);

/// A check's result, from a target's task.
#[derive(Debug)]
pub struct Outcome {
    target: Target,
    /// Which task sent it: results of a replaced task are dropped.
    task: u64,
    result: Result<(), String>,
}

struct Checked {
    check: HealthCheck,
    task: u64,
    handle: JoinHandle<()>,
    health: BackendHealth,
}

/// Runs the checks and keeps every target's health.
pub struct HealthChecker {
    targets: BTreeMap<Target, Checked>,
    next_task: u64,
    tx: mpsc::Sender<Outcome>,
    rx: mpsc::Receiver<Outcome>,
    metrics: Option<Registry>,
    publisher: Option<publish::Publisher>,
}

fn now_unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HealthChecker {
    /// `publisher` writes the state file after every change; `metrics` gets the
    /// `lb_health_*` series.
    pub fn new(publisher: Option<publish::Publisher>, metrics: Option<Registry>) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        Self {
            targets: BTreeMap::new(),
            next_task: 0,
            tx,
            rx,
            metrics,
            publisher,
        }
    }

    /// Checks exactly the backends of `desired` whose service has a check in `checks`.
    /// Targets whose check is unchanged keep their task and health; new ones start up.
    pub fn configure(&mut self, desired: &DesiredState, checks: &HealthChecks) {
        let mut wanted: BTreeMap<Target, &HealthCheck> = BTreeMap::new();
        for (frontend, spec) in &desired.services {
            if let Some(check) = checks.get(frontend) {
                for backend in &spec.backends {
                    wanted.insert((*frontend, backend.address), check);
                }
            }
        }
        self.targets.retain(|target, checked| {
            let keep = wanted.get(target) == Some(&&checked.check);
            if !keep {
                checked.handle.abort();
            }
            keep
        });
        for (target, check) in wanted {
            if self.targets.contains_key(&target) {
                continue;
            }
            let task = self.next_task;
            self.next_task += 1;
            let handle = spawn_check(target, check.clone(), task, self.tx.clone());
            info!(frontend = %target.0, backend = %target.1, check = %check, "health check started");
            self.targets.insert(
                target,
                Checked {
                    check: check.clone(),
                    task,
                    handle,
                    health: BackendHealth::new(now_unix_s()),
                },
            );
        }
        self.record_gauges();
        self.publish();
    }

    /// The next check result; pending forever while nothing is checked.
    pub async fn next(&mut self) -> Outcome {
        // `self.tx` keeps the channel open, so `recv` never yields `None`.
        loop {
            if let Some(outcome) = self.rx.recv().await {
                return outcome;
            }
        }
    }

    /// Takes a result; `true` when a backend changed health (the effective state changed).
    pub fn record(&mut self, outcome: Outcome) -> bool {
        let Some(checked) = self.targets.get_mut(&outcome.target) else {
            return false;
        };
        if checked.task != outcome.task {
            return false;
        }
        let (frontend, backend) = outcome.target;
        let failed = outcome.result.as_ref().err().cloned();
        let changed = checked.health.record(
            outcome.result,
            checked.check.rise,
            checked.check.fall,
            now_unix_s(),
        );
        self.count_check(&outcome.target, failed.is_none());
        let Some(health) = changed else {
            return false;
        };
        match health {
            Health::Down => warn!(
                %frontend, %backend, error = failed.as_deref().unwrap_or("-"),
                "backend down: drained from the Maglev table (its established flows stay)"
            ),
            Health::Up => info!(%frontend, %backend, "backend up: back in the Maglev table"),
        }
        self.count_transition(&outcome.target, health);
        self.record_gauges();
        self.publish();
        true
    }

    /// `desired` with every down backend drained (weight 0).
    pub fn effective(&self, desired: &DesiredState) -> DesiredState {
        let mut out = desired.clone();
        for (frontend, spec) in &desired.services {
            let down = |addr: IpAddr| {
                self.targets
                    .get(&(*frontend, addr))
                    .is_some_and(|c| c.health.health == Health::Down)
            };
            if spec
                .backends
                .iter()
                .any(|b| b.weight > 0 && down(b.address))
            {
                let mut drained = (**spec).clone();
                for b in &mut drained.backends {
                    if down(b.address) {
                        b.weight = 0;
                    }
                }
                out.services.insert(*frontend, Arc::new(drained));
            }
        }
        out
    }

    /// Every target's check and health.
    pub fn report(&self) -> publish::HealthReport {
        publish::HealthReport::new(
            self.targets
                .iter()
                .map(|(target, c)| (*target, c.check.to_string(), c.health.clone())),
        )
    }

    fn publish(&self) {
        if let Some(publisher) = &self.publisher {
            if let Err(e) = publisher.write(&self.report()) {
                warn!(error = %e, "cannot write the health state file");
            }
        }
    }

    fn count_check(&self, target: &Target, ok: bool) {
        let Some(registry) = &self.metrics else {
            return;
        };
        let (frontend, backend) = (target.0.to_string(), target.1.to_string());
        let result = if ok { "success" } else { "failure" };
        if let Ok(c) = registry.counter(
            "lb_health_checks_total",
            "Health checks run, by service, backend and result",
            &[
                ("service", &frontend),
                ("backend", &backend),
                ("result", result),
            ],
        ) {
            c.inc();
        }
    }

    fn count_transition(&self, target: &Target, to: Health) {
        let Some(registry) = &self.metrics else {
            return;
        };
        let (frontend, backend) = (target.0.to_string(), target.1.to_string());
        if let Ok(c) = registry.counter(
            "lb_health_transitions_total",
            "Backend health changes, by service, backend and new state",
            &[
                ("service", &frontend),
                ("backend", &backend),
                ("to", &to.to_string()),
            ],
        ) {
            c.inc();
        }
    }

    fn record_gauges(&self) {
        let Some(registry) = &self.metrics else {
            return;
        };
        registry.clear("lb_health_backend_up");
        for (target, checked) in &self.targets {
            let (frontend, backend) = (target.0.to_string(), target.1.to_string());
            if let Ok(g) = registry.gauge(
                "lb_health_backend_up",
                "1 while a checked backend is up, 0 while it is drained for failing",
                &[("service", &frontend), ("backend", &backend)],
            ) {
                g.set(if checked.health.health == Health::Up {
                    1.0
                } else {
                    0.0
                });
            }
        }
    }
}

impl Drop for HealthChecker {
    fn drop(&mut self) {
        for checked in self.targets.values() {
            checked.handle.abort();
        }
        if let Some(publisher) = &self.publisher {
            publisher.remove();
        }
    }
}

/// Checks `target` every interval until aborted (or the checker is gone).
fn spawn_check(
    target: Target,
    check: HealthCheck,
    task: u64,
    tx: mpsc::Sender<Outcome>,
) -> JoinHandle<()> {
    let address = SocketAddr::new(target.1, check.port);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(check.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let result = probe::run(&check, address).await;
            if tx
                .send(Outcome {
                    target,
                    task,
                    result,
                })
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests;
