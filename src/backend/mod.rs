//! Backends: the one open extension point. A backend loads a model, runs a scenario and returns
//! timestamps and token counts; it never computes statistics (that is `analyze`'s job).
//!
//! Every bench job runs in a child process (`minerva worker`), so a crash inside an engine
//! becomes a failed job instead of a failed run. `worker` is that child's side.

pub mod candle;
pub mod chat;
pub(crate) mod driver;
pub mod llama_cpp;
pub mod mlx;
pub mod openai;
pub mod params;
pub mod simulated;
pub mod worker;

use crate::plan::BenchJob;
use crate::results::Sample;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Simulated,
    LlamaCpp,
    Candle,
    Mlx,
    Openai,
}

impl BackendKind {
    pub const ALL: [BackendKind; 5] = [
        BackendKind::Simulated,
        BackendKind::LlamaCpp,
        BackendKind::Candle,
        BackendKind::Mlx,
        BackendKind::Openai,
    ];

    pub fn parse(name: &str) -> Option<BackendKind> {
        match name {
            "simulated" | "mock" => Some(BackendKind::Simulated),
            "llama_cpp" => Some(BackendKind::LlamaCpp),
            "candle" => Some(BackendKind::Candle),
            "mlx" => Some(BackendKind::Mlx),
            "openai" => Some(BackendKind::Openai),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Simulated => "simulated",
            BackendKind::LlamaCpp => "llama_cpp",
            BackendKind::Candle => "candle",
            BackendKind::Mlx => "mlx",
            BackendKind::Openai => "openai",
        }
    }

    /// Parameters the backend understands; anything else in a matrix is a validation error.
    pub fn known_params(self) -> &'static [&'static str] {
        match self {
            BackendKind::Simulated => simulated::PARAMS,
            BackendKind::LlamaCpp => llama_cpp::PARAMS,
            BackendKind::Candle => candle::PARAMS,
            BackendKind::Mlx => mlx::PARAMS,
            BackendKind::Openai => openai::PARAMS,
        }
    }

    /// Problems with a job's param values (types, ranges, required keys), found at plan time
    /// by the same typed parse the worker runs; empty when the params are usable.
    pub fn check_params(
        self,
        params: &std::collections::BTreeMap<String, serde_json::Value>,
    ) -> Vec<params::ParamProblem> {
        match self {
            BackendKind::Simulated => params::problems::<simulated::SimulatedParams>(params),
            BackendKind::LlamaCpp => params::problems::<llama_cpp::LlamaParams>(params),
            BackendKind::Candle => params::problems::<candle::CandleParams>(params),
            BackendKind::Mlx => params::problems::<mlx::MlxParams>(params),
            BackendKind::Openai => params::problems::<openai::OpenaiParams>(params),
        }
    }

    /// Whether this build of minerva can run the backend. Pipelines naming the others validate
    /// and plan; their jobs fail with a clear message at run time.
    pub fn available(self) -> bool {
        match self {
            BackendKind::Mlx => mlx::AVAILABLE,
            _ => true,
        }
    }

    /// The backend's build, for the manifest (None for backends without one).
    pub fn build_info(self) -> Option<String> {
        match self {
            BackendKind::Simulated => Some("simulated latency model (no engine)".into()),
            BackendKind::LlamaCpp => Some(llama_cpp::build_info()),
            BackendKind::Candle => Some(candle::build_info()),
            BackendKind::Mlx => Some(mlx::build_info()),
            BackendKind::Openai => Some(openai::build_info()),
        }
    }

    /// What a job's params make the backend reach beyond the model: environment variables,
    /// files and servers. The plan checks these against the user's grants before anything runs.
    pub fn access(self, params: &std::collections::BTreeMap<String, serde_json::Value>) -> Access {
        let s = |k: &str| {
            params
                .get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
        };
        let mut a = Access::default();
        match self {
            BackendKind::Openai => {
                a.env.extend(s("api_key_env").map(|n| ("api_key_env", n)));
                a.urls.extend(s("base_url").map(|u| ("base_url", u)));
            }
            BackendKind::Candle | BackendKind::Mlx => {
                a.paths.extend(s("tokenizer").map(|p| ("tokenizer", p)));
            }
            BackendKind::Simulated | BackendKind::LlamaCpp => {}
        }
        a
    }

    /// How a job is sized: by a load (requests, duration: a server backend) rather than by
    /// `runs` repetitions.
    pub fn sized_by_load(self) -> bool {
        matches!(self, BackendKind::Openai)
    }

    /// The reference engine of output agreement when a pipeline names no `baseline`.
    pub fn is_reference(self) -> bool {
        matches!(self, BackendKind::LlamaCpp)
    }

    /// True when the backend's figures are not measurements.
    pub fn is_simulated(self) -> bool {
        matches!(self, BackendKind::Simulated)
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn unavailable_reason(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Mlx => mlx::UNAVAILABLE,
        _ => "unavailable on this build",
    }
}

