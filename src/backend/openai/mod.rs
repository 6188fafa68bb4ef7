//! The `openai` backend: benchmarks an OpenAI-compatible server (llama-server, vLLM, TGI,
//! Ollama, mistral.rs, ...) over streaming requests, under a load pattern.
//!
//! Each request is one sample. Its latencies count from the request's *intended* send time,
//! so an open-loop test that falls behind (or a server that stalls) shows up in the figures
//! instead of silently stretching the schedule (coordinated omission). A token's time is when
//! the bytes that carried it arrived, taken before any parsing. Failed requests are samples
//! with a `request.failure` (kind + message): counted per kind, never averaged. Each load step
//! ends with a summary sample: achieved vs target rate, schedule lag, the client's own CPU use,
//! CLIENT-BOUND when the client rather than the server set the pace, and goodput under an SLO.

mod load;
mod metrics;
mod sse;

use super::{BackendError, SampleSink};
use crate::backend::BenchJob;
use serde_json::Value;
use std::time::Duration;

pub use load::{LoadParams, LoadSpec, Pattern};

use super::params::{self, ParamProblem, TypedParams};

pub const PARAMS: &[&str] = &[
    "base_url",
    "model",
    "api_key_env",
    "endpoint",
    "timeout",
    "extra",
    "load",
    "slo",
    "ignore_eos",
    "temperature",
    "metrics",
    "metrics_url",
    "client_threads",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Chat,
    Completions,
}

/// Service-level bounds for goodput.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

/// The openai backend: any OpenAI-compatible HTTP server.
pub struct Openai;

impl super::Backend for Openai {
    type Params = OpenaiParams;
    fn name(&self) -> &'static str {
        "openai"
    }
    fn known_params(&self) -> &'static [&'static str] {
        PARAMS
    }
    fn access(&self, p: &OpenaiParams) -> super::Access {
        super::Access {
            env: p
                .api_key_env
                .iter()
                .map(|n| ("api_key_env", n.clone()))
                .collect(),
            urls: p
                .base_url
                .iter()
                .map(|u| ("base_url", u.clone()))
                .chain(p.metrics_url.iter().map(|u| ("metrics_url", u.clone())))
                .collect(),
            ..Default::default()
        }
    }
    fn build_info(&self) -> String {
        build_info()
    }
    fn sized_by_load(&self) -> bool {
        true
    }
    fn run(
        &self,
        job: &BenchJob,
        params: OpenaiParams,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        run(job, Config::new(job, params)?, job_id, sink)
    }
}

/// The openai backend's params, as a pipeline writes them.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenaiParams {
    /// The server's API root, e.g. `http://127.0.0.1:8080/v1` (required).
    pub base_url: Option<String>,
    /// The model name sent in requests (default: the pipeline's model name).
    pub model: Option<String>,
    /// The environment variable holding the API key (the user grants it).
    pub api_key_env: Option<String>,
    /// `chat` (default) or `completions`; synthetic prompts always use completions.
    pub endpoint: Option<Endpoint>,
    /// Per-request timeout, seconds (default 600).
    pub timeout: Option<f64>,
    /// Extra request fields.
    pub extra: Option<serde_json::Map<String, Value>>,
    /// The load pattern: `sequential` (default) or a mapping (see [`load::LoadParams`]).
    #[schemars(with = "Option<load::LoadSchema>")]
    pub load: Option<Value>,
    /// Bounds for goodput.
    pub slo: Option<Slo>,
    /// Ask the server to ignore end-of-sequence (default false).
    pub ignore_eos: Option<bool>,
    /// Sampling temperature (default 0).
    pub temperature: Option<f64>,
    /// Scrape the server's Prometheus metrics during each load step (default true).
    pub metrics: Option<bool>,
    /// Where the server's Prometheus metrics are (default: `base_url` without `/v1`, then
    /// `/metrics`, as vLLM, TGI and llama-server with `--metrics` serve them).
    pub metrics_url: Option<String>,
    /// Threads of the client's runtime (default 1: every request on one thread, the least CPU
    /// per streamed event; more for loads beyond what one core can drive).
    pub client_threads: Option<u32>,
}

