//! The candle backend, the GGUF → SafeTensors conversion and the output-agreement check, on the
//! real test model (SmolLM2-135M-Instruct Q4_1, fetched by scripts/fetch-test-model.sh).

#![allow(clippy::unwrap_used)] // test helpers too: a panic is a failing test with its message

mod common;

use candle_core::quantized::gguf_file;
use common::mlx_quant::mlx_quantize;
use common::*;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use serde_json::Value;

const TEST_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

fn require_test_model() {
    assert!(
        root().join(TEST_MODEL).is_file(),
        "{TEST_MODEL} is missing: run scripts/fetch-test-model.sh (scripts/test.sh does)"
    );
}

/// Strings that trip tokenizers: digits, CJK and emoji, whitespace runs, contractions, code,
/// and the model's own chat markup (special tokens).
const HARD: &[&str] = &[
    "In 2024, 1234567 people paid $3.50 each (12.5%).",
    "日本語のテキストと絵文字 🤖🚀 mixed with English.",
    "tabs\tand\nnewlines\n\n   and  double  spaces  ",
    "I'm sure they'll say it's John's, won't they? DON'T",
    "fn main() {\n    println!(\"{}\", x.map(|v| v * 2));\n}",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
];

#[test]
fn gguf_vocabulary_tokenizes_like_llama_cpp() {
    require_test_model();
    let path = root().join(TEST_MODEL);
    let mut f = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let tok = minerva::formats::tokenizer::from_gguf(&content.metadata).unwrap();
    assert_eq!(tok.vocab_size(), 49152);
    assert!(!tok.add_bos, "SmolLM2's GGUF says add_bos_token = false");
    assert!(tok.eog.contains(&2), "<|im_end|> (id 2) ends generation");

    let backend = LlamaBackend::init().unwrap();
    let model = LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default()).unwrap();
    let vocab = model.vocab();
    for s in HARD {
        let ours = tok.encode(s).unwrap();
        let theirs: Vec<u32> = vocab
            .tokenize(s.as_bytes(), false, true)
            .into_iter()
            .map(|t| t.0 as u32)
            .collect();
        assert_eq!(ours, theirs, "{s:?}");
        assert!(!ours.is_empty());
    }
    // Special tokens are single ids, not spelled out.
    let markup = tok.encode(HARD[5]).unwrap();
    assert_eq!(markup[0], 1, "<|im_start|>");
    assert_eq!(
        tok.tokenizer
            .decode(&tok.encode(HARD[1]).unwrap(), false)
            .unwrap(),
        HARD[1]
    );
}

fn samples_by_job(run: &std::path::Path) -> Vec<Value> {
    lines(&run.join("samples.jsonl"))
        .into_iter()
        .filter(|s| s["warmup"] == false)
        .collect()
}

