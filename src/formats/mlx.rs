//! MLX model directories (as `mlx-lm` writes them), verified without trusting them: a
//! `config.json` naming its `model_type`, SafeTensors weights (`model.safetensors`, or shards
//! with an index; every SafeTensors rule applies), tokenizer files, and, when `quantization`
//! is present, a scheme MLX supports with tensors in its packed layout. A directory that would
//! run code (a `model_file` in config.json, or `*.py` files) is refused unless allowed.

use super::safetensors::{self, TensorInfo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct MlxError {
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MlxSummary {
    pub model_type: String,
    /// e.g. `affine 4-bit, group 64`, or None for full precision.
    pub quantization: Option<String>,
    /// Logical parameters (packed weights counted unpacked; scales and biases not counted).
    pub parameters: u64,
    pub tensor_count: u64,
    pub dtypes: BTreeMap<String, (u64, u64)>,
}

/// (mode, group size, bits, with biases) combinations MLX implements.
fn scheme_ok(mode: &str, group: u64, bits: u64) -> Option<bool> {
    match mode {
        "affine" if [32, 64, 128].contains(&group) && [2, 3, 4, 5, 6, 8].contains(&bits) => {
            Some(true)
        }
        "mxfp4" if group == 32 && bits == 4 => Some(false),
        "mxfp8" if group == 32 && bits == 8 => Some(false),
        "nvfp4" if group == 16 && bits == 4 => Some(false),
        _ => None,
    }
}

/// Long on purpose: one pass over an untrusted directory (config, shards, quantization layout),
/// each check beside what it reads.
pub fn verify_dir(dir: &Path, allow_code: bool) -> Result<MlxSummary, MlxError> {
    let err = |p: &Path, message: String| MlxError {
        path: p.display().to_string(),
        message,
    };
    let config_path = dir.join("config.json");
    let text = std::fs::read(&config_path).map_err(|e| {
        err(
            &config_path,
            format!("an MLX model needs a config.json: {e}"),
        )
    })?;
    if text.len() > 16 << 20 {
        return Err(err(&config_path, "larger than 16 MiB".into()));
    }
    let config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| err(&config_path, format!("not JSON: {e}")))?;
    let model_type = config
        .get("model_type")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err(&config_path, "no `model_type`".into()))?
        .to_string();
    if !allow_code {
        if config.get("model_file").is_some() {
            return Err(err(
                &config_path,
                "names a `model_file`: loading it would run code shipped with the model; set `allow_code: true` on the model to accept that".into(),
            ));
        }
        let rd = std::fs::read_dir(dir).map_err(|e| err(dir, e.to_string()))?;
        if let Some(py) = rd
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "py"))
        {
            return Err(err(
                &py,
                "Python code in a model directory would run with the model; set `allow_code: true` on the model to accept it".into(),
            ));
        }
    }
    if !["tokenizer.json", "tokenizer.model"]
        .iter()
        .any(|f| dir.join(f).is_file())
    {
        return Err(err(
            dir,
            "no tokenizer (tokenizer.json or tokenizer.model)".into(),
        ));
    }
    let (summary, tensors) =
        safetensors::verify_dir_tensors(dir).map_err(|e| err(dir, e.to_string()))?;
    let by_name: BTreeMap<&str, &TensorInfo> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    let mut parameters = summary.parameters;

    let quant = config
        .get("quantization")
        .or_else(|| config.get("quantization_config"));
    let quantization = match quant {
        None => {
            if let Some(t) = tensors.iter().find(|t| t.name.ends_with(".scales")) {
                return Err(err(
                    dir,
                    format!(
                        "tensor `{}` is quantized but config.json has no `quantization`",
                        t.name
                    ),
                ));
            }
            None
        }
        Some(q) => {
            let num = |k: &str| q.get(k).and_then(|v| v.as_u64());
            let group = num("group_size")
                .ok_or_else(|| err(&config_path, "quantization: no `group_size`".into()))?;
            let bits =
                num("bits").ok_or_else(|| err(&config_path, "quantization: no `bits`".into()))?;
            let mode = q
                .get("mode")
                .and_then(|v| v.as_str())
                .unwrap_or("affine")
                .to_string();
            let with_biases = scheme_ok(&mode, group, bits).ok_or_else(|| {
                err(
                    &config_path,
                    format!("quantization: mode `{mode}` with group_size {group} and {bits} bits is not a scheme MLX implements (affine: group 32/64/128, bits 2/3/4/5/6/8; mxfp4 32/4; mxfp8 32/8; nvfp4 16/4)"),
                )
            })?;
            for t in tensors.iter().filter(|t| t.name.ends_with(".scales")) {
                let base = &t.name[..t.name.len() - ".scales".len()];
                let w_name = format!("{base}.weight");
                let bad = |m: String| err(dir, format!("quantized `{base}`: {m}"));
                let w = by_name
                    .get(w_name.as_str())
                    .ok_or_else(|| bad(format!("scales without `{w_name}`")))?;
                let [out, packed] = w.shape[..] else {
                    return Err(bad(format!("weight shape {:?} is not 2-D", w.shape)));
                };
                if w.dtype != "U32" {
                    return Err(bad(format!("packed weight is {}, not U32", w.dtype)));
                }
                let bits_total = packed
                    .checked_mul(32)
                    .ok_or_else(|| bad("weight shape overflows".into()))?;
                if bits_total % bits != 0 {
                    return Err(bad(format!(
                        "{packed} packed words do not hold whole {bits}-bit values"
                    )));
                }
                let cols = bits_total / bits;
                if cols % group != 0 {
                    return Err(bad(format!(
                        "{cols} columns are not a multiple of group_size {group}"
                    )));
                }
                let want = vec![out, cols / group];
                if t.shape != want {
                    return Err(bad(format!("scales shape {:?}, expected {want:?} for weight [{out}, {packed}] at {bits} bits", t.shape)));
                }
                let b_name = format!("{base}.biases");
                match (with_biases, by_name.get(b_name.as_str())) {
                    (true, None) => return Err(bad(format!("mode {mode} needs `{b_name}`"))),
                    (true, Some(b)) if b.shape != want => {
                        return Err(bad(format!(
                            "biases shape {:?}, expected {want:?}",
                            b.shape
                        )))
                    }
                    (false, Some(_)) => {
                        return Err(bad(format!("mode {mode} has no biases, found `{b_name}`")))
                    }
                    _ => {}
                }
                // Count the packed weight as its logical size, and the scales and biases
                // (quantization metadata, not parameters of the model) not at all.
                let meta = want[0].saturating_mul(want[1]) * if with_biases { 2 } else { 1 };
                parameters = parameters
                    .saturating_sub(out.saturating_mul(packed))
                    .saturating_sub(meta)
                    .saturating_add(out.saturating_mul(cols));
            }
            if let Some(w) = tensors.iter().find(|t| {
                t.dtype == "U32"
                    && t.name.ends_with(".weight")
                    && !by_name.contains_key(
                        format!("{}.scales", &t.name[..t.name.len() - ".weight".len()]).as_str(),
                    )
            }) {
                return Err(err(
                    dir,
                    format!("`{}` is packed (U32) but has no scales", w.name),
                ));
            }
            Some(format!("{mode} {bits}-bit, group {group}"))
        }
    };
    Ok(MlxSummary {
        model_type,
        quantization,
        parameters,
        tensor_count: summary.tensor_count,
        dtypes: summary.dtypes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(tensors: &[(&str, &str, Vec<u64>)]) -> Vec<u8> {
        let mut header = String::from("{");
        let mut off = 0u64;
        for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
            let bits = match *dtype {
                "U32" | "F32" => 32,
                "U8" => 8,
                _ => 16,
            };
            let n: u64 = shape.iter().product::<u64>() * bits / 8;
            if i > 0 {
                header.push(',');
            }
            header.push_str(&format!(
                r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{off},{}]}}"#,
                off + n
            ));
            off += n;
        }
        header.push('}');
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.resize(v.len() + off as usize, 0);
        v
    }

    /// An MLX-style directory: one 4-bit affine layer (64 × 128 logical), one norm in F16.
    fn model(
        config: &str,
        tensors: &[(&str, &str, Vec<u64>)],
        extra: &[(&str, &str)],
    ) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let w = |n: &str, b: &[u8]| {
            std::fs::write(d.path().join(n), b).unwrap_or_else(|e| panic!("{e}"))
        };
        w("config.json", config.as_bytes());
        w("tokenizer.json", b"{}");
        w("model.safetensors", &st(tensors));
        for (n, b) in extra {
            w(n, b.as_bytes());
        }
        d
    }

    const Q4: &str = r#"{"model_type":"llama","quantization":{"group_size":64,"bits":4}}"#;

    fn q4_tensors() -> Vec<(&'static str, &'static str, Vec<u64>)> {
        vec![
            ("l.weight", "U32", vec![64, 16]),
            ("l.scales", "F16", vec![64, 2]),
            ("l.biases", "F16", vec![64, 2]),
            ("norm.weight", "F16", vec![128]),
        ]
    }

    #[test]
    fn quantized_and_full_precision_directories_verify() {
        let d = model(Q4, &q4_tensors(), &[]);
        let s = verify_dir(d.path(), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.model_type, "llama");
        assert_eq!(s.quantization.as_deref(), Some("affine 4-bit, group 64"));
        // 64×128 logical weights + 128 norm; scales and biases are not parameters.
        assert_eq!(s.parameters, 64 * 128 + 128);
        let fp = model(
            r#"{"model_type":"llama"}"#,
            &[("w", "F16", vec![4, 4])],
            &[],
        );
        assert_eq!(
            verify_dir(fp.path(), false).ok().map(|s| s.parameters),
            Some(16)
        );
        let mx = model(
            r#"{"model_type":"llama","quantization":{"group_size":32,"bits":4,"mode":"mxfp4"}}"#,
            &[
                ("l.weight", "U32", vec![8, 8]),
                ("l.scales", "U8", vec![8, 2]),
            ],
            &[],
        );
        assert_eq!(
            verify_dir(mx.path(), false)
                .ok()
                .and_then(|s| s.quantization),
            Some("mxfp4 4-bit, group 32".to_string())
        );
    }

    #[test]
    fn broken_directories_are_refused() {
        let msg = |d: tempfile::TempDir| {
            verify_dir(d.path(), false)
                .err()
                .map(|e| e.message)
                .unwrap_or_default()
        };
        let mut t = q4_tensors();
        t[1].2 = vec![64, 3];
        assert!(msg(model(Q4, &t, &[])).contains("scales shape [64, 3], expected [64, 2]"));
        let t: Vec<_> = q4_tensors()
            .into_iter()
            .filter(|x| x.0 != "l.biases")
            .collect();
        assert!(msg(model(Q4, &t, &[])).contains("needs `l.biases`"));
        let mut t = q4_tensors();
        t[0].1 = "F32";
        assert!(msg(model(Q4, &t, &[])).contains("not U32"));
        let bad_scheme = r#"{"model_type":"llama","quantization":{"group_size":48,"bits":4}}"#;
        assert!(msg(model(bad_scheme, &q4_tensors(), &[])).contains("not a scheme MLX implements"));
        let nv =
            r#"{"model_type":"llama","quantization":{"group_size":16,"bits":4,"mode":"nvfp4"}}"#;
        let t = vec![
            ("l.weight", "U32", vec![64, 16]),
            ("l.scales", "F16", vec![64, 8]),
            ("l.biases", "F16", vec![64, 8]),
        ];
        assert!(msg(model(nv, &t, &[])).contains("has no biases"));
        assert!(msg(model(r#"{"model_type":"llama"}"#, &q4_tensors(), &[]))
            .contains("no `quantization`"));
        assert!(
            msg(model(r#"{"quantization":{}}"#, &q4_tensors(), &[])).contains("no `model_type`")
        );
        let code = r#"{"model_type":"llama","model_file":"modeling.py"}"#;
        assert!(msg(model(code, &[("w", "F16", vec![2])], &[])).contains("model_file"));
        assert!(
            msg(model(Q4, &q4_tensors(), &[("modeling.py", "import os")])).contains("Python code")
        );
        let allowed = model(Q4, &q4_tensors(), &[("modeling.py", "import os")]);
        assert!(verify_dir(allowed.path(), true).is_ok());
        let no_tok = model(Q4, &q4_tensors(), &[]);
        let _ = std::fs::remove_file(no_tok.path().join("tokenizer.json"));
        assert!(msg(no_tok).contains("no tokenizer"));
    }
}
