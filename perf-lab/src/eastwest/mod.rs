//! East-west: a pod connecting to a ClusterIP (issue 11's benchmark). The client runs in
//! a pod's namespace; the endpoints are in another pod's namespace behind the node's
//! namespace, which only routes. What differs between the peers is how the client's
//! `connect()` to the ClusterIP becomes a connection to an endpoint:
//!
//! - `ferrolb-socket`: ferrolb's socket programs (cgroup sock_addr, `loader::install_socket`)
//!   rewrite the `connect()` itself to the endpoint Maglev picks; every packet afterwards
//!   goes pod to pod untouched.
//! - `direct`: the client connects to the endpoint address itself, no service at all: the
//!   floor of the cost and the ceiling of the rate.
//! - `nftables` / `iptables-nft`: kube-proxy's rule sets (the same text the other layers
//!   load) in the client's namespace, where kube-proxy DNATs traffic a node's own
//!   processes send (nat OUTPUT → the services chain / `KUBE-SERVICES`); conntrack undoes
//!   the DNAT on every reply and looks up every packet.
//!
//! The loads, bounds and timeouts are the TCP layer's (`tcp::TcpPlan`, `tcp::TcpLoad`),
//! as is the client and server machinery; the figures are `tcp::TcpResult`s keyed by
//! [`EwPeerKind`].

mod peer;
mod socket;

use serde::{Deserialize, Serialize};

use crate::{
    netns::NetnsError,
    peers::{PeerError, PeerKind},
    tcp::{topology::TcpTopologyError, TcpError, TcpResult},
};

pub use peer::EwPeer;
pub use socket::SocketError;

#[derive(Debug, thiserror::Error)]
pub enum EwError {
    #[error(transparent)]
    Tcp(#[from] TcpError),
    #[error(transparent)]
    Topology(#[from] TcpTopologyError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("ferrolb socket programs: {0}")]
    Socket(#[from] SocketError),
}

/// How the client's connection to the ClusterIP reaches an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EwPeerKind {
    /// ferrolb's socket programs: the endpoint is chosen at `connect()`.
    FerrolbSocket,
    /// The client connects to an endpoint address: no service, no translation.
    Direct,
    /// kube-proxy nftables mode, DNAT on the client's nat output hook.
    Nftables,
    /// kube-proxy iptables mode (nft back end), DNAT from `OUTPUT` → `KUBE-SERVICES`.
    IptablesNft,
}

impl EwPeerKind {
    pub const ALL: [EwPeerKind; 4] = [
        EwPeerKind::FerrolbSocket,
        EwPeerKind::Direct,
        EwPeerKind::Nftables,
        EwPeerKind::IptablesNft,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::FerrolbSocket => "ferrolb-socket",
            Self::Direct => "direct",
            Self::Nftables => "nftables",
            Self::IptablesNft => "iptables-nft",
        }
    }

    /// Part of the peer's namespace names.
    pub fn tag(self) -> &'static str {
        match self {
            Self::FerrolbSocket => "ewsk",
            Self::Direct => "ewdir",
            Self::Nftables => "ewnft",
            Self::IptablesNft => "ewiptn",
        }
    }

    /// The kube-proxy rule set the peer loads, if any: the same files as the datapath
    /// peer of that name, so a load stopped at its deadline in one layer is not tried
    /// again here.
    pub fn rules(self) -> Option<PeerKind> {
        match self {
            Self::FerrolbSocket | Self::Direct => None,
            Self::Nftables => Some(PeerKind::Nftables),
            Self::IptablesNft => Some(PeerKind::IptablesNft),
        }
    }
}

/// The figures of one east-west peer, load and service count.
pub type EwResult = TcpResult<EwPeerKind>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_have_distinct_names_and_only_the_netfilter_ones_load_rules() {
        let mut names: Vec<_> = EwPeerKind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EwPeerKind::ALL.len());
        let rules: Vec<_> = EwPeerKind::ALL.iter().filter_map(|k| k.rules()).collect();
        assert_eq!(rules, [PeerKind::Nftables, PeerKind::IptablesNft]);
        assert!(rules.iter().all(|r| r.is_netfilter()));
        let json = serde_json::to_string(&EwPeerKind::FerrolbSocket).unwrap();
        assert_eq!(json, "\"ferrolb-socket\"");
    }
}
