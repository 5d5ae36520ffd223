//! `explain` for the XDP balancer: which service, flow entry, Maglev slot and backend a
//! packet of a 5-tuple meets, following the datapath's steps over the maps it reads.

use std::net::IpAddr;

use lb_common::{
    affinity::expired, AffinityKey, FlowKey, XdpReason, BACKEND_F_ACTIVE, SERVICE_F_AFFINITY,
};
use serde::Serialize;

use lb_model::{addr_bytes, Frontend, Scope};

use super::{backend_addresses, source_ranges, BackendAddresses, Tuple};
use crate::maps::{BalancerMaps, MapsError};

#[derive(Debug, Serialize)]
pub struct FlowEntryView {
    pub backend_id: u32,
    pub backend: Option<IpAddr>,
    pub generation: u32,
    /// Whether the datapath would follow it (backend live, same generation).
    pub usable: bool,
}

/// The client's session-affinity entry for the service, as the datapath would judge it.
#[derive(Debug, Serialize)]
pub struct AffinityEntryView {
    pub backend_id: u32,
    pub backend: Option<IpAddr>,
    /// Milliseconds since the datapath last refreshed it.
    pub age_ms: u64,
    pub timeout_s: u32,
    /// Whether the datapath would follow it: not expired, backend live, same generation.
    pub usable: bool,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub tuple: Tuple,
    pub service_id: Option<u32>,
    pub verdict: &'static str,
    pub flow_hash: Option<u32>,
    pub slot: Option<u32>,
    pub table_size: Option<u32>,
    pub maglev_backend: Option<IpAddr>,
    pub flow_entry: Option<FlowEntryView>,
    /// With `sessionAffinity: ClientIP`: the client's entry, if the map holds one.
    pub affinity_entry: Option<AffinityEntryView>,
    /// Where the next packet of this flow goes.
    pub backend: Option<IpAddr>,
    pub why: String,
}

/// Follows the datapath's steps for tuples, reading the same maps it reads. The backend
/// table and the configuration are read once per `Explainer`, so batches stay cheap.
pub struct Explainer<'m> {
    maps: &'m BalancerMaps,
    addresses: BackendAddresses,
    config: lb_common::LbConfig,
}

impl<'m> Explainer<'m> {
    pub fn new(maps: &'m BalancerMaps) -> Result<Self, MapsError> {
        Ok(Self {
            maps,
            addresses: backend_addresses(maps)?,
            config: maps.read_config()?,
        })
    }

    pub fn explain(&self, tuple: Tuple) -> Result<Explanation, MapsError> {
        explain_with(self.maps, &self.addresses, &self.config, tuple)
    }
}

/// Explains one tuple (see `Explainer` for many).
pub fn explain(maps: &BalancerMaps, tuple: Tuple) -> Result<Explanation, MapsError> {
    Explainer::new(maps)?.explain(tuple)
}

