//! What the verify stage learned about a model, stored in the run directory
//! (`model-<name>.json`) for the report.

use crate::spec::ModelFormat;
use serde::{Deserialize, Serialize};

/// What the report shows about a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub path: String,
    pub format: ModelFormat,
    pub file_size: u64,
    pub architecture: Option<String>,
    pub parameters: Option<u64>,
    pub quantization: Option<String>,
    pub context_length: Option<u64>,
    pub vocab_size: Option<u64>,
    pub tensor_count: Option<u64>,
    pub sha256: Option<String>,
    pub warnings: Vec<String>,
}
