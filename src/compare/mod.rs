//! `minerva compare BASE NEW`: per matched job and metric, base and new with their intervals,
//! the relative change with a seeded bootstrap interval, a Mann–Whitney U test on the
//! per-repetition values, and a verdict; before that, a guard that refuses runs measured on
//! different hosts, builds, metric definitions or scenario definitions unless told otherwise.
//!
//! The statistics are in [`stats`], the guard in [`guard`], the output in [`render`];
//! `docs/compare.md` explains them in plain words.

pub mod guard;
pub mod render;
pub mod stats;

use crate::analyze::{samples_frame, MIN_SAMPLES_P90, MIN_SAMPLES_P95, MIN_SAMPLES_P99};
use crate::results::{read_samples, Manifest, RunDir, StoreError};
use polars::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use guard::{Difference, DifferenceClass};

/// Significance level of the test.
pub const ALPHA: f64 = 0.05;
/// Repetitions a side needs before a mean is compared.
pub const MIN_REPETITIONS: usize = 3;
/// Default noise threshold: a change smaller than this is `within noise` whatever the test says
/// (criterion's default).
pub const DEFAULT_THRESHOLD: f64 = 0.02;

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: cannot read the samples: {message}")]
    Samples { path: PathBuf, message: String },
    #[error("{0}")]
    Usage(String),
    /// The runs differ where a comparison must not: each difference with both values.
    #[error("the runs are not comparable:\n{}\n(pass --allow-different {} to compare them anyway)", list(.0), classes(.0))]
    NotComparable(Vec<Difference>),
    #[error("no job of {base} matches a job of {new} (same backend and scenario)")]
    NothingMatched { base: String, new: String },
}

fn list(d: &[Difference]) -> String {
    d.iter()
        .map(|d| format!("  {}: {} (base) vs {} (new)", d.field, d.base, d.new))
        .collect::<Vec<_>>()
        .join("\n")
}

fn classes(d: &[Difference]) -> String {
    let mut c: Vec<&str> = d.iter().map(|d| d.class.as_str()).collect();
    c.dedup();
    c.join(",")
}

/// What a comparison is asked to do.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// Relative change below which a difference is noise (0.02 = 2%).
    pub threshold: f64,
    /// Only these metrics (names as in the table, e.g. `tg_tps`, `ttft_ms p90`); all if empty.
    pub metrics: Vec<String>,
    /// Difference classes that are shown instead of refused.
    pub allow_different: Vec<DifferenceClass>,
    /// Coefficient of variation above which a side is too spread out for a verdict.
    pub unstable_cv: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            threshold: DEFAULT_THRESHOLD,
            metrics: Vec::new(),
            allow_different: Vec::new(),
            unstable_cv: crate::analyze::CV_WARN,
        }
    }
}

/// `--threshold`: `2%`, `0.02` or `2 %` → 0.02.
pub fn parse_threshold(text: &str) -> Result<f64, CompareError> {
    parse_fraction("--threshold", text)
}

/// A fraction given as `2%` or `0.02`, at least 0 and below 1; errors name `flag`.
pub fn parse_fraction(flag: &str, text: &str) -> Result<f64, CompareError> {
    let t = text.trim();
    let v = match t.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => t.parse::<f64>(),
    }
    .map_err(|_| CompareError::Usage(format!("{flag} {text}: expected e.g. 2% or 0.02")))?;
    if !(0.0..1.0).contains(&v) {
        return Err(CompareError::Usage(format!(
            "{flag} {text}: must be at least 0 and below 100%"
        )));
    }
    Ok(v)
}

/// How a metric is summarised on each side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    Mean,
    /// A percentile (50, 90, 95, 99) of per-request values (server loads).
    Percentile(u8),
}

/// One metric as compared: its name, where its values come from, and which way is better.
#[derive(Debug, Clone, Copy)]
struct MetricDef {
    name: &'static str,
    column: &'static str,
    statistic: Statistic,
    higher_is_better: bool,
    /// Measured once per job (every repetition repeats it): compared only between jobs that
    /// measured it more than once.
    once_per_job: bool,
    /// Only for server loads (jobs with per-request samples).
    server_only: bool,
    /// From load-step summaries, one value per step.
    load_step: bool,
}

