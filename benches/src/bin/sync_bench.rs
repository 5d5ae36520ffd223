//! Control-plane benchmark: how long the daemon's path from the Kubernetes API to the BPF
//! maps takes. A fake API server on loopback serves N Services with E endpoints each; the
//! real watch source (kube-rs), model and projection feed the daemon's sync engine
//! (planner and map writer), which programs real pinned maps. Reports the initial sync, the latency from one EndpointSlice change to the
//! maps holding it (p50/p99 over many changes), and map memory. Needs root (BPF maps).
//!
//! `cargo run --release -p lb-benches --bin sync_bench -- [--daemon-sizes] [SERVICES...]`
//! (default 1000 10000). The maps it does not exercise (flow and affinity tables: no
//! packets flow) are sized small, and the output says which sizes it used;
//! `--daemon-sizes` gives them the daemon's default sizes instead, to show the memory a
//! daemon with these Services takes.

use std::{
    error::Error,
    net::Ipv4Addr,
    path::PathBuf,
    time::{Duration, Instant},
};

use lb_daemon::{
    loader::{self, MapSizes},
    maps::{self, BalancerMaps},
    sync::{DatapathParams, SyncEngine},
};
use lb_kube::{
    fake_api::{
        kubeconfig,
        objects::{endpoint, node_json, service_json, slice_json},
        FakeApi, Resource,
    },
    rules::NodeConfig,
    watch::{self, SourceOptions},
};
use serde_json::Value;

const ENDPOINTS: usize = 10;
const CHANGES: usize = 300;
/// Distinct pod addresses; below the backend map's 65,536 entries.
const POD_POOL: u32 = 60_000;
/// Endpoint j of Service i is pod `(i + j * POD_STRIDE) % POD_POOL`: every Service has a
/// backend set of its own (checked in `distinct_sets`) although Services share pods, as
/// Services selecting overlapping pods do.
const POD_STRIDE: u32 = 6_007;
const NODE: &str = "node-a";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 255, 1);
/// Maglev slots beyond one table per Service: a replaced table's new region is allocated
/// before its old one is freed (one sync later).
const REPLACEMENT_ROOM: u32 = 1 << 16;

fn cluster_ip(i: usize) -> String {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 1)) + i as u32).to_string()
}

fn pod_ip(index: u32) -> String {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 0, 1)) + index % POD_POOL).to_string()
}

fn service(i: usize) -> Value {
    let mut svc = service_json(&format!("svc-{i}"), &cluster_ip(i));
    // Port equal to targetPort: a frontend IPIP DSR can program.
    svc["spec"]["ports"][0]["targetPort"] = 80.into();
    svc
}

/// The pod of endpoint `j` of Service `i`.
fn pod_of(i: usize, j: usize) -> u32 {
    ((i as u64 + j as u64 * u64::from(POD_STRIDE)) % u64::from(POD_POOL)) as u32
}

/// How many distinct backend sets `services` Services have.
fn distinct_sets(services: usize) -> usize {
    let sets: std::collections::HashSet<Vec<u32>> = (0..services)
        .map(|i| {
            let mut set: Vec<u32> = (0..ENDPOINTS).map(|j| pod_of(i, j)).collect();
            set.sort_unstable();
            set
        })
        .collect();
    sets.len()
}

fn slice(i: usize, not_ready: Option<usize>) -> Value {
    let endpoints = (0..ENDPOINTS)
        .map(|j| {
            let ready = not_ready != Some(j);
            endpoint(&pod_ip(pod_of(i, j)), NODE, ready, ready, false)
        })
        .collect();
    slice_json(
        &format!("svc-{i}-x"),
        &format!("svc-{i}"),
        "IPv4",
        80,
        endpoints,
    )
}

