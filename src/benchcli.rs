//! `minerva bench`: llama-bench's command line, without a pipeline file.
//!
//! The flags become an ordinary pipeline ([`BenchPlan::pipeline_yaml`], what `--emit-pipeline`
//! prints): one model entry per `-m`, one synthetic scenario per test (`pp512`, `tg128`,
//! `pp512_tg128`, each `_dN` at a depth), one bench stage whose matrix has an axis per flag
//! given a list. It runs into an ordinary run directory, so `report`, `compare` and `export`
//! work on it; the result is printed from that directory in llama-bench's formats
//! ([`render`]).

use crate::cli::{BenchArgs, BenchOutput};
use crate::export::{self, ExportFormat, PromptAndGen};
use crate::results::{read_samples, RunDir};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// Bad `minerva bench` arguments (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BenchArgsError(pub String);

/// llama-bench's integer lists: `1,2,4`, and ranges `a-b` (step 1), `a-b+s` (add s), `a-b*m`
/// (multiply by m), mixed in one list.
pub fn parse_int_list(flag: &str, s: &str) -> Result<Vec<u64>, BenchArgsError> {
    let bad = |why: &str| BenchArgsError(format!("{flag} {s}: {why}"));
    let num = |t: &str| -> Result<u64, BenchArgsError> {
        t.trim()
            .parse::<u64>()
            .map_err(|_| bad(&format!("`{t}` is not a non-negative integer")))
    };
    let mut out = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(bad("an empty list item"));
        }
        let Some((first, rest)) = item.split_once('-') else {
            out.push(num(item)?);
            continue;
        };
        let first = num(first)?;
        let (last, op, step) = match rest.find(['+', '*']) {
            Some(i) => (num(&rest[..i])?, &rest[i..i + 1], num(&rest[i + 1..])?),
            None => (num(rest)?, "+", 1),
        };
        if last < first {
            return Err(bad(&format!("the range {item} ends before it starts")));
        }
        let mut i = first;
        while i <= last {
            out.push(i);
            if out.len() > 10_000 {
                return Err(bad("more than 10000 values"));
            }
            let next = match op {
                "+" => i.checked_add(step),
                _ => i.checked_mul(step),
            };
            match next {
                Some(n) if n > i => i = n,
                Some(_) => return Err(bad(&format!("the step of {item} does not advance"))),
                None => break,
            }
        }
    }
    Ok(out)
}

/// Every value of a repeatable list flag, in order, duplicates dropped.
fn values(flag: &str, given: &[String]) -> Result<Vec<u64>, BenchArgsError> {
    let mut out: Vec<u64> = Vec::new();
    for g in given {
        for v in parse_int_list(flag, g)? {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// One synthetic test, named as llama-bench names it, written as a scenario name.
#[derive(Debug, Clone, PartialEq)]
struct Test {
    n_prompt: u64,
    n_gen: u64,
    depth: u64,
}

impl Test {
    fn name(&self) -> String {
        let base = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}_tg{g}"),
        };
        if self.depth > 0 {
            format!("{base}_d{}", self.depth)
        } else {
            base
        }
    }
}

/// What `minerva bench` runs: the pipeline and what the user granted by typing it.
#[derive(Debug)]
pub struct BenchPlan {
    /// The pipeline, as YAML.
    pub yaml: String,
    /// Model paths given with `-m`: the user's own, so they count as granted (`--allow-read`).
    pub granted_paths: Vec<PathBuf>,
    /// An API key variable named with `--api-key-env`: granted.
    pub granted_env: Vec<String>,
    /// Against a server (`--url`).
    pub server: bool,
}

/// A name for a model file: its stem, in the characters a pipeline name allows.
fn model_name(path: &str) -> String {
    let stem = Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let cleaned: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "model".into()
    } else {
        cleaned
    }
}

/// A directory `mlx-lm` quantized: its config.json has a `quantization` entry.
fn quantized_by_mlx(dir: &Path) -> bool {
    crate::paths::read_bounded(&dir.join("config.json"), 16 << 20, true)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|c| c.get("quantization").is_some())
}

