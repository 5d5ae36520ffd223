//! East-west balancing at the socket. A process in the attached cgroup that connects (or
//! sends a datagram) to a socket-balanced frontend gets the endpoint Maglev picks as its
//! peer instead, so every packet afterwards goes straight to the endpoint with no
//! per-packet translation; `recvmsg` and `getpeername` report the frontend again.
//!
//! Each entry point stays thin: [`select`] and [`restore`] do the work and [`verdict`]
//! turns their outcome into the return value and the counter it bumps.
#![no_std]
#![no_main]

mod affinity;
mod lookup;
mod maps;
mod peer;
mod restore;
mod revnat;
mod select;
mod stats;
mod verdict;

use aya_ebpf::{macros::cgroup_sock_addr, programs::SockAddrContext};

#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    verdict::selected(select::to_endpoint(&ctx, false))
}

#[cgroup_sock_addr(connect6)]
pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
    verdict::selected(select::to_endpoint(&ctx, true))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    verdict::selected(select::to_endpoint(&ctx, false))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    verdict::selected(select::to_endpoint(&ctx, true))
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    verdict::restored(restore::to_frontend(&ctx, false))
}

#[cgroup_sock_addr(recvmsg6)]
pub fn sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    verdict::restored(restore::to_frontend(&ctx, true))
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    verdict::restored(restore::to_frontend(&ctx, false))
}

#[cgroup_sock_addr(getpeername6)]
pub fn sock_getpeername6(ctx: SockAddrContext) -> i32 {
    verdict::restored(restore::to_frontend(&ctx, true))
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
