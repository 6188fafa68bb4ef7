//! One sample = one repetition of one bench job, as measured (or simulated) by a backend.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Milliseconds. Stored as a float so sub-millisecond timings survive.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Millis(pub f64);

impl Millis {
    pub fn from_duration(d: std::time::Duration) -> Self {
        Millis(d.as_secs_f64() * 1e3)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The backend reported an error.
    Backend,
    /// The worker process died (signal or non-zero exit) before finishing the job.
    Crash,
    /// The job exceeded its timeout and was killed.
    Timeout,
    /// The run was interrupted while the job ran.
    Interrupted,
    /// The backend is not built into this minerva.
    Unavailable,
    /// Another runner held the machine-wide bench lock (`--no-wait`, or `--lock-timeout` ran
    /// out).
    Locked,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleError {
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stderr_tail: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub job_id: String,
    pub stage: String,
    pub backend: String,
    pub model: String,
    pub scenario: String,
    /// Parameters as shown (secrets redacted).
    pub params: BTreeMap<String, Value>,
    /// Repetition index; warmups and measured runs count separately from 0.
    pub rep: u32,
    pub warmup: bool,
    /// True when the figures come from the simulated backend, not a measurement.
    pub simulated: bool,
    #[serde(default)]
    pub load_ms: Option<Millis>,
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    /// Submit → first generated token, prompt processing included.
    #[serde(default)]
    pub ttft_ms: Option<Millis>,
    /// Time of each generated token, from submit.
    #[serde(default)]
    pub token_ms: Vec<Millis>,
    /// Prompt tokens / prompt processing time.
    #[serde(default)]
    pub pp_tps: Option<f64>,
    /// Generated tokens after the first / time from first to last token.
    #[serde(default)]
    pub tg_tps: Option<f64>,
    /// Submit → last token.
    #[serde(default)]
    pub e2e_ms: Option<Millis>,
    /// Time spent tokenizing (outside the engine's decode calls).
    #[serde(default)]
    pub tokenize_ms: Option<Millis>,
    /// Time spent sampling (outside the engine's decode calls).
    #[serde(default)]
    pub sample_ms: Option<Millis>,
    /// Peak resident memory of the process that ran the backend.
    #[serde(default)]
    pub peak_rss_bytes: Option<u64>,
    /// In-process repetitions: CPU package energy over the repetition (RAPL), where the
    /// counters are readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_j: Option<f64>,
    #[serde(default)]
    pub error: Option<SampleError>,
    /// Server backends: one request of a load test (when it was meant to go, when it went, how
    /// it failed). Latencies of such samples count from the intended send time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestInfo>,
    /// Server backends: the summary of one load step (a sample with no latencies of its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSummary>,
    /// In-process backends, first measured repetition of a text prompt: the greedy output token
    /// ids, compared across backends on the same weights (output agreement).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_ids: Vec<u32>,
    /// With `output_ids`: sha256 (first 16 hex digits) of the prompt token ids, so that outputs
    /// are compared only when the engines were given the same tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_digest: Option<String>,
    /// Written by a job that was cut short and rerun by `minerva run --resume`: kept for the
    /// record, ignored by analysis, reports and comparisons.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub superseded: bool,
}

/// How a request failed. Failed requests are counted, never averaged into latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestFailureKind {
    /// The connection could not be made.
    Connect,
    /// An HTTP status other than 200.
    Http,
    /// No answer (or no next event) within the timeout.
    Timeout,
    /// The stream ended or broke before its end marker.
    Disconnect,
    /// An event that is not valid JSON of the expected shape.
    Malformed,
    /// The server sent an error event inside the stream.
    ServerError,
}

impl RequestFailureKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestFailureKind::Connect => "connect",
            RequestFailureKind::Http => "http",
            RequestFailureKind::Timeout => "timeout",
            RequestFailureKind::Disconnect => "disconnect",
            RequestFailureKind::Malformed => "malformed",
            RequestFailureKind::ServerError => "server_error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestFailure {
    pub kind: RequestFailureKind,
    pub message: String,
}

/// Where a request's output token count came from (token-count provenance).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// The server's `usage` report.
    Usage,
    /// Streamed content events, one token each (the server reported no usage).
    Chunks,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestInfo {
    /// Load step (0 unless the load is a sweep).
    pub step: u32,
    /// When the request was meant to be sent, from the start of its step.
    pub intended_ms: Millis,
    /// When it was sent, from the start of its step.
    pub sent_ms: Millis,
    /// Response headers, from the intended send time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<Millis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_from: Option<TokenSource>,
    /// All SLO bounds met (None without an SLO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<RequestFailure>,
}

