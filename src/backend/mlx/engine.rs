//! The MLX engine: loading an MLX/Hugging Face Llama directory and its forward pass.

use crate::backend::driver::{self, drive, DriveOpts, StepModel};
use crate::backend::params::FloatType;
use crate::backend::BenchJob;
use crate::backend::{BackendError, SampleSink};
use crate::formats::tokenizer;
use mlx_rs::error::Exception;
use mlx_rs::fast::{rms_norm, rope, scaled_dot_product_attention, ScaledDotProductAttentionMask};
use mlx_rs::ops::{concatenate, dequantize, quantized_matmul};
use mlx_rs::{Array, Device, Dtype};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

// mlx-rs's `random` module calls macOS's `mach_approximate_time` to seed its default key; on
// Linux the symbol does not exist and linking fails wherever that module is linked in. minerva
// never uses MLX's random state (its prompts come from its own seeded generator), so a stand-in
// that returns 0 is enough; it is only linked on non-Apple targets.
#[cfg(not(target_os = "macos"))]
#[allow(unsafe_code)]
#[no_mangle]
pub extern "C" fn mach_approximate_time() -> u64 {
    0
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum DevicePick {
    Cpu,
    Gpu,
}

struct Params {
    device: DevicePick,
    threads: usize,
    dtype: Option<Dtype>,
    seed: u64,
    ignore_eos: bool,
    tokenizer: Option<std::path::PathBuf>,
}

impl Params {
    fn new(job: &BenchJob, p: super::MlxParams) -> Result<Params, BackendError> {
        let device = match p.device {
            None if gpu_available() => DevicePick::Gpu,
            None | Some(super::Device::Cpu) => DevicePick::Cpu,
            Some(super::Device::Gpu) => {
                if !gpu_available() {
                    return Err(BackendError::Param {
                        name: "device".into(),
                        message:
                        "this MLX library has no GPU backend (the Linux `mlx-cpu` build runs on \
                         the CPU only); use `device: cpu`"
                            .into(),
                    });
                }
                DevicePick::Gpu
            }
        };
        // Default: as stored.
        let dtype = p.dtype.map(|t| match t {
            FloatType::F32 => Dtype::Float32,
            FloatType::Bf16 => Dtype::Bfloat16,
            FloatType::F16 => Dtype::Float16,
        });
        Ok(Params {
            device,
            threads: driver::threads_or_default(p.threads),
            dtype,
            seed: p.seed.unwrap_or(job.seed),
            ignore_eos: p.ignore_eos.unwrap_or(true),
            tokenizer: p.tokenizer.map(std::path::PathBuf::from),
        })
    }
}

#[allow(unsafe_code)]
fn gpu_available() -> bool {
    let mut available = false;
    // SAFETY: mlx-c writes one bool through the pointer, which lives for the call.
    let rc = unsafe { mlx_sys::mlx_metal_is_available(&mut available) };
    rc == 0 && available
}

/// MLX's own version string (the library linked at run time, not the crate's).
#[allow(unsafe_code)]
fn mlx_version() -> String {
    // SAFETY: mlx_string_new makes an empty string that mlx_version fills; the data pointer is
    // read (copied) before mlx_string_free releases it.
    unsafe {
        let mut s = mlx_sys::mlx_string_new();
        let v = if mlx_sys::mlx_version(&mut s) == 0 {
            let p = mlx_sys::mlx_string_data(s);
            if p.is_null() {
                "unknown".to_string()
            } else {
                std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        } else {
            "unknown".to_string()
        };
        mlx_sys::mlx_string_free(s);
        v
    }
}

/// The BLAS library MLX's CPU matmuls went through, as the dynamic loader mapped it (Linux).
fn blas_library() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter_map(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .find(|n| n.to_lowercase().contains("blas") && n.contains(".so"))
}

/// Sizes OpenBLAS's thread pool when OpenBLAS is the BLAS this process loaded; false when it
/// is not (the wheel's reference BLAS is single-threaded).
#[allow(unsafe_code)]
fn set_blas_threads(n: usize) -> bool {
    let name = c"openblas_set_num_threads";
    // SAFETY: dlsym on the global scope with a NUL-terminated name; when found, the symbol is
    // OpenBLAS's `void openblas_set_num_threads(int)`, called with a positive int before any
    // BLAS work of this process.
    unsafe {
        let f = libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr());
        if f.is_null() {
            return false;
        }
        let f: extern "C" fn(libc::c_int) = std::mem::transmute(f);
        f(n as libc::c_int);
    }
    true
}

pub fn build_info() -> String {
    let device = if gpu_available() {
        "gpu (Metal) and cpu"
    } else {
        "cpu only"
    };
    let mut s = format!(
        "MLX {}, mlx-sys {} (mlx-c), mlx-rs {}; devices: {device}",
        mlx_version(),
        crate::build_info::MLX_SYS_VERSION,
        crate::build_info::MLX_RS_VERSION,
    );
    if let Some(blas) = blas_library() {
        s.push_str(&format!("; CPU BLAS: {blas}"));
    }
    s
}

fn exc(what: &'static str) -> impl Fn(Exception) -> BackendError {
    move |e| BackendError::Engine(format!("{what}: {e}"))
}

/// A projection: a plain weight `[out, in]`, or MLX's affine quantization of it (packed U32
/// weight, scales and biases per `group` inputs).
struct Linear {
    weight: Array,
    quant: Option<Quant>,
}

struct Quant {
    scales: Array,
    biases: Array,
    group: i32,
    bits: i32,
}

impl Linear {
    fn apply(&self, x: &Array) -> Result<Array, Exception> {
        match &self.quant {
            Some(q) => {
                quantized_matmul(x, &self.weight, &q.scales, &q.biases, true, q.group, q.bits)
            }
            None => x.matmul(self.weight.t()),
        }
    }

    /// Rows of an embedding table.
    fn rows(&self, ids: &Array) -> Result<Array, Exception> {
        match &self.quant {
            Some(q) => dequantize(
                self.weight.take_axis(ids, 0)?,
                q.scales.take_axis(ids, 0)?,
                &q.biases.take_axis(ids, 0)?,
                q.group,
                q.bits,
            ),
            None => self.weight.take_axis(ids, 0),
        }
    }
}

struct Layer {
    input_norm: Array,
    post_norm: Array,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Config {
    layers: usize,
    heads: i32,
    kv_heads: i32,
    head_dim: i32,
    eps: f32,
    rope_theta: f32,
    rope_traditional: bool,
    rope_scale: f32,
    max_pos: usize,
}

pub(super) struct MlxModel {
    cfg: Config,
    embed: Linear,
    layers: Vec<Layer>,
    norm: Array,
    /// None: the output head is the embedding table (tied).
    head: Option<Linear>,
    cache: Vec<Option<(Array, Array)>>,
    cached: usize,
}

fn cfg_err(path: &Path, key: &str, what: &str) -> BackendError {
    BackendError::Engine(format!("{}: `{key}` {what}", path.display()))
}

fn parse_config(path: &Path, v: &Value) -> Result<Config, BackendError> {
    let int = |k: &str| v.get(k).and_then(Value::as_u64);
    let need = |k: &str| int(k).ok_or_else(|| cfg_err(path, k, "is missing or not an integer"));
    let hidden = need("hidden_size")?;
    let heads = need("num_attention_heads")?;
    if heads == 0 || hidden % heads != 0 && int("head_dim").is_none() {
        return Err(cfg_err(
            path,
            "num_attention_heads",
            "must divide hidden_size",
        ));
    }
    let kv_heads = int("num_key_value_heads").unwrap_or(heads);
    if kv_heads == 0 || heads % kv_heads != 0 {
        return Err(cfg_err(
            path,
            "num_key_value_heads",
            "must divide num_attention_heads",
        ));
    }
    let rope_scale = match v.get("rope_scaling") {
        None | Some(Value::Null) => 1.0,
        Some(s) => {
            let kind = s
                .get("type")
                .or_else(|| s.get("rope_type"))
                .and_then(Value::as_str)
                .unwrap_or("");
            let factor = s.get("factor").and_then(Value::as_f64).unwrap_or(1.0);
            match kind {
                "linear" if factor > 0.0 => (1.0 / factor) as f32,
                "default" => 1.0,
                other => {
                    return Err(cfg_err(
                        path,
                        "rope_scaling",
                        &format!(
                            "of type `{other}` is not supported by the MLX backend (linear only)"
                        ),
                    ))
                }
            }
        }
    };
    Ok(Config {
        layers: need("num_hidden_layers")? as usize,
        heads: heads as i32,
        kv_heads: kv_heads as i32,
        head_dim: int("head_dim").unwrap_or(hidden / heads) as i32,
        eps: v
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5) as f32,
        rope_theta: v
            .get("rope_theta")
            .and_then(Value::as_f64)
            .unwrap_or(10000.0) as f32,
        rope_traditional: v
            .get("rope_traditional")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        rope_scale,
        max_pos: int("max_position_embeddings").unwrap_or(u64::MAX) as usize,
    })
}

/// Reads the weights of a directory and assembles the model.
struct Loader<'a> {
    dir: &'a Path,
    tensors: HashMap<String, Array>,
    /// `quantization` (or `quantization_config`) of config.json.
    quant: Option<&'a Value>,
    dtype: Option<Dtype>,
}

