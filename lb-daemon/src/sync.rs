//! The sync engine: the one way anything drives the balancer's maps. It holds the map
//! writer and the planner's view of what the kernel holds, plans a desired state against
//! it, writes the plan and keeps the resulting state. Both daemon modes, the benchmarks,
//! perf-lab and the kernel fixtures all go through it, so the plan → write → keep sequence
//! (and its recovery after a failed write) exists once.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use lb_common::{LbConfig, NextHop, CONFIG_F_READY, CONFIG_F_V6_READY};
use lb_model::{addr_from_bytes, DesiredState, Frontend, Settings};
use tracing::warn;

use crate::{
    host,
    maps::{BalancerMaps, MapWriter, MapsError},
    planner::{self, KernelState, MapOp, PlanError},
};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// How the datapath forwards: what every packet it encapsulates carries, whatever the
/// services are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DatapathParams {
    /// Outer source of IPIP packets.
    pub encap_source: Ipv4Addr,
    /// Outer source of IP6IP6 packets; `None` leaves IPv6 services passed untouched
    /// (`pass_not_ready`) rather than sent from an unspecified address.
    pub encap_source6: Option<Ipv6Addr>,
    /// How long the datapath trusts a cached next hop.
    pub nexthop_ttl: Duration,
    /// How many ICMP answers (reject, too big) the balancer sends.
    pub icmp_limit: IcmpLimit,
    /// How many new flow-table entries the balancer writes.
    pub new_flow_budget: NewFlowBudget,
}

/// The new-flow insert budget, per CPU: flow-table entries written a second, in bursts of
/// up to `burst`; a new flow beyond it is forwarded by Maglev without an entry (counted as
/// `over_budget`; its next packet tries again), so a flood of new flows churns its
/// protocol's table at a bounded pace. See docs/architecture.md#flow-table-pressure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewFlowBudget {
    /// Entries a second; 0: no limit.
    pub per_second: u32,
    /// Entries written back to back before the rate applies; at least 1.
    pub burst: u32,
}

impl NewFlowBudget {
    pub const DEFAULT: Self = Self {
        per_second: 100_000,
        burst: 20_000,
    };
}

impl Default for NewFlowBudget {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The balancer's ICMP answer rate, per CPU (Linux's own ICMP limit is per host, 1000 a
/// second with bursts of 50; an LB answers for many services, so the same per CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpLimit {
    /// Answers a second; 0 sends none (refused and too-big packets are then dropped).
    pub per_second: u16,
    /// Answers sent back to back before the rate applies; at least 1.
    pub burst: u16,
}

impl IcmpLimit {
    pub const DEFAULT: Self = Self {
        per_second: 1000,
        burst: 50,
    };
}

impl Default for IcmpLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What one apply did, and where its time went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Map operations written.
    pub ops: usize,
    /// Planning (pure computation).
    pub plan: Duration,
    /// Writing the plan into the maps.
    pub write: Duration,
}

/// The datapath config a set of parameters asks for; `None` marks the datapath not ready,
/// so it passes everything.
fn lb_config(params: Option<&DatapathParams>, settings: &Settings) -> LbConfig {
    let Some(params) = params else {
        return LbConfig::default();
    };
    LbConfig {
        encap_src_v4: params.encap_source.octets(),
        flow_hash_seed: settings.flow_hash_seed,
        nexthop_ttl_jiffies: crate::host::tick::ticks(
            params.nexthop_ttl,
            crate::host::tick::tick(),
        ),
        flags: if params.encap_source6.is_some() {
            CONFIG_F_READY | CONFIG_F_V6_READY
        } else {
            CONFIG_F_READY
        },
        flow_epoch: 0,
        icmp_rate_per_s: params.icmp_limit.per_second,
        icmp_burst: params.icmp_limit.burst.max(1),
        new_flow_rate_per_s: params.new_flow_budget.per_second,
        new_flow_burst: params.new_flow_budget.burst.max(1),
        flow_cache_skew: 0,
        flow_table_seed: 0,
        tcp_flow_sets: 0,
        udp_flow_sets: 0,
        _pad: 0,
        encap_src_v6: params.encap_source6.map_or([0; 16], |a| a.octets()),
        allowed_vlans: settings.allowed_vlans,
    }
}

/// The balancer's maps and the daemon's knowledge of them.
pub struct SyncEngine {
    writer: MapWriter,
    state: KernelState,
    params: Option<DatapathParams>,
    /// The datapath config as last written.
    lb_config: LbConfig,
    /// The settings `state` was last planned with; a change plans everything again.
    planned_settings: Option<Settings>,
}

impl SyncEngine {
    /// Takes over `maps`: reads back what they hold, so the first plan writes only
    /// differences (a restarted daemon goes on from what the datapath uses), and marks
    /// the datapath ready with `params`. The flow-hash seed already in the maps is kept
    /// until a desired state brings its own.
    pub fn adopt(maps: BalancerMaps, params: &DatapathParams) -> Result<Self, SyncError> {
        let state = maps.read_state()?;
        let current = maps.read_config()?;
        let mut engine = Self {
            writer: MapWriter::new(maps),
            state,
            params: Some(*params),
            lb_config: current,
            planned_settings: None,
        };
        let settings = Settings {
            flow_hash_seed: current.flow_hash_seed,
            allowed_vlans: current.allowed_vlans,
            ..Settings::default()
        };
        engine.write_config(&settings)?;
        Ok(engine)
    }

