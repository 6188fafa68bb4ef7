//! `minerva export RUN --format llama-bench-…`: a run's in-process jobs as llama-bench results,
//! with llama-bench's own field names and units, so that llama.cpp's
//! `scripts/compare-llama-bench.py` (and anything else that reads llama-bench output) reads
//! minerva runs.
//!
//! llama-bench runs prompt processing and generation as separate tests; a minerva repetition does
//! both. Each job becomes up to two entries: `pp` (n_prompt = the prompt's tokens, n_gen = 0,
//! from pp tokens/s) and `tg` (n_prompt = 0, n_gen = the scenario's tokens, from tg tokens/s,
//! which minerva measures from the first to the last generated token). Server loads have no
//! llama-bench equivalent and are left out; simulated jobs are exported with backend
//! `SIMULATED` so that no reader mistakes them for measurements.

use crate::results::{read_samples, Manifest, RunDir, Sample, StoreError};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON array (llama-bench -o json).
    LlamaBenchJson,
    /// One JSON object per line (llama-bench -o jsonl).
    LlamaBenchJsonl,
    /// CSV with a header (llama-bench -o csv).
    LlamaBenchCsv,
    /// SQL statements for sqlite3 (llama-bench -o sql).
    LlamaBenchSql,
}

/// llama-bench's fields, in its order (the SQL table's columns).
const FIELDS: [&str; 41] = [
    "build_commit",
    "build_number",
    "cpu_info",
    "gpu_info",
    "backends",
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "cpu_mask",
    "cpu_strict",
    "poll",
    "type_k",
    "type_v",
    "n_gpu_layers",
    "n_cpu_moe",
    "split_mode",
    "main_gpu",
    "no_kv_offload",
    "flash_attn",
    "tensor_split",
    "tensor_buft_overrides",
    "use_mmap",
    "load_mode",
    "embeddings",
    "no_op_offload",
    "fit_target",
    "fit_min_ctx",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test_time",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "samples_ns",
    "samples_ts",
];

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}: no in-process job with measured samples to export")]
    Empty(String),
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n.max(1.0);
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

fn param_u64(s: &Sample, name: &str) -> Option<u64> {
    s.params.get(name).and_then(|v| match v {
        Value::String(t) => t.parse().ok(),
        other => other.as_u64(),
    })
}

fn param_flag(s: &Sample, name: &str) -> Option<bool> {
    s.params.get(name).and_then(|v| match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_u64().map(|n| n != 0),
        Value::String(t) => match t.as_str() {
            "true" | "on" | "1" => Some(true),
            "false" | "off" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    })
}

/// One llama-bench entry: a job's pp or tg test.
fn entry(
    m: &Manifest,
    build_commit: &str,
    models: &BTreeMap<String, crate::results::ModelInfo>,
    first: &Sample,
    (n_prompt, n_gen): (u64, u64),
    ts: &[f64],
) -> Map<String, Value> {
    let n_depth = scenario_depth(m, &first.scenario);
    let tokens = (n_prompt + n_gen) as f64;
    // llama-bench's samples_ns are each test's time: tokens / (tokens/s).
    let ns: Vec<f64> = ts.iter().map(|t| tokens / t * 1e9).collect();
    let (avg_ts, stddev_ts) = mean_sd(ts);
    let (avg_ns, stddev_ns) = mean_sd(&ns);
    let info = models.get(&first.model);
    let backend = match first.backend.as_str() {
        _ if first.simulated => "SIMULATED".to_string(),
        "llama_cpp" => "CPU".to_string(),
        other => other.to_string(),
    };
    let model_type = match info {
        Some(i) => format!(
            "{} {} {}",
            i.architecture.as_deref().unwrap_or("?"),
            i.parameters
                .map(|p| format!("{:.0}M", p as f64 / 1e6))
                .unwrap_or_else(|| "?".into()),
            i.quantization.as_deref().map(dominant_type).unwrap_or("?")
        ),
        None => first.model.clone(),
    };
    let threads = param_u64(first, "threads")
        .or(m.host.physical_cores.map(|c| c as u64))
        .unwrap_or(m.host.logical_cpus as u64);
    let mmap = param_flag(first, "mmap").unwrap_or(true);
    let values: Vec<Value> = vec![
        json!(build_commit),
        json!(0),
        json!(m.host.cpu),
        json!(m.host.gpus.join(", ")),
        json!(backend),
        json!(info
            .map(|i| i.path.clone())
            .unwrap_or_else(|| first.model.clone())),
        json!(model_type),
        json!(info.map(|i| i.file_size).unwrap_or(0)),
        json!(info.and_then(|i| i.parameters).unwrap_or(0)),
        json!(param_u64(first, "batch").unwrap_or(2048)),
        json!(param_u64(first, "ubatch").unwrap_or(512)),
        json!(threads),
        json!("0x0"),
        json!(0),
        json!(50),
        json!("f16"),
        json!("f16"),
        json!(param_u64(first, "n_gpu_layers").unwrap_or(0)),
        json!(0),
        json!("layer"),
        json!(0),
        json!(0),
        json!(i32::from(param_flag(first, "flash_attn").unwrap_or(false))),
        json!("0.00"),
        json!("none"),
        json!(i32::from(mmap)),
        json!(if mmap { "mmap" } else { "none" }),
        json!(0),
        json!(0),
        json!(0),
        json!(0),
        json!(n_prompt),
        json!(n_gen),
        json!(n_depth),
        json!(m.started_at),
        json!(avg_ns.round() as u64),
        json!(stddev_ns.round() as u64),
        json!(avg_ts),
        json!(stddev_ts),
        json!(ns.iter().map(|x| x.round() as u64).collect::<Vec<_>>()),
        json!(ts),
    ];
    FIELDS.iter().map(|f| f.to_string()).zip(values).collect()
}