impl Loader<'_> {
    fn take(&mut self, name: &str) -> Result<Array, BackendError> {
        let a = self.tensors.remove(name).ok_or_else(|| {
            BackendError::Engine(format!(
                "{}: tensor `{name}` is missing",
                self.dir.display()
            ))
        })?;
        self.cast(a)
    }

    fn cast(&self, a: Array) -> Result<Array, BackendError> {
        match self.dtype {
            Some(d) if a.dtype() != d && is_float(a.dtype()) => {
                a.as_dtype(d).map_err(exc("casting the weights"))
            }
            _ => Ok(a),
        }
    }

    /// `prefix.weight`, quantized when `prefix.scales` exists.
    fn linear(&mut self, prefix: &str) -> Result<Linear, BackendError> {
        let scales_name = format!("{prefix}.scales");
        if !self.tensors.contains_key(&scales_name) {
            return Ok(Linear {
                weight: self.take(&format!("{prefix}.weight"))?,
                quant: None,
            });
        }
        // Packed U32: `take` casts floating-point tensors only.
        let weight = self.take(&format!("{prefix}.weight"))?;
        let scales = self.take(&scales_name)?;
        let biases = self.take(&format!("{prefix}.biases"))?;
        let (group, bits) = self.quant_of(prefix)?;
        Ok(Linear {
            weight,
            quant: Some(Quant {
                scales,
                biases,
                group,
                bits,
            }),
        })
    }

    /// Group size and bits of a quantized module: its own entry in `quantization`, else the
    /// global one.
    fn quant_of(&self, prefix: &str) -> Result<(i32, i32), BackendError> {
        let Some(q) = self.quant else {
            return Err(BackendError::Engine(format!(
                "{}: `{prefix}` is quantized (it has scales) but config.json has no \
                 `quantization`",
                self.dir.display()
            )));
        };
        let entry = q.get(prefix).filter(|e| e.is_object()).unwrap_or(q);
        let mode = entry
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("affine");
        if mode != "affine" {
            return Err(BackendError::Engine(format!(
                "{}: quantization mode `{mode}` of `{prefix}`: the MLX backend runs affine \
                 quantization only",
                self.dir.display()
            )));
        }
        let get = |k: &str| entry.get(k).and_then(Value::as_i64).map(|n| n as i32);
        match (get("group_size"), get("bits")) {
            (Some(g), Some(b)) => Ok((g, b)),
            _ => Err(BackendError::Engine(format!(
                "{}: `quantization` lacks group_size or bits for `{prefix}`",
                self.dir.display()
            ))),
        }
    }
}

