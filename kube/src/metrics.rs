//! A small Prometheus registry (text exposition format 0.0.4) and the Kubernetes source's
//! metrics. Names follow `lb_<subsystem>_<name>_<unit|total>`; the registry refuses others,
//! so the daemon's own metrics (map occupancy, ...) follow the same rule when it registers
//! them here.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("metric name {0:?} is not lb_<subsystem>_<name>_<unit|total>")]
    BadName(String),
    #[error("metric {name} is already registered as a {kind}")]
    KindClash { name: String, kind: &'static str },
    #[error("label name {0:?} is not [a-zA-Z_][a-zA-Z0-9_]*")]
    BadLabel(String),
}

/// Units (and `total`) a metric name may end in.
pub const UNIT_SUFFIXES: &[&str] = &[
    "total", "seconds", "bytes", "entries", "objects", "ratio", "info",
];

pub fn check_metric_name(name: &str) -> Result<(), MetricsError> {
    let parts: Vec<&str> = name.split('_').collect();
    let well_formed = parts.len() >= 4
        && parts[0] == "lb"
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && UNIT_SUFFIXES.contains(parts.last().unwrap_or(&""));
    if well_formed {
        Ok(())
    } else {
        Err(MetricsError::BadName(name.to_owned()))
    }
}

fn check_label(name: &str) -> Result<(), MetricsError> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(MetricsError::BadLabel(name.to_owned()))
    }
}

type Labels = Vec<(String, String)>;

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (stored as f64 bits).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

#[derive(Debug)]
struct HistogramData {
    bounds: Vec<f64>,
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Clone, Debug)]
pub struct Histogram(Arc<Mutex<HistogramData>>);

impl Histogram {
    pub fn observe(&self, value: f64) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (bound, count) in h.bounds.clone().iter().zip(0..) {
            if value <= *bound {
                h.counts[count] += 1;
            }
        }
        h.sum += value;
        h.count += 1;
    }
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }
    pub fn count(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).count
    }
}

#[derive(Debug)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

#[derive(Debug)]
struct Family {
    help: String,
    kind: &'static str,
    series: BTreeMap<Labels, Series>,
}

