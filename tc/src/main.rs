//! Backend side of DSR: remove the IPIP header the balancer added when the inner packet is
//! for a VIP this host serves, so the stack delivers it to the VIP on the loopback and the
//! reply leaves straight for the client. No kernel tunnel module is needed.
#![no_std]
#![no_main]

mod decap;
mod maps;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use lb_common::TcReason;

#[classifier]
pub fn tc_decap(ctx: TcContext) -> i32 {
    let len = u64::from(ctx.len());
    let reason = match decap::decapsulate(&ctx) {
        Ok(()) => TcReason::Decapsulated,
        Err(reason) => reason,
    };
    maps::count(reason, len);
    match reason {
        TcReason::DropMalformed | TcReason::DropDecapFailed => TC_ACT_SHOT,
        _ => TC_ACT_OK,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
