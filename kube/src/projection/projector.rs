//! The incremental projection: [`Projector`] keeps [`to_datapath`](super::to_datapath)'s result up to
//! date one Service at a time.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use lb_model::{DesiredState, Frontend, Scope, Settings};

use super::{claims_of, Claim, ProjectionReport, ServiceClaims, SkippedFrontend, Unsupported};
use crate::rules::{KubeService, ServiceName};

/// What one Service contributes to the report, given who holds its frontends.
#[derive(Clone, Debug, Default, PartialEq)]
struct ServiceReport {
    programmed: usize,
    skipped: Vec<SkippedFrontend>,
    unsupported: Vec<Unsupported>,
}

/// [`to_datapath`](super::to_datapath) kept up to date one Service at a time: a change recomputes the changed
/// Services' claims and the holders of the frontends they touch, not every frontend of
/// the cluster, and tells which frontends' specs changed (what the planner must look at).
/// `kube/tests/projection.rs` holds it equal to `to_datapath` on random change sequences.
#[derive(Debug)]
pub struct Projector {
    settings: Settings,
    /// Whether frontends are programmed in the internal scope too.
    internal_scope: bool,
    claims: BTreeMap<ServiceName, ServiceClaims>,
    /// Claims of each servable frontend as (service, index of the claim); the first holds
    /// the frontend, as in `to_datapath`'s order.
    claimants: HashMap<Frontend, BTreeSet<(ServiceName, usize)>>,
    reports: BTreeMap<ServiceName, ServiceReport>,
    desired: Arc<DesiredState>,
    report: Arc<ProjectionReport>,
}

impl Projector {
    /// Both scopes, as [`to_datapath`](super::to_datapath).
    pub fn new(settings: Settings) -> Self {
        Self::with_scopes(settings, true)
    }

    /// The external scope only: for a datapath without the socket programs.
    pub fn external_only(settings: Settings) -> Self {
        Self::with_scopes(settings, false)
    }

    fn with_scopes(settings: Settings, internal_scope: bool) -> Self {
        Self {
            settings,
            internal_scope,
            claims: BTreeMap::new(),
            claimants: HashMap::new(),
            reports: BTreeMap::new(),
            desired: Arc::new(DesiredState {
                services: Default::default(),
                rejecting: Arc::default(),
                settings,
            }),
            report: Arc::new(ProjectionReport::default()),
        }
    }

    /// The projection of everything seen so far, as `to_datapath` gives it (without the
    /// internal scope when built `external_only`).
    pub fn desired(&self) -> &Arc<DesiredState> {
        &self.desired
    }

    pub fn report(&self) -> &Arc<ProjectionReport> {
        &self.report
    }

