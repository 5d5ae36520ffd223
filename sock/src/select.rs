//! connect/sendmsg: a call that names a socket-balanced frontend gets the endpoint Maglev
//! picks, at the endpoint's target port, and the socket remembers the frontend.

use aya_ebpf::{helpers::bpf_get_socket_cookie, programs::SockAddrContext, EbpfContext};
use lb_common::{SockReason, SERVICE_F_AFFINITY, SERVICE_F_HAS_BACKENDS, SERVICE_F_REJECT};
use lb_hashing::flow::socket_hash;

use crate::{affinity, lookup, peer, peer::Peer, revnat, stats};

/// The socket's cookie: unique for the socket's life, known at `connect()` time.
#[inline(always)]
pub fn cookie(ctx: &SockAddrContext) -> u64 {
    // SAFETY: the helper takes the program's own context.
    unsafe { bpf_get_socket_cookie(ctx.as_ptr()) }
}

/// Rewrites the call's peer from a frontend to its endpoint, or says why not.
///
/// The Maglev key is the socket cookie: the source port is not chosen yet when
/// `connect()` runs, and one key per socket keeps every datagram of an unconnected UDP
/// socket on one endpoint. A service with session affinity keys it on the caller's
/// network namespace instead (see `affinity`).
#[inline(always)]
pub fn to_endpoint(ctx: &SockAddrContext, v6: bool) -> Result<(), SockReason> {
    let proto = peer::protocol(ctx).ok_or(SockReason::PassNotService)?;
    let frontend = peer::read(ctx, v6);
    let Some(service) = lookup::service(&frontend, proto) else {
        return Err(if lookup::rejects_unknown_ports(&frontend) {
            SockReason::RejectNoBackend
        } else {
            SockReason::PassNotService
        });
    };
    if service.flags & SERVICE_F_HAS_BACKENDS == 0 {
        return Err(if service.flags & SERVICE_F_REJECT != 0 {
            SockReason::RejectNoBackend
        } else {
            SockReason::DropNoBackend
        });
    }
    let cookie = cookie(ctx);
    let backend = if service.flags & SERVICE_F_AFFINITY != 0 {
        affinity::endpoint(ctx, &service)?
    } else {
        lookup::endpoint(&service, socket_hash(cookie, lookup::seed()))?.1
    };
    // The daemon never mixes families in a service; a slot that does is not followed.
    if backend.family != frontend.family {
        return Err(SockReason::DropBackendMissing);
    }
    let endpoint = Peer {
        addr: backend.addr,
        port_be: lookup::target_port(&frontend, proto, &backend.addr),
        family: frontend.family,
    };
    revnat::remember(cookie, &endpoint, &frontend);
    peer::write(ctx, v6, &endpoint);
    stats::count_service(service.service_id);
    Ok(())
}
