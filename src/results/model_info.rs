//! What the verify stage learned about a model, stored in the run directory
//! (`model-<name>.json`) for the report.

use crate::spec::ModelFormat;
use serde::{Deserialize, Serialize};

/// Floating-point weights: how many, and their bytes as stored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FloatWeights {
    pub params: u64,
    pub bytes: u64,
}

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
    /// Bytes of weights one generated token reads (GGUF: every tensor, token embeddings only
    /// gathered when the output matrix is separate), for the bandwidth roofline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bytes_per_token: Option<u64>,
    /// SafeTensors and MLX: the floating-point part of `weight_bytes_per_token` (parameters and
    /// bytes as stored), which a backend's `dtype` casts, for the roofline of such a job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub float_weights_per_token: Option<FloatWeights>,
    /// K and V bytes per cached position (f16 cache), for the roofline at a depth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_bytes_per_position: Option<u64>,
    /// This host's read bandwidth over a buffer the size of the weights a token reads (the
    /// roofline's numerator), measured once per host and size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<crate::roofline::Bandwidth>,
    pub sha256: Option<String>,
    pub warnings: Vec<String>,
}
