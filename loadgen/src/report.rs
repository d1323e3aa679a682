//! What a run measured, as a table for people, JSON for scripts, HdrHistogram percentile text
//! for plotters (the binary draws the SVG chart from it).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::record::Errors;
use crate::run::{Options, Outcome};

/// Version of the JSON layout; raised when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

/// Every figure of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// See [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Workload kind (`http`, `tcp-echo`, `udp-echo`, `ws`, `netcode`).
    pub workload: String,
    /// What was loaded.
    pub target: String,
    /// `closed` or `open`.
    pub model: &'static str,
    /// Open model: the requested rate (requests per second).
    pub rate: Option<f64>,
    /// Connections (sockets) across all cores.
    pub connections: usize,
    /// Load generator cores.
    pub cores: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Engine driver the load generator ran on.
    pub driver: String,
    /// Warm-up excluded from the figures, in seconds.
    pub warmup_s: f64,
    /// Length of the measured period, in seconds.
    pub duration_s: f64,
    /// Responses completed in the measured period.
    pub requests: u64,
    /// Responses per second over the measured period.
    pub rps: f64,
    /// Bytes received in the measured period.
    pub bytes_in: u64,
    /// Bytes received per second.
    pub bytes_in_per_s: f64,
    /// Bytes sent in the measured period.
    pub bytes_out: u64,
    /// Latency summary, in microseconds.
    pub latency_us: LatencySummary,
    /// The full distribution: latency at each percentile step (HdrHistogram's iteration, five
    /// steps per halving of the remaining distance to 100%).
    pub percentiles: Vec<PercentilePoint>,
    /// One entry per second of the measured period.
    pub timeline: Vec<TimelinePoint>,
    /// Errors by kind (`reset`, `timeout`, `connect_refused`, `status_503`, …).
    pub errors: Errors,
    /// Sum of `errors`.
    pub errors_total: u64,
    /// Requests written whose connection failed or closed before the answer came.
    pub dropped: u64,
    /// UDP only: datagram accounting.
    pub datagrams: Option<DatagramSummary>,
}

/// Latency percentiles, mean and spread, in microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LatencySummary {
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: u64,
    /// 75th percentile.
    pub p75: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest.
    pub max: u64,
}

/// One step of the percentile distribution.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PercentilePoint {
    /// Percentile, 0–100.
    pub percentile: f64,
    /// Latency at it, in microseconds.
    pub latency_us: u64,
    /// Responses at or below it.
    pub count: u64,
}

/// One second of the run.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the measured period began.
    pub second: u64,
    /// Responses completed in this second.
    pub rps: u64,
    /// 99th-percentile latency of those responses, in microseconds.
    pub p99_us: u64,
}

/// Datagram accounting of the UDP workload.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct DatagramSummary {
    /// Sent in the measured period.
    pub sent: u64,
    /// Received back.
    pub received: u64,
    /// Never received back.
    pub lost: u64,
    /// `lost` as a percentage of `sent`.
    pub loss_pct: f64,
    /// Received after a datagram sent later.
    pub reordered: u64,
    /// Received more than once.
    pub duplicated: u64,
}

impl Report {
    /// Builds the report of `outcome`.
    pub fn new(workload: &str, target: &str, options: &Options, outcome: &Outcome) -> Report {
        let rec = &outcome.rec;
        let h = &rec.latency;
        let secs = outcome.measured.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let latency_us = if h.is_empty() {
            LatencySummary::default()
        } else {
            LatencySummary {
                min: h.min(),
                mean: h.mean(),
                stdev: h.stdev(),
                p50: h.value_at_quantile(0.50),
                p75: h.value_at_quantile(0.75),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                p9999: h.value_at_quantile(0.9999),
                max: h.max(),
            }
        };
        let percentiles = h
            .iter_quantiles(5)
            .map(|v| PercentilePoint {
                percentile: v.quantile_iterated_to() * 100.0,
                latency_us: v.value_iterated_to(),
                count: v.count_since_last_iteration(),
            })
            .scan(0, |total, mut p| {
                *total += p.count;
                p.count = *total;
                Some(p)
            })
            .collect();
        let timeline = rec
            .timeline
            .iter()
            .enumerate()
            .take(outcome.measured.as_secs_f64().ceil() as usize)
            .map(|(i, s)| TimelinePoint {
                second: i as u64,
                rps: s.requests,
                p99_us: if s.latency.is_empty() {
                    0
                } else {
                    s.latency.value_at_quantile(0.99)
                },
            })
            .collect();
        let datagrams = matches!(workload, "udp-echo" | "netcode").then(|| {
            let d = rec.datagrams;
            let lost = d.sent.saturating_sub(d.received);
            DatagramSummary {
                sent: d.sent,
                received: d.received,
                lost,
                loss_pct: if d.sent > 0 {
                    lost as f64 * 100.0 / d.sent as f64
                } else {
                    0.0
                },
                reordered: d.reordered,
                duplicated: d.duplicated,
            }
        });
        Report {
            schema_version: SCHEMA_VERSION,
            workload: workload.to_owned(),
            target: target.to_owned(),
            model: if options.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            rate: options.rate,
            connections: options.connections,
            cores: options.cores.min(options.connections),
            pipeline: options.pipeline,
            driver: format!("{:?}", outcome.driver).to_lowercase(),
            warmup_s: options.warmup.as_secs_f64(),
            duration_s: secs,
            requests: rec.requests,
            rps: per_sec(rec.requests),
            bytes_in: rec.bytes_in,
            bytes_in_per_s: per_sec(rec.bytes_in),
            bytes_out: rec.bytes_out,
            latency_us,
            percentiles,
            timeline,
            errors_total: rec.errors.values().sum(),
            errors: rec.errors.clone(),
            dropped: rec.dropped,
            datagrams,
        }
    }

