//! The report's context: every figure pre-formatted here, so templates stay simple and the
//! output is byte-identical for the same stored results.

use crate::analyze::agreement::AgreementRow;
use crate::analyze::{
    Analysis, JobSummary, Metric, MetricStats, CV_WARN, MIN_SAMPLES_P90, MIN_SAMPLES_P95,
    MIN_SAMPLES_P99,
};
use crate::results::{last_records, JobRecord, JobStatus, Manifest, RunStatus, Sample};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeSet;

#[derive(Debug, Serialize)]
pub struct ReportContext {
    pub title: String,
    pub description: Option<String>,
    pub run_id: String,
    pub started_at: String,
    pub interrupted: bool,
    /// "7 of 12 bench jobs completed (…)" when the journal says some did not; else None.
    pub incomplete: Option<String>,
    /// How the run was recorded: resumes (and what `--force` allowed), unreadable sample lines,
    /// reused jobs, background work during a bench, waits for another runner.
    pub record_notes: Vec<String>,
    pub any_simulated: bool,
    pub baseline: Option<String>,
    pub environment: Vec<(String, String)>,
    pub models: Vec<ModelRow>,
    pub scenarios: Vec<ScenarioSection>,
    /// Every warning, one line each (`job`: message); the built-in template shows
    /// `warning_rules` and `warning_groups` instead.
    pub warnings: Vec<String>,
    /// Warnings that hold for many jobs, said once (e.g. too few samples for p90/p99).
    pub warning_rules: Vec<String>,
    /// The other warnings, grouped by job, worst job first.
    pub warning_groups: Vec<WarningGroup>,
    /// One sentence per scenario with two or more jobs: the fastest, its margin over the next,
    /// and whether that margin is beyond noise.
    pub summary: Vec<String>,
    pub failures: Vec<Failure>,
    /// Jobs whose backend this build lacks (`unavailable` errors), listed apart.
    pub unavailable: Vec<Failure>,
    /// Server benchmarks: one row per load step.
    pub loads: Vec<LoadRow>,
    /// Server benchmarks: request lengths per job (input and output tokens).
    pub lengths: Vec<LengthRow>,
    /// Server benchmarks: the server's own metrics per load step (from `/metrics`).
    pub server_rows: Vec<ServerRow>,
    /// Server jobs whose server exposed no metrics: one line each, with why.
    pub server_missing: Vec<String>,
    /// `find_max` searches: one sentence each, e.g. "Highest rate within the SLO (…): 96.5 req/s".
    pub searches: Vec<String>,
    /// Output agreement between jobs on the same scenario (text prompts only).
    pub agreement: Vec<AgreementView>,
    pub agreement_min_prefix: Option<usize>,
    /// The CV above which a job is UNSTABLE, as "5%".
    pub unstable_cv: String,
    pub methodology: Vec<String>,
    pub command: String,
    pub pipeline_sha256: String,
    /// The plots drawn beside the report (`plots/*.svg`), filled in by whoever writes them.
    pub plots: Vec<PlotRef>,
    /// A merged run with shards missing (`merge --allow-missing`): which ones.
    pub partial: Option<String>,
    /// A merged run: one row per shard (where it ran, its labels, its jobs).
    pub shards: Vec<ShardRow>,
    /// A merged run: the columns each results row gets before Backend (Host when the shards
    /// ran on different hosts, then each `--label` key); each row's values are its
    /// `shard_cells`.
    pub shard_columns: Vec<String>,
    /// Set when any row has a roofline figure: the bandwidth it rests on, in words.
    pub roofline: Option<String>,
    /// Set when any repetition has an energy reading: where it comes from.
    pub energy: Option<String>,
}

/// One shard of a merged run, as the report lists it.
#[derive(Debug, Serialize)]
pub struct ShardRow {
    /// "2/3".
    pub shard: String,
    pub host: String,
    pub cpu: String,
    pub gpus: String,
    /// "gpu=h100, host=a100-1".
    pub labels: String,
    pub jobs: usize,
    pub status: String,
}

/// Each in-process row's generation speed as a share of the bandwidth roofline (see
/// `crate::roofline`): bandwidth ÷ (the model's weight bytes per token + its KV bytes per
/// position × the mean position while generating: depth + prompt + half the output). Returns
/// the bandwidth line the report states, when any row has a figure.
fn place_roofline(
    scenarios: &mut [ScenarioSection],
    manifest: &Manifest,
    analysis: &Analysis,
    models: &[crate::results::ModelInfo],
    totals: &std::collections::HashMap<&str, RepTotals>,
) -> Option<String> {
    let depth: std::collections::BTreeMap<&str, f64> = manifest.pipeline["scenarios"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| Some((s["name"].as_str()?, s["depth"].as_f64().unwrap_or(0.0))))
        .collect();
    let mut used: Vec<(String, String)> = Vec::new();
    for sec in scenarios.iter_mut() {
        for r in &mut sec.rows {
            let Some(j) = analysis.jobs.iter().find(|j| j.job_id == r.job_id) else {
                continue;
            };
            if j.simulated || !j.load.is_empty() {
                continue;
            }
            let (Some(tg), Some(m)) = (
                j.metrics.get(&Metric::TgTps).map(|m| m.mean),
                models.iter().find(|m| m.name == j.model),
            ) else {
                continue;
            };
            let t = totals.get(j.job_id.as_str()).copied().unwrap_or_default();
            let n = t.reps.max(1) as f64;
            let position = depth.get(j.scenario.as_str()).copied().unwrap_or(0.0)
                + t.prompt_tokens as f64 / n
                + t.output_tokens as f64 / n / 2.0;
            // A job on a GPU reads its weights from the GPU's memory: NVML's peak for it.
            let (key, bytes_per_s, line) = match job_gpu(&j.backend, &j.params, manifest) {
                Some((d, bw)) => (
                    format!("GPU {}", d.index),
                    bw,
                    format!(
                        "GPU {} {}: {:.1} GB/s (NVML: max memory clock × 2 × bus width, the theoretical peak)",
                        d.index,
                        d.name,
                        bw / 1e9
                    ),
                ),
                None => {
                    let Some(bw) = m.bandwidth.as_ref() else {
                        continue;
                    };
                    (
                        m.name.clone(),
                        bw.bytes_per_s,
                        format!(
                            "{}: {:.1} GB/s ({}{})",
                            m.name,
                            bw.bytes_per_s / 1e9,
                            bw.method,
                            if bw.cached {
                                format!(", measured {}", bw.measured_at)
                            } else {
                                String::new()
                            }
                        ),
                    )
                }
            };
            let (weights, kv) = job_bytes(m, &j.backend, &j.params);
            let Some(roof) = crate::roofline::tg_roofline(bytes_per_s, weights, kv, position)
            else {
                continue;
            };
            if !used.iter().any(|(n, _)| *n == key) {
                used.push((key, line));
            }
            r.roofline = roofline_cell(tg, roof);
        }
    }
    (!used.is_empty()).then(|| {
        used.into_iter()
            .map(|(_, t)| t)
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// One value of a job's params as the analysis spells them (`plan::param_string`: `k=v,k=v`).
fn param<'a>(params: &'a str, key: &str) -> Option<&'a str> {
    params
        .split(',')
        .filter_map(|p| p.split_once('='))
        .find_map(|(k, v)| (k == key).then_some(v))
}

/// The bytes a job reads per generated token, weights and KV per position: the model's, except
/// that a SafeTensors or MLX model's floating-point weights are read in the job's `dtype` (candle
/// casts them to f32 unless told otherwise; MLX keeps them as stored), and so is its KV cache.
fn job_bytes(
    m: &crate::results::ModelInfo,
    backend: &str,
    params: &str,
) -> (Option<u64>, Option<u64>) {
    let Some(fw) = m.float_weights_per_token else {
        return (m.weight_bytes_per_token, m.kv_bytes_per_position);
    };
    let dtype = param(params, "dtype").or(match backend {
        "candle" => Some("f32"),
        _ => None,
    });
    let size = match dtype {
        Some("f32") => 4,
        Some("bf16" | "f16") => 2,
        _ => return (m.weight_bytes_per_token, m.kv_bytes_per_position),
    };
    (
        m.weight_bytes_per_token
            .map(|w| w.saturating_sub(fw.bytes) + fw.params * size),
        m.kv_bytes_per_position.map(|kv| kv / 2 * size),
    )
}

/// The GPU a job ran on, with its peak memory bandwidth: a build with feature `cuda` on a host
/// whose GPUs NVML described, and a llama.cpp job that offloads layers (`n_gpu_layers`, default
/// 99; on `main_gpu`, default 0) or a candle job with `device: cuda[:N]`.
fn job_gpu<'a>(
    backend: &str,
    params: &str,
    manifest: &'a Manifest,
) -> Option<(&'a crate::gpu::GpuInfo, f64)> {
    let build = manifest.build.as_ref()?;
    if !build.cargo_features.iter().any(|f| f == "cuda") {
        return None;
    }
    let index = match backend {
        "llama_cpp" => {
            let layers = param(params, "n_gpu_layers").and_then(|v| v.parse::<u64>().ok());
            if layers == Some(0) {
                return None;
            }
            param(params, "main_gpu")
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        }
        "candle" => match param(params, "device").and_then(crate::backend::candle::Place::parse)? {
            crate::backend::candle::Place::Cuda(n) => n as u32,
            crate::backend::candle::Place::Cpu => return None,
        },
        _ => return None,
    };
    let d = manifest
        .host
        .gpu_devices
        .iter()
        .find(|d| d.index == index)?;
    Some((d, d.peak_bandwidth_bytes_per_s?))
}

