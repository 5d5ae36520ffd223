//! The inspection commands: the kernel's view of services (`list`), counters (`stats`),
//! `explain` and the backend side's translations (`nat`), as tables or JSON.

use std::{
    io::{BufRead, Write},
    path::Path,
};

use anyhow::{bail, Context, Result};
use lb_common::{map_names, SockReason, TcReason};
use lb_daemon::{
    inspect::{self, Tuple},
    maps::{self, BackendSideMaps, BalancerMaps, MapsError, SocketMaps},
};

use super::{list_extras::ListExtras, Output};

/// `ferrolb list`.
pub fn list(pin_dir: &Path, output: Output) -> Result<()> {
    let maps = BalancerMaps::open(pin_dir)?;
    let services = inspect::list_services(&maps)?;
    let extras = ListExtras::read(pin_dir, &maps)?;
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&extras.json(&services)?)?
        );
    } else {
        super::flow_tables::print_header(&maps, pin_dir, &mut std::io::stdout().lock())?;
        print_services(&services, &extras);
    }
    Ok(())
}

/// `ferrolb explain`: one tuple, or one per line of `batch`, as the XDP balancer meets
/// it, or with `internal` as a socket of this node's pods and processes does.
pub fn explain(
    pin_dir: &Path,
    tuple: Option<String>,
    batch: Option<&Path>,
    internal: bool,
    output: Output,
) -> Result<()> {
    let maps = BalancerMaps::open(pin_dir)?;
    let tuples: Vec<Tuple> = match (tuple, batch) {
        (Some(t), None) => vec![t.parse().map_err(anyhow::Error::msg)?],
        (None, Some(path)) => read_tuples(path)?,
        _ => bail!("give either one tuple or --batch FILE"),
    };
    if internal {
        let targets = match SocketMaps::open(pin_dir) {
            Ok(socket) => socket.targets()?,
            Err(MapsError::NotInstalled { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let explain = |t| inspect::socket::explain(&maps, &targets, t);
        return explain_each(&tuples, output, explain, print_socket_explanation);
    }
    let explainer = inspect::Explainer::new(&maps)?;
    explain_each(&tuples, output, |t| explainer.explain(t), print_explanation)
}

/// Explains every tuple, then prints the answers as JSON or each through `print`.
fn explain_each<E: serde::Serialize>(
    tuples: &[Tuple],
    output: Output,
    explain: impl Fn(Tuple) -> Result<E, MapsError>,
    print: impl Fn(&E),
) -> Result<()> {
    let explanations = tuples
        .iter()
        .map(|t| explain(*t))
        .collect::<Result<Vec<E>, MapsError>>()?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&explanations)?);
    } else {
        explanations.iter().for_each(print);
    }
    Ok(())
}

fn print_explanation(e: &inspect::Explanation) {
    let t = e.tuple;
    println!(
        "{} {}:{} -> {}:{}  verdict={} backend={}\n  {}",
        t.protocol,
        t.src,
        t.sport,
        t.dst,
        t.dport,
        e.verdict,
        e.backend.map_or("-".into(), |b| b.to_string()),
        e.why
    );
}

/// The socket programs' verdict and the endpoints a socket may get.
fn print_socket_explanation(e: &inspect::socket::SocketExplanation) {
    let t = e.tuple;
    println!(
        "{} {}:{} -> {}  verdict={}\n  {}",
        t.protocol, t.src, t.sport, e.frontend, e.verdict, e.why
    );
    let size = f64::from(e.table_size.unwrap_or(0).max(1));
    for p in &e.endpoints {
        println!(
            "    endpoint {:<18} port={:<5} slots={:<6} ({:5.1}%) {}",
            p.address.map_or("?".into(), |a| a.to_string()),
            p.target_port,
            p.slots,
            100.0 * f64::from(p.slots) / size,
            if p.active { "active" } else { "retired" },
        );
    }
}