/// One load step of a server benchmark, as the client saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadSummary {
    pub step: u32,
    /// `sequential`, `concurrency 4`, `poisson 20/s`, ...
    pub pattern: String,
    #[serde(default)]
    pub concurrency: Option<u32>,
    #[serde(default)]
    pub target_rps: Option<f64>,
    /// Measured requests (warmups excluded), ok + failed.
    pub requests: u64,
    pub failed: u64,
    /// Failed requests per kind.
    pub errors: BTreeMap<String, u64>,
    /// First intended send to last response end.
    pub wall_s: f64,
    /// Requests sent per second (what the client achieved).
    pub sent_rps: f64,
    /// Successful requests completed per second.
    pub achieved_rps: f64,
    /// Output tokens of successful requests per second.
    pub output_tps: f64,
    /// Intended → actual send: p50, p99, max (ms); open loop only.
    #[serde(default)]
    pub lag_ms: Option<[f64; 3]>,
    /// Requests sent more than 2 ms after their intended time, not counting time waiting for a
    /// slot under `max_concurrency` (counted, never hidden).
    pub late: u64,
    /// An open loop's cap on requests in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
    /// Time requests waited for a slot under that cap: p50, p99, max (ms). Latencies include
    /// it (they count from the scheduled time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_ms: Option<[f64; 3]>,
    /// The client process's CPU time during the step, and as a share of the step's wall time
    /// (1.0 = one core busy).
    pub client_cpu_s: f64,
    pub client_cpu_cores: f64,
    /// True when the client, not the server, limited the result; `client_bound_why` says how.
    pub client_bound: bool,
    #[serde(default)]
    pub client_bound_why: Vec<String>,
    /// Requests meeting every SLO bound: fraction of measured requests, and per second.
    #[serde(default)]
    pub goodput: Option<(f64, f64)>,
    /// How output tokens were counted: `usage`, `chunks`, or `mixed`.
    pub tokens_from: String,
    /// A `find_max` step: whether it met the load's SLO, and why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_check: Option<SloCheck>,
    /// On a `find_max` search's last step: what the search found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchResult>,
    /// The server's own view of the step, from its Prometheus `/metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerMetrics>,
}

/// A gauge over a step's scrapes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GaugeStats {
    pub mean: f64,
    pub max: f64,
}

/// One scrape's gauges, `t_s` seconds after the step's first scrape.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServerPoint {
    pub t_s: f64,
    pub running: Option<f64>,
    pub waiting: Option<f64>,
    pub kv_cache_usage: Option<f64>,
}

/// What the server's `/metrics` said during a step: scraped before, every second during and
/// after it. `exposed: false` with a `note` when the server has none (or none minerva knows).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerMetrics {
    pub url: String,
    pub exposed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Whose metric names matched: `vllm`, `tgi` or `llama.cpp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub scrapes: u64,
    /// Requests the server was running, and had waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<GaugeStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<GaugeStats>,
    /// KV-cache usage, a fraction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage: Option<GaugeStats>,
    /// Prompt and generated tokens the server counted during the step (counter deltas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generated_tokens: Option<f64>,
    /// Prompt tokens the server served from its prefix cache during the step (llama-server's
    /// `prompt_tokens_cached_total`, vLLM's `prefix_cache_hits_total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_prompt_tokens: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<ServerPoint>,
}

/// One search step judged against the SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloCheck {
    pub met: bool,
    /// Each bound the step broke, e.g. "ttft p99 812.0 ms > 500 ms".
    #[serde(default)]
    pub why: Vec<String>,
}

/// What a `find_max` search found: the highest rate or concurrency whose step met the SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// `rate` or `concurrency`.
    pub find_max: String,
    /// The SLO, as a sentence ("ttft p99 ≤ 500 ms, goodput ≥ 99%").
    pub slo: String,
    /// The highest value that met it; None when none did.
    pub best: Option<f64>,
    /// The lowest value that missed it; None when none did (the search reached its `max`).
    pub lowest_missed: Option<f64>,
    /// Every step in the order tried: value and whether it met the SLO.
    pub tried: Vec<(f64, bool)>,
    /// Why the search stopped.
    pub stopped: String,
}

impl Sample {
    /// The digest stored in `prompt_digest` for these prompt token ids.
    pub fn digest_ids(ids: &[u32]) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        for id in ids {
            h.update(id.to_le_bytes());
        }
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Mean time per output token after the first (TPOT).
    pub fn tpot_ms(&self) -> Option<f64> {
        let n = self.token_ms.len();
        if n < 2 {
            return None;
        }
        Some((self.token_ms[n - 1].0 - self.token_ms[0].0) / (n as f64 - 1.0))
    }

    /// Inter-token latencies.
    pub fn itl_ms(&self) -> impl Iterator<Item = f64> + '_ {
        self.token_ms.windows(2).map(|w| w[1].0 - w[0].0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tpot_and_itl_from_timestamps() {
        let mut s: Sample = serde_json::from_value(serde_json::json!({
            "job_id": "b/simulated/m/s", "stage": "b", "backend": "simulated", "model": "m",
            "scenario": "s", "params": {}, "rep": 0, "warmup": false, "simulated": true
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.tpot_ms(), None);
        s.token_ms = vec![Millis(50.0), Millis(60.0), Millis(75.0)];
        assert_eq!(s.tpot_ms(), Some(12.5));
        assert_eq!(s.itl_ms().collect::<Vec<_>>(), vec![10.0, 15.0]);
    }
}
