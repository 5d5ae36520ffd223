//! What the program does with a packet once its fate is decided: the XDP action it
//! returns (back out of the receiving interface, redirected, up the stack, dropped) and
//! the reason counter that records it. A reason is also the index of its counter.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, programs::XdpContext};
use lb_common::{NextHop, XdpReason, NEXTHOP_F_LOCAL};

use crate::stats;

/// Where a forwarded packet goes, and under which counter.
pub struct Forward {
    pub action: u32,
    pub reason: XdpReason,
}

/// Counts the outcome and returns the XDP action. `len` is the frame's length as
/// received, the figure every counter records.
#[inline(always)]
pub fn finish(outcome: Result<Forward, XdpReason>, len: u64) -> u32 {
    match outcome {
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

/// The action of a packet the balancer does not forward: the stack gets what is not
/// ours to balance, the rest is dropped.
#[inline(always)]
pub fn action_for(reason: XdpReason) -> u32 {
    match reason {
        XdpReason::PassNotIp
        | XdpReason::PassNotService
        | XdpReason::PassFragment
        | XdpReason::PassOtherProtocol
        | XdpReason::PassNotReady
        | XdpReason::PassVlan => xdp_action::XDP_PASS,
        _ => xdp_action::XDP_DROP,
    }
}

/// Sends the encapsulated frame: back out of the receiving interface when the route says so
/// (the common one-armed LB), else redirected to the route's interface.
#[inline(always)]
pub fn transmit(ctx: &XdpContext, hop: &NextHop) -> Forward {
    if hop.flags & NEXTHOP_F_LOCAL != 0 {
        return Forward {
            action: xdp_action::XDP_PASS,
            reason: XdpReason::ForwardedLocal,
        };
    }
    // SAFETY: `ctx.ctx` is the kernel's xdp_md for this run, valid while the program runs.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    if hop.ifindex == ingress {
        return Forward {
            action: xdp_action::XDP_TX,
            reason: XdpReason::Forwarded,
        };
    }
    // SAFETY: plain helper call; an invalid ifindex makes the redirect fail at xmit time.
    let action = unsafe { bpf_redirect(hop.ifindex, 0) } as u32;
    Forward {
        action,
        reason: XdpReason::ForwardedRedirect,
    }
}
