//! The worker: the child process in which one bench job runs (`minerva worker`).
//!
//! Protocol: the parent writes one [`WorkerRequest`] as JSON to stdin and closes it; the worker
//! writes one JSON [`Sample`] per line to stdout as each repetition finishes (server-request
//! samples in bursts, each within [`super::SAMPLE_BATCH`] of its end). On a backend error
//! it writes a final sample carrying the error and exits with status 1. Logs go to stderr.

use super::{run_job, BackendError, SampleSink};
use crate::backend::BenchJob;
use crate::results::{ErrorKind, Sample, SampleError};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkerRequest {
    pub job_id: String,
    pub job: BenchJob,
}

struct StdoutSink<W: Write = std::io::Stdout> {
    out: W,
    /// The last peak-RSS reading and when it was taken: a server load writes thousands of
    /// request samples a second, and the peak moves slowly, so for those it is read at most
    /// every 100 ms.
    rss: Option<(std::time::Instant, Option<u64>)>,
    /// Server-request samples not yet written (whole lines), and when the last write was.
    pending: Vec<u8>,
    last_write: std::time::Instant,
}

impl<W: Write> StdoutSink<W> {
    fn new(out: W) -> Self {
        StdoutSink {
            out,
            rss: None,
            pending: Vec::new(),
            last_write: std::time::Instant::now(),
        }
    }
}

impl<W: Write> SampleSink for StdoutSink<W> {
    fn sample(&mut self, mut sample: Sample) -> std::io::Result<()> {
        let request = sample.request.is_some();
        if sample.peak_rss_bytes.is_none() {
            // Cached for server requests only: a repetition's own peak is read after it.
            let fresh = self
                .rss
                .filter(|(at, _)| request && at.elapsed() < std::time::Duration::from_millis(100));
            sample.peak_rss_bytes = match fresh {
                Some((_, v)) => v,
                None => {
                    let v = peak_rss_bytes();
                    self.rss = Some((std::time::Instant::now(), v));
                    v
                }
            };
        }
        serde_json::to_writer(&mut self.pending, &sample).map_err(std::io::Error::other)?;
        self.pending.push(b'\n');
        // A request sample after a quiet spell goes at once; one in a burst waits for the
        // driver's next tick (at most SAMPLE_BATCH). Anything else goes at once, after what
        // was held, so the order is kept.
        if !request
            || self.last_write.elapsed() >= super::SAMPLE_BATCH
            || self.pending.len() >= 1 << 20
        {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.out.write_all(&self.pending)?;
        self.out.flush()?;
        self.pending.clear();
        self.last_write = std::time::Instant::now();
        Ok(())
    }
}

impl<W: Write> Drop for StdoutSink<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// The environment variable through which the runner hands its log filter to workers.
pub const WORKER_LOG_ENV: &str = "MINERVA_WORKER_LOG";

/// Variables a worker keeps from the runner's environment, by exact name: the system's basics
/// and what engines read. Everything else is cleared (a worker is a crash boundary, not a
/// sandbox, but it gets no secret the user did not grant).
pub const WORKER_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "LD_LIBRARY_PATH",
    "DYLD_LIBRARY_PATH",
    "RUST_BACKTRACE",
    "RUST_MIN_STACK",
    "RAYON_NUM_THREADS",
    // Another powercap root, for tests (crate::energy).
    "MINERVA_POWERCAP_ROOT",
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    // The user's own proxy settings, for the openai backend reaching a remote server.
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    WORKER_LOG_ENV,
];

/// Prefixes of engine settings a worker keeps: locale, OpenMP, BLAS libraries, CUDA/ROCm/Metal
/// and the engines' own variables.
pub const WORKER_ENV_PREFIXES: &[&str] = &[
    "LC_",
    "OMP_",
    "GOMP_",
    "KMP_",
    "OPENBLAS_",
    "GOTO_",
    "MKL_",
    "BLIS_",
    "CUDA_",
    "CUBLAS_",
    "NCCL_",
    "HSA_",
    "HIP_",
    "ROCM_",
    "METAL_",
    "MTL_",
    "MLX_",
    "GGML_",
    "LLAMA_",
    "CANDLE_",
];

