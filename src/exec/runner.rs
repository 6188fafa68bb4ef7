//! The runner: schedules jobs whose dependencies succeeded, up to `--jobs` at once, never two
//! bench jobs together and, unless `--overlap`, nothing else while a bench job runs (they would
//! disturb each other's numbers). Stops on the first failure unless `--keep-going`; on
//! SIGINT/SIGTERM/SIGHUP stops promptly and keeps what was measured.
//!
//! Crash safety: each job's outcome is appended to the journal (`jobs.jsonl`) as it ends and
//! the manifest is rewritten atomically, so a run killed at any moment says what finished.
//! `--resume` continues such a run: jobs the journal records as done are kept, the others run
//! again from their start (their earlier samples are marked superseded). `latest-started`
//! names the newest run when it starts; `latest` moves only when a run completes.

use super::resume::ResumeFrom;
use super::schedule::{Node, Scheduler, State};
use super::Event;
use crate::plan::{JobKind, Plan};
use crate::results::manifest_types::JobOutcome;
use crate::results::{
    append_job, host_info, last_records, read_journal, supersede_samples, JobRecord, JobStatus,
    Manifest, Resume, RunDir, RunStatus, SampleWriter, StoreError,
};
use crate::stage::{self, StageCtx};
use std::collections::{BTreeMap, BTreeSet};
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
    /// Where downloads go, the HF cache, offline mode, lock waits.
    pub fetch: crate::fetch::FetchConfig,
    /// Continue this run (checked by [`super::resume::check`]) instead of starting one.
    pub resume: Option<ResumeFrom>,
    /// Earlier runs whose completed bench jobs may be copied instead of measured.
    pub reuse: Vec<PathBuf>,
    /// Let downloads, conversions and hashes run while a bench job measures.
    pub overlap: bool,
    /// Fail a bench job at once when another runner holds the machine-wide bench lock.
    pub no_wait: bool,
    /// `--label KEY=VALUE`: where the run ran, for the manifest.
    pub labels: std::collections::BTreeMap<String, String>,
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The journal's time stamps: to the millisecond, so jobs can be ordered.
fn now_ms() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Long on purpose: the run's whole life (directory, journal, resume, the scheduling loop, the
/// final manifest) in one place.
pub async fn run(
    plan: Plan,
    opts: RunOptions,
    events: mpsc::UnboundedSender<Event>,
    mut cancel: watch::Receiver<bool>,
) -> Result<RunOutcome, StoreError> {
    let reuse = stage::ReuseIndex::load(&opts.reuse)?;
    // A new run, or the one being resumed.
    let root = match &opts.resume {
        Some(r) => r.dir.clone(),
        None => {
            let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
            let root = opts.out_dir.join(&plan.name).join(&run_id);
            new_run_dir(&root)?;
            root
        }
    };
    // One runner per run directory: a --resume of a run still running is refused.
    let _run_lock = crate::lock::acquire(
        &root.join(".run.lock"),
        "the run directory",
        &crate::lock::LockWait {
            holder: format!("minerva run of {}", root.display()),
            timeout: std::time::Duration::ZERO,
            no_wait: true,
        },
        None,
    )
    .await
    .map_err(|e| StoreError::Write {
        path: root.clone(),
        source: std::io::Error::other(e.to_string()),
    })?;
    // Its manifest and what is already done.
    let (mut manifest, done, attempt) = match &opts.resume {
        Some(r) => {
            let rd = RunDir::new(r.dir.clone());
            let last = last_records(&read_journal(&rd.journal())?);
            let done: BTreeSet<String> = plan
                .jobs
                .iter()
                .filter(|j| !matches!(j.kind, JobKind::Analyze | JobKind::Report { .. }))
                .filter(|j| last.get(&j.id).is_some_and(|r| r.status == JobStatus::Ok))
                .map(|j| j.id.clone())
                .collect();
            let rerun: Vec<String> = plan
                .jobs
                .iter()
                .filter(|j| !done.contains(&j.id))
                .map(|j| j.id.clone())
                .collect();
            // Samples of bench jobs that run again stay on record, marked superseded.
            let again: BTreeSet<String> = plan
                .bench_jobs()
                .map(|(j, _)| j.id.clone())
                .filter(|id| !done.contains(id))
                .collect();
            supersede_samples(&rd.samples(), &again)?;
            let mut m = r.manifest.clone();
            m.status = RunStatus::Running;
            m.ended_at = None;
            m.command = plan.redactor.redact_str(&opts.command);
            m.labels.extend(opts.labels.clone());
            m.resumes.push(Resume {
                at: now(),
                rerun,
                forced: r.forced.clone(),
            });
            let attempt = m.resumes.len() as u32;
            (m, done, attempt)
        }
        None => {
            let run_id = root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (first_manifest(&plan, &opts, &run_id), BTreeSet::new(), 0)
        }
    };
    let run_id = manifest.run_id.clone();
    let run_dir = RunDir::new(root.clone());
    manifest.reuse_from = opts.reuse.iter().map(|d| d.display().to_string()).collect();
    // Where in-process repetitions' energy comes from, or why there is none.
    let in_process = plan
        .bench_jobs()
        .any(|(_, b)| !b.backend.is_simulated() && !b.backend.sized_by_load());
    if in_process && manifest.energy.is_none() {
        manifest.energy = Some(match crate::energy::Meter::open() {
            Ok(m) => m.describe(),
            Err(why) => format!("not measured here: {why}"),
        });
    }
    run_dir.write_manifest(&manifest)?;
    run_dir.mark("latest-started")?;
    let writer = Arc::new(Mutex::new(SampleWriter::open(&run_dir.samples())?));
    let _ = events.send(Event::RunStarted {
        run_id: run_id.clone(),
        run_dir: root.clone(),
        total_jobs: plan.jobs.len(),
        total_reps: plan
            .bench_jobs()
            .filter(|(j, _)| !done.contains(&j.id))
            .map(|(_, b)| u64::from(b.runs) + u64::from(b.warmup))
            .sum(),
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
        reuse,
        host_fingerprint: manifest.host.fingerprint(),
        bench_lock: stage::BenchLock {
            path: opts.fetch.lock_dir.join("bench.lock"),
            timeout: opts.fetch.lock_timeout,
            no_wait: opts.no_wait,
        },
        notes: Default::default(),
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
    sched.set_quiet(!opts.overlap);
    for (j, job) in plan.jobs.iter().enumerate() {
        if done.contains(&job.id) {
            sched.mark_done(j);
            let _ = events.send(Event::JobSkipped {
                id: job.id.clone(),
                reason: "done before the resume; kept".into(),
            });
        }
    }
    // Outcomes of this attempt and the earlier ones, for the manifest as the run goes.
    let mut outcomes: BTreeMap<String, JobOutcome> = BTreeMap::new();
    for o in &manifest.jobs {
        if done.contains(&o.id) {
            outcomes.insert(o.id.clone(), o.clone());
        }
    }
    // Jobs running now, and what ran alongside each bench job (only with --overlap).
    let mut running_now: BTreeSet<usize> = BTreeSet::new();
    let mut background: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut running: JoinSet<(usize, stage::StageResult, std::time::Duration)> = JoinSet::new();
    let mut interrupted = *cancel.borrow();
    let mut journaled_skips: BTreeSet<usize> = BTreeSet::new();

    loop {
        // A job may notice the signal (and finish) before the select below does.
        interrupted |= *cancel.borrow();
        if interrupted {
            sched.stop();
        }
        for (j, reason) in sched.skip_blocked() {
            // In the journal at once: a report rendered later in this run counts it.
            append_job(
                &run_dir.journal(),
                &skipped_record(&plan, j, &reason, attempt),
            )?;
            journaled_skips.insert(j);
            let _ = events.send(Event::JobSkipped {
                id: plan.jobs[j].id.clone(),
                reason,
            });
        }
        for j in sched.start_ready() {
            let ctx = ctx.clone();
            let is_bench = matches!(plan.jobs[j].kind, JobKind::Bench(_));
            for others in background.values_mut() {
                others.insert(plan.jobs[j].id.clone());
            }
            if is_bench {
                let others = running_now.iter().map(|&o| plan.jobs[o].id.clone());
                background.insert(j, others.collect());
            }
            running_now.insert(j);
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
                running_now.remove(&j);
                let id = plan.jobs[j].id.clone();
                let (ok, detail) = match &result {
                    Ok(detail) => (true, detail.clone()),
                    Err(e) => (false, Some(e.to_string())),
                };
                let note = ctx.notes.lock().await.remove(&id).unwrap_or_default();
                let record = JobRecord {
                    id: id.clone(),
                    kind: plan.stages[plan.jobs[j].stage].kind.as_str().into(),
                    status: if ok { JobStatus::Ok } else { JobStatus::Failed },
                    detail: detail.clone().map(|d| plan.redactor.redact_str(&d)),
                    ended_at: now_ms(),
                    elapsed_ms: elapsed.as_secs_f64() * 1e3,
                    attempt,
                    backend: note.backend,
                    key: note.key,
                    reused_from: note.reused_from,
                    background: background.remove(&j).unwrap_or_default().into_iter().collect(),
                    waited_for: note.waited_for,
                    measured_from: note.measured_from,
                };
                // The journal first: it is what --resume and the report trust.
                append_job(&run_dir.journal(), &record)?;
                outcomes.insert(id.clone(), JobOutcome {
                    id: id.clone(),
                    status: if ok { "ok" } else { "failed" }.into(),
                    detail: record.detail.clone(),
                });
                manifest.jobs = plan
                    .jobs
                    .iter()
                    .filter_map(|j| outcomes.get(&j.id).cloned())
                    .collect();
                run_dir.write_manifest(&manifest)?;
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
    let (mut final_outcomes, failed, skipped) = job_outcomes(&plan, &sched, interrupted, &events);
    for o in final_outcomes.iter_mut() {
        // Jobs kept from before a resume keep their recorded outcome.
        if let Some(kept) = outcomes.get(&o.id) {
            *o = kept.clone();
        }
    }
    // Jobs that never started go in the journal too (an interrupt, an earlier failure).
    for (j, o) in final_outcomes.iter().enumerate() {
        if o.status == "skipped" && !journaled_skips.contains(&j) {
            let reason = o.detail.clone().unwrap_or_default();
            append_job(
                &run_dir.journal(),
                &skipped_record(&plan, j, &reason, attempt),
            )?;
        }
    }
    manifest.jobs = final_outcomes;
    let status = if interrupted {
        RunStatus::Interrupted
    } else if failed.is_empty() {
        RunStatus::Complete
    } else {
        RunStatus::Failed
    };
    manifest.status = status;
    manifest.ended_at = Some(now());
    manifest.runner_peak_rss_bytes = crate::backend::worker::peak_rss_bytes();
    // Where each model came from (source, resolved commit, files and hashes).
    for m in &plan.models {
        if let Some(f) = stage::fetched(&run_dir, &m.name) {
            if let Ok(v) = serde_json::to_value(&f) {
                manifest.models.insert(m.name.clone(), v);
            }
        }
    }
    run_dir.write_manifest(&manifest)?;
    if status == RunStatus::Complete {
        run_dir.mark("latest")?;
    }
    let report = run_dir.report();
    Ok(RunOutcome {
        run_dir: root,
        status,
        failed,
        skipped,
        report: report.is_file().then_some(report),
    })
}

/// The journal's record of a job that did not run, with the reason.
fn skipped_record(plan: &Plan, j: usize, reason: &str, attempt: u32) -> JobRecord {
    JobRecord {
        id: plan.jobs[j].id.clone(),
        kind: plan.stages[plan.jobs[j].stage].kind.as_str().into(),
        status: JobStatus::Skipped,
        detail: Some(reason.to_string()),
        ended_at: now_ms(),
        elapsed_ms: 0.0,
        attempt,
        backend: None,
        key: None,
        reused_from: None,
        background: Vec::new(),
        waited_for: None,
        measured_from: None,
    }
}

/// Creates the run directory; refuses one that already holds a run (appending to another run's
/// samples would mix them).
fn new_run_dir(root: &Path) -> Result<RunDir, StoreError> {
    // `--resume` continues a run; a new one never appends to another's files.
    if root.join("samples.jsonl").exists() || root.join("manifest.json").exists() {
        return Err(StoreError::Write {
            path: root.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "a run with this id already exists; choose another --run-id, or continue it with --resume",
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
    let resolved_sha256 = super::resume::resolved_sha256(&resolved);
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
        bench_jobs: plan.bench_jobs().map(|(j, _)| j.id.clone()).collect(),
        resumes: Vec::new(),
        reuse_from: Vec::new(),
        shard: plan.shard.clone(),
        labels: opts.labels.clone(),
        merged: None,
        energy: None,
        build: Some(crate::build_info::build()),
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
