//! The report's plots: self-contained SVG files (plotters' SVG backend: no fonts, scripts or
//! links; text is left to the viewer's sans-serif), drawn from the stored samples and their
//! analysis only, so `minerva report` draws the same bytes again.
//!
//! - throughput per job (generation, prompt processing): the mean with its 95% interval;
//! - TTFT and inter-token latency: the empirical CDF of each job;
//! - server loads: latency against achieved throughput, one point per load step.

use crate::analyze::{Analysis, JobSummary, Metric};
use crate::results::Sample;
use plotters::prelude::*;
use std::collections::BTreeMap;

/// One plot: its file name under `plots/`, its title (the image's alt text), its SVG.
#[derive(Debug, Clone, PartialEq)]
pub struct Plot {
    pub file: String,
    pub title: String,
    pub svg: String,
}

/// Points of a CDF line at most (a long run's quantiles, evenly spaced in probability).
const CDF_POINTS: usize = 400;
const WIDTH: u32 = 900;

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A job as one line of a legend or an axis: scenario, backend, model, params.
fn label(j: &JobSummary, with_scenario: bool) -> String {
    let mut s = if with_scenario {
        format!("{} · {} {}", j.scenario, j.backend, j.model)
    } else {
        format!("{} {}", j.backend, j.model)
    };
    if !j.params.is_empty() {
        s.push(' ');
        s.push_str(&j.params);
    }
    if j.simulated {
        s.push_str(" SIMULATED");
    }
    if s.chars().count() > 70 {
        s = s.chars().take(69).collect::<String>() + "…";
    }
    s
}

/// Every plot the run's samples support, in the order the report shows them; jobs in the
/// order of `scenarios` (the pipeline's), then as the analysis lists them.
pub fn plots(analysis: &Analysis, samples: &[Sample], scenarios: &[String]) -> Vec<Plot> {
    let mut out = Vec::new();
    let rank = |j: &JobSummary| {
        scenarios
            .iter()
            .position(|s| *s == j.scenario)
            .unwrap_or(usize::MAX)
    };
    let mut ordered: Vec<&JobSummary> = analysis.jobs.iter().collect();
    ordered.sort_by_key(|j| rank(j));
    let in_process: Vec<&JobSummary> = ordered
        .iter()
        .copied()
        .filter(|j| j.load.is_empty())
        .collect();
    // A colour per engine leg (backend, model, params), the same in every plot and panel.
    let mut legs: Vec<String> = Vec::new();
    for j in &ordered {
        let l = label(j, false);
        if !legs.contains(&l) {
            legs.push(l);
        }
    }
    for (metric, file, title) in [
        (
            Metric::TgTps,
            "tg_tps.svg",
            "Generation throughput (tokens/s, mean and 95% CI)",
        ),
        (
            Metric::PpTps,
            "pp_tps.svg",
            "Prompt processing throughput (tokens/s, mean and 95% CI)",
        ),
    ] {
        let rows: Vec<Bar> = in_process
            .iter()
            .filter_map(|j| {
                let m = j.metrics.get(&metric)?;
                let (lo, hi) = match (m.ci95_low, m.ci95_high) {
                    (Some(lo), Some(hi)) => (lo, hi),
                    _ => (m.mean, m.mean),
                };
                let leg = legs.iter().position(|l| *l == label(j, false)).unwrap_or(0);
                Some(Bar {
                    label: label(j, true),
                    leg,
                    low: lo.max(0.0),
                    mean: m.mean,
                    high: hi,
                })
            })
            .collect();
        if rows.is_empty() {
            continue;
        }
        let axis = match metric {
            Metric::TgTps => "generated tokens/s",
            _ => "prompt tokens/s",
        };
        if let Ok(svg) = throughput_svg(title, axis, &rows) {
            out.push(Plot {
                file: file.into(),
                title: title.into(),
                svg,
            });
        }
    }
    let by_job = |f: &dyn Fn(&Sample) -> Vec<f64>| -> Vec<CdfSeries> {
        ordered
            .iter()
            .filter_map(|j| {
                let mut v: Vec<f64> = samples
                    .iter()
                    .filter(|s| s.job_id == j.job_id && !s.warmup && s.error.is_none())
                    .flat_map(f)
                    .filter(|x| x.is_finite())
                    .collect();
                v.sort_by(f64::total_cmp);
                let leg = legs.iter().position(|l| *l == label(j, false)).unwrap_or(0);
                (!v.is_empty()).then(|| CdfSeries {
                    scenario: j.scenario.clone(),
                    leg,
                    values: v,
                })
            })
            .collect()
    };
    for (file, title, axis, series) in [
        (
            "ttft_cdf.svg",
            "Time to first token (CDF per scenario)",
            "TTFT (ms)",
            by_job(&|s: &Sample| s.ttft_ms.map(|m| m.0).into_iter().collect()),
        ),
        (
            "itl_cdf.svg",
            "Inter-token latency (CDF per scenario)",
            "gap between consecutive tokens (ms)",
            by_job(&|s: &Sample| s.token_ms.windows(2).map(|w| w[1].0 - w[0].0).collect()),
        ),
    ] {
        if series.is_empty() {
            continue;
        }
        if let Ok(svg) = cdf_panels_svg(title, axis, &series, &legs) {
            out.push(Plot {
                file: file.into(),
                title: title.into(),
                svg,
            });
        }
    }
    let curves = load_curves(analysis, samples);
    if !curves.is_empty() {
        let title = "Server: TTFT p50 against completed requests/s (one point per load step, in order of offered load)";
        if let Ok(svg) = latency_throughput_svg(title, &curves) {
            out.push(Plot {
                file: "latency_throughput.svg".into(),
                title: title.into(),
                svg,
            });
        }
    }
    out
}

