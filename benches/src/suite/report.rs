//! The suite's report: medians and ranges per variant and workload, ratios to coring-uring,
//! the targets checked, as `report.json`, `report.md`, `report.html` (one page with the charts)
//! and SVG charts.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use super::{BASELINE, Measured, Placement, Sample, SuiteOptions, WorkloadDef};

/// Version of the JSON layout.
pub const SCHEMA_VERSION: u32 = 1;

/// One variant on one workload.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Variant name.
    pub variant: String,
    /// Workload name.
    pub workload: String,
    /// Median requests (or echoed messages) per second.
    pub rps_median: Option<f64>,
    /// Lowest run.
    pub rps_min: Option<f64>,
    /// Highest run.
    pub rps_max: Option<f64>,
    /// Median 99th-percentile latency, µs.
    pub p99_us: Option<u64>,
    /// Median 99.9th-percentile latency, µs.
    pub p999_us: Option<u64>,
    /// Median server CPU, percent of one core.
    pub cpu_pct: Option<f64>,
    /// Median load-generator CPU, percent of one core.
    pub loadgen_cpu_pct: Option<f64>,
    /// Median requests per server CPU-second.
    pub rps_per_cpu: Option<f64>,
    /// Server syscalls per request (strace, fixed-count run).
    pub syscalls_per_req: Option<f64>,
    /// Errors over all runs (any kind, dropped requests included).
    pub errors: u64,
    /// Runs measured.
    pub runs: usize,
    /// This variant's figure over coring-uring's, by the workload's ranking figure.
    pub ratio_to_baseline: Option<f64>,
    /// The lowest and highest of that ratio across the rounds (each round runs every variant
    /// once, interleaved, so a round's ratio compares runs made minutes apart at most).
    pub ratio_min: Option<f64>,
    /// See `ratio_min`.
    pub ratio_max: Option<f64>,
    /// The lowest and highest run of the ranking figure (the chart's whiskers).
    pub figure_min: Option<f64>,
    /// See `figure_min`.
    pub figure_max: Option<f64>,
    /// Why the variant was not measured, or null.
    pub skipped: Option<String>,
}

/// How a workload's variants are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RankBy {
    /// Requests per second: the servers were the bottleneck.
    Rps,
    /// Requests per server CPU-second: the load generator's core was busier than the server's.
    RpsPerCpu,
    /// 99th-percentile latency at a fixed rate (lower is better).
    P99,
}

/// A workload's ranking and latency curves.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadSummary {
    /// Workload name.
    pub workload: String,
    /// Connections.
    pub connections: usize,
    /// How variants are ranked.
    pub rank_by: RankBy,
    /// Variants whose load generator's core was busier than their server's (the reason to
    /// rank by server CPU-seconds).
    pub loadgen_bound: Vec<String>,
    /// Latency percentile curves by variant (first run): (percentile, µs).
    pub latency_curves: Vec<(String, Vec<(f64, u64)>)>,
}

/// A target of the suite and whether this run met it.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What is asked.
    pub goal: String,
    /// Measured ratio (or figures).
    pub measured: String,
    /// Met, missed, or not measured (`None`).
    pub met: Option<bool>,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// See [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// When the suite ran (RFC 3339, UTC).
    pub date: String,
    /// Git commit of the tree measured.
    pub commit: Option<String>,
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Server CPUs.
    pub server_cpus: Vec<usize>,
    /// Load-generator CPUs.
    pub loadgen_cpus: Vec<usize>,
    /// Whether servers and load generator were pinned apart.
    pub pinned_apart: bool,
    /// Steal time during the suite, percent of all CPU time.
    pub steal_pct: Option<f64>,
    /// Server cores per variant.
    pub cores: usize,
    /// Measured seconds per run.
    pub duration_s: f64,
    /// Warm-up seconds per run.
    pub warmup_s: f64,
    /// Interleaved runs per pair.
    pub runs: usize,
    /// Versions of the peers measured.
    pub versions: Vec<(String, String)>,
    /// Why syscalls were not counted, when they were not.
    pub syscalls_note: Option<String>,
    /// Pairs whose syscalls could not be counted: (variant, workload, why).
    pub syscalls_failed: Vec<(String, String, String)>,
    /// Per workload: connections, ranking, latency curves.
    pub workloads: Vec<WorkloadSummary>,
    /// One row per variant and workload.
    pub results: Vec<Row>,
    /// The targets, checked.
    pub targets: Vec<Target>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Run metadata the report carries.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// RFC 3339 date.
    pub date: String,
    /// Steal percentage, if read.
    pub steal_pct: Option<f64>,
}

