//! Kernel fixtures of the map-size settings and the mapped slot array (no namespaces, no
//! packets): the affinity tables take `--affinity-entries` in both objects, a pin directory
//! holding another size is refused like a flow table of another size, and tables written
//! through the mapped slot array read back from the kernel as planned.

mod support;

use std::{net::Ipv4Addr, time::Duration};

use lb_common::map_names;
use lb_daemon::{
    config,
    loader::{self, LoaderError, MapSizes},
    maps::BalancerMaps,
    sync::{DatapathParams, SyncEngine},
};
use support::{require_root, PinDir};

const PARAMS: DatapathParams = DatapathParams {
    encap_source: Ipv4Addr::new(198, 18, 0, 2),
    encap_source6: None,
    nexthop_ttl: Duration::from_secs(1),
    icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
    new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
};

fn small(affinity: u32) -> MapSizes {
    MapSizes {
        maglev_slots: 1 << 16,
        flows: 1024,
        udp_flows: 1024,
        affinity,
    }
}

fn max_entries(pins: &PinDir, name: &str) -> u32 {
    aya::maps::MapData::from_pin(pins.path.join(name))
        .and_then(|m| m.info())
        .map(|info| info.max_entries())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn affinity_tables_take_their_size_in_both_objects_and_another_size_is_refused() {
    if !require_root("map_size_fixtures") {
        return;
    }
    let pins = PinDir::new("mm-sizes");
    let _balancer = loader::load_balancer_sized(&pins.path, &small(2048)).expect("balancer");
    assert_eq!(max_entries(&pins, map_names::AFFINITY), 2048);
    assert_eq!(max_entries(&pins, map_names::SOCK_AFFINITY), 2048);
    // The socket object, loaded beside it, expects what is pinned.
    let _socket = loader::load_socket(&pins.path).expect("socket object beside the balancer");
    assert_eq!(max_entries(&pins, map_names::SOCK_AFFINITY), 2048);

    let refused = loader::load_balancer_sized(&pins.path, &small(4096)).unwrap_err();
    match refused {
        LoaderError::IncompatibleMap {
            name,
            found,
            expected,
            ..
        } => {
            assert!(
                name == map_names::AFFINITY || name == map_names::SOCK_AFFINITY,
                "{name}"
            );
            assert_eq!((found.2, expected.2), (2048, 4096));
        }
        other => panic!("expected an incompatible map, got {other}"),
    }
}

#[test]
fn tables_written_through_the_mapped_slot_array_read_back_as_planned() {
    if !require_root("map_size_fixtures") {
        return;
    }
    let pins = PinDir::new("mm-slots");
    let _balancer = loader::load_balancer_sized(&pins.path, &small(1024)).expect("balancer");
    let text = "services:
  - {name: three, vip: \"198.18.100.1\", port: 80, protocol: tcp,
     backends: [{address: \"198.18.0.10\"}, {address: \"198.18.0.11\"}, {address: \"198.18.0.12\"}]}
  - {name: two, vip: \"198.18.100.2\", port: 80, protocol: tcp,
     backends: [{address: \"198.18.0.11\"}, {address: \"198.18.0.13\"}]}
";
    let desired = config::parse(text).expect("config");
    let mut engine =
        SyncEngine::adopt(BalancerMaps::open(&pins.path).expect("maps"), &PARAMS).expect("engine");
    engine.apply(&desired).expect("apply");
    let planned = engine.state().clone();
    assert_eq!(planned.tables.len(), 2);
    // What a restarted daemon reads from the kernel: every region holds its table.
    let read = BalancerMaps::open(&pins.path)
        .expect("maps")
        .read_state()
        .expect("read");
    let mut planned_slots: Vec<(u32, Vec<u32>)> = planned
        .tables
        .values()
        .map(|t| (t.base, t.slots.to_vec()))
        .collect();
    let mut read_slots: Vec<(u32, Vec<u32>)> = read
        .tables
        .values()
        .map(|t| (t.base, t.slots.to_vec()))
        .collect();
    planned_slots.sort();
    read_slots.sort();
    assert_eq!(planned_slots, read_slots);
    assert!(planned_slots.iter().all(|(_, slots)| !slots.is_empty()));
}
