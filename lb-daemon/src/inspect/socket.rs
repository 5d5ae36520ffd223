//! `explain` for a socket of this node's pods and processes: what the socket programs do
//! with a `connect()` (or a datagram) to the destination. Which endpoint one socket gets is
//! not reproducible here: the programs key Maglev on the socket's cookie, known only
//! inside the kernel. So the explanation gives the verdict, the frontend's table and the
//! endpoints it names with their shares and target ports: what any socket may get.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{SockReason, SERVICE_F_HAS_BACKENDS, SERVICE_F_REJECT};
use lb_model::{Scope, SocketTarget};
use serde::Serialize;

use super::{backend_addresses, table_shares, Tuple};
use crate::maps::{BalancerMaps, MapsError};

#[derive(Debug, Serialize)]
pub struct SocketEndpointView {
    pub address: Option<IpAddr>,
    /// Where a socket given this endpoint connects: its target port for the frontend, or
    /// the frontend's own port when none is written (as the programs do).
    pub target_port: u16,
    /// Slots of the frontend's table the endpoint owns: its share of sockets.
    pub slots: u32,
    pub active: bool,
}

#[derive(Debug, Serialize)]
pub struct SocketExplanation {
    pub tuple: Tuple,
    pub frontend: String,
    pub service_id: Option<u32>,
    /// The socket programs' outcome (their reason names): `selected` (an endpoint of the
    /// table), `reject_no_backend` (ECONNREFUSED), `drop_no_backend` (the call fails with
    /// EPERM) or `pass_not_service` (left alone).
    pub verdict: &'static str,
    pub table_size: Option<u32>,
    pub endpoints: Vec<SocketEndpointView>,
    pub why: String,
}

/// Explains a `connect()`/`sendmsg()` from `tuple.src` to `tuple.dst`, with the socket
/// programs' target ports `targets` (as `SocketMaps::targets` reads them).
pub fn explain(
    maps: &BalancerMaps,
    targets: &[SocketTarget],
    tuple: Tuple,
) -> Result<SocketExplanation, MapsError> {
    let frontend = tuple.frontend(Scope::Internal);
    let mut out = SocketExplanation {
        tuple,
        frontend: frontend.to_string(),
        service_id: None,
        verdict: SockReason::PassNotService.name(),
        table_size: None,
        endpoints: Vec::new(),
        why: format!(
            "no socket-balanced frontend at {frontend}: the call goes to that address unchanged"
        ),
    };
    let Some(service) = maps.scoped_service(Scope::Internal, &frontend.key())? else {
        return Ok(out);
    };
    out.service_id = Some(service.service_id);
    out.table_size = Some(service.table_size);
    let ports: BTreeMap<IpAddr, u16> = targets
        .iter()
        .filter(|t| t.frontend == frontend)
        .map(|t| (t.endpoint, t.target_port))
        .collect();
    let addresses = backend_addresses(maps)?;
    for (id, slots) in table_shares(maps, &service)? {
        let (address, active) = addresses.get(&id).copied().unwrap_or((None, false));
        let target_port = address
            .and_then(|a| ports.get(&a).copied())
            .unwrap_or(frontend.port);
        out.endpoints.push(SocketEndpointView {
            address,
            target_port,
            slots,
            active,
        });
    }
    let (verdict, why) = if service.flags & SERVICE_F_HAS_BACKENDS == 0 {
        if service.flags & SERVICE_F_REJECT != 0 {
            (
                SockReason::RejectNoBackend,
                format!(
                    "{frontend} has no usable endpoint: connect() fails at once with ECONNREFUSED"
                ),
            )
        } else {
            (
                SockReason::DropNoBackend,
                format!("{frontend} has no endpoint usable from this node (a Local policy, endpoints elsewhere): the call fails as a drop (EPERM)"),
            )
        }
    } else {
        let live = out.endpoints.iter().filter(|e| e.active).count();
        (
            SockReason::Selected,
            format!(
                "the socket gets one of these {live} endpoints, in proportion to its slots: Maglev over the socket's cookie, which only the kernel knows, so the endpoint of one connection cannot be named here (the source address plays no part)"
            ),
        )
    };
    out.verdict = verdict.name();
    out.why = why;
    Ok(out)
}
