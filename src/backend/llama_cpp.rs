//! The llama.cpp backend (llama-cpp-2), measured the way llama-bench measures.
//!
//! - Synthetic scenarios (`prompt_tokens: N`) use random token ids from a seeded generator and no
//!   sampling, like llama-bench's pp/tg tests, so figures compare directly with its tables.
//! - Text scenarios apply the model's chat template, tokenize (timed apart), process the prompt
//!   in `batch`-sized chunks, then sample greedily; with `ignore_eos` (default) every repetition
//!   generates exactly `max_tokens` tokens.
//! - Warmup as llama-bench: an untimed prompt run and a one-token generation; the KV cache is
//!   cleared before every repetition.
//!
//! The loop is the one every in-process engine shares ([`driver::drive`]); this module is the
//! engine: a context as a [`StepModel`] and llama.cpp's tokenizer as a [`PromptTokenizer`].

use super::driver::{self, drive, DriveOpts, PromptTokenizer, StepModel};
use super::params::{self, Flag, ParamProblem, TypedParams};
use super::{BackendError, SampleSink};
use crate::backend::BenchJob;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;

pub const PARAMS: &[&str] = &[
    "threads",
    "n_gpu_layers",
    "main_gpu",
    "devices",
    "ctx",
    "batch",
    "ubatch",
    "flash_attn",
    "mmap",
    "seed",
    "ignore_eos",
];

/// The llama.cpp backend: the reference engine of output agreement.
pub struct LlamaCpp;

impl super::Backend for LlamaCpp {
    type Params = LlamaParams;
    fn name(&self) -> &'static str {
        "llama_cpp"
    }
    fn known_params(&self) -> &'static [&'static str] {
        PARAMS
    }
    fn build_info(&self) -> String {
        build_info()
    }
    fn is_reference(&self) -> bool {
        true
    }
    fn run(
        &self,
        job: &BenchJob,
        params: LlamaParams,
        job_id: &str,
        sink: &mut dyn SampleSink,
    ) -> Result<(), BackendError> {
        run(job, Params::new(job, params), job_id, sink)
    }
}

/// The llama.cpp backend's params, as a pipeline writes them: llama-bench's names and meanings.
#[derive(Debug, Clone, Default, serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlamaParams {
    /// CPU threads (default: physical cores, as llama-bench).
    #[schemars(range(min = 1, max = 1024))]
    pub threads: Option<u32>,
    /// Layers offloaded to a GPU (default 99: all).
    #[schemars(range(max = 100000))]
    pub n_gpu_layers: Option<u32>,
    /// The GPU that holds the model with one GPU, and the intermediate results with several
    /// (llama-bench's `-mg`; default 0). Needs a build with a GPU backend (feature `cuda`).
    #[schemars(range(max = 15))]
    pub main_gpu: Option<u32>,
    /// The devices to use, as ggml's device indices (its GPUs first, in CUDA's order; default:
    /// every GPU). Needs a build with a GPU backend (feature `cuda`).
    pub devices: Option<Vec<u32>>,
    /// Context size (default 0: prompt + generation).
    #[schemars(range(max = 16777216))]
    pub ctx: Option<u32>,
    /// Logical batch (default 2048).
    #[schemars(range(min = 1, max = 1048576))]
    pub batch: Option<u32>,
    /// Physical batch (default 512).
    #[schemars(range(min = 1, max = 1048576))]
    pub ubatch: Option<u32>,
    /// Flash attention (default off).
    pub flash_attn: Option<Flag>,
    /// Memory-map the model (default on).
    pub mmap: Option<Flag>,
    /// Seed of the random prompt ids (default: the job's seed).
    pub seed: Option<u64>,
    /// Generate `max_tokens` whatever the model says (default true).
    pub ignore_eos: Option<bool>,
}