/// Summarises `m` into the report.
pub fn build(
    m: &Measured,
    options: &SuiteOptions,
    placement: &Placement,
    variants: &[&str],
    workloads: &[WorkloadDef],
    info: RunInfo,
) -> Report {
    let mut results = Vec::new();
    let mut summaries = Vec::new();
    for w in workloads {
        let samples_of = |variant: &str| -> Vec<&Sample> {
            m.samples
                .iter()
                .filter(|((v, wl), _)| v == variant && wl == w.name)
                .map(|(_, s)| s)
                .collect()
        };
        // The variants whose load generator was busier than their server: for them req/s
        // measures the load generator.
        let loadgen_bound: Vec<String> = variants
            .iter()
            .filter(|v| {
                let s = samples_of(v);
                let lg = median(s.iter().map(|s| s.loadgen_cpu_pct).collect());
                let srv = median(s.iter().map(|s| s.server_cpu_pct).collect());
                matches!((lg, srv), (Some(lg), Some(srv)) if lg > srv)
            })
            .map(|v| v.to_string())
            .collect();
        let rank_by = match w.traffic {
            super::Traffic::Http {
                rate_per_core: Some(_),
                ..
            } => RankBy::P99,
            _ if !loadgen_bound.is_empty() => RankBy::RpsPerCpu,
            _ => RankBy::Rps,
        };
        let mut rows: Vec<Row> = variants
            .iter()
            .map(|&variant| {
                let s = samples_of(variant);
                let f = |g: fn(&Sample) -> f64| median(s.iter().map(|x| g(x)).collect());
                let skipped = if s.is_empty() {
                    Some(
                        m.skipped
                            .iter()
                            .find(|((v, wl), _)| v == variant && wl == w.name)
                            .map_or_else(|| "not measured".to_owned(), |(_, why)| why.clone()),
                    )
                } else {
                    None
                };
                Row {
                    variant: variant.to_owned(),
                    workload: w.name.to_owned(),
                    rps_median: f(|x| x.rps),
                    rps_min: s.iter().map(|x| x.rps).reduce(f64::min),
                    rps_max: s.iter().map(|x| x.rps).reduce(f64::max),
                    p99_us: f(|x| x.p99_us as f64).map(|v| v as u64),
                    p999_us: f(|x| x.p999_us as f64).map(|v| v as u64),
                    cpu_pct: f(|x| x.server_cpu_pct),
                    loadgen_cpu_pct: f(|x| x.loadgen_cpu_pct),
                    rps_per_cpu: f(|x| {
                        if x.server_cpu_pct > 0.0 {
                            x.rps / (x.server_cpu_pct / 100.0)
                        } else {
                            0.0
                        }
                    }),
                    syscalls_per_req: m
                        .syscalls
                        .iter()
                        .find(|((v, wl), _)| v == variant && wl == w.name)
                        .map(|(_, n)| *n),
                    errors: s.iter().map(|x| x.errors).sum(),
                    runs: s.len(),
                    ratio_to_baseline: None,
                    ratio_min: None,
                    ratio_max: None,
                    figure_min: None,
                    figure_max: None,
                    skipped,
                }
            })
            .collect();
        let figure = |r: &Row| match rank_by {
            RankBy::Rps => r.rps_median,
            RankBy::RpsPerCpu => r.rps_per_cpu,
            RankBy::P99 => r.p99_us.map(|v| v as f64),
        };
        let base = rows.iter().find(|r| r.variant == BASELINE).and_then(figure);
        // The same figure per run, in round order, for the spreads.
        let per_run = |variant: &str| -> Vec<f64> {
            samples_of(variant)
                .iter()
                .map(|x| match rank_by {
                    RankBy::Rps => x.rps,
                    RankBy::RpsPerCpu if x.server_cpu_pct > 0.0 => {
                        x.rps / (x.server_cpu_pct / 100.0)
                    }
                    RankBy::RpsPerCpu => 0.0,
                    RankBy::P99 => x.p99_us as f64,
                })
                .collect()
        };
        let base_runs = per_run(BASELINE);
        for r in &mut rows {
            r.ratio_to_baseline = match (figure(r), base) {
                (Some(v), Some(b)) if b > 0.0 => Some(v / b),
                _ => None,
            };
            let runs = per_run(&r.variant);
            r.figure_min = runs.iter().copied().reduce(f64::min);
            r.figure_max = runs.iter().copied().reduce(f64::max);
            let ratios: Vec<f64> = runs
                .iter()
                .zip(&base_runs)
                .filter(|(_, b)| **b > 0.0)
                .map(|(v, b)| v / b)
                .collect();
            r.ratio_min = ratios.iter().copied().reduce(f64::min);
            r.ratio_max = ratios.iter().copied().reduce(f64::max);
        }
        summaries.push(WorkloadSummary {
            workload: w.name.to_owned(),
            connections: w.connections_per_core * options.cores,
            rank_by,
            loadgen_bound,
            latency_curves: variants
                .iter()
                .filter_map(|v| {
                    samples_of(v)
                        .first()
                        .map(|s| (v.to_string(), s.percentiles.clone()))
                })
                .collect(),
        });
        results.extend(rows);
    }
    let targets = targets(&results, &summaries);
    Report {
        schema_version: SCHEMA_VERSION,
        date: info.date,
        commit: super::sys::git_commit(),
        kernel: super::sys::kernel(),
        cpu: super::sys::cpu_model(),
        server_cpus: placement.server.clone(),
        loadgen_cpus: placement.loadgen.clone(),
        pinned_apart: placement.apart,
        steal_pct: info.steal_pct,
        cores: options.cores,
        duration_s: options.duration.as_secs_f64(),
        warmup_s: options.warmup.as_secs_f64(),
        runs: options.runs,
        versions: peer_versions(),
        syscalls_note: m.syscalls_note.clone(),
        syscalls_failed: m
            .syscalls_failed
            .iter()
            .map(|((v, w), why)| (v.clone(), w.clone(), why.clone()))
            .collect(),
        workloads: summaries,
        results,
        targets,
    }
}

