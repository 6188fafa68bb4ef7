//! Download stage: makes each model's files present locally and verified (see `crate::fetch`),
//! and records where they are (`download-<model>.json`) for the stages after it. A model with a
//! `convert` source is made here from another model of the pipeline (see `crate::convert`).

use super::{StageCtx, StageError, StageResult};
use crate::fetch::FetchedModel;
use crate::plan::Model;
use crate::results::atomic_write;
use crate::spec::SourceSpec;

pub async fn run(model: &Model, ctx: &StageCtx) -> StageResult {
    let fetched = match model.sources.as_slice() {
        [SourceSpec::Convert { from, dtype }] => {
            convert(model, from, dtype.as_deref(), ctx).await?
        }
        _ => crate::fetch::fetch_model(model, &ctx.fetch).await?,
    };
    let out = ctx
        .run_dir
        .root
        .join(format!("download-{}.json", model.name));
    let text =
        serde_json::to_string_pretty(&fetched).map_err(|e| StageError::Model(e.to_string()))?;
    // The file is for people and for `minerva report` (redacted); the stages after this one
    // use the record kept in memory, whose paths may hold a granted value.
    atomic_write(&out, crate::redact::json_line(&text).as_bytes())?;
    let describe = fetched.describe();
    if let Ok(mut m) = ctx.fetched.lock() {
        m.insert(model.name.clone(), fetched);
    }
    Ok(Some(describe))
}

/// Makes (or reuses) the SafeTensors copy of the GGUF model `from`: reused when the models
/// directory holds a conversion of the same source file (by sha256) in the same dtype.
async fn convert(
    model: &Model,
    from: &str,
    dtype: Option<&str>,
    ctx: &StageCtx,
) -> Result<FetchedModel, StageError> {
    let source = ctx
        .plan
        .models
        .iter()
        .find(|m| m.name == from)
        .ok_or_else(|| StageError::Model(format!("model `{from}` is not in the pipeline")))?;
    let source = super::resolve_model(source, ctx).await?;
    let input = source
        .local_path()
        .ok_or_else(|| StageError::Model(format!("model `{from}` has no local file")))?;
    let dtype = crate::convert::parse_dtype(dtype.unwrap_or("f32")).ok_or_else(|| {
        StageError::Model(format!(
            "dtype `{}`: expected f32, bf16 or f16",
            dtype.unwrap_or("")
        ))
    })?;
    let out = crate::fetch::converted_dir(model, &ctx.fetch);
    let model = model.clone();
    let state_dir = ctx.fetch.state_dir.clone();
    tokio::task::spawn_blocking(move || -> Result<FetchedModel, String> {
        let store = crate::fetch::VerifiedStore::new(&state_dir);
        let (digest, _) = crate::fetch::sha256_verified(&store, &input)
            .map_err(|e| format!("{}: {e}", input.display()))?;
        let prov_path = out.join(crate::convert::PROVENANCE);
        if out.exists() {
            let prov: Option<serde_json::Value> = std::fs::read(&prov_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(prov) = prov else {
                return Err(format!(
                    "{} exists but is not a conversion made by minerva (no {}): move it away",
                    out.display(),
                    crate::convert::PROVENANCE
                ));
            };
            let same = prov.get("source_sha256").and_then(|v| v.as_str()) == Some(&digest)
                && prov.get("dtype").and_then(|v| v.as_str())
                    == Some(crate::convert::dtype_name(dtype));
            if same {
                return crate::fetch::converted_record(&model, &out, &prov)
                    .map_err(|e| format!("{}: {e}", out.display()));
            }
            tracing::info!(
                "{}: made from another file or dtype; converting again",
                out.display()
            );
            std::fs::remove_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        }
        crate::convert::gguf_to_safetensors(&input, &out, dtype, Some(&digest))
            .map_err(|e| e.to_string())?;
        let prov: serde_json::Value = std::fs::read(&prov_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let mut rec = crate::fetch::converted_record(&model, &out, &prov)
            .map_err(|e| format!("{}: {e}", out.display()))?;
        for f in &mut rec.files {
            f.reused = false;
        }
        Ok(rec)
    })
    .await
    .map_err(|e| StageError::Task(format!("conversion task failed: {e}")))?
    .map_err(StageError::Model)
}
