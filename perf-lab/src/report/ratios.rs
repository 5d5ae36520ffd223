//! The targets of issue #5 (and, in `eastwest.rs`, issue #11's) as ratios of figures
//! measured in one run.

use serde::{Deserialize, Serialize};

use crate::{cost::PacketClass, peers::PeerKind, rate::FlowKind, services::Family};

use super::{Metric, Results};

/// A target of an issue as a ratio measured in this run.
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

/// The acceptance ratios, at each measured service count (issue #5 names 10k), per family;
/// only those of the layers that ran (a run restricted to one layer lists no empty rows).
pub fn ratios(results: &Results) -> Vec<Ratio> {
    let mut out = Vec::new();
    let (rate, cost) = (!results.rate.is_empty(), !results.program_cost.is_empty());
    for &family in &results.meta.families {
        for &n in &results.meta.service_counts {
            if rate {
                out.extend(rate_ratios(results, family, n));
            }
            if cost {
                out.extend(cost_ratios(results, family, n));
            }
        }
        if rate {
            out.extend(flatness(results, family));
        }
    }
    if !results.east_west.is_empty() {
        for &n in &results.meta.service_counts {
            out.extend(super::eastwest::ratios(results, n));
        }
    }
    out
}

pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn median_rate(
    results: &Results,
    metric: Metric,
    peer: PeerKind,
    family: Family,
    services: u32,
) -> Option<f64> {
    results
        .rate_cell(peer, family, services, FlowKind::New)
        .and_then(|r| metric.of(r))
        .map(|s| s.median)
}

/// ferrolb's new-flow rate against each other peer's, by wall clock and per CPU-second.
fn rate_ratios(results: &Results, family: Family, n: u32) -> Vec<Ratio> {
    let mut out = Vec::new();
    for (metric, label) in [(Metric::Wall, "wall"), (Metric::PerCpuSecond, "per CPU-s")] {
        let rate = |peer| median_rate(results, metric, peer, family, n);
        let ours = rate(PeerKind::FerrolbDsr);
        for (peer, target) in [
            (PeerKind::BpfRedirect, 0.8),
            (PeerKind::Nftables, 5.0),
            (PeerKind::IptablesLegacy, 50.0),
            (PeerKind::IptablesNft, 50.0),
        ] {
            let value = ratio(ours, rate(peer));
            out.push(Ratio {
                what: format!(
                    "{} new-flow rate ({label}), ferrolb / {}",
                    family.name(),
                    peer.name()
                ),
                family,
                services: n,
                value,
                target: format!(">= {target}"),
                met: value.map(|v| v >= target),
            });
        }
    }
    out
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

/// The program-cost limits of issue #14: cold hit (10,000 flows cycling) 150 ns, new flow
/// (SYN) 250 ns, first ACK (the insert, table full) 300 ns, hot hit (one flow) 60 ns.
fn cost_ratios(results: &Results, family: Family, n: u32) -> Vec<Ratio> {
    let classes = match family {
        Family::Ipv4 => [
            (PacketClass::FlowHit, 150.0),
            (PacketClass::NewFlow, 250.0),
            (PacketClass::FirstAck, 300.0),
            (PacketClass::FlowHitHot, 60.0),
        ],
        Family::Ipv6 => [
            (PacketClass::FlowHitV6, 150.0),
            (PacketClass::NewFlowV6, 250.0),
            (PacketClass::FirstAckV6, 300.0),
            (PacketClass::FlowHitHotV6, 60.0),
        ],
    };
    classes
        .into_iter()
        .map(|(class, limit)| {
            let value = class_cost(results, n, class);
            Ratio {
                what: format!("program cost over XDP_PASS, {} (ns)", class.name()),
                family,
                services: n,
                value,
                target: format!("<= {limit}"),
                met: value.map(|v| v <= limit),
            }
        })
        .collect()
}

/// ferrolb's new-flow rate at the largest count it was measured at over the smallest.
fn flatness(results: &Results, family: Family) -> Option<Ratio> {
    let counts = &results.meta.service_counts;
    let ours = |n| {
        median_rate(
            results,
            Metric::PerCpuSecond,
            PeerKind::FerrolbDsr,
            family,
            n,
        )
    };
    let first = *counts.first()?;
    let last = *counts.iter().rev().find(|&&n| ours(n).is_some())?;
    Some(Ratio {
        what: format!(
            "ferrolb {} new-flow rate (per CPU-s) at {last} / at {first} services (flatness)",
            family.name()
        ),
        family,
        services: last,
        value: ratio(ours(last), ours(first)),
        target: "~1.0 (within run-to-run range)".to_string(),
        met: None,
    })
}