impl TypedParams for OpenaiParams {
    fn check(&self) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        match self.base_url.as_deref().map(|u| u.trim_end_matches('/')) {
            None => out.push(
                ParamProblem::new("base_url", "required: the server's API root")
                    .hint("e.g. base_url: http://127.0.0.1:8080/v1"),
            ),
            Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => out.push(
                ParamProblem::new("base_url", format!("`{u}` is not an http(s) URL")),
            ),
            Some(_) => {}
        }
        if let Some(name) = &self.api_key_env {
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                out.push(ParamProblem::new(
                    "api_key_env",
                    format!("`{name}` is not the name of an environment variable"),
                ));
            }
        }
        if let Some(u) = &self.metrics_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                out.push(ParamProblem::new(
                    "metrics_url",
                    format!("`{u}` is not an http(s) URL"),
                ));
            }
            if self.metrics == Some(false) {
                out.push(ParamProblem::new(
                    "metrics_url",
                    "is set, but `metrics: false` turns scraping off",
                ));
            }
        }
        if let Some(t) = self.client_threads.filter(|t| !(1..=256).contains(t)) {
            out.push(ParamProblem::new(
                "client_threads",
                format!("expected 1 to 256, found {t}"),
            ));
        }
        params::check_number("timeout", self.timeout, 0.0, true, &mut out);
        params::check_number("temperature", self.temperature, 0.0, false, &mut out);
        if let Some(slo) = &self.slo {
            params::check_number("slo.ttft_ms", slo.ttft_ms, 0.0, true, &mut out);
            params::check_number("slo.tpot_ms", slo.tpot_ms, 0.0, true, &mut out);
            params::check_number("slo.e2e_ms", slo.e2e_ms, 0.0, true, &mut out);
        }
        if let Err(e) = LoadParams::from_param(self.load.as_ref()) {
            out.push(e);
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Parsed once: a request costs no URL parse.
    pub url: reqwest::Url,
    pub model: String,
    pub api_key: Option<String>,
    pub endpoint: Endpoint,
    pub timeout: Duration,
    pub extra: serde_json::Map<String, Value>,
    pub ignore_eos: bool,
    pub temperature: f64,
    pub slo: Option<Slo>,
    pub load: LoadSpec,
    /// The Prometheus endpoint scraped during each step (None: scraping is off).
    pub metrics_url: Option<String>,
    pub client_threads: u32,
}

impl Config {
    /// The job's request settings; reads the API key's variable (granted, in the worker).
    pub fn new(job: &BenchJob, p: OpenaiParams) -> Result<Config, BackendError> {
        let base = p
            .base_url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        // A synthetic prompt is token ids, which only the completions endpoint accepts.
        let token_prompts = job.scenario.prompt_tokens.is_some()
            || job
                .scenario
                .workload
                .as_ref()
                .is_some_and(|w| w.input_tokens.is_some());
        let endpoint = if token_prompts {
            Endpoint::Completions
        } else {
            p.endpoint.unwrap_or(Endpoint::Chat)
        };
        let url = match endpoint {
            Endpoint::Chat => format!("{base}/chat/completions"),
            Endpoint::Completions => format!("{base}/completions"),
        };
        let url = reqwest::Url::parse(&url).map_err(|e| BackendError::Param {
            name: "base_url".into(),
            message: format!("`{url}` is not a URL: {e}"),
        })?;
        let api_key = match &p.api_key_env {
            None => None,
            Some(name) => Some(std::env::var(name).map_err(|_| BackendError::Param {
                name: "api_key_env".into(),
                message: format!("the environment variable `{name}` is not set"),
            })?),
        };
        Ok(Config {
            url,
            model: p.model.clone().unwrap_or_else(|| job.model.name.clone()),
            api_key,
            endpoint,
            timeout: Duration::from_secs_f64(p.timeout.unwrap_or(600.0)),
            extra: p.extra.clone().unwrap_or_default(),
            ignore_eos: p.ignore_eos.unwrap_or(false),
            temperature: p.temperature.unwrap_or(0.0),
            slo: p.slo,
            load: LoadSpec::from_param(p.load.as_ref(), job)?,
            client_threads: p.client_threads.unwrap_or(1),
            metrics_url: match p.metrics {
                Some(false) => None,
                _ => Some(
                    p.metrics_url
                        .clone()
                        .unwrap_or_else(|| metrics::default_url(&base)),
                ),
            },
        })
    }
}

/// Runs one bench job against the server.
fn run(
    job: &BenchJob,
    cfg: Config,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    // One thread by default: each streamed event wakes one thread, with no hand-off between
    // threads, so the client takes as little CPU as it can from a server sharing the machine.
    let rt = match cfg.client_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n as usize)
            .enable_all()
            .build(),
    }
    .map_err(|e| BackendError::Engine(format!("cannot start the runtime: {e}")))?;
    rt.block_on(load::drive(job, job_id, &cfg, sink))
}

pub fn build_info() -> String {
    format!(
        "OpenAI-compatible HTTP client (minerva {}, reqwest, streaming SSE)",
        env!("CARGO_PKG_VERSION")
    )
}