/// Versions of the peers, as locked when the suite was built.
fn peer_versions() -> Vec<(String, String)> {
    let lock = include_str!("../../../Cargo.lock");
    let mut out = Vec::new();
    for name in ["monoio", "glommio", "tokio", "hyper", "io-uring"] {
        let needle = format!("name = \"{name}\"\nversion = \"");
        let versions: Vec<&str> = lock
            .match_indices(&needle)
            .filter_map(|(at, _)| {
                let rest = &lock[at + needle.len()..];
                rest.find('"').map(|end| &rest[..end])
            })
            .collect();
        if !versions.is_empty() {
            out.push((name.to_owned(), versions.join(" and ")));
        }
    }
    out
}

fn targets(rows: &[Row], summaries: &[WorkloadSummary]) -> Vec<Target> {
    let ratio = |variant: &str, workload: &str| {
        rows.iter()
            .find(|r| r.variant == variant && r.workload == workload)
            .and_then(|r| r.ratio_to_baseline)
    };
    let rank = |workload: &str| {
        summaries
            .iter()
            .find(|s| s.workload == workload)
            .map_or(RankBy::Rps, |s| s.rank_by)
    };
    let mut out = Vec::new();
    // coring-uring / peer ≥ want: the peer's ratio to coring-uring ≤ 1/want.
    let mut ahead = |workload: &str, peer: &str, want: f64| {
        let by = match rank(workload) {
            RankBy::RpsPerCpu => "req per server CPU-s",
            RankBy::Rps => "req/s",
            RankBy::P99 => "p99",
        };
        let goal = format!("{workload}: coring-uring ≥ {want:.2}× {peer} ({by})");
        let r = ratio(peer, workload);
        out.push(match r {
            Some(r) if r > 0.0 => Target {
                goal,
                measured: ratio_text(1.0 / r, want),
                met: Some(1.0 / r >= want),
            },
            _ => Target {
                goal,
                measured: "not measured".into(),
                met: None,
            },
        });
    };
    ahead("plaintext", "monoio-uring", 1.15);
    ahead("plaintext", "tokio-hyper", 1.3);
    ahead("plaintext", "raw-uring", 0.9);
    for w in ["echo-64", "echo-4k", "json"] {
        for peer in [
            "monoio-uring",
            "monoio-legacy",
            "glommio",
            "tokio-hyper",
            "raw-uring",
        ] {
            ahead(w, peer, 1.0);
        }
    }
    for w in ["ws-echo-20", "ws-echo-16k"] {
        for peer in ["tokio-tungstenite", "fastwebsockets"] {
            ahead(w, peer, 1.0);
        }
    }
    // TLS: ahead of tokio-rustls everywhere, level with nginx (OpenSSL) on keep-alive.
    for w in ["https", "https-1", "tls-handshakes"] {
        ahead(w, "tokio-hyper", 1.0);
    }
    for w in ["https", "https-1"] {
        ahead(w, "nginx", 1.0);
    }
    // coring-compat ≥ 1.0× monoio-legacy: their ratio to the same baseline compared.
    for w in ["plaintext", "json", "echo-64"] {
        let goal = format!("{w}: coring-compat ≥ 1.00× monoio-legacy");
        out.push(
            match (ratio("coring-compat", w), ratio("monoio-legacy", w)) {
                (Some(c), Some(m)) if m > 0.0 => Target {
                    goal,
                    measured: ratio_text(c / m, 1.0),
                    met: Some(c / m >= 1.0),
                },
                _ => Target {
                    goal,
                    measured: "not measured".into(),
                    met: None,
                },
            },
        );
    }
    // p99 at a fixed rate: coring-uring no worse than the best peer.
    let p99 = |v: &str| {
        rows.iter()
            .find(|r| r.variant == v && r.workload == "latency")
            .and_then(|r| r.p99_us)
    };
    // The raw loop is the ceiling reference, not a peer.
    let best_peer = rows
        .iter()
        .filter(|r| {
            r.workload == "latency" && !r.variant.starts_with("coring") && r.variant != "raw-uring"
        })
        .filter_map(|r| r.p99_us.map(|p| (p, r.variant.clone())))
        .min();
    let goal = "latency: coring-uring p99 ≤ the best peer's p99 at a fixed rate".to_owned();
    out.push(match (p99(BASELINE), best_peer) {
        (Some(c), Some((b, name))) => Target {
            goal,
            measured: format!("{c} µs vs {b} µs ({name})"),
            met: Some(c <= b),
        },
        _ => Target {
            goal,
            measured: "not measured".into(),
            met: None,
        },
    });
    out
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn big(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Some(v) if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Some(v) => format!("{v:.0}"),
    }
}

