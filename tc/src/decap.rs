//! IPIP decapsulation with `bpf_skb_adjust_room`.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6,
    },
    programs::TcContext,
};
use lb_common::{
    v4_addr,
    wire::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPV4_HLEN, IPV6_HLEN},
    Addr, TcReason, VipKey, FAMILY_V4, FAMILY_V6,
};

use crate::{
    l4::{
        IP6_DADDR_OFF, IP6_NEXTHDR_OFF, IP_DADDR_OFF, IP_FRAG_OFF, IP_MF_OFFSET_MASK, IP_PROTO_OFF,
    },
    maps::LOCAL_VIPS,
    nat,
    types::Translation,
};

#[inline(always)]
fn is_local_vip(addr: Addr, family: u8) -> bool {
    let key = VipKey {
        addr,
        family,
        _pad: [0; 3],
    };
    // SAFETY: only presence matters; the value is not read.
    unsafe { LOCAL_VIPS.get(key) }.is_some()
}

/// IP6IP6, as `decapsulate` for IPIP.
#[inline(always)]
fn try_decapsulate_v6(ctx: &mut TcContext) -> Result<TcReason, TcReason> {
    let nexthdr: u8 = ctx
        .load(ETH_HLEN + IP6_NEXTHDR_OFF)
        .map_err(|_| TcReason::PassNotIpip)?;
    if nexthdr != IPPROTO_IPV6 {
        return Err(TcReason::PassNotIpip);
    }
    let inner = ETH_HLEN + IPV6_HLEN;
    let inner_version: u8 = ctx.load(inner).map_err(|_| TcReason::DropMalformed)?;
    if inner_version >> 4 != 6 {
        return Err(TcReason::DropMalformed);
    }
    let translation = nat::scratch().ok_or(TcReason::DropRewriteFailed)?;
    let translated = nat::find(ctx, inner, ETH_HLEN + IP6_DADDR_OFF, FAMILY_V6, translation);
    if !translated {
        let inner_daddr: Addr = ctx
            .load(inner + IP6_DADDR_OFF)
            .map_err(|_| TcReason::DropMalformed)?;
        if !is_local_vip(inner_daddr, FAMILY_V6) {
            return Err(TcReason::PassNotLocalVip);
        }
    }
    ctx.adjust_room(
        -(IPV6_HLEN as i32),
        BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_DECAP_L3_IPV6),
    )
    .map_err(|_| TcReason::DropDecapFailed)?;
    finish(ctx, translated.then_some(translation))
}

/// Strips the outer header of IPIP (and IP6IP6) packets for this host: those the daemon programmed a
/// translation for (the inner packet then goes to the local endpoint) and those whose inner
/// destination is a VIP on this host's loopback.
#[inline(always)]
pub fn decapsulate(ctx: &mut TcContext) -> TcReason {
    match ctx.load::<u16>(12).map(u16::from_be) {
        Ok(ETH_P_IP) => decapsulate_v4(ctx),
        Ok(ETH_P_IPV6) => decapsulate_v6(ctx),
        _ => TcReason::PassNotIpip,
    }
}

// Each family is a BPF subprogram of its own: inlined together their stack frames add up
// past the 512-byte limit.
#[inline(never)]
fn decapsulate_v4(ctx: &mut TcContext) -> TcReason {
    try_decapsulate_v4(ctx).unwrap_or_else(|reason| reason)
}

#[inline(never)]
fn decapsulate_v6(ctx: &mut TcContext) -> TcReason {
    try_decapsulate_v6(ctx).unwrap_or_else(|reason| reason)
}

#[inline(always)]
fn try_decapsulate_v4(ctx: &mut TcContext) -> Result<TcReason, TcReason> {
    let outer_ver_ihl: u8 = ctx.load(ETH_HLEN).map_err(|_| TcReason::PassNotIpip)?;
    let outer_proto: u8 = ctx
        .load(ETH_HLEN + IP_PROTO_OFF)
        .map_err(|_| TcReason::PassNotIpip)?;
    if outer_proto != IPPROTO_IPIP {
        return Err(TcReason::PassNotIpip);
    }
    // The balancer never sends outer options; anything else is not ours to strip.
    if outer_ver_ihl != 0x45 {
        return Err(TcReason::PassNotIpip);
    }
    // An outer fragment carries only part of the inner packet: leave reassembly to the
    // stack rather than strip a header off a piece.
    let frag_off_be: u16 = ctx
        .load(ETH_HLEN + IP_FRAG_OFF)
        .map_err(|_| TcReason::PassNotIpip)?;
    if u16::from_be(frag_off_be) & IP_MF_OFFSET_MASK != 0 {
        return Err(TcReason::PassNotIpip);
    }
    let inner = ETH_HLEN + IPV4_HLEN;
    let inner_ver_ihl: u8 = ctx.load(inner).map_err(|_| TcReason::DropMalformed)?;
    if inner_ver_ihl >> 4 != 4 || inner_ver_ihl & 0x0f < 5 {
        return Err(TcReason::DropMalformed);
    }
    let inner_daddr: [u8; 4] = ctx
        .load(inner + IP_DADDR_OFF)
        .map_err(|_| TcReason::DropMalformed)?;
    let translation = nat::scratch().ok_or(TcReason::DropRewriteFailed)?;
    let translated = nat::find(ctx, inner, ETH_HLEN + IP_DADDR_OFF, FAMILY_V4, translation);
    if !translated && !is_local_vip(v4_addr(inner_daddr), FAMILY_V4) {
        return Err(TcReason::PassNotLocalVip);
    }
    ctx.adjust_room(
        -(IPV4_HLEN as i32),
        BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_DECAP_L3_IPV4),
    )
    .map_err(|_| TcReason::DropDecapFailed)?;
    finish(ctx, translated.then_some(translation))
}

/// After the outer header is gone: translate, or leave the packet for the local VIP.
#[inline(always)]
fn finish(
    ctx: &mut TcContext,
    translation: Option<&mut Translation>,
) -> Result<TcReason, TcReason> {
    match translation {
        Some(t) => match nat::apply(ctx, t) {
            TcReason::DecapsulatedTranslated => Ok(TcReason::DecapsulatedTranslated),
            failed => Err(failed),
        },
        None => Ok(TcReason::Decapsulated),
    }
}
