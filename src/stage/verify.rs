//! Verify stage: checks a model's local files before any bench job uses them: the format's
//! structure (GGUF header and layout, never trusting the file) and the pinned sha256 (streamed,
//! constant memory). What it learns about the model is stored in the run directory for the
//! report (`model-<name>.json`).

use super::{StageCtx, StageError, StageResult};
use crate::formats::{gguf, mlx, safetensors};
use crate::plan::Model;
use crate::results::{atomic_write, ModelInfo};
use crate::spec::ModelFormat;
use std::path::Path;

pub async fn run(model: &Model, ctx: &StageCtx) -> StageResult {
    let model = super::resolve_model(model, ctx).await?;
    let store = crate::fetch::VerifiedStore::new(&ctx.fetch.state_dir);
    let Some(path) = model.local_path() else {
        return Err(StageError::Model(format!(
            "model `{}`: no local file to verify (its source is not a path)",
            model.name
        )));
    };
    let model = model.clone();
    let out = ctx.run_dir.root.join(format!("model-{}.json", model.name));
    let (cache, fingerprint) = (ctx.fetch.state_dir.clone(), ctx.host_fingerprint.clone());
    tokio::task::spawn_blocking(move || {
        let mut info = verify_model_with(&model, &path, Some(&store)).map_err(StageError::Model)?;
        // The roofline's bandwidth, over the weights' size (cached per host and size).
        if let Some(w) = info.weight_bytes_per_token {
            let memory = crate::results::host_info().memory_bytes;
            info.bandwidth = Some(crate::roofline::host_bandwidth(
                &cache,
                &fingerprint,
                memory,
                w,
            ));
        }
        let text =
            serde_json::to_string_pretty(&info).map_err(|e| StageError::Model(e.to_string()))?;
        atomic_write(&out, crate::redact::json_line(&text).as_bytes())?;
        Ok(Some(describe(&info)))
    })
    .await
    .map_err(|e| StageError::Task(format!("verify task failed: {e}")))?
}

/// A SafeTensors or MLX directory's bytes per generated token for the roofline, from the tensor
/// headers (already verified) and config.json: every tensor as stored (an MLX model's packed
/// weights, scales and biases included), except that with a separate `lm_head` the token
/// embeddings are only gathered; their floating-point part, which a backend's `dtype` casts; and
/// K and V per position (f16) from the layer, KV-head and head sizes. Left unset when the
/// headers or the config do not say.
fn per_token_bytes(dir: &Path, info: &mut ModelInfo) {
    let Ok((_, tensors)) = safetensors::verify_dir_tensors(dir) else {
        return;
    };
    let untied = tensors.iter().any(|t| t.name.ends_with("lm_head.weight"));
    let gathered = |name: &str| {
        untied
            && [
                "embed_tokens.weight",
                "embed_tokens.scales",
                "embed_tokens.biases",
            ]
            .iter()
            .any(|s| name.ends_with(s))
    };
    let read = tensors.iter().filter(|t| !gathered(&t.name));
    let (mut bytes, mut float) = (
        0u64,
        crate::results::FloatWeights {
            params: 0,
            bytes: 0,
        },
    );
    for t in read {
        let Some(b) = safetensors::tensor_bytes(t) else {
            return;
        };
        bytes = bytes.saturating_add(b);
        if safetensors::is_float(&t.dtype) {
            float.params = float.params.saturating_add(t.shape.iter().product::<u64>());
            float.bytes = float.bytes.saturating_add(b);
        }
    }
    if bytes == 0 {
        return;
    }
    info.weight_bytes_per_token = Some(bytes);
    info.float_weights_per_token = Some(float);
    let config: Option<serde_json::Value> = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(c) = config else {
        return;
    };
    let get = |k: &str| c.get(k).and_then(serde_json::Value::as_u64);
    let (Some(layers), Some(heads), Some(hidden)) = (
        get("num_hidden_layers"),
        get("num_attention_heads"),
        get("hidden_size"),
    ) else {
        return;
    };
    let kv_heads = get("num_key_value_heads").unwrap_or(heads);
    let head_dim = get("head_dim").unwrap_or(hidden / heads.max(1));
    info.kv_bytes_per_position = layers
        .checked_mul(kv_heads)
        .and_then(|x| x.checked_mul(head_dim))
        .and_then(|x| x.checked_mul(2 * 2));
}