/// `ferrolb nat`: the backend side's translations as the kernel holds them.
pub fn nat(pin_dir: &Path, output: Output) -> Result<()> {
    let translations = BackendSideMaps::open(pin_dir)?.translations()?;
    if output == Output::Json {
        let rows: Vec<serde_json::Value> = translations
            .iter()
            .map(|t| {
                serde_json::json!({
                    "frontend": t.frontend.to_string(),
                    "endpoint": t.endpoint.to_string(),
                    "target_port": t.target_port,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
    } else if translations.is_empty() {
        println!("no translations");
    } else {
        for t in &translations {
            println!("{:<28} -> {}:{}", t.frontend, t.endpoint, t.target_port);
        }
    }
    Ok(())
}

fn read_tuples(path: &Path) -> Result<Vec<Tuple>> {
    let reader: Box<dyn BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| path.display().to_string())?,
        ))
    };
    let mut out = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        out.push(
            line.parse()
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), n + 1))?,
        );
    }
    Ok(out)
}

fn print_services(services: &[inspect::ServiceView], extras: &ListExtras) {
    let mut out = std::io::stdout().lock();
    extras.print_header(&mut out);
    if services.is_empty() {
        let _ = writeln!(out, "no services");
    }
    for s in services {
        let _ = writeln!(
            out,
            "{:<37} id={:<5} table={:<6} packets={:<10} bytes={}{}",
            s.frontend,
            s.service_id,
            s.table_size,
            s.packets,
            s.bytes,
            if s.reject { " reject" } else { "" }
        );
        if !s.source_ranges.is_empty() {
            let _ = writeln!(out, "    source ranges {}", s.source_ranges.join(", "));
        }
        for b in &s.backends {
            let _ = writeln!(
                out,
                "    backend {:<18} id={:<5} slots={:<6} ({:5.1}%) {:<8} packets={:<10} bytes={}",
                b.address.map_or("?".into(), |a| a.to_string()),
                b.id,
                b.slots,
                100.0 * f64::from(b.slots) / f64::from(s.table_size.max(1)),
                if b.active { "active" } else { "retired" },
                b.packets,
                b.bytes
            );
        }
        extras.print_service(&mut out, &s.frontend);
    }
}

/// `ferrolb stats`: counters by reason, Prometheus text style or JSON.
pub fn stats(pin_dir: &Path, output: Output) -> Result<()> {
    maps::check_access(pin_dir)?;
    maps::check_access(&pin_dir.join(map_names::XDP_STATS))?;
    let balancer_maps = match BalancerMaps::open(pin_dir) {
        Ok(maps) => Some(maps),
        Err(e @ MapsError::PermissionDenied { .. }) => return Err(e.into()),
        Err(_) => None,
    };
    let balancer = balancer_maps
        .as_ref()
        .map(inspect::reason_counts)
        .transpose()?;
    let decap = BackendSideMaps::open(pin_dir)
        .ok()
        .map(|maps| maps.counters())
        .transpose()?
        .map(|counters| inspect::named_counts(TcReason::ALL.iter().map(|r| r.name()), &counters));
    let sock = maps::pinned_reason_counters(pin_dir, map_names::SOCK_STATS)?
        .map(|counters| inspect::named_counts(SockReason::ALL.iter().map(|r| r.name()), &counters));
    if balancer.is_none() && decap.is_none() && sock.is_none() {
        bail!("nothing installed under {}", pin_dir.display());
    }
    if output == Output::Json {
        let flow = balancer_maps
            .as_ref()
            .map(|maps| super::flow_tables::json(maps, pin_dir))
            .transpose()?;
        println!(
            "{}",
            serde_json::json!({ "xdp": balancer, "tc": decap, "sock": sock, "flow": flow })
        );
        return Ok(());
    }
    // Prometheus text style, named lb_<subsystem>_<name>_total.
    for (subsystem, rows) in [("xdp", balancer), ("tc", decap), ("sock", sock)] {
        let Some(rows) = rows else { continue };
        for r in &rows {
            println!(
                "lb_{subsystem}_packets_total{{reason=\"{}\"}} {}",
                r.reason, r.packets
            );
        }
        for r in &rows {
            println!(
                "lb_{subsystem}_bytes_total{{reason=\"{}\"}} {}",
                r.reason, r.bytes
            );
        }
    }
    if let Some(maps) = &balancer_maps {
        super::flow_tables::print_metrics(maps, pin_dir)?;
    }
    Ok(())
}