/// Per server series (a job's backend, model, scenario and params but its `load`): (achieved
/// req/s, TTFT p50 ms) per load step, in the order of the offered load (concurrency or target
/// rate, else step). A load written as a list is one job per step: joined into one curve.
fn load_curves(analysis: &Analysis, samples: &[Sample]) -> Vec<(String, Vec<(f64, f64)>)> {
    // (series key, legend name, (offered load, req/s, TTFT p50 ms) per step)
    type Series = (String, String, Vec<(f64, f64, f64)>);
    let mut series: Vec<Series> = Vec::new();
    for j in analysis.jobs.iter().filter(|j| !j.load.is_empty()) {
        let mut ttft: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
        let mut params = None;
        for s in samples
            .iter()
            .filter(|s| s.job_id == j.job_id && !s.warmup && s.error.is_none())
        {
            params.get_or_insert_with(|| {
                let mut p = s.params.clone();
                p.remove("load");
                p
            });
            if let (Some(r), Some(t)) = (&s.request, s.ttft_ms) {
                ttft.entry(r.step).or_default().push(t.0);
            }
        }
        let params = params.unwrap_or_default();
        let key = format!(
            "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
            j.job_id.split('/').next().unwrap_or_default(),
            j.backend,
            j.model,
            j.scenario,
            serde_json::to_string(&params).unwrap_or_default()
        );
        let mut name = format!("{} · {} {}", j.scenario, j.backend, j.model);
        if j.simulated {
            name.push_str(" SIMULATED");
        }
        let points: Vec<(f64, f64, f64)> = j
            .load
            .iter()
            .filter_map(|step| {
                let mut v = ttft.get(&step.step)?.clone();
                v.sort_by(f64::total_cmp);
                let offered = step
                    .concurrency
                    .map(f64::from)
                    .or(step.target_rps)
                    .unwrap_or(f64::from(step.step));
                Some((offered, step.achieved_rps, quantile(&v, 0.5)))
            })
            .filter(|(_, x, y)| x.is_finite() && y.is_finite())
            .collect();
        match series.iter_mut().find(|(k, _, _)| *k == key) {
            Some((_, _, v)) => v.extend(points),
            None if !points.is_empty() => series.push((key, name, points)),
            None => {}
        }
    }
    series
        .into_iter()
        .map(|(_, name, mut pts)| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, pts.into_iter().map(|(_, x, y)| (x, y)).collect())
        })
        .collect()
}

/// The q-quantile of sorted values (linear interpolation).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    match sorted.get(i + 1) {
        Some(next) => sorted[i] + (next - sorted[i]) * frac,
        None => sorted[i],
    }
}

/// A color per series, stable across renders.
fn color(i: usize) -> RGBColor {
    const COLORS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
    ];
    COLORS[i % COLORS.len()]
}

