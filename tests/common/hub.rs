//! A small Hugging Face-compatible hub on 127.0.0.1 for the download tests: the metadata request
//! (HEAD with X-Repo-Commit / X-Linked-Etag / X-Linked-Size / ETag / Location), LFS bodies behind
//! a redirect, plain bodies, Range requests, the repository listing, gated repositories, and
//! injected faults. Raw HTTP/1.1 over tokio, one request per connection, so every fault is exact.

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// What a body request for a file does.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    None,
    /// The first GET sends the headers and half the body, then closes.
    CutOnce,
    /// The first GETs answer these statuses (with an error body), then the file.
    Statuses(Vec<u16>),
    /// Every GET answers this status with an error body.
    Always(u16),
    /// Every GET: the full Content-Length, half the body, close.
    Truncate,
    /// Every GET: chunked encoding, half the body, close without the last chunk.
    TruncateChunked,
    /// 200 with an HTML page instead of the file.
    Html,
    /// The right size, wrong bytes.
    Corrupt,
    /// Sends 64 KiB, then sleeps this long, and so on.
    Slow(Duration),
    /// Ignores Range (answers 200 with the whole file).
    NoRange,
}

#[derive(Debug, Clone)]
pub struct File {
    pub data: Arc<Vec<u8>>,
    /// Stored in LFS: ETag is the sha256 and the body is behind a redirect.
    pub lfs: bool,
    pub fault: Fault,
}

#[derive(Debug, Clone, Default)]
pub struct Repo {
    pub files: BTreeMap<String, File>,
    /// 403 GatedRepo unless the request carries this token.
    pub gated_token: Option<String>,
    /// Listed as well as the real files (a hostile listing).
    pub extra_listing: Vec<String>,
}

#[derive(Default)]
struct State {
    repos: BTreeMap<String, Repo>,
    gets: BTreeMap<String, usize>,
    log: Vec<String>,
}

pub struct Hub {
    pub addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    _rt: tokio::runtime::Runtime,
}

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn git_sha1(b: &[u8]) -> String {
    use sha1::Digest as _;
    let mut h = sha1::Sha1::new();
    h.update(format!("blob {}\0", b.len()).as_bytes());
    h.update(b);
    h.finalize().iter().map(|x| format!("{x:02x}")).collect()
}

/// Deterministic bytes of length `n`.
pub fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Hub {
    pub fn start(repos: BTreeMap<String, Repo>) -> Hub {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let state = Arc::new(Mutex::new(State {
            repos,
            ..State::default()
        }));
        let st = state.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, st, addr).await;
                });
            }
        });
        Hub {
            addr,
            state,
            _rt: rt,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Request lines seen so far ("GET /path range=bytes=N-").
    pub fn log(&self) -> Vec<String> {
        self.state.lock().map(|s| s.log.clone()).unwrap_or_default()
    }

    pub fn set_fault(&self, repo: &str, file: &str, fault: Fault) {
        if let Ok(mut s) = self.state.lock() {
            if let Some(f) = s.repos.get_mut(repo).and_then(|r| r.files.get_mut(file)) {
                f.fault = fault;
            }
            s.gets.clear();
        }
    }
}

struct Req {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
}

async fn read_req(sock: &mut TcpStream) -> Option<Req> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 || buf.len() > 65536 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Req {
        method,
        path,
        headers,
    })
}

