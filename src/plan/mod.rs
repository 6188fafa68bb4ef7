//! Plan: the validated, resolved pipeline. Matrix expanded into jobs, references checked, the
//! stage DAG checked for cycles. Nothing past this module sees an `Option` from the YAML.

mod access;
mod build;
mod dag;
mod diag;
mod grants;
mod shard;
mod template;

pub use access::url_host;
pub use build::{build_plan, param_string, PlanError, PlanOptions, MAX_JOBS};
pub use dag::find_cycle;
pub use diag::{Diagnostic, Diags};
pub use grants::{config_path, Grants, GrantsError};
pub use shard::{full_plan_sha256, job_cost, partition, ShardError, ShardInfo, ShardSpec};
pub use template::{
    is_secret_name, render_bounded, sandboxed_env, scalar_from_str, BoundedWriter, Redactor,
    REDACTED,
};

pub use crate::backend::BenchJob;
pub use crate::job::{Model, Scenario};

use crate::spec::StageKind;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum JobKind {
    Download { model: Model },
    Verify { model: Model },
    Bench(Box<BenchJob>),
    Analyze,
    Report { template: Option<PathBuf> },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub stage: usize,
    pub kind: JobKind,
    /// Indices of the jobs that must succeed first.
    pub deps: Vec<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub kind: StageKind,
    pub needs: Vec<usize>,
    pub jobs: Vec<usize>,
    /// Bench stages: runs, warmup, seed and timeout, as resolved.
    pub settings: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub name: String,
    pub description: Option<String>,
    pub pipeline_path: PathBuf,
    /// sha256 of the pipeline file's bytes.
    pub pipeline_sha256: String,
    /// The `--set` overrides, as typed (secrets redacted).
    pub overrides: Vec<String>,
    /// Variables after overrides and templating (secrets redacted).
    pub vars: BTreeMap<String, Value>,
    pub models: Vec<Model>,
    pub scenarios: Vec<Scenario>,
    pub stages: Vec<Stage>,
    pub jobs: Vec<Job>,
    pub baseline: Option<String>,
    /// `agreement: { min_prefix }`: the output-agreement gate (None: shown, not judged).
    #[serde(default)]
    pub agreement_min_prefix: Option<usize>,
    /// What the pipeline reaches beyond the project (all of it granted or harmless).
    #[serde(default)]
    pub touches: Touches,
    /// `--shard K/N`: which share of the whole plan this is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardInfo>,
    #[serde(skip)]
    pub redactor: Redactor,
}

/// What a pipeline touches beyond the project, for a person to review before running it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Touches {
    /// Environment variables it reads (each one granted).
    pub env: BTreeSet<String>,
    /// Paths outside the project it reads (each one granted).
    pub paths: BTreeSet<String>,
    /// Hosts it contacts (`scheme://host[:port]`).
    pub hosts: BTreeSet<String>,
    /// Commands it runs.
    pub commands: Vec<String>,
}

impl Plan {
    /// The resolved pipeline as it may be echoed: secrets redacted everywhere.
    pub fn resolved_json(&self) -> Value {
        let mut v = serde_json::json!({
            "name": self.name,
            "description": self.description,
            "pipeline_path": self.pipeline_path,
            "pipeline_sha256": self.pipeline_sha256,
            "overrides": self.overrides,
            "vars": self.vars,
            "models": self.models,
            "scenarios": self.scenarios,
            "baseline": self.baseline,
            "touches": self.touches,
            "agreement": self.agreement_min_prefix.map(|n| serde_json::json!({ "min_prefix": n })),
            "stages": self.stages.iter().map(|s| serde_json::json!({
                "name": s.name,
                "kind": s.kind,
                "settings": s.settings,
                "needs": s.needs.iter().map(|n| self.stages[*n].name.clone()).collect::<Vec<_>>(),
                "jobs": s.jobs.iter().map(|j| self.jobs[*j].id.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        if let Some(shard) = &self.shard {
            v["shard"] = serde_json::json!(shard);
        }
        v = self.redactor.redact_value(&v);
        v
    }

    pub fn bench_jobs(&self) -> impl Iterator<Item = (&Job, &BenchJob)> {
        self.jobs.iter().filter_map(|j| match &j.kind {
            JobKind::Bench(b) => Some((j, b.as_ref())),
            _ => None,
        })
    }
}