fn is_float(d: Dtype) -> bool {
    matches!(d, Dtype::Float32 | Dtype::Float16 | Dtype::Bfloat16)
}

fn load(dir: &Path, p: &Params) -> Result<MlxModel, BackendError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|e| BackendError::Engine(format!("{}: {e}", cfg_path.display())))?;
    let raw: Value = serde_json::from_str(&text)
        .map_err(|e| BackendError::Engine(format!("{}: {e}", cfg_path.display())))?;
    let model_type = raw
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !matches!(model_type, "llama" | "mistral") {
        return Err(BackendError::Engine(format!(
            "{}: model_type `{model_type}` is not one the MLX backend runs (llama, mistral)",
            cfg_path.display()
        )));
    }
    let cfg = parse_config(&cfg_path, &raw)?;
    let mut tensors = HashMap::new();
    for file in crate::backend::candle::weight_files(dir)? {
        let part = Array::load_safetensors(&file)
            .map_err(|e| BackendError::Engine(format!("{}: {e}", file.display())))?;
        tensors.extend(part);
    }
    let mut l = Loader {
        dir,
        tensors,
        quant: raw
            .get("quantization")
            .or_else(|| raw.get("quantization_config")),
        dtype: p.dtype,
    };
    let embed = l.linear("model.embed_tokens")?;
    let mut layers = Vec::with_capacity(cfg.layers);
    for i in 0..cfg.layers {
        let n = |t: &str| format!("model.layers.{i}.{t}");
        layers.push(Layer {
            input_norm: l.take(&n("input_layernorm.weight"))?,
            post_norm: l.take(&n("post_attention_layernorm.weight"))?,
            q: l.linear(&n("self_attn.q_proj"))?,
            k: l.linear(&n("self_attn.k_proj"))?,
            v: l.linear(&n("self_attn.v_proj"))?,
            o: l.linear(&n("self_attn.o_proj"))?,
            gate: l.linear(&n("mlp.gate_proj"))?,
            up: l.linear(&n("mlp.up_proj"))?,
            down: l.linear(&n("mlp.down_proj"))?,
        });
    }
    let norm = l.take("model.norm.weight")?;
    let head = if l.tensors.contains_key("lm_head.weight") {
        Some(l.linear("lm_head")?)
    } else {
        None
    };
    let model = MlxModel {
        cache: vec![None; cfg.layers],
        cfg,
        embed,
        layers,
        norm,
        head,
        cached: 0,
    };
    // MLX loads lazily: read every weight now so that loading is not timed as the first
    // forward pass.
    model.eval_weights().map_err(exc("reading the weights"))?;
    Ok(model)
}

