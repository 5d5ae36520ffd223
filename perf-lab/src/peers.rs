//! The datapaths compared, each on its own copy of the topology: how each is set up once
//! and programmed for a service set.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::Ebpf;
use lb_common::program_names;
use lb_daemon::{
    loader,
    maps::BalancerMaps,
    sync::{DatapathParams, SyncEngine, SyncError},
};
use serde::{Deserialize, Serialize};

mod external_dut;

use external_dut::External;

use crate::{
    external::{self, ExternalError, ExternalPeer},
    generator,
    measured::NotMeasured,
    netfilter,
    netns::{Netns, NetnsError, PinDir},
    objects::layout::RedirectConfig,
    programs::{self, ProgramsError, Sink},
    rate::FlowKind,
    services::{Family, ServiceSet, SERVICE_PORT},
    topology::{Topology, DUT_IN, DUT_OUT_ADDR, DUT_OUT_ADDR6, SINK_IF},
};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Programs(#[from] ProgramsError),
    #[error("ferrolb loader: {0}")]
    Loader(#[from] loader::LoaderError),
    #[error("ferrolb maps: {0}")]
    Maps(#[from] lb_daemon::maps::MapsError),
    #[error("ferrolb sync: {0}")]
    Sync(#[from] SyncError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bpf-redirect needs a redirect target (it has none in this topology)")]
    NoRedirectTarget,
    #[error(transparent)]
    External(Box<ExternalError>),
}

impl From<ExternalError> for PeerError {
    fn from(e: ExternalError) -> Self {
        Self::External(Box::new(e))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// Rewrite MACs and bpf_redirect: no lookup at all, the ceiling.
    BpfRedirect,
    /// Plain kernel forwarding to an endpoint address, no NAT, no conntrack: the floor.
    Forward,
    /// kube-proxy nftables mode.
    Nftables,
    /// kube-proxy iptables mode, legacy (x_tables) back end.
    IptablesLegacy,
    /// kube-proxy iptables mode, nft back end.
    IptablesNft,
    /// This project's datapath: XDP Maglev + IPIP direct server return.
    FerrolbDsr,
    /// The i-th peer a user brought (`external::registered()`).
    External(u8),
}

impl PeerKind {
    pub const ALL: [PeerKind; 6] = [
        PeerKind::BpfRedirect,
        PeerKind::Forward,
        PeerKind::Nftables,
        PeerKind::IptablesLegacy,
        PeerKind::IptablesNft,
        PeerKind::FerrolbDsr,
    ];

    /// The built-in peers, then the external ones of this process.
    pub fn all() -> Vec<PeerKind> {
        let externals = (0..external::registered().len()).map(|i| PeerKind::External(i as u8));
        Self::ALL.into_iter().chain(externals).collect()
    }

    /// The external peer's description, for external peers.
    pub fn external(self) -> Option<&'static ExternalPeer> {
        match self {
            Self::External(i) => external::registered().get(usize::from(i)),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::External(_) => self.external().map_or("external-unknown", |p| &p.name),
            Self::BpfRedirect => "bpf-redirect",
            Self::Forward => "forward",
            Self::Nftables => "nftables",
            Self::IptablesLegacy => "iptables-legacy",
            Self::IptablesNft => "iptables-nft",
            Self::FerrolbDsr => "ferrolb-dsr",
        }
    }

    pub fn tag(self) -> String {
        match self {
            Self::BpfRedirect => "redir".into(),
            Self::Forward => "fwd".into(),
            Self::Nftables => "nft".into(),
            Self::IptablesLegacy => "iptl".into(),
            Self::IptablesNft => "iptn".into(),
            Self::FerrolbDsr => "flb".into(),
            Self::External(i) => format!("x{i}"),
        }
    }

    /// kube-proxy's rule sets, loaded by nft or iptables-restore.
    pub fn is_netfilter(self) -> bool {
        matches!(
            self,
            Self::Nftables | Self::IptablesLegacy | Self::IptablesNft
        )
    }

    /// Whether the peer keeps conntrack state that must be flushed between runs.
    pub fn uses_conntrack(self) -> bool {
        self.is_netfilter()
    }

    /// The restore tool for `family` (kube-proxy's IPv6 proxier uses ip6tables).
    pub fn restore_command(self, family: Family) -> Option<&'static str> {
        match (self, family) {
            (Self::IptablesLegacy, Family::Ipv4) => Some("iptables-legacy-restore"),
            (Self::IptablesLegacy, Family::Ipv6) => Some("ip6tables-legacy-restore"),
            (Self::IptablesNft, Family::Ipv4) => Some("iptables-nft-restore"),
            (Self::IptablesNft, Family::Ipv6) => Some("ip6tables-nft-restore"),
            _ => None,
        }
    }
}

/// The outcome of programming a peer for a service set.
#[derive(Debug, Clone)]
pub enum Programmed {
    Done(Duration),
    /// The peer holds no rules for this service set; the reason is reported, not hidden.
    NotMeasured(NotMeasured),
}

/// ferrolb's balancer on the DUT, driven through the daemon's sync engine.
struct Ferrolb {
    engine: SyncEngine,
    _ebpf: Ebpf,
    _pin: PinDir,
}

impl Ferrolb {
    /// Loads the balancer with its maps in a pin directory of its own (`pin_role`),
    /// attaches it to `ingress` in `dut` and marks the datapath ready (IPv6 services only
    /// with `encap_source6`).
    fn install(
        dut: &Netns,
        ingress: &str,
        pin_role: &str,
        encap_source6: Option<Ipv6Addr>,
        families: usize,
    ) -> Result<Self, PeerError> {
        let pin = PinDir::new(pin_role);
        // One peer serves every service set of the run: size for the largest.
        let largest = ServiceSet {
            services: 30_000,
            backends: 3,
        };
        let sizes = largest.ferrolb_map_sizes_for(families);
        let mut ebpf = loader::load_balancer_sized(&pin.path, &sizes)?;
        programs::attach_loaded(dut, &mut ebpf, program_names::XDP_BALANCER, ingress)?;
        let params = DatapathParams {
            encap_source: Ipv4Addr::from(DUT_OUT_ADDR),
            encap_source6,
            nexthop_ttl: Duration::from_secs(1),
            icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
            new_flow_budget: lb_daemon::sync::NewFlowBudget::DEFAULT,
        };
        let engine = SyncEngine::adopt(BalancerMaps::open(&pin.path)?, &params)?;
        Ok(Self {
            engine,
            _ebpf: ebpf,
            _pin: pin,
        })
    }

    /// Applies `set` in `families`; `Ok(Some(why))` when ferrolb cannot hold it.
    fn program(
        &mut self,
        set: &ServiceSet,
        families: &[Family],
    ) -> Result<Option<NotMeasured>, PeerError> {
        match self.engine.apply(&set.desired_state_for(families)) {
            Ok(_) => Ok(None),
            Err(SyncError::Plan(e)) => Ok(Some(NotMeasured::cannot_hold(e))),
            Err(e) => Err(e.into()),
        }
    }

    fn reason_counters(&self) -> Option<Vec<lb_common::Counter>> {
        self.engine.maps().reason_counters().ok()
    }
}

/// What a peer runs on the DUT namespace, and how it is programmed: the same for the rate
/// topology (generator → sink) and the TCP one (client → backend with real servers), so
/// both layers measure the very same datapath and rule sets.
pub struct Datapath {
    pub kind: PeerKind,
    ferrolb: Option<Ferrolb>,
    external: Option<External>,
    /// The families the last `program` wrote rules for.
    families: Vec<Family>,
    _prog: Option<Ebpf>,
}

impl Datapath {
    /// Attaches the peer's XDP program to `ingress` in `dut`. `redirect` is where the
    /// bpf-redirect ceiling sends frames (it has no other meaning); `pin_role` names
    /// ferrolb's pin directory so two topologies never share maps; `encap_src_v6` is
    /// ferrolb's IP6IP6 source (IPv6 services are forwarded only with it) and `families`
    /// how many service sets at once its maps must hold.
    pub fn install(
        kind: PeerKind,
        dut: &Netns,
        ingress: &str,
        redirect: Option<RedirectConfig>,
        pin_role: &str,
        encap_src_v6: Option<[u8; 16]>,
        families: usize,
    ) -> Result<Self, PeerError> {
        let mut ferrolb = None;
        let mut ext = None;
        let prog = match kind {
            PeerKind::External(_) => {
                let peer = kind.external().expect("registered external peer");
                ext = Some(External::install(
                    peer,
                    dut,
                    ingress,
                    &format!("{pin_role}-{}", kind.tag()),
                )?);
                None
            }
            PeerKind::BpfRedirect => {
                let config = redirect.ok_or(PeerError::NoRedirectTarget)?;
                Some(programs::attach_redirect(dut, ingress, config)?)
            }
            PeerKind::FerrolbDsr => {
                let encap_source6 = encap_src_v6.map(Ipv6Addr::from);
                ferrolb = Some(Ferrolb::install(
                    dut,
                    ingress,
                    pin_role,
                    encap_source6,
                    families,
                )?);
                None
            }
            // Netfilter and forwarding run above XDP; veth still needs an XDP program on
            // the receiving side for the generator's frames to arrive at all, and the TCP
            // topology keeps it too so every peer's veth runs the same (XDP) receive path.
            _ => Some(programs::attach_in(
                dut,
                lb_daemon::objects::XDP_PASS,
                program_names::XDP_PASS,
                ingress,
            )?),
        };
        Ok(Self {
            kind,
            ferrolb,
            external: ext,
            families: Vec::new(),
            _prog: prog,
        })
    }

    /// Programs `set` in every family of `families` into the datapath (dual stack: the
    /// netfilter peers load one rule set per family, each in its own load, as kube-proxy's
    /// per-family proxiers do; ferrolb holds both families' services in its maps). A
    /// netfilter load still running after `load_timeout` is stopped and reported as not
    /// measured (`NotMeasured::LoadStopped`).
    pub fn program(
        &mut self,
        dut: &Netns,
        set: &ServiceSet,
        families: &[Family],
        load_timeout: Duration,
    ) -> Result<Programmed, PeerError> {
        let started = Instant::now();
        self.families = families.to_vec();
        match self.kind {
            PeerKind::BpfRedirect | PeerKind::Forward => Ok(Programmed::Done(started.elapsed())),
            PeerKind::Nftables | PeerKind::IptablesLegacy | PeerKind::IptablesNft => {
                netfilter::load(self.kind, dut, set, families, load_timeout)
            }
            PeerKind::FerrolbDsr => {
                let flb = self.ferrolb.as_mut().expect("ferrolb peer");
                Ok(match flb.program(set, families)? {
                    Some(why) => Programmed::NotMeasured(why),
                    None => Programmed::Done(started.elapsed()),
                })
            }
            PeerKind::External(_) => {
                let ext = self.external.as_ref().expect("external peer");
                ext.program(set, families)?;
                Ok(Programmed::Done(started.elapsed()))
            }
        }
    }

    /// Forgets connection state between runs so "new flows" are new to the peer too.
    pub fn flush_state(&self, dut: &Netns) {
        if self.kind.uses_conntrack() {
            netfilter::flush_conntrack(dut, &self.families);
        }
    }

    /// ferrolb's per-reason counters (non-zero only), for the log.
    pub fn reasons(&self) -> Vec<(&'static str, u64)> {
        let Some(counters) = self.ferrolb.as_ref().and_then(Ferrolb::reason_counters) else {
            return Vec::new();
        };
        lb_common::XdpReason::ALL
            .iter()
            .map(|r| (r.name(), counters[*r as usize].packets))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// ferrolb's own count of frames it forwarded, to cross-check the sink.
    pub fn forwarded(&self) -> Option<u64> {
        let counters = self.ferrolb.as_ref()?.reason_counters()?;
        Some(
            [
                lb_common::XdpReason::Forwarded,
                lb_common::XdpReason::ForwardedRedirect,
            ]
            .iter()
            .map(|r| counters[*r as usize].packets)
            .sum(),
        )
    }
}

pub struct Peer {
    pub kind: PeerKind,
    pub topo: Topology,
    pub sink: Sink,
    /// The frame the generator sends for the current service set, per family and flow
    /// kind: a SYN for new flows, an ACK for established ones (see `generator::Segment`).
    pub frames: BTreeMap<(Family, FlowKind), Vec<u8>>,
    pub datapath: Datapath,
}

impl Peer {
    /// Sets the peer up on its own topology (both families configured); its datapath will
    /// hold `families` service sets at once.
    pub fn create(kind: PeerKind, families: usize) -> Result<Self, PeerError> {
        let topo = Topology::create(&kind.tag())?;
        let sink = Sink::attach(&topo.sink, SINK_IF)?;
        let redirect = RedirectConfig {
            ifindex: topo.out_ifindex,
            dst_mac: topo.sink_mac,
            src_mac: topo.out_mac,
        };
        let datapath = Datapath::install(
            kind,
            &topo.dut,
            DUT_IN,
            Some(redirect),
            "flb",
            Some(DUT_OUT_ADDR6),
            families,
        )?;
        Ok(Self {
            kind,
            frames: BTreeMap::new(),
            topo,
            sink,
            datapath,
        })
    }

    /// Programs the peer for `set` in `families` and points the generator at the last
    /// service of each family.
    pub fn program(
        &mut self,
        set: &ServiceSet,
        families: &[Family],
        load_timeout: Duration,
    ) -> Result<Programmed, PeerError> {
        self.frames.clear();
        for &family in families {
            let dst = match self.kind {
                PeerKind::Forward => ServiceSet::first_endpoint(family),
                _ => set.vip_in(family, set.target()),
            };
            for flows in FlowKind::ALL {
                let segment = match flows {
                    FlowKind::New => generator::Segment::Syn,
                    FlowKind::Established => generator::Segment::Ack,
                };
                let frame = generator::template(
                    self.topo.gen_mac,
                    self.topo.in_mac,
                    dst,
                    SERVICE_PORT,
                    segment,
                )?;
                self.frames.insert((family, flows), frame);
            }
        }
        self.datapath
            .program(&self.topo.dut, set, families, load_timeout)
    }

    pub fn flush_state(&self) -> Result<(), PeerError> {
        self.datapath.flush_state(&self.topo.dut);
        Ok(())
    }

    pub fn datapath_reasons(&self) -> Vec<(&'static str, u64)> {
        self.datapath.reasons()
    }

    pub fn datapath_forwarded(&self) -> Option<u64> {
        self.datapath.forwarded()
    }
}
