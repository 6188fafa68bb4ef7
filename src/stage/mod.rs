//! Stages: download, verify, bench, analyze, report. A closed set, dispatched with `match`.
//! Each job returns `Ok(detail)` (a line for the progress display) or a [`StageError`];
//! stages never print (they emit events).

mod analyze;
mod bench;
mod download;
mod report;
mod reuse;
mod verify;

pub use crate::results::ModelInfo;
pub use bench::kill_workers;
pub use report::{model_files, read_models, render_run, RenderRunError};
pub use reuse::ReuseIndex;
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
    /// `--reuse`: completed bench jobs of earlier runs, by key.
    pub reuse: ReuseIndex,
    /// This host's fingerprint (part of the reuse key).
    pub host_fingerprint: String,
    /// The machine-wide bench lock.
    pub bench_lock: BenchLock,
    /// What each bench job tells the journal beyond its result, by job id.
    pub notes: Mutex<std::collections::HashMap<String, BenchNote>>,
}

/// The machine-wide bench lock: two runners never measure at once.
#[derive(Debug, Clone)]
pub struct BenchLock {
    pub path: std::path::PathBuf,
    pub timeout: std::time::Duration,
    /// Fail instead of waiting (`--no-wait`).
    pub no_wait: bool,
}

/// What a bench job records in the journal beyond its result.
#[derive(Debug, Clone, Default)]
pub struct BenchNote {
    pub backend: Option<String>,
    /// [`reuse::job_key`], when the model's sha256 is known.
    pub key: Option<String>,
    pub reused_from: Option<String>,
    /// Another runner whose bench this job waited for.
    pub waited_for: Option<String>,
    /// When the bench lock was taken.
    pub measured_from: Option<String>,
}

/// The download stage's record for `model` in this run, if it ran.
pub fn fetched(run_dir: &RunDir, model: &str) -> Option<crate::fetch::FetchedModel> {
    let bytes = std::fs::read(run_dir.root.join(format!("download-{model}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The download stage's record for `model` in this run: from memory, else from its file.
fn fetched_here(ctx: &StageCtx, model: &str) -> Option<crate::fetch::FetchedModel> {
    let here = ctx.fetched.lock().ok().and_then(|f| f.get(model).cloned());
    here.or_else(|| fetched(&ctx.run_dir, model))
}

/// `model` with the local path it resolves to in this run: the download stage's record, else
/// a `path` source, else what an earlier download left in the cache (looked up offline).
pub async fn resolve_model(model: &Model, ctx: &StageCtx) -> Result<Model, StageError> {
    let mut m = model.clone();
    if let Some(f) = fetched_here(ctx, &model.name) {
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

/// Runs one job. Every kind honours cancellation: a bench job stops its worker and records
/// the interrupt; any other job (a download, a conversion, a hash) is dropped where it is
/// (its child processes are killed; a blocking hash is abandoned, and the runner exits without
/// waiting for it).
pub async fn execute(job: usize, ctx: &StageCtx) -> StageResult {
    let j = &ctx.plan.jobs[job];
    let work = async {
        match &j.kind {
            JobKind::Download { model } => download::run(model, ctx).await,
            JobKind::Verify { model } => verify::run(model, ctx).await,
            JobKind::Bench(b) => bench::run(&j.id, b, ctx).await,
            JobKind::Analyze => analyze::run(ctx).await,
            JobKind::Report { template } => report::run(ctx, template.as_deref()).await,
        }
    };
    if matches!(j.kind, JobKind::Bench(_)) {
        return work.await;
    }
    let mut cancel = ctx.cancel.clone();
    tokio::select! {
        r = work => r,
        Ok(_) = cancel.wait_for(|c| *c) => Err(StageError::Task("interrupted".into())),
    }
}
