//! Hugging Face Hub sources, in the hub's standard cache layout (shared with the Python tools):
//! `<cache>/models--org--repo/{blobs/<etag>, snapshots/<commit>/<file> → ../../blobs/<etag>,
//! refs/<revision>}`. The hf-hub crate names the repository folder and finds cached files
//! offline; the requests themselves go through reqwest (see ARCHITECTURE.md for why).

use super::http::{self, Expect, Target};
use super::{check_repo_path, FetchConfig, FetchError, FetchedFile, FetchedModel};
use crate::job::Model;
use hf_hub::{Cache, Repo};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_LENGTH, ETAG, LOCATION};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What the metadata request says about one file.
#[derive(Debug, Clone)]
struct FileMeta {
    name: String,
    commit: String,
    etag: String,
    size: u64,
    url: String,
}

pub(crate) fn file_bar(cfg: &FetchConfig, name: &str) -> ProgressBar {
    match &cfg.bars {
        Some(multi) => {
            let b = multi.add(ProgressBar::new(0));
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:30!} {bar:25} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
            ) {
                b.set_style(style);
            }
            b.set_prefix(name.to_string());
            b
        }
        None => ProgressBar::hidden(),
    }
}

fn is_commit(rev: &str) -> bool {
    rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

fn encode_path(p: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for (i, seg) in p.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(b as char);
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

fn resolve_url(cfg: &FetchConfig, repo: &str, revision: &str, file: &str) -> String {
    format!(
        "{}/{repo}/resolve/{}/{}",
        cfg.endpoint,
        encode_path(revision).replace('/', "%2F"),
        encode_path(file)
    )
}

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_string())
}

