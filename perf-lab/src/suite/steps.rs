//! The packet layers as steps of a run, each at every service set of the plan (the
//! socket layers are in `sockets.rs`).

use std::time::Duration;

use crate::{
    control::{self, ControlResult},
    cost::{self, CostResult},
    generator::Generator,
    netns::Netns,
    peers::{Peer, PeerError, PeerKind},
    programs::ProgramsError,
    rate::{self, FlowKind, RateResult},
    services::ServiceSet,
};

use super::{layer::LayerRun, progress::Progress, Suite, SuiteError};

impl Suite<'_> {
    /// ferrolb's XDP program in BPF_PROG_RUN, per packet class.
    pub(super) fn cost_layer(&mut self) -> Result<Vec<CostResult>, SuiteError> {
        let plan = self.plan;
        if !plan.layers.cost {
            return Ok(Vec::new());
        }
        self.per_set("program cost", |set, rounds| {
            let result = cost::measure(set, &plan.families, &plan.cost, plan.runs, |round| {
                rounds.done(round)
            })?;
            if let Some(why) = &result.unsupported {
                tracing::warn!(
                    services = set.services,
                    reason = %why,
                    "ferrolb cannot hold this set"
                );
                rounds.skip_rest();
            }
            Ok(result)
        })
    }

    /// Programming time from empty, every tool.
    pub(super) fn control_layer(&mut self) -> Result<Vec<ControlResult>, SuiteError> {
        let plan = self.plan;
        if !plan.layers.control {
            return Ok(Vec::new());
        }
        let scratch = control::Scratch::create()?;
        let limits = control::Limits {
            timeout: plan.load_timeout(),
            slow: Duration::from_secs_f64(plan.slow_load_s),
        };
        let per_set = self.per_set("control plane", |set, rounds| {
            Ok(control::measure(
                &scratch,
                set,
                plan.runs,
                limits,
                |round| rounds.done(round),
            )?)
        })?;
        Ok(per_set.into_iter().flatten().collect())
    }

    /// Loads the control layer stopped at their deadline are not tried again by the later
    /// layers: the same rule file would only take as long again.
    pub(super) fn remember_stopped_loads(&mut self, control: &[ControlResult]) {
        for c in control {
            if let (Some(why), Some(peer)) = (&c.unsupported, c.tool.peer()) {
                self.stopped.remember(peer, c.services, why);
            }
        }
    }

    /// Delivered packet rate through every peer, every family and flow kind.
    pub(super) fn rate_layer(&mut self) -> Result<Vec<RateResult>, SuiteError> {
        let plan = self.plan;
        if !plan.layers.rate {
            return Ok(Vec::new());
        }
        let park = Netns::create("park").map_err(ProgramsError::from)?;
        let mut generator = Generator::load(self.generator_cpu, &park)?;
        let mut peers = plan
            .peers
            .iter()
            .map(|&kind| Peer::create(kind, plan.families.len()).map_err(peer_err(kind)))
            .collect::<Result<Vec<_>, _>>()?;
        // Every peer is measured in every family on the same topology and programming.
        let cells: Vec<_> = plan
            .families
            .iter()
            .flat_map(|&family| FlowKind::ALL.map(|flows| (family, flows)))
            .map(|(family, flows)| {
                let name = format!("{} {}", family.name(), flows.name());
                ((family, flows), name)
            })
            .collect();
        self.layer_run("rate").measure(
            &mut peers,
            &cells,
            |peer, set| {
                peer.program(set, &plan.families, plan.load_timeout())
                    .map_err(peer_err(peer.kind))
            },
            |peer, set, (family, flows), why| RateResult::new(peer.kind, family, set, flows, why),
            |peer, (family, flows)| {
                Ok(rate::run_once(
                    &mut generator,
                    peer,
                    family,
                    flows,
                    &plan.rate,
                )?)
            },
        )
    }

    /// The peers × cells loop of the rate, TCP and east-west layers, over every service
    /// set.
    pub(super) fn layer_run(&mut self, layer: &'static str) -> LayerRun<'_> {
        LayerRun {
            sets: &self.sets,
            progress: &mut self.progress,
            stopped: &mut self.stopped,
            layer,
            runs: self.plan.runs,
        }
    }

    /// The loop of the cost and control layers: `measure` at every service set, its
    /// rounds counted in the progress line.
    fn per_set<T>(
        &mut self,
        layer: &'static str,
        mut measure: impl FnMut(&ServiceSet, &mut Rounds) -> Result<T, SuiteError>,
    ) -> Result<Vec<T>, SuiteError> {
        let mut all = Vec::new();
        for set in &self.sets {
            tracing::info!(services = set.services, "{layer}");
            let mut rounds = Rounds {
                progress: &mut self.progress,
                layer,
                services: set.services,
                runs: self.plan.runs,
                done: 0,
            };
            all.push(measure(set, &mut rounds)?);
        }
        Ok(all)
    }
}

/// The progress of one layer at one service set, counted in rounds.
struct Rounds<'a> {
    progress: &'a mut Progress,
    layer: &'static str,
    services: u32,
    runs: usize,
    done: usize,
}

impl Rounds<'_> {
    fn done(&mut self, round: usize) {
        self.done = round;
        self.progress.step(&format!(
            "{}, {} services, round {round}/{}",
            self.layer, self.services, self.runs
        ));
    }

    /// Counts the rounds that will not run, so the progress total stays right.
    fn skip_rest(&mut self) {
        for round in self.done..self.runs {
            self.progress.step(&format!(
                "{}, {} services, skipped {round}",
                self.layer, self.services
            ));
        }
    }
}

fn peer_err(kind: PeerKind) -> impl Fn(PeerError) -> SuiteError {
    move |source| SuiteError::Peer {
        peer: kind.name(),
        source: Box::new(source),
    }
}
