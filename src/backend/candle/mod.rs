//! The candle backend (candle-core / candle-transformers, CPU), measured exactly as the llama.cpp
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

pub mod tokenizer;

use super::{finish_rep, synthetic_tg_tps, text_tg_tps, BackendError, RepTimer, SampleSink};
use crate::plan::BenchJob;
use crate::results::{Millis, Sample};
use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use candle_transformers::models::{llama, mistral, quantized_llama};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokenizer::ModelTokenizer;

pub const PARAMS: &[&str] = &["threads", "dtype", "seed", "ignore_eos", "tokenizer"];

/// The llama.cpp backend's default batch: the warmup prompt is cut to it in both backends, so
/// both draw the same number of random tokens.
const WARMUP_BATCH: usize = 2048;

#[derive(Debug, Clone)]
struct Params {
    threads: usize,
    dtype: DType,
    seed: u64,
    ignore_eos: bool,
    tokenizer: Option<PathBuf>,
}

fn param_err(name: &str, message: String) -> BackendError {
    BackendError::Param {
        name: name.into(),
        message,
    }
}

impl Params {
    fn from_job(job: &BenchJob) -> Result<Params, BackendError> {
        let threads = match job.params.get("threads") {
            None => super::llama_cpp::default_threads() as usize,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| param_err("threads", format!("expected 1 to 1024, found {v}")))?
                as usize,
        };
        let dtype = match job.params.get("dtype") {
            None => DType::F32,
            Some(Value::String(s)) => match s.as_str() {
                "f32" => DType::F32,
                "bf16" => DType::BF16,
                "f16" => DType::F16,
                other => {
                    return Err(param_err(
                        "dtype",
                        format!("expected f32, bf16 or f16, found `{other}`"),
                    ))
                }
            },
            Some(v) => return Err(param_err("dtype", format!("expected a string, found {v}"))),
        };
        let seed = match job.params.get("seed") {
            None => job.seed,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| param_err("seed", format!("expected an integer, found {v}")))?,
        };
        let ignore_eos = match job.params.get("ignore_eos") {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => {
                return Err(param_err(
                    "ignore_eos",
                    format!("expected true or false, found {v}"),
                ))
            }
        };
        let tokenizer = match job.params.get("tokenizer") {
            None => None,
            Some(Value::String(s)) => Some(PathBuf::from(s)),
            Some(v) => {
                return Err(param_err(
                    "tokenizer",
                    format!("expected a path, found {v}"),
                ))
            }
        };
        Ok(Params {
            threads,
            dtype,
            seed,
            ignore_eos,
            tokenizer,
        })
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
        "candle-core {}, candle-transformers {}, tokenizers {}; CPU, compiled with {}",
        crate::build_info::CANDLE_CORE_VERSION,
        crate::build_info::CANDLE_TRANSFORMERS_VERSION,
        crate::build_info::TOKENIZERS_VERSION,
        if features.is_empty() {
            "no SIMD features (scalar kernels: expect several times slower figures)".to_string()
        } else {
            features.join(" ")
        }
    )
}

/// A loaded model: one forward pass at a time, returning the last position's logits.
enum Engine {
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

impl Engine {
    fn reset(&mut self) -> candle_core::Result<()> {
        match self {
            Engine::Quantized(m) => m.clear_kv_cache(),
            Engine::Llama(l) => {
                l.cache = llama::Cache::new(true, l.dtype, &l.config, &Device::Cpu)?
            }
            Engine::Mistral(m) => m.clear_kv_cache(),
        }
        Ok(())
    }

    fn forward(&mut self, ids: &[u32], pos: usize) -> candle_core::Result<Vec<f32>> {
        let input = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
        let logits = match self {
            Engine::Quantized(m) => m.forward(&input, pos)?,
            Engine::Llama(l) => l.model.forward(&input, pos, &mut l.cache)?,
            Engine::Mistral(m) => m.forward(&input, pos)?,
        };
        logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()
    }

