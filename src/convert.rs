//! `minerva convert gguf-to-safetensors`: a full-precision Hugging Face-style copy of a GGUF model.
//!
//! Every tensor is dequantized (F32, then the dtype asked for), renamed to the Hugging Face names
//! `models::llama` expects, and the Q/K projections are row-permuted back (GGUF stores them in
//! llama.cpp's rotary layout). Written beside it: `config.json` from the GGUF metadata,
//! `tokenizer.json` rebuilt from the embedded vocabulary, `tokenizer_config.json` with the chat
//! template, and `minerva-convert.json` recording the source file and its sha256. The directory
//! is assembled under a temporary name, every file fsynced, then renamed into place: a
//! conversion that fails leaves nothing that looks finished.
//!
//! The weights are the GGUF's quantized values made exact in F32: the copy cannot be more
//! accurate than its source, and its greedy output agrees with the GGUF's only up to the
//! rounding of the quantized kernels (the agreement check of a run shows how far).

use crate::formats::tokenizer;
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Output(String),
}

/// What a conversion wrote.
#[derive(Debug)]
pub struct Converted {
    pub dir: PathBuf,
    pub tensors: usize,
    pub parameters: u64,
    pub bytes: u64,
    pub dtype: DType,
}

pub fn parse_dtype(s: &str) -> Option<DType> {
    match s {
        "f32" => Some(DType::F32),
        "bf16" => Some(DType::BF16),
        "f16" => Some(DType::F16),
        _ => None,
    }
}

/// The Hugging Face name of a GGUF tensor of the `llama` architecture.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, name) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match name {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Undoes llama.cpp's rotary row permutation of a Q or K weight `[rows, cols]` with `heads`
/// heads: reshape (heads, head_dim/2, 2, cols) → swap axes 1 and 2 → reshape back.
pub fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

/// The inverse of [`unpermute`] (what llama.cpp's converter applies); used by tests.
pub fn permute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, 2, rows / heads / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}

struct Meta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl Meta<'_> {
    fn err(&self, message: String) -> ConvertError {
        ConvertError::Input {
            path: self.path.to_path_buf(),
            message,
        }
    }
    fn u32(&self, key: &str) -> Result<u32, ConvertError> {
        self.md
            .get(key)
            .and_then(|v| v.to_u32().ok())
            .ok_or_else(|| self.err(format!("metadata `{key}` is missing or not an integer")))
    }
    fn f32(&self, key: &str) -> Option<f32> {
        self.md.get(key).and_then(|v| v.to_f32().ok())
    }
}

/// The provenance file a conversion writes into its directory.
pub const PROVENANCE: &str = "minerva-convert.json";

pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        _ => "f32",
    }
}