const fn mean(name: &'static str, higher: bool) -> MetricDef {
    MetricDef {
        name,
        column: name,
        statistic: Statistic::Mean,
        higher_is_better: higher,
        once_per_job: false,
        server_only: false,
        load_step: false,
    }
}

const fn pct(name: &'static str, column: &'static str, p: u8) -> MetricDef {
    MetricDef {
        name,
        column,
        statistic: Statistic::Percentile(p),
        higher_is_better: false,
        once_per_job: false,
        server_only: true,
        load_step: false,
    }
}

const fn step(name: &'static str, column: &'static str) -> MetricDef {
    MetricDef {
        name,
        column,
        statistic: Statistic::Mean,
        higher_is_better: true,
        once_per_job: false,
        server_only: true,
        load_step: true,
    }
}

const fn once(name: &'static str) -> MetricDef {
    MetricDef {
        once_per_job: true,
        ..mean(name, false)
    }
}

/// Every metric `compare` knows, in table order.
const METRICS: [MetricDef; 19] = [
    mean("tg_tps", true),
    mean("pp_tps", true),
    mean("ttft_ms", false),
    mean("tpot_ms", false),
    mean("e2e_ms", false),
    once("load_ms"),
    once("peak_rss_mb"),
    pct("ttft_ms p50", "ttft_ms", 50),
    pct("ttft_ms p90", "ttft_ms", 90),
    pct("ttft_ms p99", "ttft_ms", 99),
    pct("tpot_ms p50", "tpot_ms", 50),
    pct("tpot_ms p90", "tpot_ms", 90),
    pct("tpot_ms p99", "tpot_ms", 99),
    pct("e2e_ms p50", "e2e_ms", 50),
    pct("e2e_ms p90", "e2e_ms", 90),
    pct("e2e_ms p99", "e2e_ms", 99),
    step("completed_rps", "load_completed_rps"),
    step("output_tps", "load_output_tps"),
    step("goodput_rps", "load_goodput_rps"),
];

/// Names `--metric` accepts.
pub fn metric_names() -> Vec<&'static str> {
    METRICS.iter().map(|m| m.name).collect()
}

/// Samples a percentile needs before it is claimed (p90: 64, p99: 662; MLPerf LoadGen).
pub fn percentile_min_samples(p: u8) -> usize {
    match p {
        0..=50 => MIN_REPETITIONS,
        51..=90 => MIN_SAMPLES_P90 as usize,
        91..=95 => MIN_SAMPLES_P95 as usize,
        _ => MIN_SAMPLES_P99 as usize,
    }
}

/// The identity of a job across runs: the stage name is not part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct JobKey {
    pub backend: String,
    pub model: String,
    pub scenario: String,
    pub params: String,
}

impl JobKey {
    pub fn label(&self) -> String {
        let mut s = format!("{} · {} · {}", self.backend, self.model, self.scenario);
        if !self.params.is_empty() {
            s.push_str(&format!(" · {}", self.params));
        }
        s
    }
}

/// One job's measured values, by value column (warmups and failures excluded).
#[derive(Debug, Clone)]
pub struct JobValues {
    pub key: JobKey,
    /// Each param's value as text, for pairing jobs whose params differ.
    pub params: BTreeMap<String, String>,
    pub simulated: bool,
    /// Server load: values of per-request samples.
    pub server: bool,
    pub values: BTreeMap<String, Vec<f64>>,
}

/// A run as `compare` sees it.
#[derive(Debug, Clone)]
pub struct Run {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub jobs: Vec<JobValues>,
}

const VALUE_COLUMNS: [&str; 10] = [
    "tg_tps",
    "pp_tps",
    "ttft_ms",
    "tpot_ms",
    "e2e_ms",
    "load_ms",
    "peak_rss_mb",
    "load_completed_rps",
    "load_output_tps",
    "load_goodput_rps",
];

