//! The candle backend (candle-core / candle-transformers; CPU, or CUDA with feature `cuda` and
//! `device: cuda`), measured exactly as the llama.cpp
//! backend measures, so that the two tables compare row for row:
//!
//! - GGUF files run through `quantized_llama` (Llama-architecture GGUFs, Mistral's included);
//!   SafeTensors directories (`config.json` + `*.safetensors`, sharded or not) through
//!   `models::llama` or `models::mistral`, chosen by `config.json`'s `model_type`, in the `dtype`
//!   asked for (f32 default, bf16, f16).
//! - Tokenizer: `tokenizer.json` when the model has one (or the `tokenizer` param names one),
//!   else the vocabulary embedded in the GGUF ([`tokenizer::from_gguf`]).
//! - Text scenarios use llama.cpp's chat-template engine ([`super::chat`]) on the model's
//!   template, tokenize (timed apart), process the whole prompt in one forward pass, then pick
//!   greedily; with `ignore_eos` (default) every repetition generates `max_tokens` tokens.
//! - Synthetic scenarios draw the same seeded random token ids as the llama.cpp backend, in the
//!   same order, and decode them without sampling (llama-bench's pp/tg tests).
//! - Warmup as llama-bench: an untimed prompt run and a one-token generation; the KV cache is
//!   cleared before every repetition. `threads` sizes candle's thread pools.

pub use crate::formats::tokenizer;

use super::driver::{self, drive, DriveOpts, StepModel};
use super::{BackendError, SampleSink};
use crate::backend::BenchJob;
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{llama, mistral, quantized_llama};
use serde_json::Value;
use std::path::{Path, PathBuf};
use tokenizer::ModelTokenizer;

use super::params::{self, FloatType, ParamProblem, TypedParams};

pub const PARAMS: &[&str] = &[
    "threads",
    "dtype",
    "seed",
    "ignore_eos",
    "tokenizer",
    "device",
];

/// The candle backend.
pub struct Candle;

impl super::Backend for Candle {
    type Params = CandleParams;
    fn name(&self) -> &'static str {
        "candle"
    }
    fn known_params(&self) -> &'static [&'static str] {
        PARAMS
    }
    fn access(&self, p: &CandleParams) -> super::Access {
        super::Access::tokenizer(&p.tokenizer)
    }
    fn build_info(&self) -> String {
        build_info()
    }
    fn run(
        &self,
        job: &BenchJob,
        params: CandleParams,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        run(job, Params::new(job, params), job_id, sink)
    }
}

/// The candle backend's params, as a pipeline writes them.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CandleParams {
    /// CPU threads (default: physical cores).
    #[schemars(range(min = 1, max = 1024))]
    pub threads: Option<u32>,
    /// Compute type of unquantized weights (default f32).
    pub dtype: Option<FloatType>,
    /// Seed of the random prompt ids (default: the job's seed).
    pub seed: Option<u64>,
    /// Generate `max_tokens` whatever the model says (default true).
    pub ignore_eos: Option<bool>,
    /// A `tokenizer.json` for models without one beside them.
    pub tokenizer: Option<String>,
    /// Where the model runs: `cpu` (default), `cuda` (the first GPU) or `cuda:N`. CUDA needs a
    /// build with feature `cuda`.
    #[schemars(regex(pattern = r"^(cpu|cuda(:[0-9]{1,2})?)$"))]
    pub device: Option<String>,
}

/// Where a candle job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Cpu,
    Cuda(usize),
}

impl Place {
    /// `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> Option<Place> {
        match s {
            "cpu" => Some(Place::Cpu),
            "cuda" => Some(Place::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .filter(|n| (1..=2).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse().ok())
                .map(Place::Cuda),
        }
    }

    fn device(self) -> Result<Device, BackendError> {
        match self {
            Place::Cpu => Ok(Device::Cpu),
            Place::Cuda(n) => {
                Device::new_cuda(n).map_err(BackendError::engine("opening the CUDA device"))
            }
        }
    }
}

