//! One file over HTTP, with every check a model download needs: status of every response,
//! byte count against the expected size, sha256 (and git-sha1) computed while streaming,
//! `<dest>.incomplete` + fsync + rename, `Range` resume, bounded retries with backoff for
//! 429/5xx/timeouts/cut connections (never for other 4xx), and a lock against other processes.
//!
//! Receiving and writing+hashing run on two threads (the async task and a blocking writer), so
//! hashing does not slow the transfer on a machine with two cores.

use super::{check_free_space, FetchConfig, FetchError, FetchedFile, FetchedModel, VerifiedStore};
use crate::job::Model;
use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_RANGE, RANGE, RETRY_AFTER};
use reqwest::StatusCode;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a downloaded file must be.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expect {
    pub size: Option<u64>,
    /// (what it is, lowercase hex): the hub's LFS ETag, a pinned hash.
    pub sha256: Vec<(String, String)>,
    /// A git blob sha1 (the hub's ETag of a file not stored in LFS).
    pub git_sha1: Option<String>,
}

impl Expect {
    /// Only a pinned hash (if any) to check: sources that announce no size or hash.
    pub(crate) fn pinned(pin: Option<&str>) -> Expect {
        Expect {
            sha256: pin
                .map(|p| vec![("the pinned sha256".to_string(), p.to_string())])
                .unwrap_or_default(),
            ..Expect::default()
        }
    }
}

/// Where a file comes from and goes.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub url: String,
    pub dest: PathBuf,
    pub lock: PathBuf,
    /// A bearer token, sent only to this host.
    pub auth: Option<(String, super::Secret)>,
    /// The file's name in messages.
    pub label: String,
}

enum Failure {
    Retry(String, Option<Duration>),
    Fatal(FetchError),
}

pub(crate) fn client() -> Result<reqwest::Client, FetchError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .user_agent(concat!("minerva/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Network(format!("cannot start an HTTP client: {e}")))
}

pub(crate) fn incomplete_path(dest: &Path) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

/// Takes the lock at `path` for downloading `label`: while another process holds it, says at
/// warn for whom it waits, and gives up after `cfg.lock_timeout`.
pub(crate) async fn lock(
    path: &Path,
    label: &str,
    cfg: &FetchConfig,
) -> Result<crate::lock::Held, FetchError> {
    let wait = crate::lock::LockWait {
        holder: format!("downloading {label}"),
        timeout: cfg.lock_timeout,
        no_wait: false,
    };
    crate::lock::acquire(path, &format!("downloading {label}"), &wait, None)
        .await
        .map_err(|e| FetchError::Io(e.to_string()))
}

/// Checks a complete file against what it must be; the hash comes from the record when the file
/// is unchanged since it was last verified.
pub(crate) fn check_existing(
    store: &VerifiedStore,
    path: &Path,
    expect: &Expect,
) -> Result<Option<String>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if let Some(size) = expect.size {
        if meta.len() != size {
            return Err(format!("size {} where {size} was expected", meta.len()));
        }
    }
    if expect.sha256.is_empty() && expect.git_sha1.is_none() {
        return Ok(store.lookup(path));
    }
    let (actual, _) = super::sha256_verified(store, path).map_err(|e| e.to_string())?;
    for (what, want) in &expect.sha256 {
        if &actual != want {
            return Err(format!("sha256 {actual} does not match {what} {want}"));
        }
    }
    if let Some(want) = &expect.git_sha1 {
        let got = git_sha1_file(path).map_err(|e| e.to_string())?;
        if &got != want {
            return Err(format!(
                "git sha1 {got} does not match the hub's ETag {want}"
            ));
        }
    }
    Ok(Some(actual))
}

fn git_sha1_file(path: &Path) -> std::io::Result<String> {
    use sha1::Digest;
    let data = std::fs::read(path)?;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", data.len()).as_bytes());
    h.update(&data);
    Ok(crate::formats::hex(&h.finalize()))
}