/// A YAML scalar: JSON's quoting is valid YAML.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A list flag's values as a matrix param: an axis when there are several.
fn param_value(v: &[u64]) -> String {
    match v {
        [one] => one.to_string(),
        many => format!(
            "[{}]",
            many.iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn flag_values(flag: &str, given: &[String]) -> Result<Vec<u64>, BenchArgsError> {
    let v = values(flag, given)?;
    if matches!(flag, "-fa" | "-mmp") && v.iter().any(|x| *x > 1) {
        return Err(BenchArgsError(format!("{flag}: expected 0 or 1")));
    }
    Ok(v)
}

impl BenchPlan {
    /// The pipeline for these arguments; `command` is the command line, recorded in it.
    pub fn new(a: &BenchArgs, command: &str) -> Result<BenchPlan, BenchArgsError> {
        if a.model.is_empty() {
            return Err(BenchArgsError(match a.url {
                Some(_) => "--url needs -m NAME: the model the server serves".into(),
                None => "-m FILE is required: the model to benchmark".into(),
            }));
        }
        if a.repetitions == 0 {
            return Err(BenchArgsError("-r: at least 1 repetition".into()));
        }
        let server = a.url.is_some();
        let mut n_prompt = values("-p", &a.n_prompt)?;
        let mut n_gen = values("-n", &a.n_gen)?;
        let depths = match values("-d", &a.depth)? {
            d if d.is_empty() => vec![0],
            d => d,
        };
        let mut pairs = Vec::new();
        for pg in &a.pg {
            let Some((p, g)) = pg.split_once(',') else {
                return Err(BenchArgsError(format!(
                    "-pg {pg}: expected PP,TG (e.g. -pg 512,128)"
                )));
            };
            let (p, g) = (parse_int_list("-pg", p)?, parse_int_list("-pg", g)?);
            match (p.as_slice(), g.as_slice()) {
                ([p], [g]) if *p > 0 && *g > 0 => pairs.push((*p, *g)),
                _ => {
                    return Err(BenchArgsError(format!(
                        "-pg {pg}: expected two positive numbers PP,TG"
                    )))
                }
            }
        }
        // llama-bench's defaults: -p 512 -n 128, each replaced only by its own flag.
        if a.n_prompt.is_empty() {
            n_prompt = vec![512];
        }
        if a.n_gen.is_empty() {
            n_gen = vec![128];
        }
        let mut tests = Vec::new();
        for &depth in &depths {
            if server {
                if depth > 0 {
                    return Err(BenchArgsError(
                        "-d: a server keeps its own KV cache; depth applies to in-process engines"
                            .into(),
                    ));
                }
                // A server request always sends a prompt and reads a generation.
                for &p in &n_prompt {
                    for &g in &n_gen {
                        if p > 0 || g > 0 {
                            tests.push(Test {
                                n_prompt: p,
                                n_gen: g,
                                depth,
                            });
                        }
                    }
                }
            } else {
                tests.extend(n_prompt.iter().filter(|p| **p > 0).map(|&p| Test {
                    n_prompt: p,
                    n_gen: 0,
                    depth,
                }));
                tests.extend(n_gen.iter().filter(|g| **g > 0).map(|&g| Test {
                    n_prompt: 0,
                    n_gen: g,
                    depth,
                }));
            }
            tests.extend(pairs.iter().map(|&(p, g)| Test {
                n_prompt: p,
                n_gen: g,
                depth,
            }));
        }
        tests.dedup_by(|a, b| a.name() == b.name());
        if tests.is_empty() {
            return Err(BenchArgsError(
                "no test to run: -p and -n are all 0 and no -pg was given".into(),
            ));
        }

        let mut y = String::new();
        y.push_str(&format!(
            "# Written by minerva bench; run it again with `minerva run FILE`.\n#   {}\nname: bench\n",
            command.replace('\n', " ")
        ));
        y.push_str(&format!("description: {}\n", q(command)));
        let mut granted_paths = Vec::new();
        let mut granted_env = Vec::new();
        let mut names: Vec<String> = Vec::new();
        y.push_str("models:\n");
        for m in &a.model {
            let mut name = model_name(m);
            while names.contains(&name) {
                name.push('_');
            }
            if server {
                // Served by the server: the entry names it, nothing is read.
                y.push_str(&format!(
                    "  - {{ name: {}, format: gguf, source: {{ path: {} }} }}\n",
                    q(&name),
                    q(&format!("served/{name}"))
                ));
            } else {
                let path =
                    std::fs::canonicalize(m).map_err(|e| BenchArgsError(format!("-m {m}: {e}")))?;
                let format = if path.is_dir() {
                    if quantized_by_mlx(&path) {
                        "mlx"
                    } else {
                        "safetensors"
                    }
                } else {
                    "gguf"
                };
                // What each engine loads, said before anything runs.
                match (a.backend, format) {
                    (crate::cli::BenchBackend::LlamaCpp, f) if f != "gguf" => {
                        return Err(BenchArgsError(format!(
                            "-m {m}: llama_cpp loads a GGUF file, not a directory"
                        )))
                    }
                    (crate::cli::BenchBackend::Mlx, "gguf") => {
                        return Err(BenchArgsError(format!(
                            "-m {m}: mlx loads a model directory (config.json and SafeTensors); \
                             `minerva convert gguf-to-safetensors` makes one from a GGUF"
                        )))
                    }
                    _ => {}
                }
                y.push_str(&format!(
                    "  - {{ name: {}, format: {format}, source: {{ path: {} }} }}\n",
                    q(&name),
                    q(&path.display().to_string())
                ));
                granted_paths.push(path);
            }
            names.push(name);
        }
        y.push_str("scenarios:\n");
        for t in &tests {
            let depth = if t.depth > 0 {
                format!(", depth: {}", t.depth)
            } else {
                String::new()
            };
            y.push_str(&format!(
                "  - {{ name: {}, prompt_tokens: {}, max_tokens: {}{depth} }}\n",
                t.name(),
                t.n_prompt,
                t.n_gen
            ));
        }

        let backend = if server { "openai" } else { a.backend.name() };
        let known: &[&str] = match crate::backend::BackendKind::parse(backend) {
            Some(b) => b.known_params(),
            None => &[],
        };
        let mut params: Vec<(String, String)> = Vec::new();
        let flags: [(&str, &str, &[String]); 6] = [
            ("-t", "threads", &a.threads),
            ("-b", "batch", &a.batch),
            ("-ub", "ubatch", &a.ubatch),
            ("-ngl", "n_gpu_layers", &a.ngl),
            ("-fa", "flash_attn", &a.flash_attn),
            ("-mmp", "mmap", &a.mmap),
        ];
        for (flag, key, given) in flags {
            if given.is_empty() {
                continue;
            }
            if !known.contains(&key) {
                return Err(BenchArgsError(format!(
                    "{flag}: backend {backend} has no `{key}` parameter (it takes: {})",
                    known.join(", ")
                )));
            }
            let v = flag_values(flag, given)?;
            if key == "threads" && v.contains(&0) {
                return Err(BenchArgsError("-t: threads must be at least 1".into()));
            }
            params.push((key.to_string(), param_value(&v)));
        }
        if let Some(url) = &a.url {
            let url = url.trim_end_matches('/');
            let base = if url.ends_with("/v1") || url.contains("/v1/") {
                url.to_string()
            } else {
                format!("{url}/v1")
            };
            params.push(("base_url".into(), q(&base)));
            if let Some(name) = a.model.first() {
                params.push(("model".into(), q(name)));
            }
            if let Some(env) = &a.api_key_env {
                params.push(("api_key_env".into(), q(env)));
                granted_env.push(env.clone());
            }
            let requests = a.requests.unwrap_or(u64::from(a.repetitions));
            let bounds = match a.duration {
                Some(d) => format!("requests: {requests}, duration: {d}"),
                None => format!("requests: {requests}"),
            };
            let mut loads = Vec::new();
            for c in values("--concurrency", &a.concurrency)? {
                if c == 0 {
                    return Err(BenchArgsError("--concurrency: at least 1".into()));
                }
                loads.push(format!("{{ concurrency: {c}, {bounds} }}"));
            }
            for r in &a.rate {
                if !(r.is_finite() && *r > 0.0) {
                    return Err(BenchArgsError(format!(
                        "--rate {r}: expected a positive rate"
                    )));
                }
                loads.push(format!("{{ rate: {r}, {bounds} }}"));
            }
            if loads.is_empty() {
                loads.push(format!("{{ sequential: true, {bounds} }}"));
            }
            params.push(("load".into(), format!("[{}]", loads.join(", "))));
            params.push(("ignore_eos".into(), "true".into()));
        }

        y.push_str("stages:\n");
        let first_bench_need = if server {
            String::new()
        } else {
            y.push_str("  - { name: fetch, kind: download }\n");
            y.push_str("  - { name: verify, kind: verify, needs: [fetch] }\n");
            "\n    needs: [verify]".to_string()
        };
        y.push_str(&format!(
            "  - name: bench\n    kind: bench{first_bench_need}\n    matrix:\n      backend: [{backend}]\n      model: [{}]\n      scenario: [{}]\n",
            names.iter().map(|n| q(n)).collect::<Vec<_>>().join(", "),
            tests.iter().map(Test::name).collect::<Vec<_>>().join(", ")
        ));
        if !params.is_empty() {
            y.push_str("      params:\n");
            for (k, v) in &params {
                y.push_str(&format!("        {k}: {v}\n"));
            }
        }
        if !server {
            y.push_str(&format!("    runs: {}\n", a.repetitions));
        }
        y.push_str(&format!(
            "    warmup: {}\n",
            if a.no_warmup { 0 } else { 1 }
        ));
        if a.delay > 0 {
            y.push_str(&format!("    delay: {}\n", a.delay));
        }
        y.push_str("  - { name: analyze, kind: analyze, needs: [bench] }\n");
        y.push_str("  - { name: report, kind: report, needs: [analyze] }\n");
        Ok(BenchPlan {
            yaml: y,
            granted_paths,
            granted_env,
            server,
        })
    }
}

/// llama-bench's test label: `pp512`, `tg128`, `pp512+tg128`, with ` @ d4096` at a depth.
fn test_label(e: &Map<String, Value>) -> String {
    let p = e["n_prompt"].as_u64().unwrap_or(0);
    let g = e["n_gen"].as_u64().unwrap_or(0);
    let d = e["n_depth"].as_u64().unwrap_or(0);
    let base = match (p, g) {
        (p, 0) => format!("pp{p}"),
        (0, g) => format!("tg{g}"),
        (p, g) => format!("pp{p}+tg{g}"),
    };
    if d > 0 {
        format!("{base} @ d{d}")
    } else {
        base
    }
}

fn human_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    }
}

fn human_params(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} B", n / 1e9)
    } else {
        format!("{:.2} M", n / 1e6)
    }
}

