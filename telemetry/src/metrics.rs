//! ferrolb's metrics: a [`Registry`] of named families whose series are `metrics` handles,
//! rendered in the Prometheus text format by `metrics-exporter-prometheus`. Names follow
//! `lb_<subsystem>_<name>_<unit|total>`; the registry refuses others, so every subsystem
//! (the Kubernetes source, the maps, the sync loop) follows the same rule.
//!
//! Each family has a recorder of its own. The exporter fixes a histogram's buckets when
//! its recorder is built and never forgets a series; a recorder per family lets a
//! histogram bring its own buckets when it is registered, and lets [`Registry::clear`]
//! drop every series of a family whose label sets come and go (skip reasons, say).
//! Rendering concatenates the families in name order.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use metrics::{Key, Label, Level, Metadata, Recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsError {
    #[error("metric name {0:?} is not lb_<subsystem>_<name>_<unit|total>")]
    BadName(String),
    #[error("metric {name} is already registered as a {kind}")]
    KindClash { name: String, kind: &'static str },
    #[error("metric {0} is already registered with other buckets")]
    BucketClash(String),
    #[error("label name {0:?} is not [a-zA-Z_][a-zA-Z0-9_]*")]
    BadLabel(String),
    #[error("histogram {0} has no buckets")]
    NoBuckets(String),
}

/// Units (and `total`) a metric name may end in.
pub const UNIT_SUFFIXES: &[&str] = &[
    "total", "seconds", "bytes", "entries", "objects", "ratio", "info",
];

/// Buckets for control-plane latencies: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
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

/// A monotonically increasing count.
#[derive(Clone, Debug)]
pub struct Counter(metrics::Counter);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.increment(n);
    }
}

/// A value that goes up and down.
#[derive(Clone, Debug)]
pub struct Gauge(metrics::Gauge);

impl Gauge {
    pub fn set(&self, value: f64) {
        self.0.set(value);
    }
}

/// A distribution over the buckets its family was registered with.
#[derive(Clone, Debug)]
pub struct Histogram(metrics::Histogram);

impl Histogram {
    pub fn observe(&self, value: f64) {
        self.0.record(value);
    }
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

#[derive(Debug)]
struct Family {
    kind: Kind,
    help: String,
    /// Only for histograms.
    buckets: Vec<f64>,
    recorder: PrometheusRecorder,
}

impl Family {
    fn new(name: &str, kind: Kind, help: &str, buckets: &[f64]) -> Result<Self, MetricsError> {
        let mut builder = PrometheusBuilder::new();
        if kind == Kind::Histogram {
            builder = builder
                .set_buckets(buckets)
                .map_err(|_| MetricsError::NoBuckets(name.to_owned()))?;
        }
        let family = Self {
            kind,
            help: help.to_owned(),
            buckets: buckets.to_vec(),
            recorder: builder.build_recorder(),
        };
        family.describe(name);
        Ok(family)
    }

