//! One east-west peer on its own topology: client pod, node, endpoint pod.

use std::{net::SocketAddrV4, time::Duration, time::Instant};

use crate::{
    netfilter,
    peers::Programmed,
    services::{Family, ServiceSet},
    tcp::{
        destinations, run_client, topology::TcpTopology, warm_up, Server, TcpLoad, TcpPlan,
        TcpSample,
    },
};

use super::{socket::SocketBalancer, EwError, EwPeerKind};

/// One peer on its own topology (`tcp::topology`, the node a plain router). Fields drop
/// in order: server, socket programs, namespaces.
pub struct EwPeer {
    pub kind: EwPeerKind,
    server: Server,
    socket: Option<SocketBalancer>,
    topo: TcpTopology,
    /// Where the client connects: the target ClusterIP, or its endpoints for `direct`.
    dsts: Vec<SocketAddrV4>,
    /// The service set last programmed.
    set: Option<ServiceSet>,
}

impl EwPeer {
    /// The peer's namespaces, its server, and for ferrolb-socket the programs on a cgroup
    /// with maps sized for `largest`.
    pub fn create(
        kind: EwPeerKind,
        server_cpu: Option<usize>,
        plan: &TcpPlan,
        largest: &ServiceSet,
    ) -> Result<Self, EwError> {
        let topo = TcpTopology::plain(kind.tag())?;
        let socket = match kind {
            EwPeerKind::FerrolbSocket => Some(SocketBalancer::install(kind.tag(), largest)?),
            _ => None,
        };
        let server = Server::start(&topo.backend, server_cpu, plan)?;
        Ok(Self {
            kind,
            server,
            socket,
            topo,
            dsts: Vec::new(),
            set: None,
        })
    }

    /// Programs the peer for `set` (the netfilter peers' rules into the client's
    /// namespace) and makes the endpoint pod answer for the target service's endpoints.
    pub fn program(
        &mut self,
        set: &ServiceSet,
        load_timeout: Duration,
    ) -> Result<Programmed, EwError> {
        let started = Instant::now();
        let programmed = match (self.kind.rules(), &mut self.socket) {
            (Some(rules), _) => {
                netfilter::load(rules, &self.topo.client, set, &[Family::Ipv4], load_timeout)?
            }
            (None, Some(socket)) => match socket.program(set)? {
                Some(why) => Programmed::NotMeasured(why),
                None => Programmed::Done(started.elapsed()),
            },
            (None, None) => Programmed::Done(started.elapsed()),
        };
        self.topo.serve(set)?;
        self.dsts = destinations(set, self.kind == EwPeerKind::Direct);
        self.set = Some(*set);
        Ok(programmed)
    }

    /// One run of `load` from a thread in the client namespace pinned to `cpu` (for
    /// ferrolb-socket with this process in the programs' cgroup).
    pub fn run_once(
        &self,
        load: TcpLoad,
        plan: &TcpPlan,
        cpu: Option<usize>,
    ) -> Result<TcpSample, EwError> {
        if self.kind.rules().is_some() {
            netfilter::flush_conntrack(&self.topo.client, &[Family::Ipv4]);
        }
        let inside = self
            .socket
            .as_ref()
            .map(SocketBalancer::enter)
            .transpose()?;
        let sample = run_client(&self.topo.client, &self.dsts, load, plan, cpu);
        drop(inside);
        let sample = sample?;
        tracing::debug!(
            peer = self.kind.name(),
            load = load.name(),
            ?sample,
            "after east-west run"
        );
        Ok(sample)
    }

    /// A few requests before measuring (`tcp::warm_up`); for ferrolb-socket the warning
    /// says how many connects its programs balanced to the target service.
    pub fn warm_up(&self, plan: &TcpPlan) -> Result<(), EwError> {
        warm_up(
            self.kind.name(),
            plan,
            |small| self.run_once(TcpLoad::RequestResponse, small, None),
            || {
                let socket = self.socket.as_ref().zip(self.set.as_ref());
                let selections = socket.and_then(|(socket, set)| socket.selections(set));
                format!("socket selections {selections:?}")
            },
        )
    }

    pub fn stop_server(&mut self) -> Result<(), EwError> {
        Ok(self.server.stop()?)
    }
}
