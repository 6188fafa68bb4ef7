//! The llama.cpp backend (llama-cpp-2), measured the way llama-bench measures.
//!
//! - Synthetic scenarios (`prompt_tokens: N`) use random token ids from a seeded generator and no
//!   sampling, like llama-bench's pp/tg tests, so figures compare directly with its tables.
//! - Text scenarios apply the model's chat template, tokenize (timed apart), process the prompt
//!   in `batch`-sized chunks, then sample greedily; with `ignore_eos` (default) every repetition
//!   generates exactly `max_tokens` tokens.
//! - Warmup as llama-bench: an untimed prompt run and a one-token generation; the KV cache is
//!   cleared before every repetition.

use super::driver;
use super::params::{self, Flag, ParamProblem, TypedParams};
use super::{finish_rep, synthetic_tg_tps, text_tg_tps, BackendError, RepTimer, SampleSink};
use crate::backend::BenchJob;
use crate::results::{Millis, Sample};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

pub const PARAMS: &[&str] = &[
    "threads",
    "n_gpu_layers",
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
        at_most("ctx", self.ctx, 0, 1 << 24);
        at_most("batch", self.batch, 1, 1 << 20);
        at_most("ubatch", self.ubatch, 1, 1 << 20);
        out
    }
}

/// Parameters with llama-bench's meanings and defaults.
#[derive(Debug, Clone)]
struct Params {
    threads: i32,
    n_gpu_layers: u32,
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

/// Decodes `tokens` from position `start` in chunks of `batch`; logits only for the last token.
/// Returns the time spent in decode calls.
fn decode_prompt(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    tokens: &[LlamaToken],
    n_batch: usize,
) -> Result<Duration, BackendError> {
    let mut spent = Duration::ZERO;
    for (ci, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        let base = ci * n_batch;
        for (i, t) in chunk.iter().enumerate() {
            let pos = base + i;
            batch
                .add(*t, pos as i32, &[0], pos + 1 == tokens.len())
                .map_err(BackendError::engine("batch"))?;
        }
        let t0 = Instant::now();
        ctx.decode(batch)
            .map_err(BackendError::engine("prompt decode"))?;
        ctx.synchronize();
        spent += t0.elapsed();
    }
    Ok(spent)
}

/// Decodes one token at `pos` (logits on) and waits for it; returns the time in the engine, so
/// sampling time never includes waiting for the decode.
fn decode_one(
    ctx: &mut LlamaContext<'_>,
    batch: &mut LlamaBatch,
    tok: LlamaToken,
    pos: usize,
) -> Result<Duration, BackendError> {
    batch.clear();
    batch
        .add(tok, pos as i32, &[0], true)
        .map_err(BackendError::engine("batch"))?;
    let t0 = Instant::now();
    ctx.decode(batch).map_err(BackendError::engine("decode"))?;
    ctx.synchronize();
    Ok(t0.elapsed())
}

/// Greedy choice; with `ignore_eos`, the best token that does not end generation.
fn pick(
    ctx: &LlamaContext<'_>,
    model: &LlamaModel,
    sampler: &mut LlamaSampler,
    idx: i32,
    ignore_eos: bool,
) -> LlamaToken {
    let t = sampler.sample(ctx, idx);
    if !ignore_eos || !model.vocab().is_eog(t) {
        return t;
    }
    let vocab = model.vocab();
    ctx.candidates_ith(idx)
        .filter(|c| !vocab.is_eog(c.id()))
        .max_by(|a, b| a.logit().total_cmp(&b.logit()))
        .map(|c| c.id())
        .unwrap_or(t)
}

/// Long for now: llama-bench's sequence in one place (load, warmup, pp/tg or text repetitions);
/// moving it onto the shared `driver::drive` loop is the next step of the backend contract.
fn run(
    job: &BenchJob,
    p: Params,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    let path = super::driver::model_path(job)?;
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let backend = LlamaBackend::init().map_err(BackendError::engine("llama.cpp init"))?;

    let load_start = Instant::now();
    let mparams = LlamaModelParams::default()
        .with_n_gpu_layers(p.n_gpu_layers)
        .with_use_mmap(p.mmap);
    let model = LlamaModel::load_from_file(&backend, &path, &mparams)
        .map_err(BackendError::engine("loading the model"))?;
    let load_ms = Millis::from_duration(load_start.elapsed());

    let scenario = &job.scenario;
    let n_vocab = model.n_vocab().max(1);
    let vocab = model.vocab();
    let add_bos = vocab.should_add_bos();
    let n_prompt = scenario.prompt_tokens.unwrap_or(0) as usize;
    let n_gen = scenario.max_tokens as usize;

    // The prompt text, chat-templated when asked and the model has a template.
    let prompt_text = match (&scenario.prompt, scenario.chat) {
        (Some(text), true) => match model.chat_template(None) {
            Ok(tmpl) => {
                let mut msgs = Vec::new();
                if let Some(sys) = &scenario.system {
                    msgs.push(
                        LlamaChatMessage::new("system".into(), sys.clone())
                            .map_err(BackendError::engine("chat message"))?,
                    );
                }
                msgs.push(
                    LlamaChatMessage::new("user".into(), text.clone())
                        .map_err(BackendError::engine("chat message"))?,
                );
                Some(
                    model
                        .apply_chat_template(&tmpl, &msgs, true)
                        .map_err(BackendError::engine("chat template"))?,
                )
            }
            Err(_) => Some(text.clone()),
        },
        (Some(text), false) => Some(text.clone()),
        (None, _) => None,
    };
    // A synthetic prompt of 0 or 1 token is llama-bench's tg test: no prompt phase, generation
    // starts from BOS (or a random token), n_gen decodes in all.
    let synthetic_prompt = if prompt_text.is_none() && n_prompt > 1 {
        n_prompt
    } else {
        0
    };
    let n_ctx = match (&prompt_text, p.ctx) {
        (_, c) if c > 0 => c,
        // As llama-bench: exactly what the test needs.
        (None, _) => (synthetic_prompt + n_gen).max(1) as u32,
        (Some(t), _) => vocab
            .tokenize(t.as_bytes(), add_bos, true)
            .len()
            .saturating_add(n_gen)
            .max(1) as u32,
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
    let mut ctx = model
        .new_context(&backend, cparams)
        .map_err(BackendError::engine("creating the context"))?;
    let n_batch = ctx.n_batch().max(1) as usize;
    let mut batch = LlamaBatch::new(n_batch.max(1), 1);
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let random_token = |rng: &mut ChaCha8Rng| LlamaToken::new(rng.random_range(0..n_vocab));

    // Warmup, as llama-bench: an untimed prompt run and a one-token generation.
    for _ in 0..job.warmup.max(1) {
        ctx.clear_kv_cache();
        let warm: Vec<LlamaToken> = match &prompt_text {
            Some(t) => vocab
                .tokenize(t.as_bytes(), add_bos, true)
                .into_iter()
                .take(n_batch)
                .collect(),
            None => (0..synthetic_prompt.min(n_batch))
                .map(|_| random_token(&mut rng))
                .collect(),
        };
        if !warm.is_empty() {
            decode_prompt(&mut ctx, &mut batch, &warm, n_batch)?;
        }
        if n_gen > 0 {
            ctx.clear_kv_cache();
            let one = [if add_bos {
                vocab.bos()
            } else {
                random_token(&mut rng)
            }];
            decode_prompt(&mut ctx, &mut batch, &one, n_batch)?;
        }
    }

    for rep in 0..job.runs {
        ctx.clear_kv_cache();
        let mut sampler = LlamaSampler::greedy();
        let mut s = job.blank_sample(job_id, rep, false);
        s.load_ms = Some(load_ms);
        let timer = RepTimer::start();
        let mut sample_time = Duration::ZERO;

        // Prompt.
        let (tokens, tokenize) = match &prompt_text {
            Some(t) => {
                let t0 = Instant::now();
                let toks = vocab.tokenize(t.as_bytes(), add_bos, true);
                (toks, t0.elapsed())
            }
            None => {
                let mut toks = Vec::with_capacity(synthetic_prompt);
                if synthetic_prompt > 0 && add_bos {
                    toks.push(vocab.bos());
                }
                while toks.len() < synthetic_prompt {
                    toks.push(random_token(&mut rng));
                }
                (toks, Duration::ZERO)
            }
        };
        if tokens.len() + n_gen > n_ctx as usize {
            return Err(BackendError::Engine(format!(
                "prompt ({} tokens) + generation ({n_gen}) exceed the context of {n_ctx}",
                tokens.len()
            )));
        }
        s.tokenize_ms = Some(Millis::from_duration(tokenize));
        // For llama-bench's tg test the one "prompt" token is the first decoded token.
        s.prompt_tokens = Some(if prompt_text.is_none() {
            n_prompt
        } else {
            tokens.len()
        } as u64);
        let pp_time = if tokens.is_empty() {
            Duration::ZERO
        } else {
            decode_prompt(&mut ctx, &mut batch, &tokens, n_batch)?
        };
        if !tokens.is_empty() {
            s.pp_tps = Some(tokens.len() as f64 / pp_time.as_secs_f64().max(1e-9));
        }

        // Generation.
        let mut pos = tokens.len();
        let mut decode_time = Duration::ZERO;
        let gen_start = timer.at();
        if prompt_text.is_some() && n_gen > 0 {
            // Text: sample from the prompt's logits, then decode each sampled token.
            let t0 = Instant::now();
            let mut tok = pick(
                &ctx,
                &model,
                &mut sampler,
                batch.n_tokens() - 1,
                p.ignore_eos,
            );
            sample_time += t0.elapsed();
            s.token_ms.push(timer.at());
            // The first repetition's greedy output, for the agreement check across backends.
            let record = rep == 0;
            if record {
                let ids: Vec<u32> = tokens.iter().map(|t| t.0 as u32).collect();
                s.prompt_digest = Some(Sample::digest_ids(&ids));
                s.output_ids.push(tok.0 as u32);
            }
            while s.token_ms.len() < n_gen {
                if !p.ignore_eos && vocab.is_eog(tok) {
                    break;
                }
                decode_time += decode_one(&mut ctx, &mut batch, tok, pos)?;
                pos += 1;
                let t1 = Instant::now();
                tok = pick(&ctx, &model, &mut sampler, 0, p.ignore_eos);
                sample_time += t1.elapsed();
                s.token_ms.push(timer.at());
                if record {
                    s.output_ids.push(tok.0 as u32);
                }
            }
            s.tg_tps = text_tg_tps(&s.token_ms);
        } else if n_gen > 0 {
            // Synthetic, as llama-bench's tg test: decode random tokens one at a time, no sampling.
            let mut tok = if tokens.is_empty() && add_bos {
                vocab.bos()
            } else {
                random_token(&mut rng)
            };
            for _ in 0..n_gen {
                decode_time += decode_one(&mut ctx, &mut batch, tok, pos)?;
                pos += 1;
                s.token_ms.push(timer.at());
                tok = random_token(&mut rng);
            }
            s.tg_tps = Some(synthetic_tg_tps(&s.token_ms, gen_start));
        }
        finish_rep(&mut s, &timer, sample_time);
        tracing::debug!(
            "rep {rep}: prompt decode {:?}, generation decode {:?}, sampling {:?}",
            pp_time,
            decode_time,
            sample_time
        );
        sink.sample(s)?;
    }
    Ok(())
}
