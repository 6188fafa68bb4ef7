//! Stages: download, verify, bench, analyze, report. A closed set, dispatched with `match`.
//! Each job returns `Ok(detail)` or `Err(message)`; stages never print (they emit events).

mod analyze;
mod bench;
mod download;
mod report;
mod verify;

pub use report::{render_run, RenderRunError};
pub use verify::{describe as describe_model, verify_model, ModelInfo};

use crate::exec::Event;
use crate::plan::{JobKind, Plan};
use crate::results::{RunDir, SampleWriter};
use std::sync::Arc;
use tokio::sync::{mpsc, watch, Mutex};

pub struct StageCtx {
    pub plan: Arc<Plan>,
    pub run_dir: RunDir,
    pub writer: Arc<Mutex<SampleWriter>>,
    pub events: mpsc::UnboundedSender<Event>,
    pub cancel: watch::Receiver<bool>,
}

pub async fn execute(job: usize, ctx: &StageCtx) -> Result<Option<String>, String> {
    let j = &ctx.plan.jobs[job];
    match &j.kind {
        JobKind::Download { model } => download::run(model).await,
        JobKind::Verify { model } => verify::run(model, ctx).await,
        JobKind::Bench(b) => bench::run(&j.id, b, ctx).await,
        JobKind::Analyze => analyze::run(ctx).await,
        JobKind::Report { template } => report::run(ctx, template.as_deref()).await,
    }
}
