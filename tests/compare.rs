//! `minerva compare`, `minerva export` and the validity marks of a report, end to end on the
//! simulated backend (cheap, seeded): false alarms between runs that differ only in their random
//! draws, detection of a 10% regression, the comparability guard, INVALID percentiles,
//! `runs: {min, max, rel_ci}`, samples.parquet, and llama.cpp's compare-llama-bench.py reading
//! two exports.

mod common;

use common::{read, root, tempdir, text, Minerva};
use polars::prelude::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const PIPELINE: &str = "tests/fixtures/pipelines/valid/compare.yaml";

/// Runs a pipeline into `out` with `--run-id id` and `--set` overrides; returns the run dir.
fn run(pipeline: &str, out: &Path, id: &str, sets: &[&str]) -> PathBuf {
    let out_s = out.display().to_string();
    let mut args = vec!["run", pipeline, "--out", &out_s, "--run-id", id];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let o = Minerva::new(&args).output();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let name = Path::new(pipeline)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    out.join(name).join(id)
}

fn compare(base: &Path, new: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let (b, n) = (base.display().to_string(), new.display().to_string());
    let mut args = vec!["compare", &b, &n];
    args.extend_from_slice(extra);
    let o = Minerva::new(&args).output();
    (o.status.code(), text(&o.stdout), text(&o.stderr))
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn same_settings_different_seeds_rarely_say_slower_and_a_slower_tpot_is_caught() {
    let out = tempdir();
    let base = run(PIPELINE, out.path(), "seed1", &["seed=1"]);
    let mut valid = 0usize;
    let mut slower = 0usize;
    let mut pairs = 0usize;
    let mut pairs_with_slower = 0usize;
    for seed in [2, 3] {
        let new = run(
            PIPELINE,
            out.path(),
            &format!("seed{seed}"),
            &[&format!("seed={seed}")],
        );
        let (code, stdout, stderr) = compare(&base, &new, &["--json", "--fail-on-regression"]);
        let c = json(&stdout);
        assert_eq!(c["jobs"].as_array().map(Vec::len), Some(40), "{stderr}");
        assert!(c["only_in_base"].as_array().is_some_and(Vec::is_empty));
        for j in c["jobs"].as_array().into_iter().flatten() {
            pairs += 1;
            let mut any = false;
            for m in j["metrics"].as_array().into_iter().flatten() {
                match m["verdict"].as_str() {
                    Some("invalid") => {}
                    Some(v) => {
                        valid += 1;
                        if v == "slower" {
                            slower += 1;
                            any = true;
                        }
                    }
                    None => panic!("no verdict: {m}"),
                }
            }
            pairs_with_slower += usize::from(any);
        }
        assert_eq!(code, Some(if c["regression"] == true { 1 } else { 0 }));
    }
    let rate = slower as f64 / valid as f64;
    println!(
        "false alarms: {slower} `slower` of {valid} metric verdicts ({:.1}%) over {pairs} job \
         pairs; {pairs_with_slower} pairs with any `slower`",
        rate * 100.0
    );
    assert!(pairs >= 40);
    assert!(rate <= 0.05, "false-slower rate {rate}");

    // TPOT 10% slower: `slower`, with its size and interval, and exit 1 when asked.
    let slow = run(PIPELINE, out.path(), "slow", &["seed=2", "tpot=11"]);
    let (code, stdout, _) = compare(&base, &slow, &["--json", "--metric", "tpot_ms"]);
    assert_eq!(code, Some(0), "without --fail-on-regression");
    let c = json(&stdout);
    assert_eq!(c["counts"]["slower"], 40, "{}", c["headline"]);
    let m = &c["jobs"][0]["metrics"][0];
    assert_eq!(m["metric"], "tpot_ms");
    let change = m["change"].as_f64().unwrap_or(0.0);
    let (lo, hi) = (
        m["change_ci"][0].as_f64().unwrap_or(0.0),
        m["change_ci"][1].as_f64().unwrap_or(0.0),
    );
    assert!((change - 0.1).abs() < 0.02, "{change}");
    assert!(lo < change && change < hi && lo > 0.05, "{lo} {hi}");
    let (code, stdout, _) = compare(&base, &slow, &["--fail-on-regression"]);
    assert_eq!(code, Some(1));
    assert!(
        stdout.starts_with("## minerva compare: "),
        "{}",
        stdout.lines().next().unwrap_or_default()
    );
    assert!(stdout.contains("| **slower** |"), "{stdout}");
    assert!(stdout.contains("SIMULATED"));
}

#[test]
fn the_guard_refuses_another_cpu_unless_allowed() {
    let out = tempdir();
    let base = run(PIPELINE, out.path(), "a", &["runs=3"]);
    let new = run(PIPELINE, out.path(), "b", &["runs=3", "seed=2"]);
    let manifest = new.join("manifest.json");
    let mut m = json(&read(&manifest));
    m["host"]["cpu"] = "Imaginary CPU 9000".into();
    std::fs::write(&manifest, serde_json::to_string(&m).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let (code, stdout, stderr) = compare(&base, &new, &[]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stderr.contains("host.cpu:"), "{stderr}");
    assert!(stderr.contains("Imaginary CPU 9000 (new)"), "{stderr}");
    assert!(stderr.contains("--allow-different host"), "{stderr}");
    let (code, stdout, stderr) = compare(&base, &new, &["--allow-different", "host"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stdout.contains("**Not like for like:** CPU differs (")
            && stdout.contains("Imaginary CPU 9000)"),
        "{stdout}"
    );
    // Bad input: exit 2 with the reason.
    let (code, _, stderr) = compare(&base, Path::new("/nonexistent/run"), &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not a run directory"), "{stderr}");
    let (code, _, stderr) = compare(
        &base,
        &new,
        &["--allow-different", "host", "--metric", "nope"],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("unknown metric"), "{stderr}");
}

#[test]
fn three_repetitions_give_invalid_percentiles_and_samples_parquet_has_every_line() {
    let out = tempdir();
    let r = run(PIPELINE, out.path(), "three", &["runs=3"]);
    let report = read(&r.join("report.md"));
    assert!(report.contains("too few samples (3 of 64)"), "{report}");
    // Compare with three a side: means are compared, p90 of per-run values is not offered.
    let lines = read(&r.join("samples.jsonl")).lines().count();
    let df = ParquetReader::new(
        std::fs::File::open(r.join("samples.parquet")).unwrap_or_else(|e| panic!("{e}")),
    )
    .finish()
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(df.height(), lines);
    assert_eq!(lines, 40 * (3 + 1), "3 runs and a warmup per job");
    for col in [
        "job_id",
        "param.ttft_ms",
        "tg_tps",
        "tpot_ms",
        "token_ms",
        "warmup",
    ] {
        assert!(df.column(col).is_ok(), "no column {col}");
    }
    let tokens = df
        .column("token_ms")
        .and_then(|c| Ok(c.list()?.get_as_series(0)))
        .ok()
        .flatten()
        .map(|s| s.len());
    assert_eq!(tokens, Some(20), "the short scenario generates 20 tokens");
}

#[test]
fn runs_until_stable_take_min_when_steady_and_more_when_noisy() {
    let out = tempdir();
    let measured = |run: &Path| {
        common::lines(&run.join("samples.jsonl"))
            .iter()
            .filter(|s| s["warmup"] == false)
            .count()
    };
    let steady = run(
        "tests/fixtures/pipelines/valid/until_stable.yaml",
        out.path(),
        "steady",
        &["jitter=0"],
    );
    assert_eq!(measured(&steady), 5);
    assert!(!read(&steady.join("report.md")).contains("UNSTABLE ("));
    let noisy = run(
        "tests/fixtures/pipelines/valid/until_stable.yaml",
        out.path(),
        "noisy",
        &["jitter=0.5"],
    );
    let n = measured(&noisy);
    assert!(n > 5, "{n}");
    assert_eq!(n, 40, "±50% jitter never gets within ±1% in 40 runs");
    let report = read(&noisy.join("report.md"));
    assert!(report.contains("UNSTABLE ("), "{report}");
    assert!(report.contains("max 40 runs reached"), "{report}");
}

#[test]
fn export_is_read_by_compare_llama_bench() {
    let script = root().join("target/fidelity/llama.cpp/scripts/compare-llama-bench.py");
    assert!(
        script.is_file(),
        "{} is missing: run scripts/build-llama-tools.sh (no arguments) to fetch it",
        script.display()
    );
    let out = tempdir();
    let a = run(PIPELINE, out.path(), "a", &["runs=3"]);
    let b = run(PIPELINE, out.path(), "b", &["runs=3", "tpot=11"]);
    // `minerva export` of a run, labelled as compare-llama-bench.py's builds.
    let export = |dir: &Path, label: &str, format: &str, file: &Path| {
        let o = Minerva::new(&[
            "export",
            &dir.display().to_string(),
            "--format",
            format,
            "--build-commit",
            label,
            "-o",
            &file.display().to_string(),
        ])
        .output();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    };
    let files = [
        out.path().join("aaaaaaaa.json"),
        out.path().join("bbbbbbbb.json"),
    ];
    export(&a, "aaaaaaaa", "llama-bench-json", &files[0]);
    export(&b, "bbbbbbbb", "llama-bench-jsonl", &files[1]);
    let first: Value = json(&read(&files[0]));
    let e = &first[0];
    for k in [
        "build_commit",
        "avg_ts",
        "stddev_ts",
        "samples_ts",
        "samples_ns",
        "n_prompt",
        "n_gen",
        "model_filename",
    ] {
        assert!(e.get(k).is_some(), "no {k}: {e}");
    }
    assert_eq!(e["backends"], "SIMULATED");
    // compare-llama-bench.py takes one format per call: convert the JSONL export by itself.
    let jsonl: Vec<Value> = read(&files[1]).lines().map(json).collect();
    let b_json = out.path().join("bbbbbbbb-array.json");
    std::fs::write(&b_json, serde_json::to_string(&jsonl).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    // The same two runs as CSV, and as SQL loaded into one SQLite database.
    let csv = [out.path().join("a.csv"), out.path().join("b.csv")];
    export(&a, "aaaaaaaa", "llama-bench-csv", &csv[0]);
    export(&b, "bbbbbbbb", "llama-bench-csv", &csv[1]);
    assert_eq!(
        read(&csv[0]).lines().count(),
        1 + 2 * 40,
        "a header, pp and tg per job"
    );
    let sql = [out.path().join("a.sql"), out.path().join("b.sql")];
    export(&a, "aaaaaaaa", "llama-bench-sql", &sql[0]);
    export(&b, "bbbbbbbb", "llama-bench-sql", &sql[1]);
    let db = out.path().join("runs.sqlite");
    let load = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\ncon = sqlite3.connect(sys.argv[1])\nfor f in sys.argv[2:]: con.executescript(open(f).read())\ncon.commit()",
        ])
        .arg(&db)
        .args(&sql)
        .output()
        .unwrap_or_else(|e| panic!("python3: {e}"));
    assert!(load.status.success(), "{}", text(&load.stderr));

    // JSONL is read as one file: both runs' lines together.
    let a_jsonl = out.path().join("a.jsonl");
    export(&a, "aaaaaaaa", "llama-bench-jsonl", &a_jsonl);
    let both = out.path().join("both.jsonl");
    std::fs::write(&both, read(&a_jsonl) + &read(&files[1])).unwrap_or_else(|e| panic!("{e}"));

    let inputs: [Vec<&Path>; 4] = [
        vec![&files[0], &b_json],
        vec![&both],
        vec![&csv[0], &csv[1]],
        vec![&db],
    ];
    for input in inputs {
        let mut cmd = Command::new("python3");
        cmd.arg(&script);
        for i in &input {
            cmd.arg("-i").arg(i);
        }
        let o = cmd
            .args(["-t", "llama-bench", "-b", "aaaaaaaa", "-c", "bbbbbbbb"])
            .args(["-s", "backends"])
            .current_dir(out.path())
            .output()
            .unwrap_or_else(|e| panic!("python3: {e}"));
        let table = text(&o.stdout);
        println!("{input:?}\n{table}");
        assert!(o.status.success(), "{}{}", table, text(&o.stderr));
        assert!(table.contains("Speedup"), "{table}");
        // tg20 is 10% slower in b: a speedup near 0.91.
        let tg = table
            .lines()
            .find(|l| l.contains("tg20"))
            .unwrap_or_else(|| panic!("no tg20 row: {table}"));
        let speedup: f64 = tg
            .split('|')
            .map(str::trim)
            .rfind(|c| !c.is_empty())
            .and_then(|c| c.parse().ok())
            .unwrap_or(0.0);
        assert!((0.85..0.95).contains(&speedup), "{tg}");
    }
}