impl TypedParams for LlamaParams {
    fn check(&self) -> Vec<ParamProblem> {
        let mut out = Vec::new();
        params::check_threads(self.threads, &mut out);
        let mut at_most = |key: &str, v: Option<u32>, min: u32, max: u32| {
            if let Some(n) = v.filter(|n| !(min..=max).contains(n)) {
                out.push(ParamProblem::new(
                    key,
                    format!("expected {min} to {max}, found {n}"),
                ));
            }
        };
        at_most("n_gpu_layers", self.n_gpu_layers, 0, 100_000);
        at_most("main_gpu", self.main_gpu, 0, 15);
        at_most("ctx", self.ctx, 0, 1 << 24);
        at_most("batch", self.batch, 1, 1 << 20);
        at_most("ubatch", self.ubatch, 1, 1 << 20);
        if let Some(d) = &self.devices {
            if d.is_empty() || d.len() > 16 {
                out.push(ParamProblem::new(
                    "devices",
                    format!("expected 1 to 16 device indices, found {}", d.len()),
                ));
            }
        }
        if !crate::build_info::has_cuda() {
            for (key, set) in [
                ("main_gpu", self.main_gpu.is_some()),
                ("devices", self.devices.is_some()),
            ] {
                if set {
                    out.push(ParamProblem::new(
                        key,
                        "this minerva has no GPU backend: build it with `--features cuda` \
                         (scripts/setup-cuda.sh)"
                            .to_string(),
                    ));
                }
            }
        }
        out
    }
}

/// Parameters with llama-bench's meanings and defaults.
#[derive(Debug, Clone)]
struct Params {
    threads: i32,
    n_gpu_layers: u32,
    main_gpu: Option<u32>,
    devices: Option<Vec<u32>>,
    ctx: u32,
    batch: u32,
    ubatch: u32,
    flash_attn: bool,
    mmap: bool,
    seed: u64,
    ignore_eos: bool,
}

/// Physical cores, as llama-bench's default thread count.
pub fn default_threads() -> u64 {
    sysinfo::System::physical_core_count()
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1) as u64
}

impl Params {
    fn new(job: &BenchJob, p: LlamaParams) -> Params {
        Params {
            threads: driver::threads_or_default(p.threads) as i32,
            n_gpu_layers: p.n_gpu_layers.unwrap_or(99),
            main_gpu: p.main_gpu,
            devices: p.devices,
            ctx: p.ctx.unwrap_or(0),
            batch: p.batch.unwrap_or(2048),
            ubatch: p.ubatch.unwrap_or(512),
            flash_attn: p.flash_attn.unwrap_or(Flag(false)).0,
            mmap: p.mmap.unwrap_or(Flag(true)).0,
            seed: p.seed.unwrap_or(job.seed),
            ignore_eos: p.ignore_eos.unwrap_or(true),
        }
    }
}

/// The build, for the manifest: crate versions (each pins a llama.cpp revision) and llama.cpp's
/// own system info (enabled CPU features and backends).
pub fn build_info() -> String {
    format!(
        "llama-cpp-2 {}, llama-cpp-sys-2 {}, ggml {} (commit {}); {}",
        crate::build_info::LLAMA_CPP_2_VERSION,
        crate::build_info::LLAMA_CPP_SYS_VERSION,
        c_text(llama_cpp_sys_2::ggml_version),
        c_text(llama_cpp_sys_2::ggml_commit),
        c_text(llama_cpp_sys_2::llama_print_system_info).trim_end_matches(['|', ' ']),
    )
}

/// Copies the text a llama.cpp/ggml info function returns.
#[allow(unsafe_code)]
fn c_text(f: unsafe extern "C" fn() -> *const std::os::raw::c_char) -> String {
    // SAFETY: these functions take no arguments and return a pointer to a static,
    // NUL-terminated string owned by the library (or null); it is copied out at once.
    unsafe {
        let p = f();
        if p.is_null() {
            return "unknown".into();
        }
        std::ffi::CStr::from_ptr(p)
            .to_string_lossy()
            .trim()
            .to_string()
    }
}

/// A llama.cpp context as a [`StepModel`]: prompts decoded in `batch`-sized chunks with logits
/// for the last token only, one token per decode during generation, and the logits copied out
/// only when the loop reads them (llama-bench copies none).
struct LlamaStep {
    ctx: LlamaContext<'static>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    n_ctx: usize,
}

impl StepModel for LlamaStep {
    fn reset(&mut self) -> Result<(), BackendError> {
        self.ctx.clear_kv_cache();
        Ok(())
    }

    fn forward(&mut self, ids: &[u32], pos: usize, logits: bool) -> Result<Vec<f32>, BackendError> {
        let mut last: i32 = 0;
        for (ci, chunk) in ids.chunks(self.n_batch).enumerate() {
            self.batch.clear();
            let base = pos + ci * self.n_batch;
            for (i, t) in chunk.iter().enumerate() {
                let p = base + i;
                self.batch
                    .add(
                        LlamaToken::new(*t as i32),
                        p as i32,
                        &[0],
                        p + 1 == pos + ids.len(),
                    )
                    .map_err(BackendError::engine("batch"))?;
            }
            self.ctx
                .decode(&mut self.batch)
                .map_err(BackendError::engine("decode"))?;
            self.ctx.synchronize();
            last = self.batch.n_tokens() - 1;
        }
        Ok(if logits {
            self.ctx.get_logits_ith(last).to_vec()
        } else {
            Vec::new()
        })
    }

