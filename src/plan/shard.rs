//! `--shard K/N`: one share of a plan's bench jobs, for running a pipeline across machines
//! through a scheduler people already have (Slurm arrays, Kubernetes Indexed Jobs, CI
//! matrices); `minerva merge` puts the shards back together.
//!
//! The partition is deterministic (it depends on the plan alone), disjoint and covering, and
//! balanced by an estimated cost: the longest-processing-time-first rule over each bench job's
//! tokens × repetitions, ties broken by job id. A shard keeps its bench jobs, the download and
//! verify jobs they need, and the analyze and report jobs, which then run over the shard.

use super::{JobKind, Plan};
use crate::backend::BenchJob;
pub use crate::results::ShardInfo;
use std::collections::BTreeSet;

/// `K/N` as typed: shard K (from 1) of N.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSpec {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for ShardSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}`: expected K/N with 1 ≤ K ≤ N, e.g. 2/3");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(ShardSpec { index, count })
    }
}

impl std::fmt::Display for ShardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// A bench job's estimated cost, for balancing only: (prompt + depth + output tokens) ×
/// (repetitions + warmups). A server job's repetitions are its load's `requests` when set. A
/// text prompt counts 4 characters a token. Never shown as a measurement.
pub fn job_cost(b: &BenchJob) -> u64 {
    let sc = &b.scenario;
    let prompt = sc.prompt_tokens.unwrap_or_else(|| {
        let chars =
            sc.prompt.as_deref().map_or(0, str::len) + sc.system.as_deref().map_or(0, str::len);
        (chars as u64).div_ceil(4)
    });
    let tokens = prompt + sc.depth.unwrap_or(0) + sc.max_tokens;
    let reps = b
        .params
        .get("load")
        .and_then(|l| l.get("requests"))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| u64::from(b.until_stable.map_or(b.runs, |u| u.max)));
    tokens.max(1).saturating_mul(reps + u64::from(b.warmup))
}

/// The hash of the whole plan, as shards compare it: the resolved pipeline without the
/// pipeline file's path (shards may run from different checkouts) and without any shard.
pub fn full_plan_sha256(plan: &Plan) -> String {
    let mut v = plan.resolved_json();
    if let Some(m) = v.as_object_mut() {
        m.remove("pipeline_path");
        m.remove("shard");
    }
    crate::formats::sha256_hex(&serde_json::to_vec(&v).unwrap_or_default())
}

/// The plan's bench jobs (indices into `plan.jobs`) split into `n` shards: the costliest job
/// first, each to the shard with the least cost so far (the lowest-numbered among equals);
/// equal costs go in job-id order. Shard k (from 0) is `result[k]`, in plan order.
pub fn partition(plan: &Plan, n: u32) -> Vec<Vec<usize>> {
    let mut bench: Vec<(u64, &str, usize)> = plan
        .jobs
        .iter()
        .enumerate()
        .filter_map(|(i, j)| match &j.kind {
            JobKind::Bench(b) => Some((job_cost(b), j.id.as_str(), i)),
            _ => None,
        })
        .collect();
    bench.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let n = n.max(1) as usize;
    let mut shards: Vec<(u64, Vec<usize>)> = vec![(0, Vec::new()); n];
    for (cost, _, i) in bench {
        let k = (0..n)
            .min_by_key(|k| (shards[*k].0, *k))
            .unwrap_or_default();
        shards[k].0 = shards[k].0.saturating_add(cost);
        shards[k].1.push(i);
    }
    shards
        .into_iter()
        .map(|(_, mut v)| {
            v.sort_unstable();
            v
        })
        .collect()
}

/// Why a plan cannot be cut as asked.
#[derive(Debug, thiserror::Error)]
#[error("--shard {spec}: {reason}")]
pub struct ShardError {
    pub spec: String,
    pub reason: String,
}

impl Plan {
    /// This plan cut down to shard `spec`: its bench jobs, the jobs they need, the analyze and
    /// report jobs, and (in shard 1 only) any job no bench job needs (a download-only stage).
    pub fn shard(mut self, spec: ShardSpec) -> Result<Plan, ShardError> {
        let total = self.bench_jobs().count();
        if total == 0 {
            return Err(ShardError {
                spec: spec.to_string(),
                reason: "the pipeline has no bench jobs to share out".into(),
            });
        }
        if spec.count as usize > total {
            return Err(ShardError {
                spec: spec.to_string(),
                reason: format!(
                    "the pipeline has {total} bench job{}, so at most {total} shard{}",
                    if total == 1 { "" } else { "s" },
                    if total == 1 { "" } else { "s" }
                ),
            });
        }
        let plan_sha256 = full_plan_sha256(&self);
        let plan_cost: u64 = self.bench_jobs().map(|(_, b)| job_cost(b)).sum();
        let mine = partition(&self, spec.count).swap_remove(spec.index as usize - 1);
        let cost = mine
            .iter()
            .filter_map(|i| match &self.jobs[*i].kind {
                JobKind::Bench(b) => Some(job_cost(b)),
                _ => None,
            })
            .sum();

        // What the bench jobs of the whole plan need, and what this shard's need.
        let closure = |roots: &[usize]| {
            let mut seen = BTreeSet::new();
            let mut stack = roots.to_vec();
            while let Some(i) = stack.pop() {
                if seen.insert(i) {
                    stack.extend(self.jobs[i].deps.iter().copied());
                }
            }
            seen
        };
        let all_bench: Vec<usize> = (0..self.jobs.len())
            .filter(|i| matches!(self.jobs[*i].kind, JobKind::Bench(_)))
            .collect();
        let needed_by_any = closure(&all_bench);
        let mut keep = closure(&mine);
        for (i, j) in self.jobs.iter().enumerate() {
            let after_bench = matches!(j.kind, JobKind::Analyze | JobKind::Report { .. });
            if after_bench || (spec.index == 1 && !needed_by_any.contains(&i)) {
                keep.insert(i);
            }
        }

        let mut new_index = vec![None; self.jobs.len()];
        for (n, i) in keep.iter().enumerate() {
            new_index[*i] = Some(n);
        }
        let jobs = std::mem::take(&mut self.jobs);
        self.jobs = jobs
            .into_iter()
            .enumerate()
            .filter(|(i, _)| new_index[*i].is_some())
            .map(|(_, mut j)| {
                j.deps = j.deps.iter().filter_map(|d| new_index[*d]).collect();
                j
            })
            .collect();
        for st in &mut self.stages {
            st.jobs = st.jobs.iter().filter_map(|j| new_index[*j]).collect();
        }
        self.shard = Some(ShardInfo {
            index: spec.index,
            count: spec.count,
            plan_sha256,
            plan_bench_jobs: total,
            bench_jobs: mine.len(),
            plan_cost,
            cost,
        });
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{build_plan, PlanOptions};
    use std::path::Path;

    fn plan(path: &str) -> Plan {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let opts = PlanOptions {
            env: Some(Default::default()),
            ..Default::default()
        };
        build_plan(&root.join(path), &opts).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// Every shipped pipeline with bench jobs, and the simulated fixture (6 jobs).
    fn pipelines() -> Vec<(String, Plan)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(root.join("pipelines"))
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| format!("pipelines/{}", e.file_name().to_string_lossy()))
            .filter(|n| n.ends_with(".yaml"))
            .collect();
        names.sort();
        names.push("tests/fixtures/pipelines/valid/simulated.yaml".into());
        names
            .into_iter()
            .map(|n| {
                let p = plan(&n);
                (n, p)
            })
            .filter(|(_, p)| p.bench_jobs().count() > 0)
            .collect()
    }

