//! Analyze stage: statistics over `samples.jsonl`, written as `summary.parquet` and `summary.csv`.

use super::StageCtx;
use crate::analyze::{analyze, write_summary};
use crate::results::read_samples;

pub async fn run(ctx: &StageCtx) -> Result<Option<String>, String> {
    let dir = ctx.run_dir.clone();
    tokio::task::spawn_blocking(move || {
        let samples = read_samples(&dir.samples()).map_err(|e| e.to_string())?;
        let a = analyze(&samples).map_err(|e| e.to_string())?;
        write_summary(&a, &dir.summary_parquet(), &dir.summary_csv()).map_err(|e| e.to_string())?;
        Ok(Some(format!(
            "{} jobs, {} warnings",
            a.jobs.len(),
            a.warnings.len()
        )))
    })
    .await
    .map_err(|e| format!("analysis task failed: {e}"))?
}
