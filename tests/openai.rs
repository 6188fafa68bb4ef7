//! The `openai` backend against a mock OpenAI-compatible server started by each test on
//! 127.0.0.1 (tests/common/openai_mock.rs). No internet.
//!
//! Timing tolerances, for a shared 2-core machine (CI runs other tests beside these): TTFT
//! within [injected, injected + 70 ms]; mean inter-token latency within −30%/+45% of the
//! injected delay. On a quiet machine both land within 2 ms.

mod common;

use common::openai_mock::{Fault, Mock, MockConfig};
use common::{text, Minerva};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Writes a one-job pipeline (the openai backend against `base_url`) and runs it.
fn run(
    dir: &Path,
    base_url: &str,
    scenario: &str,
    params: &str,
    env: &[(&str, &str)],
) -> (PathBuf, std::process::Output) {
    let pipeline = dir.join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: server
models:
  - {{ name: served, format: gguf, source: {{ path: {root}/tests/fixtures/models/tiny.gguf }} }}
scenarios:
  - {scenario}
stages:
  - name: bench
    kind: bench
    matrix:
      backend: [openai]
      model: [served]
      scenario: [s]
      params: {{ base_url: "{base_url}", {params} }}
    warmup: 1
    runs: 5
  - {{ name: analyze, kind: analyze, needs: [bench] }}
  - {{ name: report, kind: report, needs: [analyze] }}
"#,
            root = common::root().display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut m = Minerva::new(&[
        "run",
        &pipeline.display().to_string(),
        "--out",
        &dir.join("out").display().to_string(),
        "--run-id",
        "r",
    ]);
    for (k, v) in env {
        // The user grants the pipeline each variable it reads (api_key_env among them).
        m.cmd.arg("--allow-env").arg(k);
        m = m.env(k, v);
    }
    let out = m.output();
    (dir.join("out/server/r"), out)
}

fn samples(run: &Path) -> Vec<Value> {
    common::lines(&run.join("samples.jsonl"))
}

fn requests(run: &Path) -> Vec<Value> {
    samples(run)
        .into_iter()
        .filter(|s| s["warmup"] == false && s.get("request").is_some())
        .collect()
}