impl TypedParams for CandleParams {
    fn check(&self) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        params::check_threads(self.threads, &mut out);
        if let Some(d) = &self.device {
            match Place::parse(d) {
                None => out.push(ParamProblem::new(
                    "device",
                    format!("expected cpu, cuda or cuda:N, found `{d}`"),
                )),
                Some(Place::Cuda(_)) if !crate::build_info::has_cuda() => {
                    out.push(ParamProblem::new(
                        "device",
                        format!(
                            "`{d}`: this minerva has no CUDA backend: build it with \
                             `--features cuda` (scripts/setup-cuda.sh)"
                        ),
                    ))
                }
                Some(_) => {}
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
struct Params {
    threads: usize,
    dtype: DType,
    seed: u64,
    ignore_eos: bool,
    tokenizer: Option<PathBuf>,
    place: Place,
}

impl Params {
    fn new(job: &BenchJob, p: CandleParams) -> Params {
        Params {
            threads: driver::threads_or_default(p.threads),
            dtype: match p.dtype {
                None | Some(FloatType::F32) => DType::F32,
                Some(FloatType::Bf16) => DType::BF16,
                Some(FloatType::F16) => DType::F16,
            },
            seed: p.seed.unwrap_or(job.seed),
            ignore_eos: p.ignore_eos.unwrap_or(true),
            tokenizer: p.tokenizer.map(PathBuf::from),
            place: p
                .device
                .as_deref()
                .and_then(Place::parse)
                .unwrap_or(Place::Cpu),
        }
    }
}

/// The build, for the manifest: crate versions and the CPU features candle was compiled with
/// (its quantized kernels and vector ops are chosen at compile time).
pub fn build_info() -> String {
    let features: Vec<&str> = [
        ("avx", cfg!(target_feature = "avx")),
        ("avx2", cfg!(target_feature = "avx2")),
        ("fma", cfg!(target_feature = "fma")),
        ("f16c", cfg!(target_feature = "f16c")),
        ("avx512f", cfg!(target_feature = "avx512f")),
        ("neon", cfg!(target_feature = "neon")),
    ]
    .into_iter()
    .filter_map(|(n, on)| on.then_some(n))
    .collect();
    format!(
        "candle-core {}, candle-transformers {}, tokenizers {}; {}, compiled with {}",
        crate::build_info::CANDLE_CORE_VERSION,
        crate::build_info::CANDLE_TRANSFORMERS_VERSION,
        crate::build_info::TOKENIZERS_VERSION,
        if crate::build_info::has_cuda() {
            "CPU and CUDA"
        } else {
            "CPU"
        },
        if features.is_empty() {
            "no SIMD features (scalar kernels: expect several times slower figures)".to_string()
        } else {
            features.join(" ")
        }
    )
}

/// A loaded candle model and the device it runs on.
struct Engine {
    kind: Kind,
    device: Device,
}

enum Kind {
    Quantized(Box<quantized_llama::ModelWeights>),
    Llama(Box<LlamaEngine>),
    Mistral(Box<mistral::Model>),
}

struct LlamaEngine {
    model: llama::Llama,
    cache: llama::Cache,
    config: llama::Config,
    dtype: DType,
}

impl StepModel for Engine {
    fn reset(&mut self) -> Result<(), BackendError> {
        match &mut self.kind {
            Kind::Quantized(m) => m.clear_kv_cache(),
            Kind::Llama(l) => {
                l.cache = llama::Cache::new(true, l.dtype, &l.config, &self.device)
                    .map_err(BackendError::engine("clearing the KV cache"))?
            }
            Kind::Mistral(m) => m.clear_kv_cache(),
        }
        Ok(())
    }

    /// Logits are always computed and copied (`_logits` is ignored), as before the flag. The
    /// copy to the host also waits for a GPU to finish, so a step's time is its whole work.
    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        _logits: bool,
    ) -> Result<Vec<f32>, BackendError> {
        let run = |e: &mut Engine| -> candle_core::Result<Vec<f32>> {
            let input = Tensor::new(ids, &e.device)?.unsqueeze(0)?;
            let logits = match &mut e.kind {
                Kind::Quantized(m) => m.forward(&input, pos)?,
                Kind::Llama(l) => l.model.forward(&input, pos, &mut l.cache)?,
                Kind::Mistral(m) => m.forward(&input, pos)?,
            };
            logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
        };
        run(self).map_err(BackendError::engine("forward pass"))
    }

    fn max_seq(&self) -> usize {
        match &self.kind {
            Kind::Quantized(_) => quantized_llama::MAX_SEQ_LEN,
            Kind::Llama(l) => l.config.max_position_embeddings,
            Kind::Mistral(_) => usize::MAX,
        }
    }
}

fn load_gguf(path: &Path, p: &Params) -> Result<(Engine, ModelTokenizer), BackendError> {
    let mut file = std::fs::File::open(path).map_err(BackendError::engine("opening the model"))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| BackendError::engine("reading the GGUF")(e.with_path(path)))?;
    let arch = architecture(&content);
    if arch != "llama" {
        return Err(BackendError::Engine(format!(
            "candle runs GGUF models of the `llama` architecture (Llama, Mistral, SmolLM…); \
             this file is `{arch}`"
        )));
    }
    let tok = match &p.tokenizer {
        Some(t) => tokenizer::from_dir(t.parent().unwrap_or(Path::new(".")), Some(t)),
        None => tokenizer::from_gguf(&content.metadata),
    }
    .map_err(BackendError::Engine)?;
    let device = p.place.device()?;
    let model = quantized_llama::ModelWeights::from_gguf(content, &mut file, &device)
        .map_err(BackendError::engine("loading the GGUF weights"))?;
    Ok((
        Engine {
            kind: Kind::Quantized(Box::new(model)),
            device,
        },
        tok,
    ))
}

pub use crate::formats::tokenizer::architecture;

/// Names `models::llama` reads; checked first because its loader panics on a missing tensor.
fn llama_tensor_names(cfg: &llama::Config) -> Vec<String> {
    let mut names = vec![
        "model.embed_tokens.weight".to_string(),
        "model.norm.weight".to_string(),
    ];
    if !cfg.tie_word_embeddings {
        names.push("lm_head.weight".into());
    }
    for i in 0..cfg.num_hidden_layers {
        for t in [
            "input_layernorm",
            "post_attention_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            names.push(format!("model.layers.{i}.{t}.weight"));
        }
    }
    names
}

/// The weight files of a SafeTensors directory: the shards its index lists, else every
/// `*.safetensors` file.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
    let index = dir.join("model.safetensors.index.json");
    let mut files: Vec<PathBuf> = if index.is_file() {
        let text =
            std::fs::read_to_string(&index).map_err(BackendError::engine("reading the index"))?;
        let v: Value =
            serde_json::from_str(&text).map_err(BackendError::engine("parsing the index"))?;
        let mut names: Vec<String> = v
            .get("weight_map")
            .and_then(Value::as_object)
            .map(|m| {
                m.values()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names.dedup();
        names.into_iter().map(|n| dir.join(n)).collect()
    } else {
        let mut v = Vec::new();
        for e in
            std::fs::read_dir(dir).map_err(BackendError::engine("listing the model directory"))?
        {
            let path = e
                .map_err(BackendError::engine("listing the model directory"))?
                .path();
            if path.extension().is_some_and(|x| x == "safetensors") {
                v.push(path);
            }
        }
        v
    };
    files.sort();
    if files.is_empty() {
        return Err(BackendError::Engine(format!(
            "{} holds no .safetensors file",
            dir.display()
        )));
    }
    Ok(files)
}

#[allow(unsafe_code)]
fn mmap_weights(
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<candle_nn::VarBuilder<'static>, BackendError> {
    // SAFETY: the files are memory-mapped read-only for the life of the worker process; the
    // verify stage checked their structure, and a run does not modify model files while a
    // worker reads them (changing them underneath would corrupt the figures, not memory safety
    // of anything but the mapped bytes candle copies out).
    unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(files, dtype, device) }
        .map_err(BackendError::engine("mapping the SafeTensors weights"))
}

fn load_dir(dir: &Path, p: &Params) -> Result<(Engine, ModelTokenizer), BackendError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| BackendError::Engine(format!("{}: {e}", cfg_path.display())))?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| BackendError::Engine(format!("{}: {e}", cfg_path.display())))?;
    let model_type = raw
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let tok = tokenizer::from_dir(dir, p.tokenizer.as_deref()).map_err(BackendError::Engine)?;
    let files = weight_files(dir)?;
    let device = p.place.device()?;
    let vb = mmap_weights(&files, p.dtype, &device)?;
    let kind = match model_type.as_str() {
        "llama" => {
            let lc: llama::LlamaConfig = serde_json::from_value(raw)
                .map_err(|e| BackendError::Engine(format!("{}: {e}", cfg_path.display())))?;
            let config = lc.into_config(false);
            if let Some(missing) = llama_tensor_names(&config)
                .into_iter()
                .find(|n| !vb.contains_tensor(n))
            {
                return Err(BackendError::Engine(format!(
                    "{}: tensor `{missing}` is missing",
                    dir.display()
                )));
            }
            let model = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                llama::Llama::load(vb, &config)
            }))
            .map_err(|_| BackendError::Engine("loading the Llama weights panicked".into()))?
            .map_err(BackendError::engine("loading the Llama weights"))?;
            let cache = llama::Cache::new(true, p.dtype, &config, &device)
                .map_err(BackendError::engine("creating the KV cache"))?;
            Kind::Llama(Box::new(LlamaEngine {
                model,
                cache,
                config,
                dtype: p.dtype,
            }))
        }
        "mistral" => {
            let config: mistral::Config = serde_json::from_value(raw)
                .map_err(|e| BackendError::Engine(format!("{}: {e}", cfg_path.display())))?;
            let model = mistral::Model::new(&config, vb)
                .map_err(BackendError::engine("loading the Mistral weights"))?;
            Kind::Mistral(Box::new(model))
        }
        other => {
            return Err(BackendError::Engine(format!(
                "{}: model_type `{other}` is not one the candle backend runs (llama, mistral)",
                cfg_path.display()
            )))
        }
    };
    Ok((Engine { kind, device }, tok))
}

