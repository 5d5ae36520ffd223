//! Backend side of DSR. Ingress: remove the IPIP header the balancer added when the inner
//! packet is for this host (a VIP on the loopback, or a frontend the daemon translates to a
//! local endpoint), so the reply leaves straight for the client. Egress: give replies of
//! translated flows the frontend back as their source. No kernel tunnel module is needed.
#![no_std]
#![no_main]

mod decap;
mod l4;
mod maps;
mod nat;
mod types;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use lb_common::TcReason;

#[classifier]
pub fn tc_decap(mut ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    let reason = decap::decapsulate(&mut ctx);
    verdict(reason, len)
}

#[classifier]
pub fn tc_revnat(mut ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    let reason = nat::restore_reply(&mut ctx).unwrap_or_else(|reason| reason);
    verdict(reason, len)
}

#[inline(always)]
fn verdict(reason: TcReason, len: u64) -> i32 {
    maps::count(reason, len);
    match reason {
        TcReason::DropMalformed | TcReason::DropDecapFailed | TcReason::DropRewriteFailed => {
            TC_ACT_SHOT
        }
        _ => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
