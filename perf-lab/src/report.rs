//! The result file (JSON), the markdown report and the target ratios.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::{
    control::ControlResult,
    cost::{CostPlan, CostResult, PacketClass},
    peers::PeerKind,
    rate::{FlowKind, RatePlan, RateResult},
    services::Family,
    stats::Summary,
    tcp::{TcpLoad, TcpPlan, TcpResult, PERCENTILES},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    pub profile: String,
    pub started_unix: u64,
    pub seconds_total: f64,
    pub kernel: String,
    pub cpus: usize,
    pub generator_cpu: usize,
    pub runs: usize,
    pub service_counts: Vec<u32>,
    /// Families of the rate and cost layers.
    pub families: Vec<Family>,
    pub backends_per_service: u32,
    pub rate_plan: RatePlan,
    pub cost_plan: CostPlan,
    pub tcp_plan: TcpPlan,
}

/// A target of issue #5 as a ratio measured in this run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ratio {
    pub what: String,
    /// The family the ratio's figures were measured in.
    pub family: Family,
    pub services: u32,
    pub value: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub program_cost: Vec<CostResult>,
    pub rate: Vec<RateResult>,
    pub control_plane: Vec<ControlResult>,
    pub tcp: Vec<TcpResult>,
    pub ratios: Vec<Ratio>,
    pub not_measured: Vec<String>,
}

/// Which rate a table or ratio uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Delivered frames per wall-clock second of the generator.
    Wall,
    /// Delivered frames per CPU-second charged to the generator's thread.
    PerCpuSecond,
}

impl Metric {
    fn of(self, r: &RateResult) -> Option<&Summary> {
        match self {
            Self::Wall => r.delivered_pps.as_ref(),
            Self::PerCpuSecond => r.delivered_per_cpu_second.as_ref(),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Wall => "Mpps",
            Self::PerCpuSecond => "M frames per CPU-s",
        }
    }
}

/// The rate result of one cell, if it was measured.
fn rate_cell(
    results: &Results,
    peer: PeerKind,
    family: Family,
    services: u32,
    flows: FlowKind,
) -> Option<&RateResult> {
    results.rate.iter().find(|r| {
        r.peer == peer && r.family == family && r.services == services && r.flows == flows
    })
}

fn median_rate(
    results: &Results,
    metric: Metric,
    peer: PeerKind,
    family: Family,
    services: u32,
    flows: FlowKind,
) -> Option<f64> {
    rate_cell(results, peer, family, services, flows)
        .and_then(|r| metric.of(r))
        .map(|s| s.median)
}

fn class_cost(results: &Results, services: u32, class: PacketClass) -> Option<f64> {
    results
        .program_cost
        .iter()
        .find(|c| c.services == services)?
        .classes
        .iter()
        .find(|c| c.class == class)
        .map(|c| c.over_pass_ns.median)
}

/// The acceptance ratios, at each measured service count (issue #5 names 10k), per family.
pub fn ratios(results: &Results) -> Vec<Ratio> {
    let mut out = Vec::new();
    for &family in &results.meta.families {
        out.extend(family_ratios(results, family));
    }
    out
}

