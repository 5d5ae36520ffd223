//! The measurement at one service set: the flow table prepared, then rounds that run
//! both baselines and every class.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::limits;

use crate::{
    services::{Family, ServiceSet, SOURCE_BASE, UNUSED_PORT},
    stats::Summary,
};

use super::{
    packets::{flow_packet, icmp_echo, ipv6_syn, tcp_syn, Segment},
    test_run::{Program, Programs, XDP_PASS, XDP_TX},
    ClassCost, CostError, CostPlan, CostResult, ExternalCost, PacketClass,
};

const ESTABLISHED_FLOWS: u32 = 10_000;
/// The tuple index of the hot new-flow class's SYN: never ACKed, so never inserted.
const HOT_SYN: u32 = ESTABLISHED_FLOWS;
/// The first tuple index after the established flows and the hot SYN.
const FIRST_FRESH: u32 = HOT_SYN + 1;

pub(super) struct Rounds<'a> {
    programs: &'a Programs,
    set: &'a ServiceSet,
    plan: &'a CostPlan,
    classes: Vec<PacketClass>,
    /// The SYN both baselines run.
    syn: Vec<u8>,
    not_service: Vec<u8>,
    icmp: Vec<u8>,
    ipv6: Vec<u8>,
    /// The next never-seen client tuple per family.
    next_new: BTreeMap<Family, u32>,
    /// Where the hit classes are in the established sets (both families walk the same
    /// stretch of theirs).
    hit_cursor: u32,
    /// Per class, one per round: ns per packet, and ns over its baseline.
    samples: Vec<(Vec<f64>, Vec<f64>)>,
    pass_repeat: Vec<f64>,
    pass_single: Vec<f64>,
    turnover: Vec<f64>,
    /// Per external program, per class: as `samples`.
    external_samples: Vec<Vec<(Vec<f64>, Vec<f64>)>>,
}

impl<'a> Rounds<'a> {
    /// Client tuples per family: [0, ESTABLISHED) established, then (first family) the
    /// fill, then fresh tuples for the new-flow and first-ACK classes. Established flows
    /// and the fill are sent as ACKs: a SYN records nothing.
    pub(super) fn prepare(
        programs: &'a Programs,
        set: &'a ServiceSet,
        families: &[Family],
        plan: &'a CostPlan,
    ) -> Result<Self, CostError> {
        let vip = |family| set.vip_in(family, set.target());
        let first = families.first().copied().unwrap_or(Family::Ipv4);
        let classes = PacketClass::of(families);
        let mut rounds = Self {
            programs,
            set,
            plan,
            syn: flow_packet(Segment::Syn, first, 0, vip(first))
                .ok_or_else(|| CostError::Packet("template SYN".into()))?,
            not_service: tcp_syn(SOURCE_BASE.into(), 40_000, vip(Family::Ipv4), UNUSED_PORT)?,
            icmp: icmp_echo(set.vip(set.target()).octets())?,
            ipv6: ipv6_syn()?,
            next_new: families.iter().map(|&f| (f, FIRST_FRESH)).collect(),
            hit_cursor: 0,
            samples: vec![(Vec::new(), Vec::new()); classes.len()],
            classes,
            pass_repeat: Vec::new(),
            pass_single: Vec::new(),
            turnover: Vec::new(),
            external_samples: vec![
                vec![(Vec::new(), Vec::new()); PacketClass::of(families).len()];
                programs.externals.len()
            ],
        };
        for &family in families {
            rounds.warm("warm established", family)?;
        }
        if plan.fill_flow_table {
            rounds.fill(first)?;
            // The fill evicted part of the established sets: warm them again.
            for &family in families {
                rounds.warm("rewarm established", family)?;
            }
            rounds.turn_over(first, families)?;
        }
        Ok(rounds)
    }

    fn vip(&self, family: Family) -> IpAddr {
        self.set.vip_in(family, self.set.target())
    }

    /// An ACK of the i-th established flow of `family` (cycling through the set).
    fn established(&self, family: Family, i: u32) -> Option<Vec<u8>> {
        flow_packet(
            Segment::Ack,
            family,
            i % ESTABLISHED_FLOWS,
            self.vip(family),
        )
    }

    /// The programs that keep flow state: the balancer and every external peer, each
    /// sent the same packets.
    fn stateful(&self) -> Vec<Program> {
        let externals = (0..self.programs.externals.len()).map(Program::External);
        std::iter::once(Program::Balancer)
            .chain(externals)
            .collect()
    }

