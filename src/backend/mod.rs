//! Backends: the one open extension point. A backend loads a model, runs a scenario and returns
//! timestamps and token counts; it never computes statistics (that is `analyze`'s job).
//!
//! Every bench job runs in a child process (`minerva worker`), so a crash inside an engine
//! becomes a failed job instead of a failed run. `worker` is that child's side.

pub mod candle;
pub mod chat;
pub(crate) mod driver;
mod job;
pub mod llama_cpp;
pub mod mlx;
pub mod openai;
pub mod params;
pub mod simulated;
pub mod worker;

use crate::results::Sample;
pub use job::{relative_ci_half_width, BenchJob, Repetitions, UntilStable};
use params::{ParamMap, ParamProblem, TypedParams};
use serde::{Deserialize, Serialize};

/// One backend: everything minerva knows about an engine or a server kind. Adding a backend is a
/// module implementing this trait and one line in [`REGISTRY`]; nothing outside `src/backend/`
/// names a backend.
pub trait Backend: Sync + 'static {
    /// Its params as a pipeline writes them: checked by the plan, handed typed to [`run`].
    ///
    /// [`run`]: Backend::run
    type Params: TypedParams + schemars::JsonSchema;
    /// The name pipelines use.
    fn name(&self) -> &'static str;
    /// Other names pipelines may use.
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// Param names in the order messages list them (a test holds them to `Params`' fields).
    fn known_params(&self) -> &'static [&'static str];
    /// What a job's params make the backend reach beyond the model: environment variables,
    /// files and servers. The plan checks these against the user's grants.
    fn access(&self, _params: &Self::Params) -> Access {
        Access::default()
    }
    /// Why this build cannot run the backend; None when it can.
    fn unavailable(&self) -> Option<&'static str> {
        None
    }
    /// The backend's build, for the manifest.
    fn build_info(&self) -> String;
    /// A job is sized by a load (requests, duration: a server) rather than `runs` repetitions.
    fn sized_by_load(&self) -> bool {
        false
    }
    /// The reference engine of output agreement when a pipeline names no `baseline`.
    fn is_reference(&self) -> bool {
        false
    }
    /// Its figures are not measurements.
    fn is_simulated(&self) -> bool {
        false
    }
    /// Runs one bench job (in the worker process) with its typed params.
    fn run(
        &self,
        job: &BenchJob,
        params: Self::Params,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError>;
}

/// [`Backend`] without its params type, so that one registry can hold every backend.
pub trait DynBackend: Sync {
    fn name(&self) -> &'static str;
    fn aliases(&self) -> &'static [&'static str];
    fn known_params(&self) -> &'static [&'static str];
    fn check_params(&self, params: &ParamMap) -> Vec<ParamProblem>;
    fn params_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema;
    fn access(&self, params: &ParamMap) -> Access;
    fn unavailable(&self) -> Option<&'static str>;
    fn build_info(&self) -> String;
    fn sized_by_load(&self) -> bool;
    fn is_reference(&self) -> bool;
    fn is_simulated(&self) -> bool;
    fn run_job(
        &self,
        job: &BenchJob,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError>;
}

impl<B: Backend> DynBackend for B {
    fn name(&self) -> &'static str {
        Backend::name(self)
    }
    fn aliases(&self) -> &'static [&'static str] {
        Backend::aliases(self)
    }
    fn known_params(&self) -> &'static [&'static str] {
        Backend::known_params(self)
    }
    fn check_params(&self, params: &ParamMap) -> Vec<ParamProblem> {
        params::problems::<B::Params>(params)
    }
    fn params_schema(&self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        generator.subschema_for::<B::Params>()
    }
    /// Params that do not parse reach nothing (their errors are reported on their own).
    fn access(&self, params: &ParamMap) -> Access {
        match params::from_map::<B::Params>(params) {
            Ok(p) => Backend::access(self, &p),
            Err(_) => Access::default(),
        }
    }
    fn unavailable(&self) -> Option<&'static str> {
        Backend::unavailable(self)
    }
    fn build_info(&self) -> String {
        Backend::build_info(self)
    }
    fn sized_by_load(&self) -> bool {
        Backend::sized_by_load(self)
    }
    fn is_reference(&self) -> bool {
        Backend::is_reference(self)
    }
    fn is_simulated(&self) -> bool {
        Backend::is_simulated(self)
    }
    fn run_job(
        &self,
        job: &BenchJob,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        if let Some(reason) = Backend::unavailable(self) {
            return Err(BackendError::Unavailable {
                backend: Backend::name(self),
                reason,
            });
        }
        let p = params::parse::<B::Params>(&job.params)?;
        Backend::run(self, job, p, job_id, sink)
    }
}