    /// The wrk-like table printed at the end of a run.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "{} {} for {:.2}s: {} connections on {} cores, pipeline {}, {} model{} ({} driver)",
            self.workload,
            self.target,
            self.duration_s,
            self.connections,
            self.cores,
            self.pipeline,
            self.model,
            self.rate
                .map(|r| format!(" at {r:.0} req/s"))
                .unwrap_or_default(),
            self.driver
        );
        let _ = writeln!(
            out,
            "  Latency   {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "mean", "stdev", "p50", "p90", "p99", "p99.9", "p99.99", "max"
        );
        let _ = writeln!(
            out,
            "            {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            us(l.mean),
            us(l.stdev),
            us(l.p50 as f64),
            us(l.p90 as f64),
            us(l.p99 as f64),
            us(l.p999 as f64),
            us(l.p9999 as f64),
            us(l.max as f64)
        );
        let _ = writeln!(
            out,
            "  {} requests in {:.2}s, {} read",
            self.requests,
            self.duration_s,
            bytes(self.bytes_in as f64)
        );
        if let Some(d) = &self.datagrams {
            let _ = writeln!(
                out,
                "  Datagrams: {} sent, {} received, {} lost ({:.3}%), {} reordered, {} duplicated",
                d.sent, d.received, d.lost, d.loss_pct, d.reordered, d.duplicated
            );
        }
        if self.errors.is_empty() && self.dropped == 0 {
            let _ = writeln!(out, "  Errors: none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            let _ = writeln!(
                out,
                "  Errors: {} ({}); {} requests dropped with their connection",
                self.errors_total,
                list.join(", "),
                self.dropped
            );
        }
        let _ = writeln!(out, "Requests/sec: {:>12.2}", self.rps);
        let _ = writeln!(out, "Transfer/sec: {:>12}", bytes(self.bytes_in_per_s));
        out
    }
}

/// A latency in microseconds, in the unit that reads best.
fn us(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2}s", v / 1_000_000.0)
    } else if v >= 1_000.0 {
        format!("{:.2}ms", v / 1_000.0)
    } else {
        format!("{v:.0}us")
    }
}

fn bytes(v: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.2}{}", UNITS[unit])
}

/// Sub-buckets per bucket of a histogram with `sigfig` significant digits, as HdrHistogram
/// counts them.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest_single_unit = 2 * 10u64.pow(u32::from(sigfig));
    largest_single_unit.next_power_of_two()
}

/// The percentile distribution in HdrHistogram's text format (values in milliseconds), as
/// `HistogramLogProcessor`, wrk2 and the HdrHistogram plotter read it.
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let value = v.value_iterated_to() as f64 / 1000.0;
        if q < 1.0 {
            let _ = writeln!(
                out,
                "{value:>12.3} {q:>2.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - q)
            );
        } else {
            let _ = writeln!(out, "{value:>12.3} {q:>2.12} {total:>10}");
        }
    }
    let mean = if h.is_empty() { 0.0 } else { h.mean() / 1000.0 };
    let stdev = if h.is_empty() {
        0.0
    } else {
        h.stdev() / 1000.0
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.3}, StdDeviation   = {stdev:>12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {:>12.3}, Total count    = {:>12}]",
        h.max() as f64 / 1000.0,
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    out
}
