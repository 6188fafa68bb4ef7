//! The simulated backend: deterministic timings from a latency model, for tests and dry runs.
//! Its samples carry `simulated: true` and every report row built from them says SIMULATED.
//!
//! Timestamps come from the model (seeded), not from the clock, so a run's numbers are
//! reproducible; `realtime: true` also sleeps for them, so a run takes as long as it claims.

use super::{BackendError, SampleSink};
use crate::plan::BenchJob;
use crate::results::{Millis, Sample};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
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

fn num(job: &BenchJob, name: &str, default: f64) -> Result<f64, BackendError> {
    match job.params.get(name) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| BackendError::Param {
                name: name.into(),
                message: format!("expected a non-negative number, found {v}"),
            }),
    }
}

impl Model {
    fn from_params(job: &BenchJob) -> Result<Model, BackendError> {
        let pp_tps = num(job, "pp_tps", 800.0)?;
        if pp_tps == 0.0 {
            return Err(BackendError::Param {
                name: "pp_tps".into(),
                message: "must be positive".into(),
            });
        }
        Ok(Model {
            ttft_ms: num(job, "ttft_ms", 20.0)?,
            tpot_ms: num(job, "tpot_ms", 10.0)?,
            pp_tps,
            load_ms: num(job, "load_ms", 150.0)?,
            jitter: num(job, "jitter", 0.05)?.min(0.9),
            realtime: job
                .params
                .get("realtime")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            fail_rep: job.params.get("fail_rep").and_then(Value::as_u64),
            crash_rep: job.params.get("crash_rep").and_then(Value::as_u64),
            rss_mb: num(job, "rss_mb", 100.0)?,
            diverge_at: job.params.get("diverge_at").and_then(Value::as_u64),
        })
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

pub fn run(job: &BenchJob, job_id: &str, sink: &mut dyn SampleSink) -> Result<(), BackendError> {
    let m = Model::from_params(job)?;
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
        let mut s = Sample::blank(job_id, job, rep, warmup);
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
        sink.sample(s)?;
    }
    Ok(())
}

fn pace(realtime: bool, ms: f64) {
    if realtime && ms > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(ms / 1e3));
    }
}