/// A job's measured repetitions (no warmups, no errors), summed once for the roofline and
/// energy columns.
#[derive(Debug, Default, Clone, Copy)]
struct RepTotals {
    reps: u64,
    prompt_tokens: u64,
    output_tokens: u64,
    /// Over the repetitions with an energy reading: joules, generated tokens, seconds.
    energy_j: f64,
    energy_tokens: u64,
    energy_s: f64,
}

fn rep_totals(samples: &[Sample]) -> std::collections::HashMap<&str, RepTotals> {
    let mut out: std::collections::HashMap<&str, RepTotals> = Default::default();
    for s in samples.iter().filter(|s| !s.warmup && s.error.is_none()) {
        let t = out.entry(s.job_id.as_str()).or_default();
        t.reps += 1;
        t.prompt_tokens += s.prompt_tokens.unwrap_or(0);
        t.output_tokens += s.output_tokens.unwrap_or(0);
        if let (Some(e), Some(ms)) = (s.energy_j, s.e2e_ms) {
            t.energy_j += e;
            t.energy_tokens += s.output_tokens.unwrap_or(0);
            t.energy_s += ms.0 / 1e3;
        }
    }
    out
}

/// Each row's energy over its measured repetitions (CPU package, RAPL): joules per generated
/// token (the whole repetition's energy, prompt processing included) and mean watts. True when
/// any row has a reading.
fn place_energy(
    scenarios: &mut [ScenarioSection],
    totals: &std::collections::HashMap<&str, RepTotals>,
) -> bool {
    let mut any = false;
    for sec in scenarios.iter_mut() {
        for r in &mut sec.rows {
            let Some(t) = totals.get(r.job_id.as_str()) else {
                continue;
            };
            let (j, tokens, secs) = (t.energy_j, t.energy_tokens, t.energy_s);
            if secs > 0.0 {
                any = true;
                if tokens > 0 {
                    r.joules_per_token = format!("{:.3}", j / tokens as f64);
                }
                r.watts = format!("{:.1}", j / secs);
            }
        }
    }
    any
}

/// "64% of 89.6"; above 100% the figure is flagged: no engine reads its weights faster than
/// the memory delivers them, so the measurement or the byte count is wrong.
fn roofline_cell(tg: f64, roof: f64) -> String {
    let pct = 100.0 * tg / roof;
    if pct > 100.0 {
        format!("**{pct:.0}% of {roof:.1}: above the roofline, a measurement error**")
    } else {
        format!("{pct:.0}% of {roof:.1}")
    }
}

/// A merged run: each results row gets the cells of the shard that ran its job (a load step,
/// `<job>/step=K`, ran where its job did), and with shards on different hosts each host's rows
/// come together (Host is the first cell).
fn place_rows(
    scenarios: &mut [ScenarioSection],
    cells: &std::collections::BTreeMap<String, Vec<String>>,
    by_host: bool,
) {
    if cells.is_empty() {
        return;
    }
    for s in scenarios {
        for r in &mut s.rows {
            r.shard_cells = cells
                .get(&r.job_id)
                .or_else(|| {
                    r.job_id
                        .rsplit_once("/step=")
                        .and_then(|(j, _)| cells.get(j))
                })
                .cloned()
                .unwrap_or_default();
        }
        if by_host {
            s.rows
                .sort_by(|a, b| a.shard_cells.first().cmp(&b.shard_cells.first()));
        }
    }
}