/// Holds every metric; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Registry(Arc<Mutex<BTreeMap<String, Family>>>);

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn series(
        &self,
        name: &str,
        help: &str,
        kind: &'static str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Series,
        pick: impl FnOnce(&Series) -> Option<Series>,
    ) -> Result<Series, MetricsError> {
        check_metric_name(name)?;
        for (l, _) in labels {
            check_label(l)?;
        }
        let mut families = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let family = families.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            return Err(MetricsError::KindClash {
                name: name.to_owned(),
                kind: family.kind,
            });
        }
        let key: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let series = family.series.entry(key).or_insert_with(make);
        Ok(pick(series).expect("a family holds one kind of series"))
    }

    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Counter, MetricsError> {
        match self.series(
            name,
            help,
            "counter",
            labels,
            || Series::Counter(Counter::default()),
            |s| match s {
                Series::Counter(c) => Some(Series::Counter(c.clone())),
                _ => None,
            },
        )? {
            Series::Counter(c) => Ok(c),
            _ => unreachable!("picked a counter"),
        }
    }

    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Gauge, MetricsError> {
        match self.series(
            name,
            help,
            "gauge",
            labels,
            || Series::Gauge(Gauge::default()),
            |s| match s {
                Series::Gauge(g) => Some(Series::Gauge(g.clone())),
                _ => None,
            },
        )? {
            Series::Gauge(g) => Ok(g),
            _ => unreachable!("picked a gauge"),
        }
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Result<Histogram, MetricsError> {
        let bounds = bounds.to_vec();
        match self.series(
            name,
            help,
            "histogram",
            labels,
            || {
                Series::Histogram(Histogram(Arc::new(Mutex::new(HistogramData {
                    counts: vec![0; bounds.len()],
                    bounds,
                    sum: 0.0,
                    count: 0,
                }))))
            },
            |s| match s {
                Series::Histogram(h) => Some(Series::Histogram(h.clone())),
                _ => None,
            },
        )? {
            Series::Histogram(h) => Ok(h),
            _ => unreachable!("picked a histogram"),
        }
    }

    /// Drops every series of `name` (for label sets that come and go, like reasons).
    pub fn clear(&self, name: &str) {
        if let Some(f) = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(name)
        {
            f.series.clear();
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let families = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", fmt_labels(labels, None), c.get());
                    }
                    Series::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", fmt_labels(labels, None), g.get());
                    }
                    Series::Histogram(h) => {
                        let h = h.0.lock().unwrap_or_else(|e| e.into_inner());
                        for (bound, count) in h.bounds.iter().zip(&h.counts) {
                            let le = bound.to_string();
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {count}",
                                fmt_labels(labels, Some(&le))
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            fmt_labels(labels, Some("+Inf")),
                            h.count
                        );
                        let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(labels, None), h.sum);
                        let _ =
                            writeln!(out, "{name}_count{} {}", fmt_labels(labels, None), h.count);
                    }
                }
            }
        }
        out
    }
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn fmt_labels(labels: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Buckets for control-plane latencies: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub const SYNC_LATENCY: &str = "lb_kube_sync_latency_seconds";
pub const SERVICES: &str = "lb_kube_services_objects";
pub const ENDPOINTS: &str = "lb_kube_endpoints_objects";
pub const FRONTENDS_PROGRAMMED: &str = "lb_kube_frontends_entries";
pub const SKIPPED_OBJECTS: &str = "lb_kube_skipped_objects";
pub const SKIPPED_FRONTENDS: &str = "lb_kube_skipped_frontends_entries";
pub const WATCH_EVENTS: &str = "lb_kube_watch_events_total";
pub const WATCH_ERRORS: &str = "lb_kube_watch_errors_total";
pub const UPDATES: &str = "lb_kube_updates_total";

/// The Kubernetes source's metrics, registered in a shared [`Registry`].
#[derive(Clone, Debug)]
pub struct KubeMetrics {
    pub registry: Registry,
    /// From the first event of a batch to its snapshot being published.
    pub sync_latency: Histogram,
    pub services: Gauge,
    pub endpoints: Gauge,
    pub frontends_programmed: Gauge,
    pub updates: Counter,
}

impl KubeMetrics {
    pub fn new(registry: &Registry) -> Result<Self, MetricsError> {
        Ok(Self {
            registry: registry.clone(),
            sync_latency: registry.histogram(
                SYNC_LATENCY,
                "Time from the first API event of a batch to its desired state being published.",
                &[],
                LATENCY_BUCKETS,
            )?,
            services: registry.gauge(SERVICES, "Services in the desired state.", &[])?,
            endpoints: registry.gauge(
                ENDPOINTS,
                "Endpoints in the Cluster sets of the desired state.",
                &[],
            )?,
            frontends_programmed: registry.gauge(
                FRONTENDS_PROGRAMMED,
                "Frontends the datapath projection programs.",
                &[],
            )?,
            updates: registry.counter(UPDATES, "Desired-state snapshots published.", &[])?,
        })
    }

    pub fn watch_event(&self, resource: &str) {
        if let Ok(c) = self.registry.counter(
            WATCH_EVENTS,
            "Watch events received, by resource.",
            &[("resource", resource)],
        ) {
            c.inc();
        }
    }

    pub fn watch_error(&self, resource: &str) {
        if let Ok(c) = self.registry.counter(
            WATCH_ERRORS,
            "Watch and list errors (each followed by a retry), by resource.",
            &[("resource", resource)],
        ) {
            c.inc();
        }
    }

    /// Replaces the by-reason gauges with the current counts.
    pub fn set_skipped(
        &self,
        objects: &BTreeMap<&'static str, usize>,
        frontends: &BTreeMap<&'static str, usize>,
    ) {
        for (name, help, counts) in [
            (
                SKIPPED_OBJECTS,
                "Objects or fields skipped as invalid in the current state, by reason.",
                objects,
            ),
            (
                SKIPPED_FRONTENDS,
                "Frontends the datapath cannot program in the current state, by reason.",
                frontends,
            ),
        ] {
            self.registry.clear(name);
            for (reason, n) in counts {
                if let Ok(g) = self.registry.gauge(name, help, &[("reason", reason)]) {
                    g.set(*n as f64);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_follow_the_house_pattern() {
        assert!(check_metric_name("lb_kube_sync_latency_seconds").is_ok());
        assert!(check_metric_name("lb_maps_occupancy_entries").is_ok());
        assert!(check_metric_name("lb_kube_services").is_err());
        assert!(check_metric_name("kube_services_total").is_err());
        assert!(check_metric_name("lb_Kube_x_total").is_err());
    }

    #[test]
    fn renders_the_text_format() {
        let r = Registry::new();
        let c = r
            .counter(
                "lb_kube_watch_errors_total",
                "Errors.",
                &[("resource", "services")],
            )
            .unwrap();
        c.add(3);
        let h = r
            .histogram("lb_kube_sync_latency_seconds", "Latency.", &[], &[0.1, 1.0])
            .unwrap();
        h.observe(0.5);
        let text = r.render();
        assert!(text.contains("# TYPE lb_kube_watch_errors_total counter"));
        assert!(text.contains("lb_kube_watch_errors_total{resource=\"services\"} 3"));
        assert!(text.contains("lb_kube_sync_latency_seconds_bucket{le=\"0.1\"} 0"));
        assert!(text.contains("lb_kube_sync_latency_seconds_bucket{le=\"1\"} 1"));
        assert!(text.contains("lb_kube_sync_latency_seconds_bucket{le=\"+Inf\"} 1"));
        assert!(text.contains("lb_kube_sync_latency_seconds_count 1"));
        assert!(r.gauge("lb_kube_watch_errors_total", "x", &[]).is_err());
    }
}
