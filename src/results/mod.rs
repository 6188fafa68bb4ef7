//! Results: sample and manifest types, and the files of a run directory.

mod manifest;
mod model_info;
mod sample;
mod store;

pub use manifest::{host_info, HostInfo, Manifest, RunStatus, METRICS_VERSION};
pub use model_info::ModelInfo;
pub mod manifest_types {
    pub use super::manifest::JobOutcome;
}
pub use sample::{
    ErrorKind, LoadSummary, Millis, RequestFailure, RequestFailureKind, RequestInfo, Sample,
    SampleError, TokenSource,
};
pub use store::{atomic_write, read_samples, sync_parent, RunDir, SampleWriter, StoreError};