fn prefix(a: &[Value], b: &[Value]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[test]
fn converted_safetensors_and_three_engines_agree() {
    require_test_model();
    let tmp = tempdir();
    let st = tmp.path().join("smol-f32");
    let out = Minerva::new(&[
        "convert",
        "gguf-to-safetensors",
        TEST_MODEL,
        st.to_str().unwrap(),
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("272 tensors, 134515008 parameters, F32"),
        "{printed}"
    );
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "minerva-convert.json",
    ] {
        assert!(st.join(f).is_file(), "{f} missing");
    }
    let config: Value = serde_json::from_str(&read(&st.join("config.json"))).unwrap();
    assert_eq!(config["model_type"], "llama");
    assert_eq!(config["num_hidden_layers"], 30);
    assert_eq!(config["num_key_value_heads"], 3);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["rope_theta"], 100000.0);
    let prov: Value = serde_json::from_str(&read(&st.join("minerva-convert.json"))).unwrap();
    assert_eq!(
        prov["source_sha256"],
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    );
    // F32: 4 bytes a parameter plus the header.
    let size = std::fs::metadata(st.join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        size > 134_515_008 * 4 && size < 134_515_008 * 4 + (1 << 20),
        "{size}"
    );
    // The project's own verifier accepts it; converting onto it again is refused.
    let v = Minerva::new(&["verify", st.to_str().unwrap()]).output();
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));
    let again = Minerva::new(&[
        "convert",
        "gguf-to-safetensors",
        TEST_MODEL,
        st.to_str().unwrap(),
    ])
    .output();
    assert_eq!(again.status.code(), Some(3));
    assert!(text(&again.stderr).contains("already exists"));
    mlx_directories_from_the_converted_weights(&st, tmp.path());

    // One pipeline: the GGUF on llama.cpp and candle, the F32 copy on candle; one text prompt,
    // 64 greedy tokens; a pp and a tg job for the speed ratio.
    let pipeline = tmp.path().join("three.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: three
models:
  - name: q4
    format: gguf
    source: {{ path: {gguf} }}
  - name: f32
    format: safetensors
    source: {{ path: {st} }}
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
      backend: [llama_cpp, candle]
      model: [q4, f32]
      scenario: [prose, pp128, tg32]
      params:
        threads: 2
      exclude:
        - {{ backend: llama_cpp, model: f32 }}
    runs: 2
    warmup: 1
  - name: analyze
    kind: analyze
    needs: [bench]
  - name: report
    kind: report
    needs: [analyze]
"#,
            gguf = root().join(TEST_MODEL).display(),
            st = st.display()
        ),
    )
    .unwrap();
    // A fake powercap directory (one package zone whose counter stands still): each measured
    // repetition records its energy, 0 J here, through the worker's environment.
    let powercap = tmp.path().join("powercap/intel-rapl:0");
    std::fs::create_dir_all(&powercap).unwrap();
    std::fs::write(powercap.join("name"), "package-0\n").unwrap();
    std::fs::write(powercap.join("energy_uj"), "123456789\n").unwrap();
    let out = Minerva::new(&[
        "run",
        pipeline.to_str().unwrap(),
        "--run-id",
        "r",
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ])
    .env(
        "MINERVA_POWERCAP_ROOT",
        tmp.path().join("powercap").to_str().unwrap(),
    )
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = tmp.path().join("out/three/r");
    let samples = samples_by_job(&run);
    assert_eq!(samples.len(), 3 * 3 * 2, "{samples:?}");
    assert!(samples.iter().all(|s| s["error"].is_null()), "{samples:?}");
    assert!(
        samples.iter().all(|s| s["energy_j"] == 0.0),
        "every repetition reads the package counter: {samples:?}"
    );
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("| Energy | RAPL package-0 (CPU package energy) |"),
        "{report}"
    );
    assert!(report.contains(" J/token | W |"), "{report}");
    assert!(report.contains(" of roofline t/s |"), "{report}");
    let first = |backend: &str, model: &str, scenario: &str| -> Value {
        samples
            .iter()
            .find(|s| s["backend"] == backend && s["model"] == model && s["scenario"] == scenario)
            .cloned()
            .unwrap_or_default()
    };
    let llama = first("llama_cpp", "q4", "prose");
    let candle_q4 = first("candle", "q4", "prose");
    let candle_f32 = first("candle", "f32", "prose");
    for s in [&llama, &candle_q4, &candle_f32] {
        assert_eq!(s["output_ids"].as_array().map(Vec::len), Some(64), "{s}");
        assert_eq!(s["output_tokens"], 64);
    }
    // The same prompt tokens everywhere (chat template and tokenizer agree with llama.cpp's).
    assert_eq!(llama["prompt_digest"], candle_q4["prompt_digest"]);
    assert_eq!(llama["prompt_digest"], candle_f32["prompt_digest"]);
    assert_eq!(llama["prompt_tokens"], candle_q4["prompt_tokens"]);
    let ids = |s: &Value| s["output_ids"].as_array().cloned().unwrap_or_default();
    let same_weights = prefix(&ids(&llama), &ids(&candle_q4));
    let converted = prefix(&ids(&candle_q4), &ids(&candle_f32));
    eprintln!("agreement: llama.cpp vs candle (Q4_1) {same_weights}/64; candle Q4_1 vs F32 copy {converted}/64");
    // Same weights, two engines: at least the gate's 16 tokens.
    assert!(same_weights >= 16, "{same_weights}");
    // The dequantized copy: Q4_1 kernels round activations to 8 bits, F32 does not, so greedy
    // paths may part after a while; the tolerance here is the first 8 tokens.
    assert!(converted >= 8, "{converted}");

    for s in samples.iter().filter(|s| s["scenario"] == "pp128") {
        assert_eq!(s["prompt_tokens"], 128);
        assert!(s["pp_tps"].as_f64().unwrap_or(0.0) > 5.0, "{s}");
    }
    for s in samples.iter().filter(|s| s["scenario"] == "tg32") {
        assert_eq!(s["output_tokens"], 32);
        assert!(s["tg_tps"].as_f64().unwrap_or(0.0) > 2.0, "{s}");
    }
    let manifest: Value = serde_json::from_str(&read(&run.join("manifest.json"))).unwrap();
    let build = manifest["backends"]["candle"].as_str().unwrap_or_default();
    assert!(
        build.contains("candle-core 0.11") && build.contains("avx2"),
        "{build}"
    );

    let report = read(&run.join("report.md"));
    assert!(report.contains("## Output agreement"), "{report}");
    assert!(
        report.contains(&format!(
            "| prose | llama_cpp · q4 | candle · q4 | {same_weights}/64 | same | agree |"
        )),
        "{report}"
    );
    // The plan lists q4 before f32, so q4 is the reference of the candle pair, whichever job
    // ran first (the verify jobs finish in either order).
    assert!(
        report.contains(&format!(
            "| prose | candle · q4 | candle · f32 | {converted}/64 | same | different weights: not judged |"
        )),
        "{report}"
    );
    assert!(report.contains("different weights: not judged"), "{report}");
    assert!(!report.contains("**DIVERGENT"), "{report}");
    // llama.cpp is the reference of every pair it is in.
    assert!(
        report.contains("| 64 | reference |") || report.contains("| reference |"),
        "{report}"
    );
}