/// The report as Markdown tables.
pub fn markdown(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# coring bench suite\n");
    let _ = writeln!(
        o,
        "{} · commit {} · kernel {} · {} · server CPUs {:?}, load generator CPUs {:?}{} · \
         {} server core(s) · {} run(s) of {:.1} s (+{:.1} s warm-up) · steal {}\n",
        r.date,
        r.commit.as_deref().unwrap_or("unknown"),
        r.kernel,
        r.cpu,
        r.server_cpus,
        r.loadgen_cpus,
        if r.pinned_apart {
            ""
        } else {
            " (shared: not pinned apart)"
        },
        r.cores,
        r.runs,
        r.duration_s,
        r.warmup_s,
        r.steal_pct
            .map_or_else(|| "unknown".into(), |s| format!("{s:.1}%")),
    );
    let versions: Vec<String> = r.versions.iter().map(|(n, v)| format!("{n} {v}")).collect();
    let _ = writeln!(o, "Peers: {}.\n", versions.join(", "));
    for w in &r.workloads {
        let by = match w.rank_by {
            RankBy::Rps => {
                "ranked by req/s (every server was busier than its load generator)".into()
            }
            RankBy::RpsPerCpu => format!(
                "ranked by req per server CPU-second (the load generator's core was busier than \
                 the server's for {}, whose req/s measure the load generator)",
                w.loadgen_bound.join(", ")
            ),
            RankBy::P99 => "open model at a fixed rate, ranked by p99 (lower is better)".into(),
        };
        let _ = writeln!(
            o,
            "## {} — {} connections, {by}\n",
            w.workload, w.connections
        );
        let _ = writeln!(
            o,
            "| variant | req/s median (min–max) | server CPU | loadgen CPU | req/server CPU-s | ratio to coring-uring (per-round min–max) | p99 | p99.9 | syscalls/req | errors |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|---|");
        for row in r.results.iter().filter(|x| x.workload == w.workload) {
            if let Some(why) = &row.skipped {
                let _ = writeln!(o, "| {} | skipped: {why} |||||||||", row.variant);
                continue;
            }
            let _ = writeln!(
                o,
                "| {} | {} ({}–{}) | {}% | {}% | {} | {} | {} µs | {} µs | {} | {} |",
                row.variant,
                big(row.rps_median),
                big(row.rps_min),
                big(row.rps_max),
                fmt_opt(row.cpu_pct, 0),
                fmt_opt(row.loadgen_cpu_pct, 0),
                big(row.rps_per_cpu),
                match (row.ratio_to_baseline, row.ratio_min, row.ratio_max) {
                    (Some(v), Some(lo), Some(hi)) if row.runs > 1 =>
                        format!("{v:.2}× ({lo:.2}–{hi:.2})"),
                    (Some(v), _, _) => format!("{v:.2}×"),
                    _ => "–".into(),
                },
                row.p99_us.map_or_else(|| "–".into(), |v| v.to_string()),
                row.p999_us.map_or_else(|| "–".into(), |v| v.to_string()),
                fmt_opt(row.syscalls_per_req, 3),
                row.errors
            );
        }
        let _ = writeln!(o);
    }
    if let Some(note) = &r.syscalls_note {
        let _ = writeln!(o, "Syscalls per request: {note}.\n");
    }
    for (variant, workload, why) in &r.syscalls_failed {
        let _ = writeln!(
            o,
            "Syscalls of {variant} on {workload} not counted: {why}.\n"
        );
    }
    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| target | measured | |\n|---|---|---|");
    for t in &r.targets {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**MISSED**",
            None => "not measured",
        };
        let _ = writeln!(o, "| {} | {} | {verdict} |", t.goal, t.measured);
    }
    o
}

