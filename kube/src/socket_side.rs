//! What the socket programs need beside the balancer's maps: the port every endpoint of
//! every internal-scope frontend listens on for it. Pure.
//!
//! The socket programs rewrite a `connect()` (or a datagram) to a frontend into one to
//! the endpoint Maglev picks, at that endpoint's target port; named target ports differ
//! per endpoint (rule 4 of `docs/kube-proxy-semantics.md`), so the port is kept per
//! (frontend, endpoint). Only the endpoints of the frontend's `internal` verdict are
//! listed: the tables the socket programs read hold no others.

use std::{collections::BTreeMap, net::IpAddr};

use lb_model::{Frontend, Scope, SocketTarget};

use crate::{
    projection::{servable, served_at_socket},
    rules::{IpFamily, KubeDesiredState, Verdict},
};

/// The target ports of every internal-scope frontend the projection programs, sorted.
/// When two Services claim the same frontend, the first in name order keeps it, as in the
/// projection; an endpoint listed with two ports keeps the first, as its backend does.
pub fn socket_targets(state: &KubeDesiredState) -> Vec<SocketTarget> {
    let mut held: BTreeMap<Frontend, BTreeMap<IpAddr, u16>> = BTreeMap::new();
    for (_, port, fe) in state.frontends() {
        let Ok(protocol) = servable(fe) else {
            continue;
        };
        let frontend = Frontend {
            vip: fe.address,
            port: fe.port,
            protocol,
            scope: Scope::Internal,
        };
        let std::collections::btree_map::Entry::Vacant(entry) = held.entry(frontend) else {
            continue;
        };
        // Claimed even when not served at the socket, as the projection claims it.
        let targets = entry.insert(BTreeMap::new());
        if !served_at_socket(fe) {
            continue;
        }
        if let Verdict::Forward(set) = fe.internal {
            for e in port.endpoints_for(IpFamily::of(fe.address), set) {
                targets.entry(e.address).or_insert(e.port);
            }
        }
    }
    held.into_iter()
        .flat_map(|(frontend, targets)| {
            targets
                .into_iter()
                .map(move |(endpoint, target_port)| SocketTarget {
                    frontend,
                    endpoint,
                    target_port,
                })
        })
        .collect()
}