/// A Markdown table with right-aligned columns where `right` says so, padded as llama-bench's.
fn md_table(head: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = head
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([h.chars().count(), 3])
                .max()
                .unwrap_or(3)
        })
        .collect();
    let cell = |s: &str, i: usize| {
        if right[i] {
            format!(" {s:>w$} ", w = widths[i])
        } else {
            format!(" {s:<w$} ", w = widths[i])
        }
    };
    let mut out = String::new();
    let line = |cells: Vec<String>| format!("|{}|\n", cells.join("|"));
    out.push_str(&line(
        head.iter().enumerate().map(|(i, h)| cell(h, i)).collect(),
    ));
    out.push_str(&line(
        widths
            .iter()
            .enumerate()
            .map(|(i, w)| {
                if right[i] {
                    format!(" {}: ", "-".repeat(w - 1))
                } else {
                    format!(" {} ", "-".repeat(*w))
                }
            })
            .collect(),
    ));
    for r in rows {
        out.push_str(&line(
            r.iter().enumerate().map(|(i, c)| cell(c, i)).collect(),
        ));
    }
    out
}

/// llama-bench's Markdown table: model, size, params, backend, threads, the settings that
/// differ from llama-bench's defaults or between rows, test, t/s (mean ± standard deviation).
pub fn llama_bench_md(entries: &[Map<String, Value>]) -> String {
    let optional: [(&str, &str, Value); 5] = [
        ("n_gpu_layers", "ngl", json!(0)),
        ("n_batch", "n_batch", json!(2048)),
        ("n_ubatch", "n_ubatch", json!(512)),
        ("flash_attn", "fa", json!(0)),
        ("use_mmap", "mmap", json!(1)),
    ];
    let shown: Vec<&(&str, &str, Value)> = optional
        .iter()
        .filter(|(field, _, default)| entries.iter().any(|e| e.get(*field) != Some(default)))
        .collect();
    let mut head = vec!["model", "size", "params", "backend", "threads"];
    let mut right = vec![false, true, true, false, true];
    for (_, label, _) in &shown {
        head.push(label);
        right.push(true);
    }
    head.extend(["test", "t/s"]);
    right.extend([true, true]);
    let s = |v: Option<&Value>| match v {
        Some(Value::String(t)) => t.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let mut r = vec![
                s(e.get("model_type")),
                human_size(e["model_size"].as_u64().unwrap_or(0)),
                human_params(e["model_n_params"].as_u64().unwrap_or(0)),
                s(e.get("backends")),
                s(e.get("n_threads")),
            ];
            for (field, _, _) in &shown {
                r.push(s(e.get(*field)));
            }
            r.push(test_label(e));
            r.push(format!(
                "{:.2} ± {:.2}",
                e["avg_ts"].as_f64().unwrap_or(f64::NAN),
                e["stddev_ts"].as_f64().unwrap_or(f64::NAN)
            ));
            r
        })
        .collect();
    md_table(&head, &right, &rows)
}

