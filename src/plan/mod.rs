//! Plan: the validated, resolved pipeline. Matrix expanded into jobs, references checked, the
//! stage DAG checked for cycles. Nothing past this module sees an `Option` from the YAML.

mod access;
mod build;
mod dag;
mod diag;
mod grants;
mod template;

pub use access::url_host;
pub use build::{build_plan, param_string, PlanError, PlanOptions, MAX_JOBS};
pub use dag::find_cycle;
pub use diag::{Diagnostic, Diags};
pub use grants::{config_path, Grants, GrantsError};
pub use template::{
    is_secret_name, render_bounded, sandboxed_env, scalar_from_str, BoundedWriter, Redactor,
    REDACTED,
};

use crate::backend::BackendKind;
use crate::spec::{ModelFormat, SourceSpec, StageKind};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub name: String,
    pub format: ModelFormat,
    /// Ordered fallbacks: the first that succeeds wins.
    pub sources: Vec<SourceSpec>,
    /// The pinned sha256 of a single-file model.
    pub sha256: Option<String>,
    /// Pinned sha256 per file name (multi-file models; a single file may use it too).
    #[serde(default)]
    pub file_sha256: BTreeMap<String, String>,
    /// Accept a model directory that ships code.
    #[serde(default)]
    pub allow_code: bool,
    /// Where the download stage put the model (set from its record before a stage uses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<PathBuf>,
}

impl Model {
    /// The local file or directory this model resolves to: what the download stage recorded,
    /// else the first `path` source.
    pub fn local_path(&self) -> Option<PathBuf> {
        if let Some(p) = &self.resolved {
            return Some(p.clone());
        }
        self.sources.iter().find_map(|s| match s {
            SourceSpec::Path(p) => Some(PathBuf::from(p)),
            _ => None,
        })
    }

    /// The pinned sha256 of the file `name` (a repo path or a file name): its own entry in
    /// `sha256: {file: digest}` (by path, else by file name), else, for a single-file model,
    /// the model's `sha256`.
    pub fn file_pin(&self, name: &str, single: bool) -> Option<&str> {
        let base = Path::new(name)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(name);
        self.file_sha256
            .get(name)
            .or_else(|| {
                self.file_sha256.iter().find_map(|(k, v)| {
                    (Path::new(k).file_name().and_then(|n| n.to_str()) == Some(base)).then_some(v)
                })
            })
            .map(String::as_str)
            .or(if single { self.sha256.as_deref() } else { None })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: Option<String>,
    pub prompt: Option<String>,
    pub system: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub max_tokens: u64,
    pub chat: bool,
}

impl Scenario {
    pub fn is_synthetic(&self) -> bool {
        self.prompt_tokens.is_some()
    }
}

/// One bench job: a backend running a model on a scenario with fixed params, `runs` times.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchJob {
    pub backend: BackendKind,
    pub model: Model,
    pub scenario: Scenario,
    /// Real parameter values, secrets included: sent to the worker, never written out.
    pub params: BTreeMap<String, Value>,
    /// Parameters as they may be shown (secrets redacted).
    pub display_params: BTreeMap<String, Value>,
    pub runs: u32,
    pub warmup: u32,
    pub seed: u64,
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// The stage's `unavailable: skip`: a backend this build lacks is reported, not failed.
    #[serde(default)]
    pub skip_unavailable: bool,
}

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

pub mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