fn normalize_etag(e: &str) -> String {
    e.trim_start_matches("W/").trim_matches('"').to_string()
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs `f` with bounded retries for 429/5xx/connection failures.
async fn with_retries<T, F, Fut>(cfg: &FetchConfig, label: &str, mut f: F) -> Result<T, FetchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, (bool, String, Option<Duration>)>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match f().await {
            Ok(v) => return Ok(v),
            Err((false, m, _)) => return Err(FetchError::Network(m)),
            Err((true, m, after)) => {
                if attempt >= cfg.attempts {
                    return Err(FetchError::Network(format!(
                        "{label}: gave up after {attempt} attempts: {m}"
                    )));
                }
                let wait = cfg.delay(attempt, after);
                tracing::warn!("{label}: {m}; retrying in {:.1} s", wait.as_secs_f64());
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn classify(
    label: &str,
    status: reqwest::StatusCode,
    h: &HeaderMap,
) -> (bool, String, Option<Duration>) {
    let after = h
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs);
    let code = header(h, "x-error-code").unwrap_or_default();
    let hub_says = header(h, "x-error-message")
        .map(|m| format!(" (the hub says: {m})"))
        .unwrap_or_default();
    match status.as_u16() {
        408 | 429 | 500..=599 => (true, format!("HTTP {status}"), after),
        401 | 403 => (
            false,
            format!(
                "{label}: HTTP {status}: access denied{hub_says}. {}",
                if code == "GatedRepo" {
                    "The repository is gated: accept its license on its Hugging Face page, then set \
                     HF_TOKEN (or run `huggingface-cli login`) with a token of that account"
                } else {
                    "If the repository is gated, accept its license on its Hugging Face page; if \
                     it is private, set HF_TOKEN (or run `huggingface-cli login`) with a token that can read it"
                }
            ),
            None,
        ),
        404 => (
            false,
            format!(
                "{label}: HTTP 404: {}{hub_says}",
                match code.as_str() {
                    "RepoNotFound" => "no such repository (or it is private: set HF_TOKEN)",
                    "RevisionNotFound" => "no such revision in the repository",
                    "EntryNotFound" => "no such file at this revision",
                    _ => "not found (check the repository, the file name and the revision)",
                }
            ),
            None,
        ),
        _ => (false, format!("{label}: HTTP {status}{hub_says}"), None),
    }
}

async fn head(
    client: &reqwest::Client,
    cfg: &FetchConfig,
    repo: &str,
    revision: &str,
    name: &str,
) -> Result<FileMeta, FetchError> {
    let label = format!("{repo}/{name}@{revision}");
    let auth = http::auth_for(&cfg.endpoint, &cfg.token);
    with_retries(cfg, &label, || async {
        let mut url = resolve_url(cfg, repo, revision, name);
        // Relative redirects (a renamed repository) are followed; an absolute one is the file's
        // storage location, whose headers are the ones wanted here.
        for _ in 0..5 {
            let r = client
                .head(&url)
                .headers(http::auth_headers(&url, &auth))
                .header(ACCEPT_ENCODING, "identity")
                .send()
                .await
                .map_err(|e| (true, format!("metadata request failed: {}", http::without_url(&e)), None))?;
            let h = r.headers();
            let status = r.status();
            if status.is_redirection() {
                let loc = header(h, LOCATION.as_str()).unwrap_or_default();
                if loc.starts_with('/') && header(h, "x-repo-commit").is_none() {
                    url = format!("{}{loc}", cfg.endpoint);
                    continue;
                }
            } else if !status.is_success() {
                return Err(classify(&label, status, h));
            }
            let commit = header(h, "x-repo-commit")
                .or_else(|| is_commit(revision).then(|| revision.to_string()))
                .ok_or_else(|| {
                    (false, format!("{label}: the answer has no X-Repo-Commit header (is HF_ENDPOINT a Hugging Face hub?)"), None)
                })?;
            let etag = header(h, "x-linked-etag")
                .or_else(|| header(h, ETAG.as_str()))
                .map(|e| normalize_etag(&e))
                .filter(|e| !e.is_empty())
                .ok_or_else(|| (false, format!("{label}: the hub gave no ETag for the file"), None))?;
            let size = header(h, "x-linked-size")
                .or_else(|| header(h, CONTENT_LENGTH.as_str()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| (false, format!("{label}: the hub did not say the file's size"), None))?;
            if !is_commit(&commit) || check_repo_path(&etag).is_err() {
                return Err((false, format!("{label}: malformed commit or ETag from the hub"), None));
            }
            let download = if status.is_redirection() {
                let loc = header(h, LOCATION.as_str()).unwrap_or_default();
                if loc.starts_with('/') {
                    format!("{}{loc}", cfg.endpoint)
                } else if loc.is_empty() {
                    url.clone()
                } else {
                    loc
                }
            } else {
                url.clone()
            };
            return Ok(FileMeta {
                name: name.to_string(),
                commit,
                etag,
                size,
                url: download,
            });
        }
        Err((false, format!("{label}: too many redirects"), None))
    })
    .await
}

#[derive(serde::Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize)]
struct Sibling {
    rfilename: String,
}

/// The repository's files at `revision`, and the commit it resolved to.
async fn list(
    client: &reqwest::Client,
    cfg: &FetchConfig,
    repo: &str,
    revision: &str,
) -> Result<(Vec<String>, Option<String>), FetchError> {
    let url = format!(
        "{}/api/models/{repo}/revision/{}",
        cfg.endpoint,
        encode_path(revision).replace('/', "%2F")
    );
    let label = format!("{repo}@{revision} (file listing)");
    let auth = http::auth_for(&cfg.endpoint, &cfg.token);
    with_retries(cfg, &label, || async {
        let r = client
            .get(&url)
            .headers(http::auth_headers(&url, &auth))
            .send()
            .await
            .map_err(|e| {
                (
                    true,
                    format!("listing failed: {}", http::without_url(&e)),
                    None,
                )
            })?;
        if !r.status().is_success() {
            return Err(classify(&label, r.status(), r.headers()));
        }
        let bytes = r.bytes().await.map_err(|e| {
            (
                true,
                format!("listing cut: {}", http::without_url(&e)),
                None,
            )
        })?;
        let info: RepoInfo = serde_json::from_slice(&bytes).map_err(|e| {
            (
                false,
                format!("{label}: not a repository listing: {e}"),
                None,
            )
        })?;
        Ok((
            info.siblings.into_iter().map(|s| s.rfilename).collect(),
            info.sha.filter(|s| is_commit(s)),
        ))
    })
    .await
}

fn matcher(patterns: &[String]) -> Result<Vec<(String, globset::GlobMatcher)>, FetchError> {
    patterns
        .iter()
        .map(|p| {
            globset::Glob::new(p)
                .map(|g| (p.clone(), g.compile_matcher()))
                .map_err(|e| FetchError::Source(format!("bad file pattern `{p}`: {e}")))
        })
        .collect()
}

/// The names in `names` that the patterns select; every pattern must select something.
fn select(patterns: &[String], names: &[String], where_: &str) -> Result<Vec<String>, FetchError> {
    let globs = matcher(patterns)?;
    let mut out = Vec::new();
    for (p, g) in &globs {
        let hits: Vec<&String> = names
            .iter()
            .filter(|n| {
                if is_glob(p) {
                    g.is_match(n.as_str())
                } else {
                    *n == p
                }
            })
            .collect();
        if hits.is_empty() {
            return Err(FetchError::Source(format!(
                "`{p}` matches no file {where_}"
            )));
        }
        for h in hits {
            if !out.contains(h) {
                out.push(h.clone());
            }
        }
    }
    for n in &out {
        check_repo_path(n)
            .map_err(|why| FetchError::Source(format!("refusing repository file `{n}`: {why}")))?;
    }
    Ok(out)
}

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, base, out);
            } else if let Ok(rel) = p.strip_prefix(base) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
}

