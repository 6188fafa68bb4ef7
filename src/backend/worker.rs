//! The worker: the child process in which one bench job runs (`minerva worker`).
//!
//! Protocol: the parent writes one [`WorkerRequest`] as JSON to stdin and closes it; the worker
//! writes one JSON [`Sample`] per line to stdout as each repetition finishes. On a backend error
//! it writes a final sample carrying the error and exits with status 1. Logs go to stderr.

use super::{run_job, BackendError, SampleSink};
use crate::plan::BenchJob;
use crate::results::{ErrorKind, Sample, SampleError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerRequest {
    pub job_id: String,
    pub job: BenchJob,
}

struct StdoutSink {
    out: std::io::Stdout,
}

impl SampleSink for StdoutSink {
    fn sample(&mut self, mut sample: Sample) -> std::io::Result<()> {
        if sample.peak_rss_bytes.is_none() {
            sample.peak_rss_bytes = peak_rss_bytes();
        }
        let mut line = serde_json::to_vec(&sample).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut lock = self.out.lock();
        lock.write_all(&line)?;
        lock.flush()
    }
}

/// This process's peak resident set size (VmHWM), where the OS reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Runs the worker side; returns the process exit code.
pub fn main() -> i32 {
    let mut input = String::new();
    if let Err(e) = std::io::stdin()
        .take(64 * 1024 * 1024)
        .read_to_string(&mut input)
    {
        eprintln!("minerva worker: cannot read the job from stdin: {e}");
        return 2;
    }
    let req: WorkerRequest = match serde_json::from_str(&input) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("minerva worker: invalid job: {e}");
            return 2;
        }
    };
    let mut sink = StdoutSink {
        out: std::io::stdout(),
    };
    match run_job(&req.job, &req.job_id, &mut sink) {
        Ok(()) => 0,
        Err(e) => {
            let kind = match e {
                BackendError::Unavailable(_) => ErrorKind::Unavailable,
                _ => ErrorKind::Backend,
            };
            let mut s = Sample::blank(&req.job_id, &req.job, 0, false);
            s.error = Some(SampleError {
                kind,
                message: e.to_string(),
                exit_status: None,
                stderr_tail: Vec::new(),
            });
            let _ = sink.sample(s);
            1
        }
    }
}
