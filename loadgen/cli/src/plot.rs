//! The `--plot` chart: latency by percentile (log-scaled percentile axis, as HdrHistogram plots
//! draw it) above throughput over time.

use plotters::prelude::*;

use coring_loadgen::report::Report;

/// Renders `report` as an SVG document.
pub fn svg(report: &Report) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (900, 760)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, bottom) = root.split_vertically(430);
        latency_chart(&top, report)?;
        throughput_chart(&bottom, report)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn err(e: impl std::fmt::Display) -> String {
    format!("cannot draw the chart: {e}")
}

/// `1/(1-q)`, the x position of percentile `q`: 90% at 10, 99% at 100, 99.9% at 1000.
fn spread(percentile: f64) -> f64 {
    1.0 / (1.0 - (percentile / 100.0).min(0.999_999))
}

fn latency_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> Result<(), String> {
    let points: Vec<(f64, f64)> = report
        .percentiles
        .iter()
        .map(|p| (spread(p.percentile), p.latency_us as f64 / 1000.0))
        .collect();
    let x_max = points.last().map_or(10.0, |p| p.0).max(10.0);
    let y_max = points.iter().map(|p| p.1).fold(0.001, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Latency by percentile — {} {}",
                report.workload, report.target
            ),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((1.0..x_max).log_scale(), 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 1.0 / x);
            let digits = format!("{p:.4}");
            format!("{}%", digits.trim_end_matches('0').trim_end_matches('.'))
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))
        .map_err(err)?;
    Ok(())
}

fn throughput_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    report: &Report,
) -> Result<(), String> {
    let points: Vec<(f64, f64)> = report
        .timeline
        .iter()
        .map(|t| (t.second as f64 + 0.5, t.rps as f64))
        .collect();
    let x_max = (report.timeline.len() as f64).max(1.0);
    let y_max = points.iter().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption("Throughput over time", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("second")
        .y_desc("requests/s")
        .y_label_formatter(&|v| {
            if *v >= 1e6 {
                format!("{:.2}M", v / 1e6)
            } else if *v >= 1e3 {
                format!("{:.0}k", v / 1e3)
            } else {
                format!("{v:.0}")
            }
        })
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(points, RED.stroke_width(2)))
        .map_err(err)?;
    Ok(())
}
