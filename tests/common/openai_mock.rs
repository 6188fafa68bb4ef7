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
    /// Generate the request's `max_tokens` (not `tokens`), and report its prompt length in
    /// `usage` (token ids counted, or a text's words).
    pub follow_request: bool,
    /// Keep every request body (see [`Mock::bodies`]).
    pub record_bodies: bool,
    /// Requests served at once; the rest queue (a server with a capacity, for SLO search).
    pub capacity: Option<usize>,
    /// Serve Prometheus text at `/metrics` (vLLM's names).
    pub metrics: bool,
    /// CPU each request costs the server: a busy loop on the thread serving it (with one
    /// server thread, a single-threaded CPU-bound server that shares the machine's cores).
    pub cpu_per_request: Duration,
    /// CPU each token costs, spent before the token's event is written on its own (so events
    /// reach the client one at a time, as from a real server).
    pub cpu_per_token: Duration,
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
            follow_request: false,
            record_bodies: false,
            capacity: None,
            metrics: false,
            cpu_per_request: Duration::ZERO,
            cpu_per_token: Duration::ZERO,
        }
    }
}

struct Shared {
    cfg: MockConfig,
    count: AtomicU64,
    stall_until: Mutex<Option<Instant>>,
    auth_seen: Mutex<Vec<String>>,
    bodies: Mutex<Vec<serde_json::Value>>,
    slots: Option<tokio::sync::Semaphore>,
    running: AtomicU64,
    waiting: AtomicU64,
    prompt_total: AtomicU64,
    generation_total: AtomicU64,
    scrapes: AtomicU64,
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
            slots: cfg.capacity.map(tokio::sync::Semaphore::new),
            cfg,
            count: AtomicU64::new(0),
            stall_until: Mutex::new(None),
            auth_seen: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            prompt_total: AtomicU64::new(0),
            generation_total: AtomicU64::new(0),
            scrapes: AtomicU64::new(0),
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

    /// The request bodies received (with `record_bodies`), in arrival order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.shared
            .bodies
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// How many times `/metrics` was read.
    pub fn scrapes(&self) -> u64 {
        self.shared.scrapes.load(Ordering::Relaxed)
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
        let body: Vec<u8> = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        if path.starts_with("/metrics") {
            if !sh.cfg.metrics {
                let head = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
                sock.write_all(head.as_bytes()).await?;
                continue;
            }
            sh.scrapes.fetch_add(1, Ordering::Relaxed);
            let text = metrics_text(&sh);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                text.len()
            );
            sock.write_all(head.as_bytes()).await?;
            sock.write_all(text.as_bytes()).await?;
            continue;
        }
        let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if sh.cfg.record_bodies {
            if let Ok(mut v) = sh.bodies.lock() {
                v.push(req.clone());
            }
        }
        let arrived = Instant::now();
        if !sh.cfg.cpu_per_request.is_zero() {
            // Blocks this thread on purpose: the server's work per request.
            while arrived.elapsed() < sh.cfg.cpu_per_request {
                std::hint::spin_loop();
            }
        }
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
        let mut cfg = sh.cfg.clone();
        let mut prompt_len = 7;
        if cfg.follow_request {
            cfg.tokens = req["max_tokens"].as_u64().unwrap_or(16) as usize;
            prompt_len = prompt_length(&req);
        }
        // A server with a capacity: a request waits for a slot, and is timed from then.
        sh.waiting.fetch_add(1, Ordering::Relaxed);
        let _slot = match &sh.slots {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        sh.waiting.fetch_sub(1, Ordering::Relaxed);
        sh.running.fetch_add(1, Ordering::Relaxed);
        let begun = if sh.slots.is_some() {
            Instant::now()
        } else {
            arrived
        };
        sh.prompt_total.fetch_add(prompt_len, Ordering::Relaxed);
        // Counted before the answer goes out, so a scrape after the last answer sees it.
        sh.generation_total
            .fetch_add(cfg.tokens as u64, Ordering::Relaxed);
        let keep = respond(
            &mut sock,
            &cfg,
            fault,
            path.contains("/chat/"),
            begun,
            prompt_len,
        )
        .await;
        sh.running.fetch_sub(1, Ordering::Relaxed);
        if !keep? {
            return Ok(());
        }
    }
}

/// The prompt's length: token ids counted, or the words of the text and messages.
fn prompt_length(req: &serde_json::Value) -> u64 {
    match &req["prompt"] {
        serde_json::Value::Array(ids) => ids.len() as u64,
        serde_json::Value::String(t) => t.split_whitespace().count() as u64,
        _ => req["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                m["content"]
                    .as_str()
                    .unwrap_or("")
                    .split_whitespace()
                    .count() as u64
            })
            .sum(),
    }
}

/// Prometheus text with vLLM's metric names.
fn metrics_text(sh: &Shared) -> String {
    let running = sh.running.load(Ordering::Relaxed);
    let cap = sh.cfg.capacity.unwrap_or(64).max(1) as f64;
    format!(
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
         # TYPE vllm:num_requests_running gauge\n\
         vllm:num_requests_running{{model_name=\"served\"}} {running}\n\
         # HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
         # TYPE vllm:num_requests_waiting gauge\n\
         vllm:num_requests_waiting{{model_name=\"served\"}} {}\n\
         # HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
         # TYPE vllm:kv_cache_usage_perc gauge\n\
         vllm:kv_cache_usage_perc{{model_name=\"served\"}} {}\n\
         # HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n\
         # TYPE vllm:prompt_tokens_total counter\n\
         vllm:prompt_tokens_total{{model_name=\"served\"}} {}\n\
         # HELP vllm:generation_tokens_total Number of generation tokens processed.\n\
         # TYPE vllm:generation_tokens_total counter\n\
         vllm:generation_tokens_total{{model_name=\"served\"}} {}\n",
        sh.waiting.load(Ordering::Relaxed),
        running as f64 / cap,
        sh.prompt_total.load(Ordering::Relaxed),
        sh.generation_total.load(Ordering::Relaxed),
    )
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
    prompt_len: u64,
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
        if !cfg.cpu_per_token.is_zero() {
            let t = Instant::now();
            while t.elapsed() < cfg.cpu_per_token {
                std::hint::spin_loop();
            }
            chunk(&mut out, &token_event(chat, i));
            sock.write_all(&out).await?;
            out.clear();
            continue;
        }
        chunk(&mut out, &token_event(chat, i));
        if fault == Fault::Malformed && i == 0 {
            chunk(&mut out, b"data: {\"choices\": [oops\n\n");
        }
    }
    if cfg.usage {
        let u = format!(
            "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":{prompt_len},\"completion_tokens\":{},\"total_tokens\":{}}}}}\n\n",
            cfg.tokens,
            cfg.tokens as u64 + prompt_len
        );
        chunk(&mut out, u.as_bytes());
    }
    chunk(&mut out, b"data: [DONE]\n\n");
    out.extend_from_slice(b"0\r\n\r\n");
    sock.write_all(&out).await?;
    Ok(true)
}
