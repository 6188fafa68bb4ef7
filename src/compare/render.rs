//! A comparison as Markdown (headline first, so it reads as a GitHub step summary) or JSON.

use super::{Comparison, MetricComparison, Side, Statistic, Verdict};

fn num(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "—".into()
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", x * 100.0)
}

/// "12.30 ± 0.41 (n=10)" for a mean (± the 95% CI's half-width), "12.30 [11.9, 12.8] (n=700)"
/// for a percentile.
fn side(s: &Side, statistic: Statistic) -> String {
    match (statistic, s.ci) {
        (Statistic::Mean, Some((lo, hi))) => {
            format!("{} ± {} (n={})", num(s.value), num((hi - lo) / 2.0), s.n)
        }
        (Statistic::Percentile(_), Some((lo, hi))) => {
            format!("{} [{}, {}] (n={})", num(s.value), num(lo), num(hi), s.n)
        }
        (_, None) => format!("{} (n={})", num(s.value), s.n),
    }
}

/// "2 slower, 1 faster, 9 within noise, 3 INVALID".
pub fn headline(c: &Comparison) -> String {
    let mut parts = vec![
        format!("{} slower", c.counts.slower),
        format!("{} faster", c.counts.faster),
        format!("{} within noise", c.counts.within_noise),
    ];
    if c.counts.unstable > 0 {
        parts.push(format!("{} UNSTABLE", c.counts.unstable));
    }
    if c.counts.invalid > 0 {
        parts.push(format!("{} INVALID", c.counts.invalid));
    }
    parts.join(", ")
}

fn metric_cell(m: &MetricComparison) -> String {
    let arrow = if m.higher_is_better { "↑" } else { "↓" };
    format!("{} {arrow}", m.metric)
}

fn verdict_cell(m: &MetricComparison) -> String {
    match m.verdict {
        Verdict::Slower | Verdict::Faster => format!("**{}**", m.verdict_text()),
        _ => m.verdict_text(),
    }
}

pub fn markdown(c: &Comparison) -> String {
    let mut out = String::new();
    out.push_str(&format!("## minerva compare: {}\n\n", headline(c)));
    if !c.allowed_differences.is_empty() {
        let what: Vec<String> = c.allowed_differences.iter().map(|d| d.headline()).collect();
        out.push_str(&format!(
            "> **Not like for like:** {}.\n\n",
            what.join("; ")
        ));
    }
    if c.jobs.iter().any(|j| j.simulated) {
        out.push_str(
            "> **SIMULATED DATA** in rows marked SIMULATED: figures from the simulated backend, \
             not measurements.\n\n",
        );
    }
    out.push_str(&format!(
        "Base `{}` (run {}, {}) → new `{}` (run {}, {}). A change is `slower` or `faster` when \
         the Mann–Whitney U test is significant at α = {} and the change's whole 95% interval \
         lies beyond ±{}; otherwise `within noise`. UNSTABLE: a side's coefficient of variation \
         is above {}, too spread out for a verdict. Means are ± the 95% confidence interval's \
         half-width; the change's interval is a seeded bootstrap of the ratio of means. ↑ higher \
         is better, ↓ lower is better.\n\n",
        c.base.dir,
        c.base.run_id,
        c.base.started_at,
        c.new.dir,
        c.new.run_id,
        c.new.started_at,
        c.alpha,
        pct(c.threshold).trim_start_matches('+'),
        pct(c.unstable_cv).trim_start_matches('+'),
    ));
    out.push_str("| Job | Metric | Base | New | Change | 95% CI | p | Verdict |\n");
    out.push_str("|---|---|--:|--:|--:|---|--:|---|\n");
    for j in &c.jobs {
        let mut label = j.new.label();
        if j.simulated {
            label.push_str(" **SIMULATED**");
        }
        if !j.differs.is_empty() {
            label.push_str(&format!(" ({})", j.differs.join("; ")));
        }
        for m in &j.metrics {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
                label,
                metric_cell(m),
                side(&m.base, m.statistic),
                side(&m.new, m.statistic),
                m.change.map(pct).unwrap_or_else(|| "—".into()),
                m.change_ci
                    .map(|(lo, hi)| format!("{} … {}", pct(lo), pct(hi)))
                    .unwrap_or_else(|| "—".into()),
                m.p_value
                    .map(|p| format!("{p:.4}"))
                    .unwrap_or_else(|| "—".into()),
                verdict_cell(m),
            ));
        }
    }
    if !c.only_in_base.is_empty() || !c.only_in_new.is_empty() {
        out.push_str("\n### Unmatched jobs\n\n");
        for k in &c.only_in_base {
            out.push_str(&format!("- only in base: {}\n", k.label()));
        }
        for k in &c.only_in_new {
            out.push_str(&format!("- only in new: {}\n", k.label()));
        }
    }
    if !c.allowed_differences.is_empty() || !c.other_differences.is_empty() {
        out.push_str("\n### What differs between the runs\n\n");
        for d in c.allowed_differences.iter().chain(&c.other_differences) {
            out.push_str(&format!(
                "- `{}` ({}): `{}` → `{}`\n",
                d.field,
                d.class.as_str(),
                d.base,
                d.new
            ));
        }
    }
    out
}

pub fn json(c: &Comparison) -> String {
    let mut v = serde_json::to_value(c).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("headline".into(), headline(c).into());
        o.insert("regression".into(), c.has_regression().into());
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}
