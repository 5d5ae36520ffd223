//! ICMP in the balancer, both families: answers built from the received frame and sent
//! back out (XDP_TX) — port unreachable for a refused frontend, "fragmentation needed" /
//! "packet too big" for a packet that will not fit once encapsulated — and ICMP errors
//! about a VIP flow, forwarded to the backend that owns the flow.
//!
//! - [`answer`] turns the frame into the answer in place (quote, headers, checksums);
//! - [`csum`] sums packet bytes for the checksums;
//! - answers are limited per CPU (`crate::rate`, GCRA); a suppressed answer is a drop;
//! - [`error`] reads an incoming error's quote back into the flow it belongs to.

mod answer;
mod csum;
mod error;

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use lb_common::{FlowKey, ServiceValue, VipKey, XdpReason, SERVICE_F_REJECT};

use crate::{
    encap, lookup,
    maps::{ICMP_RATE, REJECT_ADDRS},
    parse::{self, Ipv4Packet, Ipv6Packet},
    verdict::Forward,
};

use answer::Message;

/// ICMPv4 destination unreachable, and its codes used here.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 destination unreachable / port unreachable, and packet too big.
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PORT_UNREACH: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;
/// IPv6's minimum link MTU: a "packet too big" never reports less (RFC 8200 section 5).
const IPV6_MIN_MTU: u16 = 1280;

/// The packet of an IPv4 frame the balancer handles, and whether it is an ICMP error
/// about a VIP flow (then the packet's addresses and ports are that flow's, as the client
/// sends it, and it is never recorded in the flow table: see [`error`]).
#[inline(always)]
pub fn parse_v4(ctx: &XdpContext) -> Result<(Ipv4Packet, bool), XdpReason> {
    match parse::parse_ipv4(ctx) {
        Err(XdpReason::PassOtherProtocol) => Ok((error::flow_v4(ctx)?, true)),
        parsed => Ok((parsed?, false)),
    }
}

/// [`parse_v4`] for IPv6.
#[inline(always)]
pub fn parse_v6(ctx: &XdpContext) -> Result<(Ipv6Packet, bool), XdpReason> {
    match parse::parse_ipv6(ctx) {
        Err(XdpReason::PassOtherProtocol) => Ok((error::flow_v6(ctx)?, true)),
        parsed => Ok((parsed?, false)),
    }
}

/// A packet whose (address, port, protocol) is no frontend: refused when the address is a
/// rejecting one (a ClusterIP, whose Service does not define the port), else passed. An
/// ICMP error is never answered.
#[inline(always)]
pub fn no_service(
    ctx: &XdpContext,
    flow: &FlowKey,
    icmp_error: bool,
) -> Result<Forward, XdpReason> {
    let key = VipKey {
        addr: flow.dst,
        family: flow.family,
        _pad: [0; 3],
    };
    // SAFETY: only presence matters; the value is not read.
    if icmp_error || unsafe { REJECT_ADDRS.get(key) }.is_none() {
        return Err(XdpReason::PassNotService);
    }
    if flow.family == lb_common::FAMILY_V6 {
        reject_v6(ctx)
    } else {
        reject_v4(ctx)
    }
}

/// Whether a service without a backend answers with port unreachable (not for an ICMP
/// error: no error is sent about an error).
#[inline(always)]
pub fn rejects(service: &ServiceValue, icmp_error: bool) -> bool {
    service.flags & SERVICE_F_REJECT != 0 && !icmp_error
}

/// Port unreachable, IPv4.
#[inline(never)]
pub fn reject_v4(ctx: &XdpContext) -> Result<Forward, XdpReason> {
    answer(
        ctx,
        answer::v4,
        Message {
            kind: ICMP_DEST_UNREACH,
            code: ICMP_PORT_UNREACH,
            rest_be: 0,
        },
        XdpReason::RejectedIcmp,
    )
}

/// Port unreachable, IPv6.
#[inline(never)]
pub fn reject_v6(ctx: &XdpContext) -> Result<Forward, XdpReason> {
    answer(
        ctx,
        answer::v6,
        Message {
            kind: ICMPV6_DEST_UNREACH,
            code: ICMPV6_PORT_UNREACH,
            rest_be: 0,
        },
        XdpReason::RejectedIcmp,
    )
}

