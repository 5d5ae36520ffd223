//! The balancing path of each family: parse, find the service, pick the backend (flow
//! table, else Maglev), resolve the next hop, encapsulate, count. Each returns either a
//! forwarding decision or the reason the packet is passed or dropped; [`verdict`] turns
//! that into the action. [`icmp`] hooks in where ICMP is the answer (a refused frontend,
//! a packet too big to encapsulate) and lets ICMP errors about a VIP flow take the
//! flow's path.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    BackendValue, FlowKey, LbConfig, NextHop, ServiceValue, XdpReason, CONFIG_F_V6_READY,
    FAMILY_V6, NEXTHOP_F_LOCAL, SERVICE_F_AFFINITY,
};

use crate::{
    affinity, encap, fastpath, flow, fragment, icmp, lookup, nexthop, parse, source_range, stats,
    verdict::{self, Forward},
    vlan,
};

// Each family's path: the fast path (`fastpath`, established flows from the flow cache),
// else the slow path, then the flow-table write the slow path left (see `flow::record`).
// The two paths are BPF subprograms of their own: inlined together their stack frames
// add up past the 512-byte limit. `len` is the frame's length as received, the
// figure every counter records; `tag` the VLAN tag `vlan::admit` took off, put back on
// what returns to the VLAN.
#[inline(always)]
pub fn v4(ctx: &XdpContext, len: u64, tag: vlan::Tag) -> u32 {
    match fastpath::v4(ctx, len) {
        Some(sent) => verdict::finish(vlan::restore(ctx, tag, Ok(sent)), len),
        None => {
            let action = slow_v4(ctx, len, tag);
            flow::commit();
            action
        }
    }
}

#[inline(always)]
pub fn v6(ctx: &XdpContext, len: u64, tag: vlan::Tag) -> u32 {
    match fastpath::v6(ctx, len) {
        Some(sent) => verdict::finish(vlan::restore(ctx, tag, Ok(sent)), len),
        None => {
            let action = slow_v6(ctx, len, tag);
            flow::commit();
            action
        }
    }
}

#[inline(never)]
fn slow_v4(ctx: &XdpContext, len: u64, tag: vlan::Tag) -> u32 {
    verdict::finish(vlan::restore(ctx, tag, try_v4(ctx, len)), len)
}

#[inline(never)]
fn slow_v6(ctx: &XdpContext, len: u64, tag: vlan::Tag) -> u32 {
    verdict::finish(vlan::restore(ctx, tag, try_v6(ctx, len)), len)
}

/// Where a packet goes: the service it is counted for and the backend it is sent to.
struct Pick {
    service_id: u32,
    backend_id: u32,
    backend: BackendValue,
}

/// A later fragment (no ports) follows its datagram's first fragment, if this node sent
/// that one (see `fragment`).
#[inline(always)]
fn followed(entry: Option<(u32, u32, BackendValue)>) -> Result<Pick, XdpReason> {
    let (service_id, backend_id, backend) = entry.ok_or(XdpReason::PassFragment)?;
    Ok(Pick {
        service_id,
        backend_id,
        backend,
    })
}

