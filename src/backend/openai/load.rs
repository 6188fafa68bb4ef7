//! Load patterns and the request loop of the `openai` backend.
//!
//! Closed loop (`sequential`, `concurrency: N`): N clients, each sending its next request when
//! the previous one finished. Open loop (`rate: R`, constant or Poisson arrivals from a seeded
//! generator): requests go at their scheduled times whatever the server does; latency counts
//! from the scheduled time, and the lag between scheduled and actual send is recorded. `sweep:
//! K` runs closed-loop steps at concurrency 1, 2, 4, ... until throughput stops growing (under
//! 5% gain: saturation) or K steps ran.

use super::sse::{Event, Parser};
use super::{BackendError, Config, Endpoint, SampleSink};
use crate::backend::params::{self, ParamProblem};
use crate::backend::BenchJob;
use crate::results::{
    LoadSummary, Millis, RequestFailure, RequestFailureKind, RequestInfo, Sample, SearchResult,
    SloCheck, TokenSource,
};
use crate::spec::Templated;
use crate::workload::{Content, Generator, Workload};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Re-sends of a request whose pooled connection turned out closed (several may be stale at
/// once under concurrency).
const STALE_RETRIES: usize = 3;

/// A send more than this late counts as late.
pub const LATE_MS: f64 = 2.0;

#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    /// Closed loop with this many clients (1 = sequential).
    Concurrency(u32),
    /// Open loop at `rps` requests per second: constant spacing without `burstiness`, else
    /// gamma-distributed gaps of that shape (1 = Poisson); at most `max_concurrency` in flight.
    Rate {
        rps: f64,
        burstiness: Option<f64>,
        max_concurrency: Option<u32>,
    },
    /// Closed-loop steps at concurrency 1, 2, 4, ... (at most this many).
    Sweep { steps: u32 },
    /// Steps searching for the highest rate or concurrency that meets an SLO.
    FindMax(Box<Search>),
}

/// What `find_max` searches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FindMax {
    Rate,
    Concurrency,
}

/// A load step's service-level objective: percentile bounds over the step's successful
/// requests, and the share of requests that must succeed (and meet the `slo` param's
/// per-request bounds, when it has any).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SloTarget {
    pub ttft_p50_ms: Option<f64>,
    pub ttft_p90_ms: Option<f64>,
    pub ttft_p95_ms: Option<f64>,
    pub ttft_p99_ms: Option<f64>,
    pub tpot_p50_ms: Option<f64>,
    pub tpot_p90_ms: Option<f64>,
    pub tpot_p95_ms: Option<f64>,
    pub tpot_p99_ms: Option<f64>,
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p90_ms: Option<f64>,
    pub e2e_p95_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
    /// The share of a step's requests that must succeed (and meet the `slo` param's bounds);
    /// default 0.99.
    pub goodput: Option<f64>,
}

/// Which latency a bound is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    Ttft,
    Tpot,
    E2e,
}

impl Latency {
    fn name(self) -> &'static str {
        match self {
            Latency::Ttft => "ttft",
            Latency::Tpot => "tpot",
            Latency::E2e => "e2e",
        }
    }
}

impl SloTarget {
    /// Every bound by its key: (key, latency, percentile, bound in ms if set).
    fn named(&self) -> [(&'static str, Latency, u32, Option<f64>); 12] {
        [
            ("ttft_p50_ms", Latency::Ttft, 50, self.ttft_p50_ms),
            ("ttft_p90_ms", Latency::Ttft, 90, self.ttft_p90_ms),
            ("ttft_p95_ms", Latency::Ttft, 95, self.ttft_p95_ms),
            ("ttft_p99_ms", Latency::Ttft, 99, self.ttft_p99_ms),
            ("tpot_p50_ms", Latency::Tpot, 50, self.tpot_p50_ms),
            ("tpot_p90_ms", Latency::Tpot, 90, self.tpot_p90_ms),
            ("tpot_p95_ms", Latency::Tpot, 95, self.tpot_p95_ms),
            ("tpot_p99_ms", Latency::Tpot, 99, self.tpot_p99_ms),
            ("e2e_p50_ms", Latency::E2e, 50, self.e2e_p50_ms),
            ("e2e_p90_ms", Latency::E2e, 90, self.e2e_p90_ms),
            ("e2e_p95_ms", Latency::E2e, 95, self.e2e_p95_ms),
            ("e2e_p99_ms", Latency::E2e, 99, self.e2e_p99_ms),
        ]
    }

    /// The percentile bounds set: (latency, percentile, bound in ms).
    pub fn bounds(&self) -> Vec<(Latency, u32, f64)> {
        self.named()
            .into_iter()
            .filter_map(|(_, l, q, b)| b.map(|b| (l, q, b)))
            .collect()
    }

    pub fn goodput(&self) -> f64 {
        self.goodput.unwrap_or(0.99)
    }

    /// Requests a step needs for its percentiles to be claimed (p99: 662).
    pub fn min_requests(&self) -> u64 {
        use crate::results::{MIN_SAMPLES_P90, MIN_SAMPLES_P95, MIN_SAMPLES_P99};
        self.bounds()
            .iter()
            .map(|(_, q, _)| match q {
                99 => MIN_SAMPLES_P99,
                95 => MIN_SAMPLES_P95,
                90 => MIN_SAMPLES_P90,
                _ => 1,
            })
            .max()
            .unwrap_or(1)
    }

    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .bounds()
            .iter()
            .map(|(l, q, b)| format!("{} p{q} ≤ {b} ms", l.name()))
            .collect();
        parts.push(format!("goodput ≥ {}%", 100.0 * self.goodput()));
        parts.join(", ")
    }

    fn check(&self, out: &mut Vec<ParamProblem>) {
        for (k, _, _, v) in self.named() {
            params::check_number(&format!("load.slo.{k}"), v, 0.0, true, out);
        }
        if let Some(g) = self.goodput.filter(|g| !(*g > 0.0 && *g <= 1.0)) {
            out.push(ParamProblem::new(
                "load.slo.goodput",
                format!("a fraction of requests: expected above 0 and at most 1, found {g}"),
            ));
        }
    }
}

/// A `find_max` search's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub what: FindMax,
    pub slo: SloTarget,
    /// The first value tried; None: half the rate a closed-loop probe completes (rate), or 1
    /// (concurrency).
    pub start: Option<f64>,
    /// The highest value tried.
    pub max: f64,
    /// The search stops when the bracket is this narrow (relative to its low end).
    pub precision: f64,
    pub max_steps: u32,
    /// Applied to every rate step.
    pub burstiness: Option<f64>,
    pub max_concurrency: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    pub pattern: Pattern,
    /// Measured requests per step (at most).
    pub requests: Option<u64>,
    /// Length of each step (at most).
    pub duration: Option<Duration>,
    /// Unmeasured requests before the first step, sent one at a time.
    pub warmup: u64,
    /// Seed of Poisson arrivals and synthetic prompts.
    pub seed: u64,
}

/// How arrivals are spaced in an open loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    #[default]
    Constant,
    Poisson,
    /// Gamma-distributed gaps of shape `burstiness` (below 1 burstier than Poisson).
    Gamma,
}

/// The `load` param's schema: `sequential` or a [`LoadParams`] mapping.
pub struct LoadSchema;

