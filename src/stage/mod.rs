//! Stages: download, verify, bench, analyze, report. A closed set, dispatched with `match`.
//! Each job returns `Ok(detail)` (a line for the progress display) or a [`StageError`];
//! stages never print (they emit events).

mod analyze;
mod bench;
mod download;
mod report;
mod verify;

pub use crate::results::ModelInfo;
pub use report::{read_models, render_run, RenderRunError};
pub use verify::{describe as describe_model, verify_model};

use crate::events::Event;
use crate::plan::{JobKind, Model, Plan};
use crate::results::{RunDir, SampleWriter};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Mutex};

/// Why a job failed, by kind. Its text is what the progress display and the manifest show.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The download stage could not fetch a model.
    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),
    /// The run directory could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::results::StoreError),
    /// A model's files are missing or not what they should be (verify), or could not be made
    /// (a `convert` source).
    #[error("{0}")]
    Model(String),
    /// A bench job's worker failed, crashed, timed out or could not be run.
    #[error("{0}")]
    Worker(String),
    /// The analysis of the samples failed.
    #[error("{0}")]
    Analysis(String),
    /// The report could not be rendered.
    #[error(transparent)]
    Report(#[from] RenderRunError),
    /// A blocking task of the stage panicked or was cancelled.
    #[error("{0}")]
    Task(String),
}

/// What a job returns: a line of detail, or why it failed.
pub type StageResult = Result<Option<String>, StageError>;

pub struct StageCtx {
    pub plan: Arc<Plan>,
    pub run_dir: RunDir,
    pub writer: Arc<Mutex<SampleWriter>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub cancel: watch::Receiver<bool>,
    pub fetch: Arc<crate::fetch::FetchConfig>,
    /// What the download stage fetched in this run, by model (the files in the run directory
    /// are redacted copies for people).
    pub fetched: std::sync::Mutex<std::collections::HashMap<String, crate::fetch::FetchedModel>>,
}

/// The download stage's record for `model` in this run, if it ran.
pub fn fetched(run_dir: &RunDir, model: &str) -> Option<crate::fetch::FetchedModel> {
    let bytes = std::fs::read(run_dir.root.join(format!("download-{model}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// `model` with the local path it resolves to in this run: the download stage's record, else
/// a `path` source, else what an earlier download left in the cache (looked up offline).
pub async fn resolve_model(model: &Model, ctx: &StageCtx) -> Result<Model, StageError> {
    let mut m = model.clone();
    let here = ctx
        .fetched
        .lock()
        .ok()
        .and_then(|f| f.get(&model.name).cloned());
    if let Some(f) = here.or_else(|| fetched(&ctx.run_dir, &model.name)) {
        m.resolved = Some(f.path);
        return Ok(m);
    }
    if m.local_path().is_some() {
        return Ok(m);
    }
    let mut offline = (*ctx.fetch).clone();
    offline.offline = true;
    offline.bars = None;
    match crate::fetch::fetch_model(model, &Arc::new(offline)).await {
        Ok(f) => {
            m.resolved = Some(f.path);
            Ok(m)
        }
        Err(e) => Err(StageError::Model(format!(
            "{e}\n(the pipeline has no download stage before this one; add `kind: download`)"
        ))),
    }
}

pub async fn execute(job: usize, ctx: &StageCtx) -> StageResult {
    let j = &ctx.plan.jobs[job];
    match &j.kind {
        JobKind::Download { model } => download::run(model, ctx).await,
        JobKind::Verify { model } => verify::run(model, ctx).await,
        JobKind::Bench(b) => bench::run(&j.id, b, ctx).await,
        JobKind::Analyze => analyze::run(ctx).await,
        JobKind::Report { template } => report::run(ctx, template.as_deref()).await,
    }
}
