//! `minerva run --reuse RUN_DIR...`: a bench job whose key matches a completed job of an
//! earlier run is copied from it instead of measured again (DVC's idea, with a key that knows
//! the environment). The key is the resolved job definition (backend, model format, scenario,
//! shown params, runs, warmup, seed), the model's sha256, the backend's build, the host's
//! fingerprint and the metric-definitions version. The journal keeps the first two as one hash
//! (`JobRecord::key`); the rest comes from the earlier run's manifest, so a run whose recorded
//! build or host differs is never reused.

use super::StageCtx;
use crate::backend::BenchJob;
use crate::results::{read_journal, read_samples, JobStatus, RunDir, Sample, StoreError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A completed bench job of an earlier run.
#[derive(Debug, Clone)]
pub struct Found {
    pub dir: PathBuf,
    pub job_id: String,
}

/// Completed bench jobs of the `--reuse` runs, by full key.
#[derive(Debug, Default)]
pub struct ReuseIndex {
    by_key: HashMap<String, Found>,
}

/// The full key: the job's own key and what the run's manifest says of where it ran.
pub fn full_key(
    job_key: &str,
    build: &str,
    host_fingerprint: &str,
    metrics_version: u32,
) -> String {
    let v = serde_json::json!([job_key, build, host_fingerprint, metrics_version]);
    crate::formats::sha256_hex(v.to_string().as_bytes())
}

impl ReuseIndex {
    /// Reads each run's manifest and journal; the first run listed wins a key held twice.
    pub fn load(dirs: &[PathBuf]) -> Result<ReuseIndex, StoreError> {
        let mut by_key = HashMap::new();
        for dir in dirs {
            let rd = RunDir::new(dir.clone());
            let m = rd.read_manifest()?;
            let host = m.host.fingerprint();
            for r in read_journal(&rd.journal())? {
                let (Some(key), Some(backend)) = (&r.key, &r.backend) else {
                    continue;
                };
                if r.kind != "bench" || r.status != JobStatus::Ok {
                    continue;
                }
                let build = m
                    .backends
                    .get(backend)
                    .and_then(|b| b.as_str())
                    .unwrap_or("");
                by_key
                    .entry(full_key(key, build, &host, m.metrics_version))
                    .or_insert_with(|| Found {
                        dir: dir.clone(),
                        job_id: r.id.clone(),
                    });
            }
        }
        Ok(ReuseIndex { by_key })
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    pub fn get(&self, full: &str) -> Option<&Found> {
        self.by_key.get(full)
    }
}

/// The job's own key: its resolved definition and the model's sha256.
pub fn job_key(job: &BenchJob, model_sha256: &str) -> String {
    let v = serde_json::json!({
        "backend": job.backend.name(),
        "format": job.model.format,
        "model_sha256": model_sha256,
        "scenario": job.scenario,
        "params": job.display_params,
        "runs": job.runs,
        "until_stable": job.until_stable,
        "warmup": job.warmup,
        "seed": job.seed,
    });
    crate::formats::sha256_hex(v.to_string().as_bytes())
}

/// The model's sha256 in this run: the download record's file hashes, else its local files
/// hashed (recorded, so a file is hashed once while unchanged). None when neither is known.
pub async fn model_sha256(job: &BenchJob, ctx: &StageCtx) -> Option<String> {
    if let Some(r) = super::fetched_here(ctx, &job.model.name) {
        let mut files: Vec<(String, String)> = Vec::new();
        for f in &r.files {
            files.push((f.name.clone(), f.sha256.clone()?));
        }
        files.sort();
        return Some(combine(&files));
    }
    let path = job.model.local_path()?;
    let state = ctx.fetch.state_dir.clone();
    tokio::task::spawn_blocking(move || hash_local(&path, &state))
        .await
        .ok()
        .flatten()
}

fn combine(files: &[(String, String)]) -> String {
    if let [(_, only)] = files {
        return only.clone();
    }
    let text: String = files.iter().map(|(n, h)| format!("{h}  {n}\n")).collect();
    crate::formats::sha256_hex(text.as_bytes())
}

fn hash_local(path: &Path, state: &Path) -> Option<String> {
    let store = crate::fetch::VerifiedStore::new(state);
    if path.is_file() {
        return crate::fetch::sha256_verified(&store, path)
            .ok()
            .map(|(h, _)| h);
    }
    let mut files: Vec<(String, String)> = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name()?.to_string_lossy().into_owned();
        files.push((name, crate::fetch::sha256_verified(&store, &p).ok()?.0));
    }
    (!files.is_empty()).then(|| combine(&files))
}

/// The samples `found` measured, renamed to `job_id` (its stage is the id's first part).
pub fn samples_of(found: &Found, job_id: &str) -> Result<Vec<Sample>, StoreError> {
    let rd = RunDir::new(found.dir.clone());
    let stage = job_id.split('/').next().unwrap_or_default().to_string();
    Ok(read_samples(&rd.samples())?
        .into_iter()
        .filter(|s| s.job_id == found.job_id)
        .map(|mut s| {
            s.job_id = job_id.to_string();
            s.stage = stage.clone();
            s
        })
        .collect())
}
