//! Run events, a leaf: the runner and the stages emit them; the progress display and the logs
//! consume them.

use crate::spec::StageKind;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Event {
    RunStarted {
        run_id: String,
        run_dir: PathBuf,
        total_jobs: usize,
    },
    JobStarted {
        id: String,
        kind: StageKind,
    },
    Sample {
        job_id: String,
        rep: u32,
        warmup: bool,
        ok: bool,
    },
    JobFinished {
        id: String,
        ok: bool,
        detail: Option<String>,
        elapsed: Duration,
    },
    JobSkipped {
        id: String,
        reason: String,
    },
    Interrupted,
}