fn family_ratios(results: &Results, family: Family) -> Vec<Ratio> {
    let mut out = Vec::new();
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let (hit, new_flow, first_ack) = match family {
        Family::Ipv4 => (
            PacketClass::FlowHit,
            PacketClass::NewFlow,
            PacketClass::FirstAck,
        ),
        Family::Ipv6 => (
            PacketClass::FlowHitV6,
            PacketClass::NewFlowV6,
            PacketClass::FirstAckV6,
        ),
    };
    let fam = family.name();
    for &n in &results.meta.service_counts {
        for (metric, label) in [(Metric::Wall, "wall"), (Metric::PerCpuSecond, "per CPU-s")] {
            let new_rate = |peer| median_rate(results, metric, peer, family, n, FlowKind::New);
            let ours = new_rate(PeerKind::FerrolbDsr);
            for (peer, target) in [
                (PeerKind::BpfRedirect, 0.8),
                (PeerKind::Nftables, 5.0),
                (PeerKind::IptablesLegacy, 50.0),
                (PeerKind::IptablesNft, 50.0),
            ] {
                let value = ratio(ours, new_rate(peer));
                out.push(Ratio {
                    what: format!("{fam} new-flow rate ({label}), ferrolb / {}", peer.name()),
                    family,
                    services: n,
                    value,
                    target: format!(">= {target}"),
                    met: value.map(|v| v >= target),
                });
            }
        }
        // The new-flow target (250 ns) is held by both halves of a new connection: its SYN
        // (no insert) and its first ACK (the insert).
        for (class, limit) in [(hit, 150.0), (new_flow, 250.0), (first_ack, 250.0)] {
            let value = class_cost(results, n, class);
            out.push(Ratio {
                what: format!("program cost over XDP_PASS, {} (ns)", class.name()),
                family,
                services: n,
                value,
                target: format!("<= {limit}"),
                met: value.map(|v| v <= limit),
            });
        }
    }
    let counts = &results.meta.service_counts;
    let ours = |n| {
        median_rate(
            results,
            Metric::PerCpuSecond,
            PeerKind::FerrolbDsr,
            family,
            n,
            FlowKind::New,
        )
    };
    if let (Some(&first), Some(&last)) = (
        counts.first(),
        counts.iter().rev().find(|&&n| ours(n).is_some()),
    ) {
        let value = ratio(ours(last), ours(first));
        out.push(Ratio {
            what: format!(
                "ferrolb {fam} new-flow rate (per CPU-s) at {last} / at {first} services (flatness)"
            ),
            family,
            services: last,
            value,
            target: "~1.0 (within run-to-run range)".to_string(),
            met: None,
        });
    }
    out
}

fn mpps(s: &Summary) -> String {
    format!(
        "{:.3} [{:.3}–{:.3}]",
        s.median / 1e6,
        s.min / 1e6,
        s.max / 1e6
    )
}

fn ns(s: &Summary) -> String {
    format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max)
}

fn secs(s: &Summary) -> String {
    if s.median < 1.0 {
        format!(
            "{:.1} ms [{:.1}–{:.1}]",
            s.median * 1e3,
            s.min * 1e3,
            s.max * 1e3
        )
    } else {
        format!("{:.2} s [{:.2}–{:.2}]", s.median, s.min, s.max)
    }
}

fn short(reason: &str) -> String {
    // A load stopped at its deadline says so in full; it is a limit of the peer's
    // tooling at this size, not something the peer cannot express.
    if reason.starts_with("not measured") {
        return reason.to_string();
    }
    let first = reason.split(':').next_back().unwrap_or(reason).trim();
    format!("unsupported ({first})")
}

/// The rate table alone: rows family × peer × flows, columns service counts.
pub fn rate_table(results: &Results, metric: Metric) -> String {
    let counts = &results.meta.service_counts;
    let mut md = String::new();
    write!(md, "| family | peer | flows |").unwrap();
    for n in counts {
        write!(md, " {n} svc: {} [range] (delivered) |", metric.label()).unwrap();
    }
    md.push('\n');
    md.push_str("|---|---|---|");
    for _ in counts {
        md.push_str("---|");
    }
    md.push('\n');
    let rows = Family::ALL.into_iter().flat_map(|family| {
        PeerKind::ALL
            .into_iter()
            .flat_map(move |peer| FlowKind::ALL.map(|flows| (family, peer, flows)))
    });
    for (family, peer, flows) in rows {
        let mut row = format!("| {} | {} | {} |", family.name(), peer.name(), flows.name());
        let mut any = false;
        for &n in counts {
            match rate_cell(results, peer, family, n, flows) {
                Some(r) => {
                    any = true;
                    match (&r.unsupported, metric.of(r), &r.delivered_fraction) {
                        (Some(reason), _, _) => write!(row, " {} |", short(reason)).unwrap(),
                        (None, Some(rate), Some(frac)) => {
                            write!(row, " {} ({:.0}%) |", mpps(rate), frac.median * 100.0).unwrap()
                        }
                        _ => row.push_str(" – |"),
                    }
                }
                None => row.push_str(" – |"),
            }
        }
        if any {
            md.push_str(&row);
            md.push('\n');
        }
    }
    md
}