fn result(
    model: &Model,
    repo: &str,
    revision: &str,
    snapshot: &Path,
    commit: &str,
    files: Vec<FetchedFile>,
) -> FetchedModel {
    let single = files.len() == 1;
    FetchedModel {
        model: model.name.clone(),
        source: format!("hf://{repo}@{revision}"),
        path: if single {
            files[0].path.clone()
        } else {
            snapshot.to_path_buf()
        },
        commit: Some(commit.to_string()),
        files,
        fallbacks: Vec::new(),
        link: None,
    }
}

fn offline(
    model: &Model,
    repo: &str,
    patterns: &[String],
    revision: &str,
    cfg: &FetchConfig,
) -> Result<FetchedModel, FetchError> {
    let cache = Cache::new(cfg.hf_cache.clone());
    let repo_dir = cfg
        .hf_cache
        .join(Repo::model(repo.to_string()).folder_name());
    let commit = if is_commit(revision) {
        revision.to_string()
    } else {
        std::fs::read_to_string(repo_dir.join("refs").join(revision))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| is_commit(s))
            .ok_or_else(|| {
                FetchError::Offline(format!(
                    "offline: {repo}@{revision} is not in the cache {} (download it once without --offline / HF_HUB_OFFLINE)",
                    cfg.hf_cache.display()
                ))
            })?
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let mut names = Vec::new();
    walk(&snapshot, &snapshot, &mut names);
    names.sort();
    let chosen = select(
        patterns,
        &names,
        &format!("in the cached snapshot {}", snapshot.display()),
    )
    .map_err(|e| FetchError::Offline(format!("offline: {repo}@{revision}: {e}")))?;
    let store = super::VerifiedStore::new(&cfg.state_dir);
    let single = chosen.len() == 1;
    let mut files = Vec::new();
    for name in chosen {
        let repo_handle = cache.repo(Repo::with_revision(
            repo.to_string(),
            hf_hub::RepoType::Model,
            commit.clone(),
        ));
        // hf-hub finds files by ref; a commit may have no ref of its own, so fall back to the path.
        let path = repo_handle
            .get(&name)
            .unwrap_or_else(|| snapshot.join(&name));
        let size = std::fs::metadata(&path)
            .map_err(|e| FetchError::Offline(format!("offline: {}: {e}", path.display())))?
            .len();
        let expect = Expect::pinned(model.file_pin(&name, single));
        let sha = http::check_existing(&store, &path, &expect)
            .map_err(|why| FetchError::Offline(format!("offline: {}: {why}", path.display())))?;
        files.push(FetchedFile {
            name,
            path,
            size,
            sha256: sha,
            reused: true,
        });
    }
    Ok(result(model, repo, revision, &snapshot, &commit, files))
}