#[inline(always)]
fn try_v4(ctx: &XdpContext, len: u64) -> Result<Forward, XdpReason> {
    let (pkt, icmp_error) = icmp::parse_v4(ctx)?;
    // The fragment key is built only for fragments: most packets are whole.
    let frag_key = || fragment::key_v4(pkt.saddr, pkt.daddr, pkt.proto, pkt.id_be);
    let (pick, config) = if pkt.role == parse::Role::Later {
        let pick = followed(fragment::follow(&frag_key()))?;
        (pick, lookup::config().ok_or(XdpReason::PassNotReady)?)
    } else {
        let flow_key = flow::key(&pkt);
        let fast = fast_path_eligible(pkt.role, pkt.opening, icmp_error);
        let Some(service) = lookup::service(&flow_key) else {
            return icmp::no_service(ctx, &flow_key, icmp_error);
        };
        let config = lookup::config().ok_or(XdpReason::PassNotReady)?;
        let seed = config.flow_hash_seed;
        let picked = select(
            &flow_key,
            &service,
            pkt.opening,
            config,
            fast,
            || flow_key.flow_hash_v4(seed),
            || flow_key.client_hash_v4(seed),
        );
        let (backend_id, backend) = match picked {
            Err(XdpReason::DropNoBackend) if icmp::rejects(&service, icmp_error) => {
                return icmp::reject_v4(ctx)
            }
            picked => picked?,
        };
        if pkt.role == parse::Role::First {
            fragment::remember(&frag_key(), service.service_id, backend_id, &backend);
        }
        let pick = Pick {
            service_id: service.service_id,
            backend_id,
            backend,
        };
        (pick, config)
    };
    let hop = next_hop(ctx, pick.backend_id, &pick.backend, config)?;
    if u32::from(pkt.tot_len) + encap::IPIP_OVERHEAD > u32::from(hop.mtu) {
        return icmp::too_big_v4(ctx, &pkt, hop.mtu, icmp_error);
    }
    encap::ipip(ctx, &pkt, &hop, config.encap_src_v4, &pick.backend)?;
    let forward = sent(ctx, pick.service_id, pick.backend_id, &hop, len);
    Ok(icmp::forwarded(forward, icmp_error))
}

#[inline(always)]
fn try_v6(ctx: &XdpContext, len: u64) -> Result<Forward, XdpReason> {
    let (pkt, icmp_error) = icmp::parse_v6(ctx)?;
    let flow_key = &pkt.flow;
    let (pick, config) = if pkt.role == parse::Role::Later {
        let pick = followed(fragment::follow_v6(flow_key, pkt.frag_id_be))?;
        (pick, config_v6()?)
    } else {
        let fast = fast_path_eligible(pkt.role, pkt.opening, icmp_error);
        let Some(service) = lookup::service(flow_key) else {
            return icmp::no_service(ctx, flow_key, icmp_error);
        };
        let config = config_v6()?;
        let seed = config.flow_hash_seed;
        let picked = select(
            flow_key,
            &service,
            pkt.opening,
            config,
            fast,
            || flow_key.flow_hash_v6(seed),
            || flow_key.client_hash_v6(seed),
        );
        let (backend_id, backend) = match picked {
            Err(XdpReason::DropNoBackend) if icmp::rejects(&service, icmp_error) => {
                return icmp::reject_v6(ctx)
            }
            picked => picked?,
        };
        if pkt.role == parse::Role::First {
            fragment::remember_v6(
                flow_key,
                pkt.frag_id_be,
                service.service_id,
                backend_id,
                &backend,
            );
        }
        let pick = Pick {
            service_id: service.service_id,
            backend_id,
            backend,
        };
        (pick, config)
    };
    // The daemon never mixes families in a service; a slot that does is not followed.
    if pick.backend.family != FAMILY_V6 {
        return Err(XdpReason::DropBackendMissing);
    }
    let hop = next_hop(ctx, pick.backend_id, &pick.backend, config)?;
    let outer = u32::from(pkt.payload_len) + 2 * encap::IP6IP6_OVERHEAD;
    if outer > u32::from(hop.mtu) {
        return icmp::too_big_v6(ctx, hop.mtu, icmp_error);
    }
    encap::ip6ip6(ctx, &pkt, &hop, &config.encap_src_v6, &pick.backend)?;
    let forward = sent(ctx, pick.service_id, pick.backend_id, &hop, len);
    Ok(icmp::forwarded(forward, icmp_error))
}

/// Whether a packet may take the fast path (`fastpath`): a whole packet that neither
/// opens a connection nor is an ICMP error. Fragments stay on the slow path, which
/// remembers a first fragment's backend for the later ones.
#[inline(always)]
fn fast_path_eligible(role: parse::Role, opening: bool, icmp_error: bool) -> bool {
    role == parse::Role::Whole && !opening && !icmp_error
}

