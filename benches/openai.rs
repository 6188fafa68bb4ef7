//! The `openai` client's own overhead: `minerva run` against a zero-delay OpenAI-compatible mock
//! (tests/common/openai_mock.rs) on the same machine, 64 output tokens per request. Prints
//! requests/s and TTFT p99 at concurrency 1 and 4, and the most streamed tokens/s at higher
//! concurrency. Everything minerva does per request is included: the worker's HTTP and SSE
//! work, each sample's trip to the runner and its append to samples.jsonl.
//!
//! Then the slow-server case: a mock on one thread that spends 0.5 ms of CPU on each request and
//! 50 µs on each token, writing each token's event on its own (a single-threaded, CPU-bound
//! server sharing the machine with the client), driven in turn by minerva, by a minimal Python
//! aiohttp client (benches/openai_client.py, aiohttp from PyPI in a venv under target/ when the
//! system Python lacks it) and by a C client that is the floor (benches/openai_floor.c: a
//! blocking thread per connection, no parsing; built with `cc` when there is one), at
//! concurrency 1, 4 and 16. Prints each client's request rate, minerva's ratio to the others,
//! each client's CPU per streamed event, and each client's sleeps (voluntary context switches)
//! per request: every sleep is a wake-up the server pays for on its next write.
//!
//!   cargo bench --bench openai [-- REQUESTS]     # both cases
//!   cargo bench --bench openai -- slow [REQUESTS]   # the slow-server case only
//!
//! `MINERVA_BENCH_CLIENT_THREADS=N` runs the client with N runtime threads (its
//! `client_threads` param) in the slow-server case.

#[allow(dead_code)]
#[path = "../tests/common/openai_mock.rs"]
mod openai_mock;

use openai_mock::{Mock, MockConfig};
use std::process::Command;

fn main() {
    let mut args: Vec<String> = std::env::args().filter(|a| !a.starts_with("--")).collect();
    let slow_only = args.get(1).is_some_and(|a| a == "slow");
    if slow_only {
        args.remove(1);
    }
    let requests: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4000);
    if !slow_only {
        fast(requests);
    }
    slow(args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000));
}

/// One `minerva run` against `base_url`, a job per load; returns samples.jsonl.
fn minerva_run(dir: &std::path::Path, base_url: &str, loads: &[String]) -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    // MINERVA_BENCH_CLIENT_THREADS=N sets the client's runtime threads (default: the param's).
    let threads = std::env::var("MINERVA_BENCH_CLIENT_THREADS")
        .map(|n| format!("client_threads: {n}, "))
        .unwrap_or_default();
    let pipeline = dir.join("p.yaml");
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
      params: {{ base_url: "{base_url}", metrics: false, {threads}load: [{}] }}
