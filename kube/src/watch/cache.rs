//! The watch's cache: every object the watches delivered, and per Service the result of
//! the rules, kept between snapshots so that a snapshot recomputes only the Services an
//! event touched ("dirty"), or all of them when this node's facts changed.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::runtime::watcher::Event;

use super::store::{key_of, Key, Store, Touched};
use crate::{
    lenient::Lenient,
    rules::{
        build_service, labels_select, node_info, slice_service, sort_skipped, BuiltService,
        InvalidObject, KubeDesiredState, KubeService, NodeConfig, NodeInfo, ServiceName, Skipped,
        LABEL_SERVICE_NAME,
    },
};

/// One watch event, boxed: the objects are large and of very different sizes.
pub(super) enum Change {
    Service(Box<Event<Lenient<Service>>>),
    Slice(Box<Event<Lenient<EndpointSlice>>>),
    Node(Box<Event<Lenient<Node>>>),
}

/// The objects and the per-Service results derived from them.
pub(super) struct Cache {
    cfg: NodeConfig,
    service_objects: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    /// Slices by the Service they name (rule 3).
    slices_of: BTreeMap<ServiceName, BTreeSet<Key>>,
    node: NodeInfo,
    node_skipped: Vec<Skipped>,
    /// Per-Service results, kept between snapshots so a snapshot recomputes only the
    /// dirty Services: the programmable ones, and the problems of those with any.
    services: imbl::OrdMap<Arc<ServiceName>, Arc<KubeService>>,
    problems: BTreeMap<ServiceName, Vec<Skipped>>,
    /// Slices that do not parse, with the problem they are reported as.
    invalid_slices: BTreeMap<Key, Skipped>,
    dirty: BTreeSet<ServiceName>,
    all_dirty: bool,
}

fn lenient_service_name(obj: &Lenient<Service>) -> Option<ServiceName> {
    key_of(obj).map(|(ns, name)| ServiceName::new(ns, name))
}

fn lenient_slice_service(obj: &Lenient<EndpointSlice>) -> Option<ServiceName> {
    match obj {
        Lenient::Valid(slice) => slice_service(slice),
        Lenient::Invalid { metadata, .. } => {
            let name = metadata.labels.as_ref()?.get(LABEL_SERVICE_NAME)?;
            Some(ServiceName::new(
                metadata.namespace.clone().unwrap_or_default(),
                name.clone(),
            ))
        }
    }
}

impl Cache {
    pub(super) fn new(cfg: NodeConfig) -> Self {
        let mut node_skipped = Vec::new();
        let node = node_info(None, &cfg, &mut node_skipped);
        Self {
            cfg,
            service_objects: Store::new(),
            slices: Store::new(),
            nodes: Store::new(),
            slices_of: BTreeMap::new(),
            node,
            node_skipped,
            services: imbl::OrdMap::new(),
            problems: BTreeMap::new(),
            invalid_slices: BTreeMap::new(),
            dirty: BTreeSet::new(),
            all_dirty: false,
        }
    }

    /// Every resource has been listed completely at least once.
    pub(super) fn synced(&self) -> bool {
        self.service_objects.synced && self.slices.synced && self.nodes.synced
    }

    pub(super) fn apply(&mut self, change: Change) {
        match change {
            Change::Service(event) => {
                let touched = self.service_objects.apply(*event);
                self.services_touched(touched);
            }
            Change::Slice(event) => {
                let touched = self.slices.apply(*event);
                self.slices_touched(touched);
            }
            Change::Node(event) => {
                if !matches!(self.nodes.apply(*event), Touched::Nothing) {
                    self.node_touched();
                }
            }
        }
    }

    fn services_touched(&mut self, touched: Touched<Service>) {
        match touched {
            Touched::One { before, after } => {
                self.dirty.extend(
                    before
                        .iter()
                        .chain(after.iter())
                        .filter_map(lenient_service_name),
                );
            }
            Touched::Relisted { before } => {
                self.dirty.extend(
                    before
                        .values()
                        .chain(self.service_objects.objects.values())
                        .filter_map(lenient_service_name),
                );
            }
            Touched::Nothing => {}
        }
    }