impl MlxModel {
    fn eval_weights(&self) -> Result<(), Exception> {
        let mut all: Vec<&Array> = vec![&self.norm];
        let linears = self
            .layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .chain(std::iter::once(&self.embed))
            .chain(self.head.iter());
        for x in linears {
            all.push(&x.weight);
            if let Some(q) = &x.quant {
                all.push(&q.scales);
                all.push(&q.biases);
            }
        }
        for l in &self.layers {
            all.push(&l.input_norm);
            all.push(&l.post_norm);
        }
        mlx_rs::transforms::eval(all)
    }

    fn step(&mut self, ids: &[u32], pos: usize) -> Result<Vec<f32>, Exception> {
        let c = &self.cfg;
        let n = ids.len() as i32;
        let ids = Array::from_slice(ids, &[1, n]);
        let mut h = self.embed.rows(&ids)?;
        let scale = (c.head_dim as f32).powf(-0.5);
        for (i, layer) in self.layers.iter().enumerate() {
            let x = rms_norm(&h, Some(&layer.input_norm), c.eps)?;
            let heads = |t: Array, count: i32| -> Result<Array, Exception> {
                t.reshape(&[1, n, count, c.head_dim])?
                    .transpose_axes(&[0, 2, 1, 3])
            };
            let rot = |t: Array| -> Result<Array, Exception> {
                rope(
                    t,
                    c.head_dim,
                    c.rope_traditional,
                    c.rope_theta,
                    c.rope_scale,
                    pos as i32,
                    None,
                )
            };
            let q = rot(heads(layer.q.apply(&x)?, c.heads)?)?;
            let mut k = rot(heads(layer.k.apply(&x)?, c.kv_heads)?)?;
            let mut v = heads(layer.v.apply(&x)?, c.kv_heads)?;
            if let Some((ck, cv)) = &self.cache[i] {
                k = concatenate(&[ck, &k], 2)?;
                v = concatenate(&[cv, &v], 2)?;
            }
            let mask = (n > 1).then_some(ScaledDotProductAttentionMask::Causal);
            let att = scaled_dot_product_attention(&q, &k, &v, scale, mask, None)?
                .transpose_axes(&[0, 2, 1, 3])?
                .reshape(&[1, n, c.heads * c.head_dim])?;
            self.cache[i] = Some((k, v));
            h = h.add(layer.o.apply(&att)?)?;
            let x = rms_norm(&h, Some(&layer.post_norm), c.eps)?;
            let g = layer.gate.apply(&x)?;
            let act = g.multiply(mlx_rs::ops::sigmoid(&g)?)?;
            let m = act.multiply(layer.up.apply(&x)?)?;
            h = h.add(layer.down.apply(&m)?)?;
        }
        let last = h.take_axis(Array::from_int(n - 1), 1)?;
        let out = rms_norm(&last, Some(&self.norm), c.eps)?;
        let logits = self.head.as_ref().unwrap_or(&self.embed).apply(&out)?;
        let logits = logits.as_dtype(Dtype::Float32)?;
        logits.eval()?;
        Ok(logits.as_slice::<f32>().to_vec())
    }
}