/// What a backend reports while it runs: one call per finished repetition.
/// What a job reaches beyond its model (see [`BackendKind::access`]): (param, value) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    /// Environment variables read.
    pub env: Vec<(&'static str, String)>,
    /// Files read.
    pub paths: Vec<(&'static str, String)>,
    /// Servers contacted.
    pub urls: Vec<(&'static str, String)>,
}

pub trait SampleSink {
    fn sample(&mut self, sample: Sample) -> std::io::Result<()>;
}

/// Errors inside a worker; they end the job, and the parent records them as a failed sample.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend `{0}` is {reason}", reason = unavailable_reason(*.0))]
    Unavailable(BackendKind),
    #[error("invalid parameter `{name}`: {message}")]
    Param { name: String, message: String },
    #[error("{0}")]
    Engine(String),
    #[error("cannot write results: {0}")]
    Io(#[from] std::io::Error),
}

impl BackendError {
    /// `map_err(BackendError::engine("loading the model"))`: an engine error with its context.
    pub fn engine<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BackendError + '_ {
        move |e| BackendError::Engine(format!("{what}: {e}"))
    }
}

/// The clock of one repetition: every timestamp counts from the submit.
pub(crate) struct RepTimer {
    submit: std::time::Instant,
}

impl RepTimer {
    pub(crate) fn start() -> RepTimer {
        RepTimer {
            submit: std::time::Instant::now(),
        }
    }

    pub(crate) fn at(&self) -> crate::results::Millis {
        crate::results::Millis::from_duration(self.submit.elapsed())
    }
}

/// Generation rate of a text prompt: tokens after the first over first → last token.
pub(crate) fn text_tg_tps(token_ms: &[crate::results::Millis]) -> Option<f64> {
    match token_ms {
        [first, .., last] => {
            Some((token_ms.len() - 1) as f64 / ((last.0 - first.0) / 1e3).max(1e-9))
        }
        _ => None,
    }
}

/// Generation rate of a synthetic tg test, as llama-bench: every decoded token over the time
/// from the start of generation to the last token.
pub(crate) fn synthetic_tg_tps(
    token_ms: &[crate::results::Millis],
    gen_start: crate::results::Millis,
) -> f64 {
    let total = token_ms.last().map(|t| t.0 - gen_start.0).unwrap_or(0.0);
    token_ms.len() as f64 / (total / 1e3).max(1e-9)
}

/// The figures every in-process repetition ends with.
pub(crate) fn finish_rep(s: &mut Sample, timer: &RepTimer, sample_time: std::time::Duration) {
    s.ttft_ms = s.token_ms.first().copied();
    s.output_tokens = Some(s.token_ms.len() as u64);
    s.e2e_ms = Some(timer.at());
    s.sample_ms = Some(crate::results::Millis::from_duration(sample_time));
}

/// Runs one bench job in this process (the worker calls this).
pub fn run_job(
    job: &BenchJob,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    match job.backend {
        BackendKind::Simulated => simulated::run(job, job_id, sink),
        BackendKind::LlamaCpp => llama_cpp::run(job, job_id, sink),
        BackendKind::Candle => candle::run(job, job_id, sink),
        BackendKind::Mlx => mlx::run(job, job_id, sink),
        BackendKind::Openai => openai::run(job, job_id, sink),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names a matrix may use are exactly the fields of the backend's typed params.
    #[test]
    fn known_params_are_the_typed_fields() {
        for kind in BackendKind::ALL {
            let probe = std::collections::BTreeMap::from([(
                "__not_a_param__".to_string(),
                serde_json::json!(0),
            )]);
            let problems = kind.check_params(&probe);
            let message = &problems[0].message;
            let listed: Vec<&str> = message
                .split_once("expected one of ")
                .map(|(_, rest)| rest.split(", ").map(|n| n.trim_matches('`')).collect())
                .unwrap_or_default();
            assert_eq!(listed, kind.known_params(), "{kind}: {message}");
            // Every field alone, with no value that could be wrong for it: only range or
            // required-key checks may speak, never "unknown field".
            for name in kind.known_params() {
                let one =
                    std::collections::BTreeMap::from([(name.to_string(), serde_json::Value::Null)]);
                assert!(
                    kind.check_params(&one)
                        .iter()
                        .all(|p| !p.message.contains("unknown field")),
                    "{kind}.{name}"
                );
            }
        }
    }

    #[test]
    fn bad_values_are_found_before_the_worker() {
        let p = |v: serde_json::Value| -> std::collections::BTreeMap<String, serde_json::Value> {
            serde_json::from_value(v).unwrap()
        };
        let keys = |kind: BackendKind, v| -> Vec<String> {
            kind.check_params(&p(v))
                .into_iter()
                .map(|x| x.key)
                .collect()
        };
        assert_eq!(
            keys(BackendKind::LlamaCpp, serde_json::json!({"threads": "abc"})),
            ["threads"]
        );
        assert_eq!(
            keys(BackendKind::Openai, serde_json::json!({})),
            ["base_url"]
        );
        assert_eq!(
            keys(
                BackendKind::Openai,
                serde_json::json!({"base_url": "http://h/v1", "load": {"rate": -1}})
            ),
            ["load.rate"]
        );
        assert_eq!(
            keys(
                BackendKind::Openai,
                serde_json::json!({"base_url": "http://h/v1", "load": {"concurency": 4}})
            ),
            ["load.concurency"]
        );
        assert_eq!(
            keys(BackendKind::Candle, serde_json::json!({"dtype": "f99"})),
            ["dtype"]
        );
        assert!(keys(
            BackendKind::Openai,
            serde_json::json!({"base_url": "http://h/v1", "load": {"sweep": 3, "requests": 16}})
        )
        .is_empty());
    }
}
