//! The MLX backend (mlx-rs over mlx-c over MLX), measured by the same loop as candle
//! ([`super::driver`]): same warmup, seeded random prompts, greedy rule, timestamps and output
//! ids for the agreement check.
//!
//! - Models: MLX-format directories (`config.json` + `*.safetensors`, as `mlx_lm.convert`
//!   writes them, or any Hugging Face Llama/Mistral SafeTensors directory), quantized
//!   (`quantization: {group_size, bits}`, affine mode: packed U32 weights with scales and
//!   biases, per-module overrides honoured) or not. Architectures: `llama` and `mistral` (the
//!   same network). The forward pass is written here over MLX's operations, as mlx-lm's
//!   `llama.py`: RMSNorm, RoPE (`fast::rope`, offset = position), grouped-query attention
//!   (`fast::scaled_dot_product_attention`, causal for prompts), SiLU-gated MLP, tied or separate
//!   output head; a KV cache per layer.
//! - Tokenizer: the directory's `tokenizer.json` (the candle backend's loader), chat templates
//!   through llama.cpp's engine ([`super::chat`]) as in every in-process backend.
//! - Devices: `device: gpu` (Metal, Apple silicon) or `cpu`; default gpu where MLX has one.
//!   On Linux MLX is the PyPI `mlx-cpu` wheel's library, CPU only. MLX's CPU matmuls go through
//!   BLAS; `threads` sizes OpenBLAS's pool (`openblas_set_num_threads`) when OpenBLAS is the
//!   BLAS loaded (scripts/setup-mlx.sh's default). MLX's other CPU operations run on one
//!   thread whatever `threads` says; the manifest names the BLAS.
//!
//! Compiled with `cfg(minerva_mlx)` (feature `mlx`, always on Apple silicon). Without it the
//! backend is known to pipelines (validation, plans) and its jobs fail as unavailable.

#[cfg(minerva_mlx)]
mod engine;

use super::params::{self, FloatType, ParamProblem, TypedParams};
use super::{BackendError, SampleSink};
use crate::backend::BenchJob;

pub const PARAMS: &[&str] = &[
    "device",
    "threads",
    "dtype",
    "seed",
    "ignore_eos",
    "tokenizer",
];

/// The MLX backend (feature `mlx`).
pub struct Mlx;

impl super::Backend for Mlx {
    type Params = MlxParams;
    fn name(&self) -> &'static str {
        "mlx"
    }
    fn known_params(&self) -> &'static [&'static str] {
        PARAMS
    }
    fn access(&self, p: &MlxParams) -> super::Access {
        super::Access::tokenizer(&p.tokenizer)
    }
    fn unavailable(&self) -> Option<&'static str> {
        (!AVAILABLE).then_some(UNAVAILABLE)
    }
    fn build_info(&self) -> String {
        build_info()
    }
    fn run(
        &self,
        job: &BenchJob,
        params: MlxParams,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        run(job, params, job_id, sink)
    }
}

/// Where MLX runs a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Gpu,
}

/// The MLX backend's params, as a pipeline writes them.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MlxParams {
    /// `gpu` (Metal) or `cpu`; default gpu where MLX has one. Whether this machine's MLX has a
    /// GPU is checked by the worker, where the job runs.
    pub device: Option<Device>,
    /// OpenBLAS threads (default: physical cores).
    #[schemars(range(min = 1, max = 1024))]
    pub threads: Option<u32>,
    /// Cast floating weights to this type (default: as stored).
    pub dtype: Option<FloatType>,
    /// Seed of the random prompt ids (default: the job's seed).
    pub seed: Option<u64>,
    /// Generate `max_tokens` whatever the model says (default true).
    pub ignore_eos: Option<bool>,
    /// A `tokenizer.json` for models without one beside them.
    pub tokenizer: Option<String>,
}

impl TypedParams for MlxParams {
    fn check(&self) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        params::check_threads(self.threads, &mut out);
        out
    }
}

/// Whether this build has the MLX backend.
pub const AVAILABLE: bool = cfg!(minerva_mlx);

/// The message of a job that names `mlx` in a build without it.
pub const UNAVAILABLE: &str = "unavailable on this build (enable feature mlx)";

#[cfg(minerva_mlx)]
pub fn build_info() -> String {
    engine::build_info()
}

#[cfg(not(minerva_mlx))]
pub fn build_info() -> String {
    format!("MLX {UNAVAILABLE}")
}

#[cfg(minerva_mlx)]
fn run(
    job: &BenchJob,
    params: MlxParams,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    engine::run(job, params, job_id, sink)
}

/// Never called: the registry refuses a backend that is [`Backend::unavailable`].
///
/// [`Backend::unavailable`]: super::Backend::unavailable
#[cfg(not(minerva_mlx))]
fn run(
    _job: &BenchJob,
    _params: MlxParams,
    _job_id: &str,
    _sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    Err(BackendError::Unavailable {
        backend: "mlx",
        reason: UNAVAILABLE,
    })
}