pub fn describe(i: &ModelInfo) -> String {
    let mut parts = vec![format!("{} ({} bytes)", i.path, i.file_size)];
    if let Some(a) = &i.architecture {
        parts.push(a.clone());
    }
    if let Some(p) = i.parameters {
        parts.push(if p < 1_000_000 {
            format!("{p} parameters")
        } else {
            format!("{:.1}M parameters", p as f64 / 1e6)
        });
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
    verify_model_with(model, path, None)
}

/// [`verify_model`], taking hashes from (and recording them in) `store` when given: a file
/// unchanged since it was last hashed is not read again.
///
/// Long on purpose: one branch per model format, each reading what the report shows about it.
pub fn verify_model_with(
    model: &Model,
    path: &Path,
    store: Option<&crate::fetch::VerifiedStore>,
) -> Result<ModelInfo, String> {
    let hash = |p: &Path| -> std::io::Result<String> {
        match store {
            Some(s) => crate::fetch::sha256_verified(s, p).map(|(h, _)| h),
            None => crate::formats::sha256_file(p),
        }
    };
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
        weight_bytes_per_token: None,
        float_weights_per_token: None,
        kv_bytes_per_position: None,
        bandwidth: None,
        sha256: None,
        warnings: Vec::new(),
    };
    if meta.is_dir() {
        // A model directory's size is its files' (hub snapshots are links to blobs: followed).
        info.file_size = std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| std::fs::metadata(e.path()).ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
    }
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
        info.weight_bytes_per_token = Some(s.weight_bytes_per_token).filter(|w| *w > 0);
        info.kv_bytes_per_position = s.kv_bytes_per_position;
        info.warnings = s.warnings;
    }
    if model.format == ModelFormat::Mlx {
        if !meta.is_dir() {
            return Err(format!(
                "model `{name}`: {} is a file; an MLX model is a directory",
                path.display()
            ));
        }
        let s =
            mlx::verify_dir(path, model.allow_code).map_err(|e| format!("model `{name}`: {e}"))?;
        info.architecture = Some(s.model_type.clone());
        info.parameters = Some(s.parameters);
        info.tensor_count = Some(s.tensor_count);
        let dtypes: Vec<String> = s
            .dtypes
            .iter()
            .map(|(t, (n, _))| format!("{t}×{n}"))
            .collect();
        info.quantization = Some(match &s.quantization {
            Some(q) => format!("{q} ({})", dtypes.join(" ")),
            None => dtypes.join(" "),
        });
    }
    if model.format == ModelFormat::Safetensors {
        let s = if meta.is_dir() {
            safetensors::verify_dir(path)
        } else {
            safetensors::verify_file(path)
        }
        .map_err(|e| format!("model `{name}`: {}: {e}", path.display()))?;
        info.parameters = Some(s.parameters);
        info.tensor_count = Some(s.tensor_count);
        info.quantization = Some(
            s.dtypes
                .iter()
                .map(|(t, (n, _))| format!("{t}×{n}"))
                .collect::<Vec<_>>()
                .join(" "),
        )
        .filter(|q| !q.is_empty());
        if meta.is_dir() {
            let config = path.join("config.json");
            if let Ok(text) = std::fs::read_to_string(&config) {
                let v: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| format!("model `{name}`: {}: not JSON: {e}", config.display()))?;
                info.architecture = v
                    .get("architectures")
                    .and_then(|a| a.get(0))
                    .or_else(|| v.get("model_type"))
                    .and_then(|a| a.as_str())
                    .map(str::to_string);
                info.context_length = v.get("max_position_embeddings").and_then(|x| x.as_u64());
                info.vocab_size = v.get("vocab_size").and_then(|x| x.as_u64());
            }
        }
    }
    if meta.is_dir() && matches!(model.format, ModelFormat::Safetensors | ModelFormat::Mlx) {
        per_token_bytes(path, &mut info);
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let single_pin = model.file_pin(&file_name, true);
    if let Some(expected) = single_pin.filter(|_| !meta.is_dir()) {
        let actual =
            hash(path).map_err(|e| format!("model `{name}`: hashing {}: {e}", path.display()))?;
        if actual != expected {
            return Err(format!(
                "model `{name}`: sha256 mismatch for {}: expected {expected}, found {actual}",
                path.display()
            ));
        }
        info.sha256 = Some(actual);
    } else if meta.is_dir() {
        if model.sha256.is_some() {
            return Err(format!(
                "model `{name}`: a single sha256 pin needs a file, {} is a directory (pin each file: `sha256: {{file: hex}}`)",
                path.display()
            ));
        }
        for (file, expected) in &model.file_sha256 {
            let p = path.join(file);
            let actual =
                hash(&p).map_err(|e| format!("model `{name}`: hashing {}: {e}", p.display()))?;
            if &actual != expected {
                return Err(format!(
                    "model `{name}`: sha256 mismatch for {}: expected {expected}, found {actual}",
                    p.display()
                ));
            }
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SafeTensors file of the given (name, dtype, shape, bytes) tensors.
    fn safetensors_file(path: &Path, tensors: &[(&str, &str, &[u64], u64)]) {
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        for (name, dtype, shape, bytes) in tensors {
            header.insert(
                name.to_string(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
            );
            offset += bytes;
        }
        let h = serde_json::Value::Object(header).to_string();
        let mut out = (h.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(h.as_bytes());
        out.resize(out.len() + offset as usize, 0);
        std::fs::write(path, out).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_safetensors_directory_gives_its_bytes_per_token() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        safetensors_file(
            &dir.path().join("model.safetensors"),
            &[
                ("model.embed_tokens.weight", "BF16", &[10, 4], 80),
                ("lm_head.weight", "BF16", &[10, 4], 80),
                ("model.layers.0.mlp.weight", "U32", &[4, 2], 32),
            ],
        );
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 8}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut info: ModelInfo = serde_json::from_value(serde_json::json!({
            "name": "m", "path": "p", "format": "safetensors", "file_size": 0,
            "architecture": null, "parameters": null, "quantization": null,
            "context_length": null, "vocab_size": null, "tensor_count": null,
            "sha256": null, "warnings": []
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        per_token_bytes(dir.path(), &mut info);
        // lm_head is separate, so the embeddings are gathered, not read: 80 + 32 bytes.
        assert_eq!(info.weight_bytes_per_token, Some(112));
        assert_eq!(
            info.float_weights_per_token,
            Some(crate::results::FloatWeights {
                params: 40,
                bytes: 80
            })
        );
        // K and V: 2 layers × 2 KV heads × head size 8/4 × 2 × 2 bytes.
        assert_eq!(info.kv_bytes_per_position, Some(32));
    }
}