impl schemars::JsonSchema for LoadSchema {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Load".into()
    }
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let mapping = generator.subschema_for::<LoadParams>();
        schemars::json_schema!({
            "description": "`sequential` (the default) or one load pattern with its bounds",
            "oneOf": [{ "const": "sequential" }, mapping]
        })
    }
}

/// The `load` param's mapping, as a pipeline writes it (`load: sequential` is the default).
/// Its numbers may be templates (`requests: "{{ vars.runs }}"`), rendered before this parse.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoadParams {
    /// One request at a time.
    pub sequential: Option<bool>,
    /// Closed loop with N clients.
    #[schemars(with = "Option<Templated<u32>>")]
    pub concurrency: Option<u32>,
    /// Open loop at R requests/s.
    #[schemars(with = "Option<Templated<f64>>")]
    pub rate: Option<f64>,
    /// Spacing of the open loop's arrivals (default constant; `gamma` with `burstiness`).
    pub arrival: Option<Arrival>,
    /// The gamma shape of the open loop's gaps: 1 is Poisson, below 1 burstier, above 1 more
    /// regular (vLLM's `--burstiness`); implies `arrival: gamma`.
    #[schemars(with = "Option<Templated<f64>>")]
    pub burstiness: Option<f64>,
    /// An open loop's cap on requests in flight: a request due while the cap is reached waits
    /// for a slot, and its latency still counts from its scheduled time.
    #[schemars(with = "Option<Templated<u32>>")]
    pub max_concurrency: Option<u32>,
    /// Closed-loop steps at concurrency 1, 2, 4, ..., at most K (1 to 16).
    #[schemars(with = "Option<Templated<u32>>")]
    pub sweep: Option<u32>,
    /// Search for the highest `rate` or `concurrency` whose step meets `slo`: bracket by
    /// doubling (or halving), then bisect.
    pub find_max: Option<FindMax>,
    /// The SLO a `find_max` step must meet.
    pub slo: Option<SloTarget>,
    /// `find_max`: the first value tried (default: rate, half what a closed-loop probe at
    /// concurrency 16 completes; concurrency, 1).
    #[schemars(with = "Option<Templated<f64>>")]
    pub start: Option<f64>,
    /// `find_max`: the highest value tried (default: rate 100000/s, concurrency 1024).
    #[schemars(with = "Option<Templated<f64>>")]
    pub max: Option<f64>,
    /// `find_max`: stop when the bracket's width is at most this fraction of its low end
    /// (default 0.05; concurrency stops at a width of 1 anyway).
    #[schemars(with = "Option<Templated<f64>>")]
    pub precision: Option<f64>,
    /// `find_max`: at most this many steps (default 12).
    #[schemars(with = "Option<Templated<u32>>")]
    pub max_steps: Option<u32>,
    /// Measured requests per step (default: the stage's runs).
    #[schemars(with = "Option<Templated<u64>>")]
    pub requests: Option<u64>,
    /// Length of each step, seconds.
    #[schemars(with = "Option<Templated<f64>>")]
    pub duration: Option<f64>,
    /// Unmeasured requests before the first step (default: the stage's warmup).
    #[schemars(with = "Option<Templated<u64>>")]
    pub warmup: Option<u64>,
    /// Seed of Poisson arrivals and synthetic prompts (default: the job's seed).
    #[schemars(with = "Option<Templated<u64>>")]
    pub seed: Option<u64>,
}

impl LoadParams {
    /// Parses the `load` param: absent, `sequential`, or a mapping.
    pub fn from_param(v: Option<&Value>) -> Result<LoadParams, ParamProblem> {
        match v {
            None => Ok(LoadParams::default()),
            Some(Value::String(s)) if s == "sequential" => Ok(LoadParams::default()),
            Some(Value::Object(_)) => {
                let p: LoadParams = crate::backend::params::from_value(
                    v.cloned().unwrap_or_default(),
                )
                .map_err(|mut e| {
                    e.key = format!("load.{}", e.key);
                    e
                })?;
                match p.check().into_iter().next() {
                    Some(problem) => Err(problem),
                    None => Ok(p),
                }
            }
            Some(other) => Err(ParamProblem::new(
                "load",
                format!("expected `sequential` or a mapping, found {other}"),
            )
            .hint("sequential, { concurrency: N }, { rate: R }, { sweep: K }")),
        }
    }

    fn check(&self) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        let patterns: Vec<&str> = [
            ("sequential", self.sequential == Some(true)),
            ("concurrency", self.concurrency.is_some()),
            ("rate", self.rate.is_some()),
            ("sweep", self.sweep.is_some()),
            ("find_max", self.find_max.is_some()),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        match patterns.len() {
            0 => out.push(ParamProblem::new("load", "names no pattern").hint(
                "sequential: true, concurrency: N, rate: R, sweep: K or find_max: rate|concurrency",
            )),
            1 => {}
            _ => out.push(ParamProblem::new(
                "load",
                format!("names {} patterns; a load has one", patterns.join(" and ")),
            )),
        }
        let open = self.rate.is_some() || self.find_max == Some(FindMax::Rate);
        if self.arrival.is_some() && !open {
            out.push(ParamProblem::new(
                "load.arrival",
                "spaces an open loop's requests: it needs `rate`",
            ));
        }
        if self.burstiness.is_some() && !open {
            out.push(ParamProblem::new(
                "load.burstiness",
                "shapes an open loop's arrivals: it needs `rate`",
            ));
        }
        if self.burstiness.is_some()
            && matches!(self.arrival, Some(Arrival::Constant | Arrival::Poisson))
        {
            out.push(
                ParamProblem::new(
                    "load.burstiness",
                    "applies to gamma arrivals, not to the `arrival` named",
                )
                .hint("arrival: gamma (or leave `arrival` out); burstiness 1 is Poisson"),
            );
        }
        if self.arrival == Some(Arrival::Gamma) && self.burstiness.is_none() {
            out.push(ParamProblem::new(
                "load.burstiness",
                "required with `arrival: gamma`: the gamma shape (1 = Poisson)",
            ));
        }
        params::check_number("load.burstiness", self.burstiness, 0.0, true, &mut out);
        if self.max_concurrency.is_some() && !open {
            out.push(
                ParamProblem::new("load.max_concurrency", "caps an open loop: it needs `rate`")
                    .hint("a closed loop's cap is its `concurrency`"),
            );
        }
        if self.max_concurrency == Some(0) {
            out.push(ParamProblem::new(
                "load.max_concurrency",
                "expected at least 1, found 0",
            ));
        }
        if self.concurrency == Some(0) {
            out.push(ParamProblem::new(
                "load.concurrency",
                "expected at least 1, found 0",
            ));
        }
        if let Some(k) = self.sweep.filter(|k| !(1..=16).contains(k)) {
            out.push(ParamProblem::new(
                "load.sweep",
                format!("expected 1 to 16, found {k}"),
            ));
        }
        if self.requests == Some(0) {
            out.push(ParamProblem::new(
                "load.requests",
                "expected at least 1, found 0",
            ));
        }
        params::check_number("load.rate", self.rate, 0.0, true, &mut out);
        self.check_search(&mut out);
        params::check_number("load.duration", self.duration, 0.0, true, &mut out);
        out
    }
}