/// Downloads `t.url` to `t.dest` (see the module docs). Returns the file's sha256 and size, and
/// whether it was already there.
pub(crate) async fn download(
    client: &reqwest::Client,
    t: &Target,
    expect: &Expect,
    cfg: &FetchConfig,
    bar: &ProgressBar,
) -> Result<(String, u64, bool), FetchError> {
    let _lock = lock(&t.lock, &t.label, cfg).await?;
    let store = VerifiedStore::new(&cfg.state_dir);
    if t.dest.exists() {
        match check_existing(&store, &t.dest, expect) {
            Ok(h) => {
                let size = std::fs::metadata(&t.dest).map(|m| m.len()).unwrap_or(0);
                let h = match h {
                    Some(h) => h,
                    None => {
                        super::sha256_verified(&store, &t.dest)
                            .map_err(|e| FetchError::Io(format!("{}: {e}", t.dest.display())))?
                            .0
                    }
                };
                bar.set_length(size);
                bar.set_position(size);
                return Ok((h, size, true));
            }
            Err(why) => {
                tracing::warn!(
                    "{}: the cached copy is not right ({why}); downloading it again",
                    t.label
                );
                let _ = std::fs::remove_file(&t.dest);
            }
        }
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        match attempt_once(client, t, expect, cfg, bar).await {
            Ok((sha, size)) => {
                store.record(&t.dest, &sha);
                return Ok((sha, size, false));
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(m, after)) => {
                if attempt >= cfg.attempts {
                    return Err(FetchError::Network(format!(
                        "{}: gave up after {attempt} attempts: {m}",
                        t.label
                    )));
                }
                let wait = cfg.delay(attempt, after);
                tracing::warn!(
                    "{}: {m}; retrying in {:.1} s (attempt {}/{})",
                    t.label,
                    wait.as_secs_f64(),
                    attempt + 1,
                    cfg.attempts
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn host_of(url: &str) -> Option<String> {
    reqwest::Url::parse(url).ok().and_then(|u| {
        u.host_str()
            .map(|h| format!("{h}:{}", u.port_or_known_default().unwrap_or(0)))
    })
}

pub(crate) fn auth_headers(url: &str, auth: &Option<(String, super::Secret)>) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Some((host, token)) = auth {
        if host_of(url).as_deref() == Some(host.as_str()) {
            if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
                v.set_sensitive(true);
                h.insert(AUTHORIZATION, v);
            }
        }
    }
    h
}

pub(crate) fn auth_for(
    endpoint: &str,
    token: &Option<super::Secret>,
) -> Option<(String, super::Secret)> {
    match (host_of(endpoint), token) {
        (Some(h), Some(t)) => Some((h, t.clone())),
        _ => None,
    }
}

fn retry_after(h: &HeaderMap) -> Option<Duration> {
    h.get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Most bytes of an error body read (a server's explanation; never the whole of a hostile one).
pub const MAX_ERROR_BODY: usize = 64 << 10;

/// At most `limit` bytes of a response's body; the rest is not read.
pub async fn bounded_body(mut resp: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < limit {
        match tokio::time::timeout(Duration::from_secs(10), resp.chunk()).await {
            Ok(Ok(Some(c))) => {
                let take = c.len().min(limit - out.len());
                out.extend_from_slice(&c[..take]);
            }
            _ => break,
        }
    }
    out
}

/// A short, safe excerpt of an error body (servers explain 4xx there).
async fn body_excerpt(resp: reqwest::Response) -> String {
    let body = bounded_body(resp, MAX_ERROR_BODY).await;
    let text = String::from_utf8_lossy(&body);
    let t: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if t.trim().is_empty() {
        String::new()
    } else {
        format!(": {}", t.trim())
    }
}

fn status_failure(
    label: &str,
    status: StatusCode,
    after: Option<Duration>,
    excerpt: &str,
) -> Failure {
    match status.as_u16() {
        408 | 429 | 500..=599 => Failure::Retry(format!("HTTP {status}{excerpt}"), after),
        401 | 403 => Failure::Fatal(FetchError::Network(format!(
            "{label}: HTTP {status}: access denied. If the repository is gated, accept its license \
             on its Hugging Face page; if it is private, set HF_TOKEN (or log in with \
             `huggingface-cli login`) with a token that can read it{excerpt}"
        ))),
        404 => Failure::Fatal(FetchError::Network(format!(
            "{label}: HTTP 404: not found (check the repository, the file name and the revision){excerpt}"
        ))),
        _ => Failure::Fatal(FetchError::Network(format!("{label}: HTTP {status}{excerpt}"))),
    }
}

struct Writer {
    tx: std::sync::mpsc::SyncSender<bytes::Bytes>,
    done: tokio::task::JoinHandle<std::io::Result<(String, Option<String>)>>,
}

/// Bytes written between background flushes (see [`start_writer`]).
const FLUSH_EVERY: u64 = 128 << 20;

/// Opens the incomplete file and starts three threads: a writer that appends each received
/// chunk, a hasher that first hashes what the file already holds (`have` bytes, a resumed
/// download) and then each chunk, and a flusher that fdatasyncs every 128 MiB so the final
/// fsync does not wait for a whole file's writeback. The network task, the writer and the
/// hasher overlap; the download is as fast as the slowest of them, not their sum.
fn start_writer(inc: &Path, have: u64, git_size: Option<u64>) -> std::io::Result<Writer> {
    use sha1::Digest as _;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(inc)?;
    if f.metadata()?.len() != have {
        f.set_len(have)?;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(64);
    let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(256);
    let inc = inc.to_path_buf();
    let hasher = std::thread::spawn(move || -> std::io::Result<(String, Option<String>)> {
        let mut sha = crate::formats::Sha256Stream::default();
        let mut sha1 = git_size.map(|n| {
            let mut h = sha1::Sha1::new();
            h.update(format!("blob {n}\0").as_bytes());
            h
        });
        if have > 0 {
            let mut prefix = std::fs::File::open(&inc)?;
            let mut limited = std::io::Read::take(&mut prefix, have);
            if let Some(h) = sha1.as_mut() {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut limited, &mut data)?;
                h.update(&data);
                sha.update(&data);
            } else {
                sha.consume(&mut limited)?;
            }
        }
        while let Ok(chunk) = hash_rx.recv() {
            sha.update(&chunk);
            if let Some(h) = sha1.as_mut() {
                h.update(&chunk);
            }
        }
        Ok((
            sha.finish(),
            sha1.map(|h| crate::formats::hex(&h.finalize())),
        ))
    });
    let flush_file = f.try_clone()?;
    let (flush_tx, flush_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let flusher = std::thread::spawn(move || {
        while flush_rx.recv().is_ok() {
            let _ = flush_file.sync_data();
        }
    });
    let done = tokio::task::spawn_blocking(move || {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut since_flush = 0u64;
        let mut failed = None;
        while let Ok(chunk) = rx.recv() {
            since_flush += chunk.len() as u64;
            // The hasher gets its own handle on the same bytes (no copy).
            let _ = hash_tx.send(chunk.clone());
            if let Err(e) = w.write_all(&chunk) {
                failed = Some(e);
                break;
            }
            if since_flush >= FLUSH_EVERY {
                since_flush = 0;
                // Start writeback in the background; skip if the last one is still running.
                let _ = w.flush();
                let _ = flush_tx.try_send(());
            }
        }
        drop(hash_tx);
        drop(flush_tx);
        let hashed = hasher
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the hashing thread panicked")));
        let _ = flusher.join();
        if let Some(e) = failed {
            return Err(e);
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        hashed
    });
    Ok(Writer { tx, done })
}

/// Long on purpose: one HTTP attempt from request to rename, with each integrity check where the
/// bytes arrive.
async fn attempt_once(
    client: &reqwest::Client,
    t: &Target,
    expect: &Expect,
    cfg: &FetchConfig,
    bar: &ProgressBar,
) -> Result<(String, u64), Failure> {
    let inc = incomplete_path(&t.dest);
    let mut have = std::fs::metadata(&inc).map(|m| m.len()).unwrap_or(0);
    if expect.size.is_some_and(|s| have > s) {
        let _ = std::fs::remove_file(&inc);
        have = 0;
    }
    let complete_already = expect.size == Some(have) && have > 0;
    let mut total = expect.size;
    let mut resp = None;
    if !complete_already {
        let mut req = client.get(&t.url).headers(auth_headers(&t.url, &t.auth));
        if have > 0 {
            req = req.header(RANGE, format!("bytes={have}-"));
        }
        let r = req
            .send()
            .await
            .map_err(|e| Failure::Retry(format!("request failed: {}", without_url(&e)), None))?;
        let status = r.status();
        match status {
            StatusCode::PARTIAL_CONTENT if have > 0 => {
                let start = r
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    let _ = std::fs::remove_file(&inc);
                    return Err(Failure::Retry(
                        format!("asked to resume at byte {have}, the server answered {start:?}; starting over"),
                        Some(Duration::ZERO),
                    ));
                }
                tracing::info!("{}: resuming at byte {have}", t.label);
                total = total.or_else(|| r.content_length().map(|n| n + have));
            }
            StatusCode::OK => {
                if let (Some(want), Some(got)) = (expect.size, r.content_length()) {
                    if want != got {
                        return Err(Failure::Fatal(FetchError::Integrity(format!(
                            "{}: the server sent a {got}-byte body where the hub said the file has {want} bytes (an error page?); nothing was kept",
                            t.label
                        ))));
                    }
                }
                if have > 0 {
                    tracing::info!(
                        "{}: the server does not resume (200 for a Range request); starting over",
                        t.label
                    );
                    have = 0;
                }
                total = total.or(r.content_length());
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let _ = std::fs::remove_file(&inc);
                return Err(Failure::Retry(
                    "HTTP 416 for a resume; starting over".into(),
                    Some(Duration::ZERO),
                ));
            }
            s if s.is_success() => {
                return Err(Failure::Fatal(FetchError::Network(format!(
                    "{}: unexpected HTTP {s}",
                    t.label
                ))));
            }
            s => {
                let after = retry_after(r.headers());
                let excerpt = body_excerpt(r).await;
                return Err(status_failure(&t.label, s, after, &excerpt));
            }
        }
        resp = Some(r);
    }
    if let Some(size) = total {
        if let Some(dir) = t.dest.parent() {
            check_free_space(dir, size.saturating_sub(have)).map_err(Failure::Fatal)?;
        }
    }
    bar.set_length(total.unwrap_or(0));
    bar.set_position(have);

    let git_size = expect.git_sha1.as_ref().and(total);
    let writer = start_writer(&inc, have, git_size).map_err(|e| {
        Failure::Fatal(FetchError::Io(format!(
            "cannot write {}: {e}",
            inc.display()
        )))
    })?;
    let mut received = have;
    let mut cut: Option<String> = None;
    if let Some(mut r) = resp {
        loop {
            match tokio::time::timeout(cfg.read_timeout, r.chunk()).await {
                Err(_) => {
                    cut = Some(format!(
                        "no data for {} s after {received} bytes",
                        cfg.read_timeout.as_secs()
                    ));
                    break;
                }
                Ok(Err(e)) => {
                    cut = Some(format!(
                        "connection failed after {received} bytes: {}",
                        without_url(&e)
                    ));
                    break;
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    received += chunk.len() as u64;
                    bar.set_position(received);
                    if total.is_some_and(|t| received > t) {
                        cut = Some("more bytes than expected".into());
                        break;
                    }
                    if writer.tx.send(chunk).is_err() {
                        break;
                    }
                }
            }
        }
    }
    drop(writer.tx);
    let written = writer
        .done
        .await
        .map_err(|e| Failure::Fatal(FetchError::Io(format!("writer failed: {e}"))))?
        .map_err(|e| {
            Failure::Fatal(FetchError::Io(format!(
                "cannot write {}: {e}",
                inc.display()
            )))
        });
    let (sha, sha1) = written?;
    if let Some(size) = total {
        if received > size {
            let _ = std::fs::remove_file(&inc);
            return Err(Failure::Fatal(FetchError::Integrity(format!(
                "{}: the server sent more than the expected {size} bytes; the partial file was deleted",
                t.label
            ))));
        }
    }
    if let Some(why) = cut {
        return Err(Failure::Retry(why, None));
    }
    if let Some(size) = total {
        if received < size {
            return Err(Failure::Retry(
                format!("the body ended after {received} of {size} bytes"),
                None,
            ));
        }
    }
    let fail = |msg: String| {
        let _ = std::fs::remove_file(&inc);
        Failure::Fatal(FetchError::Integrity(format!(
            "{}: {msg}; the downloaded file was deleted",
            t.label
        )))
    };
    for (what, want) in &expect.sha256 {
        if &sha != want {
            return Err(fail(format!(
                "sha256 mismatch: {what} is {want}, the bytes received hash to {sha}"
            )));
        }
    }
    if let (Some(want), Some(got)) = (&expect.git_sha1, &sha1) {
        if want != got {
            return Err(fail(format!(
                "git sha1 mismatch: the hub's ETag is {want}, the bytes received hash to {got}"
            )));
        }
    }
    std::fs::rename(&inc, &t.dest).map_err(|e| {
        Failure::Fatal(FetchError::Io(format!(
            "cannot move {} into place: {e}",
            inc.display()
        )))
    })?;
    crate::paths::sync_parent(&t.dest);
    Ok((sha, received))
}

/// reqwest's error text without the URL (which can carry a signed query).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the body was cut"
    } else {
        "failed"
    };
    let mut src = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind} ({detail})")
    }
}

/// The file name a URL names (its last path segment).
fn url_file_name(url: &str) -> Option<String> {
    let u = reqwest::Url::parse(url).ok()?;
    let name = u.path_segments()?.next_back()?.to_string();
    (!name.is_empty() && super::check_repo_path(&name).is_ok()).then_some(name)
}

/// A `url:` source: into minerva's cache under a path keyed by the URL (never a file of the
/// user's), checked against any pinned hash, then linked as `models/<file name>`.
pub(crate) async fn fetch_url(
    model: &Model,
    url: &str,
    cfg: &Arc<FetchConfig>,
) -> Result<FetchedModel, FetchError> {
    let name = url_file_name(url)
        .ok_or_else(|| FetchError::Source(format!("{url}: the URL does not end in a file name")))?;
    let dest = super::source_cache_path(cfg, url, &name);
    let expect = Expect::pinned(model.file_pin(&name, true));
    let store = VerifiedStore::new(&cfg.state_dir);
    let shown = crate::redact::text(url);
    let mut fetched = if cfg.offline {
        if !dest.is_file() {
            return Err(FetchError::Offline(format!(
                "offline: {shown} is not downloaded yet (run once without --offline / HF_HUB_OFFLINE)"
            )));
        }
        let sha = check_existing(&store, &dest, &expect).map_err(|why| {
            FetchError::Offline(format!("offline: {} is not right: {why}", dest.display()))
        })?;
        let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
        one_file(model, &shown, dest, name.clone(), size, sha, true)
    } else {
        std::fs::create_dir_all(dest.parent().unwrap_or(&cfg.state_dir))
            .map_err(|e| FetchError::Io(format!("cannot create {}: {e}", dest.display())))?;
        let target = Target {
            url: url.to_string(),
            lock: incomplete_path(&dest).with_extension("lock"),
            dest: dest.clone(),
            auth: None,
            label: name.clone(),
        };
        let bar = super::hf::file_bar(cfg, &name);
        let (sha, size, reused) = download(&client()?, &target, &expect, cfg, &bar).await?;
        bar.finish_and_clear();
        one_file(model, &shown, dest, name.clone(), size, Some(sha), reused)
    };
    fetched.link = super::link_into_models_dir(cfg, &name, &fetched.path);
    Ok(fetched)
}

pub(crate) fn one_file(
    model: &Model,
    source: &str,
    path: PathBuf,
    name: String,
    size: u64,
    sha256: Option<String>,
    reused: bool,
) -> FetchedModel {
    FetchedModel {
        model: model.name.clone(),
        source: source.to_string(),
        path: path.clone(),
        commit: None,
        files: vec![FetchedFile {
            name,
            path,
            size,
            sha256,
            reused,
        }],
        fallbacks: Vec::new(),
        link: None,
    }
}
