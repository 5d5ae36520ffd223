//! The flow tables, one per protocol (TCP `LB_FLOWS`, UDP `LB_UDP_FLOWS`; see
//! `xdp/src/flow.rs` for why): which table a flow lives in, what each holds and costs,
//! the datapath's flow-table event counters (`LB_FLOW_STATS`) and the evictions derived
//! from them, and the purge of a service's flows (through the map writer only).
//!
//! A table is an array of sets (`lb_common::FlowSet`); the daemon reads a set whole and
//! deletes by clearing ways' tags and writing the set back. Every entry the datapath
//! writes for a key the table did not hold is counted as recorded, and the daemon counts
//! the entries it deletes (as purged, in slots of the same map only it writes), so
//! `evicted = recorded − live − purged` is what left the table when a set was full.

use std::path::Path;

use aya::maps::{Array, MapData, PerCpuValues};
use lb_common::{map_names, FlowEntry, FlowEvent, FlowSet, ServiceKey, PROTO_UDP};
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

    /// The maps that exist for this table alone (the TCP table's SYN filter), whose
    /// memory is counted as the table's.
    fn companions(self) -> &'static [&'static str] {
        match self {
            Self::Tcp => &[map_names::FLOW_FILTER],
            Self::Udp => &[],
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
    /// Entries it can hold (`--tcp-flow-entries` / `--udp-flow-entries`, rounded up to
    /// whole sets).
    pub capacity: u32,
    /// Kernel memory charged for it and the maps that exist for it alone (the TCP
    /// table's SYN filter); preallocated, the same empty or full.
    pub memory_bytes: u64,
    /// Entries it holds now.
    pub live: u64,
    /// Entries the datapath wrote for keys the table did not hold.
    pub recorded: u64,
    /// Entries the daemon deleted.
    pub purged: u64,
    /// `recorded − live − purged`: entries replaced in a full set (exact while no packet
    /// writes the table during the count; never below 0).
    pub evicted: u64,
}

impl BalancerMaps {
    pub(super) fn flow_table(&self, table: FlowTable) -> &Array<MapData, FlowSet> {
        match table {
            FlowTable::Tcp => &self.flows,
            FlowTable::Udp => &self.udp_flows,
        }
    }

    fn flow_table_mut(&mut self, table: FlowTable) -> &mut Array<MapData, FlowSet> {
        match table {
            FlowTable::Tcp => &mut self.flows,
            FlowTable::Udp => &mut self.udp_flows,
        }
    }

    /// Every whole entry of `table`, with its set and way: a read of each set.
    pub fn flow_entries(
        &self,
        table: FlowTable,
    ) -> Result<Vec<(u32, usize, FlowEntry)>, MapsError> {
        let config = self.read_config()?;
        let map = self.flow_table(table);
        let mut entries = Vec::new();
        for index in 0..map.len() {
            let set = map.get(&index, 0).map_err(access(table.map_name()))?;
            entries.extend((0..FlowSet::WAYS).filter_map(|way| {
                set.valid_entry(config.flow_cache_skew, way, config.flow_table_seed)
                    .map(|entry| (index, way, entry))
            }));
        }
        Ok(entries)
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
            let live = self.flow_entries(table)?.len() as u64;
            let (recorded, purged) = (count(table.recorded()), count(table.purged()));
            let mut memory_bytes = map_memory(&data)?;
            for &name in table.companions() {
                memory_bytes += map_memory(&open_raw(pin_dir, name)?)?;
            }
            out.push(FlowTableView {
                table: table.name(),
                map: table.map_name(),
                capacity: FlowSet::entries(info.max_entries()),
                memory_bytes,
                live,
                recorded,
                purged,
                evicted: recorded.saturating_sub(live).saturating_sub(purged),
            });
        }
        Ok(out)
    }

    /// Deletes the entries of `key`'s frontend that name one of `backend_ids` from its
    /// protocol's table, and counts them as purged. Reads every set: only backend moves
    /// between services need it. A set is written back whole, so a flow the datapath
    /// records in that set between the read and the write is lost; it is picked again,
    /// by Maglev, at its next packet.
    pub(super) fn purge_flows(
        &mut self,
        key: &ServiceKey,
        backend_ids: &[u32],
    ) -> Result<(), MapsError> {
        let table = FlowTable::of(key.proto);
        let skew = self.read_config()?.flow_cache_skew;
        let mut doomed: Vec<(u32, usize)> = self
            .flow_entries(table)?
            .into_iter()
            .filter(|(_, _, entry)| {
                let flow = &entry.key;
                flow.dst == key.addr
                    && flow.dport_be == key.port_be
                    && flow.proto == key.proto
                    && flow.family == key.family
                    && backend_ids.contains(&entry.backend_id)
            })
            .map(|(set, way, _)| (set, way))
            .collect();
        doomed.sort_unstable();
        let purged = doomed.len() as u64;
        let map = self.flow_table_mut(table);
        for ways in doomed.chunk_by(|a, b| a.0 == b.0) {
            let index = ways[0].0;
            let mut set = map.get(&index, 0).map_err(access(table.map_name()))?;
            for &(_, way) in ways {
                set.clear(skew, way);
            }
            map.set(index, set, 0).map_err(access(table.map_name()))?;
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
