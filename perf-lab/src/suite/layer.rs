//! The loop the rate and TCP layers share: at every service set, program every peer, then
//! run interleaved rounds of every peer through every cell.

use std::collections::HashMap;

use crate::{
    eastwest::EwPeer,
    measured::NotMeasured,
    peers::{Peer, PeerKind, Programmed},
    rate::{self, RateResult},
    services::ServiceSet,
    tcp::{self, TcpPeer, TcpResult},
};

use super::{progress::Progress, SuiteError};

/// Loads stopped at their deadline, by peer and service count: a later layer does not try
/// the same rule file again, it would only take as long again.
#[derive(Default)]
pub(super) struct StoppedLoads(HashMap<(PeerKind, u32), NotMeasured>);

impl StoppedLoads {
    pub(super) fn remember(&mut self, kind: PeerKind, services: u32, why: &NotMeasured) {
        if why.is_load_stopped() {
            self.0.insert((kind, services), why.clone());
        }
    }

    fn get(&self, kind: PeerKind, services: u32) -> Option<&NotMeasured> {
        self.0.get(&(kind, services))
    }
}

/// Programs one peer for `set` (or takes the reason of a load already stopped at its
/// deadline for the peer's rule set and this size), logs the outcome and remembers a
/// newly stopped load for the later layers. Returns why the peer is not measured, if it
/// is not.
fn program_peer(
    stopped: &mut StoppedLoads,
    (name, rules): (&'static str, Option<PeerKind>),
    set: &ServiceSet,
    layer: &str,
    program: impl FnOnce() -> Result<Programmed, SuiteError>,
) -> Result<Option<NotMeasured>, SuiteError> {
    let programmed = match rules.and_then(|rules| stopped.get(rules, set.services)) {
        Some(why) => Programmed::NotMeasured(why.clone()),
        None => program()?,
    };
    match programmed {
        Programmed::Done(took) => {
            tracing::info!(
                peer = name,
                services = set.services,
                layer,
                ?took,
                "programmed"
            );
            Ok(None)
        }
        Programmed::NotMeasured(why) => {
            tracing::warn!(
                peer = name,
                services = set.services,
                layer,
                reason = %why,
                "not measured"
            );
            if let Some(rules) = rules {
                stopped.remember(rules, set.services, &why);
            }
            Ok(Some(why))
        }
    }
}

/// What a layer run at one service set shares with every other: where progress and
/// stopped loads are kept, and the run's shape.
pub(super) struct LayerRun<'a> {
    pub(super) sets: &'a [ServiceSet],
    pub(super) progress: &'a mut Progress,
    pub(super) stopped: &'a mut StoppedLoads,
    pub(super) layer: &'static str,
    pub(super) runs: usize,
}

impl LayerRun<'_> {
    /// At every service set: programs every peer (`program`; its reason, if it is not
    /// measured, goes into every one of its results), makes one result per peer and cell
    /// (`new_result`, peer-major), then runs `runs` rounds, each running every peer
    /// through every cell (a family × flow kind, a TCP load) with `run`, the peer order
    /// rotated every round so no peer always runs right after the same one. Peers not
    /// measured only count their steps.
    pub(super) fn measure<P, C: Copy, R>(
        &mut self,
        peers: &mut [P],
        cells: &[(C, String)],
        mut program: impl FnMut(&mut P, &ServiceSet) -> Result<Programmed, SuiteError>,
        new_result: impl Fn(&P, &ServiceSet, C, Option<NotMeasured>) -> R,
        mut run: impl FnMut(&P, C) -> Result<R::Sample, SuiteError>,
    ) -> Result<Vec<R>, SuiteError>
    where
        P: LayerPeer,
        R: Cell,
    {
        let mut all = Vec::new();
        for set in self.sets {
            let mut results = Vec::new();
            let mut measured = Vec::new();
            for peer in peers.iter_mut() {
                let why = program_peer(
                    self.stopped,
                    (peer.name(), peer.rules()),
                    set,
                    self.layer,
                    || program(peer, set),
                )?;
                measured.push(why.is_none());
                for (cell, _) in cells {
                    results.push(new_result(peer, set, *cell, why.clone()));
                }
            }
            self.rounds(set, peers, cells, &measured, &mut results, &mut run)?;
            for r in &mut results {
                r.finish();
            }
            all.extend(results);
        }
        Ok(all)
    }

    /// The rounds of [`Self::measure`] at one service set.
    fn rounds<P: LayerPeer, C: Copy, R: Cell>(
        &mut self,
        set: &ServiceSet,
        peers: &[P],
        cells: &[(C, String)],
        measured: &[bool],
        results: &mut [R],
        run: &mut impl FnMut(&P, C) -> Result<R::Sample, SuiteError>,
    ) -> Result<(), SuiteError> {
        let n = peers.len();
        for round in 0..self.runs {
            for i in 0..n {
                let p = (i + round) % n;
                for (c, (cell, cell_name)) in cells.iter().enumerate() {
                    if measured[p] {
                        let sample = run(&peers[p], *cell)?;
                        results[p * cells.len() + c].push(sample);
                    }
                    self.progress.step(&format!(
                        "{}, {} services, {} {cell_name}, run {}/{}",
                        self.layer,
                        set.services,
                        peers[p].name(),
                        round + 1,
                        self.runs
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A peer of a layer, on its own topology.
pub(super) trait LayerPeer {
    fn name(&self) -> &'static str;
    /// The rule set whose load, once stopped at its deadline, is not tried again at the
    /// same size (the datapath peers are keyed by their kind, only the netfilter ones are
    /// ever stopped).
    fn rules(&self) -> Option<PeerKind>;
}

/// The datapath peers of the rate and TCP layers.
macro_rules! datapath_peer {
    ($($peer:ty),*) => {$(
        impl LayerPeer for $peer {
            fn name(&self) -> &'static str {
                self.kind.name()
            }
            fn rules(&self) -> Option<PeerKind> {
                Some(self.kind)
            }
        }
    )*};
}
datapath_peer!(Peer, TcpPeer);

impl LayerPeer for EwPeer {
    fn name(&self) -> &'static str {
        self.kind.name()
    }
    fn rules(&self) -> Option<PeerKind> {
        self.kind.rules()
    }
}

/// A layer's result for one peer and cell, filled run by run.
pub(super) trait Cell {
    type Sample;
    fn push(&mut self, sample: Self::Sample);
    fn finish(&mut self);
}

impl Cell for RateResult {
    type Sample = rate::RateSample;
    fn push(&mut self, sample: Self::Sample) {
        self.samples.push(sample);
    }
    fn finish(&mut self) {
        RateResult::finish(self);
    }
}

impl<P> Cell for TcpResult<P> {
    type Sample = tcp::TcpSample;
    fn push(&mut self, sample: Self::Sample) {
        self.samples.push(sample);
    }
    fn finish(&mut self) {
        TcpResult::finish(self);
    }
}
