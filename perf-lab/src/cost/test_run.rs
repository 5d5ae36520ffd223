//! The balancer and the XDP_PASS baseline as BPF_PROG_RUN runs them: loaded, the
//! balancer's maps holding the service set, both parked; one call per packet or one call
//! repeating a packet, every verdict checked.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::Duration,
};

use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use lb_common::{program_names, NextHop};
use lb_daemon::{
    loader,
    maps::BalancerMaps,
    sync::{DatapathParams, SyncEngine, SyncError},
};
use lb_model::DesiredState;

use crate::{
    external,
    measured::NotMeasured,
    netns::{Netns, PinDir},
    programs::{self, PARK_IFS},
    services::{Family, ServiceSet},
};

use super::{packets::LB_MAC, CostError};

const XDP_ABORTED: u32 = 0;
pub(super) const XDP_PASS: u32 = 2;
pub(super) const XDP_TX: u32 = 3;
const LB_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
/// The balancer's IP6IP6 source.
const LB_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);

/// Which program a run times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Program {
    Balancer,
    Pass,
    /// The i-th external peer's XDP program (`Programs::externals`).
    External(usize),
}

/// An external peer's program in the cost layer: its name in the tables, the loaded
/// object (maps pinned, filled by its command).
pub(super) struct ExternalProgram {
    pub(super) peer: &'static str,
    loaded: external::LoadedXdp,
    _files: external::ScratchDir,
}

pub(super) struct Programs {
    balancer: Ebpf,
    pass: Ebpf,
    pub(super) externals: Vec<ExternalProgram>,
    /// Holds the parked attachments; dropped after the programs.
    _park: Netns,
}

