//! `minerva run --resume RUN_DIR`: what may be resumed. The pipeline must resolve to the same
//! plan (its resolved hash); a different host, backend build or metric-definitions version is
//! refused unless `--force`, and then recorded (the report says so).

use crate::plan::Plan;
use crate::results::{host_info, Manifest, RunDir, StoreError};
use serde_json::Value;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("cannot resume {dir}: {source}")]
    Store {
        dir: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("cannot resume {dir}: the pipeline resolves differently from the run's ({changed}); start a new run, or reuse its results with --reuse")]
    PipelineChanged { dir: PathBuf, changed: String },
    #[error(
        "cannot resume {dir} here: {differs}; --force resumes anyway (the report then says so)"
    )]
    Environment { dir: PathBuf, differs: String },
}

/// A run that may be resumed: its manifest, and what differs that `--force` allowed.
#[derive(Debug, Clone)]
pub struct ResumeFrom {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub forced: Vec<String>,
}

/// The sha256 of a plan's resolved pipeline, as the manifest records it.
pub fn resolved_sha256(resolved: &Value) -> String {
    crate::formats::sha256_hex(&serde_json::to_vec(resolved).unwrap_or_default())
}

/// Checks that `plan` may resume the run in `dir`.
pub fn check(plan: &Plan, dir: PathBuf, force: bool) -> Result<ResumeFrom, ResumeError> {
    // `out/p/latest-started` names the run itself: links are resolved, so the run's own
    // `latest` links point at its real directory.
    let dir = std::fs::canonicalize(&dir).map_err(|source| ResumeError::Store {
        dir: dir.clone(),
        source: StoreError::Read {
            path: dir.clone(),
            source,
        },
    })?;
    let rd = RunDir::new(dir.clone());
    let manifest = rd.read_manifest().map_err(|source| ResumeError::Store {
        dir: dir.clone(),
        source,
    })?;
    let shard = |s: &Option<crate::results::ShardInfo>| {
        s.as_ref().map(|s| format!("{}/{}", s.index, s.count))
    };
    if shard(&manifest.shard) != shard(&plan.shard) {
        return Err(ResumeError::PipelineChanged {
            dir,
            changed: match shard(&manifest.shard) {
                Some(k) => format!("the run is shard {k}: resume it with --shard {k}"),
                None => "the run is not a shard: resume it without --shard".into(),
            },
        });
    }
    let resolved = plan.resolved_json();
    if resolved_sha256(&resolved) != manifest.resolved_sha256 {
        let mut raw = Vec::new();
        diff(&manifest.pipeline, &resolved, String::new(), &mut raw);
        let mut paths = group_indexes(&raw);
        let more = paths.len().saturating_sub(8);
        paths.truncate(8);
        let mut changed = if paths.is_empty() {
            "its resolved hash differs".to_string()
        } else {
            format!("changed: {}", paths.join(", "))
        };
        if more > 0 {
            changed.push_str(&format!(" and {more} more"));
        }
        return Err(ResumeError::PipelineChanged { dir, changed });
    }
    let mut differs = Vec::new();
    let host = host_info();
    if host.fingerprint() != manifest.host.fingerprint() {
        differs.push(format!(
            "host (was {} / {}, now {} / {})",
            manifest.host.hostname, manifest.host.cpu, host.hostname, host.cpu
        ));
    }
    let mut used: Vec<_> = plan.bench_jobs().map(|(_, b)| b.backend).collect();
    used.sort();
    used.dedup();
    for b in used {
        let was = manifest.backends.get(b.name()).and_then(Value::as_str);
        let now = b.build_info();
        if was.is_some_and(|w| w != now) {
            differs.push(format!(
                "{} build (was {}, now {now})",
                b.name(),
                was.unwrap_or("")
            ));
        }
    }
    if manifest.metrics_version != crate::results::METRICS_VERSION {
        differs.push(format!(
            "metric definitions (version {} then, {} now)",
            manifest.metrics_version,
            crate::results::METRICS_VERSION
        ));
    }
    if !differs.is_empty() && !force {
        return Err(ResumeError::Environment {
            dir,
            differs: differs.join("; "),
        });
    }
    Ok(ResumeFrom {
        dir,
        manifest,
        forced: differs,
    })
}

/// Paths that differ only in their last index, once: `stages[0].jobs[*] (6)`.
fn group_indexes(paths: &[String]) -> Vec<String> {
    let mut groups: Vec<(String, usize)> = Vec::new();
    for p in paths {
        let key = match p.rfind('[') {
            Some(i) if p.ends_with(']') && p[i + 1..p.len() - 1].parse::<usize>().is_ok() => {
                format!("{}[*]", &p[..i])
            }
            _ => p.clone(),
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => groups.push((key, 1)),
        }
    }
    groups
        .into_iter()
        .map(|(k, n)| if n > 1 { format!("{k} ({n})") } else { k })
        .collect()
}

/// The JSON paths where `a` and `b` differ (`stages[0].runs`), depth first.
fn diff(a: &Value, b: &Value, at: String, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let here = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => diff(p, q, here, out),
                    _ => out.push(here),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(p, q, format!("{at}[{i}]"), out);
            }
        }
        _ if a != b => out.push(if at.is_empty() { "(root)".into() } else { at }),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_each_changed_path() {
        let a = serde_json::json!({"name": "p", "stages": [{"runs": 5}, {"kind": "report"}], "vars": {"x": 1}});
        let b = serde_json::json!({"name": "p", "stages": [{"runs": 6}, {"kind": "report"}], "vars": {"y": 1}});
        let mut out = Vec::new();
        diff(&a, &b, String::new(), &mut out);
        assert_eq!(out, vec!["stages[0].runs", "vars.x", "vars.y"]);
        let grouped = group_indexes(&[
            "stages[0].jobs[0]".into(),
            "stages[0].jobs[1]".into(),
            "vars.tpot".into(),
        ]);
        assert_eq!(grouped, vec!["stages[0].jobs[*] (2)", "vars.tpot"]);
    }
}
