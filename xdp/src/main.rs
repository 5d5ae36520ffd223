//! The XDP balancer entry point. It stays thin: the family's path in [`balance`] does the
//! work, and [`verdict`] turns its outcome into the action and the counter it bumps.
#![no_std]
#![no_main]

mod affinity;
mod balance;
mod encap;
mod fastpath;
mod flow;
mod fragment;
mod icmp;
mod lookup;
mod maps;
mod nexthop;
mod parse;
mod rate;
mod source_range;
mod stats;
mod verdict;
mod vlan;

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_common::{
    wire::{ETH_P_IP, ETH_P_IPV6},
    XdpReason,
};

#[xdp]
pub fn xdp_balancer(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let tag = if vlan::plain_ip(&ctx) {
        vlan::Tag::NONE
    } else {
        match vlan::admit(&ctx) {
            Ok(tag) => tag,
            Err(reason) => return verdict::finish(Err(reason), len),
        }
    };
    match parse::ether_type(&ctx) {
        Ok(ETH_P_IP) => balance::v4(&ctx, len, tag),
        Ok(ETH_P_IPV6) => balance::v6(&ctx, len, tag),
        Ok(_) => verdict::finish(vlan::restore(&ctx, tag, Err(XdpReason::PassNotIp)), len),
        Err(reason) => verdict::finish(vlan::restore(&ctx, tag, Err(reason)), len),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
