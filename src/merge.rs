//! `minerva merge RUN_DIR... --out DIR`: the run directories of one pipeline's shards (`run
//! --shard K/N`) joined into one run. Every shard must come from the same whole plan (its hash)
//! and shard count, once each; the merged run holds the union of their raw samples, so its
//! analysis and percentiles are exact, and its manifest keeps each shard's host and labels.

use crate::results::{Manifest, Merged, MergedShard, RunDir, RunStatus, ShardInfo, StoreError};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// Inputs that do not make one whole (exit 2).
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Render(#[from] crate::stage::RenderRunError),
}

/// What a merge made.
#[derive(Debug)]
pub struct MergeOutcome {
    pub run_dir: PathBuf,
    pub report: PathBuf,
    /// "shard 2 of 3 missing" when some were (`--allow-missing`).
    pub missing: Option<String>,
    pub samples: usize,
}

/// Merges the shard runs in `inputs` into a new run directory `out`.
pub fn merge(
    inputs: &[PathBuf],
    out: &Path,
    allow_missing: bool,
    command: &str,
) -> Result<MergeOutcome, MergeError> {
    let mut shards: Vec<(PathBuf, Manifest, ShardInfo)> = Vec::new();
    // A directory named twice through links (`out/p/latest` and the run itself, from a glob)
    // is one input.
    let mut seen = std::collections::BTreeSet::new();
    for dir in inputs {
        if let Ok(real) = std::fs::canonicalize(dir) {
            if !seen.insert(real) {
                continue;
            }
        }
        let m = RunDir::new(dir.clone()).read_manifest().map_err(|e| {
            MergeError::Input(format!("{}: not a run directory: {e}", dir.display()))
        })?;
        let Some(info) = m.shard.clone() else {
            return Err(MergeError::Input(format!(
                "{}: not a shard (it was not run with --shard K/N)",
                dir.display()
            )));
        };
        shards.push((dir.clone(), m, info));
    }
    let (first_dir, first, first_info) = &shards[0];
    for (dir, m, info) in &shards[1..] {
        if info.count != first_info.count {
            return Err(MergeError::Input(format!(
                "{}: shard {}/{}, but {} is shard {}/{}: shards merge only within one shard count",
                dir.display(),
                info.index,
                info.count,
                first_dir.display(),
                first_info.index,
                first_info.count
            )));
        }
        if info.plan_sha256 != first_info.plan_sha256 {
            return Err(MergeError::Input(format!(
                "{} (shard {}/{}): cut from another plan (plan sha256 {}…, {} has {}…): shards merge only from the same pipeline file and --set values",
                dir.display(),
                info.index,
                info.count,
                &info.plan_sha256[..12.min(info.plan_sha256.len())],
                first_dir.display(),
                &first_info.plan_sha256[..12.min(first_info.plan_sha256.len())]
            )));
        }
        if m.metrics_version != first.metrics_version {
            return Err(MergeError::Input(format!(
                "{}: metric definitions version {}, but {} has {}",
                dir.display(),
                m.metrics_version,
                first_dir.display(),
                first.metrics_version
            )));
        }
    }
    let count = first_info.count;
    let mut by_index: BTreeMap<u32, usize> = BTreeMap::new();
    for (i, (dir, _, info)) in shards.iter().enumerate() {
        if let Some(j) = by_index.insert(info.index, i) {
            return Err(MergeError::Input(format!(
                "shard {}/{count} given twice: {} and {}",
                info.index,
                shards[j].0.display(),
                dir.display()
            )));
        }
    }
    let missing: Vec<u32> = (1..=count).filter(|k| !by_index.contains_key(k)).collect();
    if !missing.is_empty() && !allow_missing {
        let list: Vec<String> = missing.iter().map(|k| format!("{k}/{count}")).collect();
        return Err(MergeError::Input(format!(
            "shard{} {} missing: give {} run director{}, or --allow-missing for a PARTIAL merge",
            if missing.len() == 1 { "" } else { "s" },
            list.join(", "),
            if missing.len() == 1 { "its" } else { "their" },
            if missing.len() == 1 { "y" } else { "ies" }
        )));
    }
    let ordered: Vec<&(PathBuf, Manifest, ShardInfo)> =
        by_index.values().map(|i| &shards[*i]).collect();

    let rd = RunDir::new(out.to_path_buf());
    if rd.manifest().exists() {
        return Err(MergeError::Input(format!(
            "--out {}: it holds a run already; choose a new directory",
            out.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|source| StoreError::Write {
        path: out.to_path_buf(),
        source,
    })?;

    // The raw samples and the journals, shard after shard.
    let samples = concat(
        ordered
            .iter()
            .map(|(d, _, _)| RunDir::new(d.clone()).samples()),
        &rd.samples(),
    )?;
    concat(
        ordered
            .iter()
            .map(|(d, _, _)| RunDir::new(d.clone()).journal()),
        &rd.journal(),
    )?;
    // What verify learned about each model (the first shard that has it).
    for (d, _, _) in &ordered {
        for file in crate::stage::model_files(&RunDir::new(d.clone())) {
            let Some(name) = file.file_name() else {
                continue;
            };
            let to = out.join(name);
            if !to.exists() {
                let bytes = std::fs::read(&file).map_err(|source| StoreError::Read {
                    path: file.clone(),
                    source,
                })?;
                crate::results::atomic_write(&to, &bytes)?;
            }
        }
    }

    let manifest = merged_manifest(&ordered, out, command, &missing);
    let missing = manifest.merged.as_ref().and_then(Merged::missing_text);
    rd.write_manifest(&manifest)?;
    // The analysis over the union, then the report.
    let all = crate::results::read_samples(&rd.samples())?;
    let analysis = crate::analyze::analyze(&all).map_err(crate::stage::RenderRunError::Analyze)?;
    crate::analyze::write_summary(&analysis, &rd.summary_parquet(), &rd.summary_csv())
        .map_err(crate::stage::RenderRunError::Analyze)?;
    crate::analyze::write_samples(&all, &rd.samples_parquet())
        .map_err(crate::stage::RenderRunError::Analyze)?;
    let report = crate::stage::render_run(&rd, None, None)?;
    Ok(MergeOutcome {
        run_dir: out.to_path_buf(),
        report,
        missing,
        samples,
    })
}

/// Concatenates text files of lines into `to` (written, fsynced, renamed); a file whose last
/// line lacks its newline gets one. Returns the lines written.
fn concat(from: impl Iterator<Item = PathBuf>, to: &Path) -> Result<usize, StoreError> {
    let dir = to.parent().unwrap_or(Path::new("."));
    let werr = |source| StoreError::Write {
        path: to.to_path_buf(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(werr)?;
    let mut lines = 0;
    let mut buf = vec![0u8; 1 << 16];
    for path in from {
        let rerr = |source| StoreError::Read {
            path: path.clone(),
            source,
        };
        // A regular file only: a FIFO or a link to /dev/zero would never end.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => {
                return Err(rerr(std::io::Error::other("not a regular file")));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(rerr(source)),
        }
        let mut file = std::fs::File::open(&path).map_err(rerr)?;
        // Streamed: a load test's samples can be large.
        let mut last = b'\n';
        loop {
            let n = std::io::Read::read(&mut file, &mut buf).map_err(rerr)?;
            if n == 0 {
                break;
            }
            lines += buf[..n].iter().filter(|b| **b == b'\n').count();
            last = buf[n - 1];
            tmp.write_all(&buf[..n]).map_err(werr)?;
        }
        if last != b'\n' {
            tmp.write_all(b"\n").map_err(werr)?;
            lines += 1;
        }
    }
    tmp.as_file().sync_all().map_err(werr)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.persist(to).map_err(|e| werr(e.error))?;
    crate::results::sync_parent(to);
    Ok(lines)
}

/// The merged run's manifest: the first shard's, with the union of what the shards ran and
/// each shard's own record (host, labels, status, jobs) under `merged`.
fn merged_manifest(
    shards: &[&(PathBuf, Manifest, ShardInfo)],
    out: &Path,
    command: &str,
    missing: &[u32],
) -> Manifest {
    let (_, first, info) = shards[0];
    let mut m = first.clone();
    m.run_id = out
        .file_name()
        .map_or_else(|| "merged".into(), |n| n.to_string_lossy().into_owned());
    m.command = command.to_string();
    m.resolved_sha256 = info.plan_sha256.clone();
    m.shard = None;
    m.labels.clear();
    // The worst status of any shard (a missing shard makes the merge PARTIAL, said apart).
    let rank = |s: RunStatus| match s {
        RunStatus::Complete => 0,
        RunStatus::Running => 1,
        RunStatus::Interrupted => 2,
        RunStatus::Failed => 3,
    };
    m.status = shards
        .iter()
        .map(|(_, s, _)| s.status)
        .max_by_key(|s| rank(*s))
        .unwrap_or(RunStatus::Complete);
    m.started_at = shards
        .iter()
        .map(|(_, s, _)| s.started_at.clone())
        .min()
        .unwrap_or_default();
    m.ended_at = shards
        .iter()
        .filter_map(|(_, s, _)| s.ended_at.clone())
        .max();
    m.runner_peak_rss_bytes = shards
        .iter()
        .filter_map(|(_, s, _)| s.runner_peak_rss_bytes)
        .max();
    m.jobs.clear();
    m.bench_jobs.clear();
    m.resumes.clear();
    m.reuse_from.clear();
    let mut backends = serde_json::Map::new();
    // Each stage's jobs: the union over the shards, in shard order.
    let mut stage_jobs: BTreeMap<usize, Vec<serde_json::Value>> = BTreeMap::new();
    for (_, s, _) in shards {
        for j in &s.jobs {
            if !m.jobs.iter().any(|k| k.id == j.id) {
                m.jobs.push(j.clone());
            }
        }
        m.bench_jobs.extend(s.bench_jobs.iter().cloned());
        m.resumes.extend(s.resumes.iter().cloned());
        m.reuse_from.extend(s.reuse_from.iter().cloned());
        for (k, v) in &s.models {
            m.models.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if let Some(b) = s.backends.as_object() {
            for (k, v) in b {
                backends.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        for (i, st) in s.pipeline["stages"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let acc = stage_jobs.entry(i).or_default();
            for j in st["jobs"].as_array().into_iter().flatten() {
                if !acc.contains(j) {
                    acc.push(j.clone());
                }
            }
        }
    }
    m.backends = serde_json::Value::Object(backends);
    if let Some(p) = m.pipeline.as_object_mut() {
        p.remove("shard");
    }
    if let Some(stages) = m.pipeline["stages"].as_array_mut() {
        for (i, st) in stages.iter_mut().enumerate() {
            if let Some(jobs) = stage_jobs.remove(&i) {
                st["jobs"] = serde_json::Value::Array(jobs);
            }
        }
    }
    m.merged = Some(Merged {
        count: info.count,
        plan_sha256: info.plan_sha256.clone(),
        missing: missing.to_vec(),
        shards: shards
            .iter()
            .map(|(dir, s, i)| MergedShard {
                index: i.index,
                run_id: s.run_id.clone(),
                dir: dir.display().to_string(),
                status: s.status,
                host: s.host.clone(),
                labels: s.labels.clone(),
                bench_jobs: s.bench_jobs.clone(),
            })
            .collect(),
    });
    m
}
