//! Typed warnings about the trustworthiness of a result, shown in the report.

use super::{JobSummary, Metric, CV_WARN, FIRST_RUN_FACTOR, MIN_SAMPLES_P90, MIN_SAMPLES_P99};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum WarningKind {
    TooFewSamplesForPercentile,
    HighVariation,
    Outliers,
    SlowFirstRun,
    FailedSamples,
    Simulated,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub kind: WarningKind,
    pub job_id: String,
    pub metric: Option<Metric>,
    pub message: String,
}

/// The metrics whose spread and outliers are worth a warning (others are shown, not judged).
pub(crate) const JUDGED: [Metric; 5] = [
    Metric::PpTps,
    Metric::TgTps,
    Metric::TtftMs,
    Metric::TpotMs,
    Metric::E2eMs,
];

pub fn for_job(j: &JobSummary) -> Vec<Warning> {
    let mut out = Vec::new();
    let mut push = |kind, metric: Option<Metric>, message: String| {
        out.push(Warning {
            kind,
            job_id: j.job_id.clone(),
            metric,
            message,
        })
    };
    if j.simulated {
        push(
            WarningKind::Simulated,
            None,
            "SIMULATED backend: these figures are not measurements".into(),
        );
    }
    if j.failed > 0 {
        push(
            WarningKind::FailedSamples,
            None,
            format!("{} of {} samples failed", j.failed, j.samples),
        );
    }
    let n_req = j.samples - j.failed;
    if n_req > 0 && n_req < MIN_SAMPLES_P90 {
        push(
            WarningKind::TooFewSamplesForPercentile,
            None,
            format!("{n_req} samples: p90 needs {MIN_SAMPLES_P90} and p99 needs {MIN_SAMPLES_P99} to be claimed; they are shown as INVALID"),
        );
    } else if n_req > 0 && n_req < MIN_SAMPLES_P99 {
        push(
            WarningKind::TooFewSamplesForPercentile,
            None,
            format!("{n_req} samples: p99 needs {MIN_SAMPLES_P99} to be claimed; it is shown as INVALID"),
        );
    }
    for metric in JUDGED {
        let Some(m) = j.metrics.get(&metric) else {
            continue;
        };
        if let Some(cv) = m.cv {
            if cv > CV_WARN {
                push(
                    WarningKind::HighVariation,
                    Some(metric),
                    format!(
                        "{}: CV {:.1}% > {:.0}%",
                        metric.column(),
                        cv * 100.0,
                        CV_WARN * 100.0
                    ),
                );
            }
        }
        if m.outliers > 0 {
            push(
                WarningKind::Outliers,
                Some(metric),
                format!(
                    "{}: {} outlier(s) by MAD (modified z > {})",
                    metric.column(),
                    m.outliers,
                    super::MAD_Z
                ),
            );
        }
        if let Some(first) = m.first {
            let slow = if metric.higher_is_better() {
                first * FIRST_RUN_FACTOR < m.median
            } else {
                first > m.median * FIRST_RUN_FACTOR
            };
            if slow && m.n > 1 {
                push(
                    WarningKind::SlowFirstRun,
                    Some(metric),
                    format!(
                        "{}: first run {:.2} vs median {:.2}: consider more warmup",
                        metric.column(),
                        first,
                        m.median
                    ),
                );
            }
        }
    }
    out
}
