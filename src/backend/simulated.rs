//! The simulated backend: deterministic timings from a latency model, for tests and dry runs.
//! Its samples carry `simulated: true` and every report row built from them says SIMULATED.
//!
//! Timestamps come from the model (seeded), not from the clock, so a run's numbers are
//! reproducible; `realtime: true` also sleeps for them, so a run takes as long as it claims.

use super::params::{self, ParamProblem, TypedParams};
use super::{BackendError, SampleSink};
use crate::backend::BenchJob;
use crate::results::{Millis, Sample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

pub const PARAMS: &[&str] = &[
    "ttft_ms",
    "tpot_ms",
    "pp_tps",
    "load_ms",
    "jitter",
    "realtime",
    "fail_rep",
    "crash_rep",
    "rss_mb",
    "diverge_at",
];

struct Model {
    /// Time to the first token beyond prompt processing.
    ttft_ms: f64,
    tpot_ms: f64,
    pp_tps: f64,
    load_ms: f64,
    jitter: f64,
    realtime: bool,
    fail_rep: Option<u64>,
    crash_rep: Option<u64>,
    rss_mb: f64,
    /// Record greedy "output ids" (for the agreement check) that depart from the canonical
    /// sequence 1, 2, 3, … at this index; unset: no output ids.
    diverge_at: Option<u64>,
}

/// The simulated backend: a latency model, for tests and dry runs.
pub struct Simulated;

impl super::Backend for Simulated {
    type Params = SimulatedParams;
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn aliases(&self) -> &'static [&'static str] {
        &["mock"]
    }
    fn known_params(&self) -> &'static [&'static str] {
        PARAMS
    }
    fn build_info(&self) -> String {
        "simulated latency model (no engine)".into()
    }
    fn is_simulated(&self) -> bool {
        true
    }
    fn run(
        &self,
        job: &BenchJob,
        params: SimulatedParams,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        run(job, &Model::new(params), job_id, sink)
    }
}

/// The simulated backend's params: the latency model.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedParams {
    /// Time to the first token beyond prompt processing, ms (default 20).
    pub ttft_ms: Option<f64>,
    /// Time per output token after the first, ms (default 10).
    pub tpot_ms: Option<f64>,
    /// Prompt processing rate, tokens/s (default 800).
    pub pp_tps: Option<f64>,
    /// Load time, ms (default 150).
    pub load_ms: Option<f64>,
    /// Relative jitter of every duration, 0 to 0.9 (default 0.05).
    #[schemars(range(min = 0.0, max = 0.9))]
    pub jitter: Option<f64>,
    /// Sleep for the simulated times (default false).
    pub realtime: Option<bool>,
    /// Fail the job at this measured repetition.
    pub fail_rep: Option<u64>,
    /// Abort the worker at this measured repetition.
    pub crash_rep: Option<u64>,
    /// Reported peak RSS, MiB (default 100).
    pub rss_mb: Option<f64>,
    /// Output ids depart from 1, 2, 3, … at this index (default: no output ids).
    pub diverge_at: Option<u64>,
}

impl TypedParams for SimulatedParams {
    fn check(&self) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        for (key, v) in [
            ("ttft_ms", self.ttft_ms),
            ("tpot_ms", self.tpot_ms),
            ("load_ms", self.load_ms),
            ("rss_mb", self.rss_mb),
        ] {
            params::check_number(key, v, 0.0, false, &mut out);
        }
        params::check_number("pp_tps", self.pp_tps, 0.0, true, &mut out);
        if let Some(j) = self.jitter.filter(|j| !(0.0..=0.9).contains(j)) {
            out.push(ParamProblem::new(
                "jitter",
                format!("expected 0 to 0.9, found {j}"),
            ));
        }
        out
    }
}

