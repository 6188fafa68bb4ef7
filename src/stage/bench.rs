//! Bench stage: runs one bench job in a child process (`minerva worker`) and appends each sample
//! it reports to `samples.jsonl` as it arrives. A crash, a timeout or an interrupt becomes a
//! failed sample with its kind, exit status and the last lines of the worker's stderr.
//!
//! Before the worker starts: a job an earlier run completed with the same key is copied from it
//! (`--reuse`), and the machine-wide bench lock is taken (another runner's bench is waited for).
//! The worker never outlives the runner: it gets `PR_SET_PDEATHSIG` (Linux), and
//! [`kill_workers`] kills every worker's process group (a second Ctrl-C).

use super::{reuse, BenchNote, StageCtx, StageError, StageResult};
use crate::backend::worker::WorkerRequest;
use crate::events::Event;
use crate::plan::BenchJob;
use crate::results::{ErrorKind, Sample, SampleError};
use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

/// The process ids (= process group ids) of the workers running now.
static WORKERS: std::sync::Mutex<std::collections::BTreeSet<u32>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Kills every running worker's process group (the engine and anything it started). For a
/// second Ctrl-C, just before minerva exits.
#[allow(unsafe_code)]
pub fn kill_workers() {
    let pids: Vec<u32> = WORKERS
        .lock()
        .map(|w| w.iter().copied().collect())
        .unwrap_or_default();
    for pid in pids {
        #[cfg(unix)]
        if let Ok(pid) = i32::try_from(pid) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
    }
}

/// The worker is killed when the runner dies, even by SIGKILL (Linux's `PR_SET_PDEATHSIG`): no
/// orphan keeps measuring, or holding a GPU. (The signal follows the thread that spawned the
/// worker: a tokio worker thread, which lives as long as the runner.)
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: runs in the forked child before exec; prctl, getppid and _exit are
        // async-signal-safe and touch no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The runner died between fork and prctl.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}

/// Keeps a worker in [`WORKERS`] while it lives.
struct Registered(Option<u32>);

impl Registered {
    fn new(pid: Option<u32>) -> Self {
        if let (Some(p), Ok(mut w)) = (pid, WORKERS.lock()) {
            w.insert(p);
        }
        Registered(pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let (Some(p), Ok(mut w)) = (self.0, WORKERS.lock()) {
            w.remove(&p);
        }
    }
}

const STDERR_TAIL: usize = 20;
/// Longest sample line read from a worker (a 1M-token generation's timestamps fit).
const MAX_SAMPLE_LINE: usize = 64 << 20;
/// Longest stderr line kept from a worker.
const MAX_STDERR_LINE: usize = 8 << 10;

enum Line {
    /// A line, with any bytes that are not UTF-8 replaced.
    Text(String),
    /// A line longer than the limit, skipped to its end (its length).
    TooLong(usize),
}

/// Reads one line of at most `max` bytes without ever holding more than that: a longer line is
/// consumed and reported by its length. `None` at the end of the stream.
async fn bounded_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut len = 0usize;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            if len == 0 {
                return Ok(None);
            }
            break;
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let body = if done {
            &chunk[..take - 1]
        } else {
            &chunk[..take]
        };
        if len + body.len() <= max {
            buf.extend_from_slice(body);
        } else {
            buf.clear();
        }
        len += body.len();
        r.consume(take);
        if done {
            break;
        }
    }
    if len > max {
        return Ok(Some(Line::TooLong(len)));
    }
    Ok(Some(Line::Text(String::from_utf8_lossy(buf).into_owned())))
}

