//! The east-west section: pod → ClusterIP through each peer, one table per figure with
//! its ratios to `direct` and to `iptables-nft`, and issue #11's targets as ratios.

use std::fmt::Write;

use crate::{
    eastwest::{EwPeerKind, EwResult},
    services::Family,
    stats::Summary,
    tcp::{TcpLoad, PERCENTILES},
};

use super::{
    format,
    ratios::ratio,
    sections,
    tables::{header, push_cell},
    Ratio, Results,
};

/// Which summary of a result a table shows.
#[derive(Debug, Clone, Copy)]
enum Stat {
    Rate,
    /// An index into `tcp::PERCENTILES`.
    Latency(usize),
}

const P50: Stat = Stat::Latency(0);
const P99: Stat = Stat::Latency(2);

/// The figures, one table each: what issue #11 asks for (connect/close rate, request
/// latency p50/p99) and what explains them.
const FIGURES: [(TcpLoad, Stat); 8] = [
    (TcpLoad::ConnectClose, Stat::Rate),
    (TcpLoad::ConnectClose, P50),
    (TcpLoad::ConnectClose, P99),
    (TcpLoad::RequestResponseSingle, P50),
    (TcpLoad::RequestResponseSingle, P99),
    (TcpLoad::RequestResponse, Stat::Rate),
    (TcpLoad::RequestResponse, P50),
    (TcpLoad::RequestResponse, P99),
];

/// The peers every figure is divided by.
const BASES: [EwPeerKind; 2] = [EwPeerKind::Direct, EwPeerKind::IptablesNft];

impl Stat {
    fn of(self, r: &EwResult) -> Option<&Summary> {
        match self {
            Self::Rate => r.rate.as_ref(),
            Self::Latency(i) => r.latency_us.get(i)?.as_ref(),
        }
    }

    fn title(self, load: TcpLoad) -> String {
        match self {
            Self::Rate => format!("{}: {}", load.name(), load.rate_unit()),
            Self::Latency(i) => format!(
                "{}: {} {}, µs",
                load.name(),
                load.latency_name(),
                PERCENTILES[i].1
            ),
        }
    }

    fn format(self, s: &Summary) -> String {
        match self {
            Self::Rate => format::per_second(s),
            Self::Latency(_) => format::micros(s),
        }
    }
}

fn median(results: &Results, peer: EwPeerKind, n: u32, load: TcpLoad, stat: Stat) -> Option<f64> {
    let r = results.east_west_cell(peer, n, load)?;
    Some(stat.of(r)?.median)
}

/// One figure: rows peer, for each service count the median [range] and its ratios to
/// the bases' medians.
fn figure_table(results: &Results, load: TcpLoad, stat: Stat, md: &mut String) {
    let counts = &results.meta.service_counts;
    writeln!(md, "**{}** (median of runs [min–max])\n", stat.title(load)).unwrap();
    header(
        md,
        &["peer"],
        counts.iter().flat_map(|n| {
            [format!("{n} svc")]
                .into_iter()
                .chain(BASES.map(|b| format!("÷ {}", b.name())))
        }),
    );
    for peer in EwPeerKind::ALL {
        let mut row = format!("| {} |", peer.name());
        for &n in counts {
            let r = results.east_west_cell(peer, n, load);
            let why = r.and_then(|r| r.unsupported.as_ref());
            push_cell(
                &mut row,
                why,
                r.and_then(|r| Some(stat.format(stat.of(r)?))),
            );
            for base in BASES {
                let value = ratio(
                    median(results, peer, n, load, stat),
                    median(results, base, n, load, stat),
                );
                let figure = value.map(|v| format!("{v:.2}×"));
                push_cell(&mut row, None, figure);
            }
        }
        md.push_str(&row);
        md.push('\n');
    }
    md.push('\n');
}

