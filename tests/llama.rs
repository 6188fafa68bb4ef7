//! The llama.cpp backend on the real test model (SmolLM2-135M-Instruct Q4_1, fetched by
//! scripts/fetch-test-model.sh). A separate test binary, so its CPU load does not disturb the
//! timing-sensitive tests in cli.rs (cargo runs test binaries one after another).

mod common;

use common::*;

const TEST_MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
const TEST_MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The tests that measure run one at a time: each would disturb the other's figures (and on a
/// 2-core machine stretch both).
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn measuring() -> std::sync::MutexGuard<'static, ()> {
    MEASURING.lock().unwrap_or_else(|p| p.into_inner())
}

fn require_test_model() {
    assert!(
        root().join(TEST_MODEL).is_file(),
        "{TEST_MODEL} is missing: run scripts/fetch-test-model.sh (scripts/test.sh does)"
    );
}

#[test]
fn real_model_verifies_with_expected_metadata() {
    require_test_model();
    let out = Minerva::new(&["verify", TEST_MODEL, "--sha256", TEST_MODEL_SHA256]).output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("(98362432 bytes), llama, 134.5M parameters"),
        "{stdout}"
    );
    assert!(stdout.contains("Q4_1×"), "{stdout}");
    assert!(
        stdout.contains(&format!("sha256 {TEST_MODEL_SHA256}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("vocabulary 49152, context 8192, 272 tensors"),
        "{stdout}"
    );

    let bad = Minerva::new(&["verify", TEST_MODEL, "--sha256", &"0".repeat(64)]).output();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("sha256 mismatch"),
        "{}",
        text(&bad.stderr)
    );
    let not_a_model = Minerva::new(&["verify", "Cargo.toml"]).output();
    assert_eq!(not_a_model.status.code(), Some(1));
    assert!(
        text(&not_a_model.stderr).contains("cannot tell the model format"),
        "{}",
        text(&not_a_model.stderr)
    );
    let bad_magic = Minerva::new(&["verify", "tests/fixtures/models/not-a-model.gguf"]).output();
    assert_eq!(bad_magic.status.code(), Some(1));
}

#[test]
fn quickstart_runs_on_the_real_model() {
    require_test_model();
    let _alone = measuring();
    let out_dir = tempdir();
    let out = Minerva::new(&[
        "run",
        "pipelines/quickstart.yaml",
        "--set",
        "runs=2",
        "--run-id",
        "q",
        "--out",
    ])
    .output_with(out_dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = out_dir.path().join("quickstart/q");
    let samples = lines(&run.join("samples.jsonl"));
    // Warmups are untimed in the in-process backends: 3 legs (llama.cpp and candle on the GGUF,
    // candle on the F32 copy) × 6 scenarios × 2 measured runs, and with feature `mlx` a fourth
    // (MLX on the F32 copy); without it, one `unavailable` record per MLX job.
    let mlx = cfg!(feature = "mlx");
    let (measured, unavailable): (Vec<_>, Vec<_>) = samples
        .into_iter()
        .partition(|s| s["error"]["kind"] != "unavailable");
    let samples = measured;
    assert_eq!(samples.len(), if mlx { 48 } else { 36 }, "{samples:?}");
    assert_eq!(
        unavailable.len(),
        if mlx { 0 } else { 6 },
        "{unavailable:?}"
    );
    assert!(samples
        .iter()
        .all(|s| s["simulated"] == false && s["error"].is_null()));
    let by = |sc: &str| {
        samples
            .iter()
            .filter(|s| s["scenario"] == sc)
            .cloned()
            .collect::<Vec<_>>()
    };
    for (sc, n) in [
        ("short", 20),
        ("medium", 100),
        ("code", 150),
        ("long", 200),
        ("tg128", 128),
    ] {
        for s in by(sc) {
            assert_eq!(
                s["output_tokens"], n,
                "{sc}: ignore_eos makes every run generate max_tokens"
            );
            assert_eq!(s["token_ms"].as_array().map(Vec::len), Some(n));
            assert!(s["tg_tps"].as_f64().unwrap_or(0.0) > 1.0, "{sc}: {s}");
            assert!(s["ttft_ms"].as_f64().unwrap_or(0.0) > 0.0);
        }
    }
    for s in by("pp512") {
        assert_eq!(s["prompt_tokens"], 512);
        assert_eq!(s["output_tokens"], 0);
        assert!(s["pp_tps"].as_f64().unwrap_or(0.0) > 10.0, "{s}");
    }
    // The chat template was applied: the short prompt is ~12 words but more tokens with markup.
    let short = &by("short")[0];
    assert!(short["prompt_tokens"].as_u64().unwrap_or(0) > 15, "{short}");
    assert!(
        short["peak_rss_bytes"].as_u64().unwrap_or(0) > 50 << 20,
        "{short}"
    );
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&run.join("manifest.json"))).unwrap_or_default();
    let build = manifest["backends"]["llama_cpp"]
        .as_str()
        .unwrap_or_default();
    assert!(
        build.contains("llama-cpp-2 0.1.") && build.contains("CPU"),
        "{build}"
    );
    assert!(manifest["backends"]["candle"]
        .as_str()
        .unwrap_or_default()
        .contains("candle-core"));
    // The converted copy was made by the download stage and verified as SafeTensors.
    assert!(root()
        .join("models/smollm2-135m-f32/minerva-convert.json")
        .is_file());
    let report = read(&run.join("report.md"));
    assert!(!report.contains("SIMULATED"), "{report}");
    assert!(
        report.contains("| smollm2-135m-f32 | safetensors |"),
        "{report}"
    );
    // Three legs side by side with agreement; the same weights agree on ≥ 16 tokens.
    assert!(report.contains("## Output agreement"), "{report}");
    assert!(
        report.contains("| short | llama_cpp · smollm2-135m-q4_1 | candle · smollm2-135m-q4_1 |"),
        "{report}"
    );
    assert!(!report.contains("**DIVERGENT"), "{report}");
    if mlx {
        // The F32 copy on candle and MLX: same weights, judged; candle is the reference
        // because the plan lists it first.
        assert!(
            report.contains("| short | candle · smollm2-135m-f32 | mlx · smollm2-135m-f32 |"),
            "{report}"
        );
        assert!(manifest["backends"]["mlx"]
            .as_str()
            .unwrap_or_default()
            .contains("MLX 0.32"));
    } else {
        assert!(report.contains("## Not run on this build"), "{report}");
        assert!(
            report.contains("unavailable on this build (enable feature mlx)"),
            "{report}"
        );
    }
    assert!(
        report.contains("| smollm2-135m-q4_1 | gguf | llama | 134.5M |"),
        "{report}"
    );
    assert!(report.contains("verified"), "{report}");
}