    fn warm(&self, what: &'static str, family: Family) -> Result<(), CostError> {
        for program in self.stateful() {
            self.programs.single_loop(
                program,
                what,
                (0..ESTABLISHED_FLOWS).filter_map(|i| self.established(family, i)),
                XDP_TX,
            )?;
        }
        Ok(())
    }

    /// Fills the flow table to capacity with `family`'s flows. One table serves both
    /// families, so the other family's inserts evict too.
    fn fill(&mut self, family: Family) -> Result<(), CostError> {
        self.insert_fresh(family, limits::DEFAULT_FLOWS, "fill flow table")
    }

    /// `count` ACKs of never-seen tuples of `family`: each inserts (and, in a full table,
    /// evicts the least recently used entry).
    fn insert_fresh(
        &mut self,
        family: Family,
        count: u32,
        what: &'static str,
    ) -> Result<(), CostError> {
        let next = self.next_new.entry(family).or_insert(FIRST_FRESH);
        let start = *next;
        *next += count;
        let vip = self.vip(family);
        for program in self.stateful() {
            self.programs.single_loop(
                program,
                what,
                (start..start + count).filter_map(|i| flow_packet(Segment::Ack, family, i, vip)),
                XDP_TX,
            )?;
        }
        Ok(())
    }

    /// Turns the full table over until the cold hit figure of `family` stops moving: each
    /// round inserts a quarter of the table's capacity of fresh flows (every insert evicts,
    /// and lands in front of older entries of its bucket), touches the established flows of
    /// every family again (re-inserting any the round evicted), then measures one cycle of
    /// hits over them, ns over XDP_PASS. Stops when two successive changes are both under
    /// 5 % (at least 3 rounds, at most 12). Every figure is logged and kept.
    fn turn_over(&mut self, family: Family, families: &[Family]) -> Result<(), CostError> {
        const MIN_ROUNDS: usize = 3;
        const MAX_ROUNDS: usize = 12;
        let settled = |f: &[f64]| match f {
            [.., a, b, c] => (b - a).abs() < 0.05 * b.abs() && (c - b).abs() < 0.05 * c.abs(),
            _ => false,
        };
        self.turnover.push(self.hit_cycle(family)?);
        for round in 1..=MAX_ROUNDS {
            self.insert_fresh(family, limits::DEFAULT_FLOWS / 4, "turn flow table over")?;
            for &f in families {
                self.warm("rewarm established", f)?;
            }
            let ns = self.hit_cycle(family)?;
            tracing::info!(round, ns, "cost: flow-table hit after turnover round");
            self.turnover.push(ns);
            if round >= MIN_ROUNDS && settled(&self.turnover) {
                break;
            }
        }
        Ok(())
    }

    /// One cycle of hits over the established flows of `family`, ns over XDP_PASS (repeat
    /// 1, the same number of calls).
    fn hit_cycle(&self, family: Family) -> Result<f64, CostError> {
        let hit = self.programs.single_loop(
            Program::Balancer,
            "turnover hit",
            (0..ESTABLISHED_FLOWS).filter_map(|i| self.established(family, i)),
            XDP_TX,
        )?;
        let syn = &self.syn;
        let pass = self.programs.single_loop(
            Program::Pass,
            "pass",
            (0..ESTABLISHED_FLOWS).map(|_| syn.clone()),
            XDP_PASS,
        )?;
        Ok(hit - pass)
    }

    /// Both baselines, then every class once.
    pub(super) fn run(&mut self) -> Result<(), CostError> {
        let n = self.plan.single_runs;
        let syn = &self.syn;
        let base_single = self.programs.single_loop(
            Program::Pass,
            "pass",
            (0..n).map(|_| syn.clone()),
            XDP_PASS,
        )?;
        let base_repeat =
            self.programs
                .repeated(Program::Pass, "pass", syn, self.plan.repeat, XDP_PASS)?;
        self.pass_single.push(base_single);
        self.pass_repeat.push(base_repeat);
        let hits = self.hit_cursor;
        self.hit_cursor = self.hit_cursor.wrapping_add(n);
        for k in 0..self.classes.len() {
            let class = self.classes[k];
            let base = if class.rewrites() {
                base_single
            } else {
                base_repeat
            };
            // Never-seen tuples for the new-flow classes: the same ones for every program
            // (each has a flow table of its own).
            let fresh = self.next_new.entry(class.family()).or_insert(FIRST_FRESH);
            let start = *fresh;
            *fresh += n;
            for (p, program) in self.stateful().into_iter().enumerate() {
                let ns = self.class_ns(program, class, hits, start)?;
                let samples = match p {
                    0 => &mut self.samples[k],
                    _ => &mut self.external_samples[p - 1][k],
                };
                samples.0.push(ns);
                samples.1.push(ns - base);
            }
        }
        Ok(())
    }

