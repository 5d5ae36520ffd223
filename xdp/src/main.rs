//! The XDP balancer entry point. It stays thin: `balance` does the work and returns either
//! a forwarding verdict or the reason the packet was passed or dropped, and that reason is
//! also the index of the counter it bumps.
#![no_std]
#![no_main]

mod encap;
mod flow;
mod lookup;
mod maps;
mod nexthop;
mod parse;
mod stats;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use lb_common::XdpReason;

#[xdp]
pub fn xdp_balancer(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match balance(&ctx, len) {
        Ok(forward) => {
            stats::count_reason(forward.reason, len);
            forward.action
        }
        Err(reason) => {
            stats::count_reason(reason, len);
            action_for(reason)
        }
    }
}

/// Where a forwarded packet goes, and under which counter.
pub struct Forward {
    pub action: u32,
    pub reason: XdpReason,
}

#[inline(always)]
fn action_for(reason: XdpReason) -> u32 {
    match reason {
        XdpReason::PassNotIpv4
        | XdpReason::PassNotService
        | XdpReason::PassFragment
        | XdpReason::PassOtherProtocol
        | XdpReason::PassNotReady => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

#[inline(always)]
/// `len` is the frame's length as received, the figure every counter records.
fn balance(ctx: &XdpContext, len: u64) -> Result<Forward, XdpReason> {
    let pkt = parse::parse_ipv4(ctx)?;
    let service = lookup::service(&pkt).ok_or(XdpReason::PassNotService)?;
    let config = lookup::config().ok_or(XdpReason::PassNotReady)?;

    let flow_key = flow::key(&pkt);
    let (backend_id, backend) = match flow::lookup(&flow_key) {
        Some(hit) => hit,
        // An empty table (every backend drained or gone) refuses new flows only; the
        // flow table above still carries established ones to drained backends.
        None => {
            let hash = parse::flow_hash(&pkt, config.flow_hash_seed);
            let picked = lookup::maglev_backend(&service, hash)?;
            flow::record(&flow_key, picked.0, &picked.1);
            picked
        }
    };

    let mut hop = nexthop::resolve(ctx, backend_id, &backend, &config)?;
    if hop.flags & lb_common::NEXTHOP_F_LOCAL != 0 {
        // Up our own stack: it accepts the frame only still addressed to our MAC.
        let eth = parse::ptr_at::<parse::EthHdr>(ctx, 0).ok_or(XdpReason::DropMalformedIp)?;
        // SAFETY: bounds checked by ptr_at.
        unsafe {
            hop.dst_mac = (*eth).dst;
            hop.src_mac = (*eth).src;
        }
    }
    if u32::from(pkt.tot_len) + encap::IPIP_OVERHEAD > u32::from(hop.mtu) {
        return Err(XdpReason::DropTooBig);
    }
    encap::ipip(ctx, &pkt, &hop, config.encap_src_v4, &backend)?;

    stats::count_service(service.service_id, len);
    stats::count_backend(backend_id, len);
    Ok(nexthop::transmit(ctx, &hop))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