impl LoadParams {
    fn check_search(&self, out: &mut Vec<ParamProblem>) {
        let searching = self.find_max.is_some();
        for (k, set) in [
            ("slo", self.slo.is_some()),
            ("start", self.start.is_some()),
            ("max", self.max.is_some()),
            ("precision", self.precision.is_some()),
            ("max_steps", self.max_steps.is_some()),
        ] {
            if set && !searching {
                out.push(
                    ParamProblem::new(format!("load.{k}"), "belongs to a `find_max` search")
                        .hint("load: { find_max: rate, slo: { ttft_p99_ms: 500 } }; a per-request bound for goodput is the `slo` param beside `load`"),
                );
            }
        }
        if !searching {
            return;
        }
        match &self.slo {
            None => out.push(
                ParamProblem::new(
                    "load.slo",
                    "required with `find_max`: the SLO a step must meet",
                )
                .hint("slo: { ttft_p99_ms: 500, tpot_p99_ms: 50, goodput: 0.99 }"),
            ),
            Some(slo) => {
                slo.check(out);
                let need = slo.min_requests();
                if let Some(n) = self.requests.filter(|n| *n < need) {
                    out.push(ParamProblem::new(
                        "load.requests",
                        format!(
                            "{n} requests per step are too few for the SLO's percentiles (p99 needs 662, p95 130, p90 64): at least {need}"
                        ),
                    ));
                }
            }
        }
        if self.duration.is_some() {
            out.push(ParamProblem::new(
                "load.duration",
                "a `find_max` step is sized by `requests`, so every step's percentiles rest on as many requests",
            ));
        }
        params::check_number("load.start", self.start, 0.0, true, out);
        params::check_number("load.max", self.max, 0.0, true, out);
        if let Some(p) = self.precision.filter(|p| !(*p > 0.0 && *p < 1.0)) {
            out.push(ParamProblem::new(
                "load.precision",
                format!("expected above 0 and below 1, found {p}"),
            ));
        }
        if let Some(k) = self.max_steps.filter(|k| !(2..=64).contains(k)) {
            out.push(ParamProblem::new(
                "load.max_steps",
                format!("expected 2 to 64, found {k}"),
            ));
        }
        if let (Some(a), Some(b)) = (self.start, self.max) {
            if a > b {
                out.push(ParamProblem::new(
                    "load.start",
                    format!("{a} is above `max` {b}"),
                ));
            }
        }
    }
}

impl LoadSpec {
    pub fn from_param(v: Option<&Value>, job: &BenchJob) -> Result<LoadSpec, BackendError> {
        let p = LoadParams::from_param(v)?;
        let burstiness = match p.arrival {
            Some(Arrival::Poisson) => Some(1.0),
            _ => p.burstiness,
        };
        let pattern = match (p.concurrency, p.rate, p.sweep) {
            _ if p.find_max.is_some() => {
                let what = p.find_max.unwrap_or(FindMax::Rate);
                Pattern::FindMax(Box::new(Search {
                    what,
                    slo: p.slo.unwrap_or_default(),
                    start: p.start,
                    max: p.max.unwrap_or(match what {
                        FindMax::Rate => 100_000.0,
                        FindMax::Concurrency => 1024.0,
                    }),
                    precision: p.precision.unwrap_or(0.05),
                    max_steps: p.max_steps.unwrap_or(12),
                    burstiness,
                    max_concurrency: p.max_concurrency,
                }))
            }
            (Some(n), _, _) => Pattern::Concurrency(n),
            (_, Some(rps), _) => Pattern::Rate {
                rps,
                burstiness,
                max_concurrency: p.max_concurrency,
            },
            (_, _, Some(steps)) => Pattern::Sweep { steps },
            _ => Pattern::Concurrency(1),
        };
        let duration = p.duration.map(Duration::from_secs_f64);
        let min_requests = match &pattern {
            Pattern::FindMax(s) => s.slo.min_requests(),
            _ => 1,
        };
        Ok(LoadSpec {
            pattern,
            requests: p.requests.or_else(|| {
                duration
                    .is_none()
                    .then_some(u64::from(job.runs).max(min_requests))
            }),
            duration,
            warmup: p.warmup.unwrap_or(u64::from(job.warmup)),
            seed: p.seed.unwrap_or(job.seed),
        })
    }

    fn describe(p: &Pattern) -> String {
        match p {
            Pattern::Concurrency(1) => "sequential".into(),
            Pattern::Concurrency(n) => format!("concurrency {n}"),
            Pattern::Rate {
                rps,
                burstiness,
                max_concurrency,
            } => {
                let mut s = match burstiness {
                    None => format!("constant {rps}/s"),
                    Some(b) if *b == 1.0 => format!("poisson {rps}/s"),
                    Some(b) => format!("gamma(shape {b}) {rps}/s"),
                };
                if let Some(c) = max_concurrency {
                    s.push_str(&format!(", at most {c} in flight"));
                }
                s
            }
            Pattern::Sweep { steps } => format!("sweep {steps}"),
            Pattern::FindMax(s) => format!(
                "find_max {}",
                match s.what {
                    FindMax::Rate => "rate",
                    FindMax::Concurrency => "concurrency",
                }
            ),
        }
    }
}

/// Intended send times of an open-loop step, from its start: constant spacing, or gamma gaps
/// of shape `burstiness` and mean 1/rps (shape 1: exponential gaps, Poisson arrivals) from a
/// seeded generator, so the same seed gives the same schedule.
pub fn schedule(rps: f64, burstiness: Option<f64>, seed: u64, n: usize) -> Vec<Duration> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let gamma = burstiness.and_then(|k| rand_distr::Gamma::new(k, 1.0 / (rps * k)).ok());
    let mut t = 0.0f64;
    (0..n)
        .map(|i| {
            match (&gamma, burstiness) {
                (_, Some(1.0)) => {
                    if i > 0 {
                        let u: f64 = rng.random_range(f64::EPSILON..1.0);
                        t += -u.ln() / rps;
                    }
                }
                (Some(g), _) => {
                    if i > 0 {
                        t += rand_distr::Distribution::sample(g, &mut rng);
                    }
                }
                _ => t = i as f64 / rps,
            }
            Duration::from_secs_f64(t)
        })
        .collect()
}

/// One request ready to send, and the prompt length when the client knows it.
struct Request {
    body: Bytes,
    input_tokens: Option<u64>,
}

/// Request bodies: one shared body for a text prompt; otherwise made per request from the
/// job's workload: fresh random token ids for a synthetic prompt (so a server's prefix cache
/// cannot serve them unless a shared `prefix` asks for it), or a dataset's conversations.
struct Bodies {
    fixed: Option<Bytes>,
    template: serde_json::Map<String, Value>,
    endpoint: Endpoint,
    system: Option<String>,
    /// The user's `extra` fields, which win over minerva's own.
    extra: serde_json::Map<String, Value>,
    generator: Option<Generator>,
}