    /// ns per packet of `class` run by `balancer`; the hit classes start at established
    /// flow `hits`, the new-flow ones at never-seen tuple `start`.
    fn class_ns(
        &self,
        balancer: Program,
        class: PacketClass,
        hits: u32,
        start: u32,
    ) -> Result<f64, CostError> {
        let (n, repeat) = (self.plan.single_runs, self.plan.repeat);
        let family = class.family();
        let ns = match class {
            PacketClass::NewFlow
            | PacketClass::NewFlowV6
            | PacketClass::FirstAck
            | PacketClass::FirstAckV6 => {
                // Never-seen tuples either way: a SYN leaves no entry behind, but the
                // first-ACK class does not reuse the SYNs' tuples, so both miss alike.
                let (segment, what) = match class {
                    PacketClass::NewFlow | PacketClass::NewFlowV6 => (Segment::Syn, "new flow"),
                    _ => (Segment::Ack, "first ack"),
                };
                let vip = self.vip(family);
                self.programs.single_loop(
                    balancer,
                    what,
                    (start..start + n).filter_map(|i| flow_packet(segment, family, i, vip)),
                    class.verdict(),
                )?
            }
            PacketClass::FlowHit | PacketClass::FlowHitV6 => self.programs.single_loop(
                balancer,
                "flow hit",
                (hits..hits + n).filter_map(|i| self.established(family, i)),
                class.verdict(),
            )?,
            PacketClass::NewFlowHot | PacketClass::NewFlowHotV6 => {
                let syn = flow_packet(Segment::Syn, family, HOT_SYN, self.vip(family))
                    .ok_or_else(|| CostError::Packet("hot SYN".into()))?;
                let frames = (0..n).map(|_| syn.clone());
                self.programs
                    .single_loop(balancer, "hot new flow", frames, class.verdict())?
            }
            PacketClass::FlowHitHot | PacketClass::FlowHitHotV6 => {
                let ack = self
                    .established(family, 0)
                    .ok_or_else(|| CostError::Packet("hot ACK".into()))?;
                let frames = (0..n).map(|_| ack.clone());
                self.programs
                    .single_loop(balancer, "hot flow hit", frames, class.verdict())?
            }
            PacketClass::NotAService => {
                let packet = &self.not_service;
                self.programs
                    .repeated(balancer, "not a service", packet, repeat, XDP_PASS)?
            }
            PacketClass::Icmp => self
                .programs
                .repeated(balancer, "icmp", &self.icmp, repeat, XDP_PASS)?,
            PacketClass::Ipv6 => self
                .programs
                .repeated(balancer, "ipv6", &self.ipv6, repeat, XDP_PASS)?,
        };
        Ok(ns)
    }

    /// Every class's summary over the rounds, with the baselines.
    pub(super) fn result(self) -> CostResult {
        let n = self.plan.single_runs;
        let repeat = self.plan.repeat;
        let summarise = |samples: Vec<(Vec<f64>, Vec<f64>)>| -> Vec<ClassCost> {
            self.classes
                .iter()
                .zip(samples)
                .filter_map(|(class, (ns, over))| {
                    Some(ClassCost {
                        class: *class,
                        description: class.name().to_string(),
                        method: if class.rewrites() {
                            format!("repeat 1 x {n} distinct packets")
                        } else {
                            format!("repeat {repeat}")
                        },
                        ns_per_packet: Summary::of(&ns)?,
                        over_pass_ns: Summary::of(&over)?,
                    })
                })
                .collect()
        };
        let external = self
            .programs
            .externals
            .iter()
            .zip(self.external_samples.clone())
            .map(|(e, samples)| ExternalCost {
                peer: e.peer.to_string(),
                classes: summarise(samples),
            })
            .collect();
        CostResult {
            services: self.set.services,
            backends: self.set.backends,
            unsupported: None,
            pass_repeat_ns: Summary::of(&self.pass_repeat),
            pass_single_ns: Summary::of(&self.pass_single),
            turnover_hit_ns: self.turnover.clone(),
            classes: summarise(self.samples.clone()),
            external,
        }
    }
}
