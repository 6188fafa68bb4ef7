//! The job description a worker receives: the backend, the model and scenario, the params and
//! the repetitions. The plan builds it; the worker reads it from its stdin.

use super::BackendKind;
use crate::job::{Model, Scenario};
use crate::results::Sample;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// One bench job: a backend running a model on a scenario with fixed params, `runs` times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchJob {
    pub backend: BackendKind,
    pub model: Model,
    pub scenario: Scenario,
    /// Real parameter values, secrets included: sent to the worker, never written out.
    pub params: BTreeMap<String, Value>,
    /// Parameters as they may be shown (secrets redacted).
    pub display_params: BTreeMap<String, Value>,
    /// Measured repetitions; with `until_stable`, the most there may be.
    pub runs: u32,
    /// `runs: { min, max, rel_ci }`: stop once the primary metric is stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_stable: Option<UntilStable>,
    pub warmup: u32,
    pub seed: u64,
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// Seconds to wait before the job starts (the stage's `delay`, llama-bench's `--delay`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_s: u64,
    /// The stage's `unavailable: skip`: a backend this build lacks is reported, not failed.
    #[serde(default)]
    pub skip_unavailable: bool,
}

/// `runs: { min: N, max: M, rel_ci: 0.02 }`: after `min` measured repetitions, go on until the
/// 95% confidence interval's half-width of the primary metric is within `rel_ci` of its mean,
/// or `max` repetitions are done (the job is then UNSTABLE in the report).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UntilStable {
    pub min: u32,
    pub max: u32,
    pub rel_ci: f64,
}

/// The 95% CI half-width of the mean relative to the mean (Student's t); None below 2 values.
pub fn relative_ci_half_width(values: &[f64]) -> Option<f64> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let n = values.len();
    if n < 2 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64;
    let t = StudentsT::new(0.0, 1.0, (n - 1) as f64)
        .ok()?
        .inverse_cdf(0.975);
    (mean.abs() > 0.0).then(|| t * var.sqrt() / (n as f64).sqrt() / mean.abs())
}

/// Decides, one measured repetition at a time, when a job has enough of them.
#[derive(Debug)]
pub struct Repetitions {
    until: Option<UntilStable>,
    runs: u32,
    generating: bool,
    done: u32,
    primary: Vec<f64>,
}

impl Repetitions {
    /// Counts a measured sample; true when no more repetitions are needed.
    pub fn enough_after(&mut self, s: &Sample) -> bool {
        self.done += 1;
        let primary = if self.generating { s.tg_tps } else { s.pp_tps };
        if let Some(v) = primary.filter(|v| v.is_finite()) {
            self.primary.push(v);
        }
        match self.until {
            None => self.done >= self.runs,
            Some(u) => {
                self.done >= u.max
                    || (self.done >= u.min
                        && relative_ci_half_width(&self.primary).is_some_and(|r| r <= u.rel_ci))
            }
        }
    }
}

impl BenchJob {
    /// The primary metric is tg tokens/s for a scenario that generates, pp tokens/s for a
    /// prompt-only one.
    pub fn repetitions(&self) -> Repetitions {
        Repetitions {
            until: self.until_stable,
            runs: self.runs,
            generating: self.scenario.max_tokens > 1,
            done: 0,
            primary: Vec::new(),
        }
    }

    /// The fewest measured repetitions a complete job has.
    pub fn min_runs(&self) -> u32 {
        self.until_stable.map(|u| u.min).unwrap_or(self.runs)
    }

    /// A sample with identity fields only, for backends to fill in.
    pub fn blank_sample(&self, job_id: &str, rep: u32, warmup: bool) -> Sample {
        Sample {
            job_id: job_id.to_string(),
            stage: job_id.split('/').next().unwrap_or_default().to_string(),
            backend: self.backend.name().to_string(),
            model: self.model.name.clone(),
            scenario: self.scenario.name.clone(),
            params: self.display_params.clone(),
            rep,
            warmup,
            simulated: self.backend.is_simulated(),
            load_ms: None,
            prompt_tokens: None,
            output_tokens: None,
            ttft_ms: None,
            token_ms: Vec::new(),
            pp_tps: None,
            tg_tps: None,
            e2e_ms: None,
            tokenize_ms: None,
            sample_ms: None,
            peak_rss_bytes: None,
            energy_j: None,
            error: None,
            request: None,
            load: None,
            output_ids: Vec::new(),
            prompt_digest: None,
            superseded: false,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

pub mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