fn summaries(run: &Path) -> Vec<Value> {
    samples(run)
        .into_iter()
        .filter_map(|s| s.get("load").cloned())
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn measured_ttft_and_inter_token_latency_match_the_injected_delays() {
    let mock = Mock::start(MockConfig {
        ttft: Duration::from_millis(80),
        itl: Duration::from_millis(15),
        tokens: 20,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "Say something.", max_tokens: 20 }"#,
        "load: sequential",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reqs = requests(&run);
    assert_eq!(reqs.len(), 5);
    for r in &reqs {
        let ttft = f(&r["ttft_ms"]);
        assert!((80.0..150.0).contains(&ttft), "ttft {ttft}");
        let toks = r["token_ms"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(toks, 20);
        assert_eq!(r["output_tokens"], 20);
        assert_eq!(r["request"]["tokens_from"], "usage");
        let t: Vec<f64> = r["token_ms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(f)
            .collect();
        let mean_itl = (t[19] - t[0]) / 19.0;
        assert!((10.5..22.0).contains(&mean_itl), "mean ITL {mean_itl}");
    }
    let sum = summaries(&run);
    assert_eq!(sum.len(), 1);
    assert_eq!(sum[0]["requests"], 5);
    assert_eq!(sum[0]["failed"], 0);
    assert_eq!(sum[0]["pattern"], "sequential");
    let report = common::read(&run.join("report.md"));
    assert!(report.contains("## Server load"), "{report}");
    assert!(report.contains("| openai served s"), "{report}");
}

#[test]
fn failed_requests_are_counted_by_kind_and_left_out_of_latencies() {
    let mock = Mock::start(MockConfig {
        tokens: 8,
        faults: vec![
            Fault::Ok,
            Fault::Status500,
            Fault::Disconnect(3),
            Fault::Malformed,
            Fault::SlowFirstByte(Duration::from_millis(1500)),
        ],
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 8 }"#,
        // The warmup takes request 0; the 10 measured ones cycle through the faults twice.
        "timeout: 0.5, load: { sequential: true, requests: 10 }",
        &[],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "failed requests are data, not a failed job: {}",
        text(&out.stderr)
    );
    let sum = &summaries(&run)[0];
    assert_eq!(sum["requests"], 10);
    assert_eq!(sum["failed"], 8);
    for kind in ["http", "disconnect", "malformed", "timeout"] {
        assert_eq!(sum["errors"][kind], 2, "{kind}: {sum}");
    }
    let failed: Vec<Value> = requests(&run)
        .into_iter()
        .filter(|r| !r["request"]["failure"].is_null())
        .collect();
    assert_eq!(failed.len(), 8);
    assert!(failed.iter().any(|r| r["request"]["status"] == 500));
    // Only the two successful requests count in the latency statistics.
    let summary = common::read(&run.join("summary.csv"));
    let ttft_row = summary
        .lines()
        .find(|l| l.contains(",ttft_ms,"))
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(ttft_row.contains(",ttft_ms,2,"), "{ttft_row}");
    let report = common::read(&run.join("report.md"));
    assert!(report.contains("8 (80.0%)"), "{report}");
}

#[test]
fn open_loop_latency_includes_a_server_stall_coordinated_omission() {
    // 50 requests/s; the server stalls for 400 ms when request 10 arrives. Requests scheduled
    // during the stall keep going out on time, and their latency counts from their scheduled
    // time, so about 20 of them show the stall (from ~400 ms down to 0).
    let mock = Mock::start(MockConfig {
        tokens: 4,
        stall: Some((11, Duration::from_millis(400))),
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 4 }"#,
        "load: { rate: 50, requests: 50 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reqs = requests(&run);
    assert_eq!(reqs.len(), 50);
    let ttfts: Vec<f64> = reqs.iter().map(|r| f(&r["ttft_ms"])).collect();
    let slow = ttfts.iter().filter(|t| **t > 200.0).count();
    let max = ttfts.iter().copied().fold(0.0, f64::max);
    assert!(slow >= 8, "{slow} requests above 200 ms: {ttfts:?}");
    assert!(max >= 350.0, "max {max}");
    // The schedule was kept: sends stayed within a few ms of their intended times.
    let lags: Vec<f64> = reqs
        .iter()
        .map(|r| f(&r["request"]["sent_ms"]) - f(&r["request"]["intended_ms"]))
        .collect();
    let mut sorted = lags.clone();
    sorted.sort_by(f64::total_cmp);
    assert!(sorted[sorted.len() / 2] < 10.0, "median lag {lags:?}");
    let sum = &summaries(&run)[0];
    assert_eq!(sum["target_rps"], 50.0);
    assert!(f(&sum["sent_rps"]) > 45.0, "{sum}");
}

#[test]
fn poisson_arrivals_follow_the_seed() {
    let mock = Mock::start(MockConfig {
        tokens: 2,
        ..MockConfig::default()
    });
    let intended = |seed: u64| -> Vec<f64> {
        let dir = common::tempdir();
        let (run, out) = run(
            dir.path(),
            &mock.base_url(),
            r#"{ name: s, prompt: "x", max_tokens: 2 }"#,
            &format!("load: {{ rate: 200, arrival: poisson, requests: 40, seed: {seed} }}"),
            &[],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let mut v: Vec<(u64, f64)> = requests(&run)
            .iter()
            .map(|r| {
                (
                    r["rep"].as_u64().unwrap_or(0),
                    f(&r["request"]["intended_ms"]),
                )
            })
            .collect();
        v.sort_by_key(|x| x.0);
        v.into_iter().map(|x| x.1).collect()
    };
    let a = intended(7);
    assert_eq!(a.len(), 40);
    assert_eq!(a, intended(7), "the same seed gives the same arrivals");
    assert_ne!(a, intended(8));
    // 40 arrivals at 200/s span about 0.2 s.
    assert!((0.08e3..0.4e3).contains(&a[39]), "{a:?}");
}

#[test]
fn the_api_key_is_sent_and_never_written_and_goodput_follows_the_slo() {
    let mock = Mock::start(MockConfig {
        ttft: Duration::from_millis(30),
        tokens: 4,
        ..MockConfig::default()
    });
    let key = "sk-test-Very-Secret-0042";
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt_tokens: 16, max_tokens: 4 }"#,
        "api_key_env: MINERVA_TEST_KEY, load: { concurrency: 2, requests: 6 }, slo: { ttft_ms: 20 }",
        &[("MINERVA_TEST_KEY", key)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(mock
        .auth_seen()
        .iter()
        .all(|a| a.eq_ignore_ascii_case(&format!("bearer {key}"))));
    assert_eq!(mock.auth_seen().len(), 7);
    for entry in std::fs::read_dir(&run)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let body = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&body).contains(key),
            "{} holds the key",
            entry.path().display()
        );
    }
    assert!(!text(&out.stderr).contains(key) && !text(&out.stdout).contains(key));
    let sum = &summaries(&run)[0];
    // TTFT is at least 30 ms, so no request meets a 20 ms bound.
    assert_eq!(sum["goodput"][0], 0.0, "{sum}");
    assert_eq!(sum["concurrency"], 2);
    let reqs = requests(&run);
    assert!(reqs.iter().all(|r| r["request"]["slo_ok"] == false));
    // A synthetic prompt goes as token ids to the completions endpoint.
    assert_eq!(reqs[0]["prompt_tokens"], 7, "the server's usage count wins");
}

#[test]
fn a_sweep_steps_up_concurrency_and_reports_each_step_as_a_job() {
    let mock = Mock::start(MockConfig {
        ttft: Duration::from_millis(20),
        tokens: 4,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 4 }"#,
        "load: { sweep: 3, requests: 16 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sums = summaries(&run);
    // A server that answers in a fixed 20 ms scales with concurrency: no early stop.
    assert_eq!(sums.len(), 3, "{sums:?}");
    let conc: Vec<u64> = sums
        .iter()
        .map(|s| s["concurrency"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(conc, vec![1, 2, 4]);
    assert!(
        f(&sums[2]["achieved_rps"]) > 1.5 * f(&sums[0]["achieved_rps"]),
        "{sums:?}"
    );
    let ids: std::collections::BTreeSet<String> = requests(&run)
        .iter()
        .map(|r| r["job_id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(ids.iter().all(|i| i.contains("/step=")), "{ids:?}");
    let report = common::read(&run.join("report.md"));
    if std::env::var("SHOW_REPORT").is_ok() {
        eprintln!("{report}");
    }
    assert_eq!(report.matches("| concurrency 4 |").count(), 2, "{report}");
}

#[test]
fn an_endless_event_fails_its_request_without_filling_memory() {
    // Request 0 is the warmup; request 1 streams `data: ` and then 400 MB without a blank line.
    let mock = Mock::start(MockConfig {
        tokens: 4,
        faults: vec![Fault::Ok, Fault::Flood(400 << 20), Fault::Ok],
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let started = std::time::Instant::now();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 4 }"#,
        "timeout: 30, load: { sequential: true, requests: 2 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let sum = &summaries(&run)[0];
    assert_eq!(sum["failed"], 1, "{sum}");
    assert_eq!(sum["errors"]["malformed"], 1, "{sum}");
    let reqs = requests(&run);
    let failed: Vec<&Value> = reqs
        .iter()
        .filter(|r| !r["request"]["failure"].is_null())
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]["request"]["failure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("longer than 1048576 bytes")),
        "{}",
        failed[0]
    );
    for s in samples(&run) {
        let rss = s["peak_rss_bytes"].as_u64().unwrap_or(0);
        assert!(rss > 0 && rss < 100 << 20, "client peak RSS {rss}");
    }
}

#[test]
fn compare_judges_server_percentiles_by_their_sample_counts() {
    // Two runs against two servers, the second 40 ms slower to the first token: TTFT p50 and
    // p90 (80 requests each) are judged, p99 is INVALID (needs 662), and a load step's figures
    // are one number a run (INVALID).
    let start = |ttft| {
        Mock::start(MockConfig {
            ttft: Duration::from_millis(ttft),
            itl: Duration::from_millis(2),
            tokens: 4,
            ..MockConfig::default()
        })
    };
    let (fast, slow) = (start(20), start(60));
    let (a, b) = (common::tempdir(), common::tempdir());
    let scenario = r#"{ name: s, prompt: "x", max_tokens: 4 }"#;
    let load = "load: { concurrency: 4, requests: 80 }";
    let (base, out) = run(a.path(), &fast.base_url(), scenario, load, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (new, out) = run(b.path(), &slow.base_url(), scenario, load, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let o = Minerva::new(&[
        "compare",
        &base.display().to_string(),
        &new.display().to_string(),
        "--json",
        "--fail-on-regression",
    ])
    .output();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let c: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}"));
    let job = &c["jobs"][0];
    // The base_url param differs: the one job on each side is paired, and the row says so.
    assert!(
        job["differs"][0]
            .as_str()
            .unwrap_or_default()
            .starts_with("params: "),
        "{job}"
    );
    let verdict = |m: &str| {
        job["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["metric"] == m)
            .map(|x| {
                (
                    x["verdict"].as_str().unwrap_or_default().to_string(),
                    x["reason"].clone(),
                )
            })
            .unwrap_or_else(|| panic!("no {m}: {job}"))
    };
    assert_eq!(verdict("ttft_ms p50").0, "slower");
    assert_eq!(verdict("ttft_ms p90").0, "slower");
    assert_eq!(
        verdict("ttft_ms p99"),
        ("invalid".into(), "n=80, needs 662".into())
    );
    assert_eq!(
        verdict("completed_rps"),
        ("invalid".into(), "n=1, needs 3".into())
    );
}

#[test]
fn minerva_bench_drives_a_server_from_the_command_line() {
    let mock = Mock::start(MockConfig {
        tokens: 8,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let out_path = dir.path().display().to_string();
    let bench = |o: &str| {
        let out = Minerva::new(&[
            "bench",
            "--url",
            &mock.base_url(),
            "-m",
            "served-model",
            "-p",
            "16",
            "-n",
            "8",
            "--concurrency",
            "1,2",
            "--requests",
            "6",
            "-o",
            o,
            "--out",
            &out_path,
        ])
        .output();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("results: "),
            "{}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    let rows: Vec<Value> = serde_json::from_str(&bench("json")).unwrap_or_default();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!(r["requests"], 6, "{r}");
        assert_eq!(r["failed"], 0, "{r}");
        assert!(f(&r["achieved_rps"]) > 0.0, "{r}");
        assert!(f(&r["ttft_ms_p50"]) >= 0.0, "{r}");
        assert_eq!(r["ttft_ms_p99"], Value::Null, "6 requests: no p99");
        assert_eq!(r["test"], "pp16_tg8");
    }
    let md = bench("md");
    assert!(md.starts_with("| model"), "{md}");
    assert!(md.contains("too few (p99 needs 662)"), "{md}");
    // Two runs of two steps of 6 measured requests each (and their warmups).
    assert!(mock.requests() >= 24, "{}", mock.requests());
}

fn bodies_max_tokens(bodies: &[Value]) -> Vec<u64> {
    bodies
        .iter()
        .map(|b| b["max_tokens"].as_u64().unwrap_or(0))
        .collect()
}

fn lengths(reqs: &[Value], key: &str) -> Vec<u64> {
    reqs.iter().map(|r| r[key].as_u64().unwrap_or(0)).collect()
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

#[test]
fn a_sharegpt_dataset_is_sent_conversation_by_conversation_with_its_history() {
    let mock = Mock::start(MockConfig {
        follow_request: true,
        record_bodies: true,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, dataset: { path: datasets/sharegpt-sample.json, format: sharegpt, sample: 16, turns: 3 }, max_tokens: 48 }"#,
        "load: { concurrency: 2, requests: 30 }, ignore_eos: true",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reqs = requests(&run);
    assert_eq!(reqs.len(), 30);
    let bodies = mock.bodies();
    // One warmup, then the 30 measured requests.
    assert_eq!(bodies.len(), 31);
    let roles = |b: &Value| -> Vec<String> {
        b["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| m["role"].as_str().unwrap_or("").to_string())
            .collect()
    };
    // Later turns carry the dataset's earlier turns as history.
    let third_turns = bodies
        .iter()
        .filter(|b| roles(b) == ["user", "assistant", "user", "assistant", "user"])
        .count();
    assert!(third_turns >= 1, "no third turn among {bodies:?}");
    assert!(bodies
        .iter()
        .all(|b| roles(b).last().map(String::as_str) == Some("user")));
    // Each request asks for its reply's length (about 4 characters a token), capped at 48.
    let asked = bodies_max_tokens(&bodies);
    assert!(asked.iter().all(|m| (1..=48).contains(m)), "{asked:?}");
    assert!(asked.iter().any(|m| *m < 48), "{asked:?}");
    // The samples record what the server reported for each request.
    let outs = lengths(&reqs, "output_tokens");
    let mut measured_asked: Vec<u64> = asked[1..].to_vec();
    let mut got = outs.clone();
    measured_asked.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, measured_asked);
    assert!(lengths(&reqs, "prompt_tokens").iter().all(|p| *p > 0));
    let report = common::read(&run.join("report.md"));
    assert!(
        report.contains("server workload: sharegpt dataset sharegpt-sample.json (sha256 ")
            && report.contains(", 64 conversations, 16 sampled), up to 3 turns each; output up to the dataset's reply length, at most 48"),
        "{report}"
    );
    assert!(
        report.contains("| Job | Requests | Input tokens | Output tokens |"),
        "{report}"
    );
}

#[test]
fn synthetic_request_lengths_follow_their_distributions() {
    let mock = Mock::start(MockConfig {
        follow_request: true,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, input_tokens: { mean: 200, stddev: 40, min: 120, max: 280 }, output_tokens: { min: 4, max: 24 } }"#,
        "load: { concurrency: 4, requests: 300 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reqs = requests(&run);
    assert_eq!(reqs.len(), 300);
    let inputs = lengths(&reqs, "prompt_tokens");
    let outputs = lengths(&reqs, "output_tokens");
    assert!(inputs.iter().all(|n| (120..=280).contains(n)), "{inputs:?}");
    assert!(outputs.iter().all(|n| (4..=24).contains(n)), "{outputs:?}");
    // Standard errors: 40/√300 ≈ 2.3 tokens in; 5.8/√300 ≈ 0.33 out.
    assert!(
        (mean(&inputs) - 200.0).abs() < 9.0,
        "mean in {}",
        mean(&inputs)
    );
    assert!(
        (mean(&outputs) - 14.0).abs() < 1.5,
        "mean out {}",
        mean(&outputs)
    );
    let sd = {
        let m = mean(&inputs);
        (inputs.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / inputs.len() as f64).sqrt()
    };
    assert!((30.0..48.0).contains(&sd), "sd in {sd}");
    let report = common::read(&run.join("report.md"));
    assert!(
        report.contains("input tokens normal(mean 200, sd 40); output tokens uniform 4..24"),
        "{report}"
    );
}

#[test]
fn a_shared_prefix_starts_the_requested_share_of_prompts() {
    let mock = Mock::start(MockConfig {
        follow_request: true,
        record_bodies: true,
        tokens: 2,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt_tokens: 64, prefix: { tokens: 32, share: 0.6 }, max_tokens: 2 }"#,
        "load: { concurrency: 4, requests: 400 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let prompts: Vec<Vec<u64>> = mock
        .bodies()
        .iter()
        .map(|b| {
            b["prompt"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_u64)
                .collect()
        })
        .collect();
    assert!(prompts.iter().all(|p| p.len() == 96));
    let mut counts = std::collections::HashMap::new();
    for p in &prompts {
        *counts.entry(p[..32].to_vec()).or_insert(0usize) += 1;
    }
    let shared = counts.values().copied().max().unwrap_or(0) as f64 / prompts.len() as f64;
    assert!((0.5..0.7).contains(&shared), "shared {shared}");
    // The rest have prefixes of their own.
    assert_eq!(
        counts.len(),
        prompts.len() - counts.values().max().unwrap_or(&0) + 1
    );
    let reqs = requests(&run);
    assert!(lengths(&reqs, "prompt_tokens").iter().all(|n| *n == 96));
}

#[test]
fn a_capped_open_loop_queues_requests_for_a_slot_and_counts_the_wait() {
    let mock = Mock::start(MockConfig {
        ttft: Duration::from_millis(40),
        tokens: 2,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 2 }"#,
        "load: { rate: 200, max_concurrency: 2, requests: 24 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sum = summaries(&run);
    assert_eq!(sum[0]["max_concurrency"], 2);
    assert_eq!(sum[0]["pattern"], "constant 200/s, at most 2 in flight");
    // 24 requests, 2 at a time, 40 ms each: about 0.48 s, far beyond the 0.12 s schedule.
    let queued = &sum[0]["queued_ms"];
    assert!(f(&queued[2]) > 200.0, "queued {queued}");
    // The wait for a slot is not the client's lateness.
    assert!(f(&sum[0]["lag_ms"][0]) < 0.1 * f(&queued[0]), "{}", sum[0]);
    // Latency counts from the scheduled time: the last requests waited for their slot.
    let e2e: Vec<f64> = requests(&run).iter().map(|r| f(&r["e2e_ms"])).collect();
    let worst = e2e.iter().copied().fold(0.0, f64::max);
    assert!(worst > 250.0, "worst e2e {worst}");
}

#[test]
fn bad_workloads_are_refused_before_anything_runs() {
    let dir = common::tempdir();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"ok\"}\n{\"text\": 1}\n").unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        (
            format!(
                r#"{{ name: s, dataset: {{ path: "{}", format: prompts }}, max_tokens: 4 }}"#,
                bad.display()
            ),
            "entry 2: expected a string or an object with a string `prompt`",
        ),
        (
            r#"{ name: s, input_tokens: { mean: 50, min: 60 }, max_tokens: 4 }"#.to_string(),
            "scenarios[0].input_tokens",
        ),
        (
            r#"{ name: s, prompt: "x", prefix: { tokens: 8 }, max_tokens: 4 }"#.to_string(),
            "it needs `prompt_tokens` or `input_tokens`",
        ),
        (
            r#"{ name: s, dataset: { path: /etc/passwd, format: prompts }, max_tokens: 4 }"#
                .to_string(),
            "outside the project",
        ),
    ];
    for (scenario, want) in cases {
        let (_, out) = run(
            dir.path(),
            "http://127.0.0.1:9/v1",
            &scenario,
            "load: sequential",
            &[],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{scenario}: {err}");
        assert!(err.contains(want), "{scenario}: want {want:?} in {err}");
    }
}

#[test]
fn slo_search_finds_the_rate_a_server_of_known_capacity_sustains() {
    // 8 slots, 40 ms per request (30 ms to the first token, 10 ms to the second): 200 req/s.
    // Above that, requests queue for a slot and their TTFT grows step by step.
    let mock = Mock::start(MockConfig {
        ttft: Duration::from_millis(30),
        itl: Duration::from_millis(10),
        tokens: 2,
        capacity: Some(8),
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    // A p99 bound needs 662 requests per step: fewer is refused before anything runs.
    let (_, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 2 }"#,
        "load: { find_max: rate, slo: { ttft_p99_ms: 70 }, requests: 100 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("100 requests per step are too few"),
        "{}",
        text(&out.stderr)
    );
    let (run, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 2 }"#,
        "load: { find_max: rate, slo: { ttft_p90_ms: 70 }, requests: 160 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sum = summaries(&run);
    let result = sum
        .iter()
        .find_map(|s| s.get("search").cloned())
        .unwrap_or_else(|| panic!("no search result in {sum:?}"));
    let best = f(&result["best"]);
    assert!(
        (180.0..=220.0).contains(&best),
        "best {best}: {result}\n{sum:#?}"
    );
    let tried = result["tried"].as_array().cloned().unwrap_or_default();
    assert!(tried.len() >= 4, "{result}");
    // Every step is judged (the closed-loop probe that picked the first rate is not a step),
    // and only the last carries the result.
    let steps: Vec<&Value> = sum
        .iter()
        .filter(|s| s["pattern"] != "concurrency 16")
        .collect();
    assert_eq!(steps.len(), tried.len());
    assert!(
        steps.iter().all(|s| s.get("slo_check").is_some()),
        "{sum:?}"
    );
    assert_eq!(sum.iter().filter(|s| s.get("search").is_some()).count(), 1);
    let report = common::read(&run.join("report.md"));
    assert!(
        report.contains("**Highest rate within the SLO: "),
        "{report}"
    );
    assert!(
        report.contains("SLO: ttft p90 ≤ 70 ms, goodput ≥ 99%"),
        "{report}"
    );
    assert!(report.contains("SLO missed"), "{report}");
}

#[test]
fn server_metrics_are_scraped_beside_each_step_or_said_to_be_missing() {
    let mock = Mock::start(MockConfig {
        ttft: Duration::from_millis(200),
        tokens: 4,
        metrics: true,
        ..MockConfig::default()
    });
    let dir = common::tempdir();
    // 28 requests, 4 at a time, 200 ms each: about 1.4 s, so one scrape falls inside.
    let (rdir, out) = run(
        dir.path(),
        &mock.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 4 }"#,
        "load: { concurrency: 4, requests: 28 }",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sum = summaries(&rdir);
    let m = &sum[0]["server"];
    assert_eq!(m["exposed"], true, "{m}");
    assert_eq!(m["source"], "vllm");
    assert!(m["scrapes"].as_u64().unwrap_or(0) >= 3, "{m}");
    assert!(mock.scrapes() >= 3);
    // The counters' increase over the step: 28 requests of 7 prompt and 4 generated tokens.
    assert_eq!(f(&m["prompt_tokens"]), 196.0, "{m}");
    assert_eq!(f(&m["generated_tokens"]), 112.0, "{m}");
    assert!(f(&m["running"]["max"]) >= 3.0, "{m}");
    assert_eq!(
        f(&m["kv_cache_usage"]["max"]),
        f(&m["running"]["max"]) / 64.0
    );
    let report = common::read(&rdir.join("report.md"));
    assert!(
        report.contains("| Job | Load | Metrics | Running |"),
        "{report}"
    );
    assert!(report.contains("| 196 | 112 (client: 112) |"), "{report}");

    // A server without /metrics: the step runs, and the report says so.
    let plain = Mock::start(MockConfig::default());
    let dir2 = common::tempdir();
    let (rdir, out) = run(
        dir2.path(),
        &plain.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 4 }"#,
        "load: sequential",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let sum = summaries(&rdir);
    assert_eq!(sum[0]["server"]["exposed"], false);
    let report = common::read(&rdir.join("report.md"));
    assert!(
        report.contains("**not exposed** at http://")
            && report.contains("/metrics (HTTP 404 Not Found)"),
        "{report}"
    );
    // And `metrics: false` scrapes nothing.
    let dir3 = common::tempdir();
    let (rdir, out) = run(
        dir3.path(),
        &plain.base_url(),
        r#"{ name: s, prompt: "x", max_tokens: 4 }"#,
        "load: sequential, metrics: false",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(summaries(&rdir)[0].get("server").is_none());
}