/// A merged run's shard rows, its extra result columns, and each bench job's cells for them.
fn shard_view(
    manifest: &Manifest,
) -> (
    Vec<ShardRow>,
    Vec<String>,
    std::collections::BTreeMap<String, Vec<String>>,
) {
    let Some(m) = &manifest.merged else {
        return Default::default();
    };
    let rows = m
        .shards
        .iter()
        .map(|sh| ShardRow {
            shard: format!("{}/{}", sh.index, m.count),
            host: table_text(&sh.host.hostname),
            cpu: table_text(&sh.host.cpu),
            gpus: if sh.host.gpus.is_empty() {
                "none detected".into()
            } else {
                table_text(&sh.host.gpus.join(", "))
            },
            labels: if sh.labels.is_empty() {
                DASH.into()
            } else {
                sh.labels
                    .iter()
                    .map(|(k, v)| table_text(&format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            jobs: sh.bench_jobs.len(),
            status: format!("{:?}", sh.status).to_lowercase(),
        })
        .collect();
    let hosts: BTreeSet<String> = m.shards.iter().map(|s| s.host.fingerprint()).collect();
    let keys: BTreeSet<&String> = m.shards.iter().flat_map(|s| s.labels.keys()).collect();
    let mut columns = Vec::new();
    if hosts.len() > 1 {
        columns.push("Host".to_string());
    }
    columns.extend(keys.iter().map(|k| table_text(k)));
    let mut cells = std::collections::BTreeMap::new();
    if !columns.is_empty() {
        for sh in &m.shards {
            let mut v = Vec::new();
            if hosts.len() > 1 {
                v.push(table_text(&sh.host.hostname));
            }
            v.extend(keys.iter().map(|k| {
                sh.labels
                    .get(*k)
                    .map_or_else(|| DASH.into(), |v| table_text(v))
            }));
            for job in &sh.bench_jobs {
                cells.insert(job.clone(), v.clone());
            }
        }
    }
    (rows, columns, cells)
}

/// Text from a shard's manifest (which may come from anyone) as one Markdown table cell: no
/// line breaks or control characters, `|` escaped, at most 200 characters.
fn table_text(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .replace('|', "\\|")
}

/// A job's warnings, as the report groups them.
#[derive(Debug, Serialize)]
pub struct WarningGroup {
    pub job_id: String,
    pub items: Vec<String>,
}

/// A plot as the report links it.
#[derive(Debug, Serialize)]
pub struct PlotRef {
    pub title: String,
    /// Relative to the report when it sits in the run directory.
    pub path: String,
}

#[derive(Debug, Serialize)]
pub struct ModelRow {
    pub name: String,
    pub format: String,
    pub architecture: String,
    pub parameters: String,
    pub quantization: String,
    pub context: String,
    pub vocab: String,
    pub size: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct ScenarioSection {
    pub name: String,
    pub description: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub job_id: String,
    /// Generation tokens/s as a share of the bandwidth roofline, e.g. "64% of 89.6"; "–"
    /// where there is none (servers, the simulated backend, no byte count).
    pub roofline: String,
    /// Energy over the measured repetitions: joules per generated token, and mean watts.
    pub joules_per_token: String,
    pub watts: String,
    /// A merged run's values for `shard_columns` (empty otherwise).
    pub shard_cells: Vec<String>,
    pub backend: String,
    pub model: String,
    pub params: String,
    pub simulated: bool,
    pub n: String,
    pub failed: u64,
    pub pp: Cell,
    pub tg: Cell,
    pub ttft: Cell,
    pub tpot: Cell,
    pub itl: Cell,
    pub e2e: Cell,
    pub load: String,
    pub rss: String,
    /// Mean time per run outside the engine's decode calls.
    pub tokenize: String,
    pub sampling: String,
    pub vs_baseline: String,
    /// "64/64 vs llama_cpp", "reference", or a dash.
    pub agreement: String,
    /// The job's output diverged from the reference: its speed is not comparable.
    pub divergent: bool,
    /// "UNSTABLE (CV 7.1% > 5%)" when the primary metric's spread is too wide; else empty.
    pub unstable: String,
    /// "reused from `<run>`" when `--reuse` copied the job from an earlier run; else empty.
    pub reused: String,
    /// The job has warnings of its own (failures, a slow first run, wide spread, outliers).
    pub warned: bool,
}

#[derive(Debug, Serialize)]
pub struct AgreementView {
    pub scenario: String,
    pub reference: String,
    pub other: String,
    pub prefix: String,
    pub prompt: String,
    pub verdict: String,
}

/// A server job as its table rows name it: backend, model, scenario, params.
fn job_label(j: &JobSummary) -> String {
    format!("{} {} {} {}", j.backend, j.model, j.scenario, j.params)
        .trim()
        .to_string()
}

/// The job a sweep's or search's step belongs to (its id without `/step=K`).
fn step_base(job_id: &str) -> &str {
    job_id.split("/step=").next().unwrap_or(job_id)
}

/// One load step's server-side metrics.
#[derive(Debug, Serialize)]
pub struct ServerRow {
    pub job: String,
    pub pattern: String,
    /// "vllm, 12 scrapes".
    pub source: String,
    pub running: String,
    pub waiting: String,
    pub kv_cache: String,
    pub prompt_tokens: String,
    /// "1 280 (client: 1 280)"
    pub generated_tokens: String,
}

fn gauge_cell(g: Option<&crate::results::GaugeStats>, percent: bool) -> String {
    match g {
        None => "not reported".into(),
        Some(g) if percent => format!("{:.1}% / {:.1}%", 100.0 * g.mean, 100.0 * g.max),
        Some(g) => format!("{} / {}", fmt(g.mean), fmt(g.max)),
    }
}

/// Rows for steps with server metrics; one line per job (steps of a sweep or search count as
/// one) whose server exposed none.
fn server_rows(analysis: &Analysis) -> (Vec<ServerRow>, Vec<String>) {
    let mut out = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for j in &analysis.jobs {
        for l in &j.load {
            let Some(m) = &l.server else { continue };
            let job = job_label(j);
            if !m.exposed {
                let base = step_base(&j.job_id);
                let line = format!(
                    "`{base}`: **not exposed** at {} ({})",
                    m.url,
                    m.note.as_deref().unwrap_or("no answer")
                );
                if !missing.contains(&line) {
                    missing.push(line);
                }
                continue;
            }
            let client_tokens = (l.output_tps * l.wall_s).round();
            out.push(ServerRow {
                job,
                pattern: l.pattern.clone(),
                source: format!(
                    "{}, {} scrapes",
                    m.source.as_deref().unwrap_or("?"),
                    m.scrapes
                ),
                running: gauge_cell(m.running.as_ref(), false),
                waiting: gauge_cell(m.waiting.as_ref(), false),
                kv_cache: gauge_cell(m.kv_cache_usage.as_ref(), true),
                prompt_tokens: match (m.prompt_tokens, m.cached_prompt_tokens) {
                    (Some(p), Some(c)) => format!("{p:.0} ({c:.0} from cache)"),
                    (Some(p), None) => format!("{p:.0}"),
                    (None, _) => "not reported".into(),
                },
                generated_tokens: match m.generated_tokens {
                    Some(v) => format!("{v:.0} (client: {client_tokens:.0})"),
                    None => "not reported".into(),
                },
            });
        }
    }
    (out, missing)
}

/// One sentence per `find_max` search: what it found, under which SLO, and the steps tried.
fn search_lines(analysis: &Analysis) -> Vec<String> {
    let mut out = Vec::new();
    for j in &analysis.jobs {
        for l in &j.load {
            let Some(r) = &l.search else { continue };
            let base = step_base(&j.job_id);
            let unit = if r.find_max == "rate" { " req/s" } else { "" };
            let what = if r.find_max == "rate" {
                "rate"
            } else {
                "concurrency"
            };
            let head = match r.best {
                Some(b) => format!("Highest {what} within the SLO: {}{unit}", fmt(b)),
                None => format!("No {what} tried met the SLO"),
            };
            let steps: Vec<String> = r
                .tried
                .iter()
                .map(|(v, met)| format!("{}{}", fmt(*v), if *met { " ✓" } else { " ✗" }))
                .collect();
            let mut line = format!(
                "{head} (`{base}`; SLO: {}). Steps in order: {}; stopped: {}.",
                r.slo,
                steps.join(", "),
                r.stopped
            );
            if let Some(m) = r.lowest_missed.filter(|_| r.best.is_some()) {
                line.push_str(&format!(
                    " The lowest {what} that missed: {}{unit}.",
                    fmt(m)
                ));
            }
            let bound = analysis
                .jobs
                .iter()
                .filter(|s| s.job_id.starts_with(&format!("{base}/step=")))
                .flat_map(|s| &s.load)
                .filter(|s| s.client_bound)
                .count();
            if bound > 0 {
                line.push_str(&format!(
                    " {bound} step(s) were CLIENT-BOUND (see the table): the client, not the server, may have set their pace."
                ));
            }
            if j.simulated {
                line.push_str(" SIMULATED.");
            }
            out.push(line);
        }
    }
    out
}

/// One server job's request lengths: "mean / p50 / p90 / p99 (min–max)" per side.
#[derive(Debug, Serialize)]
pub struct LengthRow {
    pub job: String,
    pub requests: u64,
    pub input: String,
    pub output: String,
}

fn length_cell(l: Option<&crate::analyze::LengthStats>) -> String {
    match l {
        None => "not reported".into(),
        Some(l) => format!(
            "{:.1} / {} / {} / {} ({}–{})",
            l.mean, l.p50, l.p90, l.p99, l.min, l.max
        ),
    }
}

fn length_rows(analysis: &Analysis) -> Vec<LengthRow> {
    analysis
        .jobs
        .iter()
        .filter_map(|j| {
            let l = j.lengths.as_ref()?;
            Some(LengthRow {
                job: job_label(j),
                requests: l
                    .input
                    .as_ref()
                    .map(|x| x.n)
                    .max(l.output.as_ref().map(|x| x.n))
                    .unwrap_or(0),
                input: length_cell(l.input.as_ref()),
                output: length_cell(l.output.as_ref()),
            })
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct LoadRow {
    pub job: String,
    pub pattern: String,
    pub requests: u64,
    /// "2 (1.0%): http 1, timeout 1"
    pub errors: String,
    pub target: String,
    pub sent_rps: String,
    pub achieved_rps: String,
    pub output_tps: String,
    pub ttft: Cell,
    pub tpot: Cell,
    pub itl: Cell,
    pub e2e: Cell,
    pub lag: String,
    pub client_cpu: String,
    pub client_bound: String,
    pub goodput: String,
    pub tokens_from: String,
}

#[derive(Debug, Serialize, Default)]
pub struct Cell {
    /// "mean ± half-width of the 95% confidence interval"
    pub mean: String,
    /// Coefficient of variation, "1.2%".
    pub cv: String,
    pub p50: String,
    pub p90: String,
    pub p95: String,
    pub p99: String,
    pub ci95: String,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub job_id: String,
    pub kind: String,
    pub message: String,
    pub exit_status: String,
    pub stderr_tail: Vec<String>,
}

const DASH: &str = "–";

fn fmt(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn cell(m: Option<&MetricStats>) -> Cell {
    let Some(m) = m else {
        return Cell {
            mean: DASH.into(),
            p50: DASH.into(),
            p90: DASH.into(),
            p95: DASH.into(),
            p99: DASH.into(),
            ci95: DASH.into(),
            cv: DASH.into(),
        };
    };
    // A percentile with too few samples is not a figure at all.
    let mark = |v: f64, need: u64| {
        if m.n < need {
            format!("too few samples ({} of {need})", m.n)
        } else {
            fmt(v)
        }
    };
    Cell {
        mean: match (m.ci95_low, m.ci95_high) {
            (Some(lo), Some(hi)) => format!("{} ± {}", fmt(m.mean), fmt((hi - lo) / 2.0)),
            _ => fmt(m.mean),
        },
        cv: m
            .cv
            .map(|cv| format!("{:.1}%", cv * 100.0))
            .unwrap_or_else(|| DASH.into()),
        p50: fmt(m.p50),
        p90: mark(m.p90, MIN_SAMPLES_P90),
        p95: mark(m.p95, MIN_SAMPLES_P95),
        p99: mark(m.p99, MIN_SAMPLES_P99),
        ci95: match (m.ci95_low, m.ci95_high) {
            (Some(lo), Some(hi)) => format!("{} – {}", fmt(lo), fmt(hi)),
            _ => DASH.into(),
        },
    }
}

/// One figure of one metric, or a dash when the job has none.
fn stat(j: &JobSummary, metric: Metric, pick: fn(&MetricStats) -> f64) -> String {
    j.metrics
        .get(&metric)
        .map(|m| fmt(pick(m)))
        .unwrap_or_else(|| DASH.into())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1024.0 * 1024.0 * 1024.0))
}

/// Speed relative to the baseline backend's job on the same scenario (same params if there is
/// one): throughput ratio, or inverse latency ratio when there is no generation.
fn vs_baseline(j: &JobSummary, all: &[JobSummary], baseline: Option<&str>) -> String {
    let Some(b) = baseline else {
        return String::new();
    };
    if j.backend == b {
        return "baseline".into();
    }
    let candidates: Vec<&JobSummary> = all
        .iter()
        .filter(|o| o.backend == b && o.scenario == j.scenario)
        .collect();
    let Some(base) = candidates
        .iter()
        .find(|o| o.params == j.params)
        .or(candidates.first())
    else {
        return DASH.into();
    };
    let mean = |s: &JobSummary, m| s.metrics.get(&m).map(|x: &MetricStats| x.mean);
    let ratio = match (mean(j, Metric::TgTps), mean(base, Metric::TgTps)) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => match (mean(j, Metric::PpTps), mean(base, Metric::PpTps)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => match (mean(j, Metric::E2eMs), mean(base, Metric::E2eMs)) {
                (Some(a), Some(b)) if a > 0.0 => Some(b / a),
                _ => None,
            },
        },
    };
    ratio
        .map(|r| format!("{r:.2}×"))
        .unwrap_or_else(|| DASH.into())
}

/// One row per load step of each server job.
fn load_rows(analysis: &Analysis) -> Vec<LoadRow> {
    let mut out = Vec::new();
    for j in &analysis.jobs {
        for l in &j.load {
            let errors = if l.failed == 0 {
                "0".to_string()
            } else {
                let kinds: Vec<String> = l.errors.iter().map(|(k, n)| format!("{k} {n}")).collect();
                format!(
                    "{} ({:.1}%): {}",
                    l.failed,
                    100.0 * l.failed as f64 / l.requests.max(1) as f64,
                    kinds.join(", ")
                )
            };
            out.push(LoadRow {
                job: job_label(j),
                pattern: match &l.slo_check {
                    None => l.pattern.clone(),
                    Some(c) if c.met => format!("{}: SLO met", l.pattern),
                    Some(c) => format!("{}: **SLO missed** ({})", l.pattern, c.why.join("; ")),
                },
                requests: l.requests,
                errors,
                target: match (l.target_rps, l.concurrency) {
                    (Some(r), _) => format!("{} req/s", fmt(r)),
                    (None, Some(c)) => format!("{c} in flight"),
                    _ => DASH.into(),
                },
                sent_rps: fmt(l.sent_rps),
                achieved_rps: fmt(l.achieved_rps),
                output_tps: fmt(l.output_tps),
                ttft: cell(j.metrics.get(&Metric::TtftMs)),
                tpot: cell(j.metrics.get(&Metric::TpotMs)),
                itl: cell(j.metrics.get(&Metric::ItlMs)),
                e2e: cell(j.metrics.get(&Metric::E2eMs)),
                lag: l
                    .lag_ms
                    .map(|[p50, p99, max]| {
                        format!(
                            "{} / {} / {} ({} late)",
                            fmt(p50),
                            fmt(p99),
                            fmt(max),
                            l.late
                        )
                    })
                    .unwrap_or_else(|| DASH.into()),
                client_cpu: format!("{} cores", fmt(l.client_cpu_cores)),
                client_bound: if l.client_bound {
                    format!("**CLIENT-BOUND**: {}", l.client_bound_why.join("; "))
                } else {
                    "no".into()
                },
                goodput: l
                    .goodput
                    .map(|(f, r)| format!("{:.1}% ({} req/s)", 100.0 * f, fmt(r)))
                    .unwrap_or_else(|| DASH.into()),
                tokens_from: l.tokens_from.clone(),
            });
        }
    }
    out
}

/// What the run directory says of how the run went, beyond its samples: the journal, and what
/// reading samples.jsonl skipped.
#[derive(Debug, Default)]
pub struct RunState {
    pub journal: Vec<JobRecord>,
    /// Lines of samples.jsonl that are not a sample, by number.
    pub unreadable_lines: Vec<usize>,
    /// Samples of jobs a resume ran again (kept on record, not shown).
    pub superseded: usize,
}

/// "7 of 12 bench jobs completed (2 failed, 3 cut short or never started)" when the journal
/// has fewer completed bench jobs than the plan; None for a run from before the journal.
fn incomplete(
    manifest: &Manifest,
    last: &std::collections::BTreeMap<String, JobRecord>,
) -> Option<String> {
    let total = manifest.bench_jobs.len();
    if total == 0 {
        return None;
    }
    let status = |id: &String| last.get(id).map(|r| r.status);
    let ok = manifest
        .bench_jobs
        .iter()
        .filter(|id| status(id) == Some(JobStatus::Ok))
        .count();
    if ok == total {
        return None;
    }
    let failed = manifest
        .bench_jobs
        .iter()
        .filter(|id| status(id) == Some(JobStatus::Failed))
        .count();
    let skipped = manifest
        .bench_jobs
        .iter()
        .filter(|id| status(id) == Some(JobStatus::Skipped))
        .count();
    let missing = total - ok - failed - skipped;
    let mut parts = Vec::new();
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    if skipped > 0 {
        parts.push(format!("{skipped} skipped"));
    }
    if missing > 0 {
        parts.push(format!("{missing} cut short or never started"));
    }
    Some(format!(
        "{ok} of {total} bench jobs completed ({})",
        parts.join(", ")
    ))
}

/// The notes on how the run was recorded (see [`ReportContext::record_notes`]).
fn record_notes(
    manifest: &Manifest,
    state: &RunState,
    last: &std::collections::BTreeMap<String, JobRecord>,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in &manifest.resumes {
        let mut line = format!(
            "Resumed at {}: {} job(s) run again from their start",
            r.at,
            r.rerun.len()
        );
        if !r.forced.is_empty() {
            line.push_str(&format!(
                ". **Resumed with --force although the {} differed**: figures before and after the resume come from different environments",
                r.forced.join("; ")
            ));
        }
        out.push(line + ".");
    }
    if state.superseded > 0 {
        out.push(format!(
            "{} sample(s) of jobs cut short before a resume are kept in samples.jsonl marked superseded and left out of every figure.",
            state.superseded
        ));
    }
    if !state.unreadable_lines.is_empty() {
        let shown: Vec<String> = state
            .unreadable_lines
            .iter()
            .take(10)
            .map(|n| n.to_string())
            .collect();
        out.push(format!(
            "**{} unreadable line(s) in samples.jsonl skipped** (line {}{}): a write torn by a crash or a full disk; the samples on them are lost.",
            state.unreadable_lines.len(),
            shown.join(", "),
            if state.unreadable_lines.len() > 10 { ", …" } else { "" }
        ));
    }
    let mut reused: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in last.values() {
        if let Some(from) = &r.reused_from {
            *reused.entry(from.as_str()).or_default() += 1;
        }
    }
    for (from, n) in reused {
        out.push(format!(
            "{n} bench job(s) were not measured in this run but reused from `{from}`: the same job, model sha256, engine build, host and metric definitions (marked in their rows)."
        ));
    }
    for r in last.values() {
        if !r.background.is_empty() {
            out.push(format!(
                "`{}` measured while other work of this run ran (--overlap): {}. Its figures may be disturbed.",
                r.id,
                r.background.iter().map(|b| format!("`{b}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(w) = &r.waited_for {
            out.push(format!(
                "`{}` waited for another runner's bench to end ({w}) before measuring.",
                r.id
            ));
        }
    }
    out
}

/// Everything the report shows, section by section, from the stored manifest, samples, analysis
/// and model records.
pub fn build_context(
    manifest: &Manifest,
    samples: &[Sample],
    analysis: &Analysis,
    models: &[crate::results::ModelInfo],
    state: &RunState,
) -> ReportContext {
    let p = &manifest.pipeline;
    let last = last_records(&state.journal);
    let reused: std::collections::BTreeMap<String, String> = last
        .values()
        .filter_map(|r| {
            let from = r.reused_from.as_ref()?;
            let name = std::path::Path::new(from)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| from.clone());
            Some((r.id.clone(), name))
        })
        .collect();
    let baseline = p
        .get("baseline")
        .and_then(Value::as_str)
        .map(str::to_string);
    let agreement_min_prefix = p
        .get("agreement")
        .and_then(|a| a.get("min_prefix"))
        .and_then(Value::as_u64)
        .map(|n| n as usize);
    let agreement_rows = crate::analyze::agreement::agreement(
        samples,
        agreement_min_prefix,
        baseline.as_deref(),
        &job_order(p),
    );
    // Jobs whose backend this build lacks: listed under "Not run on this build", not as rows
    // or warnings.
    let not_run: BTreeSet<&str> = samples
        .iter()
        .filter(|s| {
            s.error
                .as_ref()
                .is_some_and(|e| e.kind == crate::results::ErrorKind::Unavailable)
        })
        .map(|s| s.job_id.as_str())
        .collect();
    let (unavailable, failures) = failure_rows(samples);
    let warning_groups = warning_groups(analysis, &not_run);
    let warned: BTreeSet<&str> = warning_groups.iter().map(|g| g.job_id.as_str()).collect();

    let (server_rows, server_missing) = server_rows(analysis);
    let (shards, shard_columns, shard_cells) = shard_view(manifest);
    let by_host = shard_columns.first().is_some_and(|c| c == "Host");
    let mut scenarios = scenario_sections(
        p,
        analysis,
        &agreement_rows,
        &not_run,
        baseline.as_deref(),
        &reused,
        &warned,
    );
    place_rows(&mut scenarios, &shard_cells, by_host);
    let totals = rep_totals(samples);
    let roofline = place_roofline(&mut scenarios, manifest, analysis, models, &totals);
    let energy = place_energy(&mut scenarios, &totals)
        .then(|| manifest.energy.clone().unwrap_or_else(|| "RAPL".into()));
    ReportContext {
        title: p
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("minerva")
            .to_string(),
        description: p
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_string),
        run_id: manifest.run_id.clone(),
        started_at: manifest.started_at.clone(),
        interrupted: manifest.status == RunStatus::Interrupted,
        incomplete: incomplete(manifest, &last),
        record_notes: record_notes(manifest, state, &last),
        any_simulated: analysis.jobs.iter().any(|j| j.simulated),
        scenarios,
        agreement: agreement_rows.iter().map(agreement_view).collect(),
        agreement_min_prefix,
        unstable_cv: format!("{}%", unstable_cv(p) * 100.0),
        baseline,
        environment: environment_rows(manifest),
        models: models.iter().map(model_row).collect(),
        warnings: analysis
            .warnings
            .iter()
            .filter(|w| {
                w.kind != crate::analyze::WarningKind::Simulated
                    && !not_run.contains(w.job_id.as_str())
            })
            .map(|w| format!("`{}`: {}", w.job_id, w.message))
            .collect(),
        warning_rules: warning_rules(analysis, &not_run),
        warning_groups,
        summary: summary(
            p,
            analysis,
            &not_run,
            &crate::analyze::agreement::divergent_jobs(&agreement_rows),
        ),
        failures,
        unavailable,
        loads: load_rows(analysis),
        lengths: length_rows(analysis),
        searches: search_lines(analysis),
        server_rows,
        server_missing,
        methodology: methodology(p),
        command: manifest.command.clone(),
        pipeline_sha256: manifest.pipeline_sha256.clone(),
        plots: Vec::new(),
        partial: manifest
            .merged
            .as_ref()
            .and_then(crate::results::Merged::missing_text),
        shards,
        shard_columns,
        roofline,
        energy,
    }
}

/// The Environment table: host, minerva and each backend's build.
/// "0: NVIDIA H200, compute 9.0, 140.4 GiB, 4.8 TB/s peak".
fn gpu_text(d: &crate::gpu::GpuInfo) -> String {
    let mut s = format!("{}: {}", d.index, d.name);
    if let Some(c) = &d.compute_capability {
        s.push_str(&format!(", compute {c}"));
    }
    if let Some(m) = d.memory_bytes {
        s.push_str(&format!(", {}", gib(m)));
    }
    if let Some(bw) = d.peak_bandwidth_bytes_per_s {
        s.push_str(&format!(", {:.2} TB/s peak", bw / 1e12));
    }
    s
}

fn environment_rows(manifest: &Manifest) -> Vec<(String, String)> {
    let h = &manifest.host;
    let mut environment = vec![
        ("CPU".to_string(), h.cpu.clone()),
        (
            "Cores".to_string(),
            format!(
                "{} physical, {} logical",
                h.physical_cores
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "?".into()),
                h.logical_cpus
            ),
        ),
        ("Memory".to_string(), gib(h.memory_bytes)),
        (
            "OS".to_string(),
            format!("{} (kernel {}, {})", h.os, h.kernel, h.arch),
        ),
        (
            "GPU".to_string(),
            if h.gpu_devices.is_empty() {
                if h.gpus.is_empty() {
                    "none detected".to_string()
                } else {
                    h.gpus.join(", ")
                }
            } else {
                h.gpu_devices
                    .iter()
                    .map(gpu_text)
                    .collect::<Vec<_>>()
                    .join("; ")
            },
        ),
        (
            "minerva".to_string(),
            format!("{} ({})", manifest.minerva_version, manifest.git_revision),
        ),
    ];
    if let Some(d) = &h.gpu_driver {
        environment.push(("GPU driver".to_string(), d.clone()));
    }
    if let Some(b) = &manifest.build {
        environment.push(("Build".to_string(), b.describe()));
    }
    if let Some(e) = &manifest.energy {
        environment.push(("Energy".to_string(), e.clone()));
    }
    if let Some(obj) = manifest.backends.as_object() {
        for (name, build) in obj {
            let text = match build {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            environment.push((format!("backend {name}"), text));
        }
    }
    environment
}

/// The plan's job order, from the resolved pipeline the manifest keeps.
fn job_order(p: &Value) -> Vec<String> {
    p.get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("jobs").and_then(Value::as_array))
        .flatten()
        .filter_map(|j| j.as_str().map(String::from))
        .collect()
}

/// A server workload's line: where its requests come from and their lengths.
fn workload_line(sc: &crate::job::Scenario) -> Option<String> {
    let w = sc.workload.as_ref()?;
    let mut parts = Vec::new();
    if let (Some(n), None, None) = (sc.prompt_tokens, &w.input_tokens, &w.dataset) {
        parts.push(format!("{n} random prompt tokens"));
    }
    parts.push(w.describe());
    match (&w.output_tokens, &w.dataset) {
        (Some(_), _) => {}
        (None, Some(_)) => parts.push(format!(
            "output up to the dataset's reply length, at most {}",
            sc.max_tokens
        )),
        (None, None) => parts.push(format!("{} tokens generated", sc.max_tokens)),
    }
    Some(format!("server workload: {}", parts.join("; ")))
}

/// Scenarios in pipeline order, each with the line the report prints under its name.
fn scenario_order(p: &Value) -> Vec<(String, String)> {
    p.get("scenarios")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let workload = serde_json::from_value::<crate::job::Scenario>(s.clone())
                .ok()
                .and_then(|sc| workload_line(&sc));
            let desc = match (
                s.get("prompt_tokens").and_then(Value::as_u64),
                s.get("max_tokens").and_then(Value::as_u64),
            ) {
                _ if workload.is_some() => workload.unwrap_or_default(),
                (Some(pt), Some(mt)) => {
                    let mut d = format!("synthetic: {pt} random prompt tokens, {mt} generated");
                    if let Some(depth) = s.get("depth").and_then(Value::as_u64) {
                        d.push_str(&format!(", after {depth} tokens in the KV cache"));
                    }
                    d
                }
                (None, Some(mt)) => {
                    let d = s
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or("text prompt");
                    format!("{d}; {mt} tokens generated")
                }
                _ => String::new(),
            };
            (name, desc)
        })
        .collect()
}

/// The Results tables: one section per scenario, one row per job that ran.
fn scenario_sections(
    p: &Value,
    analysis: &Analysis,
    agreement_rows: &[AgreementRow],
    not_run: &BTreeSet<&str>,
    baseline: Option<&str>,
    reused: &std::collections::BTreeMap<String, String>,
    warned: &BTreeSet<&str>,
) -> Vec<ScenarioSection> {
    let divergent = crate::analyze::agreement::divergent_jobs(agreement_rows);
    let mut scenarios = Vec::new();
    for (name, description) in scenario_order(p) {
        let rows: Vec<Row> = analysis
            .jobs
            .iter()
            .filter(|j| j.scenario == name && !not_run.contains(j.job_id.as_str()))
            .map(|j| Row {
                job_id: j.job_id.clone(),
                roofline: DASH.into(),
                joules_per_token: DASH.into(),
                watts: DASH.into(),
                shard_cells: Vec::new(),
                backend: j.backend.clone(),
                model: j.model.clone(),
                params: if j.params.is_empty() {
                    DASH.into()
                } else {
                    j.params.clone()
                },
                simulated: j.simulated,
                n: (j.samples - j.failed).to_string(),
                failed: j.failed,
                pp: cell(j.metrics.get(&Metric::PpTps)),
                tg: cell(j.metrics.get(&Metric::TgTps)),
                ttft: cell(j.metrics.get(&Metric::TtftMs)),
                tpot: cell(j.metrics.get(&Metric::TpotMs)),
                itl: cell(j.metrics.get(&Metric::ItlMs)),
                e2e: cell(j.metrics.get(&Metric::E2eMs)),
                load: stat(j, Metric::LoadMs, |m| m.median),
                rss: stat(j, Metric::PeakRssMb, |m| m.max),
                tokenize: stat(j, Metric::TokenizeMs, |m| m.mean),
                sampling: stat(j, Metric::SampleMs, |m| m.mean),
                vs_baseline: vs_baseline(j, &analysis.jobs, baseline),
                agreement: agreement_cell(&j.job_id, agreement_rows, &divergent),
                divergent: divergent.contains(&j.job_id.as_str()),
                unstable: unstable(j, p).unwrap_or_default(),
                reused: reused
                    .get(&j.job_id)
                    .map(|r| format!("reused from `{r}`"))
                    .unwrap_or_default(),
                warned: warned.contains(j.job_id.as_str()),
            })
            .collect();
        if !rows.is_empty() {
            scenarios.push(ScenarioSection {
                name,
                description,
                rows,
            });
        }
    }
    scenarios
}

/// The run-wide rules: a warning kind every job shares is said once, with the jobs counted.
fn warning_rules(analysis: &Analysis, not_run: &BTreeSet<&str>) -> Vec<String> {
    use crate::analyze::WarningKind;
    let few: Vec<&crate::analyze::Warning> = analysis
        .warnings
        .iter()
        .filter(|w| {
            w.kind == WarningKind::TooFewSamplesForPercentile
                && !not_run.contains(w.job_id.as_str())
        })
        .collect();
    if few.is_empty() {
        return Vec::new();
    }
    let counts: BTreeSet<u64> = analysis
        .jobs
        .iter()
        .filter(|j| few.iter().any(|w| w.job_id == j.job_id))
        .map(|j| j.samples - j.failed)
        .collect();
    let n = match (counts.first(), counts.last()) {
        (Some(a), Some(b)) if a == b => format!("{a} measured samples"),
        (Some(a), Some(b)) => format!("{a} to {b} measured samples"),
        _ => "few measured samples".into(),
    };
    let jobs = if few.len() == analysis.jobs.len() {
        format!("Every job ({}) has {n}", few.len())
    } else {
        format!("{} of {} jobs have {n}", few.len(), analysis.jobs.len())
    };
    vec![format!(
        "{jobs}: a percentile needs at least {MIN_SAMPLES_P90} samples for p90, {MIN_SAMPLES_P95} for p95 and {MIN_SAMPLES_P99} for p99, so those cells say \"too few samples\" instead of a figure. Means, their 95% intervals and p50 stand."
    )]
}

/// A warning's weight when ordering jobs: failures first, then slow first runs by how slow,
/// then spread by how wide, then outliers.
fn warning_weight(w: &crate::analyze::Warning, j: Option<&JobSummary>) -> f64 {
    use crate::analyze::WarningKind;
    let metric = w.metric.and_then(|m| j?.metrics.get(&m));
    match w.kind {
        WarningKind::FailedSamples => 1000.0,
        WarningKind::SlowFirstRun => {
            let ratio = metric
                .and_then(|m| {
                    let first = m.first?;
                    let (a, b) = if w.metric.is_some_and(Metric::higher_is_better) {
                        (m.median, first)
                    } else {
                        (first, m.median)
                    };
                    (b > 0.0).then(|| a / b)
                })
                .unwrap_or(1.5);
            100.0 * ratio
        }
        WarningKind::HighVariation => metric.and_then(|m| m.cv).unwrap_or(0.05) * 100.0,
        WarningKind::Outliers => 1.0,
        WarningKind::TooFewSamplesForPercentile | WarningKind::Simulated => 0.0,
    }
}

/// The warnings that are about one job, grouped by job, the worst job first.
fn warning_groups(analysis: &Analysis, not_run: &BTreeSet<&str>) -> Vec<WarningGroup> {
    use crate::analyze::WarningKind;
    let mut groups: Vec<(f64, WarningGroup)> = Vec::new();
    for w in &analysis.warnings {
        if matches!(
            w.kind,
            WarningKind::TooFewSamplesForPercentile | WarningKind::Simulated
        ) || not_run.contains(w.job_id.as_str())
        {
            continue;
        }
        let job = analysis.jobs.iter().find(|j| j.job_id == w.job_id);
        let weight = warning_weight(w, job);
        match groups.iter_mut().find(|(_, g)| g.job_id == w.job_id) {
            Some((total, g)) => {
                *total += weight;
                g.items.push(w.message.clone());
            }
            None => groups.push((
                weight,
                WarningGroup {
                    job_id: w.job_id.clone(),
                    items: vec![w.message.clone()],
                },
            )),
        }
    }
    groups.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.job_id.cmp(&b.1.job_id))
    });
    groups.into_iter().map(|(_, g)| g).collect()
}

/// The report's opening paragraph: per scenario with two or more jobs measured in process
/// (DIVERGENT ones left out), the fastest on the primary metric, its margin over the next, and
/// whether the margin is beyond noise (the two 95% intervals do not overlap).
fn summary(
    p: &Value,
    analysis: &Analysis,
    not_run: &BTreeSet<&str>,
    divergent: &[&str],
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, _) in scenario_order(p) {
        let mut ranked: Vec<(&JobSummary, Metric, &MetricStats)> = analysis
            .jobs
            .iter()
            // A DIVERGENT job's speed is not comparable: it takes no part.
            .filter(|j| {
                j.scenario == name
                    && j.load.is_empty()
                    && !not_run.contains(j.job_id.as_str())
                    && !divergent.contains(&j.job_id.as_str())
            })
            .filter_map(|j| {
                let (metric, m) = primary(j)?;
                metric.higher_is_better().then_some((j, metric, m))
            })
            .collect();
        if ranked.len() < 2 || ranked.iter().any(|r| r.1 != ranked[0].1) {
            continue;
        }
        ranked.sort_by(|a, b| b.2.mean.total_cmp(&a.2.mean));
        let (best, metric, b) = ranked[0];
        let (next, _, n) = ranked[1];
        let who = |j: &JobSummary| {
            let mut s = format!("{} ({}", j.backend, j.model);
            if !j.params.is_empty() {
                s.push_str(", ");
                s.push_str(&j.params);
            }
            s.push(')');
            if j.simulated {
                s.push_str(" SIMULATED");
            }
            s
        };
        let unit = match metric {
            Metric::TgTps => "generated tokens/s",
            _ => "prompt tokens/s",
        };
        let verdict = match (b.ci95_low, n.ci95_high) {
            (Some(lo), Some(hi)) if lo > hi => "beyond noise (the 95% intervals do not overlap)",
            (Some(_), Some(_)) => "within noise (the 95% intervals overlap)",
            _ => "not judged (too few runs for an interval)",
        };
        let margin = match b.mean / n.mean {
            r if r.is_finite() && r >= 1.5 => format!("{r:.2}× the rate of"),
            r if r.is_finite() => format!("{:.1}% ahead of", (r - 1.0) * 100.0),
            _ => "ahead of".into(),
        };
        out.push(format!(
            "On `{name}`, {} is fastest at {} {unit}, {margin} {} at {}: {verdict}.",
            who(best),
            fmt(b.mean),
            who(next),
            fmt(n.mean)
        ));
    }
    out
}