/// The model's type as llama-bench names it (its file type): the tensor type most tensors
/// have, full-precision types counted only when nothing else is there. `F32×61 Q4_1×210
/// Q8_0×1` → `Q4_1`.
fn dominant_type(breakdown: &str) -> &str {
    let parts: Vec<(&str, u64)> = breakdown
        .split_whitespace()
        .filter_map(|p| {
            let (t, n) = p.split_once('×')?;
            Some((t, n.parse().ok()?))
        })
        .collect();
    let quantized = parts
        .iter()
        .filter(|(t, _)| !matches!(*t, "F32" | "F16" | "BF16"))
        .max_by_key(|(_, n)| *n);
    match quantized.or_else(|| parts.iter().max_by_key(|(_, n)| *n)) {
        Some((t, _)) => t,
        None => breakdown,
    }
}

/// A scenario's `depth` as the run resolved it (0 when none).
fn scenario_depth(m: &Manifest, scenario: &str) -> u64 {
    m.pipeline["scenarios"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["name"] == scenario))
        .and_then(|s| s["depth"].as_u64())
        .unwrap_or(0)
}

/// How a job that both processes a prompt and generates is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PromptAndGen {
    /// Two tests, `pp` and `tg` (`minerva export`).
    #[default]
    Split,
    /// One test, as llama-bench's `-pg PP,TG`: n_prompt and n_gen both set, the rate over the
    /// whole repetition ((PP + TG) / (PP / pp rate + TG / tg rate)).
    Combined,
}

/// The llama-bench entries of a run: per in-process job, a pp and a tg test where measured.
/// `build_commit` labels the run (compare-llama-bench.py compares builds by it); default: the
/// run's minerva revision.
pub fn entries(
    dir: &RunDir,
    build_commit: Option<&str>,
) -> Result<Vec<Map<String, Value>>, ExportError> {
    entries_with(dir, build_commit, PromptAndGen::Split)
}

/// [`entries`], with a choice of how prompt+generation jobs are exported.
pub fn entries_with(
    dir: &RunDir,
    build_commit: Option<&str>,
    pg: PromptAndGen,
) -> Result<Vec<Map<String, Value>>, ExportError> {
    let m = dir.read_manifest()?;
    let samples = read_samples(&dir.samples())?;
    let models: BTreeMap<String, crate::results::ModelInfo> = crate::stage::read_models(dir)
        .into_iter()
        .map(|i| (i.name.clone(), i))
        .collect();
    let commit = build_commit
        .map(str::to_string)
        .unwrap_or_else(|| m.git_revision.chars().take(8).collect());
    let mut jobs: Vec<(String, Vec<&Sample>)> = Vec::new();
    for s in samples
        .iter()
        .filter(|s| !s.warmup && s.error.is_none() && s.request.is_none() && s.load.is_none())
    {
        match jobs.iter_mut().find(|(id, _)| *id == s.job_id) {
            Some((_, v)) => v.push(s),
            None => jobs.push((s.job_id.clone(), vec![s])),
        }
    }
    let mut out = Vec::new();
    for (_, reps) in &jobs {
        let first = reps[0];
        let pp: Vec<f64> = reps.iter().filter_map(|s| s.pp_tps).collect();
        let tg: Vec<f64> = reps.iter().filter_map(|s| s.tg_tps).collect();
        let n_prompt = first.prompt_tokens.unwrap_or(0);
        let n_gen = first.output_tokens.unwrap_or(first.token_ms.len() as u64);
        if pg == PromptAndGen::Combined && n_prompt > 0 && n_gen > 0 {
            let both: Vec<f64> = reps
                .iter()
                .filter_map(|s| {
                    let (pp, tg) = (s.pp_tps?, s.tg_tps?);
                    let secs = n_prompt as f64 / pp + n_gen as f64 / tg;
                    (secs > 0.0).then(|| (n_prompt + n_gen) as f64 / secs)
                })
                .collect();
            if !both.is_empty() {
                out.push(entry(&m, &commit, &models, first, (n_prompt, n_gen), &both));
                continue;
            }
        }
        if !pp.is_empty() && n_prompt > 0 {
            out.push(entry(&m, &commit, &models, first, (n_prompt, 0), &pp));
        }
        if !tg.is_empty() && n_gen > 0 {
            out.push(entry(&m, &commit, &models, first, (0, n_gen), &tg));
        }
    }
    if out.is_empty() {
        return Err(ExportError::Empty(dir.root.display().to_string()));
    }
    Ok(out)
}