fn program_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> CostError {
    move |source| CostError::Program { name, source }
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a Xdp, CostError> {
    ebpf.program(name)
        .ok_or(CostError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(program_err(name))
}

fn load_pass() -> Result<Ebpf, CostError> {
    let name = program_names::XDP_PASS;
    let mut pass = EbpfLoader::new().load(lb_daemon::objects::XDP_PASS)?;
    let xdp: &mut Xdp = pass
        .program_mut(name)
        .ok_or(CostError::Program {
            name,
            source: aya::programs::ProgramError::NotLoaded,
        })?
        .try_into()
        .map_err(program_err(name))?;
    xdp.load().map_err(program_err(name))?;
    Ok(pass)
}

/// Writes `desired` into the balancer's maps pinned at `pin` through the daemon's sync
/// engine, with a cached next hop per backend. `Ok(Err(why))`: ferrolb cannot hold it.
fn program_maps(pin: &Path, desired: &DesiredState) -> Result<Result<(), NotMeasured>, CostError> {
    let params = DatapathParams {
        encap_source: LB_ADDR,
        encap_source6: Some(LB_ADDR6),
        nexthop_ttl: Duration::from_secs(1),
        icmp_limit: lb_daemon::sync::IcmpLimit::DEFAULT,
        // No budget: the new-flow classes measure the insert itself.
        new_flow_budget: lb_daemon::sync::NewFlowBudget {
            per_second: 0,
            burst: 1,
        },
    };
    let mut engine = SyncEngine::adopt(BalancerMaps::open(pin)?, &params)?;
    match engine.apply(desired) {
        Ok(_) => {}
        Err(SyncError::Plan(e)) => return Ok(Err(NotMeasured::cannot_hold(e))),
        Err(e) => return Err(e.into()),
    }
    // A cached next hop, as the datapath holds it between refreshes; test_run delivers on
    // the loopback (ifindex 1), so XDP_TX is the verdict.
    let backends: Vec<_> = engine
        .state()
        .backends
        .values()
        .map(|b| (b.id, b.generation))
        .collect();
    for (id, generation) in backends {
        engine.set_static_nexthop(
            id,
            NextHop {
                dst_mac: [0x02, 0xbe, 0, 0, 0, 1],
                src_mac: LB_MAC,
                ifindex: 1,
                mtu: 1500,
                flags: 0,
                backend_generation: generation,
                expires_jiffies: u64::MAX,
            },
        )?;
    }
    Ok(Ok(()))
}

/// Loads every registered external peer with an XDP object, parks it on a veth pair of
/// its own in `park`, and runs its fill command (in `park`) for `set` in `families`.
fn load_externals(
    park: &Netns,
    set: &ServiceSet,
    families: &[Family],
) -> Result<Vec<ExternalProgram>, CostError> {
    let mut out = Vec::new();
    for (i, peer) in external::registered().iter().enumerate() {
        let Some(xdp_spec) = &peer.xdp else { continue };
        let mut loaded = external::load_xdp(peer, xdp_spec, &format!("cost-x{i}"))?;
        let (a, b) = (format!("xpark{i}a"), format!("xpark{i}b"));
        park.exec(
            "ip",
            &["link", "add", &a, "type", "veth", "peer", "name", &b],
        )?;
        programs::attach_loaded(park, &mut loaded.ebpf, loaded.program, &a)?;
        let files = external::ScratchDir::new(&format!("cost-x{i}"))?;
        if let Some(fill) = &xdp_spec.fill {
            let services = external::write_services(&files.0, set, families)?;
            let env = external::CommandEnv {
                dut_path: &park.path(),
                maps: Some(&loaded.pin.path),
                services: Some(&services),
                ingress: &a,
                egress: &b,
            };
            external::run(peer, "fill", fill, &env)?;
        }
        out.push(ExternalProgram {
            peer: &peer.name,
            loaded,
            _files: files,
        });
    }
    Ok(out)
}

impl Programs {
    /// Loads the balancer (its maps pinned in `pin`, sized for `set` in `families`) and the
    /// pass program, writes the set in every family into the balancer's maps, and parks
    /// both. `Ok(Err(why))`: ferrolb cannot hold the set.
    pub(super) fn load(
        pin: &PinDir,
        set: &ServiceSet,
        families: &[Family],
    ) -> Result<Result<Self, NotMeasured>, CostError> {
        let sizes = set.ferrolb_map_sizes_for(families.len());
        let mut balancer = loader::load_balancer_sized(&pin.path, &sizes)?;
        let mut pass = load_pass()?;
        if let Err(why) = program_maps(&pin.path, &set.desired_state_for(families))? {
            return Ok(Err(why));
        }
        // Parked attachments keep BPF_PROG_RUN from changing the XDP dispatcher on every
        // call (see programs::create_parking); they do not change the measured time.
        let park = Netns::create("cost-park")?;
        programs::create_parking(&park)?;
        programs::attach_loaded(
            &park,
            &mut balancer,
            program_names::XDP_BALANCER,
            PARK_IFS[0],
        )?;
        programs::attach_loaded(&park, &mut pass, program_names::XDP_PASS, PARK_IFS[1])?;
        let externals = load_externals(&park, set, families)?;
        Ok(Ok(Self {
            balancer,
            pass,
            externals,
            _park: park,
        }))
    }

    fn xdp(&self, program: Program) -> Result<&Xdp, CostError> {
        match program {
            Program::Balancer => xdp(&self.balancer, program_names::XDP_BALANCER),
            Program::Pass => xdp(&self.pass, program_names::XDP_PASS),
            Program::External(i) => {
                let e = &self.externals[i];
                xdp(&e.loaded.ebpf, e.loaded.program)
            }
        }
    }

    fn name(&self, program: Program) -> &'static str {
        match program {
            Program::Balancer => program_names::XDP_BALANCER,
            Program::Pass => program_names::XDP_PASS,
            Program::External(i) => self.externals[i].loaded.program,
        }
    }

    /// Mean ns per packet over `packets`, repeat 1 each, checking every verdict.
    pub(super) fn single_loop(
        &self,
        program: Program,
        class: &'static str,
        packets: impl Iterator<Item = Vec<u8>>,
        want: u32,
    ) -> Result<f64, CostError> {
        let (mut total, mut n) = (0.0, 0u32);
        for packet in packets {
            total += self.repeated(program, class, &packet, 1, want)?;
            n += 1;
        }
        Ok(total / f64::from(n.max(1)))
    }

    /// One BPF_PROG_RUN call of `program` repeating `packet` `repeat` times: ns per
    /// repetition, the verdict checked against `want` (`class` names the measurement in
    /// the error).
    pub(super) fn repeated(
        &self,
        program: Program,
        class: &'static str,
        packet: &[u8],
        repeat: u32,
        want: u32,
    ) -> Result<f64, CostError> {
        let out = self
            .xdp(program)?
            .test_run(TestRunOptions {
                data_in: Some(packet),
                repeat,
                ..Default::default()
            })
            .map_err(program_err(self.name(program)))?;
        // An external peer's verdicts are its own (XDP_PASS, XDP_TX, XDP_REDIRECT ...);
        // only XDP_ABORTED, a program error, is refused.
        let refused = match program {
            Program::External(_) => out.return_value == XDP_ABORTED,
            _ => out.return_value != want,
        };
        if refused {
            return Err(CostError::Verdict {
                class,
                got: out.return_value,
                want,
            });
        }
        Ok(out.duration.as_nanos() as f64)
    }
}