#[test]
fn candle_refuses_bad_models_with_clear_errors() {
    let tmp = tempdir();
    // A directory with a config but no weights.
    let dir = tmp.path().join("empty");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "llama"}"#).unwrap();
    let pipeline = tmp.path().join("bad.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: bad
models:
  - name: empty
    format: safetensors
    source: {{ path: {dir} }}
scenarios:
  - name: s
    prompt: "Hi"
    max_tokens: 4
stages:
  - name: bench
    kind: bench
    matrix:
      backend: [candle]
      model: [empty]
      scenario: [s]
    runs: 1
"#,
            dir = dir.display()
        ),
    )
    .unwrap();
    let out = Minerva::new(&[
        "run",
        pipeline.to_str().unwrap(),
        "--out",
        tmp.path().join("out").to_str().unwrap(),
    ])
    .output();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let run = std::fs::read_dir(tmp.path().join("out/bad"))
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.path().join("samples.jsonl").is_file())
        .map(|e| e.path())
        .unwrap();
    let samples = lines(&run.join("samples.jsonl"));
    let msg = samples[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("empty/tokenizer.json"), "{msg}");
}

/// MLX-style directories built from the converted SmolLM2 weights (layer 0's seven projections
/// quantized in MLX's affine 4-bit layout, the rest full precision), and broken variants.
fn mlx_directories_from_the_converted_weights(st: &std::path::Path, tmp: &std::path::Path) {
    use candle_core::{Device, Tensor};
    use minerva::formats::mlx::verify_dir;
    let mut tensors =
        candle_core::safetensors::load(st.join("model.safetensors"), &Device::Cpu).unwrap();
    let (group, bits) = (64usize, 4u32);
    for proj in [
        "self_attn.q_proj",
        "self_attn.k_proj",
        "self_attn.v_proj",
        "self_attn.o_proj",
        "mlp.gate_proj",
        "mlp.up_proj",
        "mlp.down_proj",
    ] {
        let base = format!("model.layers.0.{proj}");
        let w = tensors.remove(&format!("{base}.weight")).unwrap();
        let rows = w.to_vec2::<f32>().unwrap();
        let (out, cols) = (rows.len(), rows[0].len());
        let (packed, scales, biases) = mlx_quantize(&rows, group, bits);
        // The packing round-trips within half a quantization step.
        let per_word = (32 / bits) as usize;
        for (r, row) in rows.iter().enumerate().step_by(97) {
            for (c, &x) in row.iter().enumerate().step_by(13) {
                let word = packed[r * cols / per_word + c / per_word];
                let q = (word >> (bits as usize * (c % per_word))) & 0xF;
                let g = r * cols / group + c / group;
                let back = q as f32 * scales[g] + biases[g];
                assert!(
                    (back - x).abs() <= scales[g] / 2.0 + 1e-6,
                    "{base}[{r},{c}]"
                );
            }
        }
        let dev = &Device::Cpu;
        tensors.insert(
            format!("{base}.weight"),
            Tensor::from_vec(packed, (out, cols / per_word), dev).unwrap(),
        );
        tensors.insert(
            format!("{base}.scales"),
            Tensor::from_vec(scales, (out, cols / group), dev).unwrap(),
        );
        tensors.insert(
            format!("{base}.biases"),
            Tensor::from_vec(biases, (out, cols / group), dev).unwrap(),
        );
    }
    let mut config: Value = serde_json::from_str(&read(&st.join("config.json"))).unwrap();
    config["quantization"] = serde_json::json!({ "group_size": group, "bits": bits });
    let make = |name: &str, tensors: &std::collections::HashMap<String, Tensor>, config: &Value| {
        let dir = tmp.join(name);
        std::fs::create_dir(&dir).unwrap();
        candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        std::fs::copy(st.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
        dir
    };
    let good = make("mlx-q4", &tensors, &config);
    let s = verify_dir(&good, false).unwrap();
    assert_eq!(s.quantization.as_deref(), Some("affine 4-bit, group 64"));
    assert_eq!(s.model_type, "llama");
    // Packed weights count as their logical size: the same parameters as the F32 model.
    assert_eq!(s.parameters, 134_515_008);
    assert_eq!(s.tensor_count, 272 + 14);
    let v = Minerva::new(&["verify", good.to_str().unwrap()]).output();
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));

    // Broken variants, each refused with the reason.
    let mut t = tensors.clone();
    t.insert(
        "model.layers.0.mlp.up_proj.scales".into(),
        Tensor::zeros((1536, 8), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    let e = verify_dir(&make("bad-scales", &t, &config), false).unwrap_err();
    assert!(
        e.message
            .contains("scales shape [1536, 8], expected [1536, 9]"),
        "{e}"
    );
    let mut t = tensors.clone();
    t.remove("model.layers.0.self_attn.q_proj.biases");
    let e = verify_dir(&make("no-biases", &t, &config), false).unwrap_err();
    assert!(
        e.message
            .contains("needs `model.layers.0.self_attn.q_proj.biases`"),
        "{e}"
    );
    let mut c = config.clone();
    c["quantization"]["bits"] = 7.into();
    let e = verify_dir(&make("bits-7", &tensors, &c), false).unwrap_err();
    assert!(e.message.contains("not a scheme MLX implements"), "{e}");
    let mut c = config.clone();
    c.as_object_mut().unwrap().remove("quantization");
    let e = verify_dir(&make("no-quantization", &tensors, &c), false).unwrap_err();
    assert!(
        e.message.contains("config.json has no `quantization`"),
        "{e}"
    );
    let code = make("with-code", &tensors, &config);
    std::fs::write(code.join("modeling.py"), "import os\n").unwrap();
    let e = verify_dir(&code, false).unwrap_err();
    assert!(e.message.contains("Python code"), "{e}");
    assert!(verify_dir(&code, true).is_ok());
}