    fn max_seq(&self) -> usize {
        self.n_ctx
    }

    fn warmup_batch(&self) -> usize {
        self.n_batch
    }
}

/// llama.cpp's own tokenizer and chat template, as the loop needs them.
struct LlamaTokens {
    model: &'static LlamaModel,
    add_bos: bool,
    template: Option<String>,
}

impl PromptTokenizer for LlamaTokens {
    fn vocab_size(&self) -> usize {
        self.model.n_vocab().max(1) as usize
    }
    fn encode(&self, text: &str) -> Result<Vec<u32>, BackendError> {
        Ok(self
            .model
            .vocab()
            .tokenize(text.as_bytes(), self.add_bos, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect())
    }
    fn bos(&self) -> Option<u32> {
        self.add_bos.then(|| self.model.vocab().bos().0 as u32)
    }
    fn is_eog(&self, id: u32) -> bool {
        self.model.vocab().is_eog(LlamaToken::new(id as i32))
    }
    fn chat_template(&self) -> Option<&str> {
        self.template.as_deref()
    }
}

/// Loads the model and makes a context sized as llama-bench sizes it (`ctx`, else exactly what
/// the scenario needs), then measures through the loop every in-process engine shares.
///
/// The backend and the model live as long as the worker process (one job each): they are
/// leaked, so that the context can borrow them from inside the loader.
fn run(
    job: &BenchJob,
    p: Params,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    let path = super::driver::model_path(job)?;
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let opts = DriveOpts {
        engine: "llama.cpp",
        seed: p.seed,
        ignore_eos: p.ignore_eos,
    };
    drive(job, job_id, sink, &opts, || {
        let backend: &'static LlamaBackend = Box::leak(Box::new(
            LlamaBackend::init().map_err(BackendError::engine("llama.cpp init"))?,
        ));
        let mut mparams = LlamaModelParams::default()
            .with_n_gpu_layers(p.n_gpu_layers)
            .with_use_mmap(p.mmap);
        if let Some(g) = p.main_gpu {
            mparams = mparams.with_main_gpu(g as i32);
        }
        if let Some(d) = &p.devices {
            let d: Vec<usize> = d.iter().map(|&i| i as usize).collect();
            mparams = mparams
                .with_devices(&d)
                .map_err(BackendError::engine("choosing the devices"))?;
        }
        let model: &'static LlamaModel = Box::leak(Box::new(
            LlamaModel::load_from_file(backend, &path, &mparams)
                .map_err(BackendError::engine("loading the model"))?,
        ));
        let tokens = LlamaTokens {
            model,
            add_bos: model.vocab().should_add_bos(),
            template: model
                .chat_template(None)
                .ok()
                .and_then(|t| t.to_string().ok()),
        };
        let scenario = &job.scenario;
        let n_gen = scenario.max_tokens as usize;
        let depth = scenario.depth() as u32;
        let n_ctx = match (driver::prompt_text(scenario, &tokens)?, p.ctx) {
            (_, c) if c > 0 => c,
            // As llama-bench: exactly what the test needs (a 0- or 1-token synthetic prompt is
            // its tg test, which decodes n_gen tokens in all).
            (None, _) => {
                let n_prompt = scenario.prompt_tokens.unwrap_or(0) as usize;
                let prompt = if n_prompt > 1 { n_prompt } else { 0 };
                ((prompt + n_gen).max(1) as u32).saturating_add(depth)
            }
            (Some(t), _) => {
                (tokens.encode(&t)?.len().saturating_add(n_gen).max(1) as u32).saturating_add(depth)
            }
        };
        let cparams = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(n_ctx))
            .with_n_batch(p.batch)
            .with_n_ubatch(p.ubatch)
            .with_n_threads(p.threads)
            .with_n_threads_batch(p.threads)
            .with_no_perf(false)
            .with_flash_attention_policy(if p.flash_attn {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
            } else {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
            });
        let ctx = model
            .new_context(backend, cparams)
            .map_err(BackendError::engine("creating the context"))?;
        let n_batch = ctx.n_batch().max(1) as usize;
        let step = LlamaStep {
            ctx,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            n_ctx: n_ctx as usize,
        };
        Ok((step, tokens))
    })
}
