//! The journal, `jobs.jsonl`: one line per job as it ends (appended and fsynced), so a run
//! killed at any moment still says which jobs finished. `minerva run --resume` skips the jobs
//! it records as `ok`, `--reuse` finds completed bench jobs by key, and the report counts
//! finished jobs from it (the INCOMPLETE banner).

use super::StoreError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Ok,
    Failed,
    Skipped,
}

/// One job's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    /// download, verify, bench, analyze or report.
    pub kind: String,
    pub status: JobStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub ended_at: String,
    #[serde(default)]
    pub elapsed_ms: f64,
    /// 0 for the first run, n for the n-th `--resume`.
    #[serde(default)]
    pub attempt: u32,
    /// Bench jobs: the backend's name (its build, in the manifest, is part of the reuse key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Bench jobs: sha256 of the resolved job definition and the model's sha256 (the part of
    /// the reuse key a run's manifest does not hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Bench jobs copied from another run by `--reuse`: that run's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reused_from: Option<String>,
    /// Bench jobs: other jobs of this run that ran while it measured (`--overlap`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub background: Vec<String>,
    /// Bench jobs: when the machine-wide bench lock was taken (measuring began; ms precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_from: Option<String>,
    /// Bench jobs: another runner whose bench this one waited for (the machine-wide lock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_for: Option<String>,
}

/// Appends one record with a single write and fsyncs it.
pub fn append_job(path: &Path, r: &JobRecord) -> Result<(), StoreError> {
    let err = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut line = serde_json::to_vec(r).map_err(|e| err(std::io::Error::other(e)))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    f.write_all(&line).map_err(err)?;
    f.sync_data().map_err(err)?;
    Ok(())
}

/// Every record in order; a line that is not one (torn by a kill) is skipped. Missing file:
/// none.
pub fn read_journal(path: &Path) -> Result<Vec<JobRecord>, StoreError> {
    let mut out = Vec::new();
    super::store::for_each_line(path, |n, line| {
        match serde_json::from_slice::<JobRecord>(line) {
            Ok(r) => out.push(r),
            Err(_) if line.iter().all(u8::is_ascii_whitespace) => {}
            Err(e) => tracing::warn!("{}:{n}: skipping a torn journal line ({e})", path.display()),
        }
        Ok(())
    })?;
    Ok(out)
}

/// The last record of each job (a resumed job's latest outcome wins).
pub fn last_records(records: &[JobRecord]) -> BTreeMap<String, JobRecord> {
    let mut out = BTreeMap::new();
    for r in records {
        out.insert(r.id.clone(), r.clone());
    }
    out
}
