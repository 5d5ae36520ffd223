//! IPIP decapsulation with `bpf_skb_adjust_room`.

use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4},
    programs::TcContext,
};
use lb_common::{
    v4_addr,
    wire::{ETH_HLEN, ETH_P_IP, IPPROTO_IPIP, IPV4_HLEN},
    TcReason, VipKey, FAMILY_V4,
};

use crate::{
    l4::{IP_DADDR_OFF, IP_MF_OFFSET_MASK},
    maps::LOCAL_VIPS,
    nat,
};

/// Offset of the protocol byte and of the fragment field in an IPv4 header.
const IP_PROTO_OFF: usize = 9;
const IP_FRAG_OFF: usize = 6;

/// Strips the outer header of IPIP packets for this host: those the daemon programmed a
/// translation for (the inner packet then goes to the local endpoint) and those whose inner
/// destination is a VIP on this host's loopback.
#[inline(always)]
pub fn decapsulate(ctx: &mut TcContext) -> Result<TcReason, TcReason> {
    let ether_type: u16 = ctx.load(12).map_err(|_| TcReason::PassNotIpip)?;
    if u16::from_be(ether_type) != ETH_P_IP {
        return Err(TcReason::PassNotIpip);
    }
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
    let outer_daddr: [u8; 4] = ctx
        .load(ETH_HLEN + IP_DADDR_OFF)
        .map_err(|_| TcReason::PassNotIpip)?;
    let inner = ETH_HLEN + IPV4_HLEN;
    let inner_ver_ihl: u8 = ctx.load(inner).map_err(|_| TcReason::DropMalformed)?;
    if inner_ver_ihl >> 4 != 4 || inner_ver_ihl & 0x0f < 5 {
        return Err(TcReason::DropMalformed);
    }
    let inner_daddr: [u8; 4] = ctx
        .load(inner + IP_DADDR_OFF)
        .map_err(|_| TcReason::DropMalformed)?;
    let translation = nat::find(ctx, inner, outer_daddr);
    if translation.is_none() {
        let key = VipKey {
            addr: v4_addr(inner_daddr),
            family: FAMILY_V4,
            _pad: [0; 3],
        };
        // SAFETY: only presence matters; the value is not read.
        if unsafe { LOCAL_VIPS.get(key) }.is_none() {
            return Err(TcReason::PassNotLocalVip);
        }
    }
    ctx.adjust_room(
        -(IPV4_HLEN as i32),
        BPF_ADJ_ROOM_MAC,
        u64::from(BPF_F_ADJ_ROOM_DECAP_L3_IPV4),
    )
    .map_err(|_| TcReason::DropDecapFailed)?;
    match translation {
        Some(t) => {
            nat::apply(ctx, &t)?;
            Ok(TcReason::DecapsulatedTranslated)
        }
        None => Ok(TcReason::Decapsulated),
    }
}