/// Every backend, in the order reports and manifests list them.
pub static REGISTRY: &[&dyn DynBackend] = &[
    &simulated::Simulated,
    &llama_cpp::LlamaCpp,
    &candle::Candle,
    &mlx::Mlx,
    &openai::Openai,
];

/// A backend of the registry, as plans, jobs and samples name it (serialized as its name).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendKind(u8);

impl BackendKind {
    /// Every backend, in registry order.
    pub fn all() -> impl Iterator<Item = BackendKind> {
        (0..REGISTRY.len()).map(|i| BackendKind(i as u8))
    }

    /// The backend a pipeline's name (or alias) means.
    pub fn parse(name: &str) -> Option<BackendKind> {
        BackendKind::all().find(|k| k.imp().name() == name || k.imp().aliases().contains(&name))
    }

    /// The names pipelines may use, for messages.
    pub fn names() -> Vec<&'static str> {
        REGISTRY.iter().map(|b| b.name()).collect()
    }

    fn imp(self) -> &'static dyn DynBackend {
        REGISTRY[usize::from(self.0)]
    }

    pub fn name(self) -> &'static str {
        self.imp().name()
    }

    /// Other names pipelines may use for it.
    pub fn aliases(self) -> &'static [&'static str] {
        self.imp().aliases()
    }

    /// Parameters the backend understands; anything else in a matrix is a validation error.
    pub fn known_params(self) -> &'static [&'static str] {
        self.imp().known_params()
    }

    /// Problems with a job's param values (types, ranges, required keys), found at plan time
    /// by the same typed parse the worker runs; empty when the params are usable.
    pub fn check_params(self, params: &ParamMap) -> Vec<ParamProblem> {
        self.imp().check_params(params)
    }

    /// The JSON Schema of the backend's params.
    pub fn params_schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        self.imp().params_schema(generator)
    }

    /// Whether this build of minerva can run the backend. Pipelines naming the others validate
    /// and plan; their jobs fail (or are skipped) with a clear message at run time.
    pub fn available(self) -> bool {
        self.imp().unavailable().is_none()
    }

    /// The error of a job this build cannot run.
    pub fn unavailable_error(self) -> BackendError {
        BackendError::Unavailable {
            backend: self.name(),
            reason: self
                .imp()
                .unavailable()
                .unwrap_or("unavailable on this build"),
        }
    }

    /// The backend's build, for the manifest.
    pub fn build_info(self) -> String {
        self.imp().build_info()
    }

    /// What a job's params make the backend reach beyond the model (see [`Backend::access`]).
    pub fn access(self, params: &ParamMap) -> Access {
        self.imp().access(params)
    }

    /// See [`Backend::sized_by_load`].
    pub fn sized_by_load(self) -> bool {
        self.imp().sized_by_load()
    }

    /// See [`Backend::is_reference`].
    pub fn is_reference(self) -> bool {
        self.imp().is_reference()
    }

    /// True when the backend's figures are not measurements.
    pub fn is_simulated(self) -> bool {
        self.imp().is_simulated()
    }
}

impl std::fmt::Debug for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for BackendKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for BackendKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<BackendKind, D::Error> {
        let name = String::deserialize(d)?;
        BackendKind::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown backend `{name}` (known: {})",
                BackendKind::names().join(", ")
            ))
        })
    }
}

