//! The MLX backend on the real test model: SmolLM2-135M-Instruct converted to F32 SafeTensors
//! (minerva's own conversion of the Q4_1 GGUF), plain and in MLX's affine quantization, next to
//! candle on the same weights. Needs a build with feature `mlx` (scripts/setup-mlx.sh first).

#![cfg(feature = "mlx")]
#![allow(clippy::unwrap_used)] // test helpers too: a panic is a failing test with its message

mod common;

use candle_core::{Device, Tensor};
use common::mlx_quant::mlx_quantize;
use common::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

const TEST_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn convert(tmp: &Path) -> std::path::PathBuf {
    assert!(
        root().join(TEST_MODEL).is_file(),
        "{TEST_MODEL} is missing: run scripts/fetch-test-model.sh (scripts/test.sh does)"
    );
    let st = tmp.join("smol-f32");
    let out = Minerva::new(&[
        "convert",
        "gguf-to-safetensors",
        TEST_MODEL,
        st.to_str().unwrap(),
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    st
}

/// Replaces `name.weight` by its MLX quantization (packed weight, scales, biases).
fn quantize(tensors: &mut HashMap<String, Tensor>, name: &str, group: usize, bits: u32) {
    let w = tensors.remove(&format!("{name}.weight")).unwrap();
    let rows = w.to_vec2::<f32>().unwrap();
    let (out, cols) = (rows.len(), rows[0].len());
    let (packed, scales, biases) = mlx_quantize(&rows, group, bits);
    let per_word = (32 / bits) as usize;
    let dev = &Device::Cpu;
    tensors.insert(
        format!("{name}.weight"),
        Tensor::from_vec(packed, (out, cols / per_word), dev).unwrap(),
    );
    tensors.insert(
        format!("{name}.scales"),
        Tensor::from_vec(scales, (out, cols / group), dev).unwrap(),
    );
    tensors.insert(
        format!("{name}.biases"),
        Tensor::from_vec(biases, (out, cols / group), dev).unwrap(),
    );
}

/// An MLX-format directory from the F32 copy: the embedding table (tied output head) and layer
/// 0's projections in 4-bit groups of 64, layer 0's down projection overridden to 8-bit groups
/// of 32 (a per-module entry of `quantization`, as mlx-lm writes mixed quantizations).
fn mlx_q4_dir(st: &Path, tmp: &Path) -> std::path::PathBuf {
    let mut tensors =
        candle_core::safetensors::load(st.join("model.safetensors"), &Device::Cpu).unwrap();
    quantize(&mut tensors, "model.embed_tokens", 64, 4);
    for proj in [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
    ] {
        quantize(&mut tensors, &format!("model.layers.0.{proj}"), 64, 4);
    }
    quantize(&mut tensors, "model.layers.0.mlp.down_proj", 32, 8);
    let mut config: Value = serde_json::from_str(&read(&st.join("config.json"))).unwrap();
    config["quantization"] = serde_json::json!({
        "group_size": 64,
        "bits": 4,
        "model.layers.0.mlp.down_proj": { "group_size": 32, "bits": 8 },
    });
    let dir = tmp.join("smol-mlx-q4");
    std::fs::create_dir(&dir).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(st.join(f), dir.join(f)).unwrap();
    }
    dir
}

fn prefix(a: &Value, b: &Value) -> usize {
    let (a, b) = (a.as_array().unwrap(), b.as_array().unwrap());
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn mlx_runs_the_converted_weights_plain_and_quantized() {
    let tmp = tempdir();
    let st = convert(tmp.path());
    let q4 = mlx_q4_dir(&st, tmp.path());
    let v = Minerva::new(&["verify", q4.to_str().unwrap()]).output();
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));

    let pipeline = tmp.path().join("mlx.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: mlx
models:
  - name: f32
    format: safetensors
    source: {{ path: {st} }}
  - name: q4
    format: mlx
    source: {{ path: {q4} }}
scenarios:
  - name: prose
    prompt: "Explain in a few sentences why the sky is blue."
    max_tokens: 64
  - name: pp128
    prompt_tokens: 128
    max_tokens: 0
  - name: tg32
    prompt_tokens: 0
    max_tokens: 32
agreement:
  min_prefix: 16
stages:
  - name: verify
    kind: verify
  - name: bench
    kind: bench
    needs: [verify]
    matrix:
      backend: [candle, mlx]
      model: [f32, q4]
      scenario: [prose, pp128, tg32]
      params:
        threads: 2
      exclude:
        - {{ backend: candle, model: q4 }}
    runs: 2
    warmup: 1
  - name: analyze
    kind: analyze
    needs: [bench]
  - name: report
    kind: report
    needs: [analyze]
"#,
            st = st.display(),
            q4 = q4.display()
        ),
    )
    .unwrap();
    let out = Minerva::new(&[
        "run",
        pipeline.to_str().unwrap(),
        "--run-id",
        "r",
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = tmp.path().join("out/mlx/r");
    let samples: Vec<Value> = lines(&run.join("samples.jsonl"))
        .into_iter()
        .filter(|s| s["warmup"] == false)
        .collect();
    assert_eq!(samples.len(), 3 * 3 * 2, "{samples:?}");
    assert!(samples.iter().all(|s| s["error"].is_null()), "{samples:?}");
    let first = |backend: &str, model: &str, scenario: &str| -> Value {
        samples
            .iter()
            .find(|s| s["backend"] == backend && s["model"] == model && s["scenario"] == scenario)
            .cloned()
            .unwrap_or_default()
    };
    let candle = first("candle", "f32", "prose");
    let mlx = first("mlx", "f32", "prose");
    let mlx_q4 = first("mlx", "q4", "prose");
    for s in [&candle, &mlx, &mlx_q4] {
        assert_eq!(s["output_ids"].as_array().map(Vec::len), Some(64), "{s}");
        assert_eq!(s["output_tokens"], 64);
        // Same chat template and tokenizer: the same prompt tokens.
        assert_eq!(s["prompt_digest"], candle["prompt_digest"]);
        assert!(s["ttft_ms"].as_f64().unwrap_or(0.0) > 0.0, "{s}");
    }
    let same = prefix(&candle["output_ids"], &mlx["output_ids"]);
    let quant = prefix(&mlx["output_ids"], &mlx_q4["output_ids"]);
    eprintln!(
        "agreement: candle vs MLX on the F32 copy {same}/64; MLX F32 vs MLX quantized {quant}/64"
    );
    // The same F32 weights on two engines: at least the gate's 16 tokens.
    assert!(same >= 16, "{same}");
    // A wrong packing, bit order or group size garbles the output from the first token; the
    // quantized embedding (also the output head) may legitimately part later.
    assert!(quant >= 8, "{quant}");

    for s in samples.iter().filter(|s| s["scenario"] == "pp128") {
        assert_eq!(s["prompt_tokens"], 128);
        assert!(s["pp_tps"].as_f64().unwrap_or(0.0) > 5.0, "{s}");
    }
    for s in samples.iter().filter(|s| s["scenario"] == "tg32") {
        assert_eq!(s["output_tokens"], 32);
        assert_eq!(s["token_ms"].as_array().map(Vec::len), Some(32));
        assert!(s["tg_tps"].as_f64().unwrap_or(0.0) > 1.0, "{s}");
    }
    // Loading is timed apart from the first forward pass.
    assert!(mlx["load_ms"].as_f64().unwrap_or(0.0) > 0.0, "{mlx}");

    let manifest: Value = serde_json::from_str(&read(&run.join("manifest.json"))).unwrap();
    let build = manifest["backends"]["mlx"].as_str().unwrap_or_default();
    assert!(
        build.contains("MLX 0.32.2") && build.contains("mlx-rs 0.33.0"),
        "{build}"
    );
    assert!(build.contains("devices: cpu only"), "{build}");
    assert!(build.contains("CPU BLAS: "), "{build}");

    let report = read(&run.join("report.md"));
    assert!(!report.contains("**DIVERGENT"), "{report}");
    assert!(
        report.contains(&format!("{same}/64 | same | agree |")),
        "{report}"
    );
    assert!(report.contains("mlx · q4"), "{report}");
    assert!(report.contains("different weights: not judged"), "{report}");
}

#[test]
fn mlx_refuses_what_it_cannot_run_with_clear_errors() {
    let tmp = tempdir();
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "gpt2", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1}"#,
    )
    .unwrap();
    let pipeline = tmp.path().join("bad.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: bad
models:
  - name: gguf
    format: gguf
    source: {{ path: {gguf} }}
  - name: gpt2
    format: safetensors
    source: {{ path: {dir} }}
scenarios:
  - name: s
    prompt: "Hi"
    max_tokens: 4
stages:
  - name: file
    kind: bench
    matrix:
      backend: [mlx]
      model: [gguf]
      scenario: [s]
    runs: 1
  - name: arch
    kind: bench
    matrix:
      backend: [mlx]
      model: [gpt2]
      scenario: [s]
      params:
        device: cpu
    runs: 1
  - name: gpu
    kind: bench
    matrix:
      backend: [mlx]
      model: [gpt2]
      scenario: [s]
      params:
        device: gpu
    runs: 1
"#,
            gguf = root().join(TEST_MODEL).display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let out = Minerva::new(&[
        "run",
        pipeline.to_str().unwrap(),
        "-k",
        "--run-id",
        "b",
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ])
    .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let samples = lines(&tmp.path().join("out/bad/b/samples.jsonl"));
    let msg = |stage: &str| -> String {
        samples
            .iter()
            .find(|s| s["job_id"].as_str().unwrap_or_default().starts_with(stage))
            .map(|s| {
                s["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_default()
    };
    let file = msg("file/");
    assert!(
        file.contains("loads model directories") && file.contains("convert"),
        "{file}"
    );
    let arch = msg("arch/");
    assert!(
        arch.contains("config.json: model_type `gpt2` is not one the MLX backend runs"),
        "{arch}"
    );
    let gpu = msg("gpu/");
    assert!(gpu.contains("no GPU backend"), "{gpu}");
}