    /// Changes how the datapath forwards; `None` marks it not ready (it passes every
    /// packet untouched) until parameters are set again.
    pub fn set_params(&mut self, params: Option<&DatapathParams>) -> Result<(), SyncError> {
        self.params = params.copied();
        let settings = Settings {
            flow_hash_seed: self.lb_config.flow_hash_seed,
            allowed_vlans: self.lb_config.allowed_vlans,
            ..Settings::default()
        };
        self.write_config(&settings)
    }

    /// Plans `desired` against the whole kernel state and writes the plan. On a failed
    /// write the bookkeeping is re-read from the maps, so the next attempt starts from the
    /// truth.
    pub fn apply(&mut self, desired: &DesiredState) -> Result<Applied, SyncError> {
        self.write_config(&desired.settings)?;
        let started = Instant::now();
        let (ops, next) = planner::plan(&self.state, desired)?;
        let plan = started.elapsed();
        self.write(&ops)?;
        self.state = next;
        self.planned_settings = Some(desired.settings);
        self.writer.sync_rejecting(&desired.rejecting)?;
        Ok(Applied {
            ops: ops.len(),
            plan,
            write: started.elapsed() - plan,
        })
    }

    /// Like [`Self::apply`], but plans only `changed` (the frontends whose specs may differ
    /// from what was applied last) when it can: after a whole plan with the same settings.
    /// `None` plans everything.
    pub fn apply_changes(
        &mut self,
        desired: &DesiredState,
        changed: Option<&BTreeSet<Frontend>>,
    ) -> Result<Applied, SyncError> {
        let incremental =
            self.state.can_plan_changes() && self.planned_settings == Some(desired.settings);
        let Some(changed) = changed.filter(|_| incremental) else {
            return self.apply(desired);
        };
        self.write_config(&desired.settings)?;
        let started = Instant::now();
        let (ops, undo) = planner::plan_changes(&mut self.state, desired, changed)?;
        let plan = started.elapsed();
        if let Err(e) = self.write(&ops) {
            self.state.revert(undo);
            return Err(e);
        }
        self.writer.sync_rejecting(&desired.rejecting)?;
        Ok(Applied {
            ops: ops.len(),
            plan,
            write: started.elapsed() - plan,
        })
    }

    /// Writes `ops`; after a failure, re-reads the state the maps are really in.
    fn write(&mut self, ops: &[MapOp]) -> Result<(), SyncError> {
        if let Err(e) = self.writer.apply(ops) {
            self.recover(ops);
            return Err(e.into());
        }
        Ok(())
    }

    /// After `ops` failed half-way, with `state` as before them: start again from what the
    /// maps hold.
    fn recover(&mut self, ops: &[MapOp]) {
        match self.writer.maps().read_state() {
            Ok(state) => self.state = state,
            // Keep the old bookkeeping, but a service may already have flipped to a region
            // the plan wrote: keep those regions from being handed out again.
            Err(read) => {
                warn!(error = %read, "cannot re-read the maps after a failed write");
                self.state.reserve_written(ops);
            }
        }
    }

    fn write_config(&mut self, settings: &Settings) -> Result<(), SyncError> {
        let config = lb_config(self.params.as_ref(), settings);
        if config != self.lb_config {
            self.writer.write_config(&config)?;
            self.lb_config = config;
        }
        Ok(())
    }

    /// What the kernel holds, as the planner sees it.
    pub fn state(&self) -> &KernelState {
        &self.state
    }

    /// The maps, for reading (counters, flows, `explain`).
    pub fn maps(&self) -> &BalancerMaps {
        self.writer.maps()
    }

    /// Fixes a backend's next hop on every CPU until the hop's expiry, bypassing the
    /// kernel's route lookup: for labs, benchmarks and fixtures without routes.
    pub fn set_static_nexthop(&mut self, backend_id: u32, hop: NextHop) -> Result<(), SyncError> {
        Ok(self.writer.set_static_nexthop(backend_id, hop)?)
    }

    /// Forwards the datapath's neighbour-resolution requests to the kernel.
    pub fn resolve_neighbour_misses(&mut self) {
        let misses = match self.writer.drain_neigh_misses() {
            Ok(misses) => misses,
            Err(e) => {
                warn!(error = %e, "reading neighbour misses");
                return;
            }
        };
        for (backend_id, miss) in misses {
            let Some(hop) = addr_from_bytes(&miss.nexthop, miss.family) else {
                warn!(
                    backend_id,
                    family = miss.family,
                    "neighbour miss of an unknown family"
                );
                continue;
            };
            if let Err(e) = host::request_resolution(hop, miss.ifindex) {
                warn!(backend_id, nexthop = %hop, error = %e, "neighbour resolution request failed");
            }
        }
    }
}