impl Bodies {
    fn new(job: &BenchJob, cfg: &Config, seed: u64) -> Result<Bodies, BackendError> {
        let sc = &job.scenario;
        let mut m = serde_json::Map::new();
        m.insert("model".into(), json!(cfg.model));
        m.insert("max_tokens".into(), json!(sc.max_tokens.max(1)));
        m.insert("temperature".into(), json!(cfg.temperature));
        m.insert("stream".into(), json!(true));
        m.insert("stream_options".into(), json!({ "include_usage": true }));
        if cfg.ignore_eos {
            m.insert("ignore_eos".into(), json!(true));
        }
        let synthetic = sc.prompt_tokens.filter(|_| sc.prompt.is_none());
        let generator = match (&sc.workload, synthetic) {
            (Some(w), _) => {
                let conversations = match &w.dataset {
                    None => Vec::new(),
                    Some(d) => load_checked(d)?,
                };
                Some(Generator::new(
                    w.clone(),
                    conversations,
                    seed,
                    sc.max_tokens,
                    synthetic,
                    sc.prompt.clone(),
                ))
            }
            (None, Some(n)) => Some(Generator::new(
                Workload {
                    dataset: None,
                    input_tokens: None,
                    output_tokens: None,
                    prefix: None,
                },
                Vec::new(),
                seed,
                sc.max_tokens,
                Some(n),
                None,
            )),
            (None, None) => None,
        };
        let mut b = Bodies {
            fixed: None,
            template: m,
            endpoint: cfg.endpoint,
            system: sc.system.clone(),
            extra: cfg.extra.clone(),
            generator,
        };
        if b.generator.is_none() {
            let prompt = sc.prompt.clone().unwrap_or_default();
            let msgs = vec![("user", prompt)];
            let body = b.make(&Content::Messages(msgs), sc.max_tokens.max(1));
            b.fixed = Some(body);
        }
        Ok(b)
    }

    fn make(&self, content: &Content, max_tokens: u64) -> Bytes {
        let mut m = self.template.clone();
        m.insert("max_tokens".into(), json!(max_tokens.max(1)));
        match (content, self.endpoint) {
            (Content::Tokens(ids), _) => {
                m.insert("prompt".into(), json!(ids));
            }
            (Content::Messages(msgs), Endpoint::Chat) => {
                let mut list: Vec<Value> = Vec::with_capacity(msgs.len() + 1);
                // The scenario's system message, unless the conversation brings its own.
                if let (Some(sys), false) =
                    (&self.system, msgs.first().is_some_and(|x| x.0 == "system"))
                {
                    list.push(json!({ "role": "system", "content": sys }));
                }
                list.extend(
                    msgs.iter()
                        .map(|(role, text)| json!({ "role": role, "content": text })),
                );
                m.insert("messages".into(), Value::Array(list));
            }
            (Content::Messages(msgs), Endpoint::Completions) => {
                // The text of the last user message alone for a one-turn prompt, as before
                // workloads; with history, every message's text in order.
                let text = match msgs.as_slice() {
                    [.., (_, last)] if msgs.iter().filter(|x| x.0 != "system").count() == 1 => {
                        last.clone()
                    }
                    _ => msgs
                        .iter()
                        .map(|x| x.1.as_str())
                        .collect::<Vec<_>>()
                        .join("\n\n"),
                };
                m.insert("prompt".into(), json!(text));
            }
        }
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Bytes::from(serde_json::to_vec(&Value::Object(m)).unwrap_or_default())
    }

    /// The most requests a conversation has.
    fn max_turns(&self) -> u32 {
        match (&self.generator, &self.fixed) {
            (Some(g), None) => g.max_turns(),
            _ => 1,
        }
    }

    /// Conversation `i`: its requests, sent in order, each after the previous one's answer.
    fn conversation(&self, i: u64) -> Vec<Request> {
        if let Some(b) = &self.fixed {
            return vec![Request {
                body: b.clone(),
                input_tokens: None,
            }];
        }
        let Some(g) = &self.generator else {
            return Vec::new();
        };
        g.conversation(i)
            .into_iter()
            .map(|t| Request {
                body: self.make(&t.content, t.max_tokens),
                input_tokens: t.input_tokens,
            })
            .collect()
    }
}

/// Loads a pinned dataset, refusing a file that changed since the plan read it.
fn load_checked(
    d: &crate::workload::Dataset,
) -> Result<Vec<crate::workload::Conversation>, BackendError> {
    let bad = |message: String| BackendError::Param {
        name: "dataset".into(),
        message,
    };
    let now = crate::workload::file_sha256(&d.resolved)
        .map_err(|e| bad(format!("{}: {e}", d.resolved.display())))?;
    if now != d.sha256 {
        return Err(bad(format!(
            "{} changed since the plan read it (sha256 {} then, {now} now)",
            d.resolved.display(),
            d.sha256
        )));
    }
    crate::workload::load_dataset(&d.resolved, d.format).map_err(bad)
}

/// What happened to one request; times from its origin (intended send) unless said otherwise.
#[derive(Debug)]
struct Record {
    index: u64,
    /// From the step's start.
    intended: Duration,
    sent: Duration,
    first_byte: Option<Duration>,
    tokens: Vec<Duration>,
    end: Duration,
    status: Option<u16>,
    usage_prompt: Option<u64>,
    usage_completion: Option<u64>,
    failure: Option<RequestFailure>,
    /// The prompt's length when the client knows it (token-id prompts).
    input_tokens: Option<u64>,
    /// Time spent waiting for a slot under `max_concurrency` (part of sent − intended).
    queued: Duration,
}

fn fail(kind: RequestFailureKind, message: impl Into<String>) -> Option<RequestFailure> {
    Some(RequestFailure {
        kind,
        message: message.into(),
    })
}

fn classify(e: &reqwest::Error) -> RequestFailureKind {
    if e.is_timeout() {
        RequestFailureKind::Timeout
    } else if e.is_connect() {
        RequestFailureKind::Connect
    } else {
        RequestFailureKind::Disconnect
    }
}

/// Sends one request and reads its stream. `origin` is the intended send time.
async fn one(
    client: &reqwest::Client,
    cfg: &Config,
    body: Bytes,
    index: u64,
    step_start: Instant,
    origin: Instant,
) -> Record {
    let sent = Instant::now();
    let mut r = Record {
        index,
        intended: origin.saturating_duration_since(step_start),
        sent: sent.saturating_duration_since(step_start),
        first_byte: None,
        tokens: Vec::new(),
        end: Duration::ZERO,
        status: None,
        usage_prompt: None,
        usage_completion: None,
        failure: None,
        input_tokens: None,
        queued: Duration::ZERO,
    };
    let request = || {
        let mut req = client
            .post(cfg.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .body(body.clone());
        if let Some(key) = &cfg.api_key {
            if let Ok(mut v) = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")) {
                v.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, v);
            }
        }
        req
    };
    let work = async {
        // A pooled keep-alive connection the server has just closed (llama-server closes one
        // after a few requests without saying so) fails before any answer; such a request is
        // sent again (at most 3 times), and still timed from its intended send time.
        let mut sent = request().send().await;
        for _ in 0..STALE_RETRIES {
            match &sent {
                Err(e) if !e.is_timeout() && !e.is_connect() => sent = request().send().await,
                _ => break,
            }
        }
        let mut resp = match sent {
            Ok(x) => x,
            Err(e) => {
                r.failure = fail(
                    classify(&e),
                    format!("request failed: {}", crate::fetch::error_text(&e)),
                );
                return;
            }
        };
        r.first_byte = Some(origin.elapsed());
        let status = resp.status();
        r.status = Some(status.as_u16());
        if status != reqwest::StatusCode::OK {
            let body = crate::fetch::bounded_body(resp, crate::fetch::MAX_ERROR_BODY).await;
            let text = String::from_utf8_lossy(&body);
            let excerpt: String = text.chars().filter(|c| !c.is_control()).take(160).collect();
            r.failure = fail(
                RequestFailureKind::Http,
                format!("HTTP {status}: {excerpt}"),
            );
            return;
        }
        let mut parser = Parser::default();
        let mut events = Vec::new();
        let mut done = false;
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    // The arrival time, before any parsing.
                    let at = origin.elapsed();
                    parser.feed(&bytes, &mut events);
                    for ev in events.drain(..) {
                        match ev {
                            Event::Content { text_len } if text_len > 0 => r.tokens.push(at),
                            Event::Content { .. } => {}
                            Event::Usage {
                                prompt_tokens,
                                completion_tokens,
                            } => {
                                r.usage_prompt = prompt_tokens.or(r.usage_prompt);
                                r.usage_completion = completion_tokens.or(r.usage_completion);
                            }
                            Event::Done => done = true,
                            Event::Error(m) => {
                                if r.failure.is_none() {
                                    r.failure = fail(RequestFailureKind::ServerError, m);
                                }
                            }
                            Event::Malformed(m) => {
                                if r.failure.is_none() {
                                    r.failure = fail(RequestFailureKind::Malformed, m);
                                }
                            }
                        }
                    }
                    if parser.overflowed() {
                        // The request has failed; the rest of the stream is not read.
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    if r.failure.is_none() {
                        r.failure = fail(
                            RequestFailureKind::Disconnect,
                            format!(
                                "the stream broke after {} tokens: {}",
                                r.tokens.len(),
                                crate::fetch::error_text(&e)
                            ),
                        );
                    }
                    return;
                }
            }
        }
        if !done && r.failure.is_none() {
            r.failure = fail(
                RequestFailureKind::Disconnect,
                format!(
                    "the stream ended after {} tokens without [DONE]",
                    r.tokens.len()
                ),
            );
        }
    };
    if tokio::time::timeout_at(tokio::time::Instant::from_std(sent) + cfg.timeout, work)
        .await
        .is_err()
    {
        r.failure = fail(
            RequestFailureKind::Timeout,
            format!(
                "no complete answer within {:.0} s",
                cfg.timeout.as_secs_f64()
            ),
        );
    }
    r.end = origin.elapsed();
    r
}

