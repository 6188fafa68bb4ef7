//! What a job works on, resolved from the pipeline: a model (its sources and pins) and a
//! scenario. A leaf: the plan builds these, and fetchers, stages and backends read them.

use crate::spec::{ModelFormat, SourceSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    /// Tokens in the KV cache before the measured part (llama-bench's `-d`); absent when 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    /// A server workload: requests from a dataset or from length distributions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<crate::workload::Workload>,
}

impl Scenario {
    pub fn is_synthetic(&self) -> bool {
        self.prompt_tokens.is_some()
    }

    /// Tokens in the KV cache before the measured part (0 without `depth`).
    pub fn depth(&self) -> usize {
        self.depth.unwrap_or(0) as usize
    }
}
