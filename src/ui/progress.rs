//! Run progress: an indicatif bar on a terminal, plain log lines otherwise.

use crate::exec::Event;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use tokio::sync::mpsc::UnboundedReceiver;

/// Shows run events. With `multi` (a terminal), the run's bar joins it, so the download stage's
/// per-file bars (added to the same `MultiProgress`) draw below it without garbling.
pub async fn consume_events(
    mut rx: UnboundedReceiver<Event>,
    quiet: bool,
    multi: Option<MultiProgress>,
) {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let bar = if tty {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let b = match &multi {
            Some(m) => m.add(b),
            None => b,
        };
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} jobs, ETA {eta}  {wide_msg}",
        ) {
            b.set_style(style);
        }
        Some(b)
    } else {
        None
    };
    let say = |line: String| {
        if quiet {
            return;
        }
        let line = crate::redact::text(&line);
        match &bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    };
    let mut done = 0usize;
    let mut total = 0usize;
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::RunStarted {
                run_id,
                run_dir,
                total_jobs,
            } => {
                total = total_jobs;
                if let Some(b) = &bar {
                    b.set_length(total_jobs as u64);
                }
                say(format!(
                    "run {run_id}: {total_jobs} jobs, results in {}",
                    run_dir.display()
                ));
            }
            Event::JobStarted { id, kind } => {
                if let Some(b) = &bar {
                    b.set_message(crate::redact::text(&id));
                } else {
                    say(format!(
                        "[{}/{}] start {} ({})",
                        done + 1,
                        total,
                        id,
                        kind.as_str()
                    ));
                }
            }
            Event::Sample {
                job_id,
                rep,
                warmup,
                ok,
            } => {
                if bar.is_none() {
                    let what = if warmup { "warmup" } else { "run" };
                    let status = if ok { "ok" } else { "FAILED" };
                    tracing::info!("{job_id}: {what} {rep} {status}");
                }
            }
            Event::JobFinished {
                id,
                ok,
                detail,
                elapsed,
            } => {
                done += 1;
                if let Some(b) = &bar {
                    b.inc(1);
                }
                let status = if ok { "done" } else { "FAILED" };
                let detail = detail.map(|d| format!(": {d}")).unwrap_or_default();
                say(format!(
                    "[{done}/{total}] {status} {id} in {:.1}s{detail}",
                    elapsed.as_secs_f64()
                ));
            }
            Event::JobSkipped { id, reason } => {
                done += 1;
                if let Some(b) = &bar {
                    b.inc(1);
                }
                say(format!("[{done}/{total}] skipped {id}: {reason}"));
            }
            Event::Interrupted => say("interrupted: stopping; measured samples are kept".into()),
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}
