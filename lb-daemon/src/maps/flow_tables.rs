//! The flow tables, one per protocol (TCP `LB_FLOWS`, UDP `LB_UDP_FLOWS`; see
//! `xdp/src/flow.rs` for why): which table a flow lives in, what each holds and costs,
//! the datapath's flow-table event counters (`LB_FLOW_STATS`) and the evictions derived
//! from them, and the purge of a service's flows (through the map writer only).
//!
//! The kernel does not count LRU evictions. Every entry the datapath writes for a key
//! the table did not hold is counted as recorded, and the daemon counts the entries it
//! deletes (as purged, in slots of the same map only it writes), so
//! `evicted = recorded − live − purged` is what left the table on the LRU's decision.

use std::path::Path;

use aya::maps::{HashMap, MapData, MapError, PerCpuValues};
use lb_common::{map_names, FlowEvent, FlowKey, FlowValue, ServiceKey, PROTO_UDP};
use serde::Serialize;

use super::{access, map_memory, open_raw, BalancerMaps, MapsError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowTable {
    Tcp,
    Udp,
}

impl FlowTable {
    pub const ALL: [FlowTable; 2] = [FlowTable::Tcp, FlowTable::Udp];

    /// The table of a flow of protocol `proto` (the datapath's choice: UDP's own, else TCP's).
    pub fn of(proto: u8) -> Self {
        if proto == PROTO_UDP {
            Self::Udp
        } else {
            Self::Tcp
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        }
    }

    pub fn map_name(self) -> &'static str {
        match self {
            Self::Tcp => map_names::FLOWS,
            Self::Udp => map_names::UDP_FLOWS,
        }
    }

    fn recorded(self) -> FlowEvent {
        match self {
            Self::Tcp => FlowEvent::TcpRecorded,
            Self::Udp => FlowEvent::UdpRecorded,
        }
    }

    fn purged(self) -> FlowEvent {
        match self {
            Self::Tcp => FlowEvent::TcpPurged,
            Self::Udp => FlowEvent::UdpPurged,
        }
    }
}

/// One flow table as the kernel holds it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FlowTableView {
    /// `tcp` or `udp`.
    pub table: &'static str,
    pub map: &'static str,
    /// Entries it can hold (`--tcp-flow-entries` / `--udp-flow-entries`).
    pub capacity: u32,
    /// Kernel memory charged for it (preallocated: the same empty or full).
    pub memory_bytes: u64,
    /// Entries it holds now.
    pub live: u64,
    /// Entries the datapath wrote for keys the table did not hold.
    pub recorded: u64,
    /// Entries the daemon deleted.
    pub purged: u64,
    /// `recorded − live − purged`: entries the LRU evicted (exact while no packet writes
    /// the table during the count; never below 0).
    pub evicted: u64,
}

impl BalancerMaps {
    pub(super) fn flow_table(&self, table: FlowTable) -> &HashMap<MapData, FlowKey, FlowValue> {
        match table {
            FlowTable::Tcp => &self.flows,
            FlowTable::Udp => &self.udp_flows,
        }
    }

    fn flow_table_mut(&mut self, table: FlowTable) -> &mut HashMap<MapData, FlowKey, FlowValue> {
        match table {
            FlowTable::Tcp => &mut self.flows,
            FlowTable::Udp => &mut self.udp_flows,
        }
    }

    /// The flow-table event counters, summed over CPUs, in `FlowEvent` order.
    pub fn flow_events(&self) -> Result<Vec<(FlowEvent, u64)>, MapsError> {
        FlowEvent::ALL
            .iter()
            .map(|&event| {
                let values = self
                    .flow_stats
                    .get(&(event as u32), 0)
                    .map_err(access(map_names::FLOW_STATS))?;
                Ok((event, values.iter().sum()))
            })
            .collect()
    }

    /// Both flow tables: capacity, memory, live entries (a walk of each table) and the
    /// counters, with evictions derived from them. `pin_dir` is where they are pinned.
    pub fn flow_tables(&self, pin_dir: &Path) -> Result<Vec<FlowTableView>, MapsError> {
        let events = self.flow_events()?;
        let count = |event: FlowEvent| events[event as usize].1;
        let mut out = Vec::with_capacity(FlowTable::ALL.len());
        for table in FlowTable::ALL {
            let data = open_raw(pin_dir, table.map_name())?;
            let info = data.info().map_err(access(table.map_name()))?;
            let map = self.flow_table(table);
            let live = map.keys().take_while(Result::is_ok).count() as u64;
            let (recorded, purged) = (count(table.recorded()), count(table.purged()));
            out.push(FlowTableView {
                table: table.name(),
                map: table.map_name(),
                capacity: info.max_entries(),
                memory_bytes: map_memory(&data)?,
                live,
                recorded,
                purged,
                evicted: recorded.saturating_sub(live).saturating_sub(purged),
            });
        }
        Ok(out)
    }

    /// Deletes the entries of `key`'s frontend that name one of `backend_ids` from its
    /// protocol's table, and counts them as purged. Walks the table: only backend moves
    /// between services need it.
    pub(super) fn purge_flows(
        &mut self,
        key: &ServiceKey,
        backend_ids: &[u32],
    ) -> Result<(), MapsError> {
        let table = FlowTable::of(key.proto);
        let doomed: Vec<FlowKey> = self
            .flow_table(table)
            .iter()
            .filter_map(Result::ok)
            .filter(|(flow, value)| {
                flow.dst == key.addr
                    && flow.dport_be == key.port_be
                    && flow.proto == key.proto
                    && flow.family == key.family
                    && backend_ids.contains(&value.backend_id)
            })
            .map(|(flow, _)| flow)
            .collect();
        let mut purged = 0;
        for flow in doomed {
            match self.flow_table_mut(table).remove(&flow) {
                Ok(()) => purged += 1,
                // Evicted meanwhile by the LRU: nothing to do.
                Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(access(table.map_name())(e)),
            }
        }
        self.count_purged(table, purged)
    }

    /// Adds `n` to the table's purged counter: CPU 0's value of a slot the datapath never
    /// writes, so this read-modify-write races with no one (one daemon owns the maps).
    fn count_purged(&mut self, table: FlowTable, n: u64) -> Result<(), MapsError> {
        if n == 0 {
            return Ok(());
        }
        let index = table.purged() as u32;
        let mut values: Vec<u64> = self
            .flow_stats
            .get(&index, 0)
            .map_err(access(map_names::FLOW_STATS))?
            .iter()
            .copied()
            .collect();
        values[0] += n;
        let values = PerCpuValues::try_from(values)
            .map_err(|e| MapsError::Inconsistent(format!("{}: {e}", map_names::FLOW_STATS)))?;
        self.flow_stats
            .set(index, values, 0)
            .map_err(access(map_names::FLOW_STATS))
    }
}
