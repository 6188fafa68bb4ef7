//! The `openai` client's own overhead: `minerva run` against a zero-delay OpenAI-compatible mock
//! (tests/common/openai_mock.rs) on the same machine, 64 output tokens per request. Prints
//! requests/s and TTFT p99 at concurrency 1 and 4, and the most streamed tokens/s at higher
//! concurrency. Everything minerva does per request is included: the worker's HTTP and SSE
//! work, each sample's trip to the runner and its append to samples.jsonl.
//!
//!   cargo bench --bench openai [-- REQUESTS]

#[allow(dead_code)]
#[path = "../tests/common/openai_mock.rs"]
mod openai_mock;

use openai_mock::{Mock, MockConfig};
use std::process::Command;

fn main() {
    let args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let requests: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    let mock = Mock::start_with_threads(
        MockConfig {
            tokens: 64,
            ..MockConfig::default()
        },
        1,
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = env!("CARGO_MANIFEST_DIR");
    let loads = [
        ("concurrency 1", 1, requests),
        ("concurrency 4", 4, requests),
        ("concurrency 16", 16, requests * 2),
        ("concurrency 64", 64, requests * 2),
    ];
    let list: Vec<String> = loads
        .iter()
        .map(|(_, c, n)| format!("{{ concurrency: {c}, requests: {n}, warmup: 50 }}"))
        .collect();
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: client-overhead
models:
  - {{ name: mock, format: gguf, source: {{ path: {root}/tests/fixtures/models/tiny.gguf }} }}
scenarios:
  - {{ name: s, prompt: "Hello", max_tokens: 64 }}
stages:
  - name: bench
    kind: bench
    matrix:
      backend: [openai]
      model: [mock]
      scenario: [s]
      params: {{ base_url: "{}", load: [{}] }}
"#,
            mock.base_url(),
            list.join(", ")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Command::new(env!("CARGO_BIN_EXE_minerva"))
        .args(["-q", "run"])
        .arg(&pipeline)
        .args(["--out"])
        .arg(dir.path().join("out"))
        .args(["--run-id", "r"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let samples = std::fs::read_to_string(dir.path().join("out/client-overhead/r/samples.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "openai client against a zero-delay mock (1 thread, same machine), 64 tokens per request, {requests} requests per load (more at 16 and 64)"
    );
    let mut by_load: std::collections::BTreeMap<u32, (Vec<f64>, Option<serde_json::Value>)> =
        Default::default();
    for line in samples.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
        let conc = v["params"]["load"]["concurrency"].as_u64().unwrap_or(0) as u32;
        let entry = by_load.entry(conc).or_default();
        if let Some(l) = v.get("load") {
            entry.1 = Some(l.clone());
        } else if v["warmup"] == false {
            if let Some(t) = v["ttft_ms"].as_f64() {
                entry.0.push(t);
            }
        }
    }
    for (label, c, _) in loads {
        let Some((ttft, Some(sum))) = by_load.get_mut(&c) else {
            println!("  {label}: no figures");
            continue;
        };
        ttft.sort_by(f64::total_cmp);
        let p = |q: f64| ttft[((ttft.len() - 1) as f64 * q).round() as usize];
        println!(
            "  {label:15} {:8.1} req/s  {:9.0} tokens/s  TTFT p50 {:.3} ms  p99 {:.3} ms  failed {}  client CPU {:.2} cores{}",
            sum["achieved_rps"].as_f64().unwrap_or(0.0),
            sum["output_tps"].as_f64().unwrap_or(0.0),
            p(0.5),
            p(0.99),
            sum["failed"],
            sum["client_cpu_cores"].as_f64().unwrap_or(0.0),
            if sum["client_bound"] == true { "  CLIENT-BOUND" } else { "" }
        );
    }
    println!("  served by the mock: {} requests", mock.requests());
}