/// Horizontal bars (mean) with 95% CI error bars, one row per job, top to bottom.
fn throughput_svg(title: &str, axis: &str, rows: &[Bar]) -> Result<String, String> {
    let n = rows.len();
    let longest = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(10);
    let label_px = (longest as f64 * 6.2) as u32 + 16;
    let height = 110 + 26 * n as u32;
    let x_max = rows
        .iter()
        .map(|r| r.high.max(r.mean))
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.08;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH + label_px, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(label_px)
            .build_cartesian_2d(0.0..x_max, -0.5..(n as f64 - 0.5))
            .map_err(err)?;
        // Row i (top to bottom) sits at y = n - 1 - i; the axis labels only the integers.
        let at = |i: usize| (n - 1 - i) as f64;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(WHITE)
            .y_labels(n)
            .y_label_style(("sans-serif", 11))
            .x_label_style(("sans-serif", 11))
            .axis_desc_style(("sans-serif", 12))
            .y_label_formatter(&|y| {
                let k = y.round();
                if (y - k).abs() > 1e-6 || k < 0.0 || k >= n as f64 {
                    return String::new();
                }
                rows[n - 1 - k as usize].label.clone()
            })
            .x_desc(axis)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                Rectangle::new(
                    [(0.0, at(i) - 0.3), (r.mean, at(i) + 0.3)],
                    color(r.leg).mix(0.45).filled(),
                )
            }))
            .map_err(err)?;
        chart
            .draw_series(rows.iter().enumerate().map(|(i, r)| {
                ErrorBar::new_horizontal(at(i), r.low, r.mean, r.high, BLACK.stroke_width(1), 10)
            }))
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One job's sorted values, its scenario and its engine leg (colour).
struct CdfSeries {
    scenario: String,
    leg: usize,
    values: Vec<f64>,
}

/// One row of a throughput plot.
struct Bar {
    label: String,
    /// Colour: the job's engine leg.
    leg: usize,
    low: f64,
    mean: f64,
    high: f64,
}

/// The empirical CDF of each job as step lines, a panel per scenario (each with its own x
/// range: scenarios differ by orders of magnitude), a colour per engine leg, one legend.
fn cdf_panels_svg(
    title: &str,
    axis: &str,
    series: &[CdfSeries],
    legs: &[String],
) -> Result<String, String> {
    let mut scenarios: Vec<&str> = Vec::new();
    for s in series {
        if !scenarios.contains(&s.scenario.as_str()) {
            scenarios.push(&s.scenario);
        }
    }
    let used: Vec<usize> = (0..legs.len())
        .filter(|l| series.iter().any(|s| s.leg == *l))
        .collect();
    let cols = if scenarios.len() > 1 { 2 } else { 1 };
    let rows = scenarios.len().div_ceil(cols);
    let panel_h = 300u32;
    let top = 40u32;
    let height = top + panel_h * rows as u32 + 12 + 18 * used.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (head, rest) = root.split_vertically(top);
        head.draw(&Text::new(
            title.to_string(),
            (WIDTH as i32 / 2 - (title.len() as i32 * 4), 12),
            ("sans-serif", 16),
        ))
        .map_err(err)?;
        let (grid, legend_area) = rest.split_vertically(panel_h * rows as u32);
        let panels = grid.split_evenly((rows, cols));
        for (panel, scenario) in panels.iter().zip(&scenarios) {
            let mine: Vec<&CdfSeries> = series.iter().filter(|s| s.scenario == *scenario).collect();
            let hi = mine
                .iter()
                .filter_map(|s| s.values.last().copied())
                .fold(f64::MIN, f64::max);
            let lo = mine
                .iter()
                .filter_map(|s| s.values.first().copied())
                .fold(f64::MAX, f64::min);
            let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.01).max(1e-6);
            let mut chart = ChartBuilder::on(panel)
                .caption(*scenario, ("sans-serif", 13))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(44)
                .build_cartesian_2d((lo - pad).max(0.0)..hi + pad, 0.0..1.0)
                .map_err(err)?;
            chart
                .configure_mesh()
                .light_line_style(WHITE)
                .label_style(("sans-serif", 10))
                .axis_desc_style(("sans-serif", 11))
                .x_desc(axis)
                .y_desc("fraction ≤ x")
                .x_labels(6)
                .y_labels(6)
                .x_label_formatter(&|x| format_ms(*x))
                .y_label_formatter(&|y| format!("{y:.1}"))
                .draw()
                .map_err(err)?;
            for s in &mine {
                chart
                    .draw_series(LineSeries::new(
                        cdf_points(&s.values),
                        color(s.leg).stroke_width(2),
                    ))
                    .map_err(err)?;
            }
        }
        draw_legend(&legend_area, used.iter().map(|l| (*l, legs[*l].as_str())))?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// One axis of a line chart: what it measures, its range, how its labels read.
struct Axis<'a> {
    desc: &'a str,
    range: std::ops::Range<f64>,
    format: fn(f64) -> String,
}

