//! A server on 127.0.0.1 that records every request it receives (request line and headers)
//! and answers each path with a fixed body, or 404: it stands in for an attacker's host.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

pub struct Recorder {
    pub addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    /// Serves `bodies` (path → bytes); every other path gets 404.
    pub fn start(bodies: HashMap<String, Vec<u8>>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut sock) = conn else { continue };
                let mut head = Vec::new();
                {
                    let mut r = BufReader::new(&mut sock);
                    loop {
                        let mut line = String::new();
                        match r.read_line(&mut line) {
                            Ok(0) | Err(_) => break,
                            Ok(_) if line == "\r\n" || line == "\n" => break,
                            Ok(_) => head.push(line.trim_end().to_string()),
                        }
                    }
                }
                if head.is_empty() {
                    continue;
                }
                let path = head[0].split(' ').nth(1).unwrap_or("").to_string();
                if let Ok(mut l) = log.lock() {
                    l.push(head.join("\n"));
                }
                let resp = match bodies.get(&path) {
                    Some(b) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(b);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = sock.write_all(&resp);
            }
        });
        Recorder { addr, seen }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far: request line and headers, one string each.
    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().map(|l| l.clone()).unwrap_or_default()
    }
}
