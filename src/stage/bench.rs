//! Bench stage: runs one bench job in a child process (`minerva worker`) and appends each sample
//! it reports to `samples.jsonl` as it arrives. A crash, a timeout or an interrupt becomes a
//! failed sample with its kind, exit status and the last lines of the worker's stderr.

use super::StageCtx;
use crate::backend::worker::WorkerRequest;
use crate::exec::Event;
use crate::plan::BenchJob;
use crate::results::{ErrorKind, Sample, SampleError};
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

const STDERR_TAIL: usize = 20;

async fn record(ctx: &StageCtx, s: &Sample) -> Result<(), String> {
    ctx.writer
        .lock()
        .await
        .append(s)
        .map_err(|e| e.to_string())?;
    let _ = ctx.events.send(Event::Sample {
        job_id: s.job_id.clone(),
        rep: s.rep,
        warmup: s.warmup,
        ok: s.error.is_none(),
    });
    Ok(())
}

fn failure(
    job_id: &str,
    job: &BenchJob,
    kind: ErrorKind,
    message: String,
    exit: Option<String>,
    tail: Vec<String>,
) -> Sample {
    let mut s = Sample::blank(job_id, job, 0, false);
    s.error = Some(SampleError {
        kind,
        message,
        exit_status: exit,
        stderr_tail: tail,
    });
    s
}

pub async fn run(job_id: &str, job: &BenchJob, ctx: &StageCtx) -> Result<Option<String>, String> {
    // A backend this build lacks: recorded as such (the report lists it), never dropped.
    if !job.backend.available() {
        let message = crate::backend::BackendError::Unavailable(job.backend).to_string();
        let s = failure(
            job_id,
            job,
            ErrorKind::Unavailable,
            message.clone(),
            None,
            Vec::new(),
        );
        record(ctx, &s).await?;
        return if job.skip_unavailable {
            Ok(Some(format!("not run: {message}")))
        } else {
            Err(message)
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find the minerva executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("worker")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a terminal's Ctrl-C reaches the runner, which stops the worker.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the worker: {e}"))?;

    let mut job = job.clone();
    job.model = super::resolve_model(&job.model, ctx).await?;
    let request = serde_json::to_vec(&WorkerRequest {
        job_id: job_id.to_string(),
        job: job.clone(),
    })
    .map_err(|e| e.to_string())?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&request)
            .await
            .map_err(|e| format!("cannot send the job to the worker: {e}"))?;
        drop(stdin);
    }

    let tail = Arc::new(std::sync::Mutex::new(VecDeque::<String>::new()));
    let stderr_task = child.stderr.take().map(|err| {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!(target: "minerva::worker", "{line}");
                if let Ok(mut t) = tail.lock() {
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        })
    });
    let Some(stdout) = child.stdout.take() else {
        return Err("the worker has no stdout".into());
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut cancel = ctx.cancel.clone();
    let deadline = tokio::time::sleep(job.timeout);
    tokio::pin!(deadline);

    let mut measured = 0u32;
    let mut load_steps = 0u32;
    let mut failed_requests = 0u32;
    let mut reported_error: Option<String> = None;
    let mut stop: Option<(ErrorKind, String)> = None;
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => {
                    let s: Sample = match serde_json::from_str(&line) {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::warn!("worker wrote a line that is not a sample ({e}): {line}");
                            continue;
                        }
                    };
                    if let Some(err) = &s.error {
                        reported_error = Some(err.message.clone());
                    } else if s.load.is_some() {
                        load_steps += 1;
                    } else if !s.warmup {
                        measured += 1;
                        if s.request.as_ref().is_some_and(|r| r.failure.is_some()) {
                            failed_requests += 1;
                        }
                    }
                    record(ctx, &s).await?;
                }
                Ok(None) => break,
                Err(e) => {
                    stop = Some((ErrorKind::Crash, format!("reading the worker's output failed: {e}")));
                    break;
                }
            },
            _ = &mut deadline => {
                stop = Some((ErrorKind::Timeout, format!("timed out after {:?}", job.timeout)));
                break;
            }
            changed = cancel.changed() => {
                if changed.is_err() || *cancel.borrow() {
                    stop = Some((ErrorKind::Interrupted, "interrupted".into()));
                    break;
                }
            }
        }
    }
    if stop.is_some() {
        let _ = child.start_kill();
    }
    // Everything this job measured reaches the disk before the job counts as done.
    ctx.writer.lock().await.sync().map_err(|e| e.to_string())?;
    // A load test's size is set by its load (requests, duration): it is complete when every
    // step reported its summary. Other backends report exactly `runs` repetitions.
    let is_load = job.backend == crate::backend::BackendKind::Openai;
    let status = child
        .wait()
        .await
        .map_err(|e| format!("waiting for the worker: {e}"))?;
    if let Some(t) = stderr_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    let tail: Vec<String> = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();

    if let Some(message) = reported_error {
        return Err(message);
    }
    let failed = match stop {
        Some(f) => Some(f),
        None if !status.success() => {
            Some((ErrorKind::Crash, format!("worker exited with {status}")))
        }
        None if is_load && load_steps == 0 => Some((
            ErrorKind::Crash,
            "the worker ended without a load summary".to_string(),
        )),
        None if !is_load && measured != job.runs => Some((
            ErrorKind::Crash,
            format!(
                "worker reported {measured} of {} measured repetitions",
                job.runs
            ),
        )),
        None => None,
    };
    if let Some((kind, message)) = failed {
        let s = failure(
            job_id,
            &job,
            kind,
            message.clone(),
            Some(status.to_string()),
            tail,
        );
        record(ctx, &s).await?;
        return Err(message);
    }
    if is_load {
        return Ok(Some(format!(
            "{measured} requests ({failed_requests} failed) in {load_steps} load step(s)"
        )));
    }
    Ok(Some(format!("{measured} samples")))
}