fn ms(d: Duration) -> Millis {
    Millis(d.as_secs_f64() * 1e3)
}

fn to_sample(
    job: &BenchJob,
    job_id: &str,
    cfg: &Config,
    step: u32,
    warmup: bool,
    r: &Record,
) -> Sample {
    let mut s = job.blank_sample(job_id, r.index as u32, warmup);
    s.prompt_tokens = r
        .usage_prompt
        .or(r.input_tokens)
        .or(job.scenario.prompt_tokens);
    s.output_tokens = Some(r.usage_completion.unwrap_or(r.tokens.len() as u64));
    s.token_ms = r.tokens.iter().copied().map(ms).collect();
    s.ttft_ms = r.tokens.first().copied().map(ms);
    s.e2e_ms = Some(ms(r.end));
    s.tg_tps = match r.tokens.as_slice() {
        [first, .., last] if last > first => {
            Some((r.tokens.len() - 1) as f64 / (*last - *first).as_secs_f64())
        }
        _ => None,
    };
    let slo_ok = cfg.slo.map(|slo| {
        r.failure.is_none()
            && slo
                .ttft_ms
                .is_none_or(|b| s.ttft_ms.is_some_and(|t| t.0 <= b))
            && slo
                .tpot_ms
                .is_none_or(|b| s.tpot_ms().is_none_or(|t| t <= b))
            && slo
                .e2e_ms
                .is_none_or(|b| s.e2e_ms.is_some_and(|t| t.0 <= b))
    });
    s.request = Some(RequestInfo {
        step,
        intended_ms: ms(r.intended),
        sent_ms: ms(r.sent),
        first_byte_ms: r.first_byte.map(ms),
        status: r.status,
        tokens_from: Some(if r.usage_completion.is_some() {
            TokenSource::Usage
        } else {
            TokenSource::Chunks
        }),
        slo_ok,
        failure: r.failure.clone(),
    });
    s
}

