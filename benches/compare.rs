//! `minerva compare` speed (not a test): two runs of 100 jobs × 1,000 repetitions each, read from
//! their samples.parquet and compared (goal < 1 s); and the same at 100 jobs × 50 repetitions,
//! where every interval is a 2,000-resample bootstrap.
//!
//!   cargo bench --bench compare
//!   CARGO_PROFILE_DEV_OPT_LEVEL=3 cargo bench --profile dev --bench compare   # reuses the test
//!                                      build's dependencies (polars at opt-level 1: pessimistic)

use minerva::analyze::write_samples;
use minerva::compare::{compare, CompareOptions};
use minerva::results::{Millis, Sample};
use std::path::Path;
use std::time::Instant;

fn manifest() -> serde_json::Value {
    serde_json::json!({
        "minerva_version": "0.1.0", "git_revision": "bench", "run_id": "r", "status": "complete",
        "started_at": "2026-12-01T00:00:00Z", "command": "minerva run bench.yaml",
        "pipeline_sha256": "x", "resolved_sha256": "y",
        "pipeline": {"scenarios": [{"name": "s", "max_tokens": 32}]},
        "host": {"hostname": "h", "cpu": "cpu", "physical_cores": 2, "logical_cpus": 2,
                 "memory_bytes": 1u64 << 30, "os": "Linux", "kernel": "6", "arch": "x86_64",
                 "gpus": []},
        "backends": {"simulated": "simulated"}
    })
}

/// A run directory with `jobs` jobs of `reps` measured repetitions (32 tokens each).
fn write_run(dir: &Path, jobs: usize, reps: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    let template: Sample = serde_json::from_value(serde_json::json!({
        "job_id": "bench/simulated/m/s", "stage": "bench", "backend": "simulated", "model": "m",
        "scenario": "s", "params": {}, "rep": 0, "warmup": false, "simulated": true
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut noise = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.1
    };
    let mut samples = Vec::with_capacity(jobs * reps);
    for j in 0..jobs {
        for r in 0..reps {
            let mut s = template.clone();
            s.job_id = format!("bench/simulated/m/s/ttft_ms={j}");
            s.params.insert("ttft_ms".into(), serde_json::json!(j));
            s.rep = r as u32;
            let tpot = 10.0 * (1.0 + noise());
            let ttft = 20.0 * (1.0 + noise());
            s.token_ms = (0..32)
                .map(|i| Millis(ttft + tpot * f64::from(i)))
                .collect();
            s.ttft_ms = Some(Millis(ttft));
            s.e2e_ms = Some(Millis(ttft + tpot * 31.0));
            s.tg_tps = Some(31.0 / (tpot * 31.0 / 1e3));
            s.pp_tps = Some(900.0 * (1.0 + noise()));
            s.load_ms = Some(Millis(150.0));
            s.peak_rss_bytes = Some(100 << 20);
            samples.push(s);
        }
    }
    write_samples(&samples, &dir.join("samples.parquet")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string(&manifest()).unwrap_or_default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn time(jobs: usize, reps: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    write_run(&a, jobs, reps, 1);
    write_run(&b, jobs, reps, 2);
    let mut times = Vec::new();
    let mut metrics = 0;
    for _ in 0..5 {
        let t0 = Instant::now();
        let c = compare(&a, &b, &CompareOptions::default()).unwrap_or_else(|e| panic!("{e}"));
        times.push(t0.elapsed().as_secs_f64() * 1e3);
        metrics = c.jobs.iter().map(|j| j.metrics.len()).sum();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "compare: {jobs} jobs × {reps} repetitions a side, {metrics} metric comparisons: median \
         {:.0} ms (min {:.0}, max {:.0}) over 5 runs",
        times[2], times[0], times[4]
    );
}

fn main() {
    time(100, 1000);
    time(100, 50);
}
