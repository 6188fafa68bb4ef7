//! The runner: schedules jobs whose dependencies succeeded, up to `--jobs` at once, never two
//! bench jobs together (they would disturb each other's numbers). Stops on the first failure
//! unless `--keep-going`; on SIGINT/SIGTERM stops promptly and keeps what was measured.

use super::schedule::{Node, Scheduler, State};
use super::Event;
use crate::plan::{JobKind, Plan};
use crate::results::manifest_types::JobOutcome;
use crate::results::{host_info, Manifest, RunDir, RunStatus, SampleWriter, StoreError};
use crate::stage::{self, StageCtx};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub out_dir: PathBuf,
    pub run_id: Option<String>,
    pub jobs: usize,
    pub keep_going: bool,
    /// The command line that reproduces the run, for the manifest and the report.
    pub command: String,
    /// Where downloads go, the HF cache, offline mode.
    pub fetch: crate::fetch::FetchConfig,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_dir: PathBuf,
    pub status: RunStatus,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
    pub report: Option<PathBuf>,
}

fn new_run_id() -> String {
    format!(
        "{}-{:05}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ"),
        std::process::id() % 100_000
    )
}

pub async fn run(
    plan: Plan,
    opts: RunOptions,
    events: mpsc::UnboundedSender<Event>,
    mut cancel: watch::Receiver<bool>,
) -> Result<RunOutcome, StoreError> {
    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let root = opts.out_dir.join(&plan.name).join(&run_id);
    let run_dir = new_run_dir(&root)?;
    let mut manifest = first_manifest(&plan, &opts, &run_id);
    run_dir.write_manifest(&manifest)?;
    run_dir.mark_latest()?;
    let writer = Arc::new(Mutex::new(SampleWriter::open(&run_dir.samples())?));
    let _ = events.send(Event::RunStarted {
        run_id: run_id.clone(),
        run_dir: root.clone(),
        total_jobs: plan.jobs.len(),
    });

    let plan = Arc::new(plan);
    let ctx = Arc::new(StageCtx {
        plan: plan.clone(),
        run_dir: run_dir.clone(),
        writer,
        events: events.clone(),
        cancel: cancel.clone(),
        fetch: Arc::new(opts.fetch.clone()),
        fetched: Default::default(),
    });

    let nodes = plan
        .jobs
        .iter()
        .map(|j| Node {
            id: j.id.clone(),
            deps: j.deps.clone(),
            bench: matches!(j.kind, JobKind::Bench(_)),
            tolerant: matches!(j.kind, JobKind::Analyze | JobKind::Report { .. }),
        })
        .collect();
    let mut sched = Scheduler::new(nodes, opts.jobs, opts.keep_going);
    let mut running: JoinSet<(usize, stage::StageResult, std::time::Duration)> = JoinSet::new();
    let mut interrupted = *cancel.borrow();

    loop {
        // A job may notice the signal (and finish) before the select below does.
        interrupted |= *cancel.borrow();
        if interrupted {
            sched.stop();
        }
        for (j, reason) in sched.skip_blocked() {
            let _ = events.send(Event::JobSkipped {
                id: plan.jobs[j].id.clone(),
                reason,
            });
        }
        for j in sched.start_ready() {
            let ctx = ctx.clone();
            let _ = events.send(Event::JobStarted {
                id: plan.jobs[j].id.clone(),
                kind: plan.stages[plan.jobs[j].stage].kind,
            });
            running.spawn(async move {
                let started = Instant::now();
                let r = stage::execute(j, &ctx).await;
                (j, r, started.elapsed())
            });
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            joined = running.join_next() => {
                let Some(joined) = joined else { continue };
                let (j, result, elapsed) = match joined {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::error!("a job task failed: {e}");
                        continue;
                    }
                };
                let id = plan.jobs[j].id.clone();
                let (ok, detail) = match &result {
                    Ok(detail) => (true, detail.clone()),
                    Err(e) => (false, Some(e.to_string())),
                };
                let _ = events.send(Event::JobFinished { id, ok, detail, elapsed });
                sched.finish(j, result.map(|_| ()).map_err(|e| e.to_string()));
            }
            changed = cancel.changed(), if !interrupted => {
                if changed.is_err() || *cancel.borrow() {
                    interrupted = true;
                    let _ = events.send(Event::Interrupted);
                }
            }
        }
    }

    if !interrupted && *cancel.borrow() {
        interrupted = true;
        let _ = events.send(Event::Interrupted);
    }
    let (outcomes, failed, skipped) = job_outcomes(&plan, &sched, interrupted, &events);
    manifest.jobs = outcomes;
    let status = if interrupted {
        RunStatus::Interrupted
    } else if failed.is_empty() {
        RunStatus::Complete
    } else {
        RunStatus::Failed
    };
    manifest.status = status;
    manifest.ended_at = Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    manifest.runner_peak_rss_bytes = crate::backend::worker::peak_rss_bytes();
    // Backend builds are recorded by backends that have one; keep what the stages stored.
    if let Ok(on_disk) = run_dir.read_manifest() {
        manifest.backends = on_disk.backends;
    }
    // Where each model came from (source, resolved commit, files and hashes).
    for m in &plan.models {
        if let Some(f) = stage::fetched(&run_dir, &m.name) {
            if let Ok(v) = serde_json::to_value(&f) {
                manifest.models.insert(m.name.clone(), v);
            }
        }
    }
    run_dir.write_manifest(&manifest)?;
    let report = run_dir.report();
    Ok(RunOutcome {
        run_dir: root,
        status,
        failed,
        skipped,
        report: report.is_file().then_some(report),
    })
}