    fn slices_touched(&mut self, touched: Touched<EndpointSlice>) {
        match touched {
            Touched::One { before, after } => {
                let Some(key) = before.as_ref().or(after.as_ref()).and_then(key_of) else {
                    return;
                };
                match after.as_ref().and_then(|s| self.invalid_slice(s)) {
                    Some(problem) => self.invalid_slices.insert(key.clone(), problem),
                    None => self.invalid_slices.remove(&key),
                };
                if let Some(svc) = before.as_ref().and_then(lenient_slice_service) {
                    if let Some(keys) = self.slices_of.get_mut(&svc) {
                        keys.remove(&key);
                        if keys.is_empty() {
                            self.slices_of.remove(&svc);
                        }
                    }
                    self.dirty.insert(svc);
                }
                if let Some(svc) = after.as_ref().and_then(lenient_slice_service) {
                    self.slices_of.entry(svc.clone()).or_default().insert(key);
                    self.dirty.insert(svc);
                }
            }
            Touched::Relisted { before } => {
                self.dirty
                    .extend(before.values().filter_map(lenient_slice_service));
                self.slices_of.clear();
                self.invalid_slices = self
                    .slices
                    .objects
                    .iter()
                    .filter_map(|(key, slice)| Some((key.clone(), self.invalid_slice(slice)?)))
                    .collect();
                for (key, slice) in &self.slices.objects {
                    if let Some(svc) = lenient_slice_service(slice) {
                        self.dirty.insert(svc.clone());
                        self.slices_of.entry(svc).or_default().insert(key.clone());
                    }
                }
            }
            Touched::Nothing => {}
        }
    }

    /// Node status changes often; only a change in what the rules use (addresses, zone,
    /// eligibility) recomputes every Service.
    fn node_touched(&mut self) {
        let mut skipped = Vec::new();
        let ours = self
            .nodes
            .objects
            .iter()
            .find(|((_, name), _)| *name == self.cfg.node_name)
            .map(|(_, n)| n);
        let node = match ours {
            Some(Lenient::Valid(node)) => Some(node),
            Some(Lenient::Invalid { error, .. }) => {
                skipped.push(Skipped {
                    object: format!("Node /{}", self.cfg.node_name),
                    problem: InvalidObject::Malformed {
                        error: error.clone(),
                    },
                });
                None
            }
            None => None,
        };
        let info = node_info(node, &self.cfg, &mut skipped);
        self.node_skipped = skipped;
        if info != self.node {
            self.node = info;
            self.all_dirty = true;
        }
    }

    /// How a slice that does not parse is reported; `None` for a valid slice or a broken
    /// one of Services not ours (not our business either).
    fn invalid_slice(&self, slice: &Lenient<EndpointSlice>) -> Option<Skipped> {
        let Lenient::Invalid { metadata, error } = slice else {
            return None;
        };
        labels_select(
            metadata.labels.as_ref(),
            self.cfg.service_proxy_name.as_deref(),
        )
        .then(|| Skipped {
            object: format!(
                "EndpointSlice {}/{}",
                metadata.namespace.as_deref().unwrap_or(""),
                metadata.name.as_deref().unwrap_or("")
            ),
            problem: InvalidObject::Malformed {
                error: error.clone(),
            },
        })
    }

    fn rebuild(&mut self, name: &ServiceName) {
        let key = (name.namespace.clone(), name.name.clone());
        let (service, problems) = match self.service_objects.objects.get(&key) {
            None => (None, Vec::new()),
            Some(Lenient::Invalid { error, .. }) => (
                None,
                vec![Skipped {
                    object: format!("Service {name}"),
                    problem: InvalidObject::Malformed {
                        error: error.clone(),
                    },
                }],
            ),
            Some(Lenient::Valid(svc)) => {
                let slices: Vec<&EndpointSlice> = self
                    .slices_of
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.slices.objects.get(k).and_then(Lenient::valid))
                    .collect();
                let BuiltService { service, skipped } =
                    build_service(svc, &slices, &self.node, &self.cfg);
                (service.map(Arc::new), skipped)
            }
        };
        match service {
            Some(service) => self.services.insert(Arc::new(name.clone()), service),
            None => self.services.remove(name),
        };
        if problems.is_empty() {
            self.problems.remove(name);
        } else {
            self.problems.insert(name.clone(), problems);
        }
    }

    /// The state of every object, and the Services recomputed for it (whose results may
    /// differ from the previous snapshot's).
    pub(super) fn snapshot(&mut self) -> (KubeDesiredState, Vec<ServiceName>) {
        let rebuilt: Vec<ServiceName> = if std::mem::take(&mut self.all_dirty) {
            self.dirty.clear();
            let names: BTreeSet<ServiceName> = self
                .service_objects
                .objects
                .values()
                .filter_map(lenient_service_name)
                .chain(self.services.keys().map(|name| (**name).clone()))
                .chain(self.problems.keys().cloned())
                .collect();
            names.into_iter().collect()
        } else {
            std::mem::take(&mut self.dirty).into_iter().collect()
        };
        for name in &rebuilt {
            self.rebuild(name);
        }
        let mut skipped = self.node_skipped.clone();
        skipped.extend(self.problems.values().flatten().cloned());
        skipped.extend(self.invalid_slices.values().cloned());
        sort_skipped(&mut skipped);
        let state = KubeDesiredState {
            node: self.node.clone(),
            services: self.services.clone(),
            skipped,
        };
        (state, rebuilt)
    }
}

#[cfg(test)]
mod tests;