    fn describe(&self, name: &str) {
        let (key, help) = (name.to_owned().into(), self.help.clone().into());
        match self.kind {
            Kind::Counter => self.recorder.describe_counter(key, None, help),
            Kind::Gauge => self.recorder.describe_gauge(key, None, help),
            Kind::Histogram => self.recorder.describe_histogram(key, None, help),
        }
    }
}

/// The exporter ignores metadata; one value serves every series.
const METADATA: Metadata<'static> = Metadata::new("ferrolb", Level::INFO, None);

/// Holds every metric; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Registry(Arc<Mutex<BTreeMap<String, Family>>>);

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    fn families(&self) -> MutexGuard<'_, BTreeMap<String, Family>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers one series of `name` with `register`, after checking that the name, the
    /// labels, the kind and the buckets agree with what is registered.
    fn series<T>(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
        buckets: &[f64],
        register: impl FnOnce(&PrometheusRecorder, &Key) -> T,
    ) -> Result<T, MetricsError> {
        check_metric_name(name)?;
        for (label, _) in labels {
            check_label(label)?;
        }
        let mut families = self.families();
        if !families.contains_key(name) {
            families.insert(name.to_owned(), Family::new(name, kind, help, buckets)?);
        }
        let family = &families[name];
        if family.kind != kind {
            return Err(MetricsError::KindClash {
                name: name.to_owned(),
                kind: family.kind.name(),
            });
        }
        if family.buckets != buckets {
            return Err(MetricsError::BucketClash(name.to_owned()));
        }
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new((*k).to_owned(), (*v).to_owned()))
            .collect();
        let key = Key::from_parts(name.to_owned(), labels);
        Ok(register(&family.recorder, &key))
    }

    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Counter, MetricsError> {
        self.series(name, help, Kind::Counter, labels, &[], |r, key| {
            Counter(r.register_counter(key, &METADATA))
        })
    }

    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
    ) -> Result<Gauge, MetricsError> {
        self.series(name, help, Kind::Gauge, labels, &[], |r, key| {
            Gauge(r.register_gauge(key, &METADATA))
        })
    }

    /// `bounds` are the buckets' upper bounds, increasing; every series of a family has the
    /// same.
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Result<Histogram, MetricsError> {
        self.series(name, help, Kind::Histogram, labels, bounds, |r, key| {
            Histogram(r.register_histogram(key, &METADATA))
        })
    }

    /// Drops every series of `name` (for label sets that come and go, like reasons). Handles
    /// taken before keep working but are no longer rendered.
    pub fn clear(&self, name: &str) {
        let mut families = self.families();
        if let Some(family) = families.get_mut(name) {
            if let Ok(fresh) = Family::new(name, family.kind, &family.help, &family.buckets) {
                *family = fresh;
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        self.families()
            .values()
            .map(|family| family.recorder.handle().render())
            .collect()
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

    #[test]
    fn help_and_type_lines_and_family_order() {
        let r = Registry::new();
        r.gauge(
            "lb_maps_occupancy_entries",
            "Entries per map.",
            &[("map", "b")],
        )
        .unwrap()
        .set(2.0);
        r.counter("lb_kube_updates_total", "Snapshots.", &[])
            .unwrap()
            .inc();
        let text = r.render();
        assert!(text.contains("# HELP lb_maps_occupancy_entries Entries per map.\n"));
        assert!(text.contains("# TYPE lb_maps_occupancy_entries gauge\n"));
        assert!(text.contains("lb_maps_occupancy_entries{map=\"b\"} 2\n"));
        let kube = text.find("lb_kube_updates_total 1").unwrap();
        let maps = text.find("lb_maps_occupancy_entries{").unwrap();
        assert!(kube < maps, "families render in name order:\n{text}");
    }

    #[test]
    fn clear_drops_every_series_of_a_family() {
        let r = Registry::new();
        let name = "lb_kube_skipped_objects";
        r.gauge(name, "Skipped.", &[("reason", "bad_port")])
            .unwrap()
            .set(1.0);
        r.clear(name);
        r.gauge(name, "Skipped.", &[("reason", "malformed")])
            .unwrap()
            .set(2.0);
        let text = r.render();
        assert!(!text.contains("bad_port"), "{text}");
        assert!(text.contains("lb_kube_skipped_objects{reason=\"malformed\"} 2"));
        assert!(text.contains("# HELP lb_kube_skipped_objects Skipped."));
    }

    #[test]
    fn a_family_keeps_its_buckets_and_refuses_bad_names_and_labels() {
        let r = Registry::new();
        let name = "lb_sync_event_to_map_seconds";
        let first = r.histogram(name, "Latency.", &[], &[0.5, 1.0]).unwrap();
        first.observe_duration(Duration::from_millis(700));
        assert_eq!(
            r.histogram(name, "Latency.", &[], LATENCY_BUCKETS)
                .unwrap_err(),
            MetricsError::BucketClash(name.to_owned())
        );
        assert_eq!(
            r.histogram("lb_x_y_seconds", "x", &[], &[]).unwrap_err(),
            MetricsError::NoBuckets("lb_x_y_seconds".to_owned())
        );
        assert!(matches!(
            r.counter("lb_x_y_total", "x", &[("0bad", "v")]),
            Err(MetricsError::BadLabel(_))
        ));
        assert!(matches!(
            r.counter("lb_x_total", "x", &[]),
            Err(MetricsError::BadName(_))
        ));
        let text = r.render();
        assert!(text.contains("lb_sync_event_to_map_seconds_bucket{le=\"0.5\"} 0"));
        assert!(text.contains("lb_sync_event_to_map_seconds_bucket{le=\"1\"} 1"));
    }
}
