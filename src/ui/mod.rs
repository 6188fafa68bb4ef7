//! The only code that prints: logging set-up, run progress, and the plan listing.

mod progress;

pub use progress::consume_events;

use crate::plan::{JobKind, Plan};
use std::fmt::Write as _;
use tracing_subscriber::EnvFilter;

pub use crate::backend::worker::WORKER_LOG_ENV;

/// The log filter in force (`RUST_LOG`, else from `-v`/`-q`), for workers to inherit.
pub fn log_filter(verbose: u8, quiet: bool) -> String {
    if let Ok(f) = std::env::var("RUST_LOG") {
        return f;
    }
    match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    }
    .to_string()
}

/// Logs go to stderr; `RUST_LOG` wins over `-v`. The filter is exported to worker processes,
/// whose stderr the runner relays at debug level (llama.cpp's own log lines among them).
pub fn init_logging(verbose: u8, quiet: bool) {
    let f = log_filter(verbose, quiet);
    std::env::set_var(WORKER_LOG_ENV, &f);
    init_with(&f);
}

/// A worker's logging: the filter its runner handed down (default: warnings only).
pub fn init_worker_logging() {
    let f = std::env::var(WORKER_LOG_ENV).unwrap_or_else(|_| "warn".into());
    init_with(&f);
}

/// stderr for log lines, with every secret and URL credential redacted: one event is written
/// through one writer, which redacts it as a whole when dropped.
struct RedactingStderr(Vec<u8>);

impl std::io::Write for RedactingStderr {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.0.is_empty() {
            let text = crate::redact::text(&String::from_utf8_lossy(&self.0));
            self.0.clear();
            std::io::stderr().write_all(text.as_bytes())?;
        }
        Ok(())
    }
}

impl Drop for RedactingStderr {
    fn drop(&mut self) {
        let _ = std::io::Write::flush(self);
    }
}

fn init_with(f: &str) {
    let filter = EnvFilter::try_new(f).unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| RedactingStderr(Vec::new()))
        .with_target(false)
        .try_init();
}

/// What a pipeline touches beyond the project, as a person reviews it before running someone
/// else's pipeline.
pub fn touches_text(t: &crate::plan::Touches) -> String {
    let mut s = String::from("touches:\n");
    let list = |items: Vec<&str>| {
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    let _ = writeln!(
        s,
        "  env:      {}",
        list(t.env.iter().map(String::as_str).collect())
    );
    let _ = writeln!(
        s,
        "  read:     {}",
        if t.paths.is_empty() {
            "nothing outside the project".to_string()
        } else {
            list(t.paths.iter().map(String::as_str).collect())
        }
    );
    let _ = writeln!(
        s,
        "  network:  {}",
        list(t.hosts.iter().map(String::as_str).collect())
    );
    let _ = writeln!(
        s,
        "  commands: {}",
        list(t.commands.iter().map(String::as_str).collect())
    );
    crate::redact::text(&s)
}

/// A human-readable listing of the plan: stages in order with their dependencies and jobs.
pub fn plan_text(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "pipeline {} ({} stages, {} jobs)",
        plan.name,
        plan.stages.len(),
        plan.jobs.len()
    );
    s.push_str(&touches_text(&plan.touches));
    if let Some(sh) = &plan.shard {
        let _ = writeln!(
            s,
            "shard {}/{}: {} of {} bench jobs, estimated cost {} of {} ({:.0}%; tokens × repetitions, for balancing only); whole plan sha256 {}",
            sh.index,
            sh.count,
            sh.bench_jobs,
            sh.plan_bench_jobs,
            sh.cost,
            sh.plan_cost,
            100.0 * sh.cost as f64 / sh.plan_cost.max(1) as f64,
            &sh.plan_sha256[..12.min(sh.plan_sha256.len())]
        );
    }
    let bench = plan.bench_jobs().count();
    if bench > 0 {
        let reps: u64 = plan
            .bench_jobs()
            .map(|(_, b)| u64::from(b.runs + b.warmup))
            .sum();
        let _ = writeln!(
            s,
            "bench jobs: {bench} ({reps} repetitions at most, warmups included)"
        );
    }
    for st in &plan.stages {
        let needs: Vec<&str> = st
            .needs
            .iter()
            .map(|n| plan.stages[*n].name.as_str())
            .collect();
        let _ = write!(s, "\nstage {} [{}]", st.name, st.kind.as_str());
        if !needs.is_empty() {
            let _ = write!(s, " needs {}", needs.join(", "));
        }
        let _ = writeln!(s);
        for &j in &st.jobs {
            let job = &plan.jobs[j];
            let extra = match &job.kind {
                JobKind::Bench(b) => {
                    // A server job's size is its load (requests/duration), not `runs`.
                    let mut e = if b.backend.sized_by_load() {
                        format!("  load (see params) warmup={} seed={}", b.warmup, b.seed)
                    } else {
                        let runs = match b.until_stable {
                            Some(u) => format!("{}..{} until ±{}%", u.min, u.max, u.rel_ci * 100.0),
                            None => b.runs.to_string(),
                        };
                        format!("  runs={runs} warmup={} seed={}", b.warmup, b.seed)
                    };
                    if !b.backend.available() {
                        e.push_str(&format!("  ({})", b.backend.unavailable_error()));
                    }
                    e
                }
                _ => String::new(),
            };
            let _ = writeln!(s, "  {}{}", job.id, extra);
        }
    }
    let _ = writeln!(s, "\ndag:");
    for st in &plan.stages {
        for n in &st.needs {
            let _ = writeln!(s, "  {} -> {}", plan.stages[*n].name, st.name);
        }
        if st.needs.is_empty() {
            let _ = writeln!(s, "  {} (root)", st.name);
        }
    }
    plan.redactor.redact_str(&s)
}