fn chart_err(e: impl std::fmt::Display) -> String {
    format!("cannot draw: {e}")
}

/// Throughput bars, one panel per workload (by its ranking figure), as SVG.
pub fn throughput_svg(r: &Report) -> Result<String, String> {
    let panels: Vec<&WorkloadSummary> = r
        .workloads
        .iter()
        .filter(|w| w.rank_by != RankBy::P99)
        .collect();
    let mut out = String::new();
    {
        let height = 300 * panels.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut out, (900, height)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (w, area) in panels.iter().zip(areas.iter()) {
            let rows: Vec<&Row> = r
                .results
                .iter()
                .filter(|x| x.workload == w.workload && x.skipped.is_none())
                .collect();
            let value = |row: &Row| match w.rank_by {
                RankBy::RpsPerCpu => row.rps_per_cpu.unwrap_or(0.0),
                _ => row.rps_median.unwrap_or(0.0),
            };
            let high = |row: &Row| row.figure_max.unwrap_or(value(row)).max(value(row));
            let top = rows.iter().map(|x| high(x)).fold(1.0, f64::max) * 1.15;
            let unit = match w.rank_by {
                RankBy::RpsPerCpu => "req per server CPU-second",
                _ => "req/s",
            };
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{} ({unit})", w.workload), ("sans-serif", 16))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(70)
                .build_cartesian_2d(0.0..rows.len().max(1) as f64, 0.0..top)
                .map_err(chart_err)?;
            let names: Vec<String> = rows.iter().map(|x| x.variant.clone()).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .y_label_formatter(&|v| big(Some(*v)))
                .x_labels(rows.len().max(1) * 2 + 1)
                .x_label_formatter(&|x| {
                    let i = x.floor() as usize;
                    if (x - i as f64 - 0.5).abs() < 0.01 {
                        names.get(i).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .draw()
                .map_err(chart_err)?;
            chart
                .draw_series(rows.iter().enumerate().map(|(i, row)| {
                    let color = if row.variant.starts_with("coring") {
                        BLUE.mix(0.8).filled()
                    } else {
                        BLACK.mix(0.4).filled()
                    };
                    Rectangle::new(
                        [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, value(row))],
                        color,
                    )
                }))
                .map_err(chart_err)?;
            // Whiskers: the lowest and highest run, so overlapping variants show as such.
            chart
                .draw_series(rows.iter().enumerate().filter_map(|(i, row)| {
                    let (lo, hi) = (row.figure_min?, row.figure_max?);
                    let x = i as f64 + 0.5;
                    Some(PathElement::new(
                        vec![
                            (x - 0.1, lo),
                            (x + 0.1, lo),
                            (x, lo),
                            (x, hi),
                            (x - 0.1, hi),
                            (x + 0.1, hi),
                        ],
                        BLACK.stroke_width(2),
                    ))
                }))
                .map_err(chart_err)?;
        }
        root.present().map_err(chart_err)?;
    }
    Ok(out)
}

/// Latency percentile curves per variant for the fixed-rate workload, as SVG.
pub fn latency_svg(r: &Report) -> Result<Option<String>, String> {
    let Some(w) = r.workloads.iter().find(|w| w.rank_by == RankBy::P99) else {
        return Ok(None);
    };
    let spread = |p: f64| 1.0 / (1.0 - (p / 100.0).min(0.999_999));
    let curves: Vec<(String, Vec<(f64, f64)>)> = w
        .latency_curves
        .iter()
        .map(|(v, pts)| {
            (
                v.clone(),
                pts.iter()
                    .map(|&(p, us)| (spread(p), us as f64 / 1000.0))
                    .collect(),
            )
        })
        .collect();
    let x_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(10.0, f64::max);
    let y_max = curves
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1))
        .fold(0.01, f64::max)
        * 1.1;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 500)).into_drawing_area();
        root.fill(&WHITE).map_err(chart_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: latency by percentile at a fixed rate", w.workload),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)
            .map_err(chart_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| {
                let digits = format!("{:.4}", 100.0 * (1.0 - 1.0 / x));
                format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
            })
            .draw()
            .map_err(chart_err)?;
        for (i, (name, points)) in curves.into_iter().enumerate() {
            let color = Palette99::pick(i).stroke_width(2);
            chart
                .draw_series(LineSeries::new(points, color))
                .map_err(chart_err)?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], Palette99::pick(i))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(chart_err)?;
        root.present().map_err(chart_err)?;
    }
    Ok(Some(out))
}

