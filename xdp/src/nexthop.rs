//! Next hops from the kernel's own routing and neighbour tables, cached per backend and per
//! CPU. `bpf_fib_lookup` costs about 200 ns here, so it runs once per backend per CPU per
//! `nexthop_ttl_jiffies` (and whenever the backend id changes hands), not per packet. The
//! clock is `jiffies`: the verifier inlines `bpf_jiffies64` into one load, where a clock
//! helper's call and return cost about 17 ns on every packet here.

use aya_ebpf::{
    bindings::bpf_fib_lookup as FibParams,
    helpers::{bpf_fib_lookup, bpf_jiffies64},
    programs::XdpContext,
};
use lb_common::{
    v4_addr,
    wire::{IPPROTO_IPIP, IPPROTO_IPV6},
    BackendValue, LbConfig, NeighMiss, NextHop, VipKey, XdpReason, FAMILY_V4, FAMILY_V6,
    NEXTHOP_F_LOCAL,
};

use crate::maps::{LOCAL_ENDPOINTS, NEIGH_MISSES, NEXTHOPS};

const AF_INET: u8 = FAMILY_V4;
const AF_INET6: u8 = FAMILY_V6;

/// 16 address bytes as the four words `bpf_fib_lookup` takes (byte order kept).
#[inline(always)]
fn addr_words(addr: &[u8; 16]) -> [u32; 4] {
    // SAFETY: same size, every bit pattern valid.
    unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*addr) }
}
const FIB_RET_SUCCESS: i64 = 0;
/// The destination is local (or otherwise not forwarded): a backend on this host.
const FIB_RET_NOT_FWDED: i64 = 4;
const FIB_RET_NO_NEIGH: i64 = 7;
const DEFAULT_MTU: u16 = 1500;

/// Whether a cached next hop may be used at `now` for a backend of `generation`.
#[inline(always)]
fn fresh(hop: &NextHop, generation: u32, now: u64) -> bool {
    hop.ifindex != 0 && hop.backend_generation == generation && hop.expires_jiffies > now
}

/// This CPU's cached next hop of the backend, borrowed, if it is fresh; `None` leaves the
/// lookup (and the refresh) to [`resolve`].
#[inline(always)]
pub fn cached(backend_id: u32, backend: &BackendValue) -> Option<&'static NextHop> {
    // SAFETY: a helper without arguments, callable from any program.
    let now = unsafe { bpf_jiffies64() };
    // SAFETY: per-CPU slot, bounds checked by the map lookup; only this CPU writes it, and
    // not while this program runs on it.
    let hop = unsafe { &*NEXTHOPS.get_ptr(backend_id)? };
    fresh(hop, backend.generation, now).then_some(hop)
}

#[inline(always)]
pub fn resolve(
    ctx: &XdpContext,
    backend_id: u32,
    backend: &BackendValue,
    config: &LbConfig,
) -> Result<NextHop, XdpReason> {
    // A tick (a few ms) of resolution is plenty for a TTL of about a second.
    // SAFETY: a helper without arguments, callable from any program.
    let now = unsafe { bpf_jiffies64() };
    let slot = NEXTHOPS
        .get_ptr_mut(backend_id)
        .ok_or(XdpReason::DropBackendMissing)?;
    // SAFETY: per-CPU slot, bounds checked by the map lookup.
    let cached = unsafe { *slot };
    if fresh(&cached, backend.generation, now) {
        return Ok(cached);
    }

    let local_key = VipKey {
        addr: backend.addr,
        family: backend.family,
        _pad: [0; 3],
    };
    // SAFETY: only presence matters; the value is not read.
    if unsafe { LOCAL_ENDPOINTS.get(local_key) }.is_some() {
        // A pod of this node: the route would name its veth, and the pod cannot
        // decapsulate. This node's backend side (tc ingress here) does, then the stack
        // routes the translated packet to the pod.
        let hop = local_hop(ctx, backend, config, now);
        // SAFETY: same per-CPU slot as above.
        unsafe { *slot = hop };
        return Ok(hop);
    }

    // SAFETY: an all-zero bpf_fib_lookup is a valid input.
    let mut params: FibParams = unsafe { core::mem::zeroed() };
    // SAFETY: `ctx.ctx` is the kernel's xdp_md for this run, valid while the program runs.
    params.ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let v6 = backend.family == FAMILY_V6;
    if v6 {
        params.family = AF_INET6;
        params.l4_protocol = IPPROTO_IPV6;
        params.__bindgen_anon_3.ipv6_src = addr_words(&config.encap_src_v6);
        params.__bindgen_anon_4.ipv6_dst = addr_words(&backend.addr);
    } else {
        params.family = AF_INET;
        params.l4_protocol = IPPROTO_IPIP;
        params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(config.encap_src_v4);
        params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([
            backend.addr[0],
            backend.addr[1],
            backend.addr[2],
            backend.addr[3],
        ]);
    }
    // SAFETY: params is a valid, fully sized bpf_fib_lookup on our stack.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx as *mut _,
            &mut params,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    match rc {
        FIB_RET_SUCCESS => {}
        FIB_RET_NOT_FWDED => {
            let hop = local_hop(ctx, backend, config, now);
            // SAFETY: same per-CPU slot as above.
            unsafe { *slot = hop };
            return Ok(hop);
        }
        FIB_RET_NO_NEIGH => {
            // The kernel resolves neighbours only when asked; leave a note for the daemon,
            // which asks it (RTM_NEWNEIGH with NTF_USE) and removes the note.
            let nexthop = if v6 {
                // SAFETY: the kernel left the next hop's address in the destination field
                // (IPv6 view of the union), and any 16 bytes are a valid [u8; 16].
                unsafe {
                    core::mem::transmute::<[u32; 4], [u8; 16]>(params.__bindgen_anon_4.ipv6_dst)
                }
            } else {
                // SAFETY: as above, the IPv4 view of the same field.
                v4_addr(unsafe { params.__bindgen_anon_4.ipv4_dst }.to_ne_bytes())
            };
            let miss = NeighMiss {
                nexthop,
                family: backend.family,
                _pad: [0; 3],
                ifindex: params.ifindex,
            };
            let _ = NEIGH_MISSES.insert(backend_id, miss, 0);
            return Err(XdpReason::DropNoNeighbour);
        }
        _ => return Err(XdpReason::DropNoRoute),
    }
    // SAFETY: on success the kernel set mtu_result (it shares storage with tot_len).
    let mtu = unsafe { params.__bindgen_anon_1.mtu_result };
    let hop = NextHop {
        dst_mac: params.dmac,
        src_mac: params.smac,
        ifindex: params.ifindex,
        mtu: if mtu == 0 { DEFAULT_MTU } else { mtu },
        flags: 0,
        backend_generation: backend.generation,
        expires_jiffies: now.wrapping_add(config.nexthop_ttl_jiffies),
    };
    // SAFETY: same per-CPU slot as above.
    unsafe { *slot = hop };
    Ok(hop)
}

/// The next hop of a backend on this host: up its own stack through the receiving
/// interface.
#[inline(always)]
fn local_hop(ctx: &XdpContext, backend: &BackendValue, config: &LbConfig, now: u64) -> NextHop {
    NextHop {
        dst_mac: [0; 6],
        src_mac: [0; 6],
        // SAFETY: `ctx.ctx` is the kernel's xdp_md for this run, valid while the program runs.
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        mtu: u16::MAX,
        flags: NEXTHOP_F_LOCAL,
        backend_generation: backend.generation,
        expires_jiffies: now.wrapping_add(config.nexthop_ttl_jiffies),
    }
}