/// A packet too big to encapsulate for a next hop of `mtu`: "fragmentation needed" with
/// the MTU that fits, so the client's path MTU discovery converges.
///
/// Only with DF set: a packet without DF asks the path to fragment it, which is what a
/// tunnel entry owes it (RFC 2003 section 5.1) and what XDP cannot do; RFC 1191 defines
/// the message for DF packets only, and the fragments a sender would make after one are
/// not balanced anyway (no ports). Such a packet stays a `drop_too_big`. An ICMP error
/// too big to forward is dropped the same way (never an error about an error).
#[inline(always)]
pub fn too_big_v4(
    ctx: &XdpContext,
    pkt: &Ipv4Packet,
    mtu: u16,
    icmp_error: bool,
) -> Result<Forward, XdpReason> {
    if icmp_error || !pkt.dont_fragment {
        return Err(XdpReason::DropTooBig);
    }
    let fits = mtu.saturating_sub(encap::IPIP_OVERHEAD as u16);
    frag_needed_v4(ctx, fits)
}

#[inline(never)]
fn frag_needed_v4(ctx: &XdpContext, fits: u16) -> Result<Forward, XdpReason> {
    // The last two of the four bytes after the checksum carry the next-hop MTU (RFC 1191).
    let rest = u32::from(fits).to_be();
    answer(
        ctx,
        answer::v4,
        Message {
            kind: ICMP_DEST_UNREACH,
            code: ICMP_FRAG_NEEDED,
            rest_be: rest,
        },
        XdpReason::TooBigAnswered,
    )
}

/// "Packet too big" with the MTU that fits, never below IPv6's minimum (RFC 8200): a path
/// of less cannot carry IPv6 and the packet stays dropped. An ICMPv6 error too big to
/// forward is dropped.
#[inline(always)]
pub fn too_big_v6(ctx: &XdpContext, mtu: u16, icmp_error: bool) -> Result<Forward, XdpReason> {
    if icmp_error {
        return Err(XdpReason::DropTooBig);
    }
    packet_too_big_v6(ctx, mtu)
}

#[inline(never)]
fn packet_too_big_v6(ctx: &XdpContext, mtu: u16) -> Result<Forward, XdpReason> {
    let fits = mtu
        .saturating_sub(encap::IP6IP6_OVERHEAD as u16)
        .max(IPV6_MIN_MTU);
    let rest = u32::from(fits).to_be();
    answer(
        ctx,
        answer::v6,
        Message {
            kind: ICMPV6_PKT_TOOBIG,
            code: 0,
            rest_be: rest,
        },
        XdpReason::TooBigAnswered,
    )
}

/// A forwarded packet's outcome, counted as a forwarded ICMP error when it is one.
#[inline(always)]
pub fn forwarded(forward: Forward, icmp_error: bool) -> Forward {
    if icmp_error && forward.reason != XdpReason::ForwardedLocal {
        return Forward {
            action: forward.action,
            reason: XdpReason::ForwardedIcmpError,
        };
    }
    forward
}

/// Sends `msg` in place of the frame, built by the family's `build`, if the rate limit
/// lets one more answer out.
#[inline(always)]
fn answer(
    ctx: &XdpContext,
    build: impl FnOnce(&XdpContext, &Message) -> Result<(), XdpReason>,
    msg: Message,
    reason: XdpReason,
) -> Result<Forward, XdpReason> {
    allowed()?;
    build(ctx, &msg)?;
    Ok(sent(reason))
}

/// Whether the rate limit lets one more answer out now.
#[inline(always)]
fn allowed() -> Result<(), XdpReason> {
    let config = lookup::config().ok_or(XdpReason::PassNotReady)?;
    let (rate, burst) = (config.icmp_rate_per_s, config.icmp_burst);
    if crate::rate::take(&ICMP_RATE, rate.into(), burst.into()) {
        Ok(())
    } else {
        Err(XdpReason::DropIcmpRateLimited)
    }
}

/// An answer goes back where the frame came from.
#[inline(always)]
fn sent(reason: XdpReason) -> Forward {
    Forward {
        action: xdp_action::XDP_TX,
        reason,
    }
}