/// The report as one page a browser opens from disk: the tables and targets of `report.md`
/// as HTML tables, and the charts inline.
pub fn html(r: &Report) -> Result<String, String> {
    let mut o = String::from(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>coring suite</title>\n\
         <style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;\
         padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}\
         </style></head><body>\n",
    );
    let mut table: Option<Vec<String>> = None;
    let flush = |rows: &mut Option<Vec<String>>, o: &mut String| {
        if let Some(rows) = rows.take() {
            o.push_str("<table>\n");
            for (i, line) in rows.iter().enumerate() {
                let tag = if i == 0 { "th" } else { "td" };
                o.push_str("<tr>");
                for cell in line.trim().trim_matches('|').split('|') {
                    o.push_str(&format!("<{tag}>{}</{tag}>", escape(cell.trim())));
                }
                o.push_str("</tr>\n");
            }
            o.push_str("</table>\n");
        }
    };
    for line in markdown(r).lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            table.get_or_insert_with(Vec::new).push(line.to_owned());
            continue;
        }
        flush(&mut table, &mut o);
        if let Some(h) = line.strip_prefix("## ") {
            o.push_str(&format!("<h2>{}</h2>\n", escape(h)));
        } else if let Some(h) = line.strip_prefix("# ") {
            o.push_str(&format!("<h1>{}</h1>\n", escape(h)));
        } else if !line.trim().is_empty() {
            o.push_str(&format!("<p>{}</p>\n", escape(line)));
        }
    }
    flush(&mut table, &mut o);
    o.push_str("<h2>Charts</h2>\n");
    o.push_str(&throughput_svg(r)?);
    if let Some(svg) = latency_svg(r)? {
        o.push_str(&svg);
    }
    o.push_str("\n</body></html>\n");
    Ok(o)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('*', "")
}

/// Writes `report.json`, `report.md`, `report.html` and the charts into `dir`.
pub fn write(r: &Report, dir: &Path) -> Result<(), String> {
    let put = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text)
            .map_err(|e| format!("cannot write {}: {e}", dir.join(name).display()))
    };
    put(
        "report.json",
        &serde_json::to_string_pretty(r).map_err(|e| e.to_string())?,
    )?;
    put("report.md", &markdown(r))?;
    put("report.html", &html(r)?)?;
    put("throughput.svg", &throughput_svg(r)?)?;
    if let Some(svg) = latency_svg(r)? {
        put("latency.svg", &svg)?;
    }
    Ok(())
}

/// A ratio to two places, or three when two would print a miss as the target itself.
fn ratio_text(measured: f64, want: f64) -> String {
    if measured < want && format!("{measured:.2}") == format!("{want:.2}") {
        format!("{measured:.3}×")
    } else {
        format!("{measured:.2}×")
    }
}

#[cfg(test)]
mod tests {
    use super::ratio_text;

    #[test]
    fn a_near_miss_is_not_printed_as_the_target() {
        assert_eq!(ratio_text(1.149, 1.15), "1.149×");
        assert_eq!(ratio_text(1.151, 1.15), "1.15×");
        assert_eq!(ratio_text(0.804, 0.9), "0.80×");
    }
}