/// Creates the run directory; refuses one that already holds a run (appending to another run's
/// samples would mix them).
fn new_run_dir(root: &Path) -> Result<RunDir, StoreError> {
    if root.join("samples.jsonl").exists() || root.join("manifest.json").exists() {
        return Err(StoreError::Write {
            path: root.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a run with this id already exists; choose another --run-id",
            ),
        });
    }
    std::fs::create_dir_all(root).map_err(|source| StoreError::Write {
        path: root.to_path_buf(),
        source,
    })?;
    Ok(RunDir::new(root.to_path_buf()))
}

/// The manifest written when the run starts: what runs, where, with which builds.
fn first_manifest(plan: &Plan, opts: &RunOptions, run_id: &str) -> Manifest {
    let resolved = plan.resolved_json();
    let resolved_sha256 =
        crate::formats::sha256_hex(&serde_json::to_vec(&resolved).unwrap_or_default());
    let report_template = plan.jobs.iter().find_map(|j| match &j.kind {
        JobKind::Report { template } => template.clone(),
        _ => None,
    });
    let mut used: Vec<_> = plan.bench_jobs().map(|(_, b)| b.backend).collect();
    used.sort();
    used.dedup();
    let backends: serde_json::Map<String, serde_json::Value> = used
        .into_iter()
        .map(|b| {
            (
                b.name().to_string(),
                serde_json::Value::String(b.build_info()),
            )
        })
        .collect();
    Manifest {
        minerva_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: crate::GIT_REVISION.to_string(),
        run_id: run_id.to_string(),
        status: RunStatus::Running,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ended_at: None,
        command: plan.redactor.redact_str(&opts.command),
        pipeline_sha256: plan.pipeline_sha256.clone(),
        resolved_sha256,
        pipeline: resolved,
        host: host_info(),
        backends: serde_json::Value::Object(backends),
        report_template: report_template.map(|p| p.display().to_string()),
        jobs: Vec::new(),
        runner_peak_rss_bytes: None,
        models: Default::default(),
        metrics_version: crate::results::METRICS_VERSION,
    }
}

/// Each job's outcome for the manifest, and the ids of the failed and the skipped ones; a job
/// that never started is skipped with the reason (and an event).
fn job_outcomes(
    plan: &Plan,
    sched: &Scheduler,
    interrupted: bool,
    events: &mpsc::UnboundedSender<Event>,
) -> (Vec<JobOutcome>, Vec<String>, Vec<String>) {
    let mut outcomes = Vec::new();
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for j in 0..plan.jobs.len() {
        let id = plan.jobs[j].id.clone();
        let (status, detail) = match sched.state(j) {
            State::Done => ("ok", None),
            State::Failed(m) => {
                failed.push(id.clone());
                ("failed", Some(m.clone()))
            }
            State::Skipped(r) => {
                skipped.push(id.clone());
                ("skipped", Some(r.clone()))
            }
            State::Pending | State::Running => {
                let reason = if interrupted {
                    "not started: the run was interrupted".to_string()
                } else {
                    "not started: an earlier job failed (use --keep-going to run independent jobs)"
                        .to_string()
                };
                let _ = events.send(Event::JobSkipped {
                    id: id.clone(),
                    reason: reason.clone(),
                });
                skipped.push(id.clone());
                ("skipped", Some(reason))
            }
        };
        outcomes.push(JobOutcome {
            id,
            status: status.into(),
            detail,
        });
    }
    (outcomes, failed, skipped)
}
