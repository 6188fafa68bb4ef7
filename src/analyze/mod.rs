//! Analysis: per-job statistics of every metric, with polars, and typed warnings.
//!
//! Warmups are excluded; failed samples are counted, never averaged.

pub mod agreement;
mod frame;
mod samples;
mod warnings;

pub use frame::{analyze, summary_frame, write_summary, AnalyzeError};
pub use samples::{sample_kind, samples_frame, write_samples, SAMPLE_METRICS};
pub use warnings::{Warning, WarningKind};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::results::METRICS_VERSION;

pub use crate::results::{MIN_SAMPLES_P90, MIN_SAMPLES_P95, MIN_SAMPLES_P99};
/// Coefficient of variation above which a result is flagged as noisy.
pub const CV_WARN: f64 = 0.05;
/// Modified z-score (Iglewicz & Hoaglin) above which a sample is an outlier.
pub const MAD_Z: f64 = 3.5;
/// The first measured run is "much slower" when it exceeds the median by this factor.
pub const FIRST_RUN_FACTOR: f64 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    PpTps,
    TgTps,
    TtftMs,
    TpotMs,
    ItlMs,
    E2eMs,
    LoadMs,
    PeakRssMb,
    TokenizeMs,
    SampleMs,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::PpTps,
        Metric::TgTps,
        Metric::TtftMs,
        Metric::TpotMs,
        Metric::ItlMs,
        Metric::E2eMs,
        Metric::LoadMs,
        Metric::PeakRssMb,
        Metric::TokenizeMs,
        Metric::SampleMs,
    ];
    pub fn column(self) -> &'static str {
        match self {
            Metric::PpTps => "pp_tps",
            Metric::TgTps => "tg_tps",
            Metric::TtftMs => "ttft_ms",
            Metric::TpotMs => "tpot_ms",
            Metric::ItlMs => "itl_ms",
            Metric::E2eMs => "e2e_ms",
            Metric::LoadMs => "load_ms",
            Metric::PeakRssMb => "peak_rss_mb",
            Metric::TokenizeMs => "tokenize_ms",
            Metric::SampleMs => "sample_ms",
        }
    }
    pub fn higher_is_better(self) -> bool {
        matches!(self, Metric::PpTps | Metric::TgTps)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricStats {
    pub n: u64,
    pub mean: f64,
    pub median: f64,
    pub std: Option<f64>,
    pub cv: Option<f64>,
    pub min: f64,
    pub max: f64,
    pub p50: f64,
    pub p90: f64,
    #[serde(default)]
    pub p95: f64,
    pub p99: f64,
    pub ci95_low: Option<f64>,
    pub ci95_high: Option<f64>,
    pub outliers: u64,
    /// The first measured repetition's value (per-token metrics: none).
    pub first: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub job_id: String,
    pub backend: String,
    pub model: String,
    pub scenario: String,
    pub params: String,
    pub simulated: bool,
    /// Measured (non-warmup) samples, failed ones included.
    pub samples: u64,
    pub failed: u64,
    /// Server benchmarks: the load step(s) as the client saw them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<crate::results::LoadSummary>,
    /// Server benchmarks: the prompt and output lengths of the successful requests, as the
    /// server reported them (or as the client sent them, for token-id prompts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lengths: Option<Lengths>,
    pub metrics: BTreeMap<Metric, MetricStats>,
}

/// Request lengths of a server job, in tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lengths {
    pub input: Option<LengthStats>,
    pub output: Option<LengthStats>,
}

/// A length distribution: count, mean, and nearest-rank percentiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LengthStats {
    pub n: u64,
    pub mean: f64,
    pub min: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub max: u64,
}

impl LengthStats {
    /// None for no values.
    pub fn of(mut v: Vec<u64>) -> Option<LengthStats> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let n = v.len();
        let rank = |q: f64| crate::results::nearest_rank(&v, q).unwrap_or(0);
        Some(LengthStats {
            n: n as u64,
            mean: v.iter().sum::<u64>() as f64 / n as f64,
            min: v[0],
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: v[n - 1],
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub jobs: Vec<JobSummary>,
    pub warnings: Vec<Warning>,
}
