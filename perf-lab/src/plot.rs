//! SVG plots drawn in Rust (plotters, SVG back end, no font or system dependencies).

use std::path::{Path, PathBuf};

use plotters::{
    coord::ranged1d::{AsRangedCoord, ValueFormatter},
    prelude::*,
};

use crate::{
    control::Tool,
    cost::PacketClass,
    measured::NotMeasured,
    peers::PeerKind,
    rate::FlowKind,
    report::Results,
    services::Family,
    tcp::{TcpLoad, PERCENTILES},
};

#[derive(Debug, thiserror::Error)]
#[error("plot {path}: {message}")]
pub struct PlotError {
    pub path: PathBuf,
    pub message: String,
}

struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

const COLOURS: [RGBColor; 7] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
];

/// A point against the number of services: the figure, or why a cell has none.
type Cell<'a> = (u32, Result<f64, &'a NotMeasured>);

/// The cell of a result at `services`: its figure, else why it has none; `None` when it
/// has neither.
fn cell(services: u32, why: Option<&NotMeasured>, figure: Option<f64>) -> Option<Cell<'_>> {
    match (why, figure) {
        (Some(why), _) => Some((services, Err(why))),
        (None, Some(figure)) => Some((services, Ok(figure))),
        (None, None) => None,
    }
}

/// One line per key against the number of services (named by `name`, its cells from
/// `cells`); the service counts where it was not measured are named in its legend entry.
/// Keys without a single point are left out.
fn series_of<'a, K: Copy, S: Into<String>>(
    keys: impl IntoIterator<Item = K>,
    name: impl Fn(K) -> S,
    cells: impl Fn(K) -> Vec<Cell<'a>>,
) -> Vec<Series> {
    keys.into_iter()
        .map(|k| {
            let cells = cells(k);
            let not_measured: Vec<String> = cells
                .iter()
                .filter(|(_, value)| value.is_err())
                .map(|(services, _)| services.to_string())
                .collect();
            let mut name: String = name(k).into();
            if !not_measured.is_empty() {
                name = format!("{name} (not measured: {} svc)", not_measured.join(", "));
            }
            let points = cells
                .into_iter()
                .filter_map(|(services, value)| Some((f64::from(services), value.ok()?)))
                .collect();
            Series { name, points }
        })
        .filter(|s| !s.points.is_empty())
        .collect()
}

/// The error maker for drawing into `path`.
fn plot_err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> PlotError + '_ {
    move |e| PlotError {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// What a plot shows besides its axes' ranges.
struct Frame<'a> {
    path: &'a Path,
    title: &'a str,
    series: &'a [Series],
    legend: SeriesLabelPosition,
    x_desc: &'a str,
    y_desc: &'a str,
    /// The names of the x positions 0, 1, ... (the percentile plots); plain numbers if
    /// none.
    x_names: Option<&'a [&'a str]>,
}