    /// Takes in the new version of each listed Service (`None`: gone or not servable) and
    /// returns the (scoped) frontends whose datapath spec changed.
    pub fn update<'a>(
        &mut self,
        services: impl IntoIterator<Item = (&'a ServiceName, Option<&'a KubeService>)>,
    ) -> BTreeSet<Frontend> {
        let mut touched: BTreeSet<Frontend> = BTreeSet::new();
        let mut rereport: BTreeSet<ServiceName> = BTreeSet::new();
        let mut rejecting_changed = false;
        for (name, svc) in services {
            let new = svc.map(|svc| claims_of(svc, &self.settings, self.internal_scope));
            let old = match &new {
                Some(claims) => self.claims.insert(name.clone(), claims.clone()),
                None => self.claims.remove(name),
            };
            if old == new {
                continue;
            }
            rejecting_changed |=
                old.as_ref().map(|c| &c.rejecting) != new.as_ref().map(|c| &c.rejecting);
            for (index, claim) in old.iter().flat_map(|c| c.claims.iter().enumerate()) {
                if let Claim::Serve(serve) = claim {
                    touched.insert(serve.frontend);
                    if let Some(set) = self.claimants.get_mut(&serve.frontend) {
                        set.remove(&(name.clone(), index));
                        if set.is_empty() {
                            self.claimants.remove(&serve.frontend);
                        }
                    }
                }
            }
            for (index, claim) in new.iter().flat_map(|c| c.claims.iter().enumerate()) {
                if let Claim::Serve(serve) = claim {
                    touched.insert(serve.frontend);
                    self.claimants
                        .entry(serve.frontend)
                        .or_default()
                        .insert((name.clone(), index));
                }
            }
            rereport.insert(name.clone());
        }
        // A frontend changing hands changes the report of every Service claiming it.
        for frontend in &touched {
            for (name, _) in self.claimants.get(frontend).into_iter().flatten() {
                rereport.insert(name.clone());
            }
        }
        let mut report_changed = false;
        for name in rereport {
            let new = self
                .claims
                .get(&name)
                .map(|c| self.service_report(&name, c));
            let old = match new {
                Some(r) => self.reports.insert(name, r.clone()).filter(|old| *old == r),
                None => self.reports.remove(&name).filter(|_| false),
            };
            report_changed |= old.is_none();
        }
        let changed = self.take_holders(touched, rejecting_changed);
        if report_changed {
            self.report = Arc::new(self.whole_report());
        }
        changed
    }

    /// Makes the desired state follow the holders of the `touched` frontends (keyed in
    /// the external scope), in every scope, and the Services' ClusterIPs when they may
    /// have changed; returns the scoped frontends that changed.
    fn take_holders(
        &mut self,
        touched: BTreeSet<Frontend>,
        rejecting_changed: bool,
    ) -> BTreeSet<Frontend> {
        let mut changed = BTreeSet::new();
        let mut services = None;
        for frontend in touched {
            let holder = self.claimants.get(&frontend).and_then(|set| {
                let (name, index) = set.first()?;
                match &self.claims[name].claims[*index] {
                    Claim::Serve(serve) => Some(serve),
                    Claim::Skipped(_) => None,
                }
            });
            for scope in [Scope::External, Scope::Internal] {
                let scoped = frontend.in_scope(scope);
                let wanted = holder.and_then(|serve| serve.spec(scope));
                let current = self.desired.services.get(&scoped);
                if wanted.map(|s| &**s) == current.map(|s| &**s) {
                    continue;
                }
                // Copies the map (not the specs) once per update: the previous snapshot is
                // still in the consumer's hands.
                let map = services.get_or_insert_with(|| self.desired.services.clone());
                match wanted {
                    Some(spec) => map.insert(scoped, Arc::clone(spec)),
                    None => map.remove(&scoped),
                };
                changed.insert(scoped);
            }
        }
        let rejecting = rejecting_changed
            .then(|| {
                self.claims
                    .values()
                    .flat_map(|c| c.rejecting.iter().copied())
                    .collect::<BTreeSet<_>>()
            })
            .filter(|r| *r != *self.desired.rejecting);
        if services.is_some() || rejecting.is_some() {
            self.desired = Arc::new(DesiredState {
                services: services.unwrap_or_else(|| self.desired.services.clone()),
                rejecting: rejecting.map_or_else(|| Arc::clone(&self.desired.rejecting), Arc::new),
                settings: self.settings,
            });
        }
        changed
    }

    fn service_report(&self, name: &ServiceName, claims: &ServiceClaims) -> ServiceReport {
        let mut report = ServiceReport {
            unsupported: claims.lacks.clone(),
            ..ServiceReport::default()
        };
        for (index, claim) in claims.claims.iter().enumerate() {
            match claim {
                Claim::Skipped(s) => report.skipped.push(s.clone()),
                Claim::Serve(serve) => {
                    let holder = self
                        .claimants
                        .get(&serve.frontend)
                        .and_then(BTreeSet::first)
                        .expect("a servable claim is listed");
                    if holder.0 == *name && holder.1 == index {
                        report.programmed += 1;
                    } else {
                        report.skipped.push(serve.conflict(name, &holder.0));
                    }
                }
            }
        }
        report
    }

    fn whole_report(&self) -> ProjectionReport {
        let mut report = ProjectionReport::default();
        for (name, r) in &self.reports {
            report.programmed += r.programmed;
            report.skipped.extend(r.skipped.iter().cloned());
            report
                .unsupported
                .extend(r.unsupported.iter().map(|what| (name.clone(), *what)));
        }
        report
    }
}