/// One row per server job (one load step): what the client measured.
fn server_rows(dir: &RunDir) -> Result<Vec<Map<String, Value>>, BenchArgsError> {
    let samples = read_samples(&dir.samples()).map_err(|e| BenchArgsError(e.to_string()))?;
    let a = crate::analyze::analyze(samples.iter()).map_err(|e| BenchArgsError(e.to_string()))?;
    let mut rows = Vec::new();
    for j in &a.jobs {
        let stat = |m: crate::analyze::Metric, p: &str| -> Value {
            j.metrics.get(&m).map_or(Value::Null, |s| {
                json!(match p {
                    "p50" => s.p50,
                    "p99" if s.n >= crate::analyze::MIN_SAMPLES_P99 => s.p99,
                    "p99" => return Value::Null,
                    _ => s.mean,
                })
            })
        };
        for step in &j.load {
            let mut r = Map::new();
            r.insert("model".into(), json!(j.model));
            r.insert("test".into(), json!(j.scenario));
            r.insert("load".into(), json!(step.pattern));
            r.insert("requests".into(), json!(step.requests));
            r.insert("failed".into(), json!(step.failed));
            r.insert("achieved_rps".into(), json!(step.achieved_rps));
            r.insert("output_tps".into(), json!(step.output_tps));
            r.insert(
                "ttft_ms_p50".into(),
                stat(crate::analyze::Metric::TtftMs, "p50"),
            );
            r.insert(
                "ttft_ms_p99".into(),
                stat(crate::analyze::Metric::TtftMs, "p99"),
            );
            r.insert(
                "tpot_ms_p50".into(),
                stat(crate::analyze::Metric::TpotMs, "p50"),
            );
            r.insert(
                "e2e_ms_p50".into(),
                stat(crate::analyze::Metric::E2eMs, "p50"),
            );
            r.insert("client_bound".into(), json!(step.client_bound));
            rows.push(r);
        }
    }
    if rows.is_empty() {
        return Err(BenchArgsError(format!(
            "{}: no measured request",
            dir.root.display()
        )));
    }
    Ok(rows)
}

