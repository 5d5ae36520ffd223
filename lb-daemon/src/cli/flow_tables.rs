//! The flow tables in `ferrolb list` (capacity, memory, live entries, evictions: a header
//! above the services, with the session-affinity tables' capacity and memory) and in
//! `ferrolb stats` (the datapath's flow-table events and the same per-table figures as
//! metrics).

use std::{io::Write, path::Path};

use anyhow::Result;
use lb_daemon::maps::{
    affinity_tables::AffinityTableView, flow_tables::FlowTableView, BalancerMaps,
};

/// Both flow tables' and the affinity tables' lines above `ferrolb list`'s services.
pub fn print_header(maps: &BalancerMaps, pin_dir: &Path, out: &mut impl Write) -> Result<()> {
    for t in maps.flow_tables(pin_dir)? {
        writeln!(
            out,
            "flow table {:<3} capacity={} memory={:.1}MiB live={} recorded={} evicted={}",
            t.table,
            t.capacity,
            t.memory_bytes as f64 / f64::from(1 << 20),
            t.live,
            t.recorded,
            t.evicted
        )?;
    }
    for t in maps.affinity_tables(pin_dir)? {
        writeln!(
            out,
            "affinity table {} capacity={} memory={:.1}MiB live={}",
            t.scope,
            t.capacity,
            t.memory_bytes as f64 / f64::from(1 << 20),
            t.live,
        )?;
    }
    Ok(())
}

/// The flow-table part of `ferrolb stats -o json`, with the affinity tables.
pub fn json(maps: &BalancerMaps, pin_dir: &Path) -> Result<serde_json::Value> {
    let events: serde_json::Map<String, serde_json::Value> = maps
        .flow_events()?
        .into_iter()
        .map(|(event, n)| (event.name().to_string(), n.into()))
        .collect();
    let tables: Vec<FlowTableView> = maps.flow_tables(pin_dir)?;
    let affinity: Vec<AffinityTableView> = maps.affinity_tables(pin_dir)?;
    Ok(serde_json::json!({ "events": events, "tables": tables, "affinity_tables": affinity }))
}

/// The flow-table metrics of `ferrolb stats`, Prometheus text style.
pub fn print_metrics(maps: &BalancerMaps, pin_dir: &Path) -> Result<()> {
    for (event, n) in maps.flow_events()? {
        println!("lb_flow_events_total{{event=\"{}\"}} {n}", event.name());
    }
    for t in maps.flow_tables(pin_dir)? {
        let table = t.table;
        println!(
            "lb_flow_table_capacity_entries{{table=\"{table}\"}} {}",
            t.capacity
        );
        println!(
            "lb_flow_table_memory_bytes{{table=\"{table}\"}} {}",
            t.memory_bytes
        );
        println!("lb_flow_table_live_entries{{table=\"{table}\"}} {}", t.live);
        println!(
            "lb_flow_table_evicted_total{{table=\"{table}\"}} {}",
            t.evicted
        );
    }
    for t in maps.affinity_tables(pin_dir)? {
        let scope = t.scope;
        println!(
            "lb_affinity_table_capacity_entries{{scope=\"{scope}\"}} {}",
            t.capacity
        );
        println!(
            "lb_affinity_table_memory_bytes{{scope=\"{scope}\"}} {}",
            t.memory_bytes
        );
        println!(
            "lb_affinity_table_live_entries{{scope=\"{scope}\"}} {}",
            t.live
        );
    }
    Ok(())
}