fn explain_with(
    maps: &BalancerMaps,
    addresses: &BackendAddresses,
    config: &lb_common::LbConfig,
    tuple: Tuple,
) -> Result<Explanation, MapsError> {
    let frontend = tuple.frontend(Scope::External);
    let mut out = Explanation {
        tuple,
        service_id: None,
        verdict: XdpReason::PassNotService.name(),
        flow_hash: None,
        slot: None,
        table_size: None,
        maglev_backend: None,
        flow_entry: None,
        affinity_entry: None,
        backend: None,
        why: format!("no service at {frontend}; the packet passes to the stack"),
    };
    let Some(service) = maps.service(&frontend.key())? else {
        return Ok(out);
    };
    out.service_id = Some(service.service_id);
    out.table_size = Some(service.table_size);
    let live = |id: u32, generation: Option<u32>| -> bool {
        let Ok(Some(b)) = maps.backend(id) else {
            return false;
        };
        b.flags & BACKEND_F_ACTIVE != 0 && generation.is_none_or(|g| g == b.generation)
    };

    let (src, family) = addr_bytes(tuple.src);
    let key = FlowKey {
        src,
        dst: addr_bytes(tuple.dst).0,
        sport_be: tuple.sport.to_be(),
        dport_be: tuple.dport.to_be(),
        proto: tuple.protocol.number(),
        family,
        _pad: [0; 2],
    };
    // The datapath's own functions: `explain` and the kernel cannot disagree on the slot.
    // A service with session affinity hashes the client alone (see xdp's `affinity`).
    let affine = service.flags & SERVICE_F_AFFINITY != 0;
    let hash = key.flow_hash(config.flow_hash_seed);
    let slot_hash = if affine {
        key.client_hash(config.flow_hash_seed)
    } else {
        hash
    };
    out.flow_hash = Some(slot_hash);
    let maglev_id = if service.table_size > 0 {
        let slot = slot_hash % service.table_size;
        let id = maps.read_slots(service.table_base + slot, 1)?[0];
        out.slot = Some(slot);
        out.maglev_backend = addresses.get(&id).and_then(|(a, _)| *a);
        Some(id)
    } else {
        None
    };

    if let Some(entry) = maps.flow(&key)? {
        let usable = live(entry.backend_id, Some(entry.backend_generation));
        let backend = addresses.get(&entry.backend_id).and_then(|(a, _)| *a);
        out.flow_entry = Some(FlowEntryView {
            backend_id: entry.backend_id,
            backend,
            generation: entry.backend_generation,
            usable,
        });
        if usable {
            out.verdict = XdpReason::Forwarded.name();
            out.backend = backend;
            out.why = format!(
                "established flow: the flow table pins it to backend {} (Maglev alone would pick {})",
                fmt_addr(backend),
                fmt_addr(out.maglev_backend)
            );
            return Ok(out);
        }
    }
    // Not (usably) in the table: a CPU's flow cache may still hold it (its set evicted it
    // since; the cache's next table touch learns it again).
    for (cpu, entry) in maps.cached_flow(&key, config)? {
        if live(entry.backend_id, Some(entry.backend_generation)) {
            let backend = addresses.get(&entry.backend_id).and_then(|(a, _)| *a);
            out.verdict = XdpReason::Forwarded.name();
            out.backend = backend;
            out.why = format!(
                "established flow: CPU {cpu}'s flow cache pins it to backend {} (the flow \
                 table no longer holds it; Maglev alone would pick {})",
                fmt_addr(backend),
                fmt_addr(out.maglev_backend)
            );
            return Ok(out);
        }
    }
    // Only a flow the table does not know meets the source ranges, as in the datapath.
    if let Some(why) = source_ranges::refusal(maps, &service, tuple.src)? {
        out.verdict = XdpReason::DropSourceRange.name();
        out.backend = None;
        out.why = why;
        return Ok(out);
    }
    if affine {
        out.affinity_entry = affinity_entry(maps, addresses, &key, &service, &live)?;
        if let Some(entry) = out.affinity_entry.as_ref().filter(|e| e.usable) {
            out.verdict = XdpReason::Forwarded.name();
            out.backend = entry.backend;
            out.why = format!(
                "session affinity: client {} keeps backend {} (entry {} ms old, timeout {} s; Maglev over the client would pick {})",
                out.tuple.src,
                fmt_addr(entry.backend),
                entry.age_ms,
                entry.timeout_s,
                fmt_addr(out.maglev_backend)
            );
            return Ok(out);
        }
    }
    let mut out = by_maglev(out, &frontend, &service, maglev_id, slot_hash, |id| {
        live(id, None)
    });
    if affine && out.backend.is_some() {
        out.why = format!(
            "{}; session affinity: Maglev hashes the client address alone, and the client {}",
            out.why,
            if out.affinity_entry.is_some() {
                "has an entry that expired or names a backend no longer live, so it is replaced"
            } else {
                "has no entry yet, so this pick is recorded"
            }
        );
    }
    Ok(out)
}

/// The client's affinity entry for `service`, judged as the datapath judges it.
fn affinity_entry(
    maps: &BalancerMaps,
    addresses: &BackendAddresses,
    flow: &FlowKey,
    service: &lb_common::ServiceValue,
    live: &impl Fn(u32, Option<u32>) -> bool,
) -> Result<Option<AffinityEntryView>, MapsError> {
    let key = AffinityKey {
        client: flow.src,
        service_id: service.service_id,
        family: flow.family,
        _pad: [0; 3],
    };
    let Some(entry) = maps.affinity_entry(Scope::External, &key)? else {
        return Ok(None);
    };
    let age_ns = monotonic_coarse_ns().saturating_sub(entry.last_used_ns);
    Ok(Some(AffinityEntryView {
        backend_id: entry.backend_id,
        backend: addresses.get(&entry.backend_id).and_then(|(a, _)| *a),
        age_ms: age_ns / 1_000_000,
        timeout_s: service.affinity_timeout_s,
        usable: !expired(age_ns, service.affinity_timeout_s)
            && live(entry.backend_id, Some(entry.backend_generation)),
    }))
}

/// The clock the datapath stamps affinity entries with (`bpf_ktime_get_coarse_ns`).
pub(crate) fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The verdict of a packet the flow table does not pin: Maglev's slot decides.
fn by_maglev(
    mut out: Explanation,
    frontend: &Frontend,
    service: &lb_common::ServiceValue,
    maglev_id: Option<u32>,
    hash: u32,
    live: impl Fn(u32) -> bool,
) -> Explanation {
    let Some(maglev_id) = maglev_id else {
        out.verdict = XdpReason::DropNoBackend.name();
        out.why = format!(
            "service {frontend} has no backend with weight above zero: new flows are dropped"
        );
        return out;
    };
    if !live(maglev_id) {
        out.verdict = XdpReason::DropBackendMissing.name();
        out.why = format!(
            "slot {} names backend id {maglev_id}, which is not live",
            out.slot.unwrap_or_default()
        );
        return out;
    }
    out.verdict = XdpReason::Forwarded.name();
    out.backend = out.maglev_backend;
    out.why = format!(
        "{}flow hash {hash:#010x} mod {} = slot {}, owned by backend {}",
        if out.flow_entry.is_some() {
            "the flow entry names a retired backend, so Maglev re-selects: "
        } else {
            "new flow: "
        },
        service.table_size,
        out.slot.unwrap_or_default(),
        fmt_addr(out.backend)
    );
    out
}

fn fmt_addr(addr: Option<IpAddr>) -> String {
    addr.map_or_else(|| "?".to_string(), |a| a.to_string())
}