    #[test]
    fn shard_specs_parse_and_refuse_nonsense() {
        let s: ShardSpec = "2/3".parse().unwrap_or_else(|e: String| panic!("{e}"));
        assert_eq!((s.index, s.count), (2, 3));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0", "-1/2", ""] {
            assert!(bad.parse::<ShardSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn shards_cover_every_job_once_are_stable_and_balanced() {
        let all = pipelines();
        assert!(all.len() >= 4, "{} pipelines with bench jobs", all.len());
        for (name, p) in &all {
            let bench: Vec<usize> = (0..p.jobs.len())
                .filter(|i| matches!(p.jobs[*i].kind, JobKind::Bench(_)))
                .collect();
            for n in 1..=7u32 {
                let parts = partition(p, n);
                assert_eq!(parts.len(), n as usize);
                let mut covered: Vec<usize> = parts.iter().flatten().copied().collect();
                covered.sort_unstable();
                assert_eq!(covered, bench, "{name} N={n}: each bench job exactly once");
                // The same plan, built again, cuts the same way.
                assert_eq!(parts, partition(&plan(name), n), "{name} N={n}: stable");
                if n as usize > bench.len() {
                    continue;
                }
                let costs: Vec<u64> = parts
                    .iter()
                    .map(|s| {
                        s.iter()
                            .map(|i| match &p.jobs[*i].kind {
                                JobKind::Bench(b) => job_cost(b),
                                _ => 0,
                            })
                            .sum()
                    })
                    .collect();
                let mean = costs.iter().sum::<u64>() as f64 / f64::from(n);
                let max = *costs.iter().max().unwrap_or(&0) as f64;
                // The costliest job alone may exceed 1.5× the mean; then it is a shard of its own.
                let biggest = bench
                    .iter()
                    .map(|i| match &p.jobs[*i].kind {
                        JobKind::Bench(b) => job_cost(b),
                        _ => 0,
                    })
                    .max()
                    .unwrap_or(0) as f64;
                eprintln!("{name} N={n}: largest/mean {:.3}", max / mean.max(1.0));
                assert!(
                    max <= 1.5 * mean || max == biggest,
                    "{name} N={n}: largest shard {max} against a mean of {mean:.0} ({costs:?})"
                );
            }
        }
    }

    #[test]
    fn a_shard_keeps_what_its_jobs_need_and_the_analysis() {
        let whole = plan("tests/fixtures/pipelines/valid/simulated.yaml");
        let hash = full_plan_sha256(&whole);
        let mut ids = Vec::new();
        for k in 1..=3 {
            let p = whole
                .clone()
                .shard(ShardSpec { index: k, count: 3 })
                .unwrap_or_else(|e| panic!("{e}"));
            let info = p.shard.clone().unwrap_or_else(|| panic!("no shard info"));
            assert_eq!(info.plan_sha256, hash);
            assert_eq!(info.plan_bench_jobs, 6);
            // Download, verify, analyze and report are in every shard; deps point inside it.
            for kind in ["download", "verify", "analyze", "report"] {
                assert!(
                    p.jobs
                        .iter()
                        .any(|j| serde_json::to_value(&j.kind).is_ok_and(|v| v["kind"] == kind)),
                    "shard {k} lacks {kind}"
                );
            }
            for j in &p.jobs {
                assert!(j.deps.iter().all(|d| *d < p.jobs.len()));
            }
            ids.extend(p.bench_jobs().map(|(j, _)| j.id.clone()));
        }
        ids.sort();
        let mut all: Vec<String> = whole.bench_jobs().map(|(j, _)| j.id.clone()).collect();
        all.sort();
        assert_eq!(ids, all);
        let err = whole
            .shard(ShardSpec { index: 7, count: 7 })
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("--shard 7/7: the pipeline has 6 bench jobs, so at most 6 shards")
        );
    }
}