/// Converts the GGUF at `input` into a SafeTensors model directory at `out`, which must not exist.
/// `source_sha256`: the input's digest when the caller already knows it (else it is computed).
///
/// Long on purpose: the conversion's steps in order (read, map names, dequantize, write,
/// provenance), each a few lines.
pub fn gguf_to_safetensors(
    input: &Path,
    out: &Path,
    dtype: DType,
    source_sha256: Option<&str>,
) -> Result<Converted, ConvertError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ConvertError::Io { path, source }
    };
    if out.exists() {
        return Err(ConvertError::Output(format!(
            "{} already exists: remove it or choose another directory",
            out.display()
        )));
    }
    let input_err = |message: String| ConvertError::Input {
        path: input.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(input).map_err(io(input))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| input_err(e.to_string()))?;
    let meta = Meta {
        path: input,
        md: &content.metadata,
    };
    let arch = tokenizer::architecture(&content);
    if arch != "llama" {
        return Err(input_err(format!(
            "architecture `{arch}`: only `llama` GGUFs (Llama, Mistral, SmolLM…) convert"
        )));
    }
    let tok = tokenizer::from_gguf(&content.metadata).map_err(input_err)?;
    let heads = meta.u32("llama.attention.head_count")? as usize;
    let kv_heads = meta
        .u32("llama.attention.head_count_kv")
        .map(|n| n as usize)
        .unwrap_or(heads);
    let hidden = meta.u32("llama.embedding_length")? as usize;
    let layers = meta.u32("llama.block_count")? as usize;
    if heads == 0 || !hidden.is_multiple_of(heads) || !(hidden / heads).is_multiple_of(2) {
        return Err(input_err(format!(
            "{hidden} embedding dims do not split into {heads} even-sized heads"
        )));
    }
    if let Some(scaling) = content.metadata.get("llama.rope.scaling.type") {
        if scaling.to_string().map(|s| s != "none").unwrap_or(true) {
            return Err(input_err(
                "RoPE scaling (`llama.rope.scaling.type`) is not carried over by this converter"
                    .into(),
            ));
        }
    }

    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut parameters = 0u64;
    let tie = !content.tensor_infos.contains_key("output.weight");
    for name in names {
        let hf = hf_name(name)
            .ok_or_else(|| input_err(format!("tensor `{name}` has no Hugging Face counterpart")))?;
        let q = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| input_err(format!("tensor `{name}`: {e}")))?;
        let cpu = |e: candle_core::Error| input_err(format!("tensor `{name}`: {e}"));
        let mut t = q.dequantize(&Device::Cpu).map_err(cpu)?;
        if name.ends_with("attn_q.weight") {
            t = unpermute(&t, heads).map_err(cpu)?;
        } else if name.ends_with("attn_k.weight") {
            t = unpermute(&t, kv_heads).map_err(cpu)?;
        }
        let t = t.to_dtype(dtype).map_err(cpu)?;
        parameters += t.elem_count() as u64;
        tensors.insert(hf, t);
    }
    let get = |n: &str| {
        tensors
            .get(n)
            .map(|t| t.dims().to_vec())
            .ok_or_else(|| input_err(format!("the GGUF has no tensor for `{n}`")))
    };
    let embed = get("model.embed_tokens.weight")?;
    let ffn = get("model.layers.0.mlp.up_proj.weight")?;
    let vocab = embed.first().copied().unwrap_or(0);
    let torch_dtype = match dtype {
        DType::BF16 => "bfloat16",
        DType::F16 => "float16",
        _ => "float32",
    };
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": ffn.first().copied().unwrap_or(0),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "rms_norm_eps": meta.f32("llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        "rope_theta": meta.f32("llama.rope.freq_base").unwrap_or(10000.0),
        "max_position_embeddings": meta.u32("llama.context_length").unwrap_or(4096),
        "vocab_size": vocab,
        "bos_token_id": tok.bos,
        "eos_token_id": tok.eos,
        "tie_word_embeddings": tie,
        "hidden_act": "silu",
        "torch_dtype": torch_dtype,
    });
    let token_text = |id: Option<u32>| id.and_then(|i| tok.tokenizer.id_to_token(i));
    let tokenizer_config = json!({
        "chat_template": tok.chat_template,
        "add_bos_token": tok.add_bos,
        "bos_token": token_text(tok.bos),
        "eos_token": token_text(tok.eos),
    });
    let digest = match source_sha256 {
        Some(d) => d.to_string(),
        None => crate::formats::sha256_file(input).map_err(io(input))?,
    };
    let provenance = json!({
        "converted_by": format!("minerva {}", env!("CARGO_PKG_VERSION")),
        "source": input.file_name().map(|n| n.to_string_lossy().to_string()),
        "source_bytes": std::fs::metadata(input).map_err(io(input))?.len(),
        "source_sha256": digest,
        "dtype": dtype_name(dtype),
        "note": "dequantized from the GGUF's quantized weights: exact values of the source, not the original full-precision model",
    });

    // Assemble under a temporary name beside `out`, then rename.
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let base = out
        .file_name()
        .ok_or_else(|| ConvertError::Output(format!("{} is not a directory name", out.display())))?
        .to_string_lossy()
        .to_string();
    let tmp = parent.join(format!(".{base}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let result = (|| {
        let weights = tmp.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights)
            .map_err(|e| ConvertError::Output(format!("{}: {e}", weights.display())))?;
        let tok_path = tmp.join("tokenizer.json");
        tok.tokenizer
            .save(&tok_path, false)
            .map_err(|e| ConvertError::Output(format!("{}: {e}", tok_path.display())))?;
        for (name, value) in [
            ("config.json", &config),
            ("tokenizer_config.json", &tokenizer_config),
            (PROVENANCE, &provenance),
        ] {
            let path = tmp.join(name);
            let mut text = serde_json::to_vec_pretty(value)
                .map_err(|e| ConvertError::Output(e.to_string()))?;
            text.push(b'\n');
            let mut f = std::fs::File::create(&path).map_err(io(&path))?;
            f.write_all(&text).map_err(io(&path))?;
        }
        let mut bytes = 0;
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let path = entry.map_err(io(&tmp))?.path();
            set_readable(&path).map_err(io(&path))?;
            let f = std::fs::File::open(&path).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
            bytes += f.metadata().map_err(io(&path))?.len();
        }
        crate::paths::sync_parent(&tmp.join("config.json"));
        std::fs::rename(&tmp, out).map_err(io(out))?;
        crate::paths::sync_parent(out);
        Ok(bytes)
    })();
    match result {
        Ok(bytes) => Ok(Converted {
            dir: out.to_path_buf(),
            tensors: tensors.len(),
            parameters,
            bytes,
            dtype,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

/// Model files are shared: readable by everyone (candle's writer creates them 0600).
fn set_readable(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        let w = Tensor::arange(0f32, 8.0 * 3.0, &Device::Cpu)
            .unwrap()
            .reshape((8, 3))
            .unwrap();
        let p = permute(&w, 2).unwrap();
        assert_ne!(p.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        // Head 0 has rows 0..4 = pairs (0,2),(1,3) interleaved by the permutation.
        assert_eq!(p.to_vec2::<f32>().unwrap()[1], vec![6.0, 7.0, 8.0]);
        let back = unpermute(&p, 2).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn tensor_names() {
        assert_eq!(
            hf_name("token_embd.weight").unwrap(),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            hf_name("blk.12.attn_k.weight").unwrap(),
            "model.layers.12.self_attn.k_proj.weight"
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").unwrap(),
            "model.layers.0.post_attention_layernorm.weight"
        );
        assert!(hf_name("blk.x.attn_q.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
    }
}
