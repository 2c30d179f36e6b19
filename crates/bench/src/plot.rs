//! SVG plots of a serving run: KV utilization over time, throughput against request rate,
//! and end-to-end latency CDFs, one line per policy.

use crate::report::PolicyReport;
use plotters::prelude::*;
use std::path::Path;

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// A named line: `(x, y)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// Draws `series` as lines into an SVG file at `path` (axes from 0).
pub fn line_chart(
    path: &Path,
    title: &str,
    x: &str,
    y: &str,
    series: &[Series],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x1, mut y1) = (f64::MIN_POSITIVE, f64::MIN_POSITIVE);
    for &(a, b) in pts {
        x1 = x1.max(a);
        y1 = y1.max(b);
    }
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x1 * 1.02, 0.0..y1 * 1.05)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(x)
        .y_desc(y)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Writes `kv_utilization.svg` and `latency_cdf.svg` for one run, and
/// `throughput_vs_rate.svg` when several rates were run.
pub fn write_plots(dir: &Path, runs: &[(Option<f64>, Vec<PolicyReport>)]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let first = &runs[0].1;
    let util: Vec<Series> = first
        .iter()
        .map(|r| {
            (
                r.policy.clone(),
                r.timeline.iter().map(|&(t, u, _)| (t, 100.0 * u)).collect(),
            )
        })
        .collect();
    line_chart(
        &dir.join("kv_utilization.svg"),
        "KV utilization (tokens stored / slots held)",
        "time (s)",
        "%",
        &util,
    )?;
    let cdf: Vec<Series> = first
        .iter()
        .map(|r| {
            let n = r.e2e_s.len().max(1) as f64;
            (
                r.policy.clone(),
                r.e2e_s
                    .iter()
                    .enumerate()
                    .map(|(i, &e)| (e, (i + 1) as f64 / n))
                    .collect(),
            )
        })
        .collect();
    line_chart(
        &dir.join("latency_cdf.svg"),
        "End-to-end latency CDF",
        "seconds",
        "share of requests",
        &cdf,
    )?;
    if runs.len() > 1 {
        // One line per policy of `metric` against the request rate of each run.
        let by_rate = |metric: fn(&PolicyReport) -> f64| -> Vec<Series> {
            first
                .iter()
                .map(|p| {
                    let pts = runs
                        .iter()
                        .filter_map(|(rate, rs)| {
                            let r = rs.iter().find(|r| r.policy == p.policy)?;
                            Some((rate.filter(|x| x.is_finite())?, metric(r)))
                        })
                        .collect();
                    (p.policy.clone(), pts)
                })
                .collect()
        };
        line_chart(
            &dir.join("throughput_vs_rate.svg"),
            "Output throughput vs request rate",
            "requests/s",
            "output tokens/s",
            &by_rate(|r| r.output_tokens_per_s),
        )?;
        line_chart(
            &dir.join("normalized_latency_vs_rate.svg"),
            "Normalized latency vs request rate",
            "requests/s",
            "s / output token",
            &by_rate(|r| r.normalized_latency_s),
        )?;
    }
    Ok(())
}
