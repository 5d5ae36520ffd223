//! The reverse map: which frontend a socket addressed, keyed by the socket and the
//! endpoint it was given, so `recvmsg` and `getpeername` can report the frontend.

use lb_common::{SockRevKey, SockRevValue};

use crate::{maps::SOCK_REVNAT, peer::Peer};

#[inline(always)]
fn key(cookie: u64, endpoint: &Peer) -> SockRevKey {
    SockRevKey {
        cookie,
        endpoint: endpoint.addr,
        port_be: endpoint.port_be,
        family: endpoint.family,
        _pad: [0; 5],
    }
}

/// Records that the socket `cookie` addressed `frontend` and was given `endpoint`.
/// Rewritten on every datagram of an unconnected socket, which keeps its entry fresh in
/// the LRU while the socket is in use.
#[inline(always)]
pub fn remember(cookie: u64, endpoint: &Peer, frontend: &Peer) {
    let value = SockRevValue {
        frontend: frontend.addr,
        port_be: frontend.port_be,
        _pad: 0,
    };
    // A failed insert only costs the restore: the connection itself is already right.
    let _ = SOCK_REVNAT.insert(key(cookie, endpoint), value, 0);
}

/// The frontend the socket `cookie` addressed when it was given `endpoint`, if recorded.
#[inline(always)]
pub fn frontend(cookie: u64, endpoint: &Peer) -> Option<Peer> {
    // SAFETY: the value is copied out at once, within this program's RCU section.
    let value = unsafe { SOCK_REVNAT.get(key(cookie, endpoint)) }?;
    Some(Peer {
        addr: value.frontend,
        port_be: value.port_be,
        family: endpoint.family,
    })
}