/// A row of a TCP table: its label and how a result's cell is written.
type TcpMetric = (String, Box<dyn Fn(&TcpResult) -> Option<String>>);

fn micros(s: &Summary) -> String {
    let digits = if s.median < 100.0 { 1 } else { 0 };
    format!("{:.d$} [{:.d$}–{:.d$}]", s.median, s.min, s.max, d = digits)
}

fn per_second(s: &Summary) -> String {
    if s.median >= 1e4 {
        format!(
            "{:.1}k [{:.1}k–{:.1}k]",
            s.median / 1e3,
            s.min / 1e3,
            s.max / 1e3
        )
    } else {
        format!("{:.0} [{:.0}–{:.0}]", s.median, s.min, s.max)
    }
}

/// One table per TCP load: rows peer × metric (rate, then the latency percentiles, then
/// completed / attempted over all runs), columns service counts.
pub fn tcp_tables(results: &Results) -> String {
    let counts = &results.meta.service_counts;
    let mut md = String::new();
    for load in TcpLoad::ALL {
        writeln!(
            md,
            "**{}** ({}; µs, median of runs [min–max])\n",
            load.name(),
            load.latency_name()
        )
        .unwrap();
        md.push_str("| peer | metric |");
        for n in counts {
            write!(md, " {n} svc |").unwrap();
        }
        md.push_str("\n|---|---|");
        for _ in counts {
            md.push_str("---|");
        }
        md.push('\n');
        for peer in PeerKind::ALL {
            let cells: Vec<Option<&TcpResult>> = counts
                .iter()
                .map(|&n| {
                    results
                        .tcp
                        .iter()
                        .find(|r| r.peer == peer && r.services == n && r.load == load)
                })
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            let mut metrics: Vec<TcpMetric> = vec![(
                load.rate_unit().to_string(),
                Box::new(|r: &TcpResult| r.rate.as_ref().map(per_second)),
            )];
            for (i, (_, name)) in PERCENTILES.iter().enumerate() {
                metrics.push((
                    format!("{name} µs"),
                    Box::new(move |r: &TcpResult| {
                        r.latency_us.get(i).and_then(Option::as_ref).map(micros)
                    }),
                ));
            }
            metrics.push((
                "completed / attempted".to_string(),
                Box::new(|r: &TcpResult| {
                    let done: u64 = r.samples.iter().map(|s| s.completed).sum();
                    let tried: u64 = r.samples.iter().map(|s| s.attempted).sum();
                    (!r.samples.is_empty()).then(|| format!("{done} / {tried}"))
                }),
            ));
            for (k, (name, value)) in metrics.iter().enumerate() {
                let mut row = format!("| {} | {name} |", if k == 0 { peer.name() } else { "" });
                for cell in &cells {
                    match cell {
                        Some(r) => match (&r.unsupported, value(r)) {
                            (Some(reason), _) if k == 0 => {
                                write!(row, " {} |", short(reason)).unwrap()
                            }
                            (Some(_), _) => row.push_str(" |"),
                            (None, Some(v)) => write!(row, " {v} |").unwrap(),
                            (None, None) => row.push_str(" – |"),
                        },
                        None => row.push_str(" – |"),
                    }
                }
                md.push_str(&row);
                md.push('\n');
            }
        }
        md.push('\n');
    }
    md
}