"#,
            loads.join(", ")
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(dir.join("out"));
    let out = Command::new(env!("CARGO_BIN_EXE_minerva"))
        .args(["-q", "run"])
        .arg(&pipeline)
        .args(["--out"])
        .arg(dir.join("out"))
        .args(["--run-id", "r"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(dir.join("out/client-overhead/r/samples.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A Python with aiohttp: the system's, else a venv under target/ (created once, from PyPI).
fn python_with_aiohttp() -> Option<String> {
    let has = |py: &str| {
        Command::new(py)
            .args(["-c", "import aiohttp"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if has("python3") {
        return Some("python3".into());
    }
    let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-py");
    let py = format!("{venv}/bin/python");
    if !has(&py) {
        let made = Command::new("python3")
            .args(["-m", "venv", venv])
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&py)
                .args(["-m", "pip", "install", "--quiet", "aiohttp"])
                .status()
                .is_ok_and(|s| s.success());
        if !made || !has(&py) {
            return None;
        }
    }
    Some(py)
}

/// The C floor client (benches/openai_floor.c), compiled once under target/ when a C compiler
/// is at hand.
fn floor_client() -> Option<String> {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/openai_floor.c");
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench-floor");
    let built = Command::new("cc")
        .args(["-O2", "-pthread", src, "-o", bin])
        .status()
        .is_ok_and(|s| s.success());
    built.then(|| bin.to_string())
}

/// CPU seconds and voluntary context switches (sleeps) of this process's waited-for children
/// so far, their own children included.
#[allow(unsafe_code)]
fn children_usage() -> (f64, f64) {
    // SAFETY: getrusage fills the zeroed struct it is given and reads nothing else.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru
    };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    (t(ru.ru_utime) + t(ru.ru_stime), ru.ru_nvcsw as f64)
}

/// One client's figures from one run.
#[derive(Default, Clone, Copy)]
struct Leg {
    rps: f64,
    /// CPU µs per streamed event, as the client measures it (minerva: its worker, during the
    /// step).
    cpu_us: f64,
    /// CPU µs per streamed event of every process the client ran, start-up included.
    all_cpu_us: f64,
    /// Voluntary context switches per request, every process included: each is a sleep the
    /// server's next write has to wake.
    sleeps: f64,
}

/// The slow-server case (see the module's doc).
fn slow(requests: u64) {
    let tokens = 16;
    let mock = Mock::start_with_threads(
        MockConfig {
            tokens,
            cpu_per_request: std::time::Duration::from_micros(500),
            cpu_per_token: std::time::Duration::from_micros(50),
            ..MockConfig::default()
        },
        1,
    );
    // A role event, the tokens, usage and [DONE].
    let events_per_request = (tokens + 3) as f64;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let py = python_with_aiohttp();
    let floor = floor_client();
    let port = mock
        .base_url()
        .rsplit(':')
        .next()
        .and_then(|p| p.trim_end_matches("/v1").parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {}", mock.base_url()));
    println!(
        "\nslow server: one thread, 0.5 ms of CPU per request and 50 µs per token, each token's event written on its own; {tokens} tokens per request, {requests} requests per run, same machine"
    );
    println!("clients: minerva; python = benches/openai_client.py (aiohttp); C = benches/openai_floor.c (a blocking thread per connection, no parsing: the floor)");
    println!(
        "  {:>4}  {:>23}  {:>9}  {:>31}  {:>16}",
        "", "requests/s", "ratio", "client CPU µs/event", "sleeps/request"
    );
    println!(
        "  {:>4}  {:>7} {:>7} {:>7}  {:>4} {:>4}  {:>7} {:>7} {:>7} {:>7}  {:>5} {:>5} {:>4}",
        "c",
        "minerva",
        "python",
        "C",
        "/py",
        "/C",
        "minerva",
        "(all)",
        "python",
        "C",
        "min.",
        "py",
        "C"
    );
    // One run of a reference client: its JSON line, plus its process's usage.
    let reference = |cmd: &mut Command| -> Leg {
        let u0 = children_usage();
        let out = cmd.output().unwrap_or_else(|e| panic!("{e}"));
        let u1 = children_usage();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let events = v["events"].as_f64().unwrap_or(1.0).max(1.0);
        Leg {
            rps: v["rps"].as_f64().unwrap_or(0.0),
            cpu_us: v["cpu_s"].as_f64().unwrap_or(0.0) / events * 1e6,
            all_cpu_us: (u1.0 - u0.0) / events * 1e6,
            sleeps: (u1.1 - u0.1) / requests as f64,
        }
    };
    for c in [1u32, 4, 16] {
        let mut legs: Vec<(&str, Leg)> = Vec::new();
        // Two rounds, alternating the order of the clients.
        for round in 0..2 {
            let mut order = vec!["minerva", "python", "C"];
            if round == 1 {
                order.reverse();
            }
            for leg in order {
                let figures = match leg {
                    "minerva" => {
                        let u0 = children_usage();
                        let samples = minerva_run(
                            dir.path(),
                            &mock.base_url(),
                            &[format!(
                                "{{ concurrency: {c}, requests: {requests}, warmup: 20 }}"
                            )],
                        );
                        let u1 = children_usage();
                        let sum = samples
                            .lines()
                            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                            .find_map(|v| v.get("load").cloned())
                            .unwrap_or_default();
                        let n = sum["requests"].as_f64().unwrap_or(1.0);
                        // The warmups' events and sleeps are in the process totals too.
                        let all = n + 20.0;
                        Leg {
                            rps: sum["achieved_rps"].as_f64().unwrap_or(0.0),
                            cpu_us: sum["client_cpu_s"].as_f64().unwrap_or(0.0)
                                / (n * events_per_request)
                                * 1e6,
                            all_cpu_us: (u1.0 - u0.0) / (all * events_per_request) * 1e6,
                            sleeps: (u1.1 - u0.1) / all,
                        }
                    }
                    "python" => match &py {
                        Some(py) => reference(
                            Command::new(py)
                                .arg(concat!(
                                    env!("CARGO_MANIFEST_DIR"),
                                    "/benches/openai_client.py"
                                ))
                                .arg(format!("{}/chat/completions", mock.base_url()))
                                .arg(c.to_string())
                                .arg(requests.to_string()),
                        ),
                        None => continue,
                    },
                    _ => match &floor {
                        Some(bin) => reference(
                            Command::new(bin)
                                .arg(port.to_string())
                                .arg("/v1/chat/completions")
                                .arg(c.to_string())
                                .arg(requests.to_string()),
                        ),
                        None => continue,
                    },
                };
                legs.push((leg, figures));
            }
        }
        let mean = |name: &str, f: fn(&Leg) -> f64| -> Option<f64> {
            let v: Vec<f64> = legs
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, l)| f(l))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let show =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let rps = |n| mean(n, |l| l.rps);
        let ratio = |other: Option<f64>| rps("minerva").zip(other).map(|(m, o)| m / o);
        println!(
            "  {c:>4}  {:>7} {:>7} {:>7}  {:>4} {:>4}  {:>7} {:>7} {:>7} {:>7}  {:>5} {:>5} {:>4}",
            show(rps("minerva"), 1),
            show(rps("python"), 1),
            show(rps("C"), 1),
            show(ratio(rps("python")), 2),
            show(ratio(rps("C")), 2),
            show(mean("minerva", |l| l.cpu_us), 2),
            show(mean("minerva", |l| l.all_cpu_us), 2),
            show(mean("python", |l| l.cpu_us), 2),
            show(mean("C", |l| l.cpu_us), 2),
            show(mean("minerva", |l| l.sleeps), 1),
            show(mean("python", |l| l.sleeps), 1),
            show(mean("C", |l| l.sleeps), 1),
        );
    }
    if py.is_none() {
        println!(
            "  (no Python with aiohttp, and none could be installed: that client was skipped)"
        );
    }
    if floor.is_none() {
        println!("  (no C compiler (`cc`): the floor client was skipped)");
    }
}

fn fast(requests: u64) {
    let mock = Mock::start_with_threads(
        MockConfig {
            tokens: 64,
            ..MockConfig::default()
        },
        1,
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
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
    let samples = minerva_run(dir.path(), &mock.base_url(), &list);
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