/// The configuration, if it forwards IPv6.
#[inline(always)]
fn config_v6() -> Result<&'static LbConfig, XdpReason> {
    let config = lookup::config().ok_or(XdpReason::PassNotReady)?;
    if config.flags & CONFIG_F_V6_READY == 0 {
        return Err(XdpReason::PassNotReady);
    }
    Ok(config)
}

/// The flow's backend: its flow-table entry while that backend lives, else Maglev's pick,
/// remembered unless the packet is `opening` a TCP connection (SYN without ACK).
/// `flow_hash` gives the flow hash, which picks the Maglev slot (computed only for a flow
/// the table does not know). A flow the table knows
/// is learned into the flow cache when the packet could have taken the fast path (`fast`),
/// unless its service has session affinity (whose hits refresh the client's entry here). A service with
/// session affinity consults the client's entry before Maglev, and Maglev then takes
/// `client_hash`, the client alone (see `affinity`).
///
/// Why a SYN is not remembered: the insert (an eviction, with the table full) is most of
/// a new flow's cost, and a flood of spoofed SYNs would otherwise evict the established
/// flows whose stickiness the table exists to keep. The connection's first non-SYN packet
/// (the handshake's ACK) records it; Maglev gives that ACK the same backend unless the
/// table changed within the round trip, the exposure Maglev alone has anyway. A SYN whose
/// tuple has a live entry still follows it, so a reused tuple stays on its entry's
/// backend (the TCP table's SYN filter spares the other SYNs the table's cold line, see
/// `lb_common::SynFilter`). Only a flow the table does not know meets the service's
/// source ranges.
#[inline(always)]
fn select(
    flow_key: &FlowKey,
    service: &ServiceValue,
    opening: bool,
    config: &LbConfig,
    fast: bool,
    flow_hash: impl FnOnce() -> u32,
    client_hash: impl FnOnce() -> u32,
) -> Result<(u32, BackendValue), XdpReason> {
    let affine = service.flags & SERVICE_F_AFFINITY != 0;
    match flow::lookup(flow_key, config, opening) {
        Some(hit) => {
            if affine {
                affinity::touch(flow_key, service, hit.0);
            } else if fast {
                fastpath::learn(flow_key, config, service.service_id, hit.0, &hit.1);
            }
            Ok(hit)
        }
        // An empty table (every backend drained or gone) refuses new flows only; the
        // flow table above still carries established ones to drained backends.
        None => {
            source_range::check(service, flow_key)?;
            let picked = if affine {
                affinity::pick(flow_key, service, opening, client_hash)?
            } else {
                lookup::maglev_backend(service, flow_hash())?
            };
            if !opening {
                flow::record(flow_key, picked.0, &picked.1);
            }
            Ok(picked)
        }
    }
}

/// The cached next hop; for a backend on this host, the frame keeps its own MACs so this
/// host's stack accepts it.
#[inline(always)]
pub(crate) fn next_hop(
    ctx: &XdpContext,
    backend_id: u32,
    backend: &BackendValue,
    config: &LbConfig,
) -> Result<NextHop, XdpReason> {
    let mut hop = nexthop::resolve(ctx, backend_id, backend, config)?;
    if hop.flags & NEXTHOP_F_LOCAL != 0 {
        let eth = parse::ptr_at::<parse::EthHdr>(ctx, 0).ok_or(XdpReason::DropMalformedIp)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            hop.dst_mac = (*eth).dst;
            hop.src_mac = (*eth).src;
        }
    }
    Ok(hop)
}

/// Counts the packet for its service and backend, then sends it.
#[inline(always)]
pub(crate) fn sent(
    ctx: &XdpContext,
    service_id: u32,
    backend_id: u32,
    hop: &NextHop,
    len: u64,
) -> Forward {
    stats::count_service(service_id, len);
    stats::count_backend(backend_id, len);
    verdict::transmit(ctx, hop)
}
