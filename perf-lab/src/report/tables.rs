//! The report's tables: one row per peer (or tool, or packet class), one column per
//! service count, each cell the median of runs with its range, or why there is none.

use std::fmt::Write;

use crate::{
    control::Tool,
    cost::PacketClass,
    measured::NotMeasured,
    peers::PeerKind,
    rate::{FlowKind, RateResult},
    services::Family,
    stats::Summary,
    tcp::{TcpLoad, TcpResult, PERCENTILES},
};

use super::{format, Results};

/// Which rate a table or ratio uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Delivered frames per wall-clock second of the generator.
    Wall,
    /// Delivered frames per CPU-second charged to the generator's thread.
    PerCpuSecond,
}

impl Metric {
    pub(super) fn of(self, r: &RateResult) -> Option<&Summary> {
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

/// The header row and its separator: the `leading` columns, then one per item of `columns`.
pub(super) fn header(md: &mut String, leading: &[&str], columns: impl IntoIterator<Item = String>) {
    let mut separator = String::from("|");
    md.push('|');
    for name in leading {
        write!(md, " {name} |").unwrap();
        separator.push_str("---|");
    }
    for name in columns {
        write!(md, " {name} |").unwrap();
        separator.push_str("---|");
    }
    md.push('\n');
    md.push_str(&separator);
    md.push('\n');
}

/// Appends one cell: why the cell was not measured, else its figure, else a dash.
pub(super) fn push_cell(row: &mut String, why: Option<&NotMeasured>, figure: Option<String>) {
    match (why, figure) {
        (Some(why), _) => write!(row, " {} |", why.cell()).unwrap(),
        (None, Some(figure)) => write!(row, " {figure} |").unwrap(),
        (None, None) => row.push_str(" – |"),
    }
}

/// The rate table alone: rows family × peer × flows, columns service counts.
pub fn rate_table(results: &Results, metric: Metric) -> String {
    let counts = &results.meta.service_counts;
    let mut md = String::new();
    header(
        &mut md,
        &["family", "peer", "flows"],
        counts
            .iter()
            .map(|n| format!("{n} svc: {} [range] (delivered)", metric.label())),
    );
    let rows = Family::ALL.into_iter().flat_map(|family| {
        PeerKind::all()
            .into_iter()
            .flat_map(move |peer| FlowKind::ALL.map(|flows| (family, peer, flows)))
    });
    for (family, peer, flows) in rows {
        let cells: Vec<_> = counts
            .iter()
            .map(|&n| results.rate_cell(peer, family, n, flows))
            .collect();
        if cells.iter().all(Option::is_none) {
            continue;
        }
        let mut row = format!("| {} | {} | {} |", family.name(), peer.name(), flows.name());
        for r in cells {
            let figure = r.and_then(|r| {
                let (rate, frac) = (metric.of(r)?, r.delivered_fraction.as_ref()?);
                Some(format!(
                    "{} ({:.0}%)",
                    format::mpps(rate),
                    frac.median * 100.0
                ))
            });
            push_cell(&mut row, r.and_then(|r| r.unsupported.as_ref()), figure);
        }
        md.push_str(&row);
        md.push('\n');
    }
    md
}

/// A row of a TCP table: its label and how a result's cell is written.
type TcpMetric = (String, Box<dyn Fn(&TcpResult) -> Option<String>>);

/// The rows of each peer in a TCP table: rate, then the latency percentiles, then
/// completed / attempted over all runs.
fn tcp_metrics(load: TcpLoad) -> Vec<TcpMetric> {
    let mut metrics: Vec<TcpMetric> = vec![(
        load.rate_unit().to_string(),
        Box::new(|r: &TcpResult| r.rate.as_ref().map(format::per_second)),
    )];
    for (i, (_, name)) in PERCENTILES.iter().enumerate() {
        metrics.push((
            format!("{name} µs"),
            Box::new(move |r: &TcpResult| {
                r.latency_us
                    .get(i)
                    .and_then(Option::as_ref)
                    .map(format::micros)
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
    metrics
}

/// One table per TCP load: rows peer × metric, columns service counts. A peer not
/// measured says why in its first row only.
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
        header(
            &mut md,
            &["peer", "metric"],
            counts.iter().map(|n| format!("{n} svc")),
        );
        for peer in PeerKind::all() {
            let cells: Vec<Option<&TcpResult>> = counts
                .iter()
                .map(|&n| results.tcp_cell(peer, n, load))
                .collect();
            if cells.iter().all(Option::is_none) {
                continue;
            }
            for (k, (name, value)) in tcp_metrics(load).iter().enumerate() {
                let mut row = format!("| {} | {name} |", if k == 0 { peer.name() } else { "" });
                for r in &cells {
                    match r.and_then(|r| r.unsupported.as_ref()) {
                        Some(_) if k > 0 => row.push_str(" |"),
                        why => push_cell(&mut row, why, r.and_then(value)),
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

/// Program cost: rows packet class (with the method that measured it), columns the
/// service sets measured, then the XDP_PASS baselines.
pub(super) fn cost_table(results: &Results) -> String {
    let costs = &results.program_cost;
    let mut md = String::new();
    header(
        &mut md,
        &["class", "method"],
        costs.iter().map(|c| format!("{} svc", c.services)),
    );
    let measured = |class: PacketClass| {
        costs
            .iter()
            .any(|c| c.classes.iter().any(|x| x.class == class))
    };
    let none_measured = costs.iter().all(|c| c.classes.is_empty());
    for class in PacketClass::ALL
        .into_iter()
        .filter(|&c| measured(c) || none_measured)
    {
        let mut method = String::new();
        let mut row = String::new();
        for c in costs {
            let x = c.classes.iter().find(|x| x.class == class);
            if let (None, Some(x)) = (&c.unsupported, x) {
                method = x.method.clone();
            }
            push_cell(&mut row, c.unsupported.as_ref(), x.map(cost_cell));
        }
        writeln!(md, "| {} | {method} |{row}", class.name()).unwrap();
    }
    external_cost_rows(&mut md, costs);
    let mut base = String::from("| XDP_PASS baseline (repeat / single) | |");
    for c in costs {
        let figure = match (&c.pass_repeat_ns, &c.pass_single_ns) {
            (Some(r), Some(s)) => Some(format!("{:.0} / {:.0}", r.median, s.median)),
            _ => None,
        };
        push_cell(&mut base, None, figure);
    }
    md.push_str(&base);
    md.push('\n');
    md
}

/// A cost cell: ns over XDP_PASS [range] and the absolute median.
fn cost_cell(x: &crate::cost::ClassCost) -> String {
    format!(
        "{} (abs {:.0})",
        format::ns(&x.over_pass_ns),
        x.ns_per_packet.median
    )
}

/// The external peers' rows of the cost table: "peer: class", the same cells.
fn external_cost_rows(md: &mut String, costs: &[crate::cost::CostResult]) {
    let mut peers: Vec<&str> = Vec::new();
    for e in costs.iter().flat_map(|c| &c.external) {
        if !peers.contains(&e.peer.as_str()) {
            peers.push(&e.peer);
        }
    }
    for peer in peers {
        for class in PacketClass::ALL {
            let mut method = String::new();
            let mut row = String::new();
            let mut any = false;
            for c in costs {
                let x = c
                    .external
                    .iter()
                    .find(|e| e.peer == peer)
                    .and_then(|e| e.classes.iter().find(|x| x.class == class));
                if let Some(x) = x {
                    method = x.method.clone();
                    any = true;
                }
                push_cell(&mut row, c.unsupported.as_ref(), x.map(cost_cell));
            }
            if any {
                writeln!(md, "| {peer}: {} | {method} |{row}", class.name()).unwrap();
            }
        }
    }
}

/// Control-plane programming time: rows tool, columns service counts.
pub(super) fn control_table(results: &Results) -> String {
    let counts = &results.meta.service_counts;
    let mut md = String::new();
    header(
        &mut md,
        &["tool"],
        counts.iter().map(|n| format!("{n} svc")),
    );
    for tool in Tool::ALL {
        let mut row = format!("| {} |", tool.name());
        for &n in counts {
            let c = results
                .control_plane
                .iter()
                .find(|c| c.tool == tool && c.services == n);
            let figure = c.and_then(|c| {
                let s = format::secs(c.seconds.as_ref()?);
                Some(match &c.note {
                    Some(note) => format!("{s} ({note})"),
                    None => s,
                })
            });
            push_cell(&mut row, c.and_then(|c| c.unsupported.as_ref()), figure);
        }
        md.push_str(&row);
        md.push('\n');
    }
    md
}
