//! The layers over real sockets: TCP through each datapath peer, and east-west (pod →
//! ClusterIP). Both run the same loads in the same interleaved rounds; only their peers
//! differ.

use std::time::Duration;

use crate::{
    eastwest::{EwError, EwPeer, EwPeerKind, EwResult},
    peers::{PeerKind, Programmed},
    services::ServiceSet,
    tcp::{TcpError, TcpLoad, TcpPeer, TcpPlan, TcpResult, TcpSample},
};

use super::{layer::LayerPeer, Suite, SuiteError};

/// What a socket layer needs of its peers.
pub(super) trait SocketPeer: LayerPeer {
    /// What names the peer in the results.
    type Kind: Copy;
    fn kind(&self) -> Self::Kind;
    fn program(
        &mut self,
        set: &ServiceSet,
        load_timeout: Duration,
    ) -> Result<Programmed, SuiteError>;
    /// A few requests before the measured runs.
    fn warm_up(&self, plan: &TcpPlan) -> Result<(), SuiteError>;
    fn run_once(
        &self,
        load: TcpLoad,
        plan: &TcpPlan,
        cpu: Option<usize>,
    ) -> Result<TcpSample, SuiteError>;
    fn stop_server(&mut self) -> Result<(), SuiteError>;
}

/// Each peer type's own methods, their errors named by the peer.
macro_rules! socket_peer {
    ($($peer:ty => $kind:ty, $err:ident);*) => {$(
        impl SocketPeer for $peer {
            type Kind = $kind;
            fn kind(&self) -> $kind {
                self.kind
            }
            fn program(
                &mut self,
                set: &ServiceSet,
                timeout: Duration,
            ) -> Result<Programmed, SuiteError> {
                <$peer>::program(self, set, timeout).map_err($err(self.kind))
            }
            fn warm_up(&self, plan: &TcpPlan) -> Result<(), SuiteError> {
                <$peer>::warm_up(self, plan).map_err($err(self.kind))
            }
            fn run_once(
                &self,
                load: TcpLoad,
                plan: &TcpPlan,
                cpu: Option<usize>,
            ) -> Result<TcpSample, SuiteError> {
                <$peer>::run_once(self, load, plan, cpu).map_err($err(self.kind))
            }
            fn stop_server(&mut self) -> Result<(), SuiteError> {
                <$peer>::stop_server(self).map_err($err(self.kind))
            }
        }
    )*};
}
socket_peer!(TcpPeer => PeerKind, tcp_err; EwPeer => EwPeerKind, ew_err);

impl Suite<'_> {
    /// Request/response latency and connection rate through every datapath peer.
    pub(super) fn tcp_layer(&mut self) -> Result<Vec<TcpResult>, SuiteError> {
        let plan = self.plan;
        if !plan.layers.tcp {
            return Ok(Vec::new());
        }
        let server_cpu = self.server_cpu();
        let peers = plan
            .tcp_peers()
            .into_iter()
            .map(|kind| TcpPeer::create(kind, server_cpu, &plan.tcp).map_err(tcp_err(kind)))
            .collect::<Result<Vec<_>, _>>()?;
        self.socket_layer("tcp", peers, &plan.tcp)
    }

    /// The same loads from a pod to a ClusterIP: ferrolb's socket programs, the endpoint
    /// directly, kube-proxy's DNAT in the client's namespace.
    pub(super) fn east_west_layer(&mut self) -> Result<Vec<EwResult>, SuiteError> {
        let plan = self.plan;
        if !plan.layers.east_west {
            return Ok(Vec::new());
        }
        let server_cpu = self.server_cpu();
        // One peer serves every service set of the run: ferrolb's maps fit the largest.
        let largest = ServiceSet {
            services: plan.service_counts.iter().copied().max().unwrap_or(1),
            backends: plan.backends,
        };
        let peers = EwPeerKind::ALL
            .into_iter()
            .map(|kind| {
                EwPeer::create(kind, server_cpu, &plan.east_west, &largest).map_err(ew_err(kind))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.socket_layer("east-west", peers, &plan.east_west)
    }

    /// Client and server on different CPUs where there are two: the server on CPU 0, the
    /// client on the generator's CPU as in the rate layer.
    fn server_cpu(&self) -> Option<usize> {
        (self.cpus > 1).then_some(0)
    }

    /// Every load of `loads` through every peer at every service set, in interleaved
    /// rounds; each peer warmed up once it is programmed; the servers stopped at the end.
    fn socket_layer<P: SocketPeer>(
        &mut self,
        layer: &'static str,
        mut peers: Vec<P>,
        loads: &TcpPlan,
    ) -> Result<Vec<TcpResult<P::Kind>>, SuiteError> {
        let plan = self.plan;
        let client_cpu = Some(self.generator_cpu);
        let cells: Vec<(TcpLoad, String)> = TcpLoad::ALL
            .iter()
            .map(|&load| (load, load.name().to_string()))
            .collect();
        let results = self.layer_run(layer).measure(
            &mut peers,
            &cells,
            |peer, set| {
                let programmed = peer.program(set, plan.load_timeout())?;
                if let Programmed::Done(_) = programmed {
                    peer.warm_up(loads)?;
                }
                Ok(programmed)
            },
            |peer, set, load, why| TcpResult::new(peer.kind(), set, load, why),
            |peer, load| peer.run_once(load, loads, client_cpu),
        )?;
        for peer in &mut peers {
            peer.stop_server()?;
        }
        Ok(results)
    }
}

fn tcp_err(kind: PeerKind) -> impl Fn(TcpError) -> SuiteError {
    move |source| SuiteError::Tcp {
        peer: kind.name(),
        source: Box::new(source),
    }
}

fn ew_err(kind: EwPeerKind) -> impl Fn(EwError) -> SuiteError {
    move |source| SuiteError::EastWest {
        peer: kind.name(),
        source: Box::new(source),
    }
}