/// Completed / attempted over all runs, per peer and load: failures are visible here.
fn completion_table(results: &Results, md: &mut String) {
    let counts = &results.meta.service_counts;
    md.push_str("**completed / attempted** (all runs)\n\n");
    header(
        md,
        &["peer", "load"],
        counts.iter().map(|n| format!("{n} svc")),
    );
    for peer in EwPeerKind::ALL {
        for load in TcpLoad::ALL {
            let mut row = format!("| {} | {} |", peer.name(), load.name());
            for &n in counts {
                let r = results.east_west_cell(peer, n, load);
                let figure = r.filter(|r| !r.samples.is_empty()).map(|r| {
                    let done: u64 = r.samples.iter().map(|s| s.completed).sum();
                    let tried: u64 = r.samples.iter().map(|s| s.attempted).sum();
                    format!("{done} / {tried}")
                });
                push_cell(&mut row, r.and_then(|r| r.unsupported.as_ref()), figure);
            }
            md.push_str(&row);
            md.push('\n');
        }
    }
}

/// Every east-west table.
pub fn east_west_tables(results: &Results) -> String {
    let mut md = String::new();
    for (load, stat) in FIGURES {
        figure_table(results, load, stat, &mut md);
    }
    completion_table(results, &mut md);
    md
}

/// The section, when the layer ran.
pub(super) fn section(results: &Results, md: &mut String) {
    if results.east_west.is_empty() {
        return;
    }
    md.push_str("\n## East-west: pod → ClusterIP\n\n");
    md.push_str(
        "A client in a pod's namespace connects to the target ClusterIP (the last service \
         in rule order); the endpoints listen in another pod's namespace behind the node's \
         namespace, which only routes. ferrolb-socket: ferrolb's socket programs on a \
         cgroup the client runs in pick the endpoint at connect() (Maglev over the sync \
         engine's internal frontends), then every packet goes pod to pod untouched. direct: \
         the client connects to the endpoints themselves (no service). nftables / \
         iptables-nft: kube-proxy's rules in the client's namespace, DNAT on the nat output \
         hook as for a node's own processes, conntrack on every packet. Ratios are of \
         medians; a peer faster than direct shows a rate ratio above 1 only within \
         noise.\n\n",
    );
    md.push_str(&sections::loads(&results.meta.east_west_plan));
    md.push_str("\n\n");
    md.push_str(&east_west_tables(results));
}

