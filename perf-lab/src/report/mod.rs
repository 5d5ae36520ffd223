//! The result file (JSON), the markdown report and the target ratios.

mod eastwest;
mod format;
mod ratios;
mod sections;
mod tables;

use serde::{Deserialize, Serialize};

use crate::{
    control::ControlResult,
    cost::{CostPlan, CostResult},
    eastwest::{EwPeerKind, EwResult},
    peers::PeerKind,
    rate::{FlowKind, RatePlan, RateResult},
    services::Family,
    tcp::{TcpLoad, TcpPlan, TcpResult},
};

pub use eastwest::east_west_tables;
pub use ratios::{ratios, Ratio};
pub use tables::{rate_table, tcp_tables, Metric};

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
    /// The east-west layer's loads.
    pub east_west_plan: TcpPlan,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub program_cost: Vec<CostResult>,
    pub rate: Vec<RateResult>,
    pub control_plane: Vec<ControlResult>,
    pub tcp: Vec<TcpResult>,
    /// Pod → ClusterIP (`eastwest`); empty when the layer did not run.
    #[serde(default)]
    pub east_west: Vec<EwResult>,
    pub ratios: Vec<Ratio>,
    pub not_measured: Vec<String>,
}

impl Results {
    /// The rate result of one cell, if the run has it.
    fn rate_cell(
        &self,
        peer: PeerKind,
        family: Family,
        services: u32,
        flows: FlowKind,
    ) -> Option<&RateResult> {
        self.rate.iter().find(|r| {
            r.peer == peer && r.family == family && r.services == services && r.flows == flows
        })
    }

    /// The TCP result of one cell, if the run has it.
    fn tcp_cell(&self, peer: PeerKind, services: u32, load: TcpLoad) -> Option<&TcpResult> {
        self.tcp
            .iter()
            .find(|r| r.peer == peer && r.services == services && r.load == load)
    }

    /// The east-west result of one cell, if the run has it.
    fn east_west_cell(&self, peer: EwPeerKind, services: u32, load: TcpLoad) -> Option<&EwResult> {
        self.east_west
            .iter()
            .find(|r| r.peer == peer && r.services == services && r.load == load)
    }
}

/// The whole report: what ran where, each layer's tables with what they measure, the
/// targets, what the run left out, and the plots.
pub fn markdown(results: &Results) -> String {
    let mut md = String::new();
    for section in [
        sections::intro,
        sections::rate,
        sections::cost,
        sections::control,
        sections::tcp,
        eastwest::section,
        sections::targets,
        sections::not_measured,
        sections::plots,
    ] {
        section(results, &mut md);
    }
    md
}