pub(crate) async fn fetch(
    model: &Model,
    repo: &str,
    patterns: &[String],
    revision: Option<&str>,
    cfg: &Arc<FetchConfig>,
) -> Result<FetchedModel, FetchError> {
    let revision = revision.unwrap_or("main");
    // Checked again here (the plan checked pipeline sources): a revision names a file under
    // refs/ in the cache, and a repo id is part of URLs and cache paths.
    super::check_revision(revision)
        .map_err(|why| FetchError::Source(format!("{repo}: revision `{revision}`: {why}")))?;
    super::check_repo_id(repo).map_err(|why| FetchError::Source(format!("`{repo}`: {why}")))?;
    if cfg.offline {
        return offline(model, repo, patterns, revision, cfg);
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("minerva/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Network(format!("cannot start an HTTP client: {e}")))?;
    // Globs are resolved through the listing, which also pins the commit for every file.
    let (names, pinned_rev) = if patterns.iter().any(|p| is_glob(p)) {
        let (all, sha) = list(&client, cfg, repo, revision).await?;
        (
            select(patterns, &all, &format!("in {repo}@{revision}"))?,
            sha,
        )
    } else {
        for p in patterns {
            check_repo_path(p).map_err(|why| {
                FetchError::Source(format!("refusing repository file `{p}`: {why}"))
            })?;
        }
        (patterns.to_vec(), None)
    };
    let head_rev = pinned_rev.clone().unwrap_or_else(|| revision.to_string());
    let mut metas = Vec::new();
    for n in &names {
        metas.push(head(&client, cfg, repo, &head_rev, n).await?);
    }
    let commit = metas
        .first()
        .map(|m| m.commit.clone())
        .ok_or_else(|| FetchError::Source(format!("{repo}: no files selected")))?;
    if let Some(m) = metas.iter().find(|m| m.commit != commit) {
        return Err(FetchError::Network(format!(
            "{repo}@{revision}: the revision moved while resolving it ({} at {commit}, {} at {}); run again",
            metas[0].name, m.name, m.commit
        )));
    }
    let total: u64 = metas.iter().map(|m| m.size).sum();
    let repo_dir = cfg
        .hf_cache
        .join(Repo::model(repo.to_string()).folder_name());
    let snapshot = repo_dir.join("snapshots").join(&commit);
    let total_bar = match (&cfg.bars, metas.len() > 1) {
        (Some(multi), true) => {
            let b = multi.add(ProgressBar::new(total));
            if let Ok(style) = ProgressStyle::with_template(
                "{prefix:30!} {bar:25} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} ETA {eta}",
            ) {
                b.set_style(style);
            }
            b.set_prefix(format!("total ({} files)", metas.len()));
            b
        }
        _ => ProgressBar::hidden(),
    };
    let single = metas.len() == 1;
    let sem = Arc::new(tokio::sync::Semaphore::new(cfg.parallel.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, m) in metas.into_iter().enumerate() {
        let cfg = cfg.clone();
        let sem = sem.clone();
        let repo_dir = repo_dir.clone();
        let snapshot = snapshot.clone();
        let pin = model.file_pin(&m.name, single).map(str::to_string);
        let total_bar = total_bar.clone();
        let repo = repo.to_string();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = fetch_one(&cfg, &repo, &repo_dir, &snapshot, &m, pin, &total_bar).await;
            (i, r)
        });
    }
    let mut files: Vec<Option<FetchedFile>> = Vec::new();
    let mut first_err = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, Ok(f))) => {
                if files.len() <= i {
                    files.resize(i + 1, None);
                }
                files[i] = Some(f);
            }
            Ok((_, Err(e))) => {
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
            Err(e) => {
                first_err = first_err.or(Some(FetchError::Network(format!(
                    "download task failed: {e}"
                ))))
            }
        }
    }
    total_bar.finish_and_clear();
    if let Some(e) = first_err {
        return Err(e);
    }
    if revision != commit {
        let refs = repo_dir.join("refs").join(revision);
        if let Some(dir) = refs.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        crate::paths::write_atomic(&refs, commit.as_bytes()).map_err(|e| {
            FetchError::Io(format!("cannot record the ref {}: {e}", refs.display()))
        })?;
    }
    let files: Vec<FetchedFile> = files.into_iter().flatten().collect();
    Ok(result(model, repo, revision, &snapshot, &commit, files))
}

