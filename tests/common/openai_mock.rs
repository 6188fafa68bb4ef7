//! An OpenAI-compatible streaming server on 127.0.0.1 for the `openai` backend's tests and
//! benchmark: settable time to first token, inter-token delay and output length, and injected
//! faults (HTTP 500, a disconnect mid-stream, malformed events, a slow first byte, a stall of
//! the whole server). HTTP/1.1 with keep-alive and chunked encoding, over raw tokio sockets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    Ok,
    Status500,
    /// Closes the connection after this many tokens, without the end marker.
    Disconnect(usize),
    /// Sends an event that is not JSON after the first token.
    Malformed,
    /// Waits this long before the response headers.
    SlowFirstByte(Duration),
    /// After the role chunk, `data: ` and then this many bytes with no blank line (an endless
    /// event), then the connection closes.
    Flood(usize),
}

#[derive(Debug, Clone)]
pub struct MockConfig {
    pub ttft: Duration,
    pub itl: Duration,
    pub tokens: usize,
    /// Report `usage` at the end of the stream.
    pub usage: bool,
    /// Request i (in arrival order) gets `faults[i % len]`.
    pub faults: Vec<Fault>,
    /// When request number `.0` arrives, nothing is answered for `.1` (a stalled server).
    pub stall: Option<(u64, Duration)>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            ttft: Duration::ZERO,
            itl: Duration::ZERO,
            tokens: 16,
            usage: true,
            faults: vec![Fault::Ok],
            stall: None,
        }
    }
}

struct Shared {
    cfg: MockConfig,
    count: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
    auth_seen: Mutex<Vec<String>>,
}

pub struct Mock {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    _rt: tokio::runtime::Runtime,
}

impl Mock {
    pub fn start(cfg: MockConfig) -> Mock {
        Self::start_with_threads(cfg, 2)
    }

    pub fn start_with_threads(cfg: MockConfig, threads: usize) -> Mock {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let shared = Arc::new(Shared {
            cfg,
            count: AtomicU64::new(0),
            stall_until: Mutex::new(None),
            auth_seen: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let _ = sock.set_nodelay(true);
                let sh = sh.clone();
                tokio::spawn(async move {
                    let _ = conn(sock, sh).await;
                });
            }
        });
        Mock {
            addr,
            shared,
            _rt: rt,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> u64 {
        self.shared.count.load(Ordering::Relaxed)
    }

    /// The Authorization headers received.
    pub fn auth_seen(&self) -> Vec<String> {
        self.shared
            .auth_seen
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }
}

fn find(h: &[u8], pat: &[u8]) -> Option<usize> {
    h.windows(pat.len()).position(|w| w == pat)
}

async fn conn(mut sock: TcpStream, sh: Arc<Shared>) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut tmp = [0u8; 8192];
    loop {
        // Read one request: head, then Content-Length bytes of body.
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if let Some(a) = head.lines().find_map(|l| l.strip_prefix("authorization:")) {
            if let Ok(mut v) = sh.auth_seen.lock() {
                // Lower-cased above; tests compare case-insensitively.
                v.push(a.trim().to_string());
            }
        }
        while buf.len() < head_end + len {
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        buf.drain(..head_end + len);
        let arrived = Instant::now();
        let i = sh.count.fetch_add(1, Ordering::Relaxed);
        if let Some((at, d)) = sh.cfg.stall {
            if i == at {
                if let Ok(mut s) = sh.stall_until.lock() {
                    *s = Some(arrived + d);
                }
            }
        }
        let until = sh.stall_until.lock().ok().and_then(|s| *s);
        if let Some(u) = until {
            if u > Instant::now() {
                tokio::time::sleep_until(tokio::time::Instant::from_std(u)).await;
            }
        }
        let fault = sh.cfg.faults[(i as usize) % sh.cfg.faults.len().max(1)];
        let keep = respond(&mut sock, &sh.cfg, fault, path.contains("/chat/"), arrived).await?;
        if !keep {
            return Ok(());
        }
    }
}

fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn token_event(chat: bool, i: usize) -> Vec<u8> {
    let text = format!("t{i} ");
    let json = if chat {
        format!(
            r#"{{"id":"x","object":"chat.completion.chunk","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
        )
    } else {
        format!(
            r#"{{"id":"x","object":"text_completion","choices":[{{"index":0,"text":"{text}","finish_reason":null}}]}}"#
        )
    };
    format!("data: {json}\n\n").into_bytes()
}

/// Writes one response; returns whether the connection stays open.
async fn respond(
    sock: &mut TcpStream,
    cfg: &MockConfig,
    fault: Fault,
    chat: bool,
    arrived: Instant,
) -> std::io::Result<bool> {
    if let Fault::SlowFirstByte(d) = fault {
        tokio::time::sleep(d).await;
    }
    if fault == Fault::Status500 {
        let body = br#"{"error":{"message":"injected failure"}}"#;
        let head = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        sock.write_all(head.as_bytes()).await?;
        sock.write_all(body).await?;
        return Ok(true);
    }
    let mut out = Vec::with_capacity(64 + cfg.tokens * 120);
    out.extend_from_slice(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    // A role-only first chunk, as real servers send.
    let role = if chat {
        &b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n"[..]
    } else {
        &b""[..]
    };
    if !role.is_empty() {
        chunk(&mut out, role);
    }
    if let Fault::Flood(n) = fault {
        chunk(&mut out, b"data: ");
        sock.write_all(&out).await?;
        let block = vec![b'x'; 1 << 20];
        let mut sent = 0;
        while sent < n {
            let take = block.len().min(n - sent);
            let mut c = Vec::with_capacity(take + 16);
            chunk(&mut c, &block[..take]);
            // The client hangs up once the event is over its limit.
            if sock.write_all(&c).await.is_err() {
                return Ok(false);
            }
            sent += take;
        }
        return Ok(false);
    }
    let paced = cfg.ttft > Duration::ZERO || cfg.itl > Duration::ZERO;
    for i in 0..cfg.tokens {
        if let Fault::Disconnect(after) = fault {
            if i == after {
                sock.write_all(&out).await?;
                sock.flush().await?;
                return Ok(false);
            }
        }
        if paced {
            let due = arrived + cfg.ttft + cfg.itl * i as u32;
            sock.write_all(&out).await?;
            out.clear();
            tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
        }
        chunk(&mut out, &token_event(chat, i));
        if fault == Fault::Malformed && i == 0 {
            chunk(&mut out, b"data: {\"choices\": [oops\n\n");
        }
    }
    if cfg.usage {
        let u = format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":7,\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
            cfg.tokens,
            cfg.tokens + 7
        );
        chunk(&mut out, u.as_bytes());
    }
    chunk(&mut out, b"data: [DONE]\n\n");
    out.extend_from_slice(b"0\r\n\r\n");
    sock.write_all(&out).await?;
    Ok(true)
}
