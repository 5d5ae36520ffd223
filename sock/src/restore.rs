//! recvmsg/getpeername: an endpoint this socket was given is reported as the frontend the
//! socket addressed, so the application never sees the rewrite.

use aya_ebpf::programs::SockAddrContext;
use lb_common::SockReason;

use crate::{peer, revnat, select};

#[inline(always)]
pub fn to_frontend(ctx: &SockAddrContext, v6: bool) -> SockReason {
    let endpoint = peer::read(ctx, v6);
    match revnat::frontend(select::cookie(ctx), &endpoint) {
        Some(frontend) => {
            peer::write(ctx, v6, &frontend);
            SockReason::Restored
        }
        None => SockReason::PassNotRewritten,
    }
}