/// Draws `frame` over the axes `x` and `y`: every series as a line with dots, one colour
/// each, and the legend.
fn render<X, Y>(frame: Frame, x: X, y: Y) -> Result<(), PlotError>
where
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let err = plot_err(frame.path);
    let root = SVGBackend::new(frame.path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    // An empty plot still gets its axes (a layer may have been skipped), and says why.
    let title = if frame.series.is_empty() {
        format!("{} (no data in this run)", frame.title)
    } else {
        frame.title.to_string()
    };
    let mut chart = ChartBuilder::on(&root)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .caption(title, ("sans-serif", 20))
        .build_cartesian_2d(x, y)
        .map_err(|e| err(&e))?;
    let names = frame.x_names.unwrap_or_default();
    let name_at = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].to_string()
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    if frame.x_names.is_some() {
        mesh.x_labels(names.len()).x_label_formatter(&name_at);
    }
    mesh.x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, s) in frame.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(s.points.clone(), colour.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(s.name.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart
            .draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| err(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(frame.legend)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A plot against the number of services (log scale), the y axis linear from 0 or
/// logarithmic, written to `file` in `dir`; returns the file name.
fn draw(
    dir: &Path,
    file: String,
    title: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<String, PlotError> {
    let points: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .collect();
    // A log axis over an infinite or empty range would never finish drawing its mesh.
    let (x_min, x_max) = if points.is_empty() {
        (1.0, 10.0)
    } else {
        let lo = points
            .iter()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .max(1.0);
        let hi = points.iter().map(|p| p.0).fold(0.0, f64::max).max(lo);
        (lo, hi)
    };
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(1e-3);
    let y_min_pos = points
        .iter()
        .map(|p| p.1)
        .filter(|y| *y > 0.0)
        .fold(f64::INFINITY, f64::min);
    let path = dir.join(&file);
    let frame = Frame {
        path: &path,
        title,
        series,
        legend: SeriesLabelPosition::UpperRight,
        x_desc: "services (log scale)",
        y_desc: y_label,
        x_names: None,
    };
    let x = ((x_min / 2.0)..(x_max * 2.0)).log_scale();
    if log_y && y_min_pos.is_finite() {
        render(frame, x, ((y_min_pos / 2.0)..(y_max * 2.0)).log_scale())?;
    } else {
        render(frame, x, 0.0..(y_max * 1.15))?;
    }
    Ok(file)
}

/// Latency against percentile for one configuration (load × service count), one line per
/// peer. The percentiles sit at equal steps (p50, p90, p99, p99.9: one more nine each), the
/// latency axis is logarithmic because tails are orders of magnitude above medians.
fn draw_percentiles(path: &Path, title: &str, series: &[Series]) -> Result<(), PlotError> {
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let y_max = ys.clone().fold(0.0, f64::max).max(1.0);
    let y_min = ys.filter(|y| *y > 0.0).fold(f64::INFINITY, f64::min);
    let y_min = if y_min.is_finite() { y_min } else { 1.0 };
    let names = PERCENTILES.map(|(_, name)| name);
    let frame = Frame {
        path,
        title,
        series,
        legend: SeriesLabelPosition::UpperLeft,
        x_desc: "percentile",
        y_desc: "µs (log scale)",
        x_names: Some(&names),
    };
    render(
        frame,
        -0.25f64..(PERCENTILES.len() as f64 - 0.75),
        ((y_min / 2.0)..(y_max * 2.0)).log_scale(),
    )
}

/// The TCP latency plots, one per load and service count.
fn write_tcp(results: &Results, dir: &Path) -> Result<Vec<String>, PlotError> {
    let mut written = Vec::new();
    let mut counts: Vec<u32> = results.tcp.iter().map(|r| r.services).collect();
    counts.sort_unstable();
    counts.dedup();
    for load in TcpLoad::ALL {
        for &n in &counts {
            let cell = |peer| {
                results
                    .tcp
                    .iter()
                    .find(|r| r.peer == peer && r.services == n && r.load == load)
            };
            let series: Vec<Series> = PeerKind::all()
                .iter()
                .filter_map(|&peer| {
                    let points: Vec<(f64, f64)> = cell(peer)?
                        .latency_us
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| Some((i as f64, s.as_ref()?.median)))
                        .collect();
                    (!points.is_empty()).then(|| Series {
                        name: peer.name().to_string(),
                        points,
                    })
                })
                .collect();
            let file = format!("{}-{n}svc.svg", load.file_stem());
            draw_percentiles(
                &dir.join(&file),
                &format!(
                    "TCP {}: {}, {n} services (median of runs)",
                    load.name(),
                    load.latency_name()
                ),
                &series,
            )?;
            written.push(file);
        }
    }
    Ok(written)
}

/// The rate plot of `family` and `flows`: `rate-new-ipv4.svg`, `rate-established-ipv6.svg`, ...
pub fn rate_plot_file(family: Family, flows: FlowKind) -> String {
    let flows = match flows {
        FlowKind::New => "new",
        FlowKind::Established => "established",
    };
    format!("rate-{flows}-ipv{}.svg", family.number())
}

/// Writes every plot into `dir`; returns the file names.
pub fn write_all(results: &Results, dir: &Path) -> Result<Vec<String>, PlotError> {
    let mut written = Vec::new();
    // One plot per family and flow kind (a peer keeps its colour across them), so each
    // stays at six lines.
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|&f| results.rate.iter().any(|r| r.family == f))
        .collect();
    for family in families {
        for flows in FlowKind::ALL {
            let series = series_of(PeerKind::all(), PeerKind::name, |peer| {
                results
                    .rate
                    .iter()
                    .filter(|r| r.peer == peer && r.flows == flows && r.family == family)
                    .filter_map(|r| {
                        let mpps = r.delivered_pps.as_ref().map(|s| s.median / 1e6);
                        cell(r.services, r.unsupported.as_ref(), mpps)
                    })
                    .collect()
            });
            written.push(draw(
                dir,
                rate_plot_file(family, flows),
                &format!("Delivered packet rate, {}, {}", family.name(), flows.name()),
                "Mpps delivered",
                &series,
                false,
            )?);
        }
    }
    // ferrolb's classes, then every external peer's (same packets, same method).
    let externals: Vec<String> = results
        .program_cost
        .iter()
        .flat_map(|c| c.external.iter().map(|e| e.peer.clone()))
        .fold(Vec::new(), |mut names, n| {
            if !names.contains(&n) {
                names.push(n);
            }
            names
        });
    let keys = std::iter::once(None)
        .chain(externals.iter().map(Some))
        .flat_map(|peer| PacketClass::ALL.map(move |class| (peer, class)));
    let name = |(peer, class): (Option<&String>, PacketClass)| match peer {
        None => class.name().to_string(),
        Some(peer) => format!("{peer}: {}", class.name()),
    };
    let series = series_of(keys, name, |(peer, class)| {
        results
            .program_cost
            .iter()
            .filter_map(|c| {
                let classes = match peer {
                    None => &c.classes,
                    Some(peer) => &c.external.iter().find(|e| &e.peer == peer)?.classes,
                };
                let x = classes.iter().find(|x| x.class == class);
                let ns = x.map(|x| x.over_pass_ns.median.max(0.0));
                cell(c.services, c.unsupported.as_ref(), ns)
            })
            .collect()
    });
    written.push(draw(
        dir,
        "program-cost.svg".to_string(),
        "program cost over XDP_PASS (ferrolb and external peers)",
        "ns per packet",
        &series,
        false,
    )?);
    let series = series_of(Tool::ALL, Tool::name, |tool| {
        results
            .control_plane
            .iter()
            .filter(|c| c.tool == tool)
            .filter_map(|c| {
                let ms = c.seconds.as_ref().map(|s| s.median * 1e3);
                cell(c.services, c.unsupported.as_ref(), ms)
            })
            .collect()
    });
    written.push(draw(
        dir,
        "control-plane.svg".to_string(),
        "Programming time from empty",
        "ms (log scale)",
        &series,
        true,
    )?);
    written.extend(write_tcp(results, dir)?);
    Ok(written)
}