/// The primary metric of a job: tg tokens/s when it generates, else pp tokens/s, else e2e.
fn primary(j: &JobSummary) -> Option<(Metric, &MetricStats)> {
    [Metric::TgTps, Metric::PpTps, Metric::E2eMs]
        .into_iter()
        .find_map(|m| j.metrics.get(&m).map(|s| (m, s)))
}

/// A stage's resolved settings, by the stage part of a job id.
fn stage_settings<'a>(p: &'a Value, job_id: &str) -> Option<&'a Value> {
    let stage = job_id.split('/').next()?;
    p.get("stages")?
        .as_array()?
        .iter()
        .find(|s| s.get("name").and_then(Value::as_str) == Some(stage))?
        .get("settings")
}

/// The analyze stage's `unstable_cv`, else [`CV_WARN`].
fn unstable_cv(p: &Value) -> f64 {
    p.get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|s| s.get("settings")?.get("unstable_cv")?.as_f64())
        .unwrap_or(CV_WARN)
}

/// "UNSTABLE (…)" when the job's primary metric varies more than the analyze stage's
/// `unstable_cv` (default 5%), or when `runs: {max, rel_ci}` ran out before its interval was
/// within `rel_ci`.
fn unstable(j: &JobSummary, p: &Value) -> Option<String> {
    let (metric, m) = primary(j)?;
    let threshold = unstable_cv(p);
    let mut why = Vec::new();
    if let Some(cv) = m.cv.filter(|cv| *cv > threshold) {
        why.push(format!(
            "{} CV {:.1}% > {:.1}%",
            metric.column(),
            cv * 100.0,
            threshold * 100.0
        ));
    }
    let runs = stage_settings(p, &j.job_id).and_then(|s| s.get("runs"));
    if let (Some(max), Some(rel_ci)) = (
        runs.and_then(|r| r.get("max")).and_then(Value::as_u64),
        runs.and_then(|r| r.get("rel_ci")).and_then(Value::as_f64),
    ) {
        let half = match (m.ci95_low, m.ci95_high) {
            (Some(lo), Some(hi)) if m.mean.abs() > 0.0 => Some((hi - lo) / 2.0 / m.mean.abs()),
            _ => None,
        };
        if m.n >= max && half.is_none_or(|h| h > rel_ci) {
            why.push(format!(
                "max {max} runs reached, 95% CI ±{:.1}% > ±{:.1}%",
                half.unwrap_or(f64::NAN) * 100.0,
                rel_ci * 100.0
            ));
        }
    }
    (!why.is_empty()).then(|| format!("UNSTABLE ({})", why.join("; ")))
}