fn csv_field(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn sql_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        Value::Array(items) => format!(
            "'{}'",
            items
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        ),
        other => other.to_string(),
    }
}

/// Rows of any fields in CSV, JSON Lines or SQL (table `table`), as [`render`] writes
/// llama-bench's; JSON is a pretty array.
pub fn render_fields(
    rows: &[Map<String, Value>],
    fields: &[&str],
    table: &str,
    format: ExportFormat,
) -> String {
    match format {
        ExportFormat::LlamaBenchJson => {
            serde_json::to_string_pretty(rows).unwrap_or_default() + "\n"
        }
        ExportFormat::LlamaBenchJsonl => rows
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default() + "\n")
            .collect(),
        ExportFormat::LlamaBenchCsv => {
            let mut out = fields.join(",") + "\n";
            for e in rows {
                let row: Vec<String> = fields
                    .iter()
                    .map(|f| e.get(*f).map(csv_field).unwrap_or_default())
                    .collect();
                out.push_str(&row.join(","));
                out.push('\n');
            }
            out
        }
        ExportFormat::LlamaBenchSql => {
            let ty = |f: &str| match rows.iter().find_map(|r| r.get(f).filter(|v| !v.is_null())) {
                Some(Value::Number(n)) if n.is_f64() => "REAL",
                Some(Value::Number(_)) | Some(Value::Bool(_)) => "INTEGER",
                _ => "TEXT",
            };
            let mut out = format!(
                "CREATE TABLE IF NOT EXISTS {table} (\n{}\n);\n",
                fields
                    .iter()
                    .map(|c| format!("  {c} {}", ty(c)))
                    .collect::<Vec<_>>()
                    .join(",\n")
            );
            for e in rows {
                let vals: Vec<String> = fields
                    .iter()
                    .map(|c| match e.get(*c) {
                        Some(Value::Bool(b)) => i32::from(*b).to_string(),
                        Some(Value::Null) | None => "NULL".into(),
                        Some(v) => sql_value(v),
                    })
                    .collect();
                out.push_str(&format!(
                    "INSERT INTO {table} ({}) VALUES ({});\n",
                    fields.join(", "),
                    vals.join(", ")
                ));
            }
            out
        }
    }
}

/// The entries in llama-bench's output format.
pub fn render(entries: &[Map<String, Value>], format: ExportFormat) -> String {
    match format {
        ExportFormat::LlamaBenchSql => {
            // llama-bench's own table: samples_ns/samples_ts are not among its columns.
            let cols: Vec<&str> = FIELDS
                .iter()
                .copied()
                .filter(|f| !f.starts_with("samples_") && *f != "use_mmap")
                .collect();
            let types = |f: &str| match f {
                "avg_ts" | "stddev_ts" => "REAL",
                "build_commit"
                | "cpu_info"
                | "gpu_info"
                | "backends"
                | "model_filename"
                | "model_type"
                | "cpu_mask"
                | "type_k"
                | "type_v"
                | "split_mode"
                | "tensor_split"
                | "tensor_buft_overrides"
                | "load_mode"
                | "test_time" => "TEXT",
                _ => "INTEGER",
            };
            let mut out = format!(
                "CREATE TABLE IF NOT EXISTS llama_bench (\n{}\n);\n",
                cols.iter()
                    .map(|c| format!("  {c} {}", types(c)))
                    .collect::<Vec<_>>()
                    .join(",\n")
            );
            for e in entries {
                let vals: Vec<String> = cols
                    .iter()
                    .map(|c| e.get(*c).map(sql_value).unwrap_or_else(|| "NULL".into()))
                    .collect();
                out.push_str(&format!(
                    "INSERT INTO llama_bench ({}) VALUES ({});\n",
                    cols.join(", "),
                    vals.join(", ")
                ));
            }
            out
        }
        other => render_fields(entries, &FIELDS, "llama_bench", other),
    }
}

#[cfg(test)]
mod tests {
    use super::dominant_type;

    #[test]
    fn the_model_type_is_the_dominant_tensor_type() {
        assert_eq!(dominant_type("F32×61 Q4_1×210 Q8_0×1"), "Q4_1");
        assert_eq!(dominant_type("F32×10 BF16×200"), "BF16");
        assert_eq!(
            dominant_type("affine 4-bit, group 64"),
            "affine 4-bit, group 64"
        );
    }
}