async fn fetch_one(
    cfg: &Arc<FetchConfig>,
    repo: &str,
    repo_dir: &Path,
    snapshot: &Path,
    m: &FileMeta,
    pin: Option<String>,
    total_bar: &ProgressBar,
) -> Result<FetchedFile, FetchError> {
    let mut expect = Expect {
        size: Some(m.size),
        ..Expect::default()
    };
    if is_hex(&m.etag, 64) {
        expect
            .sha256
            .push(("the hub's ETag".into(), m.etag.to_ascii_lowercase()));
    } else if is_hex(&m.etag, 40) {
        expect.git_sha1 = Some(m.etag.to_ascii_lowercase());
    }
    if let Some(p) = pin {
        if is_hex(&m.etag, 64) && !p.eq_ignore_ascii_case(&m.etag) {
            return Err(FetchError::Integrity(format!(
                "{repo}/{}: the pinned sha256 {p} does not match the hub's ({}) at commit {}; \
                 the file changed upstream or the pin is wrong (nothing was downloaded)",
                m.name, m.etag, m.commit
            )));
        }
        expect.sha256.push(("the pinned sha256".into(), p));
    }
    let blob = repo_dir.join("blobs").join(&m.etag);
    let folder = repo_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let target = Target {
        url: m.url.clone(),
        lock: cfg
            .hf_cache
            .join(".locks")
            .join(folder)
            .join(format!("{}.lock", m.etag)),
        dest: blob.clone(),
        auth: http::auth_for(&cfg.endpoint, &cfg.token),
        label: format!("{repo}/{}", m.name),
    };
    std::fs::create_dir_all(repo_dir.join("blobs")).map_err(|e| {
        FetchError::Io(format!(
            "cannot create the cache {}: {e}",
            repo_dir.display()
        ))
    })?;
    let bar = file_bar(cfg, &m.name);
    let client = http::client()?;
    let (sha, size, reused) = http::download(&client, &target, &expect, cfg, &bar).await?;
    bar.finish_and_clear();
    total_bar.inc(size);
    let pointer = snapshot.join(&m.name);
    link_pointer(&pointer, &blob, &m.name)?;
    Ok(FetchedFile {
        name: m.name.clone(),
        path: pointer,
        size,
        sha256: Some(sha),
        reused,
    })
}

/// `snapshots/<commit>/<name>` → `../../blobs/<etag>` (relative, as the hub's tools write it).
fn link_pointer(pointer: &Path, blob: &Path, name: &str) -> Result<(), FetchError> {
    let depth = name.split('/').count() + 1;
    let mut rel = PathBuf::new();
    for _ in 0..depth {
        rel.push("..");
    }
    rel.push("blobs");
    if let Some(b) = blob.file_name() {
        rel.push(b);
    }
    if let Some(dir) = pointer.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| FetchError::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    if std::fs::read_link(pointer).ok().as_deref() == Some(rel.as_path()) {
        return Ok(());
    }
    let tmp = {
        let mut s = pointer.as_os_str().to_owned();
        s.push(format!(".link-{}", std::process::id()));
        PathBuf::from(s)
    };
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&rel, &tmp)
        .and_then(|_| std::fs::rename(&tmp, pointer))
        .map_err(|e| FetchError::Io(format!("cannot link {}: {e}", pointer.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_revisions_and_paths() {
        let mut cfg = FetchConfig::from_env(Path::new("models"));
        cfg.endpoint = "http://127.0.0.1:9".into();
        assert_eq!(
            resolve_url(&cfg, "org/repo", "refs/pr/1", "sub dir/a+b.gguf"),
            "http://127.0.0.1:9/org/repo/resolve/refs%2Fpr%2F1/sub%20dir/a%2Bb.gguf"
        );
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
    }

    #[test]
    fn globs_select_like_the_hub_tools() {
        let names: Vec<String> = [
            "config.json",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "README.md",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let got = select(
            &["*.safetensors".into(), "config.json".into()],
            &names,
            "here",
        );
        assert_eq!(got.map(|v| v.len()).ok(), Some(3));
        assert!(select(&["*.gguf".into()], &names, "here").is_err());
    }
}
