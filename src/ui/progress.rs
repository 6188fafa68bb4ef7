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
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} jobs  {wide_msg}",
        ) {
            b.set_style(style);
        }
        Some(b)
    } else {
        None
    };
    // Inside a bench job: one bar per repetition, with the running mean.
    let rep_bar = |job: &str, runs: u32| -> Option<ProgressBar> {
        if !tty || runs == 0 {
            return None;
        }
        let b = ProgressBar::with_draw_target(Some(u64::from(runs)), ProgressDrawTarget::stderr());
        let b = match &multi {
            Some(m) => m.add(b),
            None => b,
        };
        if let Ok(style) = ProgressStyle::with_template("    {bar:20} rep {pos}/{len}  {wide_msg}")
        {
            b.set_style(style);
        }
        b.set_message(crate::redact::text(job));
        Some(b)
    };
    let mut eta = Eta::default();
    // The bench job whose samples are arriving, and its bar on a terminal.
    let mut current_job: Option<String> = None;
    let mut current: Option<ProgressBar> = None;
    let mut running = RunningMean::default();
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
                total_reps,
            } => {
                total = total_jobs;
                eta.total = total_reps;
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
                runs,
                value,
            } => {
                if runs == 0 {
                    // A server request: the job's own lines say how its load steps went.
                    continue;
                }
                eta.rep_done();
                if current_job.as_ref() != Some(&job_id) {
                    if let Some(b) = current.take() {
                        b.finish_and_clear();
                    }
                    running = RunningMean::default();
                    current = rep_bar(&job_id, runs);
                    current_job = Some(job_id.clone());
                }
                if !warmup && ok {
                    if let Some((_, v)) = value {
                        running.add(v);
                    }
                }
                let figure = match (value, running.mean()) {
                    (Some((unit, v)), Some(mean)) if !warmup => {
                        format!("{v:.2} {unit} (running mean {mean:.2})")
                    }
                    (Some((unit, v)), _) => format!("{v:.2} {unit}"),
                    _ => String::new(),
                };
                let what = if warmup { "warmup" } else { "rep" };
                let status = if ok { "" } else { " FAILED" };
                match &current {
                    Some(b) => {
                        if !warmup {
                            b.set_position(u64::from(rep) + 1);
                        }
                        b.set_message(format!("{what}{status} {figure}"));
                        if let Some(text) = eta.text() {
                            if let Some(main) = &bar {
                                main.set_message(format!(
                                    "{}  ETA {text}",
                                    crate::redact::text(&job_id)
                                ));
                            }
                        }
                    }
                    None => {
                        let of = if warmup {
                            String::new()
                        } else {
                            format!("/{runs}")
                        };
                        let n = if warmup { rep } else { rep + 1 };
                        let eta_text = eta
                            .text()
                            .map(|t| format!(", run ETA {t}"))
                            .unwrap_or_default();
                        say(format!(
                            "  {job_id}: {what} {n}{of}{status} {figure}{eta_text}"
                        ));
                    }
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
                if current_job.as_ref() == Some(&id) {
                    current_job = None;
                    if let Some(b) = current.take() {
                        b.finish_and_clear();
                    }
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
    if let Some(b) = current {
        b.finish_and_clear();
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// The mean of a job's measured figures so far.
#[derive(Debug, Default)]
struct RunningMean {
    n: u64,
    sum: f64,
}

impl RunningMean {
    fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.n += 1;
            self.sum += v;
        }
    }
    fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

/// The run's remaining time, from the pace of its bench repetitions so far (downloads and
/// other jobs are not counted: the repetitions are most of a run).
#[derive(Debug, Default)]
struct Eta {
    total: u64,
    done: u64,
    first: Option<std::time::Instant>,
}

impl Eta {
    fn rep_done(&mut self) {
        self.done += 1;
        self.first.get_or_insert_with(std::time::Instant::now);
    }

    /// "2m05s", once two repetitions have set a pace; None when nothing is left to estimate.
    fn text(&self) -> Option<String> {
        let first = self.first?;
        let left = self.total.checked_sub(self.done).filter(|l| *l > 0)?;
        if self.done < 2 {
            return None;
        }
        let per = first.elapsed().as_secs_f64() / (self.done - 1) as f64;
        Some(format_duration(per * left as f64))
    }
}

fn format_duration(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(format_duration(7.4), "7s");
        assert_eq!(format_duration(125.0), "2m05s");
        assert_eq!(format_duration(3725.0), "1h02m");
    }

    #[test]
    fn the_running_mean_skips_what_is_not_a_figure() {
        let mut m = RunningMean::default();
        assert_eq!(m.mean(), None);
        m.add(2.0);
        m.add(f64::NAN);
        m.add(4.0);
        assert_eq!(m.mean(), Some(3.0));
    }
}
