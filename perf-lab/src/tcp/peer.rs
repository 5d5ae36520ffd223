//! A peer's datapath on its own TCP topology, with the server behind it and the client
//! loads run through it.

use std::{net::SocketAddrV4, time::Duration};

use crate::{
    netns::Netns,
    peers::{Datapath, PeerKind, Programmed},
    services::{Family, ServiceSet, SERVICE_PORT},
    topology::DUT_IN,
};

use super::{
    client::{connect_close, request_response},
    io,
    server::Server,
    topology::TcpTopology,
    TcpError, TcpLoad, TcpPlan, TcpSample,
};

/// One peer on its own TCP topology. Fields drop in order: server, datapath, namespaces.
pub struct TcpPeer {
    pub kind: PeerKind,
    server: Server,
    pub datapath: Datapath,
    pub topo: TcpTopology,
    /// Where the client connects: the target VIP, or its endpoints for plain forwarding.
    dsts: Vec<SocketAddrV4>,
}

impl TcpPeer {
    pub fn create(
        kind: PeerKind,
        server_cpu: Option<usize>,
        plan: &TcpPlan,
    ) -> Result<Self, TcpError> {
        let topo = TcpTopology::create(kind)?;
        let datapath = Datapath::install(
            kind,
            &topo.dut,
            DUT_IN,
            None,
            &format!("t{}", kind.tag()),
            None,
            1,
        )?;
        let server = Server::start(&topo.backend, server_cpu, plan)?;
        Ok(Self {
            kind,
            server,
            datapath,
            topo,
            dsts: Vec::new(),
        })
    }

    /// Programs the peer for `set` and makes the backend answer for its target service.
    pub fn program(
        &mut self,
        set: &ServiceSet,
        load_timeout: Duration,
    ) -> Result<Programmed, TcpError> {
        let programmed =
            self.datapath
                .program(&self.topo.dut, set, &[Family::Ipv4], load_timeout)?;
        self.topo.serve(set)?;
        self.dsts = destinations(set, self.kind == PeerKind::Forward);
        Ok(programmed)
    }

    /// One run of `load`, from a thread in the client namespace pinned to `cpu`.
    pub fn run_once(
        &self,
        load: TcpLoad,
        plan: &TcpPlan,
        cpu: Option<usize>,
    ) -> Result<TcpSample, TcpError> {
        self.datapath.flush_state(&self.topo.dut);
        let sample = run_client(&self.topo.client, &self.dsts, load, plan, cpu)?;
        tracing::debug!(
            peer = self.kind.name(),
            load = load.name(),
            ?sample,
            reasons = ?self.datapath.reasons(),
            "after TCP run"
        );
        Ok(sample)
    }

    /// A few requests before measuring ([`warm_up`]), ferrolb's reason counters in the
    /// warning if none got through.
    pub fn warm_up(&self, plan: &TcpPlan) -> Result<(), TcpError> {
        warm_up(
            self.kind.name(),
            plan,
            |small| self.run_once(TcpLoad::RequestResponse, small, None),
            || format!("reasons {:?}", self.datapath.reasons()),
        )
    }

    pub fn stop_server(&mut self) -> Result<(), TcpError> {
        self.server.stop()
    }
}

/// One run of `load` against `dsts` (round-robin), from a thread that has entered
/// `client` and is pinned to `cpu`, on one tokio event loop: the client of every peer
/// of the TCP and east-west layers.
pub(crate) fn run_client(
    client: &Netns,
    dsts: &[SocketAddrV4],
    load: TcpLoad,
    plan: &TcpPlan,
    cpu: Option<usize>,
) -> Result<TcpSample, TcpError> {
    let dsts = dsts.to_vec();
    let plan = *plan;
    client.run_inside(cpu, move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("client runtime"))?;
        Ok::<_, TcpError>(runtime.block_on(async move {
            match load {
                TcpLoad::RequestResponse => request_response(&dsts, &plan, plan.connections).await,
                TcpLoad::RequestResponseSingle => request_response(&dsts, &plan, 1).await,
                TcpLoad::ConnectClose => connect_close(&dsts, &plan).await,
            }
        }))
    })?
}

/// Where the client connects for `set`: the target service's VIP, or with
/// `to_endpoints` its endpoints themselves (round-robin).
pub(crate) fn destinations(set: &ServiceSet, to_endpoints: bool) -> Vec<SocketAddrV4> {
    let target = set.target();
    if to_endpoints {
        set.endpoints(target)
            .into_iter()
            .map(|a| SocketAddrV4::new(a, SERVICE_PORT))
            .collect()
    } else {
        vec![SocketAddrV4::new(set.vip(target), SERVICE_PORT)]
    }
}

/// The warm-up before a peer's first measured run: a few requests on two connections
/// (`run` with a small copy of `plan`). It resolves neighbours and proves the path works;
/// a broken path is logged here, with `detail`, and then shows as failures in every run.
pub(crate) fn warm_up<E>(
    peer: &str,
    plan: &TcpPlan,
    run: impl FnOnce(&TcpPlan) -> Result<TcpSample, E>,
    detail: impl FnOnce() -> String,
) -> Result<(), E> {
    let small = TcpPlan {
        connections: 2,
        requests: 20,
        seconds: plan.seconds.min(1.0),
        ..*plan
    };
    let sample = run(&small)?;
    if sample.completed == 0 {
        tracing::warn!(
            peer,
            ?sample,
            detail = detail(),
            "no TCP request got through in the warm-up"
        );
    }
    Ok(())
}