fn decode(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&p[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn respond(
    sock: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    head: bool,
) {
    let mut h = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
    let has_len = headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("content-length"));
    for (k, v) in headers {
        h.push_str(&format!("{k}: {v}\r\n"));
    }
    if !has_len {
        h.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    h.push_str("\r\n");
    let _ = sock.write_all(h.as_bytes()).await;
    if !head {
        let _ = sock.write_all(body).await;
    }
    let _ = sock.shutdown().await;
}

async fn serve(
    mut sock: TcpStream,
    st: Arc<Mutex<State>>,
    addr: std::net::SocketAddr,
) -> Option<()> {
    let req = read_req(&mut sock).await?;
    let range = req.headers.get("range").cloned();
    let auth = req.headers.get("authorization").cloned();
    if let Ok(mut s) = st.lock() {
        s.log.push(format!(
            "{} {} range={} auth={}",
            req.method,
            req.path,
            range.clone().unwrap_or_default(),
            auth.is_some()
        ));
    }
    let head = req.method == "HEAD";
    let path = req.path.split('?').next().unwrap_or("").to_string();

    // Listing: /api/models/{org}/{repo}/revision/{rev}
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        let repo_id = format!("{}/{}", parts.first()?, parts.get(1)?);
        let repo = st.lock().ok()?.repos.get(&repo_id).cloned();
        let Some(repo) = repo else {
            respond(
                &mut sock,
                404,
                &[("X-Error-Code".into(), "RepoNotFound".into())],
                b"{}",
                head,
            )
            .await;
            return Some(());
        };
        let mut names: Vec<String> = repo.files.keys().cloned().collect();
        names.extend(repo.extra_listing.iter().cloned());
        let body = serde_json::json!({
            "sha": COMMIT,
            "siblings": names.iter().map(|n| serde_json::json!({"rfilename": n})).collect::<Vec<_>>(),
        })
        .to_string();
        respond(
            &mut sock,
            200,
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
            head,
        )
        .await;
        return Some(());
    }

    // LFS storage: /cdn/{repo-org}/{repo-name}/{file}
    let (repo_id, file_name, cdn) = if let Some(rest) = path.strip_prefix("/cdn/") {
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        (
            format!("{}/{}", parts.first()?, parts.get(1)?),
            decode(parts.get(2)?),
            true,
        )
    } else {
        // /{org}/{repo}/resolve/{rev}/{file...}
        let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
        if parts.get(2) != Some(&"resolve") {
            respond(&mut sock, 404, &[], b"no route", head).await;
            return Some(());
        }
        (
            format!("{}/{}", parts[0], parts[1]),
            decode(parts.get(4)?),
            false,
        )
    };
    let repo = st.lock().ok()?.repos.get(&repo_id).cloned();
    let Some(repo) = repo else {
        respond(
            &mut sock,
            404,
            &[("X-Error-Code".into(), "RepoNotFound".into())],
            b"Repository not found",
            head,
        )
        .await;
        return Some(());
    };
    if let Some(tok) = &repo.gated_token {
        if !cdn && auth.as_deref() != Some(&format!("Bearer {tok}")) {
            respond(
                &mut sock,
                403,
                &[
                    ("X-Error-Code".into(), "GatedRepo".into()),
                    (
                        "X-Error-Message".into(),
                        "Access to this model is restricted".into(),
                    ),
                ],
                b"Access to model is restricted",
                head,
            )
            .await;
            return Some(());
        }
    }
    let Some(file) = repo.files.get(&file_name).cloned() else {
        respond(
            &mut sock,
            404,
            &[("X-Error-Code".into(), "EntryNotFound".into())],
            b"Entry not found",
            head,
        )
        .await;
        return Some(());
    };
    let data = file.data.clone();
    let etag = if file.lfs {
        sha256_hex(&data)
    } else {
        git_sha1(&data)
    };
    if !cdn && (head || file.lfs) {
        let mut h = vec![
            ("X-Repo-Commit".to_string(), COMMIT.to_string()),
            ("ETag".to_string(), format!("\"{etag}\"")),
        ];
        if file.lfs {
            h.push(("X-Linked-Etag".into(), format!("\"{etag}\"")));
            h.push(("X-Linked-Size".into(), data.len().to_string()));
            h.push((
                "Location".into(),
                format!(
                    "http://{addr}/cdn/{repo_id}/{}",
                    file_name.replace(' ', "%20")
                ),
            ));
            respond(&mut sock, 302, &h, b"", head).await;
        } else {
            h.push(("Content-Length".into(), data.len().to_string()));
            respond(&mut sock, 200, &h, &data, true).await;
        }
        return Some(());
    }
    // A body request.
    let n = {
        let mut s = st.lock().ok()?;
        let c = s.gets.entry(format!("{repo_id}/{file_name}")).or_insert(0);
        *c += 1;
        *c
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok())
        .filter(|_| file.fault != Fault::NoRange);
    match &file.fault {
        Fault::Statuses(codes) if n <= codes.len() => {
            let code = codes[n - 1];
            respond(
                &mut sock,
                code,
                &[("Retry-After".into(), "0".into())],
                format!("error {code}").as_bytes(),
                false,
            )
            .await;
            return Some(());
        }
        Fault::Always(code) => {
            respond(
                &mut sock,
                *code,
                &[],
                format!("<html>error {code}</html>").as_bytes(),
                false,
            )
            .await;
            return Some(());
        }
        Fault::Html => {
            respond(
                &mut sock,
                200,
                &[("Content-Type".into(), "text/html".into())],
                b"<html><body>Sign in</body></html>",
                false,
            )
            .await;
            return Some(());
        }
        _ => {}
    }
    let body: std::borrow::Cow<'_, [u8]> = if file.fault == Fault::Corrupt {
        let mut d = data.to_vec();
        let mid = d.len() / 2;
        d[mid] ^= 0xff;
        std::borrow::Cow::Owned(d)
    } else {
        std::borrow::Cow::Borrowed(&data[..])
    };
    let (status, from) = match start {
        Some(s) if s <= body.len() => (206, s),
        _ => (200, 0),
    };
    let part = &body[from..];
    let mut h = format!("HTTP/1.1 {status} X\r\nConnection: close\r\nETag: \"{etag}\"\r\n");
    if status == 206 {
        h.push_str(&format!(
            "Content-Range: bytes {from}-{}/{}\r\n",
            body.len().saturating_sub(1),
            body.len()
        ));
    }
    if file.fault == Fault::TruncateChunked {
        h.push_str("Transfer-Encoding: chunked\r\n\r\n");
        let half = &part[..part.len() / 2];
        let _ = sock.write_all(h.as_bytes()).await;
        let _ = sock
            .write_all(format!("{:x}\r\n", half.len()).as_bytes())
            .await;
        let _ = sock.write_all(half).await;
        let _ = sock.write_all(b"\r\n").await;
        let _ = sock.shutdown().await;
        return Some(());
    }
    h.push_str(&format!("Content-Length: {}\r\n\r\n", part.len()));
    let _ = sock.write_all(h.as_bytes()).await;
    let cut = matches!(file.fault, Fault::Truncate) || (file.fault == Fault::CutOnce && n == 1);
    let send = if cut { &part[..part.len() / 2] } else { part };
    if let Fault::Slow(d) = file.fault {
        for c in send.chunks(64 << 10) {
            if sock.write_all(c).await.is_err() {
                return Some(());
            }
            tokio::time::sleep(d).await;
        }
    } else {
        let _ = sock.write_all(send).await;
    }
    let _ = sock.flush().await;
    if cut {
        // Let the client read what was sent, then abort the connection (RST), as a dropped
        // link would.
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A zero linger does not block: it resets the connection at once.
        #[allow(deprecated)]
        let _ = sock.set_linger(Some(Duration::ZERO));
        drop(sock);
        return Some(());
    }
    let _ = sock.shutdown().await;
    Some(())
}
