//! Results: sample and manifest types, and the files of a run directory.

mod journal;
mod manifest;
mod model_info;
mod sample;
mod store;

/// A percentile is claimed only with at least this many samples (p90: 64, p95: 130, p99: 662;
/// MLPerf LoadGen's counts for a 99% confidence that the true percentile is not exceeded).
pub const MIN_SAMPLES_P90: u64 = 64;
pub const MIN_SAMPLES_P95: u64 = 130;
pub const MIN_SAMPLES_P99: u64 = 662;

/// The nearest-rank `q` quantile of sorted values (the smallest value with at least a `q`
/// share of the values at or below it); None for none.
pub fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let n = sorted.len();
    (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
}

pub use journal::{append_job, last_records, read_journal, JobRecord, JobStatus};
pub use manifest::{
    host_info, HostInfo, Manifest, Merged, MergedShard, Resume, RunStatus, ShardInfo,
    METRICS_VERSION,
};
pub use model_info::{FloatWeights, ModelInfo};
pub mod manifest_types {
    pub use super::manifest::JobOutcome;
}
pub use sample::{
    ErrorKind, GaugeStats, LoadSummary, Millis, RequestFailure, RequestFailureKind, RequestInfo,
    Sample, SampleError, SearchResult, ServerMetrics, ServerPoint, SloCheck, TokenSource,
};
pub use store::{
    atomic_write, read_samples, read_samples_full, supersede_samples, sync_parent, RunDir,
    SampleRead, SampleWriter, StoreError,
};