/// A job's "Output agreement" cell: its agreement with its reference, or `reference`.
fn agreement_cell(job: &str, rows: &[AgreementRow], divergent: &[&str]) -> String {
    if let Some(r) = rows.iter().find(|r| r.same_weights && r.other == job) {
        let backend = r.reference_label.split(" · ").next().unwrap_or_default();
        let text = format!("{}/{} vs {backend}", r.prefix, r.compared);
        if divergent.contains(&job) {
            format!("**DIVERGENT** {text}")
        } else {
            text
        }
    } else if rows.iter().any(|r| r.same_weights && r.reference == job) {
        "reference".into()
    } else {
        DASH.into()
    }
}

/// One row of the "Output agreement" section.
fn agreement_view(r: &AgreementRow) -> AgreementView {
    use crate::analyze::agreement::Verdict;
    AgreementView {
        scenario: r.scenario.clone(),
        reference: r.reference_label.clone(),
        other: r.other_label.clone(),
        prefix: format!("{}/{}", r.prefix, r.compared),
        prompt: if r.same_prompt { "same" } else { "**differ**" }.into(),
        verdict: match r.verdict {
            Verdict::Agree => "agree".into(),
            Verdict::Divergent => "**DIVERGENT**: speed not comparable".into(),
            Verdict::Ungated => "not judged (no `agreement.min_prefix`)".into(),
            Verdict::DifferentWeights => "different weights: not judged".into(),
        },
    }
}