fn set_threads(n: usize) {
    // Read by candle (CANDLE_NUM_THREADS: its barrier pool; RAYON_NUM_THREADS: rayon's global
    // pool and gemm). The worker is still single-threaded here: nothing else reads the
    // environment concurrently.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
}

fn run(
    job: &BenchJob,
    p: Params,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    let path = driver::model_path(job)?;
    set_threads(p.threads);

    let opts = DriveOpts {
        engine: "candle",
        seed: p.seed,
        ignore_eos: p.ignore_eos,
    };
    drive(job, job_id, sink, &opts, || {
        if path.is_dir() {
            load_dir(&path, &p)
        } else {
            load_gguf(&path, &p)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weight_files_follow_the_index_else_every_safetensors_file() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b.safetensors", "a.safetensors", "notes.txt"] {
            std::fs::write(d.path().join(f), b"x").unwrap();
        }
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(
            names(weight_files(d.path()).unwrap()),
            ["a.safetensors", "b.safetensors"]
        );
        std::fs::write(
            d.path().join("model.safetensors.index.json"),
            r#"{"weight_map": {"x": "model-00002-of-00002.safetensors", "y": "model-00001-of-00002.safetensors", "z": "model-00001-of-00002.safetensors"}}"#,
        )
        .unwrap();
        assert_eq!(
            names(weight_files(d.path()).unwrap()),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        let empty = tempfile::tempdir().unwrap();
        let e = weight_files(empty.path()).unwrap_err().to_string();
        assert!(e.contains("holds no .safetensors file"), "{e}");
    }

    #[test]
    fn the_device_is_checked_before_anything_runs() {
        assert_eq!(Place::parse("cpu"), Some(Place::Cpu));
        assert_eq!(Place::parse("cuda"), Some(Place::Cuda(0)));
        assert_eq!(Place::parse("cuda:3"), Some(Place::Cuda(3)));
        for bad in [
            "gpu", "cuda:", "cuda:x", "cuda:123", "CUDA", "cuda:-1", "metal",
        ] {
            assert_eq!(Place::parse(bad), None, "{bad}");
        }
        let check = |d: &str| {
            CandleParams {
                device: Some(d.into()),
                ..Default::default()
            }
            .check()
        };
        let p = check("tpu");
        assert_eq!(p.len(), 1);
        assert!(
            p[0].message.contains("expected cpu, cuda or cuda:N"),
            "{p:?}"
        );
        assert!(check("cpu").is_empty());
        // CUDA is refused by a build without it, with the way to get it.
        let p = check("cuda:1");
        if crate::build_info::has_cuda() {
            assert!(p.is_empty(), "{p:?}");
        } else {
            assert!(p[0].message.contains("--features cuda"), "{p:?}");
        }
    }
}