/// The first snapshot newer than `generation` (bounded wait).
async fn next_update(
    updates: &mut watch::Updates,
    generation: u64,
) -> Result<std::sync::Arc<watch::DesiredStateUpdate>, Box<dyn std::error::Error>> {
    loop {
        tokio::time::timeout(Duration::from_secs(30), updates.changed()).await??;
        if let Some(u) = updates.borrow_and_update().clone() {
            if u.generation > generation {
                return Ok(u);
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

struct Row {
    services: usize,
    list_to_snapshot: Duration,
    plan: Duration,
    apply: Duration,
    p50: Duration,
    p99: Duration,
    max: Duration,
    source_mean: Duration,
    plan_mean: Duration,
    apply_mean: Duration,
    tables: usize,
    slots_used: u64,
    backends: usize,
    /// Kernel memory of every pinned map (fdinfo `memlock`), by map.
    map_memory: Vec<(String, u64)>,
}

/// Removes the benchmark's pins also when it fails half-way.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = loader::uninstall(&self.0);
    }
}

/// The map sizes for `services`: the slot map as an operator sizes it, the maps no packet
/// touches here small, or at the daemon's defaults with `daemon_sizes`.
fn map_sizes(services: usize, daemon_sizes: bool) -> MapSizes {
    // One region of the policy's table size (in whole words of the slot array) per distinct
    // backend set, plus room for the few tables being replaced at any time: what an
    // operator sets `--maglev-slots` to.
    let table = lb_hashing::maglev::choose_table_size(ENDPOINTS, 65_537)
        .next_multiple_of(lb_common::maglev_words::SLOTS_PER_WORD);
    let maglev_slots = distinct_sets(services) as u32 * table + REPLACEMENT_ROOM;
    if daemon_sizes {
        return MapSizes {
            maglev_slots,
            ..MapSizes::default()
        };
    }
    MapSizes {
        maglev_slots,
        flows: 1024,
        udp_flows: 1024,
        affinity: 1024,
    }
}

/// The balancer's maps sized `sizes`, pinned at `pins`, driven by the daemon's sync
/// engine. The second value keeps the loaded programs and maps alive.
fn open_engine(pins: &Pins, sizes: &MapSizes) -> Result<(SyncEngine, impl Sized), Box<dyn Error>> {
    let _ = loader::uninstall(&pins.0);
    let ebpf = loader::load_balancer_sized(&pins.0, sizes)?;
    let params = DatapathParams {
        encap_source: NODE_IP,
        encap_source6: None,
        nexthop_ttl: Duration::from_secs(1),
        icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
        new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
    };
    let engine = SyncEngine::adopt(BalancerMaps::open(&pins.0)?, &params)?;
    Ok((engine, ebpf))
}

/// A fake API server holding the node and `services` Services with their slices, and the
/// watch source reading it (its task runs until the runtime ends).
async fn start_source(services: usize) -> Result<(FakeApi, watch::Updates), Box<dyn Error>> {
    let api = FakeApi::new();
    api.apply(
        Resource::Nodes,
        node_json(NODE, &[("InternalIP", &NODE_IP.to_string())], "zone-a"),
    );
    for i in 0..services {
        api.apply(Resource::Services, service(i));
        api.apply(Resource::EndpointSlices, slice(i, None));
    }
    let port = api.serve().await?;
    let config = std::env::temp_dir().join(format!("syncbench-{}.kubeconfig", std::process::id()));
    std::fs::write(&config, kubeconfig(&format!("http://127.0.0.1:{port}")))?;
    let client = watch::client(Some(&config)).await?;
    let _ = std::fs::remove_file(&config);
    let node = NodeConfig {
        node_name: NODE.into(),
        node_port_addresses: None,
        node_port_on_loopback: false,
        zone: None,
        service_proxy_name: None,
    };
    let (updates, _task) = watch::spawn(client, SourceOptions::new(node), None);
    Ok((api, updates))
}

/// Where the time of the single-endpoint changes went.
#[derive(Default)]
struct Changes {
    /// Slice written to the API server → maps written, one per change.
    latencies: Vec<Duration>,
    /// Summed over the changes: API server → snapshot, planning, map writes.
    source: Duration,
    plan: Duration,
    apply: Duration,
}

/// `CHANGES` single-endpoint changes, each applied as the daemon applies a snapshot: only
/// the frontends it changed when the engine can, else everything. `generation` is the
/// snapshot applied last.
async fn run_changes(
    api: &FakeApi,
    updates: &mut watch::Updates,
    engine: &mut SyncEngine,
    services: usize,
    mut generation: u64,
) -> Result<Changes, Box<dyn Error>> {
    let mut changes = Changes::default();
    for k in 0..CHANGES {
        let i = (k * 7919) % services;
        let changed_at = Instant::now();
        api.apply(
            Resource::EndpointSlices,
            slice(i, (k % 2 == 0).then_some(k % ENDPOINTS)),
        );
        let update = next_update(updates, generation).await?;
        let snapshot_at = Instant::now();
        let applied =
            engine.apply_changes(&update.datapath, update.changed_since(generation).as_ref())?;
        generation = update.generation;
        changes.latencies.push(changed_at.elapsed());
        changes.source += snapshot_at - changed_at;
        changes.plan += applied.plan;
        changes.apply += applied.write;
        // Put the slice back so the next change of this Service is a real change too.
        if k % 2 == 0 {
            api.apply(Resource::EndpointSlices, slice(i, None));
            let update = next_update(updates, generation).await?;
            engine.apply_changes(&update.datapath, update.changed_since(generation).as_ref())?;
            generation = update.generation;
        }
    }
    changes.latencies.sort();
    Ok(changes)
}

async fn run(services: usize, sizes: &MapSizes) -> Result<Row, Box<dyn Error>> {
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/ferrolb-syncbench-{}-{services}",
        std::process::id()
    )));
    let (mut engine, _ebpf) = open_engine(&pins, sizes)?;
    let (api, mut updates) = start_source(services).await?;

    let started = Instant::now();
    let first = loop {
        updates.changed().await?;
        if let Some(update) = updates.borrow_and_update().clone() {
            break update;
        }
    };
    let list_to_snapshot = started.elapsed();
    // What the daemon does: the first snapshot is planned whole, later ones only for the
    // frontends they changed.
    let initial = engine.apply(&first.datapath)?;
    assert_eq!(
        engine.state().services.len(),
        services,
        "every Service programmed"
    );
    let changes = run_changes(&api, &mut updates, &mut engine, services, first.generation).await?;
    let per = |d: Duration| d / CHANGES as u32;
    let latencies = &changes.latencies;
    let state = engine.state();
    Ok(Row {
        services,
        list_to_snapshot,
        plan: initial.plan,
        apply: initial.write,
        p50: percentile(latencies, 0.5),
        p99: percentile(latencies, 0.99),
        max: *latencies.last().expect("changes ran"),
        source_mean: per(changes.source),
        plan_mean: per(changes.plan),
        apply_mean: per(changes.apply),
        tables: state.tables.len(),
        slots_used: u64::from(state.slots.capacity()) - state.slots.free_slots(),
        backends: state.backends.len(),
        map_memory: maps::pinned_map_memory(&pins.0)?,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1 << 20))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: geteuid has no failure mode.
    if unsafe { libc_geteuid() } != 0 {
        return Err("sync_bench loads BPF maps: run it as root".into());
    }
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let daemon_sizes = args.iter().any(|a| a == "--daemon-sizes");
    args.retain(|a| a != "--daemon-sizes");
    let counts: Vec<usize> = args
        .iter()
        .map(|a| {
            a.parse()
                .map_err(|e| format!("{a:?}: not a Service count: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let counts = if counts.is_empty() {
        vec![1000, 10_000]
    } else {
        counts
    };
    println!(
        "Services x {ENDPOINTS} endpoints, a backend set of its own each; {CHANGES} single-endpoint EndpointSlice changes each."
    );
    println!("initial sync = API list + model + projection (source) + plan + map writes.");
    println!("change latency = slice written to the API server -> watch event -> snapshot -> plan -> maps written.\n");
    println!("map memory = every pinned map's kernel memory (fdinfo memlock), the Maglev slot map's share in brackets.\n");
    println!("| services | initial sync s (source / plan / apply) | change p50 ms | p99 ms | max ms | mean ms (source / plan / apply) | Maglev tables | slots used | backends | slot bytes per service | map memory MiB (Maglev) | map bytes per service |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut memory = Vec::new();
    for n in counts {
        let sizes = map_sizes(n, daemon_sizes);
        let r = run(n, &sizes).await?;
        let total = r.list_to_snapshot + r.plan + r.apply;
        let map_total: u64 = r.map_memory.iter().map(|(_, b)| b).sum();
        let maglev: u64 = r
            .map_memory
            .iter()
            .filter(|(name, _)| name == lb_common::map_names::MAGLEV)
            .map(|(_, b)| b)
            .sum();
        println!(
            "| {} | {:.2} ({:.2} / {:.2} / {:.2}) | {} | {} | {} | {} / {} / {} | {} | {} | {} | {} | {} ({}) | {} |",
            r.services,
            total.as_secs_f64(),
            r.list_to_snapshot.as_secs_f64(),
            r.plan.as_secs_f64(),
            r.apply.as_secs_f64(),
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            ms(r.source_mean),
            ms(r.plan_mean),
            ms(r.apply_mean),
            r.tables,
            r.slots_used,
            r.backends,
            r.slots_used * 2 / r.services as u64,
            mib(map_total),
            mib(maglev),
            map_total / r.services as u64,
        );
        memory.push((r.services, sizes, r.map_memory));
    }
    for (services, sizes, maps) in memory {
        let each: Vec<String> = maps
            .iter()
            .map(|(name, bytes)| format!("{name} {}", mib(*bytes)))
            .collect();
        println!(
            "\n{services} services, map sizes{}: {} Maglev slots, flow tables TCP {} / UDP {}, affinity tables {} entries each",
            if daemon_sizes { " (daemon defaults but the slots)" } else { " (flow and affinity tables small: no packets here)" },
            sizes.maglev_slots,
            sizes.flows,
            sizes.udp_flows,
            sizes.affinity,
        );
        println!("MiB per map: {}", each.join(", "));
    }
    Ok(())
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