/// The environment a worker starts with: [`WORKER_ENV`], [`WORKER_ENV_PREFIXES`] and the
/// variables the user granted the pipeline.
pub fn environment(granted: &[String]) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            k.to_str().is_some_and(|k| {
                WORKER_ENV.contains(&k)
                    || WORKER_ENV_PREFIXES.iter().any(|p| k.starts_with(p))
                    || granted.iter().any(|g| g == k)
            })
        })
        .collect()
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
    let mut sink = StdoutSink::new(std::io::stdout());
    match run_job(&req.job, &req.job_id, &mut sink) {
        Ok(()) => 0,
        Err(e) => {
            let kind = match e {
                BackendError::Unavailable { .. } => ErrorKind::Unavailable,
                _ => ErrorKind::Backend,
            };
            let mut s = req.job.blank_sample(&req.job_id, 0, false);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_samples_are_batched_and_the_rest_keep_their_order() {
        let sample = |rep: u32| -> Sample {
            serde_json::from_value(serde_json::json!({
                "job_id": "j", "stage": "b", "backend": "simulated", "model": "m",
                "scenario": "s", "params": {}, "rep": rep, "warmup": false, "simulated": true
            }))
            .unwrap_or_else(|e| panic!("{e}"))
        };
        let request = |rep: u32| {
            let mut s = sample(rep);
            s.request = Some(
                serde_json::from_value(
                    serde_json::json!({"step": 0, "intended_ms": 0.0, "sent_ms": 0.0}),
                )
                .unwrap_or_else(|e| panic!("{e}")),
            );
            s
        };
        let mut sink = StdoutSink::new(Vec::new());
        // The first request sample after a quiet spell (here: the sink's start, back-dated)
        // goes at once; the next ones in the burst wait.
        sink.last_write -= crate::backend::SAMPLE_BATCH;
        sink.sample(request(0)).unwrap_or_else(|e| panic!("{e}"));
        let lines = |s: &StdoutSink<Vec<u8>>| s.out.iter().filter(|b| **b == b'\n').count();
        assert_eq!(lines(&sink), 1);
        sink.sample(request(1)).unwrap_or_else(|e| panic!("{e}"));
        sink.sample(request(2)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines(&sink), 1, "a burst is held");
        // A summary (not a request) goes at once, after what was held.
        sink.sample(sample(3)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines(&sink), 4);
        let reps: Vec<u64> = String::from_utf8_lossy(&sink.out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                v["rep"].as_u64().unwrap_or(99)
            })
            .collect();
        assert_eq!(reps, [0, 1, 2, 3]);
        // The driver's tick hands on a held one.
        sink.sample(request(4)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines(&sink), 4);
        sink.flush().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(lines(&sink), 5);
    }

    #[test]
    fn workers_get_a_cleared_environment_plus_grants() {
        // Names no other test reads; set once in this test process.
        std::env::set_var("MINERVA_UNIT_NOT_GRANTED", "x");
        std::env::set_var("MINERVA_UNIT_GRANTED", "y");
        std::env::set_var("OMP_NUM_THREADS_MINERVA_UNIT", "2");
        let env = environment(&["MINERVA_UNIT_GRANTED".to_string()]);
        let has = |n: &str| env.iter().any(|(k, _)| k == n);
        assert!(has("MINERVA_UNIT_GRANTED"));
        assert!(has("OMP_NUM_THREADS_MINERVA_UNIT"));
        assert!(!has("MINERVA_UNIT_NOT_GRANTED"));
        if std::env::var_os("PATH").is_some() {
            assert!(has("PATH"));
        }
    }
}