/// What a job reaches beyond its model (see [`Backend::access`]): (param, value) pairs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Access {
    /// Environment variables read.
    pub env: Vec<(&'static str, String)>,
    /// Files read.
    pub paths: Vec<(&'static str, String)>,
    /// Servers contacted.
    pub urls: Vec<(&'static str, String)>,
}

impl Access {
    /// A `tokenizer` param's file (candle, MLX): the one path such a backend reads.
    pub fn tokenizer(path: &Option<String>) -> Access {
        Access {
            paths: path.iter().map(|t| ("tokenizer", t.clone())).collect(),
            ..Default::default()
        }
    }
}

/// What a backend reports while it runs: one call per finished repetition or server request.
pub trait SampleSink {
    fn sample(&mut self, sample: Sample) -> std::io::Result<()>;
    /// Hands on what a sink held back. The worker's sink holds a burst of server-request
    /// samples for at most [`SAMPLE_BATCH`]; a load driver calls this on that tick.
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long the worker may hold a server-request sample before writing it to the runner. A
/// load test finishing hundreds of requests a second then wakes the runner (and writes its
/// pipe) 20 times a second, not once per request; every other sample is written at once.
pub const SAMPLE_BATCH: std::time::Duration = std::time::Duration::from_millis(50);

/// Errors inside a worker; they end the job, and the parent records them as a failed sample.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend `{backend}` is {reason}")]
    Unavailable {
        backend: &'static str,
        reason: &'static str,
    },
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

/// The clock of one repetition: every timestamp counts from the submit. It also reads the
/// CPU package energy counters (where readable) at the start, for the repetition's joules.
pub(crate) struct RepTimer {
    submit: std::time::Instant,
    energy: Option<(&'static crate::energy::Meter, Vec<u64>)>,
}

impl RepTimer {
    pub(crate) fn start() -> RepTimer {
        Self::start_with(crate::energy::meter())
    }

    pub(crate) fn start_with(meter: Option<&'static crate::energy::Meter>) -> RepTimer {
        RepTimer {
            energy: meter.and_then(|m| Some((m, m.read()?))),
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
    s.energy_j = timer
        .energy
        .as_ref()
        .and_then(|(m, start)| Some(m.joules(start, &m.read()?)));
}

/// Runs one bench job in this process (the worker calls this).
pub fn run_job(
    job: &BenchJob,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    job.backend.imp().run_job(job, job_id, sink)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repetition's joules are the package counters' increase between its start and its end.
    #[test]
    fn a_repetition_records_the_energy_it_took() {
        let root = crate::energy::tests::fake_root(1_000_000, u64::MAX);
        let meter: &'static crate::energy::Meter = Box::leak(Box::new(
            crate::energy::Meter::open_at(root.path()).unwrap_or_else(|e| panic!("{e}")),
        ));
        let timer = RepTimer::start_with(Some(meter));
        std::fs::write(root.path().join("intel-rapl:0/energy_uj"), "4250000")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut s: Sample = serde_json::from_value(serde_json::json!({
            "job_id": "j", "stage": "b", "backend": "llama_cpp", "model": "m",
            "scenario": "s", "params": {}, "rep": 0, "warmup": false, "simulated": false
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        finish_rep(&mut s, &timer, std::time::Duration::ZERO);
        assert_eq!(s.energy_j, Some(3.25));
        // Without counters, nothing is recorded.
        let mut t = s.clone();
        finish_rep(
            &mut t,
            &RepTimer::start_with(None),
            std::time::Duration::ZERO,
        );
        assert_eq!(t.energy_j, None);
    }

    /// The names a matrix may use are exactly the fields of the backend's typed params.
    #[test]
    fn known_params_are_the_typed_fields() {
        for kind in BackendKind::all() {
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
            keys(
                BackendKind::parse("llama_cpp").unwrap(),
                serde_json::json!({"threads": "abc"})
            ),
            ["threads"]
        );
        assert_eq!(
            keys(BackendKind::parse("openai").unwrap(), serde_json::json!({})),
            ["base_url"]
        );
        assert_eq!(
            keys(
                BackendKind::parse("openai").unwrap(),
                serde_json::json!({"base_url": "http://h/v1", "load": {"rate": -1}})
            ),
            ["load.rate"]
        );
        assert_eq!(
            keys(
                BackendKind::parse("openai").unwrap(),
                serde_json::json!({"base_url": "http://h/v1", "load": {"concurency": 4}})
            ),
            ["load.concurency"]
        );
        assert_eq!(
            keys(
                BackendKind::parse("candle").unwrap(),
                serde_json::json!({"dtype": "f99"})
            ),
            ["dtype"]
        );
        assert!(keys(
            BackendKind::parse("openai").unwrap(),
            serde_json::json!({"base_url": "http://h/v1", "load": {"sweep": 3, "requests": 16}})
        )
        .is_empty());
    }
}