/// Lines (with a dot at each point when `dots`) on two numeric axes, a legend below.
fn lines_svg(
    title: &str,
    x: Axis<'_>,
    y: Axis<'_>,
    series: &[(String, Vec<(f64, f64)>)],
    dots: bool,
) -> Result<String, String> {
    let height = 420 + 18 * series.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (plot_area, legend_area) = root.split_vertically(400);
        let mut chart = ChartBuilder::on(&plot_area)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(60)
            .build_cartesian_2d(x.range.clone(), y.range.clone())
            .map_err(err)?;
        chart
            .configure_mesh()
            .light_line_style(WHITE)
            .label_style(("sans-serif", 11))
            .axis_desc_style(("sans-serif", 12))
            .x_desc(x.desc)
            .y_desc(y.desc)
            .x_label_formatter(&|v| (x.format)(*v))
            .y_label_formatter(&|v| (y.format)(*v))
            .draw()
            .map_err(err)?;
        for (i, (_, pts)) in series.iter().enumerate() {
            chart
                .draw_series(LineSeries::new(
                    pts.iter().copied(),
                    color(i).stroke_width(2),
                ))
                .map_err(err)?;
            if dots {
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 4, color(i).filled())))
                    .map_err(err)?;
            }
        }
        draw_legend(
            &legend_area,
            series.iter().enumerate().map(|(i, (n, _))| (i, n.as_str())),
        )?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A legend below the plot: a colour swatch and the series' name per line.
fn draw_legend<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: impl Iterator<Item = (usize, &'a str)>,
) -> DrawResult {
    for (row, (c, name)) in entries.enumerate() {
        let y = 6 + 18 * row as i32;
        area.draw(&Rectangle::new(
            [(70, y + 3), (90, y + 11)],
            color(c).filled(),
        ))
        .map_err(|e| e.to_string())?;
        area.draw(&Text::new(name.to_string(), (98, y), ("sans-serif", 12)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn format_ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The steps of an empirical CDF over sorted values, at most [`CDF_POINTS`] of them.
fn cdf_points(sorted: &[f64]) -> Vec<(f64, f64)> {
    let n = sorted.len();
    let picks: Vec<usize> = if n <= CDF_POINTS {
        (0..n).collect()
    } else {
        (0..CDF_POINTS)
            .map(|k| k * (n - 1) / (CDF_POINTS - 1))
            .collect()
    };
    let mut pts = Vec::with_capacity(picks.len() * 2);
    let mut prev = 0.0;
    for i in picks {
        let x = sorted[i];
        let y = (i + 1) as f64 / n as f64;
        pts.push((x, prev));
        pts.push((x, y));
        prev = y;
    }
    pts
}

/// Latency against throughput: one line per server series, a point per load step.
fn latency_throughput_svg(
    title: &str,
    curves: &[(String, Vec<(f64, f64)>)],
) -> Result<String, String> {
    let max = |pick: fn(&(f64, f64)) -> f64| {
        curves
            .iter()
            .flat_map(|(_, p)| p.iter().map(pick))
            .fold(0.0, f64::max)
            .max(1e-9)
            * 1.1
    };
    lines_svg(
        title,
        Axis {
            desc: "completed requests/s",
            range: 0.0..max(|q| q.0),
            format: |x| format!("{x:.1}"),
        },
        Axis {
            desc: "TTFT p50 (ms)",
            range: 0.0..max(|q| q.1),
            format: format_ms,
        },
        curves,
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_steps_end_at_one_and_are_bounded() {
        let v: Vec<f64> = (0..10_000).map(f64::from).collect();
        let p = cdf_points(&v);
        assert_eq!(p.len(), 2 * CDF_POINTS);
        assert_eq!(p.last(), Some(&(9999.0, 1.0)));
        assert!(p.windows(2).all(|w| w[1].1 >= w[0].1 && w[1].0 >= w[0].0));
        assert_eq!(
            cdf_points(&[1.0, 2.0]),
            vec![(1.0, 0.0), (1.0, 0.5), (2.0, 0.5), (2.0, 1.0)]
        );
    }

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(quantile(&[7.0], 0.5), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn a_throughput_plot_is_self_contained_svg_with_escaped_labels() {
        let bar = |label: &str, low, mean, high| Bar {
            label: label.into(),
            leg: 0,
            low,
            mean,
            high,
        };
        let svg = throughput_svg(
            "t",
            "tokens/s",
            &[
                bar("short · llama_cpp m threads=1 <&>", 90.0, 100.0, 110.0),
                bar("short · candle m", 40.0, 50.0, 60.0),
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("&lt;&amp;&gt;"), "labels are escaped");
        assert!(!svg.contains("href") && !svg.contains("<script"));
        // Two error bars: each a horizontal line with two end marks, and a dot.
        assert_eq!(svg.matches("<circle").count(), 2);
        let one = throughput_svg("t", "x", &[bar("only", 1.0, 2.0, 3.0)]).unwrap();
        assert_eq!(one.matches("<circle").count(), 1);
        assert!(one.contains("\nonly\n</text>"), "{one}");
    }
}
