//! Download stage: makes each model's files present locally and verified (see `crate::fetch`),
//! and records where they are (`download-<model>.json`) for the stages after it.

use super::StageCtx;
use crate::plan::Model;
use crate::results::atomic_write;

pub async fn run(model: &Model, ctx: &StageCtx) -> Result<Option<String>, String> {
    let fetched = crate::fetch::fetch_model(model, &ctx.fetch)
        .await
        .map_err(|e| e.to_string())?;
    let out = ctx
        .run_dir
        .root
        .join(format!("download-{}.json", model.name));
    let bytes = serde_json::to_vec_pretty(&fetched).map_err(|e| e.to_string())?;
    atomic_write(&out, &bytes).map_err(|e| e.to_string())?;
    Ok(Some(fetched.describe()))
}