    /// The longest sequence (prompt + generation) the model's position tables cover.
    fn max_seq(&self) -> usize {
        match self {
            Engine::Quantized(_) => quantized_llama::MAX_SEQ_LEN,
            Engine::Llama(l) => l.config.max_position_embeddings,
            Engine::Mistral(_) => usize::MAX,
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
    let model = quantized_llama::ModelWeights::from_gguf(content, &mut file, &Device::Cpu)
        .map_err(BackendError::engine("loading the GGUF weights"))?;
    Ok((Engine::Quantized(Box::new(model)), tok))
}

/// A GGUF's `general.architecture` (empty when absent).
pub fn architecture(content: &gguf_file::Content) -> String {
    content
        .metadata
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default()
}

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
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, BackendError> {
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
) -> Result<candle_nn::VarBuilder<'static>, BackendError> {
    // SAFETY: the files are memory-mapped read-only for the life of the worker process; the
    // verify stage checked their structure, and a run does not modify model files while a
    // worker reads them (changing them underneath would corrupt the figures, not memory safety
    // of anything but the mapped bytes candle copies out).
    unsafe { candle_nn::VarBuilder::from_mmaped_safetensors(files, dtype, &Device::Cpu) }
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
    let vb = mmap_weights(&files, p.dtype)?;
    let engine = match model_type.as_str() {
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
            let cache = llama::Cache::new(true, p.dtype, &config, &Device::Cpu)
                .map_err(BackendError::engine("creating the KV cache"))?;
            Engine::Llama(Box::new(LlamaEngine {
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
            Engine::Mistral(Box::new(model))
        }
        other => {
            return Err(BackendError::Engine(format!(
                "{}: model_type `{other}` is not one the candle backend runs (llama, mistral)",
                cfg_path.display()
            )))
        }
    };
    Ok((engine, tok))
}

/// Greedy choice; with `ignore_eos`, the best token that does not end generation.
fn pick(logits: &[f32], tok: &ModelTokenizer, ignore_eos: bool) -> u32 {
    let argmax = |skip_eog: bool| {
        let mut best: Option<(usize, f32)> = None;
        for (i, &l) in logits.iter().enumerate() {
            if best.is_none_or(|(_, b)| l > b) && !(skip_eog && tok.eog.contains(&(i as u32))) {
                best = Some((i, l));
            }
        }
        best.map(|(i, _)| i as u32).unwrap_or(0)
    };
    // The first maximum, as llama.cpp's greedy sampler; a second pass only when it ends
    // generation and `ignore_eos` asks for the best token that does not.
    let t = argmax(false);
    if ignore_eos && tok.eog.contains(&t) {
        argmax(true)
    } else {
        t
    }
}

fn set_threads(n: usize) {
    // Read by candle (CANDLE_NUM_THREADS: its barrier pool; RAYON_NUM_THREADS: rayon's global
    // pool and gemm). The worker is still single-threaded here: nothing else reads the
    // environment concurrently.
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
}

pub fn run(job: &BenchJob, job_id: &str, sink: &mut dyn SampleSink) -> Result<(), BackendError> {
    let p = Params::from_job(job)?;
    let Some(path) = job.model.local_path() else {
        return Err(BackendError::Engine(format!(
            "model `{}` has no local file",
            job.model.name
        )));
    };
    set_threads(p.threads);

    let load_start = Instant::now();
    let (mut model, tok) = if path.is_dir() {
        load_dir(&path, &p)?
    } else {
        load_gguf(&path, &p)?
    };
    let load_ms = Millis::from_duration(load_start.elapsed());
    let fwd =
        |m: &mut Engine, ids: &[u32], pos: usize| -> Result<(Vec<f32>, Duration), BackendError> {
            let t0 = Instant::now();
            let logits = m
                .forward(ids, pos)
                .map_err(BackendError::engine("forward pass"))?;
            Ok((logits, t0.elapsed()))
        };

    let scenario = &job.scenario;
    let n_vocab = tok.vocab_size().max(1) as i32;
    let n_prompt = scenario.prompt_tokens.unwrap_or(0) as usize;
    let n_gen = scenario.max_tokens as usize;
    let prompt_text = match (&scenario.prompt, scenario.chat) {
        (Some(text), true) => match &tok.chat_template {
            Some(tmpl) => Some(
                super::chat::apply(tmpl, scenario.system.as_deref(), text)
                    .map_err(BackendError::Engine)?,
            ),
            None => Some(text.clone()),
        },
        (Some(text), false) => Some(text.clone()),
        (None, _) => None,
    };
    let synthetic_prompt = if prompt_text.is_none() && n_prompt > 1 {
        n_prompt
    } else {
        0
    };
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let random_token = |rng: &mut ChaCha8Rng| rng.random_range(0..n_vocab) as u32;
    let bos = tok.bos.filter(|_| tok.add_bos);

    // Warmup, as the llama.cpp backend (and llama-bench): an untimed prompt run and a one-token
    // generation, drawing the same random tokens.
    for _ in 0..job.warmup.max(1) {
        model
            .reset()
            .map_err(BackendError::engine("clearing the KV cache"))?;
        let warm: Vec<u32> = match &prompt_text {
            Some(t) => tok
                .encode(t)
                .map_err(BackendError::Engine)?
                .into_iter()
                .take(WARMUP_BATCH)
                .collect(),
            None => (0..synthetic_prompt.min(WARMUP_BATCH))
                .map(|_| random_token(&mut rng))
                .collect(),
        };
        if !warm.is_empty() {
            fwd(&mut model, &warm, 0)?;
        }
        if n_gen > 0 {
            model
                .reset()
                .map_err(BackendError::engine("clearing the KV cache"))?;
            let one = [bos.unwrap_or_else(|| random_token(&mut rng))];
            fwd(&mut model, &one, 0)?;
        }
    }

    for rep in 0..job.runs {
        model
            .reset()
            .map_err(BackendError::engine("clearing the KV cache"))?;
        let mut s = Sample::blank(job_id, job, rep, false);
        s.load_ms = Some(load_ms);
        let timer = RepTimer::start();
        let mut sample_time = Duration::ZERO;

        let (tokens, tokenize) = match &prompt_text {
            Some(t) => {
                let t0 = Instant::now();
                let ids = tok.encode(t).map_err(BackendError::Engine)?;
                (ids, t0.elapsed())
            }
            None => {
                let mut ids = Vec::with_capacity(synthetic_prompt);
                if synthetic_prompt > 0 {
                    ids.extend(bos);
                }
                while ids.len() < synthetic_prompt {
                    ids.push(random_token(&mut rng));
                }
                (ids, Duration::ZERO)
            }
        };
        if tokens.len() + n_gen > model.max_seq() {
            return Err(BackendError::Engine(format!(
                "prompt ({} tokens) + generation ({n_gen}) exceed the {} positions candle's \
                 model supports",
                tokens.len(),
                model.max_seq()
            )));
        }
        s.tokenize_ms = Some(Millis::from_duration(tokenize));
        s.prompt_tokens = Some(if prompt_text.is_none() {
            n_prompt
        } else {
            tokens.len()
        } as u64);
        let (mut logits, pp_time) = if tokens.is_empty() {
            (Vec::new(), Duration::ZERO)
        } else {
            fwd(&mut model, &tokens, 0)?
        };
        if !tokens.is_empty() {
            s.pp_tps = Some(tokens.len() as f64 / pp_time.as_secs_f64().max(1e-9));
        }

        let mut pos = tokens.len();
        let mut decode_time = Duration::ZERO;
        let gen_start = timer.at();
        if prompt_text.is_some() && n_gen > 0 {
            let t0 = Instant::now();
            let mut next = pick(&logits, &tok, p.ignore_eos);
            sample_time += t0.elapsed();
            s.token_ms.push(timer.at());
            let record = rep == 0;
            if record {
                s.prompt_digest = Some(Sample::digest_ids(&tokens));
                s.output_ids.push(next);
            }
            while s.token_ms.len() < n_gen {
                if !p.ignore_eos && tok.eog.contains(&next) {
                    break;
                }
                let (l, d) = fwd(&mut model, &[next], pos)?;
                logits = l;
                decode_time += d;
                pos += 1;
                let t1 = Instant::now();
                next = pick(&logits, &tok, p.ignore_eos);
                sample_time += t1.elapsed();
                s.token_ms.push(timer.at());
                if record {
                    s.output_ids.push(next);
                }
            }
            s.tg_tps = text_tg_tps(&s.token_ms);
        } else if n_gen > 0 {
            let mut next = match (tokens.is_empty(), bos) {
                (true, Some(b)) => b,
                _ => random_token(&mut rng),
            };
            for _ in 0..n_gen {
                decode_time += fwd(&mut model, &[next], pos)?.1;
                pos += 1;
                s.token_ms.push(timer.at());
                next = random_token(&mut rng);
            }
            s.tg_tps = Some(synthetic_tg_tps(&s.token_ms, gen_start));
        }
        finish_rep(&mut s, &timer, sample_time);
        tracing::debug!(
            "rep {rep}: prompt {:?}, generation decode {:?}, sampling {:?}",
            pp_time,
            decode_time,
            sample_time
        );
        sink.sample(s)?;
    }
    Ok(())
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
    fn greedy_pick_skips_end_of_generation_only_when_asked() {
        let tok = ModelTokenizer {
            tokenizer: tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default()),
            eog: [2].into_iter().collect(),
            bos: None,
            eos: Some(2),
            add_bos: false,
            chat_template: None,
        };
        let logits = [0.1, 0.5, 0.9, 0.9, 0.2];
        assert_eq!(pick(&logits, &tok, false), 2, "the first maximum");
        assert_eq!(
            pick(&logits, &tok, true),
            3,
            "the best that does not end generation"
        );
        assert_eq!(pick(&[0.1, 0.5, 0.2], &tok, true), 1);
    }
}