/// `minerva bench`: llama-bench's flags on the real model, in every output format.
#[test]
fn minerva_bench_runs_the_real_model_in_every_output_format() {
    require_test_model();
    let _alone = measuring();
    let out_dir = tempdir();
    let out_path = out_dir.path().display().to_string();
    let bench = |extra: &[&str]| {
        let mut args = vec!["bench", "-m", TEST_MODEL, "-r", "2", "--out", &out_path];
        if !extra.contains(&"-pg") {
            args.extend(["-p", "32", "-n", "8"]);
        }
        args.extend_from_slice(extra);
        let out = Minerva::new(&args).output();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("results: "),
            "{}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };

    // -t 1,2: two rows per test, llama-bench's fields.
    let json: serde_json::Value =
        serde_json::from_str(&bench(&["-t", "1,2", "-o", "json"])).unwrap_or_default();
    let rows = json.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 4, "pp32 and tg8 at 1 and 2 threads: {json}");
    let threads: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["n_threads"].as_u64())
        .collect();
    assert_eq!(
        threads.iter().filter(|t| **t == 1).count(),
        2,
        "{threads:?}"
    );
    assert_eq!(
        threads.iter().filter(|t| **t == 2).count(),
        2,
        "{threads:?}"
    );
    for r in &rows {
        assert!(r["avg_ts"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
        assert!(r["stddev_ts"].as_f64().is_some(), "{r}");
        assert_eq!(r["samples_ts"].as_array().map(Vec::len), Some(2), "{r}");
        assert!(
            r["model_filename"]
                .as_str()
                .unwrap_or_default()
                .ends_with(".gguf"),
            "{r}"
        );
        assert_eq!(r["backends"], "CPU");
        assert_eq!(r["n_depth"], 0);
    }
    assert!(rows.iter().any(|r| r["n_prompt"] == 32 && r["n_gen"] == 0));
    assert!(rows.iter().any(|r| r["n_prompt"] == 0 && r["n_gen"] == 8));

    // -pg and -d: one combined test, at a depth.
    let jsonl = bench(&[
        "-p", "0", "-n", "0", "-pg", "16,4", "-d", "64", "-o", "jsonl",
    ]);
    let lines: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_default())
        .collect();
    assert_eq!(lines.len(), 1, "{jsonl}");
    assert_eq!(lines[0]["n_prompt"], 16);
    assert_eq!(lines[0]["n_gen"], 4);
    assert_eq!(lines[0]["n_depth"], 64);

    let md = bench(&[]);
    assert!(md.starts_with("| model"), "{md}");
    assert!(md.contains("| llama 135M Q4_1"), "{md}");
    assert!(md.contains("pp32 |") && md.contains("tg8 |"), "{md}");
    assert!(
        md.lines().nth(1).is_some_and(|l| l.contains("---: |")),
        "{md}"
    );

    let csv = bench(&["-o", "csv"]);
    assert!(
        csv.starts_with("build_commit,build_number,cpu_info"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 3, "{csv}");

    // The SQL loads into sqlite (Python's sqlite3 module: no sqlite3 binary needed).
    let sql = bench(&["-o", "sql"]);
    let mut py = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(':memory:'); c.executescript(sys.stdin.read()); \
             print(c.execute('select count(*), min(avg_ts) > 0 from llama_bench').fetchone())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    use std::io::Write;
    py.stdin
        .take()
        .map(|mut s| s.write_all(sql.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("{e}"));
    let done = py.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success());
    assert_eq!(text(&done.stdout).trim(), "(2, 1)", "{sql}");

    // Every run is an ordinary run directory, with its report and plots.
    let runs: Vec<_> = std::fs::read_dir(out_dir.path().join("bench"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    let reports = runs
        .iter()
        .filter(|p| p.join("report.md").is_file())
        .count();
    assert_eq!(reports, 5, "{runs:?}");
    assert!(runs
        .iter()
        .any(|p| p.join("plots/tg_tps.svg").is_file() && p.join("plots/pp_tps.svg").is_file()));
}