pub fn markdown(results: &Results) -> String {
    let m = &results.meta;
    let counts = &m.service_counts;
    let mut md = String::new();
    writeln!(md, "# perf-lab report ({})\n", m.profile).unwrap();
    writeln!(
        md,
        "Kernel {}, {} CPUs, generator pinned to CPU {}. Every figure is the median of {} \
         interleaved runs with its range [min–max]. {} backends per service; the target \
         service is the last in rule order. Total time {:.0} s.\n",
        m.kernel, m.cpus, m.generator_cpu, m.runs, m.backends_per_service, m.seconds_total
    )
    .unwrap();

    md.push_str(
        "## Packet rate on veth (delivered, live-frame generator → DUT → counting sink)\n\n",
    );
    writeln!(
        md,
        "Each run offers frames for {:.2} s (at most {} frames); the percentage is the \
         delivered fraction (delivered / offered). New flows = TCP SYNs, each from a tuple \
         never sent before. Established = a replayed set of {} flows the peer has already \
         seen, as TCP ACKs (ferrolb records a flow on its first ACK, never on a SYN, so the \
         replays are flow-table hits; conntrack picks the first ACK up with \
         nf_conntrack_tcp_loose=1). Families: {}; every peer serves both families' \
         services on the same topology (dual stack: ferrolb IP6IP6 with IPv6 backends, \
         kube-proxy's `ip6 kube-proxy` table / ip6tables rules), IPv6 frames are 74 bytes \
         (IPv4: 60).\n",
        m.rate_plan.seconds,
        m.rate_plan.max_frames,
        m.rate_plan.established_flows,
        m.families
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    )
    .unwrap();
    md.push_str(&rate_table(results, Metric::Wall));
    md.push_str(
        "\nThe same runs per CPU-second charged to the generator's thread (the DUT's and the \
         sink's softirq work runs on that CPU at the end of each batch and is charged to it; \
         other tenants' time slices are not). On a shared machine this is the steadier \
         figure; compare ranges.\n\n",
    );
    md.push_str(&rate_table(results, Metric::PerCpuSecond));

    md.push_str("\n## Program cost (ferrolb XDP, BPF_PROG_RUN, ns per packet over XDP_PASS)\n\n");
    md.push_str(
        "A SYN is balanced without a flow-table insert; a flow's first ACK inserts (the \
         table is filled to capacity first, so every insert evicts); hits are ACKs of 10,000 \
         established flows.\n\n",
    );
    md.push_str("| class | method |");
    for c in &results.program_cost {
        write!(md, " {} svc |", c.services).unwrap();
    }
    md.push_str("\n|---|---|");
    for _ in &results.program_cost {
        md.push_str("---|");
    }
    md.push('\n');
    let measured = |class: PacketClass| {
        results
            .program_cost
            .iter()
            .any(|c| c.classes.iter().any(|x| x.class == class))
    };
    for class in PacketClass::ALL
        .into_iter()
        .filter(|&c| measured(c) || results.program_cost.iter().all(|c| c.classes.is_empty()))
    {
        let mut row = format!("| {} |", class.name());
        let mut method = String::new();
        for c in &results.program_cost {
            match (&c.unsupported, c.classes.iter().find(|x| x.class == class)) {
                (Some(reason), _) => write!(row, " {} |", short(reason)).unwrap(),
                (None, Some(x)) => {
                    method = x.method.clone();
                    write!(
                        row,
                        " {} (abs {:.0}) |",
                        ns(&x.over_pass_ns),
                        x.ns_per_packet.median
                    )
                    .unwrap()
                }
                _ => row.push_str(" – |"),
            }
        }
        let row = row.replacen(" |", &format!(" | {method} |"), 1);
        md.push_str(&row);
        md.push('\n');
    }
    let mut base = String::from("| XDP_PASS baseline (repeat / single) | |");
    for c in &results.program_cost {
        match (&c.pass_repeat_ns, &c.pass_single_ns) {
            (Some(r), Some(s)) => write!(base, " {:.0} / {:.0} |", r.median, s.median).unwrap(),
            _ => base.push_str(" – |"),
        }
    }
    md.push_str(&base);
    md.push('\n');

    md.push_str("\n## Control-plane programming time (from empty)\n\n| tool |");
    for n in counts {
        write!(md, " {n} svc |").unwrap();
    }
    md.push_str("\n|---|");
    for _ in counts {
        md.push_str("---|");
    }
    md.push('\n');
    for tool in crate::control::Tool::ALL {
        let mut row = format!("| {} |", tool.name());
        for &n in counts {
            match results
                .control_plane
                .iter()
                .find(|c| c.tool == tool && c.services == n)
            {
                Some(c) => match (&c.unsupported, &c.seconds) {
                    (Some(reason), _) => write!(row, " {} |", short(reason)).unwrap(),
                    (None, Some(s)) => match &c.note {
                        Some(note) => write!(row, " {} ({note}) |", secs(s)).unwrap(),
                        None => write!(row, " {} |", secs(s)).unwrap(),
                    },
                    _ => row.push_str(" – |"),
                },
                None => row.push_str(" – |"),
            }
        }
        md.push_str(&row);
        md.push('\n');
    }

    if !results.tcp.is_empty() {
        let t = &m.tcp_plan;
        md.push_str("\n## TCP: request/response latency and connection rate\n\n");
        writeln!(
            md,
            "Real sockets: a client in its own namespace → the peer's DUT → a server in the \
             backend namespace (for ferrolb-dsr the reply goes from the backend straight to \
             the client). Request/response: {} persistent connections, {} B request, {} B \
             response, closed loop, at most {} requests or {:.1} s per run. Connect/close: {} \
             concurrent loops of connect, one request, close, at most {} connections or \
             {:.1} s per run; the percentiles are of the connect (handshake) time. Every \
             operation times out after {} ms (counted as failed). Rates are completed per \
             second of the run. With many connections in a closed loop, latency ≈ \
             connections / rate (Little's law): it is the system's cost per request plus \
             queueing; the 1-connection load is the round trip alone. Plots: \
             `tcp-rr-latency-<N>svc.svg`, `tcp-rr1-latency-<N>svc.svg`, \
             `tcp-connect-latency-<N>svc.svg`.\n",
            t.connections,
            t.request_bytes,
            t.response_bytes,
            t.requests,
            t.seconds,
            t.concurrency,
            t.connects,
            t.seconds,
            t.op_timeout_ms
        )
        .unwrap();
        md.push_str(&tcp_tables(results));
    }

    md.push_str("\n## Targets (issue #5), as ratios in this run\n\nEach ratio is of figures measured in one family (the IPv6 ones against the same peers' IPv6 rates and the IPv6 cost classes).\n\n| family | what | services | value | target | met |\n|---|---|---|---|---|---|\n");
    for r in &results.ratios {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.family.name(),
            r.what,
            r.services,
            r.value.map_or("–".to_string(), |v| format!("{v:.2}")),
            r.target,
            match r.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        )
        .unwrap();
    }

    if !results.not_measured.is_empty() {
        md.push_str("\n## Not measured in this run\n\n");
        for item in &results.not_measured {
            writeln!(md, "- {item}").unwrap();
        }
    }
    md.push_str(
        "\n## Plots\n\n- `rate-new-ipv4.svg`, `rate-established-ipv4.svg`, `rate-new-ipv6.svg`, \
         `rate-established-ipv6.svg`: delivered Mpps against the number of services (log \
         scale), one line per peer, one plot per family and flow kind.\n- `tcp-rr-latency-<N>svc.svg`, \
         `tcp-rr1-latency-<N>svc.svg`, `tcp-connect-latency-<N>svc.svg`: latency against \
         percentile (p50 … p99.9), one line per peer, per service count.\n- `program-cost.svg`: ns over \
         XDP_PASS per packet class against the number of services.\n- `control-plane.svg`: \
         programming time against the number of services (log-log).\n",
    );
    md
}
