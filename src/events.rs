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
        /// Repetitions (warmups included) the run's bench jobs plan: the run's ETA counts them.
        total_reps: u64,
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
        /// The job's planned measured repetitions (0 for a server job, whose samples are
        /// requests).
        runs: u32,
        /// The sample's primary figure, e.g. ("tok/s", 82.1): tg, else pp, else end-to-end ms.
        value: Option<(&'static str, f64)>,
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