/// Reads a run directory: its manifest, and its samples from `samples.parquet` (written by the
/// analyze stage), else from `samples.jsonl`.
pub fn load_run(dir: &Path) -> Result<Run, CompareError> {
    let rd = RunDir::new(dir.to_path_buf());
    if !rd.manifest().is_file() {
        return Err(CompareError::Usage(format!(
            "{}: not a run directory (no manifest.json)",
            dir.display()
        )));
    }
    let manifest = rd.read_manifest()?;
    let bad = |path: &Path, e: PolarsError| CompareError::Samples {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let pq = rd.samples_parquet();
    let df = if pq.is_file() {
        let mut cols: Vec<String> = [
            "backend",
            "model",
            "scenario",
            "params",
            "warmup",
            "simulated",
            "kind",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        cols.extend(VALUE_COLUMNS.iter().map(|s| s.to_string()));
        let open = || {
            std::fs::File::open(&pq).map_err(|source| StoreError::Read {
                path: pq.clone(),
                source,
            })
        };
        let schema = ParquetReader::new(open()?)
            .schema()
            .map_err(|e| bad(&pq, e))?;
        cols.extend(
            schema
                .iter_names()
                .filter(|n| n.starts_with("param."))
                .map(|n| n.to_string()),
        );
        ParquetReader::new(open()?)
            .with_columns(Some(cols))
            .finish()
            .map_err(|e| bad(&pq, e))?
    } else {
        let samples = read_samples(&rd.samples())?;
        samples_frame(&samples).map_err(|e| bad(&rd.samples(), e))?
    };
    let jobs = jobs_of(&df).map_err(|e| bad(&pq, e))?;
    Ok(Run {
        dir: dir.to_path_buf(),
        manifest,
        jobs,
    })
}

/// Groups a samples frame into jobs, in order of first appearance.
fn jobs_of(df: &DataFrame) -> PolarsResult<Vec<JobValues>> {
    let s = |name: &str| -> PolarsResult<StringChunked> { Ok(df.column(name)?.str()?.clone()) };
    let b = |name: &str| -> PolarsResult<BooleanChunked> { Ok(df.column(name)?.bool()?.clone()) };
    let (backend, model, scenario, params, kind) = (
        s("backend")?,
        s("model")?,
        s("scenario")?,
        s("params")?,
        s("kind")?,
    );
    let (warmup, simulated) = (b("warmup")?, b("simulated")?);
    let param_cols: Vec<(String, StringChunked)> = df
        .get_column_names()
        .iter()
        .filter_map(|n| {
            n.strip_prefix("param.")
                .map(|k| (k.to_string(), n.to_string()))
        })
        .map(|(k, n)| Ok((k, df.column(&n)?.str()?.clone())))
        .collect::<PolarsResult<_>>()?;
    let values: Vec<(&str, Float64Chunked)> = VALUE_COLUMNS
        .iter()
        .map(|c| Ok((*c, df.column(c)?.f64()?.clone())))
        .collect::<PolarsResult<_>>()?;
    // Row → job, walking the identity columns together (a job's key is built once, when its
    // first row is seen; later rows compare borrowed strings).
    let mut index: HashMap<(&str, &str, &str, &str), usize> = HashMap::new();
    let mut jobs: Vec<JobValues> = Vec::new();
    let mut row_job: Vec<Option<usize>> = Vec::with_capacity(df.height());
    let rows = backend
        .iter()
        .zip(model.iter())
        .zip(scenario.iter())
        .zip(params.iter())
        .zip(kind.iter())
        .zip(warmup.iter().zip(simulated.iter()));
    for (row, (((((b, m), sc), p), k), (w, sim))) in rows.enumerate() {
        if w.unwrap_or(false) {
            row_job.push(None);
            continue;
        }
        let id = (
            b.unwrap_or_default(),
            m.unwrap_or_default(),
            sc.unwrap_or_default(),
            p.unwrap_or_default(),
        );
        let i = *index.entry(id).or_insert_with(|| {
            jobs.push(JobValues {
                key: JobKey {
                    backend: id.0.to_string(),
                    model: id.1.to_string(),
                    scenario: id.2.to_string(),
                    params: id.3.to_string(),
                },
                params: param_cols
                    .iter()
                    .filter_map(|(k, c)| c.get(row).map(|v| (k.clone(), v.to_string())))
                    .collect(),
                simulated: false,
                server: false,
                values: BTreeMap::new(),
            });
            jobs.len() - 1
        });
        let job = &mut jobs[i];
        job.simulated |= sim.unwrap_or(false);
        job.server |= k == Some("request");
        row_job.push(Some(i));
    }
    // Values column by column.
    for (col, ca) in &values {
        let mut per_job: Vec<Vec<f64>> = vec![Vec::new(); jobs.len()];
        for (v, j) in ca.iter().zip(&row_job) {
            if let (Some(v), Some(j)) = (v, j) {
                if v.is_finite() {
                    per_job[*j].push(v);
                }
            }
        }
        for (job, v) in jobs.iter_mut().zip(per_job) {
            if !v.is_empty() {
                job.values.insert(col.to_string(), v);
            }
        }
    }
    Ok(jobs)
}

/// One side of a compared metric.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub n: usize,
    /// The mean, or the percentile.
    pub value: f64,
    /// 95% interval of `value`.
    pub ci: Option<(f64, f64)>,
    /// Coefficient of variation of the values.
    pub cv: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Significantly better, beyond the threshold.
    Faster,
    /// Significantly worse, beyond the threshold: a regression.
    Slower,
    WithinNoise,
    /// A side's coefficient of variation is above `unstable_cv`: too spread out for a verdict
    /// (not counted as a regression; the reason says what the verdict would have been).
    Unstable,
    /// Too few repetitions (or samples, for a percentile) to say.
    Invalid,
}

#[derive(Debug, Clone, Serialize)]
pub struct MetricComparison {
    pub metric: String,
    pub statistic: Statistic,
    pub higher_is_better: bool,
    pub base: Side,
    pub new: Side,
    /// new / base − 1.
    pub change: Option<f64>,
    /// 95% interval of the change.
    pub change_ci: Option<(f64, f64)>,
    /// Two-sided Mann–Whitney U p-value (means only).
    pub p_value: Option<f64>,
    pub verdict: Verdict,
    /// Why the verdict is `invalid`, e.g. "n=5, needs 64".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl MetricComparison {
    /// The verdict in words: memory is "more/less memory", everything else "slower/faster".
    pub fn verdict_text(&self) -> String {
        let memory = self.metric.starts_with("peak_rss");
        match self.verdict {
            Verdict::Faster if memory => "less memory".into(),
            Verdict::Slower if memory => "more memory".into(),
            Verdict::Faster => "faster".into(),
            Verdict::Slower => "slower".into(),
            Verdict::WithinNoise => "within noise".into(),
            Verdict::Unstable => match &self.reason {
                Some(r) => format!("UNSTABLE ({r})"),
                None => "UNSTABLE".into(),
            },
            Verdict::Invalid => match &self.reason {
                Some(r) => format!("INVALID ({r})"),
                None => "INVALID".into(),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobComparison {
    pub base: JobKey,
    pub new: JobKey,
    pub simulated: bool,
    /// What differs between the two jobs' identities (params, model), shown not refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<String>,
    pub metrics: Vec<MetricComparison>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub slower: usize,
    pub faster: usize,
    pub within_noise: usize,
    pub unstable: usize,
    pub invalid: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub base: RunRef,
    pub new: RunRef,
    pub threshold: f64,
    pub unstable_cv: f64,
    pub alpha: f64,
    pub counts: Counts,
    /// Host/build/metric/scenario differences the caller allowed: the comparison is not like
    /// for like.
    pub allowed_differences: Vec<Difference>,
    /// Differences in what is compared (model files, minerva version): shown, not refused.
    pub other_differences: Vec<Difference>,
    pub jobs: Vec<JobComparison>,
    pub only_in_base: Vec<JobKey>,
    pub only_in_new: Vec<JobKey>,
}

impl Comparison {
    pub fn has_regression(&self) -> bool {
        self.counts.slower > 0
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRef {
    pub dir: String,
    pub run_id: String,
    pub started_at: String,
    pub minerva_version: String,
    pub metrics_version: u32,
}

impl RunRef {
    fn of(run: &Run) -> RunRef {
        RunRef {
            dir: run.dir.display().to_string(),
            run_id: run.manifest.run_id.clone(),
            started_at: run.manifest.started_at.clone(),
            minerva_version: run.manifest.minerva_version.clone(),
            metrics_version: run.manifest.metrics_version,
        }
    }
}

/// How many params two jobs set differently (a param one sets and the other not counts).
fn param_distance(a: &JobValues, b: &JobValues) -> usize {
    let keys: std::collections::BTreeSet<&String> =
        a.params.keys().chain(b.params.keys()).collect();
    keys.into_iter()
        .filter(|k| a.params.get(*k) != b.params.get(*k))
        .count()
}

/// Pairs jobs: same backend, model, scenario and params first. Then, among the rest with the same
/// backend, model and scenario, jobs that are each other's unique nearest in params (an A/B of
/// params: `threads: 1` against `threads: 2`, or one param changed across a whole matrix). Then
/// the one job left on each side with the same backend and scenario (an A/B of models). Returns
/// pairs of indices and the unmatched ones; ambiguous pairs are never guessed.
fn match_jobs(
    base: &[JobValues],
    new: &[JobValues],
) -> (Vec<(usize, usize)>, Vec<usize>, Vec<usize>) {
    let mut pairs = Vec::new();
    let mut left_b: Vec<usize> = (0..base.len()).collect();
    let mut left_n: Vec<usize> = (0..new.len()).collect();
    type KeyFn = fn(&JobKey) -> JobKey;
    let levels: [KeyFn; 3] = [
        |k| k.clone(),
        |k| JobKey {
            params: String::new(),
            ..k.clone()
        },
        |k| JobKey {
            params: String::new(),
            model: String::new(),
            ..k.clone()
        },
    ];
    for (level, key) in levels.iter().enumerate() {
        let mut by_key: BTreeMap<JobKey, (Vec<usize>, Vec<usize>)> = BTreeMap::new();
        for &i in &left_b {
            by_key.entry(key(&base[i].key)).or_default().0.push(i);
        }
        for &j in &left_n {
            by_key.entry(key(&new[j].key)).or_default().1.push(j);
        }
        for (bs, ns) in by_key.values() {
            match level {
                0 => pairs.extend(bs.iter().zip(ns).map(|(b, n)| (*b, *n))),
                1 => pairs.extend(nearest_pairs(bs, ns, |b, n| {
                    param_distance(&base[b], &new[n])
                })),
                _ if bs.len() == 1 && ns.len() == 1 => pairs.push((bs[0], ns[0])),
                _ => {}
            }
        }
        left_b.retain(|i| !pairs.iter().any(|p| p.0 == *i));
        left_n.retain(|j| !pairs.iter().any(|p| p.1 == *j));
    }
    pairs.sort();
    (pairs, left_b, left_n)
}

/// Pairs that are each other's unique nearest (by `dist`), repeated until none is left.
fn nearest_pairs(
    bs: &[usize],
    ns: &[usize],
    dist: impl Fn(usize, usize) -> usize,
) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut bs, mut ns) = (bs.to_vec(), ns.to_vec());
    loop {
        // The unique nearest of `x` among `ys`, if there is one.
        let nearest = |x: usize, ys: &[usize], d: &dyn Fn(usize, usize) -> usize| {
            let mut best: Option<(usize, usize)> = None;
            let mut tie = false;
            for &y in ys {
                let dy = d(x, y);
                match best {
                    Some((_, db)) if dy == db => tie = true,
                    Some((_, db)) if dy > db => {}
                    _ => {
                        best = Some((y, dy));
                        tie = false;
                    }
                }
            }
            best.filter(|_| !tie).map(|b| b.0)
        };
        let found: Vec<(usize, usize)> = bs
            .iter()
            .filter_map(|&b| {
                let n = nearest(b, &ns, &|b, n| dist(b, n))?;
                (nearest(n, &bs, &|n, b| dist(b, n)) == Some(b)).then_some((b, n))
            })
            .collect();
        if found.is_empty() {
            return out;
        }
        bs.retain(|b| !found.iter().any(|p| p.0 == *b));
        ns.retain(|n| !found.iter().any(|p| p.1 == *n));
        out.extend(found);
    }
}

/// A stable seed for one job and metric, so the bootstrap gives the same interval every time.
fn seed_of(key: &JobKey, metric: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [&key.backend, &key.model, &key.scenario, &key.params, metric] {
        for b in part.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn side_mean(v: &[f64]) -> Side {
    let m = stats::mean(v);
    Side {
        n: v.len(),
        value: m,
        ci: stats::mean_ci(v),
        cv: stats::std_dev(v)
            .filter(|_| m.abs() > f64::EPSILON)
            .map(|sd| sd / m.abs()),
    }
}

/// Compares one metric of one job pair; None when neither side has it.
///
/// Criterion's rule: a change is a verdict when the test is significant **and** its whole 95%
/// interval lies beyond the noise threshold (without an interval, the change itself).
fn compare_metric(
    def: &MetricDef,
    key: &JobKey,
    base: &[f64],
    new: &[f64],
    opts: &CompareOptions,
) -> MetricComparison {
    let threshold = opts.threshold;
    let worse = |change: f64| {
        if def.higher_is_better {
            change < 0.0
        } else {
            change > 0.0
        }
    };
    let judge = |change: f64, ci: Option<(f64, f64)>, significant: bool| {
        let (lo, hi) = ci.unwrap_or((change, change));
        let beyond = (lo > threshold && hi > threshold) || (lo < -threshold && hi < -threshold);
        if significant && beyond {
            if worse(change) {
                Verdict::Slower
            } else {
                Verdict::Faster
            }
        } else {
            Verdict::WithinNoise
        }
    };
    // A value repeated by every repetition (load time, peak RSS of one worker) is one
    // observation, however many samples carry it.
    let effective_n = |v: &[f64]| {
        if def.once_per_job && v.windows(2).all(|w| w[0] == w[1]) {
            v.len().min(1)
        } else {
            v.len()
        }
    };
    match def.statistic {
        Statistic::Mean => {
            let (b, n) = (side_mean(base), side_mean(new));
            let (nb, nn) = (effective_n(base), effective_n(new));
            let change = (b.value != 0.0).then(|| n.value / b.value - 1.0);
            let mut out = MetricComparison {
                metric: def.name.to_string(),
                statistic: def.statistic,
                higher_is_better: def.higher_is_better,
                base: Side { n: nb, ..b },
                new: Side { n: nn, ..n },
                change,
                change_ci: None,
                p_value: None,
                verdict: Verdict::Invalid,
                reason: None,
            };
            if nb < MIN_REPETITIONS || nn < MIN_REPETITIONS {
                out.reason = Some(format!("n={}, needs {MIN_REPETITIONS}", nb.min(nn)));
                return out;
            }
            let p = stats::mann_whitney_p(base, new);
            out.p_value = Some(p);
            out.change_ci = stats::ratio_ci(base, new, seed_of(key, def.name))
                .map(|(lo, hi)| (lo - 1.0, hi - 1.0));
            out.verdict = match change {
                Some(c) => judge(c, out.change_ci, p < ALPHA),
                None => Verdict::WithinNoise,
            };
            // Too spread out to trust either way: the run was disturbed, or the metric is noisy.
            // A disturbance that spreads repetitions by a CV of c moves their mean by about c
            // (half of them disturbed), 2c when 80% are: a change beyond twice the larger CV is
            // not the disturbance's doing and keeps its verdict.
            let unstable: Vec<String> = [("base", &out.base), ("new", &out.new)]
                .iter()
                .filter_map(|(side, s)| {
                    s.cv.filter(|cv| *cv > opts.unstable_cv)
                        .map(|cv| format!("{side} CV {:.1}%", cv * 100.0))
                })
                .collect();
            let spread = out.base.cv.unwrap_or(0.0).max(out.new.cv.unwrap_or(0.0));
            let explained = change.is_none_or(|c| c.abs() <= 2.0 * spread);
            if !unstable.is_empty() && explained {
                out.reason = Some(format!(
                    "{} > {:.1}%; would be {}",
                    unstable.join(", "),
                    opts.unstable_cv * 100.0,
                    out.verdict_text()
                ));
                out.verdict = Verdict::Unstable;
            }
            out
        }
        Statistic::Percentile(p) => {
            let q = f64::from(p) / 100.0;
            let sorted = |v: &[f64]| {
                let mut s = v.to_vec();
                s.sort_by(f64::total_cmp);
                s
            };
            let (sb, sn) = (sorted(base), sorted(new));
            let side = |s: &[f64]| Side {
                n: s.len(),
                value: stats::quantile(s, q),
                ci: stats::quantile_ci(s, q),
                cv: None,
            };
            let (b, n) = (side(&sb), side(&sn));
            let change = (b.value != 0.0 && b.value.is_finite()).then(|| n.value / b.value - 1.0);
            let need = percentile_min_samples(p);
            let mut out = MetricComparison {
                metric: def.name.to_string(),
                statistic: def.statistic,
                higher_is_better: def.higher_is_better,
                base: b.clone(),
                new: n.clone(),
                change,
                change_ci: None,
                p_value: None,
                verdict: Verdict::Invalid,
                reason: None,
            };
            if sb.len() < need || sn.len() < need {
                out.reason = Some(format!("n={}, needs {need}", sb.len().min(sn.len())));
                return out;
            }
            // Significant when the two percentiles' distribution-free intervals do not overlap.
            let significant = match (b.ci, n.ci) {
                (Some((bl, bh)), Some((nl, nh))) => nl > bh || nh < bl,
                _ => false,
            };
            if let (Some((bl, bh)), Some((nl, nh))) = (b.ci, n.ci) {
                if bl > 0.0 && bh > 0.0 {
                    out.change_ci = Some((nl / bh - 1.0, nh / bl - 1.0));
                }
            }
            out.verdict = match change {
                Some(c) => judge(c, out.change_ci, significant),
                None => Verdict::WithinNoise,
            };
            out
        }
    }
}

/// Compares two loaded runs. Errors with [`CompareError::NotComparable`] when they differ in a
/// class of fields the options do not allow.
pub fn compare_runs(
    base: &Run,
    new: &Run,
    opts: &CompareOptions,
) -> Result<Comparison, CompareError> {
    for m in &opts.metrics {
        if !METRICS.iter().any(|d| d.name == m) {
            return Err(CompareError::Usage(format!(
                "--metric {m}: unknown metric (known: {})",
                metric_names().join(", ")
            )));
        }
    }
    let (pairs, only_b, only_n) = match_jobs(&base.jobs, &new.jobs);
    if pairs.is_empty() {
        return Err(CompareError::NothingMatched {
            base: base.dir.display().to_string(),
            new: new.dir.display().to_string(),
        });
    }
    let matched: Vec<(&JobValues, &JobValues)> = pairs
        .iter()
        .map(|(i, j)| (&base.jobs[*i], &new.jobs[*j]))
        .collect();
    let (guarded, other) = guard::differences(&base.manifest, &new.manifest, &matched);
    let (allowed, refused): (Vec<Difference>, Vec<Difference>) = guarded
        .into_iter()
        .partition(|d| opts.allow_different.contains(&d.class));
    if !refused.is_empty() {
        return Err(CompareError::NotComparable(refused));
    }
    let mut counts = Counts::default();
    let mut jobs = Vec::new();
    for (b, n) in matched {
        let mut differs = Vec::new();
        if b.key.model != n.key.model {
            differs.push(format!("model: {} → {}", b.key.model, n.key.model));
        }
        if b.key.params != n.key.params {
            differs.push(format!("params: {} → {}", b.key.params, n.key.params));
        }
        let mut metrics = Vec::new();
        for def in METRICS.iter() {
            if !opts.metrics.is_empty() && !opts.metrics.iter().any(|m| m == def.name) {
                continue;
            }
            if def.server_only && !(b.server || n.server) && !def.load_step {
                continue;
            }
            let (Some(bv), Some(nv)) = (b.values.get(def.column), n.values.get(def.column)) else {
                continue;
            };
            let c = compare_metric(def, &b.key, bv, nv, opts);
            match c.verdict {
                Verdict::Slower => counts.slower += 1,
                Verdict::Faster => counts.faster += 1,
                Verdict::WithinNoise => counts.within_noise += 1,
                Verdict::Unstable => counts.unstable += 1,
                Verdict::Invalid => counts.invalid += 1,
            }
            metrics.push(c);
        }
        jobs.push(JobComparison {
            base: b.key.clone(),
            new: n.key.clone(),
            simulated: b.simulated || n.simulated,
            differs,
            metrics,
        });
    }
    Ok(Comparison {
        base: RunRef::of(base),
        new: RunRef::of(new),
        threshold: opts.threshold,
        unstable_cv: opts.unstable_cv,
        alpha: ALPHA,
        counts,
        allowed_differences: allowed,
        other_differences: other,
        jobs,
        only_in_base: only_b.iter().map(|i| base.jobs[*i].key.clone()).collect(),
        only_in_new: only_n.iter().map(|j| new.jobs[*j].key.clone()).collect(),
    })
}

/// Loads both runs and compares them.
pub fn compare(base: &Path, new: &Path, opts: &CompareOptions) -> Result<Comparison, CompareError> {
    let b = load_run(base)?;
    let n = load_run(new)?;
    compare_runs(&b, &n, opts)
}

#[cfg(test)]
mod tests;
