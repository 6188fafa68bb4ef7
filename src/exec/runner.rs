//! The runner: schedules jobs whose dependencies succeeded, up to `--jobs` at once, never two
//! bench jobs together (they would disturb each other's numbers). Stops on the first failure
//! unless `--keep-going`; on SIGINT/SIGTERM stops promptly and keeps what was measured.

use super::Event;
use crate::plan::{JobKind, Plan};
use crate::results::manifest_types::JobOutcome;
use crate::results::{host_info, Manifest, RunDir, RunStatus, SampleWriter, StoreError};
use crate::stage::{self, StageCtx};
use std::path::PathBuf;
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

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Running,
    Done,
    Failed(String),
    Skipped(String),
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
    // A run directory belongs to one run: appending to another run's samples would mix them.
    if root.join("samples.jsonl").exists() || root.join("manifest.json").exists() {
        return Err(StoreError::Write {
            path: root,
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a run with this id already exists; choose another --run-id",
            ),
        });
    }
    std::fs::create_dir_all(&root).map_err(|source| StoreError::Write {
        path: root.clone(),
        source,
    })?;
    let run_dir = RunDir::new(root.clone());
    let resolved = plan.resolved_json();
    let resolved_sha256 =
        crate::formats::sha256_hex(&serde_json::to_vec(&resolved).unwrap_or_default());
    let report_template = plan.jobs.iter().find_map(|j| match &j.kind {
        JobKind::Report { template } => template.clone(),
        _ => None,
    });
    let mut manifest = Manifest {
        minerva_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision: crate::GIT_REVISION.to_string(),
        run_id: run_id.clone(),
        status: RunStatus::Running,
        started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        ended_at: None,
        command: plan.redactor.redact_str(&opts.command),
        pipeline_sha256: plan.pipeline_sha256.clone(),
        resolved_sha256,
        pipeline: resolved,
        host: host_info(),
        backends: {
            let mut used: Vec<_> = plan.bench_jobs().map(|(_, b)| b.backend).collect();
            used.sort();
            used.dedup();
            let map: serde_json::Map<String, serde_json::Value> = used
                .into_iter()
                .map(|b| {
                    (
                        b.name().to_string(),
                        serde_json::Value::String(b.build_info()),
                    )
                })
                .collect();
            serde_json::Value::Object(map)
        },
        report_template: report_template.map(|p| p.display().to_string()),
        jobs: Vec::new(),
        runner_peak_rss_bytes: None,
        models: Default::default(),
    };
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

    let n = plan.jobs.len();
    let mut state = vec![State::Pending; n];
    let mut running: JoinSet<(usize, Result<Option<String>, String>, std::time::Duration)> =
        JoinSet::new();
    let mut bench_running = false;
    let mut stop_scheduling = false;
    let mut interrupted = *cancel.borrow();
    let limit = opts.jobs.max(1);
    // Analysis and reports summarise whatever was measured, failures included: they wait for
    // their dependencies to finish, not to succeed (with --keep-going; the default stops early).
    let tolerant =
        |j: usize| matches!(plan.jobs[j].kind, JobKind::Analyze | JobKind::Report { .. });

    loop {
        // A job may notice the signal (and finish) before the select below does.
        interrupted |= *cancel.borrow();
        if !stop_scheduling && !interrupted {
            // Skip what can no longer run.
            for j in 0..n {
                if state[j] != State::Pending || tolerant(j) {
                    continue;
                }
                if let Some(&bad) = plan.jobs[j]
                    .deps
                    .iter()
                    .find(|&&d| matches!(state[d], State::Failed(_) | State::Skipped(_)))
                {
                    let reason = format!("dependency `{}` did not succeed", plan.jobs[bad].id);
                    let _ = events.send(Event::JobSkipped {
                        id: plan.jobs[j].id.clone(),
                        reason: reason.clone(),
                    });
                    state[j] = State::Skipped(reason);
                }
            }
            for j in 0..n {
                if running.len() >= limit {
                    break;
                }
                let ready = if tolerant(j) {
                    plan.jobs[j]
                        .deps
                        .iter()
                        .all(|&d| !matches!(state[d], State::Pending | State::Running))
                } else {
                    plan.jobs[j].deps.iter().all(|&d| state[d] == State::Done)
                };
                if state[j] != State::Pending || !ready {
                    continue;
                }
                let is_bench = matches!(plan.jobs[j].kind, JobKind::Bench(_));
                if is_bench && bench_running {
                    continue;
                }
                bench_running |= is_bench;
                state[j] = State::Running;
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
                if matches!(plan.jobs[j].kind, JobKind::Bench(_)) {
                    bench_running = false;
                }
                let id = plan.jobs[j].id.clone();
                match result {
                    Ok(detail) => {
                        let _ = events.send(Event::JobFinished { id, ok: true, detail, elapsed });
                        state[j] = State::Done;
                    }
                    Err(message) => {
                        let _ = events.send(Event::JobFinished { id, ok: false, detail: Some(message.clone()), elapsed });
                        state[j] = State::Failed(message);
                        if !opts.keep_going {
                            stop_scheduling = true;
                        }
                    }
                }
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
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for (j, st) in state.iter_mut().enumerate() {
        let id = plan.jobs[j].id.clone();
        let (status, detail) = match st {
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
        manifest.jobs.push(JobOutcome {
            id,
            status: status.into(),
            detail,
        });
    }
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
