//! The report's sections, in order: each says what its figures are and how they were
//! made, then shows its table.

use std::fmt::Write;

use crate::tcp::TcpPlan;

use super::{tables, Metric, Results};

/// The title and where and how the run measured.
pub(super) fn intro(results: &Results, md: &mut String) {
    let m = &results.meta;
    writeln!(md, "# perf-lab report ({})\n", m.profile).unwrap();
    writeln!(
        md,
        "Kernel {}, {} CPUs, generator pinned to CPU {}. Every figure is the median of {} \
         interleaved runs with its range [min–max]. {} backends per service; the target \
         service is the last in rule order. Total time {:.0} s.\n",
        m.kernel, m.cpus, m.generator_cpu, m.runs, m.backends_per_service, m.seconds_total
    )
    .unwrap();
}

/// Packet rate, by wall clock and per CPU-second.
pub(super) fn rate(results: &Results, md: &mut String) {
    let m = &results.meta;
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
    md.push_str(&tables::rate_table(results, Metric::Wall));
    md.push_str(
        "\nThe same runs per CPU-second charged to the generator's thread (the DUT's and the \
         sink's softirq work runs on that CPU at the end of each batch and is charged to it; \
         other tenants' time slices are not). On a shared machine this is the steadier \
         figure; compare ranges.\n\n",
    );
    md.push_str(&tables::rate_table(results, Metric::PerCpuSecond));
}

/// Program cost per packet class.
pub(super) fn cost(results: &Results, md: &mut String) {
    md.push_str("\n## Program cost (ferrolb XDP, BPF_PROG_RUN, ns per packet over XDP_PASS)\n\n");
    md.push_str(
        "A SYN is balanced without a flow-table insert; a flow's first ACK inserts (the \
         table is filled to capacity first, so every insert evicts); cold hits are ACKs \
         cycling over 10,000 established flows, hot ones one flow's ACK every call (the hot \
         figure is instruction cost, cold minus hot is cache misses). After the fill the \
         table is turned over (a quarter of it replaced per round, the established flows \
         touched again) until the cold hit figure stops moving.\n\n",
    );
    md.push_str(&tables::cost_table(results));
    for c in &results.program_cost {
        if c.turnover_hit_ns.is_empty() {
            continue;
        }
        let rounds: Vec<String> = c
            .turnover_hit_ns
            .iter()
            .map(|ns| format!("{ns:.0}"))
            .collect();
        md.push_str(&format!(
            "\nCold hit over XDP_PASS (ns) after the fill, then per turnover round, {} services: {}\n",
            c.services,
            rounds.join(", ")
        ));
    }
}

/// Control-plane programming time.
pub(super) fn control(results: &Results, md: &mut String) {
    md.push_str("\n## Control-plane programming time (from empty)\n\n");
    md.push_str(&tables::control_table(results));
}

/// TCP latency and connection rate, when the layer ran.
pub(super) fn tcp(results: &Results, md: &mut String) {
    if results.tcp.is_empty() {
        return;
    }
    md.push_str("\n## TCP: request/response latency and connection rate\n\n");
    writeln!(
        md,
        "Real sockets: a client in its own namespace → the peer's DUT → a server in the \
         backend namespace (for ferrolb-dsr the reply goes from the backend straight to \
         the client). {} Rates are completed per second of the run. With many connections \
         in a closed loop, latency ≈ connections / rate (Little's law): it is the system's \
         cost per request plus queueing; the 1-connection load is the round trip alone. \
         Plots: `tcp-rr-latency-<N>svc.svg`, `tcp-rr1-latency-<N>svc.svg`, \
         `tcp-connect-latency-<N>svc.svg`.\n",
        loads(&results.meta.tcp_plan)
    )
    .unwrap();
    md.push_str(&tables::tcp_tables(results));
}

/// What a socket layer's loads are, their bounds and timeout.
pub(super) fn loads(t: &TcpPlan) -> String {
    format!(
        "Request/response: {} persistent connections, {} B request, {} B response, closed \
         loop, at most {} requests or {:.1} s per run. Connect/close: {} concurrent loops of \
         connect, one request, close, at most {} connections or {:.1} s per run; the \
         percentiles are of the connect (handshake) time. Every operation times out after \
         {} ms (counted as failed).",
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
}

/// The targets as ratios of this run.
pub(super) fn targets(results: &Results, md: &mut String) {
    md.push_str("\n## Targets (issues #5 and #11), as ratios in this run\n\nEach ratio is of figures measured in one family (the IPv6 ones against the same peers' IPv6 rates and the IPv6 cost classes; the east-west ones are IPv4).\n\n| family | what | services | value | target | met |\n|---|---|---|---|---|---|\n");
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
}

/// What the run left out.
pub(super) fn not_measured(results: &Results, md: &mut String) {
    if results.not_measured.is_empty() {
        return;
    }
    md.push_str("\n## Not measured in this run\n\n");
    for item in &results.not_measured {
        writeln!(md, "- {item}").unwrap();
    }
}

/// The plot files and what each shows.
pub(super) fn plots(_: &Results, md: &mut String) {
    md.push_str(
        "\n## Plots\n\n- `rate-new-ipv4.svg`, `rate-established-ipv4.svg`, `rate-new-ipv6.svg`, \
         `rate-established-ipv6.svg`: delivered Mpps against the number of services (log \
         scale), one line per peer, one plot per family and flow kind.\n- `tcp-rr-latency-<N>svc.svg`, \
         `tcp-rr1-latency-<N>svc.svg`, `tcp-connect-latency-<N>svc.svg`: latency against \
         percentile (p50 … p99.9), one line per peer, per service count.\n- `program-cost.svg`: ns over \
         XDP_PASS per packet class against the number of services.\n- `control-plane.svg`: \
         programming time against the number of services (log-log).\n",
    );
}