impl Model {
    fn new(p: SimulatedParams) -> Model {
        Model {
            ttft_ms: p.ttft_ms.unwrap_or(20.0),
            tpot_ms: p.tpot_ms.unwrap_or(10.0),
            pp_tps: p.pp_tps.unwrap_or(800.0),
            load_ms: p.load_ms.unwrap_or(150.0),
            jitter: p.jitter.unwrap_or(0.05),
            realtime: p.realtime.unwrap_or(false),
            fail_rep: p.fail_rep,
            crash_rep: p.crash_rep,
            rss_mb: p.rss_mb.unwrap_or(100.0),
            diverge_at: p.diverge_at,
        }
    }
}

/// Prompt length: the synthetic count, or about four characters a token for text.
fn prompt_tokens(job: &BenchJob) -> u64 {
    match (&job.scenario.prompt_tokens, &job.scenario.prompt) {
        (Some(n), _) => *n,
        (None, Some(p)) => (p.chars().count() as u64).div_ceil(4).max(1),
        (None, None) => 0,
    }
}

fn run(
    job: &BenchJob,
    m: &Model,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
    let jittered = |base: f64, rng: &mut ChaCha8Rng| -> f64 {
        if m.jitter == 0.0 {
            base
        } else {
            base * (1.0 + m.jitter * rng.random_range(-1.0..=1.0))
        }
    };
    let load_ms = jittered(m.load_ms, &mut rng);
    pace(m.realtime, load_ms);
    let reps = (0..job.warmup)
        .map(|r| (r, true))
        .chain((0..job.runs).map(|r| (r, false)));
    let mut measured = job.repetitions();
    for (rep, warmup) in reps {
        if !warmup && m.crash_rep == Some(u64::from(rep)) {
            // Stands in for an engine that segfaults: the parent must survive it.
            eprintln!("simulated crash at repetition {rep}");
            std::process::abort();
        }
        if !warmup && m.fail_rep == Some(u64::from(rep)) {
            return Err(BackendError::Engine(format!(
                "simulated failure at repetition {rep}"
            )));
        }
        let mut s = job.blank_sample(job_id, rep, warmup);
        let pt = prompt_tokens(job);
        let pp_ms = jittered(pt as f64 / m.pp_tps * 1e3, &mut rng);
        let mut t = pp_ms;
        if job.scenario.max_tokens > 0 {
            t += jittered(m.ttft_ms, &mut rng);
            s.token_ms.push(Millis(t));
            for _ in 1..job.scenario.max_tokens {
                t += jittered(m.tpot_ms, &mut rng);
                s.token_ms.push(Millis(t));
            }
            s.ttft_ms = Some(Millis(s.token_ms[0].0));
        }
        if let (Some(at), false, 0) = (m.diverge_at, warmup, rep) {
            s.prompt_digest = Some(Sample::digest_ids(&[pt as u32]));
            s.output_ids = (0..job.scenario.max_tokens)
                .map(|i| {
                    if i < at {
                        i as u32 + 1
                    } else {
                        100_000 + i as u32
                    }
                })
                .collect();
        }
        s.load_ms = Some(Millis(load_ms));
        s.prompt_tokens = Some(pt);
        s.output_tokens = Some(job.scenario.max_tokens);
        s.pp_tps = (pt > 0 && pp_ms > 0.0).then(|| pt as f64 / (pp_ms / 1e3));
        s.tg_tps = match s.token_ms.as_slice() {
            [first, .., last] if last.0 > first.0 => {
                Some((s.token_ms.len() - 1) as f64 / ((last.0 - first.0) / 1e3))
            }
            _ => None,
        };
        s.e2e_ms = Some(Millis(t));
        s.tokenize_ms = Some(Millis(0.0));
        s.sample_ms = Some(Millis(0.0));
        // Modelled like every other figure here, so simulated reports are reproducible.
        s.peak_rss_bytes = Some((m.rss_mb * 1024.0 * 1024.0) as u64);
        pace(m.realtime, t);
        let enough = !warmup && measured.enough_after(&s);
        sink.sample(s)?;
        if enough {
            break;
        }
    }
    Ok(())
}

fn pace(realtime: bool, ms: f64) {
    if realtime && ms > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(ms / 1e3));
    }
}
