//! A program that passes every frame. veth drops frames redirected into it (XDP_TX or
//! bpf_redirect from its peer) unless the receiving side has an XDP program attached, so
//! lab topologies attach this one there.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

#[xdp]
pub fn xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
