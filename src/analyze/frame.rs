//! The polars side: samples → a frame → grouped statistics → [`Analysis`], and the summary
//! frame written as parquet and CSV.

use super::{warnings, Analysis, JobSummary, Metric, MetricStats, MAD_Z};
use crate::plan::param_string;
use crate::results::{atomic_write, Sample};
use polars::prelude::*;
use statrs::distribution::{ContinuousCDF, StudentsT};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error("analysis failed: {0}")]
    Polars(#[from] PolarsError),
    #[error(transparent)]
    Store(#[from] crate::results::StoreError),
}

/// The per-sample metrics, in column order (shared with samples.parquet).
const PER_SAMPLE: [Metric; 9] = super::SAMPLE_METRICS;

/// A sample whose figures do not count: a failed repetition or a failed server request.
pub(crate) fn is_failed(s: &Sample) -> bool {
    s.error.is_some() || s.request.as_ref().is_some_and(|r| r.failure.is_some())
}

pub(crate) fn metric_value(s: &Sample, m: Metric) -> Option<f64> {
    if is_failed(s) {
        return None;
    }
    match m {
        Metric::PpTps => s.pp_tps,
        Metric::TgTps => s.tg_tps,
        Metric::TtftMs => s.ttft_ms.map(|v| v.0),
        Metric::TpotMs => s.tpot_ms(),
        Metric::E2eMs => s.e2e_ms.map(|v| v.0),
        Metric::LoadMs => s.load_ms.map(|v| v.0),
        Metric::PeakRssMb => s
            .peak_rss_bytes
            .filter(|b| *b > 0)
            .map(|b| b as f64 / (1024.0 * 1024.0)),
        Metric::TokenizeMs => s.tokenize_ms.map(|v| v.0),
        Metric::SampleMs => s.sample_ms.map(|v| v.0),
        Metric::ItlMs => None,
    }
    .filter(|v| v.is_finite())
}

/// Identity of a job, kept once per job rather than once per row.
struct JobInfo {
    job_id: String,
    backend: String,
    model: String,
    scenario: String,
    params: String,
    simulated: bool,
}

/// Column builders filled one sample at a time, so a million samples never sit in memory as
/// structs: one row per measured sample, and one row per inter-token gap.
#[derive(Default)]
struct Builder {
    jobs: Vec<JobInfo>,
    index: std::collections::HashMap<String, u32>,
    job: Vec<u32>,
    rep: Vec<u32>,
    failed: Vec<u32>,
    metrics: Vec<Vec<Option<f64>>>,
    itl_job: Vec<u32>,
    itl: Vec<f64>,
    /// Load-step summaries of server benchmarks, by job id.
    loads: BTreeMap<String, Vec<crate::results::LoadSummary>>,
    /// Successful requests' (input, output) lengths, by job id.
    lengths: BTreeMap<String, (Vec<u64>, Vec<u64>)>,
}

impl Builder {
    fn push(&mut self, s: &Sample) {
        if s.warmup {
            return;
        }
        if let Some(l) = &s.load {
            self.loads
                .entry(s.job_id.clone())
                .or_default()
                .push(l.clone());
            return;
        }
        let idx = match self.index.get(&s.job_id) {
            Some(i) => *i,
            None => {
                let i = self.jobs.len() as u32;
                self.jobs.push(JobInfo {
                    job_id: s.job_id.clone(),
                    backend: s.backend.clone(),
                    model: s.model.clone(),
                    scenario: s.scenario.clone(),
                    params: param_string(&s.params),
                    simulated: s.simulated,
                });
                self.index.insert(s.job_id.clone(), i);
                i
            }
        };
        if self.metrics.is_empty() {
            self.metrics = vec![Vec::new(); PER_SAMPLE.len()];
        }
        self.job.push(idx);
        self.rep.push(s.rep);
        self.failed.push(u32::from(is_failed(s)));
        if s.request.is_some() && !is_failed(s) {
            let l = self.lengths.entry(s.job_id.clone()).or_default();
            l.0.extend(s.prompt_tokens);
            l.1.extend(s.output_tokens);
        }
        for (col, m) in self.metrics.iter_mut().zip(PER_SAMPLE) {
            col.push(metric_value(s, m));
        }
        if !is_failed(s) {
            for gap in s.itl_ms() {
                self.itl_job.push(idx);
                self.itl.push(gap);
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn finish(
        mut self,
    ) -> PolarsResult<(
        Vec<JobInfo>,
        DataFrame,
        DataFrame,
        BTreeMap<String, Vec<crate::results::LoadSummary>>,
        BTreeMap<String, (Vec<u64>, Vec<u64>)>,
    )> {
        let n = self.job.len();
        if self.metrics.is_empty() {
            self.metrics = vec![Vec::new(); PER_SAMPLE.len()];
        }
        let mut cols = vec![
            Column::new("job".into(), self.job),
            Column::new("rep".into(), self.rep),
            Column::new("failed".into(), self.failed),
        ];
        for (values, m) in self.metrics.into_iter().zip(PER_SAMPLE) {
            cols.push(Column::new(m.column().into(), values));
        }
        let df = DataFrame::new(n, cols)?;
        let itl_df = DataFrame::new(
            self.itl.len(),
            vec![
                Column::new("job".into(), self.itl_job),
                Column::new("itl_ms".into(), self.itl),
            ],
        )?;
        Ok((self.jobs, df, itl_df, self.loads, self.lengths))
    }
}

/// Aggregations for one metric column, named `<metric>__<stat>`. Outliers and the first run
/// are judged only where a warning can come of them (`judged`): each costs sorts per group.
fn stat_exprs(name: &str, judged: bool) -> Vec<Expr> {
    let c = || col(name);
    let med = || c().median();
    let mut v = vec![
        c().count()
            .cast(DataType::UInt64)
            .alias(format!("{name}__n")),
        c().mean().alias(format!("{name}__mean")),
        // Linear p50 is the median; it is not computed twice.
        med().alias(format!("{name}__median")),
        c().std(1).alias(format!("{name}__std")),
        c().min().alias(format!("{name}__min")),
        c().max().alias(format!("{name}__max")),
        c().quantile(lit(0.9), QuantileMethod::Linear)
            .alias(format!("{name}__p90")),
        c().quantile(lit(0.95), QuantileMethod::Linear)
            .alias(format!("{name}__p95")),
        c().quantile(lit(0.99), QuantileMethod::Linear)
            .alias(format!("{name}__p99")),
    ];
    if judged {
        // |x − median|, without polars' `abs` feature.
        let dev = || {
            let d = c() - med();
            when(d.clone().lt(lit(0.0)))
                .then(lit(0.0) - d.clone())
                .otherwise(d)
        };
        let mad = || dev().median();
        // Modified z-score 0.6745·|x − median| / MAD > 3.5; no outliers when MAD is 0.
        v.push(
            ((lit(0.6745) * dev())
                .gt(lit(MAD_Z) * mad())
                .and(mad().gt(lit(0.0))))
            .cast(DataType::UInt64)
            .sum()
            .alias(format!("{name}__outliers")),
        );
        // The value of the lowest measured repetition (O(n), no sort).
        v.push(
            c().filter(col("rep").eq(col("rep").min()))
                .drop_nulls()
                .first()
                .alias(format!("{name}__first")),
        );
    }
    v
}

fn get_f64(df: &DataFrame, name: &str, row: usize) -> Option<f64> {
    let col = df.column(name).ok()?;
    let v = col.get(row).ok()?;
    match v {
        AnyValue::Float64(x) => Some(x),
        AnyValue::Float32(x) => Some(f64::from(x)),
        AnyValue::UInt64(x) => Some(x as f64),
        AnyValue::UInt32(x) => Some(f64::from(x)),
        AnyValue::Int64(x) => Some(x as f64),
        AnyValue::Int32(x) => Some(f64::from(x)),
        _ => None,
    }
    .filter(|x| x.is_finite())
}

fn metric_stats(df: &DataFrame, prefix: &str, row: usize) -> Option<MetricStats> {
    let g = |stat: &str| get_f64(df, &format!("{prefix}__{stat}"), row);
    let n = g("n")? as u64;
    if n == 0 {
        return None;
    }
    let mean = g("mean")?;
    let std = if n >= 2 { g("std") } else { None };
    let (ci_lo, ci_hi) = match std {
        Some(sd) if n >= 2 => {
            let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
                .map(|d| d.inverse_cdf(0.975))
                .unwrap_or(f64::NAN);
            let half = t * sd / (n as f64).sqrt();
            (Some(mean - half), Some(mean + half))
        }
        _ => (None, None),
    };
    Some(MetricStats {
        n,
        mean,
        median: g("median")?,
        std,
        cv: std
            .filter(|_| mean.abs() > f64::EPSILON)
            .map(|sd| sd / mean.abs()),
        min: g("min")?,
        max: g("max")?,
        p50: g("median")?,
        p90: g("p90")?,
        p95: g("p95")?,
        p99: g("p99")?,
        ci95_low: ci_lo.filter(|x| x.is_finite()),
        ci95_high: ci_hi.filter(|x| x.is_finite()),
        outliers: g("outliers").unwrap_or(0.0) as u64,
        first: g("first"),
    })
}

/// Statistics per job, sorted by job id, and the warnings they raise. Takes samples one at a
/// time (warmups are skipped), so callers can stream them from disk.
pub fn analyze<I, S>(samples: I) -> Result<Analysis, AnalyzeError>
where
    I: IntoIterator<Item = S>,
    S: std::borrow::Borrow<Sample>,
{
    let mut b = Builder::default();
    for s in samples {
        b.push(s.borrow());
    }
    let (infos, df, itl_df, mut loads, mut lengths) = b.finish()?;
    let mut aggs = vec![
        col("failed")
            .count()
            .cast(DataType::UInt64)
            .alias("samples"),
        col("failed").cast(DataType::UInt64).sum().alias("failed_n"),
    ];
    for m in PER_SAMPLE {
        aggs.extend(stat_exprs(m.column(), super::warnings::JUDGED.contains(&m)));
    }
    let by_job = df.lazy().group_by([col("job")]).agg(aggs).collect()?;
    let itl = itl_df
        .lazy()
        .group_by([col("job")])
        .agg(stat_exprs("itl_ms", false))
        .collect()?;
    let rows_of = |df: &DataFrame| -> BTreeMap<u32, usize> {
        (0..df.height())
            .filter_map(|r| get_f64(df, "job", r).map(|j| (j as u32, r)))
            .collect()
    };
    let job_rows = rows_of(&by_job);
    let itl_rows = rows_of(&itl);

    let mut jobs = Vec::with_capacity(infos.len());
    for (idx, info) in infos.into_iter().enumerate() {
        let Some(&row) = job_rows.get(&(idx as u32)) else {
            continue;
        };
        let mut metrics = BTreeMap::new();
        for m in PER_SAMPLE {
            if let Some(st) = metric_stats(&by_job, m.column(), row) {
                metrics.insert(m, st);
            }
        }
        if let Some(&r) = itl_rows.get(&(idx as u32)) {
            if let Some(st) = metric_stats(&itl, "itl_ms", r) {
                metrics.insert(Metric::ItlMs, st);
            }
        }
        let load = loads.remove(&info.job_id).unwrap_or_default();
        let lengths = lengths
            .remove(&info.job_id)
            .map(|(i, o)| super::Lengths {
                input: super::LengthStats::of(i),
                output: super::LengthStats::of(o),
            })
            .filter(|l| l.input.is_some() || l.output.is_some());
        jobs.push(JobSummary {
            job_id: info.job_id,
            backend: info.backend,
            model: info.model,
            scenario: info.scenario,
            params: info.params,
            simulated: info.simulated,
            samples: get_f64(&by_job, "samples", row).unwrap_or(0.0) as u64,
            failed: get_f64(&by_job, "failed_n", row).unwrap_or(0.0) as u64,
            load,
            lengths,
            metrics,
        });
    }
    jobs.sort_by(|a, b| a.job_id.cmp(&b.job_id));
    let warnings = jobs.iter().flat_map(warnings::for_job).collect();
    Ok(Analysis { jobs, warnings })
}

/// The summary in long form: one row per job and metric.
pub fn summary_frame(a: &Analysis) -> PolarsResult<DataFrame> {
    let rows: Vec<(&JobSummary, Metric, &MetricStats)> = a
        .jobs
        .iter()
        .flat_map(|j| j.metrics.iter().map(move |(m, s)| (j, *m, s)))
        .collect();
    let n = rows.len();
    let s =
        |f: fn(&JobSummary) -> &str| rows.iter().map(|r| f(r.0).to_string()).collect::<Vec<_>>();
    let f = |f: fn(&MetricStats) -> f64| rows.iter().map(|r| f(r.2)).collect::<Vec<_>>();
    let o = |f: fn(&MetricStats) -> Option<f64>| rows.iter().map(|r| f(r.2)).collect::<Vec<_>>();
    DataFrame::new(
        n,
        vec![
            Column::new("job_id".into(), s(|j| &j.job_id)),
            Column::new("backend".into(), s(|j| &j.backend)),
            Column::new("model".into(), s(|j| &j.model)),
            Column::new("scenario".into(), s(|j| &j.scenario)),
            Column::new("params".into(), s(|j| &j.params)),
            Column::new(
                "simulated".into(),
                rows.iter().map(|r| r.0.simulated).collect::<Vec<_>>(),
            ),
            Column::new(
                "failed".into(),
                rows.iter().map(|r| r.0.failed).collect::<Vec<_>>(),
            ),
            Column::new(
                "metric".into(),
                rows.iter().map(|r| r.1.column()).collect::<Vec<_>>(),
            ),
            Column::new("n".into(), rows.iter().map(|r| r.2.n).collect::<Vec<_>>()),
            Column::new("mean".into(), f(|m| m.mean)),
            Column::new("median".into(), f(|m| m.median)),
            Column::new("std".into(), o(|m| m.std)),
            Column::new("cv".into(), o(|m| m.cv)),
            Column::new("min".into(), f(|m| m.min)),
            Column::new("max".into(), f(|m| m.max)),
            Column::new("p50".into(), f(|m| m.p50)),
            Column::new("p90".into(), f(|m| m.p90)),
            Column::new("p95".into(), f(|m| m.p95)),
            Column::new("p99".into(), f(|m| m.p99)),
            Column::new("ci95_low".into(), o(|m| m.ci95_low)),
            Column::new("ci95_high".into(), o(|m| m.ci95_high)),
            Column::new(
                "outliers".into(),
                rows.iter().map(|r| r.2.outliers).collect::<Vec<_>>(),
            ),
        ],
    )
}

/// Writes a frame as a Parquet file, atomically.
pub(super) fn write_parquet(df: &mut DataFrame, path: &Path) -> Result<(), AnalyzeError> {
    let mut buf = Vec::new();
    ParquetWriter::new(&mut buf).finish(df)?;
    atomic_write(path, &buf)?;
    Ok(())
}

/// Writes `summary.parquet` and `summary.csv`, each atomically.
pub fn write_summary(a: &Analysis, parquet: &Path, csv: &Path) -> Result<(), AnalyzeError> {
    let mut df = summary_frame(a)?;
    write_parquet(&mut df, parquet)?;
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf).finish(&mut df)?;
    atomic_write(csv, &buf)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Millis;

    fn sample(job: &str, rep: u32, tg: f64, tokens: &[f64]) -> Sample {
        let mut s: Sample = serde_json::from_value(serde_json::json!({
            "job_id": job, "stage": "b", "backend": "simulated", "model": "m",
            "scenario": "s", "params": {"threads": 2}, "rep": rep, "warmup": false, "simulated": true
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        s.tg_tps = Some(tg);
        s.token_ms = tokens.iter().map(|t| Millis(*t)).collect();
        s
    }

    #[test]
    fn statistics_match_hand_computed_values() {
        // tg_tps 10, 20, 30, 40, 1000 → mean 220, median 30, one MAD outlier (1000).
        let vals = [10.0, 20.0, 30.0, 40.0, 1000.0];
        let mut samples: Vec<Sample> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| sample("j", i as u32, *v, &[0.0, 10.0, 30.0]))
            .collect();
        let mut warm = sample("j", 0, 99999.0, &[]);
        warm.warmup = true;
        samples.push(warm);
        let a = analyze(&samples).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.jobs.len(), 1);
        let j = &a.jobs[0];
        assert_eq!(j.samples, 5);
        assert_eq!(j.params, "threads=2");
        let tg = &j.metrics[&Metric::TgTps];
        assert_eq!(tg.n, 5);
        assert!((tg.mean - 220.0).abs() < 1e-9);
        assert_eq!(tg.median, 30.0);
        assert_eq!((tg.min, tg.max), (10.0, 1000.0));
        // Linear interpolation: p90 = 40 + 0.6 * (1000 - 40) = 616.
        assert!((tg.p90 - 616.0).abs() < 1e-9, "{}", tg.p90);
        let sd = (vals.iter().map(|v| (v - 220.0f64).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert!((tg.std.unwrap_or(0.0) - sd).abs() < 1e-9);
        let half = 2.776_445_105_2 * sd / 5f64.sqrt();
        assert!((tg.ci95_low.unwrap_or(0.0) - (220.0 - half)).abs() < 1e-6);
        assert_eq!(tg.outliers, 1);
        assert_eq!(tg.first, Some(10.0));
        // ITL: gaps 10 and 20 from each of 5 samples.
        let itl = &j.metrics[&Metric::ItlMs];
        assert_eq!(itl.n, 10);
        assert!((itl.mean - 15.0).abs() < 1e-9);
        let tpot = &j.metrics[&Metric::TpotMs];
        assert!((tpot.mean - 15.0).abs() < 1e-9);
        let kinds: Vec<_> = a.warnings.iter().map(|w| w.kind).collect();
        assert!(kinds.contains(&super::super::WarningKind::Outliers));
        assert!(kinds.contains(&super::super::WarningKind::HighVariation));
        assert!(kinds.contains(&super::super::WarningKind::TooFewSamplesForPercentile));
    }

    #[test]
    fn failed_samples_are_counted_not_averaged() {
        let mut bad = sample("j", 1, 5.0, &[]);
        bad.error = Some(crate::results::SampleError {
            kind: crate::results::ErrorKind::Crash,
            message: "x".into(),
            exit_status: None,
            stderr_tail: vec![],
        });
        let a = analyze(&[sample("j", 0, 50.0, &[]), bad]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.jobs[0].failed, 1);
        assert_eq!(a.jobs[0].metrics[&Metric::TgTps].n, 1);
        assert_eq!(a.jobs[0].metrics[&Metric::TgTps].mean, 50.0);
    }
}