const SERVER_FIELDS: [&str; 12] = [
    "model",
    "test",
    "load",
    "requests",
    "failed",
    "achieved_rps",
    "output_tps",
    "ttft_ms_p50",
    "ttft_ms_p99",
    "tpot_ms_p50",
    "e2e_ms_p50",
    "client_bound",
];

fn server_md(rows: &[Map<String, Value>]) -> String {
    let head = [
        "model",
        "test",
        "load",
        "requests",
        "req/s",
        "out tok/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "TPOT p50 ms",
        "e2e p50 ms",
    ];
    let right = [false, true, true, true, true, true, true, true, true, true];
    let num = |v: &Value, digits: usize| match v.as_f64() {
        Some(x) => format!("{x:.digits$}"),
        None => "too few (p99 needs 662)".into(),
    };
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let failed = r["failed"].as_u64().unwrap_or(0);
            let mut requests = r["requests"].to_string();
            if failed > 0 {
                requests.push_str(&format!(" ({failed} failed)"));
            }
            let mut rps = num(&r["achieved_rps"], 2);
            if r["client_bound"] == true {
                rps.push_str(" CLIENT-BOUND");
            }
            vec![
                r["model"].as_str().unwrap_or_default().to_string(),
                r["test"].as_str().unwrap_or_default().to_string(),
                r["load"].as_str().unwrap_or_default().to_string(),
                requests,
                rps,
                num(&r["output_tps"], 1),
                num(&r["ttft_ms_p50"], 1),
                num(&r["ttft_ms_p99"], 1),
                num(&r["tpot_ms_p50"], 2),
                num(&r["e2e_ms_p50"], 1),
            ]
        })
        .collect();
    md_table(&head, &right, &body)
}

