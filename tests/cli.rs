//! Integration tests: the real `minerva` binary, run from the repository root.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn shipped_pipelines_validate() {
    for p in [
        "pipelines/quickstart.yaml",
        "pipelines/mistral.yaml",
        "tests/fixtures/pipelines/valid/simulated.yaml",
    ] {
        let out = Minerva::new(&["validate", p]).output();
        assert_eq!(out.status.code(), Some(0), "{p}: {}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(": ok ("),
            "{}",
            text(&out.stdout)
        );
    }
}

/// `minerva schema` prints what docs/ holds: regenerate with
/// `minerva schema pipeline > docs/pipeline.schema.json` (and `scenario`) when this fails.
#[test]
fn checked_in_schemas_are_current() {
    for (kind, file) in [
        ("pipeline", "docs/pipeline.schema.json"),
        ("scenario", "docs/scenario.schema.json"),
    ] {
        let out = Minerva::new(&["schema", kind]).output();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout) == read(&root().join(file)),
            "{file} is stale: run `minerva schema {kind} > {file}`"
        );
    }
}

fn yaml_value(path: &std::path::Path) -> serde_json::Value {
    serde_saphyr::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema_validator(file: &str) -> jsonschema::Validator {
    let schema: serde_json::Value =
        serde_json::from_str(&read(&root().join(file))).unwrap_or_else(|e| panic!("{file}: {e}"));
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{file}: {e}"))
}

fn schema_errors(v: &jsonschema::Validator, instance: &serde_json::Value) -> Vec<String> {
    v.iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

/// Every shipped pipeline and scenario (and every valid fixture) passes the generated schema,
/// under a real JSON Schema validator, and names it on its first line; an unknown key, a wrong
/// type and a bad param value fail it.
#[test]
fn shipped_files_match_the_schema() {
    let pipeline = schema_validator("docs/pipeline.schema.json");
    let scenario = schema_validator("docs/scenario.schema.json");
    let yaml_in = |dir: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        v.sort();
        v
    };
    let shipped_pipelines = yaml_in("pipelines");
    let shipped_scenarios = yaml_in("scenarios");
    assert!(shipped_pipelines.len() >= 4 && shipped_scenarios.len() >= 6);
    for (files, v, header) in [
        (
            &shipped_pipelines,
            &pipeline,
            Some("../docs/pipeline.schema.json"),
        ),
        (
            &shipped_scenarios,
            &scenario,
            Some("../docs/scenario.schema.json"),
        ),
        (&yaml_in("tests/fixtures/pipelines/valid"), &pipeline, None),
    ] {
        for f in files {
            let errors = schema_errors(v, &yaml_value(f));
            assert!(errors.is_empty(), "{}: {errors:?}", f.display());
            if let Some(h) = header {
                let first = read(f).lines().next().unwrap_or_default().to_string();
                assert_eq!(
                    first,
                    format!("# yaml-language-server: $schema={h}"),
                    "{}",
                    f.display()
                );
            }
        }
    }

    let quickstart = yaml_value(&root().join("pipelines/quickstart.yaml"));
    let mut unknown = quickstart.clone();
    unknown["stages"][0]["nedes"] = serde_json::json!(["x"]);
    assert!(!schema_errors(&pipeline, &unknown).is_empty());
    let mut wrong = quickstart.clone();
    wrong["models"][0]["format"] = serde_json::json!(7);
    assert!(!schema_errors(&pipeline, &wrong).is_empty());
    let bench = quickstart["stages"]
        .as_array()
        .and_then(|s| s.iter().position(|st| st["kind"] == "bench"))
        .unwrap();
    for (param, value) in [
        ("threads", serde_json::json!("abc")),
        ("threads", serde_json::json!([2, 0])),
        ("dtype", serde_json::json!("f99")),
        ("load", serde_json::json!({ "concurency": 4 })),
        ("not_a_param", serde_json::json!(1)),
    ] {
        let mut bad = quickstart.clone();
        bad["stages"][bench]["matrix"]["params"][param] = value.clone();
        assert!(
            !schema_errors(&pipeline, &bad).is_empty(),
            "{param}: {value} passed"
        );
    }
    // A template renders to a value: accepted as written.
    let mut templated = quickstart.clone();
    templated["stages"][bench]["matrix"]["params"]["threads"] = serde_json::json!("{{ vars.t }}");
    templated["stages"][bench]["runs"] = serde_json::json!("{{ vars.runs }}");
    assert_eq!(schema_errors(&pipeline, &templated), Vec::<String>::new());
    let mut sc = yaml_value(&root().join("scenarios/short.yaml"));
    sc["max_tokens"] = serde_json::json!("many");
    assert!(!schema_errors(&scenario, &sc).is_empty());
}

/// src/'s top-level modules depend on each other one way (leaves → fetch, backend, results →
/// plan, stage → exec → commands): a `crate::X` reference outside `#[cfg(test)]` code is an
/// edge, and any cycle fails with its edges and where each comes from.
#[test]
fn no_cycle_among_top_level_modules() {
    use std::collections::{BTreeMap, BTreeSet};
    let src = root().join("src");
    let mods: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".rs").unwrap_or(&name).to_string();
            (stem != "main" && stem != "lib").then_some(stem)
        })
        .collect();
    let mut edges: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            let top = first.strip_suffix(".rs").unwrap_or(&first).to_string();
            if !mods.contains(&top) {
                continue;
            }
            let text = read(&p);
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (i, line) in code.lines().enumerate() {
                for part in line.split("crate::").skip(1) {
                    let name: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if name != top && mods.contains(&name) {
                        edges
                            .entry(top.clone())
                            .or_default()
                            .entry(name)
                            .or_insert_with(|| format!("{}:{}", rel.display(), i + 1));
                    }
                }
            }
        }
    }
    // A module is on a cycle when it reaches itself.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for n in edges.get(&m).into_iter().flat_map(|e| e.keys()) {
                if seen.insert(n.clone()) {
                    todo.push(n.clone());
                }
            }
        }
        seen
    };
    let mut problems = Vec::new();
    for m in &mods {
        if reach(m).contains(m) {
            for (n, at) in edges.get(m).into_iter().flatten() {
                if reach(n).contains(m) {
                    problems.push(format!("{m} -> {n} ({at})"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "module cycle edges:\n{}",
        problems.join("\n")
    );
    assert!(edges.len() > 5, "{edges:?}");
}

#[test]
fn mistral_plans_the_whole_study() {
    let out = Minerva::new(&["plan", "pipelines/mistral.yaml"]).output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // 3 engines × their own format × 4 scenarios (candle in its own stage, for its bf16
    // dtype); 3 downloads, 3 verifies, analyze, report.
    assert!(
        stdout.contains("pipeline mistral (6 stages, 20 jobs)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("bench jobs: 12 (144 repetitions"),
        "{stdout}"
    );
    for id in [
        "bench/llama_cpp/mistral-7b-q4_k_m/long/seed=42",
        "bench-candle/candle/mistral-7b-safetensors/code/dtype=bf16,seed=42",
        "bench/mlx/mistral-7b-mlx-4bit/short/seed=42",
    ] {
        assert!(stdout.contains(id), "missing {id}:\n{stdout}");
    }
    assert!(!stdout.contains("bench/llama_cpp/mistral-7b-safetensors"));
    assert!(stdout.contains("verify -> bench"));

    let json = Minerva::new(&[
        "plan",
        "pipelines/mistral.yaml",
        "--json",
        "--set",
        "runs=3",
    ])
    .output();
    let v: serde_json::Value =
        serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v["pipeline"]["vars"]["runs"], 3);
    let bench = v["jobs"]
        .as_array()
        .and_then(|j| {
            j.iter().find(|j| {
                j["id"] == "bench-candle/candle/mistral-7b-safetensors/short/dtype=bf16,seed=42"
            })
        })
        .cloned()
        .unwrap_or_default();
    // A bench job waits only for its own model's verify job.
    assert_eq!(
        bench["needs"],
        serde_json::json!(["verify/mistral-7b-safetensors"])
    );
}

#[test]
fn invalid_pipelines_fail_with_located_errors() {
    let dir = root().join("tests/fixtures/pipelines/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 12);
    for f in files {
        let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
        let started = Instant::now();
        let out = Minerva::new(&["validate", &rel]).output();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{rel} took too long"
        );
        assert_eq!(out.status.code(), Some(2), "{rel}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{rel}: {stderr}");
        assert!(
            stderr.contains(&rel),
            "{rel}: error does not name the file: {stderr}"
        );
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        insta::assert_snapshot!(format!("invalid__{name}"), stderr);
    }
}

#[test]
fn cycle_error_shows_the_path() {
    let out = Minerva::new(&["validate", "tests/fixtures/pipelines/invalid/cycle.yaml"]).output();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("dependency cycle: a → c → b → a"),
        "{stderr}"
    );
    assert!(stderr.contains("cycle.yaml:3:"), "{stderr}");
}

#[test]
fn set_rejects_unknown_vars() {
    let out = Minerva::new(&["validate", "pipelines/quickstart.yaml", "--set", "run=3"]).output();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unknown var `run`"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("did you mean `runs`"),
        "{}",
        text(&out.stderr)
    );
}

fn redact_report(report: &str) -> String {
    let mut out = Vec::new();
    for line in report.lines() {
        let l = if line.starts_with("Run `") {
            "Run `[run-id]`, started [time].".to_string()
        } else if [
            "| CPU |",
            "| Cores |",
            "| Memory |",
            "| OS |",
            "| GPU |",
            "| GPU driver |",
            "| minerva |",
            "| Build |",
        ]
        .iter()
        .any(|p| line.starts_with(p))
        {
            format!("{} [host] |", line.split(" | ").next().unwrap_or(""))
        } else {
            line.to_string()
        };
        out.push(l);
    }
    out.join("\n")
}

#[test]
fn simulated_pipeline_runs_end_to_end_and_report_rerenders_identically() {
    let out_dir = tempdir();
    let out_path = out_dir.path().display().to_string();
    let pipeline = "tests/fixtures/pipelines/valid/simulated.yaml";
    let out = Minerva::new(&["run", pipeline, "--out", &out_path, "--run-id", "r1"]).output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = out_dir.path().join("simulated/r1");
    assert!(text(&out.stdout).contains(&format!("report: {}", run.join("report.md").display())));
    // Without a terminal, progress is plain lines: each repetition's figure and the job's
    // running mean.
    let stderr = text(&out.stderr);
    let reps: Vec<(f64, f64)> = stderr
        .lines()
        .filter(|l| l.contains("bench/simulated/tiny/tg128/") && l.contains(": rep "))
        .filter_map(|l| {
            let after = l.split(": rep ").nth(1)?;
            let mut w = after.split_whitespace();
            let _n = w.next()?;
            let v: f64 = w.next()?.parse().ok()?;
            let mean: f64 = after
                .split("running mean ")
                .nth(1)?
                .split(')')
                .next()?
                .parse()
                .ok()?;
            Some((v, mean))
        })
        .collect();
    assert_eq!(reps.len(), 5, "{stderr}");
    assert!(
        (reps[1].1 - (reps[0].0 + reps[1].0) / 2.0).abs() < 0.011,
        "{reps:?}"
    );
    assert!(
        stderr.contains("tg128/pp_tps=900,tpot_ms=8,ttft_ms=25: rep 5/5"),
        "{stderr}"
    );

    // 6 scenarios × (1 warmup + 5 runs).
    let samples = lines(&run.join("samples.jsonl"));
    assert_eq!(samples.len(), 36);
    assert_eq!(samples.iter().filter(|s| s["warmup"] == true).count(), 6);
    assert!(samples.iter().all(|s| s["simulated"] == true));
    let tg = samples
        .iter()
        .find(|s| s["scenario"] == "tg128" && s["warmup"] == false)
        .cloned()
        .unwrap_or_default();
    assert_eq!(tg["token_ms"].as_array().map(Vec::len), Some(128));
    assert_eq!(tg["prompt_tokens"], 1);
    let pp = samples
        .iter()
        .find(|s| s["scenario"] == "pp512")
        .cloned()
        .unwrap_or_default();
    assert_eq!(pp["prompt_tokens"], 512);
    assert_eq!(pp["token_ms"].as_array().map(Vec::len), Some(0));

    let manifest: serde_json::Value =
        serde_json::from_str(&read(&run.join("manifest.json"))).unwrap_or_default();
    assert_eq!(manifest["status"], "complete");
    assert_eq!(manifest["pipeline"]["name"], "simulated");
    assert_eq!(manifest["command"], format!("minerva run {pipeline}"));
    assert!(manifest["host"]["logical_cpus"].as_u64().unwrap_or(0) >= 1);
    assert_eq!(manifest["resolved_sha256"].as_str().map(str::len), Some(64));
    assert!(manifest["runner_peak_rss_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(run.join("summary.parquet").is_file());
    let csv = read(&run.join("summary.csv"));
    assert!(
        csv.starts_with("job_id,backend,model,scenario,params,simulated,failed,metric,n,mean"),
        "{csv}"
    );
    let latest = std::fs::read_link(out_dir.path().join("simulated/latest")).unwrap_or_default();
    assert_eq!(latest, PathBuf::from("r1"));

    let first = read(&run.join("report.md"));
    assert!(first.contains("**SIMULATED**"));
    insta::assert_snapshot!("simulated_report", redact_report(&first));

    // The plots: self-contained SVG files beside the report, each linked from it.
    let svgs = plot_files(&run);
    assert!(svgs.len() >= 2, "{svgs:?}");
    for (name, svg) in &svgs {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(doc.root_element().tag_name().name(), "svg", "{name}");
        for node in doc.descendants().filter(|n| n.is_element()) {
            for a in node.attributes() {
                assert!(
                    !a.name().contains("href") && !a.value().contains("url("),
                    "{name}: an external reference {}={}",
                    a.name(),
                    a.value()
                );
            }
            assert!(
                !["script", "image", "foreignObject", "use"].contains(&node.tag_name().name()),
                "{name}: <{}>",
                node.tag_name().name()
            );
        }
        assert!(
            first.contains(&format!("](plots/{name})")),
            "{name} is not linked"
        );
    }
    let tg = &svgs
        .iter()
        .find(|(n, _)| n == "tg_tps.svg")
        .expect("tg_tps.svg")
        .1;
    assert!(
        tg.contains("tg128 · simulated tiny"),
        "rows are labelled by job"
    );
    assert!(
        tg.contains("generated tokens/s"),
        "the axis says what it measures"
    );
    assert!(svgs.iter().any(|(n, _)| n == "ttft_cdf.svg"));

    // Re-rendering from stored results gives the same bytes, twice, plots included.
    for _ in 0..2 {
        let again = Minerva::new(&["report", &run.display().to_string()]).output();
        assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
        assert_eq!(read(&run.join("report.md")), first);
        assert_eq!(plot_files(&run), svgs);
    }
}

/// A run's plots: (file name, SVG text), by name.
fn plot_files(run: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(run.join("plots"))
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        read(&e.path()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn sigint_keeps_samples_and_exits_130() {
    let out_dir = tempdir();
    let mut cmd = Minerva::new(&[
        "run",
        "tests/fixtures/pipelines/valid/interrupt.yaml",
        "--out",
    ])
    .cmd;
    let child = cmd
        .arg(out_dir.path())
        .args(["--run-id", "int"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let run = out_dir.path().join("interrupt/int");
    let samples = run.join("samples.jsonl");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&samples)
        .map(|s| s.lines().count())
        .unwrap_or(0)
        < 3
    {
        assert!(Instant::now() < deadline, "no samples appeared");
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    assert!(kill.map(|s| s.success()).unwrap_or(false));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "did not stop promptly"
    );
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));

    let kept = lines(&samples);
    let measured = kept.iter().filter(|s| s["error"].is_null()).count();
    assert!((3..40).contains(&measured), "{measured} samples");
    let last = kept.last().cloned().unwrap_or_default();
    assert_eq!(last["error"]["kind"], "interrupted");
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&run.join("manifest.json"))).unwrap_or_default();
    assert_eq!(manifest["status"], "interrupted");
    assert!(manifest["jobs"].as_array().is_some_and(|j| j
        .iter()
        .any(|j| j["id"] == "report" && j["status"] == "skipped")));

    let rep = Minerva::new(&["report", &run.display().to_string()]).output();
    assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
    let report = read(&run.join("report.md"));
    assert!(report.contains("INTERRUPTED RUN"));
    assert!(
        report.contains(&format!("| {measured} (1 failed) |")),
        "{report}"
    );
}

#[test]
fn crashes_failures_and_missing_models_are_data_with_keep_going() {
    let out_dir = tempdir();
    let out = Minerva::new(&[
        "run",
        "tests/fixtures/pipelines/valid/failures.yaml",
        "--keep-going",
        "--run-id",
        "f",
        "--out",
    ])
    .output_with(out_dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("job(s) failed"), "{stderr}");
    let run = out_dir.path().join("failures/f");
    let samples = lines(&run.join("samples.jsonl"));
    let errors: Vec<&serde_json::Value> =
        samples.iter().filter(|s| !s["error"].is_null()).collect();
    let kinds: Vec<&str> = errors
        .iter()
        .filter_map(|s| s["error"]["kind"].as_str())
        .collect();
    // crash_rep=2 crashes (abort) at rep 2 unless fail_rep=1 fails first.
    assert!(kinds.contains(&"crash"), "{kinds:?}");
    assert!(kinds.contains(&"backend"), "{kinds:?}");
    let crash = errors
        .iter()
        .find(|s| s["error"]["kind"] == "crash")
        .cloned()
        .cloned()
        .unwrap_or_default();
    assert!(
        crash["error"]["stderr_tail"]
            .to_string()
            .contains("simulated crash at repetition 2"),
        "{crash}"
    );
    assert!(
        crash["error"]["exit_status"]
            .as_str()
            .unwrap_or("")
            .contains("signal"),
        "{crash}"
    );
    // The healthy job ran all its repetitions despite the others.
    let healthy = samples
        .iter()
        .filter(|s| {
            s["job_id"] == "bench/simulated/tiny/s/crash_rep=99,fail_rep=99,realtime=false"
                && s["error"].is_null()
        })
        .count();
    assert_eq!(healthy, 3);
    // Jobs on the model whose verify failed never ran.
    assert!(!samples.iter().any(|s| s["model"] == "missing"));
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&run.join("manifest.json"))).unwrap_or_default();
    assert_eq!(manifest["status"], "failed");
    let skipped = manifest["jobs"]
        .as_array()
        .map(|j| j.iter().filter(|j| j["status"] == "skipped").count());
    assert_eq!(skipped, Some(4));
    let report = read(&run.join("report.md"));
    assert!(report.contains("## Failures"), "{report}");
    assert!(
        report.contains("simulated crash at repetition 2"),
        "{report}"
    );
}

#[test]
fn secrets_never_reach_files_or_output() {
    let secret = "sk-test-VERY-SECRET-123";
    let out_dir = tempdir();
    let plan = Minerva::new(&[
        "plan",
        "tests/fixtures/pipelines/valid/secrets.yaml",
        "--json",
        "--allow-env",
        "MINERVA_TEST_API_TOKEN",
    ])
    .env("MINERVA_TEST_API_TOKEN", secret)
    .output();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(!text(&plan.stdout).contains(secret));
    assert!(
        text(&plan.stdout).contains("run-***REDACTED***"),
        "{}",
        text(&plan.stdout)
    );
    let out = Minerva::new(&[
        "run",
        "tests/fixtures/pipelines/valid/secrets.yaml",
        "--allow-env",
        "MINERVA_TEST_API_TOKEN",
        "-vv",
        "--run-id",
        "s",
        "--out",
    ])
    .env("MINERVA_TEST_API_TOKEN", secret)
    .output_with(out_dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains(secret) && !text(&out.stderr).contains(secret));
    let run = out_dir.path().join("secrets/s");
    for f in ["manifest.json", "samples.jsonl", "report.md"] {
        let body = read(&run.join(f));
        assert!(!body.contains(secret), "{f} leaks the secret");
    }
    // The template still saw the real value: "run-" + 23 characters.
    let samples = lines(&run.join("samples.jsonl"));
    assert_eq!(samples[0]["params"]["ttft_ms"], 27);
}

#[test]
fn a_job_past_its_timeout_is_killed_and_recorded() {
    let out_dir = tempdir();
    let started = Instant::now();
    let out = Minerva::new(&[
        "run",
        "tests/fixtures/pipelines/valid/timeout.yaml",
        "--run-id",
        "t",
        "--out",
    ])
    .output_with(out_dir.path());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the timeout did not stop the job"
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let samples = lines(&out_dir.path().join("timeout/t/samples.jsonl"));
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert_eq!(samples[0]["error"]["kind"], "timeout");
    assert_eq!(samples[0]["error"]["message"], "timed out after 1s");
    assert!(
        samples[0]["error"]["exit_status"]
            .as_str()
            .unwrap_or("")
            .contains("signal: 9"),
        "{}",
        samples[0]
    );
}

#[test]
fn a_run_id_is_never_reused() {
    let out_dir = tempdir();
    let run = || {
        Minerva::new(&[
            "run",
            "tests/fixtures/pipelines/valid/simulated.yaml",
            "--run-id",
            "same",
            "--out",
        ])
        .output_with(out_dir.path())
    };
    assert_eq!(run().status.code(), Some(0));
    let second = run();
    assert_eq!(second.status.code(), Some(3), "{}", text(&second.stderr));
    assert!(
        text(&second.stderr).contains("already exists"),
        "{}",
        text(&second.stderr)
    );
    // The first run's samples are untouched: 6 jobs × 6 repetitions.
    assert_eq!(
        lines(&out_dir.path().join("simulated/same/samples.jsonl")).len(),
        36
    );
}

#[test]
fn user_templates_render_sandboxed() {
    let dir = tempdir();
    let out = Minerva::new(&[
        "run",
        "tests/fixtures/pipelines/valid/simulated.yaml",
        "--run-id",
        "t",
        "--out",
    ])
    .output_with(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = dir.path().join("simulated/t").display().to_string();
    let tpl = dir.path().join("mine.md.j2");
    std::fs::write(
        &tpl,
        "{{ title }}: {{ scenarios | length }} scenarios, first {{ scenarios[0].name }}\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let dest = dir.path().join("mine.md");
    let r = Minerva::new(&[
        "report",
        &run,
        "--template",
        &tpl.display().to_string(),
        "-o",
        &dest.display().to_string(),
    ])
    .output();
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    assert_eq!(read(&dest), "simulated: 6 scenarios, first short\n");
    // No filesystem access, and runaway loops run out of fuel: exit 2, no hang.
    for (name, body) in [
        ("include.j2", "{% include '/etc/passwd' %}"),
        (
            "loop.j2",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        ),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        let r = Minerva::new(&[
            "report",
            &run,
            "--template",
            &p.display().to_string(),
            "-o",
            &dest.display().to_string(),
        ])
        .output();
        assert_eq!(r.status.code(), Some(2), "{name}: {}", text(&r.stderr));
        assert!(started.elapsed() < Duration::from_secs(20), "{name}");
    }
}

#[test]
fn oversized_pipeline_files_are_refused_before_parsing() {
    let dir = tempdir();
    let p = dir.path().join("huge.yaml");
    let body = format!(
        "name: huge\ndescription: \"{}\"\nstages: []\n",
        "x".repeat(5 << 20)
    );
    std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
    let out = Minerva::new(&["validate", &p.display().to_string()]).output();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("larger than the 4194304-byte limit"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn verify_checks_safetensors_files_and_directories() {
    let dir = common::tempdir();
    let header = r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(&[0u8; 24]);
    let good = dir.path().join("model.safetensors");
    std::fs::write(&good, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let out = Minerva::new(&["verify", &good.display().to_string()]).output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("6 parameters, F32×1"),
        "{}",
        text(&out.stdout)
    );
    // One byte of data short: the tensor runs past the end of the file.
    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, &bytes[..bytes.len() - 1]).unwrap_or_else(|e| panic!("{e}"));
    let out = Minerva::new(&["verify", &bad.display().to_string()]).output();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("tensor `w` ends at 24, past the 23-byte data buffer"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn divergent_outputs_are_marked_and_their_speed_not_comparable() {
    let dir = tempdir();
    let p = dir.path().join("agree.yaml");
    std::fs::write(
        &p,
        r#"name: agree
models:
  - { name: m, format: gguf, source: { path: models/m.gguf } }
  - { name: copy, format: gguf, source: { path: models/copy.gguf } }
scenarios:
  - { name: s, prompt: "Hello there", max_tokens: 32 }
agreement: { min_prefix: 16 }
stages:
  - name: bench
    kind: bench
    matrix:
      backend: [simulated]
      model: [m, copy]
      scenario: [s]
      params: { diverge_at: [32, 20, 3] }
      exclude: [{ model: copy, diverge_at: 32 }, { model: copy, diverge_at: 20 }]
    runs: 2
  - { name: analyze, kind: analyze, needs: [bench] }
  - { name: report, kind: report, needs: [analyze] }
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Minerva::new(&["run", &p.display().to_string(), "--run-id", "a", "--out"])
        .output_with(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = read(&dir.path().join("agree/a/report.md"));
    // m/diverge_at=32 is the reference; 20 agrees on 20 ≥ 16; 3 does not.
    assert!(report.contains("## Output agreement"), "{report}");
    assert!(
        report.contains("| s | simulated · m | simulated · m | 20/32 | same | agree |"),
        "{report}"
    );
    assert!(
        report.contains(
            "| s | simulated · m | simulated · m | 3/32 | same | **DIVERGENT**: speed not comparable |"
        ),
        "{report}"
    );
    // Different weights: shown, not judged.
    assert!(
        report.contains("| s | simulated · m | simulated · copy | 3/32 | same | different weights: not judged |"),
        "{report}"
    );
    assert!(
        report.contains(
            "| simulated **SIMULATED** **DIVERGENT: not comparable** | m | diverge_at=3 |"
        ),
        "{report}"
    );
    assert!(
        report.contains("**DIVERGENT** 3/32 vs simulated"),
        "{report}"
    );
    assert_eq!(
        report.matches("DIVERGENT: not comparable").count(),
        1,
        "{report}"
    );

    // Bad keys: located errors, exit 2.
    for (body, want) in [
        (
            "agreement: { min_prefix: 0 }",
            "agreement.min_prefix: must be at least 1",
        ),
        ("agreement: { prefix: 3 }", "unknown field `prefix`"),
    ] {
        let bad = dir.path().join("bad.yaml");
        std::fs::write(
            &bad,
            format!("name: bad\n{body}\nstages:\n  - {{ name: a, kind: analyze }}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = Minerva::new(&["validate", &bad.display().to_string()]).output();
        assert_eq!(r.status.code(), Some(2), "{body}");
        assert!(
            text(&r.stderr).contains(want),
            "{body}: {}",
            text(&r.stderr)
        );
    }
}

#[test]
fn convert_sources_are_checked_before_anything_runs() {
    let dir = tempdir();
    for (models, want) in [
        (
            "  - { name: st, format: safetensors, source: { convert: { from: q } } }\n  - { name: q, format: gguf, source: { path: q.gguf } }",
            "`q` is not a model declared before `st`",
        ),
        (
            "  - { name: q, format: gguf, source: { path: q.gguf } }\n  - { name: st, format: gguf, source: { convert: { from: q } } }",
            "a model converted from a GGUF has `format: safetensors`",
        ),
        (
            "  - { name: q, format: gguf, source: { path: q.gguf } }\n  - { name: st, format: safetensors, source: { convert: { from: q, dtype: f8 } } }",
            "`f8`: expected f32, bf16 or f16",
        ),
        (
            "  - { name: d, format: safetensors, source: { path: d } }\n  - { name: st, format: safetensors, source: { convert: { from: d } } }",
            "`d` is not a GGUF model",
        ),
    ] {
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            format!("name: c\nmodels:\n{models}\nstages:\n  - {{ name: fetch, kind: download }}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let r = Minerva::new(&["validate", &p.display().to_string()]).output();
        assert_eq!(r.status.code(), Some(2), "{models}");
        let err = text(&r.stderr);
        assert!(err.contains(want) && err.contains("c.yaml:"), "{want}: {err}");
    }
    // A valid one: the converted model's download waits for its source's.
    let p = dir.path().join("ok.yaml");
    std::fs::write(
        &p,
        "name: ok\nmodels:\n  - { name: q, format: gguf, source: { path: q.gguf } }\n  - { name: st, format: safetensors, source: { convert: { from: q } } }\nstages:\n  - { name: fetch, kind: download }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let r = Minerva::new(&["plan", &p.display().to_string(), "--json"]).output();
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let v: serde_json::Value = serde_json::from_slice(&r.stdout).unwrap_or_default();
    let st = v["jobs"]
        .as_array()
        .and_then(|j| j.iter().find(|j| j["id"] == "fetch/st"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(st["needs"], serde_json::json!(["fetch/q"]));
}

/// A build without feature `mlx`: pipelines naming it validate and plan; its jobs are recorded
/// and reported as unavailable, failing the run unless the stage says `unavailable: skip`.
#[cfg(not(minerva_mlx))]
#[test]
fn mlx_jobs_are_reported_unavailable_without_the_feature() {
    let tmp = tempdir();
    let write = |unavailable: &str| {
        let p = tmp.path().join(format!("unav-{unavailable}.yaml"));
        std::fs::write(
            &p,
            format!(
                r#"name: unav
models:
  - name: m
    format: gguf
    source: {{ path: Cargo.toml }}
scenarios: [short]
stages:
  - name: bench
    kind: bench
    unavailable: {unavailable}
    matrix:
      backend: [simulated, mlx]
      model: [m]
      scenario: [short]
    runs: 2
  - name: report
    kind: report
    needs: [bench]
"#
            ),
        )
        .unwrap();
        p
    };
    let plan = Minerva::new(&["plan", write("skip").to_str().unwrap()]).output();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(
        text(&plan.stdout).contains("bench/mlx/m/short  runs=2 warmup=1 seed=",)
            && text(&plan.stdout)
                .contains("(backend `mlx` is unavailable on this build (enable feature mlx))"),
        "{}",
        text(&plan.stdout)
    );
    let out_dir = tmp.path().join("out");
    let run = |unavailable: &str, id: &str| {
        Minerva::new(&[
            "run",
            write(unavailable).to_str().unwrap(),
            "-k",
            "--run-id",
            id,
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .output()
    };
    let skip = run("skip", "s");
    assert_eq!(skip.status.code(), Some(0), "{}", text(&skip.stderr));
    let samples = lines(&out_dir.join("unav/s/samples.jsonl"));
    let mlx: Vec<_> = samples.iter().filter(|s| s["backend"] == "mlx").collect();
    assert_eq!(mlx.len(), 1, "{samples:?}");
    assert_eq!(mlx[0]["error"]["kind"], "unavailable");
    let report = read(&out_dir.join("unav/s/report.md"));
    assert!(
        report.contains("## Not run on this build\n\n- `bench/mlx/m/short`: backend `mlx` is unavailable on this build (enable feature mlx)"),
        "{report}"
    );
    assert!(!report.contains("## Failures"), "{report}");
    // Listed there only: no results row, no warning.
    assert!(!report.contains("| mlx |"), "{report}");
    assert!(!report.contains("samples failed"), "{report}");
    assert!(report.contains("| simulated **SIMULATED** |"), "{report}");
    let manifest: serde_json::Value =
        serde_json::from_str(&read(&out_dir.join("unav/s/manifest.json"))).unwrap();
    assert!(
        manifest["backends"]["mlx"]
            .as_str()
            .unwrap_or_default()
            .contains("unavailable on this build"),
        "{manifest}"
    );

    let fail = run("fail", "f");
    assert_eq!(fail.status.code(), Some(1), "{}", text(&fail.stderr));
    assert!(
        text(&fail.stderr).contains("1 job(s) failed: bench/mlx/m/short"),
        "{}",
        text(&fail.stderr)
    );
}

#[test]
fn bench_emits_the_pipeline_it_would_run_and_that_pipeline_validates() {
    let dir = tempdir();
    let out = Minerva::new(&[
        "bench",
        "-m",
        "tests/fixtures/models/tiny.gguf",
        "-p",
        "0",
        "-n",
        "16",
        "-pg",
        "64,8",
        "-d",
        "0,32",
        "-t",
        "1-4*2",
        "-ub",
        "256",
        "-fa",
        "0,1",
        "--delay",
        "2",
        "--no-warmup",
        "--emit-pipeline",
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    for want in [
        "backend: [llama_cpp]",
        "{ name: tg16, prompt_tokens: 0, max_tokens: 16 }",
        "{ name: pp64_tg8, prompt_tokens: 64, max_tokens: 8 }",
        "{ name: tg16_d32, prompt_tokens: 0, max_tokens: 16, depth: 32 }",
        "threads: [1, 2, 4]",
        "ubatch: 256",
        "flash_attn: [0, 1]",
        "warmup: 0",
        "delay: 2",
    ] {
        assert!(yaml.contains(want), "{want}:\n{yaml}");
    }
    assert!(!yaml.contains("pp0"), "-p 0 is no test:\n{yaml}");
    // The model path the user typed is granted: the pipeline validates from anywhere.
    let file = dir.path().join("mine.yaml");
    std::fs::write(&file, &yaml).unwrap_or_else(|e| panic!("{e}"));
    let v = Minerva::new(&[
        "validate",
        &file.display().to_string(),
        "--allow-read",
        &root().join("tests/fixtures/models").display().to_string(),
        "--json",
    ])
    .output();
    assert_eq!(v.status.code(), Some(0), "{}", text(&v.stderr));
    let j: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap_or_default();
    assert_eq!(j["ok"], true);
    // tg16 and pp64_tg8 at depths 0 and 32, × 3 threads × 2 fa; + fetch, verify, analyze, report.
    assert_eq!(j["scenarios"].as_array().map(Vec::len), Some(4), "{j}");
    assert_eq!(j["jobs"], 4 + 4 * 3 * 2, "{j}");

    // Bad flags: a clear message and exit 2.
    for (args, want) in [
        (
            vec!["-t", "4-1"],
            "-t 4-1: the range 4-1 ends before it starts",
        ),
        (vec!["-fa", "2"], "-fa: expected 0 or 1"),
        (vec!["-pg", "512"], "-pg 512: expected PP,TG"),
        (
            vec!["--backend", "candle", "-b", "64"],
            "-b: backend candle has no `batch` parameter",
        ),
        (vec!["--backend", "mlx"], "mlx loads a model directory"),
    ] {
        let mut a = vec!["bench", "-m", "tests/fixtures/models/tiny.gguf"];
        a.extend(args);
        a.push("--emit-pipeline");
        let bad = Minerva::new(&a).output();
        assert_eq!(bad.status.code(), Some(2), "{a:?}");
        assert!(
            text(&bad.stderr).contains(want),
            "{a:?}: {}",
            text(&bad.stderr)
        );
    }
    let missing = Minerva::new(&["bench", "-m", "no/such.gguf"]).output();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("-m no/such.gguf:"),
        "{}",
        text(&missing.stderr)
    );
}

#[test]
fn completions_man_page_and_examples() {
    let out = Minerva::new(&["completions", "bash"]).output();
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(script.contains("minerva"), "{script}");
    let dir = tempdir();
    let file = dir.path().join("minerva.bash");
    std::fs::write(&file, &script).unwrap_or_else(|e| panic!("{e}"));
    let check = Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(check.status.success(), "{}", text(&check.stderr));
    for shell in ["zsh", "fish", "powershell"] {
        let out = Minerva::new(&["completions", shell]).output();
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text(&out.stdout).contains("bench"), "{shell}");
    }
    let man = Minerva::new(&["man"]).output();
    assert_eq!(man.status.code(), Some(0));
    assert!(text(&man.stdout).starts_with(".ie \\n(.g .ds Aq"), "roff");
    assert!(text(&man.stdout).contains(".TH minerva 1"), "roff");
    for sub in [
        "validate",
        "bench",
        "plan",
        "run",
        "download",
        "report",
        "compare",
        "export",
        "verify",
        "schema",
        "convert",
        "completions",
        "man",
    ] {
        let help = Minerva::new(&[sub, "--help"]).output();
        assert_eq!(help.status.code(), Some(0), "{sub}");
        assert!(
            text(&help.stdout).contains("Examples:\n  minerva "),
            "{sub} --help has no examples"
        );
    }
}

#[test]
fn run_and_validate_speak_json_for_scripts() {
    let out_dir = tempdir();
    let out = Minerva::new(&[
        "run",
        "tests/fixtures/pipelines/valid/simulated.yaml",
        "--set",
        "runs=2",
        "--out",
        &out_dir.path().display().to_string(),
        "--run-id",
        "j",
        "--json",
        "-q",
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(v["status"], "complete");
    assert_eq!(v["failed"], serde_json::json!([]));
    let run = out_dir.path().join("simulated/j");
    assert_eq!(v["run_dir"], run.display().to_string());
    assert_eq!(v["report"], run.join("report.md").display().to_string());

    let bad = Minerva::new(&[
        "validate",
        "tests/fixtures/pipelines/invalid/unknown_key.yaml",
        "--json",
    ])
    .output();
    assert_eq!(bad.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap_or_default();
    assert_eq!(v["ok"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown_key.yaml:"),
        "{v}"
    );
}

/// `run --shard K/N` three times, then `merge`: the union of the samples, every scenario in the
/// report, the labels as columns; a doubled or a missing shard exits 2, `--allow-missing` says
/// PARTIAL.
#[test]
fn shards_run_apart_and_merge_into_one_report() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let pipeline = "tests/fixtures/pipelines/valid/simulated.yaml";
    let plan = Minerva::new(&["plan", pipeline, "--shard", "2/3"]).output();
    assert_eq!(plan.status.code(), Some(0), "{}", text(&plan.stderr));
    assert!(
        text(&plan.stdout).contains("shard 2/3: 2 of 6 bench jobs"),
        "{}",
        text(&plan.stdout)
    );
    let mut runs = Vec::new();
    let mut ids = std::collections::BTreeSet::new();
    for k in 1..=3 {
        let run = Minerva::new(&[
            "-q",
            "run",
            pipeline,
            "--shard",
            &format!("{k}/3"),
            "--label",
            &format!("node=n{k}"),
            "--out",
            &out.to_string_lossy(),
            "--run-id",
            &format!("s{k}"),
        ])
        .output();
        assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
        let rd = out.join("simulated").join(format!("s{k}"));
        let m: serde_json::Value = serde_json::from_str(&read(&rd.join("manifest.json")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m["shard"]["index"], k);
        assert_eq!(m["shard"]["count"], 3);
        assert_eq!(m["labels"]["node"], format!("n{k}"));
        let mine: std::collections::BTreeSet<String> = lines(&rd.join("samples.jsonl"))
            .iter()
            .map(|s| s["job_id"].as_str().unwrap_or_default().to_string())
            .collect();
        // Disjoint: no job in two shards.
        assert!(ids.is_disjoint(&mine), "{mine:?}");
        ids.extend(mine);
        runs.push(rd);
    }
    assert_eq!(ids.len(), 6, "the shards cover every bench job: {ids:?}");
    let arg = |p: &Path| p.to_string_lossy().into_owned();
    let merged = dir.path().join("merged");
    // `latest` is a link to s3: one input, not a doubled shard.
    let m = Minerva::new(&[
        "merge",
        &arg(&runs[2]),
        &arg(&runs[0]),
        &arg(&runs[1]),
        &arg(&out.join("simulated/latest")),
        "--out",
        &arg(&merged),
    ])
    .output();
    assert_eq!(m.status.code(), Some(0), "{}", text(&m.stderr));
    let union: usize = runs
        .iter()
        .map(|r| lines(&r.join("samples.jsonl")).len())
        .sum();
    assert_eq!(lines(&merged.join("samples.jsonl")).len(), union);
    assert!(union >= 36, "{union} samples");
    let report = read(&merged.join("report.md"));
    for sc in ["short", "medium", "code", "long", "pp512", "tg128"] {
        assert!(report.contains(&format!("### {sc}\n")), "{sc} missing");
    }
    assert!(report.contains("## Shards"), "{report}");
    assert!(report.contains("| 2/3 | "), "{report}");
    assert!(report.contains("| node | Backend |"), "{report}");
    assert!(!report.contains("PARTIAL"));
    let manifest: serde_json::Value = serde_json::from_str(&read(&merged.join("manifest.json")))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        manifest["merged"]["shards"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(manifest["bench_jobs"].as_array().map(Vec::len), Some(6));

    // A doubled shard (two copies of s1), a missing one, a merged run given again.
    let copy = dir.path().join("s1-copy");
    std::fs::create_dir_all(&copy).unwrap_or_else(|e| panic!("{e}"));
    for f in ["manifest.json", "samples.jsonl"] {
        std::fs::copy(runs[0].join(f), copy.join(f)).unwrap_or_else(|e| panic!("{e}"));
    }
    let doubled = Minerva::new(&[
        "merge",
        &arg(&runs[0]),
        &arg(&copy),
        &arg(&runs[1]),
        &arg(&runs[2]),
        "--out",
        &arg(&dir.path().join("m2")),
    ])
    .output();
    assert_eq!(doubled.status.code(), Some(2));
    assert!(
        text(&doubled.stderr).contains("shard 1/3 given twice"),
        "{}",
        text(&doubled.stderr)
    );
    let missing = Minerva::new(&[
        "merge",
        &arg(&runs[0]),
        &arg(&runs[2]),
        "--out",
        &arg(&dir.path().join("m3")),
    ])
    .output();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        text(&missing.stderr).contains("shard 2/3 missing"),
        "{}",
        text(&missing.stderr)
    );
    let partial = Minerva::new(&[
        "merge",
        &arg(&runs[0]),
        &arg(&runs[2]),
        "--out",
        &arg(&dir.path().join("m4")),
        "--allow-missing",
    ])
    .output();
    assert_eq!(partial.status.code(), Some(0), "{}", text(&partial.stderr));
    let report = read(&dir.path().join("m4/report.md"));
    assert!(
        report.contains("**PARTIAL: shard 2 of 3 missing.**"),
        "{report}"
    );
    // Shards on different hosts: a Host column, each host's rows together.
    let path = runs[1].join("manifest.json");
    let mut m2: serde_json::Value =
        serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{e}"));
    m2["host"]["hostname"] = "a-second-host".into();
    std::fs::write(&path, m2.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let hosts = Minerva::new(&[
        "merge",
        &arg(&runs[0]),
        &arg(&runs[1]),
        &arg(&runs[2]),
        "--out",
        &arg(&dir.path().join("m6")),
    ])
    .output();
    assert_eq!(hosts.status.code(), Some(0), "{}", text(&hosts.stderr));
    let report = read(&dir.path().join("m6/report.md"));
    assert!(report.contains("| Host | node | Backend |"), "{report}");
    assert!(
        report.contains("| a-second-host | n2 | simulated"),
        "{report}"
    );
    let again = Minerva::new(&[
        "merge",
        &arg(&merged),
        "--out",
        &arg(&dir.path().join("m5")),
    ])
    .output();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again.stderr).contains("not a shard"),
        "{}",
        text(&again.stderr)
    );
}

/// `minerva fleet`: the Kubernetes and GitHub specs parse as YAML and carry what the
/// schedulers need; the Slurm script holds the array and the dependent merge; too many shards
/// is exit 2 before anything is written.
#[test]
fn fleet_specs_carry_what_each_scheduler_needs() {
    let pipeline = "tests/fixtures/pipelines/valid/simulated.yaml";
    let yaml = |out: &std::process::Output| -> serde_json::Value {
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_saphyr::from_str(&text(&out.stdout))
            .unwrap_or_else(|e| panic!("{e}\n{}", text(&out.stdout)))
    };
    let k8s = yaml(
        &Minerva::new(&[
            "fleet",
            "k8s",
            pipeline,
            "--shards",
            "4",
            "--image",
            "ghcr.io/me/minerva:1",
            "--gpus",
            "1",
            "--node-selector",
            "gpu=h100",
        ])
        .output(),
    );
    let items = k8s["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 2);
    let job = &items[0];
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    assert_eq!(job["spec"]["completions"], 4);
    assert_eq!(job["spec"]["parallelism"], 4);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["gpu"], "h100");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "ghcr.io/me/minerva:1");
    assert_eq!(c["resources"]["limits"]["nvidia.com/gpu"], 1);
    let run = c["args"][0].as_str().unwrap_or_default();
    assert!(
        run.contains("--shard \"$((JOB_COMPLETION_INDEX + 1))/4\""),
        "{run}"
    );
    assert_eq!(items[1]["kind"], "Job");
    assert!(
        items[1]["spec"]["template"]["spec"]["containers"][0]["args"][0]
            .as_str()
            .is_some_and(|a| a.contains("merge /results/shards/simulated/shard-*"))
    );

    let gh = yaml(
        &Minerva::new(&[
            "fleet",
            "github",
            pipeline,
            "--shards",
            "3",
            "--baseline-artifact",
            "base-run",
        ])
        .output(),
    );
    assert_eq!(
        gh["jobs"]["shard"]["strategy"]["matrix"]["shard"],
        serde_json::json!([1, 2, 3])
    );
    assert_eq!(gh["jobs"]["merge"]["needs"], "shard");
    let steps = |job: &str| -> String { gh["jobs"][job]["steps"].to_string() };
    assert!(steps("shard").contains("actions/upload-artifact"));
    assert!(steps("shard").contains("--shard ${{ matrix.shard }}/3"));
    assert!(steps("merge").contains("actions/download-artifact"));
    assert!(steps("merge").contains("GITHUB_STEP_SUMMARY"));
    assert!(steps("merge").contains("compare baseline merged"));
    assert!(gh["on"]["workflow_dispatch"]["inputs"]["baseline_run_id"].is_object());

    let slurm = Minerva::new(&[
        "fleet",
        "slurm",
        pipeline,
        "--shards",
        "3",
        "--partition",
        "gpu",
        "--gpus-per-task",
        "1",
    ])
    .output();
    assert_eq!(slurm.status.code(), Some(0), "{}", text(&slurm.stderr));
    let script = text(&slurm.stdout);
    for want in [
        "#SBATCH --array=1-3",
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-task=1",
        "--shard \"${SLURM_ARRAY_TASK_ID}/3\"",
        "--dependency=\"afterok:${array}\"",
        "merge out/shards/simulated/shard-*",
    ] {
        assert!(script.contains(want), "{want} missing:\n{script}");
    }

    let many = Minerva::new(&["fleet", "slurm", pipeline, "--shards", "9"]).output();
    assert_eq!(many.status.code(), Some(2));
    assert!(
        text(&many.stderr).contains("at most 6 shards"),
        "{}",
        text(&many.stderr)
    );
}

/// The roofline column: a run whose host bandwidth is recorded shows each in-process job's
/// generation speed as a share of bandwidth ÷ bytes per token, and flags a share above 100%.
/// (The simulated run's rows are relabelled as an engine's; the figures are the simulated ones.)
#[test]
fn the_report_shows_the_roofline_and_flags_figures_above_it() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let run = Minerva::new(&[
        "-q",
        "run",
        "tests/fixtures/pipelines/valid/simulated.yaml",
        "--out",
        &out.to_string_lossy(),
        "--run-id",
        "r",
    ])
    .output();
    assert_eq!(run.status.code(), Some(0), "{}", text(&run.stderr));
    let rd = out.join("simulated/r");
    let samples = read(&rd.join("samples.jsonl"))
        .replace("\"simulated\":true", "\"simulated\":false")
        .replace("\"backend\":\"simulated\"", "\"backend\":\"llama_cpp\"")
        // 2.5 J a repetition, as a RAPL reading would give.
        .replace("\"warmup\":false", "\"warmup\":false,\"energy_j\":2.5");
    std::fs::write(rd.join("samples.jsonl"), samples).unwrap_or_else(|e| panic!("{e}"));
    // tests/fixtures/models/tiny.gguf holds no tensors: give it 100 MB of weights and 20 kB
    // of KV per position, as a 135M-parameter 4-bit model has.
    let mut model: serde_json::Value =
        serde_json::from_str(&read(&rd.join("model-tiny.json"))).unwrap_or_else(|e| panic!("{e}"));
    assert!(model.get("weight_bytes_per_token").is_none(), "{model}");
    model["weight_bytes_per_token"] = 100_000_000.into();
    model["kv_bytes_per_position"] = 20_000.into();
    std::fs::write(rd.join("model-tiny.json"), model.to_string()).unwrap_or_else(|e| panic!("{e}"));
    for (bytes_per_s, flagged) in [(1.0e15, false), (1.0, true)] {
        model["bandwidth"] = serde_json::json!({
            "bytes_per_s": bytes_per_s, "bytes": 134_217_728u64, "method": "a test's figure",
            "measured_at": "2026-12-02T00:00:00Z"
        });
        std::fs::write(rd.join("model-tiny.json"), model.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        let path = rd.join("manifest.json");
        let mut m: serde_json::Value =
            serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{e}"));
        m["energy"] = "RAPL package-0 (CPU package energy)".into();
        std::fs::write(&path, m.to_string()).unwrap_or_else(|e| panic!("{e}"));
        let rep = Minerva::new(&["report", &rd.to_string_lossy()]).output();
        assert_eq!(rep.status.code(), Some(0), "{}", text(&rep.stderr));
        let report = read(&rd.join("report.md"));
        assert!(report.contains("| of roofline t/s |"), "{report}");
        assert!(report.contains("tiny: "), "{report}");
        assert!(
            report.contains("| Energy | RAPL package-0 (CPU package energy) |"),
            "{report}"
        );
        assert!(report.contains(" J/token | W |"), "{report}");
        assert_eq!(
            report.contains("above the roofline, a measurement error"),
            flagged,
            "{report}"
        );
    }
}
