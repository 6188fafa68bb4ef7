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
    pub runs: u32,
    pub warmup: u32,
    pub seed: u64,
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// The stage's `unavailable: skip`: a backend this build lacks is reported, not failed.
    #[serde(default)]
    pub skip_unavailable: bool,
}

impl BenchJob {
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
            error: None,
            request: None,
            load: None,
            output_ids: Vec::new(),
            prompt_digest: None,
        }
    }
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