/// The run's results in the format `-o` asks for: llama-bench's fields for in-process jobs, the
/// client's figures per load step for a server.
pub fn render(dir: &RunDir, output: BenchOutput, server: bool) -> Result<String, BenchArgsError> {
    let fmt = match output {
        BenchOutput::Md => None,
        BenchOutput::Csv => Some(ExportFormat::LlamaBenchCsv),
        BenchOutput::Json => Some(ExportFormat::LlamaBenchJson),
        BenchOutput::Jsonl => Some(ExportFormat::LlamaBenchJsonl),
        BenchOutput::Sql => Some(ExportFormat::LlamaBenchSql),
    };
    if server {
        let rows = server_rows(dir)?;
        return Ok(match fmt {
            None => server_md(&rows),
            Some(ExportFormat::LlamaBenchJson) => {
                serde_json::to_string_pretty(&rows).unwrap_or_default() + "\n"
            }
            Some(f) => export::render_fields(&rows, &SERVER_FIELDS, "minerva_serve", f),
        });
    }
    let entries = export::entries_with(dir, None, PromptAndGen::Combined)
        .map_err(|e| BenchArgsError(e.to_string()))?;
    Ok(match fmt {
        None => llama_bench_md(&entries),
        Some(f) => export::render(&entries, f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_bench_lists_and_ranges() {
        let p = |s| parse_int_list("-t", s).unwrap();
        assert_eq!(p("1,2,4"), vec![1, 2, 4]);
        assert_eq!(p("1-4"), vec![1, 2, 3, 4]);
        assert_eq!(p("8-32+8"), vec![8, 16, 24, 32]);
        assert_eq!(p("1-16*2"), vec![1, 2, 4, 8, 16]);
        assert_eq!(p("1-10*3,64"), vec![1, 3, 9, 64]);
        assert_eq!(p("5"), vec![5]);
        for bad in ["", "a", "1,,2", "4-1", "1-8*1", "1-8+0", "-3", "1-"] {
            let e = parse_int_list("-t", bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("-t {bad}: ")), "{bad}: {e}");
        }
    }

    #[test]
    fn tests_are_named_as_scenarios() {
        let t = |p, g, d| Test {
            n_prompt: p,
            n_gen: g,
            depth: d,
        };
        assert_eq!(t(512, 0, 0).name(), "pp512");
        assert_eq!(t(0, 128, 0).name(), "tg128");
        assert_eq!(t(512, 128, 4096).name(), "pp512_tg128_d4096");
    }

    #[test]
    fn the_md_table_reads_like_llama_benchs() {
        let mut e = Map::new();
        for (k, v) in [
            ("model_type", json!("llama 135M Q4_1")),
            ("model_size", json!(98_000_000u64)),
            ("model_n_params", json!(134_515_008u64)),
            ("backends", json!("CPU")),
            ("n_threads", json!(2)),
            ("n_gpu_layers", json!(0)),
            ("n_batch", json!(2048)),
            ("n_ubatch", json!(512)),
            ("flash_attn", json!(0)),
            ("use_mmap", json!(1)),
            ("n_prompt", json!(512)),
            ("n_gen", json!(0)),
            ("n_depth", json!(1024)),
            ("avg_ts", json!(206.123)),
            ("stddev_ts", json!(1.234)),
        ] {
            e.insert(k.into(), v);
        }
        let md = llama_bench_md(&[e]);
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("| model "), "{md}");
        assert!(lines[0].contains("| threads |"), "{md}");
        assert!(
            !lines[0].contains("n_batch"),
            "defaults are not shown: {md}"
        );
        assert!(lines[1].contains("---: |"), "{md}");
        assert!(lines[2].contains("| 93.46 MiB |"), "{md}");
        assert!(lines[2].contains("| 134.52 M |"), "{md}");
        assert!(lines[2].contains("pp512 @ d1024"), "{md}");
        assert!(lines[2].ends_with("| 206.12 ± 1.23 |"), "{md}");
    }
}