async fn record(ctx: &StageCtx, s: &Sample) -> Result<(), StageError> {
    ctx.writer
        .lock()
        .await
        .append(s)
        .map_err(|e| StageError::Worker(e.to_string()))?;
    let runs = ctx
        .plan
        .bench_jobs()
        .find(|(j, _)| j.id == s.job_id)
        .filter(|(_, b)| !b.backend.sized_by_load())
        .map_or(0, |(_, b)| b.runs);
    let value = match (s.tg_tps, s.pp_tps, s.e2e_ms) {
        (Some(tg), _, _) => Some(("tok/s", tg)),
        (None, Some(pp), _) => Some(("prompt tok/s", pp)),
        (None, None, Some(e2e)) => Some(("ms", e2e.0)),
        _ => None,
    };
    let _ = ctx.events.send(Event::Sample {
        job_id: s.job_id.clone(),
        rep: s.rep,
        warmup: s.warmup,
        ok: s.error.is_none(),
        runs,
        value,
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
    let mut s = job.blank_sample(job_id, 0, false);
    s.error = Some(SampleError {
        kind,
        message,
        exit_status: exit,
        stderr_tail: tail,
    });
    s
}

/// Long on purpose: a worker's whole life (start, send the job, read its lines, timeout and
/// cancellation, exit status) as one state machine; every failure path records a sample.
pub async fn run(job_id: &str, job: &BenchJob, ctx: &StageCtx) -> StageResult {
    // A backend this build lacks: recorded as such (the report lists it), never dropped.
    if !job.backend.available() {
        let message = job.backend.unavailable_error().to_string();
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
            Err(StageError::Worker(message))
        };
    }
    let mut job = job.clone();
    job.model = super::resolve_model(&job.model, ctx).await?;
    let mut note = BenchNote {
        backend: Some(job.backend.name().to_string()),
        ..BenchNote::default()
    };
    if let Some(sha) = reuse::model_sha256(&job, ctx).await {
        note.key = Some(reuse::job_key(&job, &sha));
    }
    // `--reuse`: the same job, model, build and host measured before: copy it.
    if let Some(key) = &note.key {
        let full = reuse::full_key(
            key,
            &job.backend.build_info(),
            &ctx.host_fingerprint,
            crate::results::METRICS_VERSION,
        );
        if let Some(found) = ctx.reuse.get(&full) {
            let samples = reuse::samples_of(found, job_id)?;
            if samples.iter().any(|s| !s.warmup && s.error.is_none()) {
                for s in &samples {
                    record(ctx, s).await?;
                }
                ctx.writer.lock().await.sync()?;
                let from = found.dir.display().to_string();
                note.reused_from = Some(from.clone());
                ctx.notes.lock().await.insert(job_id.to_string(), note);
                return Ok(Some(format!(
                    "reused {} samples from {from}",
                    samples.len()
                )));
            }
        }
    }
    // The machine-wide bench lock: another runner's bench would skew this one (and this one
    // it); wait for it, saying for whom, or fail at once with --no-wait.
    let wait = crate::lock::LockWait {
        holder: format!(
            "pipeline {}, bench {job_id} ({})",
            ctx.plan.name,
            ctx.run_dir.root.display()
        ),
        timeout: ctx.bench_lock.timeout,
        no_wait: ctx.bench_lock.no_wait,
    };
    let locked = crate::lock::acquire(
        &ctx.bench_lock.path,
        "the bench lock",
        &wait,
        Some(ctx.cancel.clone()),
    )
    .await;
    let _bench_lock = match locked {
        Ok(held) => {
            note.waited_for = held.waited_for.clone();
            note.measured_from =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            ctx.notes.lock().await.insert(job_id.to_string(), note);
            held
        }
        Err(e) => {
            ctx.notes.lock().await.insert(job_id.to_string(), note);
            let kind = match e {
                crate::lock::LockError::Interrupted { .. } => ErrorKind::Interrupted,
                _ => ErrorKind::Locked,
            };
            let mut why = e.to_string();
            if ctx.bench_lock.no_wait && matches!(e, crate::lock::LockError::Busy { .. }) {
                why.push_str("; not waiting (--no-wait)");
            }
            let s = failure(job_id, &job, kind, why.clone(), None, Vec::new());
            record(ctx, &s).await?;
            return Err(StageError::Worker(why));
        }
    };

    // llama-bench's --delay: a pause before the job, the bench lock held (nothing else measures
    // meanwhile); cancellable.
    if job.delay_s > 0 {
        let mut cancel = ctx.cancel.clone();
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(job.delay_s)) => {}
            _ = cancel.wait_for(|c| *c) => {}
        }
    }
    let exe = std::env::current_exe()
        .map_err(|e| StageError::Worker(format!("cannot find the minerva executable: {e}")))?;
    let granted: Vec<String> = ctx.plan.touches.env.iter().cloned().collect();
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        // A cleared environment: only the basics, engine settings and what the user granted.
        .env_clear()
        .envs(crate::backend::worker::environment(&granted))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // Its own process group: a terminal's Ctrl-C reaches the runner, which stops the worker.
        .process_group(0);
    die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| StageError::Worker(format!("cannot start the worker: {e}")))?;
    let _registered = Registered::new(child.id());

    let request = serde_json::to_vec(&WorkerRequest {
        job_id: job_id.to_string(),
        job: job.clone(),
    })
    .map_err(|e| StageError::Worker(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(&request)
            .await
            .map_err(|e| StageError::Worker(format!("cannot send the job to the worker: {e}")))?;
        drop(stdin);
    }

    let tail = Arc::new(std::sync::Mutex::new(VecDeque::<String>::new()));
    let stderr_task = child.stderr.take().map(|err| {
        let tail = tail.clone();
        tokio::spawn(async move {
            let mut err = BufReader::new(err);
            let mut buf = Vec::new();
            while let Ok(Some(line)) = bounded_line(&mut err, &mut buf, MAX_STDERR_LINE).await {
                let line = match line {
                    Line::Text(t) => t,
                    Line::TooLong(n) => format!("[a {n}-byte line, not kept]"),
                };
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
        return Err(StageError::Worker("the worker has no stdout".into()));
    };
    let mut out = BufReader::new(stdout);
    let mut buf = Vec::new();
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
            line = bounded_line(&mut out, &mut buf, MAX_SAMPLE_LINE) => match line {
                Ok(Some(Line::TooLong(n))) => {
                    tracing::warn!("the worker wrote a {n}-byte line, over the {MAX_SAMPLE_LINE}-byte limit; skipped");
                }
                Ok(Some(Line::Text(line))) => {
                    let s: Sample = match serde_json::from_str(&line) {
                        Ok(s) => s,
                        Err(e) => {
                            let head: String = line.chars().take(200).collect();
                            tracing::warn!("worker wrote a line that is not a sample ({e}): {head}");
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
    ctx.writer
        .lock()
        .await
        .sync()
        .map_err(|e| StageError::Worker(e.to_string()))?;
    // A load test's size is set by its load (requests, duration): it is complete when every
    // step reported its summary. Other backends report `runs` repetitions (with `runs: {min, max,
    // rel_ci}`, from min to max).
    let is_load = job.backend.sized_by_load();
    let status = child
        .wait()
        .await
        .map_err(|e| StageError::Worker(format!("waiting for the worker: {e}")))?;
    if let Some(t) = stderr_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
    }
    let tail: Vec<String> = tail
        .lock()
        .map(|t| t.iter().cloned().collect())
        .unwrap_or_default();

    if let Some(message) = reported_error {
        return Err(StageError::Worker(message));
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
        None if !is_load && (measured < job.min_runs() || measured > job.runs) => Some((
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
        return Err(StageError::Worker(message));
    }
    if is_load {
        return Ok(Some(format!(
            "{measured} requests ({failed_requests} failed) in {load_steps} load step(s)"
        )));
    }
    Ok(Some(format!("{measured} samples")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn worker_lines_are_bounded_and_tolerate_bad_bytes() {
        let mut input: Vec<u8> = b"{\"a\":1}\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend(b"\nbad \xff byte\nlast");
        let mut r = BufReader::with_capacity(64, &input[..]);
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(l) = bounded_line(&mut r, &mut buf, 100)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
        {
            got.push(match l {
                Line::Text(t) => t,
                Line::TooLong(n) => format!("too long: {n}"),
            });
            assert!(buf.capacity() < 1000, "never holds the long line");
        }
        assert_eq!(
            got,
            vec!["{\"a\":1}", "too long: 5000", "bad \u{fffd} byte", "last"]
        );
    }
}