/// Failed samples, split into jobs this build could not run and real failures.
fn failure_rows(samples: &[Sample]) -> (Vec<Failure>, Vec<Failure>) {
    samples
        .iter()
        .filter_map(|s| {
            s.error.as_ref().map(|e| Failure {
                job_id: s.job_id.clone(),
                kind: serde_json::to_value(e.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                message: e.message.clone(),
                exit_status: e.exit_status.clone().unwrap_or_default(),
                stderr_tail: e.stderr_tail.clone(),
            })
        })
        .partition(|f| f.kind == "unavailable")
}

/// The Methodology lines of each bench stage.
fn methodology(p: &Value) -> Vec<String> {
    let mut methodology = Vec::new();
    for st in p
        .get("stages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if st.get("kind").and_then(Value::as_str) != Some("bench") {
            continue;
        }
        let s = &st["settings"];
        methodology.push(format!(
            "Stage `{}`: {} measured runs after {} warmup run(s) per job; base seed {} (each job derives its own seed from it and its id); timeout {} s per job.",
            st.get("name").and_then(Value::as_str).unwrap_or_default(),
            s["runs"],
            s["warmup"],
            s["seed"],
            s["timeout_s"],
        ));
    }
    methodology
}

/// One row of the Models table.
fn model_row(m: &crate::results::ModelInfo) -> ModelRow {
    ModelRow {
        name: m.name.clone(),
        format: serde_json::to_value(m.format)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        architecture: m.architecture.clone().unwrap_or_else(|| DASH.into()),
        parameters: m
            .parameters
            .map(|p| format!("{:.1}M", p as f64 / 1e6))
            .unwrap_or_else(|| DASH.into()),
        quantization: m.quantization.clone().unwrap_or_else(|| DASH.into()),
        context: m
            .context_length
            .map(|c| c.to_string())
            .unwrap_or_else(|| DASH.into()),
        vocab: m
            .vocab_size
            .map(|c| c.to_string())
            .unwrap_or_else(|| DASH.into()),
        size: format!("{:.1} MB", m.file_size as f64 / 1e6),
        sha256: m
            .sha256
            .as_ref()
            .map(|h| format!("`{}…` verified", &h[..12.min(h.len())]))
            .unwrap_or_else(|| "not pinned".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::{Warning, WarningKind};

    /// A manifest of a `cuda` (or CPU-only) build on a host with two GPUs.
    fn gpu_manifest(cuda: bool) -> Manifest {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "minerva_version": "0.1.0", "git_revision": "abc", "run_id": "r",
            "status": "complete", "started_at": "2026-12-01T00:00:00Z", "command": "minerva run",
            "pipeline_sha256": "x", "resolved_sha256": "y", "pipeline": {},
            "host": {"hostname": "h", "cpu": "c", "physical_cores": 2, "logical_cpus": 2,
                     "memory_bytes": 1u64 << 30, "os": "Debian", "kernel": "6.1",
                     "arch": "x86_64", "gpus": ["NVIDIA H200", "NVIDIA H200"],
                     "gpu_devices": [
                        {"index": 0, "name": "NVIDIA H200", "peak_bandwidth_bytes_per_s": 4.8e12},
                        {"index": 1, "name": "NVIDIA H200", "peak_bandwidth_bytes_per_s": 4.9e12}]},
            "backends": {}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let mut b = crate::build_info::build();
        b.cargo_features = if cuda { vec!["cuda".into()] } else { vec![] };
        m.build = Some(b);
        m
    }

    #[test]
    fn float_weights_are_read_in_the_jobs_dtype() {
        let m: crate::results::ModelInfo = serde_json::from_value(serde_json::json!({
            "name": "m", "path": "p", "format": "safetensors", "file_size": 0,
            "architecture": null, "parameters": null, "quantization": null,
            "context_length": null, "vocab_size": null, "tensor_count": null,
            "weight_bytes_per_token": 112, "kv_bytes_per_position": 32,
            "float_weights_per_token": {"params": 40, "bytes": 80},
            "sha256": null, "warnings": []
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        // candle casts to f32 by default: 32 packed bytes + 40 × 4; KV in f32.
        assert_eq!(job_bytes(&m, "candle", "threads=2"), (Some(192), Some(64)));
        assert_eq!(job_bytes(&m, "candle", "dtype=bf16"), (Some(112), Some(32)));
        // MLX keeps them as stored unless told.
        assert_eq!(job_bytes(&m, "mlx", ""), (Some(112), Some(32)));
        assert_eq!(job_bytes(&m, "mlx", "dtype=f32"), (Some(192), Some(64)));
    }

    #[test]
    fn a_job_on_a_gpu_takes_that_gpus_bandwidth_for_its_roofline() {
        let m = gpu_manifest(true);
        let bw = |backend: &str, params: &str| job_gpu(backend, params, &m).map(|(_, b)| b);
        // llama.cpp offloads by default (n_gpu_layers 99) to main_gpu 0.
        assert_eq!(bw("llama_cpp", "threads=2"), Some(4.8e12));
        assert_eq!(bw("llama_cpp", "main_gpu=1,n_gpu_layers=99"), Some(4.9e12));
        assert_eq!(bw("llama_cpp", "n_gpu_layers=0"), None);
        assert_eq!(bw("candle", "device=cuda:1"), Some(4.9e12));
        assert_eq!(bw("candle", "device=cuda"), Some(4.8e12));
        assert_eq!(bw("candle", "threads=2"), None);
        assert_eq!(bw("candle", "device=cpu"), None);
        assert_eq!(bw("mlx", ""), None);
        // A GPU the host does not have, or a build without CUDA: the host's own bandwidth.
        assert_eq!(bw("candle", "device=cuda:7"), None);
        let cpu_build = gpu_manifest(false);
        assert!(job_gpu("llama_cpp", "", &cpu_build).is_none());
        let env = environment_rows(&m);
        let gpu = env
            .iter()
            .find(|(k, _)| k == "GPU")
            .map(|(_, v)| v.as_str());
        assert_eq!(
            gpu,
            Some("0: NVIDIA H200, 4.80 TB/s peak; 1: NVIDIA H200, 4.90 TB/s peak")
        );
        assert!(env
            .iter()
            .any(|(k, v)| k == "Build" && v.contains("features cuda")));
    }

    #[test]
    fn a_figure_above_the_roofline_is_flagged() {
        assert_eq!(roofline_cell(64.0, 100.0), "64% of 100.0");
        assert_eq!(roofline_cell(100.0, 100.0), "100% of 100.0");
        assert_eq!(
            roofline_cell(150.0, 100.0),
            "**150% of 100.0: above the roofline, a measurement error**"
        );
    }

    fn stats(mean: f64, half: f64, cv: f64, first: f64) -> MetricStats {
        MetricStats {
            n: 5,
            mean,
            median: mean,
            std: Some(cv * mean),
            cv: Some(cv),
            min: mean - half,
            max: mean + half,
            p50: mean,
            p90: mean,
            p95: mean,
            p99: mean,
            ci95_low: Some(mean - half),
            ci95_high: Some(mean + half),
            outliers: 0,
            first: Some(first),
        }
    }

    fn job(id: &str, backend: &str, tg: MetricStats) -> JobSummary {
        JobSummary {
            job_id: id.into(),
            backend: backend.into(),
            model: "m".into(),
            scenario: "s".into(),
            params: String::new(),
            simulated: false,
            samples: 5,
            failed: 0,
            lengths: None,
            load: Vec::new(),
            metrics: [(Metric::TgTps, tg)].into_iter().collect(),
        }
    }

    fn warning(job: &str, kind: WarningKind, metric: Option<Metric>) -> Warning {
        Warning {
            kind,
            job_id: job.into(),
            metric,
            message: format!("{kind:?}"),
        }
    }

    #[test]
    fn the_summary_names_the_fastest_and_judges_its_margin_against_noise() {
        let p = serde_json::json!({ "scenarios": [{ "name": "s" }] });
        let none = BTreeSet::new();
        let apart = Analysis {
            jobs: vec![
                job("a", "llama_cpp", stats(100.0, 2.0, 0.01, 100.0)),
                job("b", "candle", stats(50.0, 2.0, 0.01, 50.0)),
            ],
            warnings: Vec::new(),
        };
        let s = summary(&p, &apart, &none, &[]);
        assert_eq!(
            s,
            vec![
                "On `s`, llama_cpp (m) is fastest at 100.0 generated tokens/s, 2.00× the rate \
                  of candle (m) at 50.00: beyond noise (the 95% intervals do not overlap)."
            ]
        );
        let close = Analysis {
            jobs: vec![
                job("a", "llama_cpp", stats(100.0, 5.0, 0.03, 100.0)),
                job("b", "candle", stats(97.0, 5.0, 0.03, 97.0)),
            ],
            warnings: Vec::new(),
        };
        let s = summary(&p, &close, &none, &[]);
        assert!(
            s[0].contains("3.1% ahead of candle (m) at 97.00: within noise"),
            "{s:?}"
        );
        // A divergent job takes no part; one job left is no comparison.
        assert!(summary(&p, &close, &none, &["b"]).is_empty());
    }

    #[test]
    fn warnings_are_said_once_when_run_wide_and_grouped_worst_first() {
        let jobs = vec![
            job("a", "llama_cpp", stats(100.0, 2.0, 0.01, 44.0)),
            job("b", "candle", stats(50.0, 2.0, 0.09, 50.0)),
            job("c", "mlx", stats(20.0, 2.0, 0.01, 20.0)),
        ];
        let mut warnings: Vec<Warning> = ["a", "b", "c"]
            .iter()
            .map(|j| warning(j, WarningKind::TooFewSamplesForPercentile, None))
            .collect();
        warnings.push(warning("c", WarningKind::Outliers, Some(Metric::TgTps)));
        warnings.push(warning(
            "b",
            WarningKind::HighVariation,
            Some(Metric::TgTps),
        ));
        warnings.push(warning("a", WarningKind::SlowFirstRun, Some(Metric::TgTps)));
        warnings.push(warning("c", WarningKind::Outliers, Some(Metric::E2eMs)));
        let a = Analysis { jobs, warnings };
        let none = BTreeSet::new();
        let rules = warning_rules(&a, &none);
        assert_eq!(rules.len(), 1);
        assert!(
            rules[0].starts_with("Every job (3) has 5 measured samples"),
            "{rules:?}"
        );
        let groups = warning_groups(&a, &none);
        let order: Vec<&str> = groups.iter().map(|g| g.job_id.as_str()).collect();
        // The slow first run (44 against a median of 100) first, then the 9% CV, then outliers.
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(groups[2].items, ["Outliers", "Outliers"]);
    }
}
