//! Analyze stage: statistics over `samples.jsonl`, written as `summary.parquet` and `summary.csv`,
//! and every sample as one row of `samples.parquet`.

use super::{StageCtx, StageError, StageResult};
use crate::analyze::{analyze, write_samples, write_summary};
use crate::results::read_samples;

pub async fn run(ctx: &StageCtx) -> StageResult {
    let dir = ctx.run_dir.clone();
    tokio::task::spawn_blocking(move || {
        let samples = read_samples(&dir.samples())?;
        let a = analyze(&samples).map_err(|e| StageError::Analysis(e.to_string()))?;
        write_summary(&a, &dir.summary_parquet(), &dir.summary_csv())
            .map_err(|e| StageError::Analysis(e.to_string()))?;
        write_samples(&samples, &dir.samples_parquet())
            .map_err(|e| StageError::Analysis(e.to_string()))?;
        Ok(Some(format!(
            "{} jobs, {} warnings",
            a.jobs.len(),
            a.warnings.len()
        )))
    })
    .await
    .map_err(|e| StageError::Task(format!("analysis task failed: {e}")))?
}
