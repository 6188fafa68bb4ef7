//! Verify stage: checks a model's local files before any bench job uses them: the format's
//! structure (GGUF header and layout, never trusting the file) and the pinned sha256 (streamed,
//! constant memory). What it learns about the model is stored in the run directory for the
//! report (`model-<name>.json`).

use super::StageCtx;
use crate::formats::gguf;
use crate::plan::Model;
use crate::results::atomic_write;
use crate::spec::ModelFormat;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What the report shows about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub format: ModelFormat,
    pub file_size: u64,
    pub architecture: Option<String>,
    pub parameters: Option<u64>,
    pub quantization: Option<String>,
    pub context_length: Option<u64>,
    pub vocab_size: Option<u64>,
    pub tensor_count: Option<u64>,
    pub sha256: Option<String>,
    pub warnings: Vec<String>,
}

pub async fn run(model: &Model, ctx: &StageCtx) -> Result<Option<String>, String> {
    let Some(path) = model.local_path() else {
        return Err(format!(
            "model `{}`: no local file to verify (its source is not a path)",
            model.name
        ));
    };
    let model = model.clone();
    let out = ctx.run_dir.root.join(format!("model-{}.json", model.name));
    tokio::task::spawn_blocking(move || {
        let info = verify_model(&model, &path)?;
        let bytes = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
        atomic_write(&out, &bytes).map_err(|e| e.to_string())?;
        Ok(Some(describe(&info)))
    })
    .await
    .map_err(|e| format!("verify task failed: {e}"))?
}

pub fn describe(i: &ModelInfo) -> String {
    let mut parts = vec![format!("{} ({} bytes)", i.path, i.file_size)];
    if let Some(a) = &i.architecture {
        parts.push(a.clone());
    }
    if let Some(p) = i.parameters {
        parts.push(format!("{:.1}M parameters", p as f64 / 1e6));
    }
    if let Some(q) = &i.quantization {
        parts.push(q.clone());
    }
    if i.sha256.is_some() {
        parts.push("sha256 ok".into());
    }
    for w in &i.warnings {
        parts.push(format!("warning: {w}"));
    }
    parts.join(", ")
}

/// Checks one model; every failure names the model, the file and what was wrong.
pub fn verify_model(model: &Model, path: &Path) -> Result<ModelInfo, String> {
    let name = &model.name;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("model `{name}`: {}: {e}", path.display()))?;
    let mut info = ModelInfo {
        name: name.clone(),
        path: path.display().to_string(),
        format: model.format,
        file_size: meta.len(),
        architecture: None,
        parameters: None,
        quantization: None,
        context_length: None,
        vocab_size: None,
        tensor_count: None,
        sha256: None,
        warnings: Vec::new(),
    };
    if model.format == ModelFormat::Gguf {
        if meta.is_dir() {
            return Err(format!(
                "model `{name}`: {} is a directory, not a GGUF file",
                path.display()
            ));
        }
        let s = gguf::verify_file(path)
            .map_err(|e| format!("model `{name}`: {}: {e}", path.display()))?;
        info.architecture = s.architecture.clone();
        info.parameters = Some(s.parameters);
        info.quantization = Some(
            s.quantization
                .iter()
                .map(|(t, (n, _))| format!("{t}×{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        )
        .filter(|q| !q.is_empty());
        info.context_length = s.context_length;
        info.vocab_size = s.vocab_size;
        info.tensor_count = Some(s.tensor_count);
        info.warnings = s.warnings;
    }
    if let Some(expected) = &model.sha256 {
        if meta.is_dir() {
            return Err(format!(
                "model `{name}`: a sha256 pin needs a file, {} is a directory",
                path.display()
            ));
        }
        let actual = gguf::sha256_file(path)
            .map_err(|e| format!("model `{name}`: hashing {}: {e}", path.display()))?;
        if &actual != expected {
            return Err(format!(
                "model `{name}`: sha256 mismatch for {}: expected {expected}, found {actual}",
                path.display()
            ));
        }
        info.sha256 = Some(actual);
    }
    Ok(info)
}