/// CPU seconds this process has used (user + system), from /proc.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at index 2.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture minerva runs on.
    Some((utime + stime) / 100.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Aggregates of one step, kept as requests finish.
#[derive(Default)]
struct Tally {
    n: u64,
    failed: u64,
    errors: BTreeMap<String, u64>,
    first_intended: Option<Duration>,
    last_finish: Duration,
    first_sent: Option<Duration>,
    last_sent: Duration,
    lags_ms: Vec<f64>,
    queued_ms: Vec<f64>,
    output_tokens: u64,
    slo_ok: u64,
    with_usage: u64,
    /// Successful requests' latencies, for a `find_max` step's SLO.
    ttft_ms: Vec<f64>,
    tpot_ms: Vec<f64>,
    e2e_ms: Vec<f64>,
}

impl Tally {
    fn add(&mut self, r: &Record, s: &Sample) {
        self.n += 1;
        let finish = r.intended + r.end;
        self.first_intended = Some(
            self.first_intended
                .map_or(r.intended, |f| f.min(r.intended)),
        );
        self.first_sent = Some(self.first_sent.map_or(r.sent, |f| f.min(r.sent)));
        self.last_finish = self.last_finish.max(finish);
        self.last_sent = self.last_sent.max(r.sent);
        self.lags_ms.push(
            r.sent
                .saturating_sub(r.intended)
                .saturating_sub(r.queued)
                .as_secs_f64()
                * 1e3,
        );
        self.queued_ms.push(r.queued.as_secs_f64() * 1e3);
        match &r.failure {
            Some(f) => {
                self.failed += 1;
                *self.errors.entry(f.kind.as_str().to_string()).or_insert(0) += 1;
            }
            None => {
                self.ttft_ms.extend(s.ttft_ms.map(|v| v.0));
                self.tpot_ms.extend(s.tpot_ms());
                self.e2e_ms.extend(s.e2e_ms.map(|v| v.0));
                self.output_tokens += s.output_tokens.unwrap_or(0);
                if r.usage_completion.is_some() {
                    self.with_usage += 1;
                }
            }
        }
        if s.request.as_ref().and_then(|q| q.slo_ok) == Some(true) {
            self.slo_ok += 1;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn summarize(
    t: &mut Tally,
    step: u32,
    pattern: &Pattern,
    cpu_s: f64,
    wall_clock: Duration,
    has_slo: bool,
    client_threads: u32,
) -> LoadSummary {
    let wall = t
        .last_finish
        .saturating_sub(t.first_intended.unwrap_or_default())
        .as_secs_f64()
        .max(1e-9);
    let ok = t.n - t.failed;
    let send_span = t
        .last_sent
        .saturating_sub(t.first_sent.unwrap_or_default())
        .as_secs_f64();
    let sent_rps = if t.n > 1 && send_span > 0.0 {
        (t.n - 1) as f64 / send_span
    } else {
        t.n as f64 / wall
    };
    let (concurrency, target_rps, cap) = match pattern {
        Pattern::Concurrency(c) => (Some(*c), None, None),
        Pattern::Rate {
            rps,
            max_concurrency,
            ..
        } => (None, Some(*rps), *max_concurrency),
        Pattern::Sweep { .. } | Pattern::FindMax(_) => (None, None, None),
    };
    let queued = cap.map(|_| {
        t.queued_ms.sort_by(f64::total_cmp);
        [
            percentile(&t.queued_ms, 0.5),
            percentile(&t.queued_ms, 0.99),
            t.queued_ms.last().copied().unwrap_or(0.0),
        ]
    });
    t.lags_ms.sort_by(f64::total_cmp);
    let lag = [
        percentile(&t.lags_ms, 0.5),
        percentile(&t.lags_ms, 0.99),
        t.lags_ms.last().copied().unwrap_or(0.0),
    ];
    // tokio's timers tick in whole milliseconds: up to ~1 ms of lag is the clock, not the client.
    let late = t.lags_ms.iter().filter(|l| **l > LATE_MS).count() as u64;
    // The client can use at most its runtime's threads (and the machine's cores).
    let cores = (std::thread::available_parallelism().map_or(1, |n| n.get()) as f64)
        .min(f64::from(client_threads.max(1)));
    let cpu_cores = cpu_s / wall_clock.as_secs_f64().max(1e-9);
    let mut why = Vec::new();
    if cpu_cores >= 0.9 * cores {
        why.push(format!(
            "the client used {cpu_cores:.2} of {cores:.0} cores (saturated)"
        ));
    }
    if let Some(rps) = target_rps {
        // tokio wakes a sleeper on a whole-millisecond tick: a send lands up to ~1 ms after
        // its time, and waking takes a little more; beyond 3 ms the client is behind.
        let allowed = (0.1e3 / rps).max(LATE_MS + 1.0);
        if lag[1] > allowed {
            why.push(format!(
                "sends fell behind schedule: lag p99 {:.2} ms > {allowed:.2} ms",
                lag[1]
            ));
        }
        if t.n > 10
            && sent_rps < 0.95 * rps
            && cap.is_none()
            && matches!(
                pattern,
                Pattern::Rate {
                    burstiness: None,
                    ..
                }
            )
        {
            why.push(format!("sent {sent_rps:.1}/s of the {rps}/s target"));
        }
    }
    LoadSummary {
        step,
        pattern: LoadSpec::describe(pattern),
        concurrency,
        target_rps,
        requests: t.n,
        failed: t.failed,
        errors: t.errors.clone(),
        wall_s: wall,
        sent_rps,
        achieved_rps: ok as f64 / wall,
        output_tps: t.output_tokens as f64 / wall,
        lag_ms: target_rps.map(|_| lag),
        late,
        max_concurrency: cap,
        queued_ms: queued,
        client_cpu_s: cpu_s,
        client_cpu_cores: cpu_cores,
        client_bound: !why.is_empty(),
        client_bound_why: why,
        goodput: has_slo.then(|| {
            (
                t.slo_ok as f64 / (t.n.max(1)) as f64,
                t.slo_ok as f64 / wall,
            )
        }),
        tokens_from: if t.with_usage == ok {
            "usage"
        } else if t.with_usage == 0 {
            "chunks"
        } else {
            "mixed"
        }
        .into(),
        slo_check: None,
        search: None,
        server: None,
    }
}

/// Sends one conversation's requests in order, each when the previous one was answered;
/// requests are counted by `next` and stop at `requests`, and numbered by it too unless
/// `number` is given (an open loop's one-request conversations keep their schedule's order). The first request's origin is
/// `first_origin` (its scheduled time); a later one's is when the previous answer ended.
#[allow(clippy::too_many_arguments)]
async fn converse(
    client: &reqwest::Client,
    cfg: &Config,
    turns: Vec<Request>,
    next: &AtomicU64,
    requests: u64,
    deadline: Option<Instant>,
    slots: Option<&tokio::sync::Semaphore>,
    start: Instant,
    first_origin: Instant,
    number: Option<u64>,
    tx: &tokio::sync::mpsc::UnboundedSender<Record>,
) -> bool {
    let mut origin = first_origin;
    for turn in turns {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        let counted = next.fetch_add(1, Ordering::Relaxed);
        if counted >= requests {
            return false;
        }
        let i = number.unwrap_or(counted);
        let wait = Instant::now();
        let _permit = match slots {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        let queued = wait.elapsed();
        let mut r = one(client, cfg, turn.body, i, start, origin).await;
        r.input_tokens = turn.input_tokens;
        r.queued = if slots.is_some() {
            queued
        } else {
            Duration::ZERO
        };
        let failed = r.failure.is_some();
        origin = Instant::now();
        if tx.send(r).is_err() {
            return false;
        }
        if failed {
            // The history of the next turn assumed an answer.
            break;
        }
    }
    true
}

/// What every step of a job shares.
struct Steps<'a> {
    job: &'a BenchJob,
    cfg: &'a Config,
    cfg_arc: Arc<Config>,
    client: reqwest::Client,
    bodies: Arc<Bodies>,
}

/// Judges a step against the SLO: every percentile bound over its successful requests, and the
/// goodput share. A CLIENT-BOUND step is judged all the same (its latencies count from the
/// intended send times, so a late client shows in them), and says so in its row.
fn judge(slo: &SloTarget, t: &mut Tally, per_request: bool) -> SloCheck {
    let mut why = Vec::new();
    for (lat, q, bound) in slo.bounds() {
        let v = match lat {
            Latency::Ttft => &mut t.ttft_ms,
            Latency::Tpot => &mut t.tpot_ms,
            Latency::E2e => &mut t.e2e_ms,
        };
        v.sort_by(f64::total_cmp);
        match crate::results::nearest_rank(v, f64::from(q) / 100.0) {
            Some(x) if x > bound => why.push(format!("{} p{q} {x:.1} ms > {bound} ms", lat.name())),
            Some(_) => {}
            None => why.push(format!(
                "no successful request to take {} p{q} from",
                lat.name()
            )),
        }
    }
    let good = if per_request {
        t.slo_ok
    } else {
        t.n - t.failed
    };
    let share = good as f64 / t.n.max(1) as f64;
    if share < slo.goodput() {
        why.push(format!(
            "goodput {:.1}% < {}%",
            100.0 * share,
            100.0 * slo.goodput()
        ));
    }
    SloCheck {
        met: why.is_empty(),
        why,
    }
}

/// Three significant digits: search steps at readable rates.
fn sig3(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(2 - x.log10().floor() as i32);
    (x * scale).round() / scale
}

/// A `find_max` search's bracket: the highest value that met the SLO and the lowest that
/// missed it.
#[derive(Debug, Default)]
struct Bracket {
    lo: Option<f64>,
    hi: Option<f64>,
    tried: Vec<(f64, bool)>,
    stopped: Option<String>,
}

impl Bracket {
    /// Records a step; returns the next value to try, or None when the search is over (its
    /// reason in `stopped`). Doubles up until a miss, halves down until a hit, then bisects.
    fn record(&mut self, s: &Search, x: f64, met: bool) -> Option<f64> {
        let rate = s.what == FindMax::Rate;
        let floor = if rate { 0.01 } else { 1.0 };
        self.tried.push((x, met));
        if met {
            self.lo = Some(self.lo.map_or(x, |l| l.max(x)));
        } else {
            self.hi = Some(self.hi.map_or(x, |h| h.min(x)));
        }
        let next = match (self.lo, self.hi) {
            (Some(l), None) if l >= s.max => {
                self.stopped = Some(format!("met the SLO at the `max`, {}", s.max));
                None
            }
            (Some(l), None) => Some((l * 2.0).min(s.max)),
            (None, Some(h)) if h <= floor => {
                self.stopped = Some("no value met the SLO".into());
                None
            }
            (None, Some(h)) => Some(if rate {
                sig3(h / 2.0).max(floor)
            } else {
                (h / 2.0).floor().max(floor)
            }),
            (Some(l), Some(h)) => {
                let narrow = (h - l) <= s.precision * l || (!rate && h - l <= 1.0);
                let mid = if rate {
                    sig3((l + h) / 2.0)
                } else {
                    ((l + h) / 2.0).floor()
                };
                if narrow || mid <= l || mid >= h {
                    self.stopped = Some(format!(
                        "the SLO holds at {l} and fails at {h}, within the {}% asked",
                        100.0 * s.precision
                    ));
                    None
                } else {
                    Some(mid)
                }
            }
            (None, None) => None,
        };
        if next.is_some() && self.tried.len() >= s.max_steps as usize {
            self.stopped = Some(format!("{} steps, the most allowed", s.max_steps));
            return None;
        }
        next
    }

    fn result(&self, s: &Search) -> SearchResult {
        SearchResult {
            find_max: match s.what {
                FindMax::Rate => "rate",
                FindMax::Concurrency => "concurrency",
            }
            .into(),
            slo: s.slo.describe(),
            best: self.lo,
            lowest_missed: self.hi,
            tried: self.tried.clone(),
            stopped: self.stopped.clone().unwrap_or_default(),
        }
    }
}

impl Steps<'_> {
    /// Runs one step of `requests` requests; writes each request's sample as it finishes and
    /// the step's summary (which `finish` may add to) at its end. A probe's samples are marked
    /// as warmups, so no figure includes them.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        &self,
        pattern: &Pattern,
        step: u32,
        sid: &str,
        step_job: &BenchJob,
        requests: u64,
        probe: bool,
        sink: &mut dyn SampleSink,
        finish: &mut dyn FnMut(&mut Tally, &mut LoadSummary),
    ) -> Result<LoadSummary, BackendError> {
        let spec = &self.cfg.load;
        // The server's own view, scraped before the step, beside it and after it (never for
        // a probe).
        let scraper = match (&self.cfg.metrics_url, probe) {
            (Some(url), false) => Some(
                super::metrics::Scraper::start(
                    self.client.clone(),
                    url.clone(),
                    Duration::from_secs(1),
                )
                .await,
            ),
            _ => None,
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Record>();
        let start = Instant::now();
        let cpu0 = cpu_seconds().unwrap_or(0.0);
        let deadline = spec.duration.map(|d| start + d);
        let next_request = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        match pattern {
            Pattern::Concurrency(c) | Pattern::Sweep { steps: c } => {
                let next_conv = Arc::new(AtomicU64::new(0));
                for _ in 0..*c {
                    let (client, cfg, bodies, next_conv, next_request, tx) = (
                        self.client.clone(),
                        self.cfg_arc.clone(),
                        self.bodies.clone(),
                        next_conv.clone(),
                        next_request.clone(),
                        tx.clone(),
                    );
                    tasks.spawn(async move {
                        loop {
                            let c = next_conv.fetch_add(1, Ordering::Relaxed);
                            let turns = bodies.conversation(c);
                            let go = converse(
                                &client,
                                &cfg,
                                turns,
                                &next_request,
                                requests,
                                deadline,
                                None,
                                start,
                                Instant::now(),
                                None,
                                &tx,
                            )
                            .await;
                            if !go {
                                break;
                            }
                        }
                    });
                }
            }
            Pattern::Rate {
                rps,
                burstiness,
                max_concurrency,
            } => {
                let n = match (spec.duration, requests) {
                    (_, n) if n < u64::MAX => n as usize,
                    (Some(d), _) => (d.as_secs_f64() * rps * 1.5 + 16.0) as usize,
                    (None, _) => 0,
                };
                let times = schedule(*rps, *burstiness, spec.seed ^ u64::from(step), n);
                let multi_turn = self.bodies.max_turns() > 1;
                let slots =
                    max_concurrency.map(|c| Arc::new(tokio::sync::Semaphore::new(c as usize)));
                let (client, cfg, bodies, tx, next_request) = (
                    self.client.clone(),
                    self.cfg_arc.clone(),
                    self.bodies.clone(),
                    tx.clone(),
                    next_request.clone(),
                );
                tasks.spawn(async move {
                    let mut inner = tokio::task::JoinSet::new();
                    for (i, t) in times.into_iter().enumerate() {
                        let at = start + t;
                        if deadline.is_some_and(|d| at >= d)
                            || next_request.load(Ordering::Relaxed) >= requests
                        {
                            break;
                        }
                        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                        let (client, cfg, bodies, tx, next_request, slots) = (
                            client.clone(),
                            cfg.clone(),
                            bodies.clone(),
                            tx.clone(),
                            next_request.clone(),
                            slots.clone(),
                        );
                        inner.spawn(async move {
                            let turns = bodies.conversation(i as u64);
                            converse(
                                &client,
                                &cfg,
                                turns,
                                &next_request,
                                requests,
                                deadline,
                                slots.as_deref(),
                                start,
                                at,
                                (!multi_turn).then_some(i as u64),
                                &tx,
                            )
                            .await;
                        });
                    }
                    while inner.join_next().await.is_some() {}
                });
            }
            Pattern::FindMax(_) => {
                return Err(BackendError::Engine(
                    "a search is not one step (internal error)".into(),
                ))
            }
        }
        drop(tx);
        let mut tally = Tally::default();
        // Request samples are batched by the sink; this tick hands on what it holds.
        let mut tick = tokio::time::interval(crate::backend::SAMPLE_BATCH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                r = rx.recv() => {
                    let Some(r) = r else { break };
                    let s = to_sample(step_job, sid, self.cfg, step, probe, &r);
                    tally.add(&r, &s);
                    sink.sample(s)?;
                }
                _ = tick.tick() => sink.flush()?,
            }
        }
        while tasks.join_next().await.is_some() {}
        let wall_clock = start.elapsed();
        let cpu = cpu_seconds().map_or(0.0, |c| c - cpu0);
        let server = match scraper {
            Some(s) => Some(s.finish().await),
            None => None,
        };
        let mut summary = summarize(
            &mut tally,
            step,
            pattern,
            cpu,
            wall_clock,
            self.cfg.slo.is_some(),
            self.cfg.client_threads,
        );
        summary.server = server;
        finish(&mut tally, &mut summary);
        let mut s = step_job.blank_sample(sid, tally.n as u32, probe);
        s.load = Some(summary.clone());
        sink.sample(s)?;
        Ok(summary)
    }

    /// A step reported as a job of its own: `<job>/step=K`, with its load as a param.
    fn step_job(&self, job_id: &str, k: usize, load: Value) -> (String, BenchJob) {
        let mut j = self.job.clone();
        j.display_params.insert("load".into(), load);
        (format!("{job_id}/step={k}"), j)
    }

    /// Closed-loop steps at concurrency 1, 2, 4, ... until throughput grows by under 5%.
    async fn sweep(
        &self,
        job_id: &str,
        steps: u32,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        let requests = self.cfg.load.requests.unwrap_or(u64::MAX);
        let mut best = 0.0f64;
        for k in 0..steps as usize {
            let c = 1u32 << k;
            let (sid, step_job) = self.step_job(job_id, k, json!({ "concurrency": c }));
            let summary = self
                .run(
                    &Pattern::Concurrency(c),
                    k as u32,
                    &sid,
                    &step_job,
                    requests,
                    false,
                    sink,
                    &mut |_, _| {},
                )
                .await?;
            let achieved = summary.achieved_rps;
            if k > 0 && achieved < best * 1.05 {
                tracing::info!(
                    "sweep: saturated at step {k} ({achieved:.1} req/s, best {best:.1})"
                );
                break;
            }
            best = best.max(achieved);
        }
        Ok(())
    }

    /// `find_max`: steps judged against the SLO (see [`Bracket::record`]); the last step's
    /// summary carries the result.
    async fn search(
        &self,
        job_id: &str,
        search: &Search,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        let requests = self.cfg.load.requests.unwrap_or(search.slo.min_requests());
        let per_request = self.cfg.slo.is_some();
        let rate = search.what == FindMax::Rate;
        let mut x = match (search.start, rate) {
            (Some(s), _) => s,
            (None, false) => 1.0,
            (None, true) => {
                // A closed-loop probe: what the server completes with a queue in front of it.
                let c = search.max_concurrency.unwrap_or(16);
                let probe = self
                    .run(
                        &Pattern::Concurrency(c),
                        0,
                        &format!("{job_id}/probe"),
                        self.job,
                        requests.min(64),
                        true,
                        sink,
                        &mut |_, _| {},
                    )
                    .await?;
                sig3((probe.achieved_rps / 2.0).max(0.01))
            }
        };
        x = x.min(search.max);
        let mut bracket = Bracket::default();
        for k in 0.. {
            let (pattern, load) = if rate {
                (
                    Pattern::Rate {
                        rps: x,
                        burstiness: search.burstiness,
                        max_concurrency: search.max_concurrency,
                    },
                    json!({ "rate": x }),
                )
            } else {
                (
                    Pattern::Concurrency(x as u32),
                    json!({ "concurrency": x as u32 }),
                )
            };
            let (sid, step_job) = self.step_job(job_id, k, load);
            let mut next = None;
            self.run(
                &pattern,
                k as u32,
                &sid,
                &step_job,
                requests,
                false,
                sink,
                &mut |t, s| {
                    let check = judge(&search.slo, t, per_request);
                    next = bracket.record(search, x, check.met);
                    s.slo_check = Some(check);
                    if next.is_none() {
                        s.search = Some(bracket.result(search));
                    }
                },
            )
            .await?;
            match next {
                Some(n) => x = n,
                None => break,
            }
        }
        Ok(())
    }
}

/// Runs warmups, then every step; writes each request's sample as it finishes and each step's
/// summary at its end.
pub async fn drive(
    job: &BenchJob,
    job_id: &str,
    cfg: &Config,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| BackendError::Engine(format!("cannot start an HTTP client: {e}")))?;
    let spec = &cfg.load;
    let bodies = Arc::new(Bodies::new(job, cfg, spec.seed)?);

    for i in 0..spec.warmup {
        let start = Instant::now();
        // Warmups use conversations the measured steps do not (from the top of the index
        // range), first turns only.
        let Some(req) = bodies.conversation(u64::MAX - i).into_iter().next() else {
            break;
        };
        let mut r = one(&client, cfg, req.body, i, start, start).await;
        r.input_tokens = req.input_tokens;
        sink.sample(to_sample(job, job_id, cfg, 0, true, &r))?;
    }
    let steps = Steps {
        job,
        cfg,
        cfg_arc: Arc::new(cfg.clone()),
        client,
        bodies,
    };
    match &spec.pattern {
        Pattern::Sweep { steps: k } => steps.sweep(job_id, *k, sink).await,
        Pattern::FindMax(search) => steps.search(job_id, search, sink).await,
        p => {
            steps
                .run(
                    p,
                    0,
                    job_id,
                    job,
                    spec.requests.unwrap_or(u64::MAX),
                    false,
                    sink,
                    &mut |_, _| {},
                )
                .await?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poisson_schedules_follow_the_seed_and_the_rate() {
        let a = schedule(100.0, Some(1.0), 7, 5000);
        assert_eq!(
            a,
            schedule(100.0, Some(1.0), 7, 5000),
            "same seed, same arrivals"
        );
        assert_ne!(a, schedule(100.0, Some(1.0), 8, 5000));
        let mean_gap = a[4999].as_secs_f64() / 4999.0;
        assert!((mean_gap - 0.01).abs() < 0.0005, "mean gap {mean_gap}");
        // Exponential gaps: the coefficient of variation is about 1.
        let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
        let var = gaps.iter().map(|g| (g - mean_gap).powi(2)).sum::<f64>() / gaps.len() as f64;
        let cv = var.sqrt() / mean_gap;
        assert!((cv - 1.0).abs() < 0.06, "cv {cv}");
        let c = schedule(4.0, None, 0, 3);
        assert_eq!(
            c,
            vec![
                Duration::ZERO,
                Duration::from_millis(250),
                Duration::from_millis(500)
            ]
        );
    }

    #[test]
    fn gamma_arrivals_keep_the_rate_and_their_burstiness() {
        for k in [0.25, 4.0] {
            let a = schedule(50.0, Some(k), 3, 8000);
            let gaps: Vec<f64> = a.windows(2).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
            assert!(
                (mean - 0.02).abs() < 0.02 * 0.05,
                "shape {k}: mean gap {mean}"
            );
            // A gamma of shape k has a coefficient of variation of 1/√k.
            let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
            let cv = var.sqrt() / mean;
            let want = 1.0 / f64::sqrt(k);
            assert!(
                (cv - want).abs() < 0.08 * want,
                "shape {k}: cv {cv}, want {want}"
            );
        }
    }

    fn search(what: FindMax, start: f64) -> Search {
        Search {
            what,
            slo: SloTarget::default(),
            start: Some(start),
            max: match what {
                FindMax::Rate => 100_000.0,
                FindMax::Concurrency => 1024.0,
            },
            precision: 0.05,
            max_steps: 20,
            burstiness: None,
            max_concurrency: None,
        }
    }

    /// Runs a bracket against a server that meets the SLO up to `knee`.
    fn find(s: &Search, knee: f64) -> (Option<f64>, usize, String) {
        let mut b = Bracket::default();
        let mut x = s.start.unwrap_or(1.0);
        loop {
            match b.record(s, x, x <= knee) {
                Some(n) => x = n,
                None => return (b.lo, b.tried.len(), b.stopped.unwrap_or_default()),
            }
        }
    }

    #[test]
    fn the_bracket_lands_within_its_precision_of_the_knee() {
        for (start, knee) in [(10.0, 96.5), (500.0, 96.5), (1.0, 3000.0), (0.5, 0.03)] {
            let s = search(FindMax::Rate, start);
            let (best, steps, why) = find(&s, knee);
            let best = best.unwrap_or(0.0);
            assert!(
                best <= knee && best >= knee * 0.94,
                "start {start}, knee {knee}: {best} ({why})"
            );
            assert!(steps <= 20, "{steps}");
        }
        let s = search(FindMax::Concurrency, 1.0);
        let (best, _, why) = find(&s, 37.0);
        assert_eq!(best, Some(37.0), "{why}");
        // Nothing meets it: the search says so.
        let (best, _, why) = find(&search(FindMax::Concurrency, 4.0), 0.5);
        assert_eq!((best, why.as_str()), (None, "no value met the SLO"));
        // Everything does: it stops at `max`.
        let mut s = search(FindMax::Rate, 10.0);
        s.max = 50.0;
        let (best, _, why) = find(&s, 1e9);
        assert_eq!(best, Some(50.0), "{why}");
    }
}