impl StepModel for MlxModel {
    fn reset(&mut self) -> Result<(), BackendError> {
        self.cache.iter_mut().for_each(|c| *c = None);
        self.cached = 0;
        Ok(())
    }

    /// MLX is lazy: the logits are always evaluated and copied, whatever `_logits` says, so the
    /// pass really runs.
    fn forward(
        &mut self,
        ids: &[u32],
        pos: usize,
        _logits: bool,
    ) -> Result<Vec<f32>, BackendError> {
        if pos != self.cached {
            return Err(BackendError::Engine(format!(
                "forward at position {pos} with {} cached positions",
                self.cached
            )));
        }
        let logits = self.step(ids, pos).map_err(exc("forward pass"))?;
        self.cached += ids.len();
        Ok(logits)
    }

    fn max_seq(&self) -> usize {
        self.cfg.max_pos
    }
}

pub fn run(
    job: &BenchJob,
    params: super::MlxParams,
    job_id: &str,
    sink: &mut dyn SampleSink,
) -> Result<(), BackendError> {
    let p = Params::new(job, params)?;
    let path = driver::model_path(job)?;
    if !path.is_dir() {
        return Err(BackendError::Engine(format!(
            "{}: the MLX backend loads model directories (config.json + *.safetensors); \
             convert GGUF files with a `convert` source",
            path.display()
        )));
    }
    if !set_blas_threads(p.threads) && p.threads != 1 {
        tracing::warn!(
            "threads = {}: the CPU BLAS loaded ({}) is not OpenBLAS; MLX's matmuls run on one \
             thread",
            p.threads,
            blas_library().unwrap_or_else(|| "unknown".into())
        );
    }
    Device::set_default(&match p.device {
        DevicePick::Cpu => Device::cpu(),
        DevicePick::Gpu => Device::gpu(),
    });
    let opts = DriveOpts {
        engine: "mlx",
        seed: p.seed,
        ignore_eos: p.ignore_eos,
    };
    drive(job, job_id, sink, &opts, || {
        let model = load(&path, &p)?;
        let tok =
            tokenizer::from_dir(&path, p.tokenizer.as_deref()).map_err(BackendError::Engine)?;
        Ok((model, tok))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_refusals() {
        let p = Path::new("m/config.json");
        let c = parse_config(
            p,
            &serde_json::json!({"hidden_size": 576, "num_attention_heads": 9,
                "num_hidden_layers": 30, "rope_theta": 100000.0}),
        )
        .unwrap();
        assert_eq!((c.heads, c.kv_heads, c.head_dim, c.layers), (9, 9, 64, 30));
        assert_eq!((c.eps, c.rope_theta, c.rope_scale), (1e-5, 100000.0, 1.0));
        assert!(!c.rope_traditional);
        let linear = parse_config(
            p,
            &serde_json::json!({"hidden_size": 64, "num_attention_heads": 4,
                "num_key_value_heads": 2, "num_hidden_layers": 1,
                "rope_scaling": {"type": "linear", "factor": 4.0}}),
        )
        .unwrap();
        assert_eq!((linear.kv_heads, linear.rope_scale), (2, 0.25));
        let err = |v: Value| parse_config(p, &v).err().map(|e| e.to_string()).unwrap();
        let e = err(
            serde_json::json!({"hidden_size": 64, "num_attention_heads": 4,
            "num_hidden_layers": 1, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}),
        );
        assert!(
            e.contains("m/config.json: `rope_scaling` of type `llama3`"),
            "{e}"
        );
        let e = err(
            serde_json::json!({"hidden_size": 64, "num_attention_heads": 4,
            "num_key_value_heads": 3, "num_hidden_layers": 1}),
        );
        assert!(e.contains("`num_key_value_heads` must divide"), "{e}");
        let e = err(serde_json::json!({"num_attention_heads": 4, "num_hidden_layers": 1}));
        assert!(e.contains("`hidden_size` is missing"), "{e}");
    }
}
