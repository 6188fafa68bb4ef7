//! Results: sample and manifest types, and the files of a run directory.

mod journal;
mod manifest;
mod model_info;
mod sample;
mod store;

pub use journal::{append_job, last_records, read_journal, JobRecord, JobStatus};
pub use manifest::{host_info, HostInfo, Manifest, Resume, RunStatus, METRICS_VERSION};
pub use model_info::ModelInfo;
pub mod manifest_types {
    pub use super::manifest::JobOutcome;
}
pub use sample::{
    ErrorKind, LoadSummary, Millis, RequestFailure, RequestFailureKind, RequestInfo, Sample,
    SampleError, TokenSource,
};
pub use store::{
    atomic_write, read_samples, read_samples_full, supersede_samples, sync_parent, RunDir,
    SampleRead, SampleWriter, StoreError,
};