/// Issue #11's targets at `n` services: connect/close rate within 5 % of direct and at
/// least 1.3× iptables-nft (named at 10k, computed at every count), request latency
/// equal to direct within noise (the ranges of the runs overlap: a weak test where the
/// runs spread widely, which the table's ranges show).
pub(super) fn ratios(results: &Results, n: u32) -> Vec<Ratio> {
    let socket = EwPeerKind::FerrolbSocket;
    let cc = TcpLoad::ConnectClose;
    let rate = |peer| median(results, peer, n, cc, Stat::Rate);
    let mut out = Vec::new();
    for (base, limit) in [(EwPeerKind::Direct, 0.95), (EwPeerKind::IptablesNft, 1.3)] {
        let value = ratio(rate(socket), rate(base));
        out.push(Ratio {
            what: format!(
                "east-west connect/close rate, {} / {}",
                socket.name(),
                base.name()
            ),
            family: Family::Ipv4,
            services: n,
            value,
            target: format!(">= {limit}"),
            met: value.map(|v| v >= limit),
        });
    }
    for load in [TcpLoad::RequestResponseSingle, TcpLoad::RequestResponse] {
        let summary = |peer| P99.of(results.east_west_cell(peer, n, load)?);
        let (ours, direct) = (summary(socket), summary(EwPeerKind::Direct));
        let overlap = match (ours, direct) {
            (Some(a), Some(b)) => Some(a.min <= b.max && b.min <= a.max),
            _ => None,
        };
        out.push(Ratio {
            what: format!("east-west {} p99, {} / direct", load.name(), socket.name()),
            family: Family::Ipv4,
            services: n,
            value: ratio(ours.map(|s| s.median), direct.map(|s| s.median)),
            target: "~1.0 (ranges of the runs overlap)".to_string(),
            met: overlap,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        services::ServiceSet,
        suite::Plan,
        tcp::{Percentiles, TcpSample},
    };

    /// A result whose two runs complete `rate` and `rate * 1.02` per second with p99 at
    /// `p99` and `p99 * 1.1` µs.
    fn cell(peer: EwPeerKind, services: u32, load: TcpLoad, rate: f64, p99: f64) -> EwResult {
        let set = ServiceSet {
            services,
            backends: 3,
        };
        let mut r = EwResult::new(peer, &set, load, None);
        for k in [1.0, 1.02] {
            let latency = p99 / k;
            r.samples.push(TcpSample {
                attempted: (rate * k) as u64,
                completed: (rate * k) as u64,
                failed: 0,
                connect_failed: 0,
                seconds: 1.0,
                latency_us: Some(Percentiles {
                    p50: latency / 2.0,
                    p90: latency,
                    p99: latency,
                    p999: latency,
                    samples: (rate * k) as usize,
                }),
                transaction_us: None,
            });
        }
        r.finish();
        r
    }

    fn results(east_west: Vec<EwResult>) -> Results {
        let plan = Plan::quick();
        Results {
            meta: super::super::Meta {
                profile: plan.profile.clone(),
                started_unix: 0,
                seconds_total: 0.0,
                kernel: "test".into(),
                cpus: 2,
                generator_cpu: 1,
                runs: 2,
                service_counts: vec![1_000],
                families: vec![Family::Ipv4],
                backends_per_service: 3,
                rate_plan: plan.rate,
                cost_plan: plan.cost,
                tcp_plan: plan.tcp,
                east_west_plan: plan.east_west,
            },
            program_cost: Vec::new(),
            rate: Vec::new(),
            control_plane: Vec::new(),
            tcp: Vec::new(),
            east_west,
            ratios: Vec::new(),
            not_measured: Vec::new(),
        }
    }

    fn all_cells(figures: [(EwPeerKind, f64, f64); 4]) -> Vec<EwResult> {
        figures
            .into_iter()
            .flat_map(|(peer, rate, p99)| {
                TcpLoad::ALL.map(|load| cell(peer, 1_000, load, rate, p99))
            })
            .collect()
    }

    #[test]
    fn tables_divide_every_figure_by_direct_and_iptables_nft() {
        let r = results(all_cells([
            (EwPeerKind::FerrolbSocket, 9_800.0, 100.0),
            (EwPeerKind::Direct, 10_000.0, 100.0),
            (EwPeerKind::Nftables, 8_000.0, 130.0),
            (EwPeerKind::IptablesNft, 5_000.0, 150.0),
        ]));
        let md = east_west_tables(&r);
        assert_eq!(md.matches("**").count() / 2, FIGURES.len() + 1);
        assert!(md.contains("| peer | 1000 svc | ÷ direct | ÷ iptables-nft |"));
        // Medians of two runs: 9,898 and 10,100 per second, ratios of medians.
        let rate_row = md
            .lines()
            .find(|l| l.starts_with("| ferrolb-socket |"))
            .unwrap();
        assert!(rate_row.contains("| 0.98× | 1.96× |"), "{rate_row}");
        assert!(md.contains("| direct | request/response | 20200 / 20200 |"));
    }

    #[test]
    fn targets_judge_the_rate_by_ratio_and_p99_by_overlapping_ranges() {
        let mut r = results(all_cells([
            (EwPeerKind::FerrolbSocket, 9_000.0, 100.0),
            (EwPeerKind::Direct, 10_000.0, 101.0),
            (EwPeerKind::Nftables, 8_000.0, 130.0),
            (EwPeerKind::IptablesNft, 6_000.0, 200.0),
        ]));
        let ratios = ratios(&r, 1_000);
        assert_eq!(ratios.len(), 4);
        let met: Vec<_> = ratios.iter().map(|x| x.met).collect();
        // 0.90 of direct (missed), 1.5 of iptables-nft (met), p99 ranges overlap.
        assert_eq!(met, [Some(false), Some(true), Some(true), Some(true)]);
        assert!((ratios[0].value.unwrap() - 0.9).abs() < 1e-9);
        r.east_west
            .retain(|x| x.peer != EwPeerKind::Direct || x.load == TcpLoad::ConnectClose);
        let ratios = super::ratios(&r, 1_000);
        assert_eq!(ratios[2].met, None, "no direct p99, no verdict");
        assert!(ratios[2].value.is_none());
    }
}
