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
mod sse;

use super::{BackendError, SampleSink};
use crate::plan::BenchJob;
use serde_json::Value;
use std::time::Duration;

pub use load::{LoadSpec, Pattern};

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
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// Service-level bounds for goodput.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub endpoint: Endpoint,
    pub timeout: Duration,
    pub extra: serde_json::Map<String, Value>,
    pub ignore_eos: bool,
    pub temperature: f64,
    pub slo: Option<Slo>,
    pub load: LoadSpec,
}

fn param_err(name: &str, message: impl Into<String>) -> BackendError {
    BackendError::Param {
        name: name.into(),
        message: message.into(),
    }
}

fn positive(v: &Value, name: &str) -> Result<f64, BackendError> {
    v.as_f64()
        .filter(|x| x.is_finite() && *x > 0.0)
        .ok_or_else(|| param_err(name, format!("expected a positive number, found {v}")))
}

impl Config {
    pub fn from_job(job: &BenchJob) -> Result<Config, BackendError> {
        let p = &job.params;
        let base = p
            .get("base_url")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                param_err(
                    "base_url",
                    "required: the server's API root, e.g. http://127.0.0.1:8080/v1",
                )
            })?
            .trim_end_matches('/')
            .to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(param_err(
                "base_url",
                format!("`{base}` is not an http(s) URL"),
            ));
        }
        let endpoint = match p.get("endpoint").and_then(Value::as_str).unwrap_or("chat") {
            "chat" => Endpoint::Chat,
            "completions" => Endpoint::Completions,
            other => {
                return Err(param_err(
                    "endpoint",
                    format!("`{other}`: expected `chat` or `completions`"),
                ))
            }
        };
        // A synthetic prompt is token ids, which only the completions endpoint accepts.
        let endpoint = if job.scenario.prompt_tokens.is_some() {
            Endpoint::Completions
        } else {
            endpoint
        };
        let url = match endpoint {
            Endpoint::Chat => format!("{base}/chat/completions"),
            Endpoint::Completions => format!("{base}/completions"),
        };
        let api_key = match p.get("api_key_env") {
            None => None,
            Some(v) => {
                let name = v.as_str().ok_or_else(|| {
                    param_err(
                        "api_key_env",
                        "expected the name of an environment variable",
                    )
                })?;
                Some(std::env::var(name).map_err(|_| {
                    param_err(
                        "api_key_env",
                        format!("the environment variable `{name}` is not set"),
                    )
                })?)
            }
        };
        let timeout = match p.get("timeout") {
            None => Duration::from_secs(600),
            Some(v) => Duration::from_secs_f64(positive(v, "timeout")?),
        };
        let extra = match p.get("extra") {
            None => serde_json::Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(v) => {
                return Err(param_err(
                    "extra",
                    format!("expected a mapping of request fields, found {v}"),
                ))
            }
        };
        let slo = match p.get("slo") {
            None => None,
            Some(Value::Object(m)) => {
                let mut s = Slo::default();
                for (k, v) in m {
                    let x = positive(v, &format!("slo.{k}"))?;
                    match k.as_str() {
                        "ttft_ms" => s.ttft_ms = Some(x),
                        "tpot_ms" => s.tpot_ms = Some(x),
                        "e2e_ms" => s.e2e_ms = Some(x),
                        other => {
                            return Err(param_err(
                                "slo",
                                format!("unknown bound `{other}` (ttft_ms, tpot_ms, e2e_ms)"),
                            ))
                        }
                    }
                }
                Some(s)
            }
            Some(v) => {
                return Err(param_err(
                    "slo",
                    format!("expected {{ ttft_ms, tpot_ms, e2e_ms }}, found {v}"),
                ))
            }
        };
        Ok(Config {
            url,
            model: p
                .get("model")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| job.model.name.clone()),
            api_key,
            endpoint,
            timeout,
            extra,
            ignore_eos: p
                .get("ignore_eos")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            temperature: p.get("temperature").and_then(Value::as_f64).unwrap_or(0.0),
            slo,
            load: LoadSpec::from_param(p.get("load"), job)?,
        })
    }
}

/// Runs one bench job against the server.
pub fn run(job: &BenchJob, job_id: &str, sink: &mut dyn SampleSink) -> Result<(), BackendError> {
    let cfg = Config::from_job(job)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| BackendError::Engine(format!("cannot start the runtime: {e}")))?;
    rt.block_on(load::drive(job, job_id, &cfg, sink))
}

pub fn build_info() -> String {
    format!(
        "OpenAI-compatible HTTP client (minerva {}, reqwest, streaming SSE)",
        env!("CARGO_PKG_VERSION")
    )
}
