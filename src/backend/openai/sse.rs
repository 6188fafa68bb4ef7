//! Server-sent events, parsed incrementally from the bytes as they arrive. The caller stamps
//! each network chunk with its arrival time *before* parsing, so a token's time is when its
//! bytes came off the socket, not when JSON parsing finished.

/// What one `data:` event of an OpenAI-style stream says.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Generated text (possibly empty, as role-only first chunks are).
    Content { text_len: usize },
    /// The server's token counts, usually on the last chunk.
    Usage {
        prompt_tokens: Option<u64>,
        completion_tokens: Option<u64>,
    },
    /// `data: [DONE]`.
    Done,
    /// An `error` object inside the stream.
    Error(String),
    /// Not JSON, or not the expected shape.
    Malformed(String),
}

/// Largest event the parser holds; a longer one fails its request as malformed.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Splits a byte stream into events; keeps the incomplete tail between chunks (at most
/// [`MAX_EVENT_BYTES`]), and never rescans bytes it already searched.
#[derive(Debug, Default)]
pub struct Parser {
    buf: Vec<u8>,
    /// How much of `buf` holds no event end (searching resumes just before it).
    scanned: usize,
    overflowed: bool,
}

fn find_event_end(b: &[u8]) -> Option<(usize, usize)> {
    // Events end with a blank line: "\n\n" or "\r\n\r\n".
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'\n' {
            if b[i + 1] == b'\n' {
                return Some((i, 2));
            }
            if b[i + 1] == b'\r' && i + 2 < b.len() && b[i + 2] == b'\n' {
                return Some((i, 3));
            }
        }
        i += 1;
    }
    None
}

impl Parser {
    /// Feeds one network chunk; appends the events it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        if self.overflowed {
            return;
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        // A separator may straddle the old and new bytes: back up by its length.
        let mut from = self.scanned.saturating_sub(2);
        while let Some((end, sep)) = find_event_end(&self.buf[from..]) {
            let ev_end = from + end;
            parse_event(&self.buf[start..ev_end], out);
            start = ev_end + sep;
            from = start;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > MAX_EVENT_BYTES {
            out.push(Event::Malformed(format!(
                "an event longer than {MAX_EVENT_BYTES} bytes without an end"
            )));
            self.buf = Vec::new();
            self.scanned = 0;
            self.overflowed = true;
        }
    }

    /// Whether an event outgrew [`MAX_EVENT_BYTES`]: the stream is not read further.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

fn parse_event(raw: &[u8], out: &mut Vec<Event>) {
    let mut data: Vec<u8> = Vec::new();
    for line in raw.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(rest);
        }
        // `event:`, `id:`, `retry:` and `:` comments carry nothing we measure.
    }
    if data.is_empty() {
        return;
    }
    if data == b"[DONE]" {
        out.push(Event::Done);
        return;
    }
    let v: serde_json::Value = match serde_json::from_slice(&data) {
        Ok(v) => v,
        Err(e) => {
            let shown: String = String::from_utf8_lossy(&data).chars().take(80).collect();
            out.push(Event::Malformed(format!("{e}: {shown}")));
            return;
        }
    };
    if let Some(err) = v.get("error") {
        let msg = err
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| err.to_string());
        out.push(Event::Error(msg));
        return;
    }
    let Some(obj) = v.as_object() else {
        out.push(Event::Malformed(
            "an event that is not a JSON object".into(),
        ));
        return;
    };
    if let Some(choices) = obj.get("choices").and_then(|c| c.as_array()) {
        for c in choices {
            // chat: delta.content (and reasoning_content); completions: text.
            let text = c
                .get("delta")
                .map(|d| {
                    let a = d
                        .get("content")
                        .and_then(|x| x.as_str())
                        .map_or(0, str::len);
                    let b = d
                        .get("reasoning_content")
                        .and_then(|x| x.as_str())
                        .map_or(0, str::len);
                    (
                        a + b,
                        d.get("content").is_some() || d.get("reasoning_content").is_some(),
                    )
                })
                .or_else(|| {
                    c.get("text")
                        .and_then(|t| t.as_str())
                        .map(|t| (t.len(), true))
                });
            match text {
                Some((len, true)) => out.push(Event::Content { text_len: len }),
                Some((_, false)) => {}
                None => out.push(Event::Malformed("a choice without delta or text".into())),
            }
        }
    } else if obj.get("usage").is_none() {
        out.push(Event::Malformed("an event without choices or usage".into()));
    }
    if let Some(u) = obj.get("usage").filter(|u| u.is_object()) {
        out.push(Event::Usage {
            prompt_tokens: u.get("prompt_tokens").and_then(|x| x.as_u64()),
            completion_tokens: u.get("completion_tokens").and_then(|x| x.as_u64()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<Event> {
        let mut p = Parser::default();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out);
        }
        out
    }

    #[test]
    fn events_split_across_chunks_and_both_line_endings() {
        let ev = all(&[
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\ndata: {\"choi",
            b"ces\":[{\"delta\":{\"content\":\"Hi\"}}]}\r\n\r\n: keep-alive\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(
            ev,
            vec![
                Event::Content { text_len: 2 },
                Event::Usage {
                    prompt_tokens: Some(5),
                    completion_tokens: Some(2)
                },
                Event::Done
            ]
        );
    }

    #[test]
    fn completions_text_errors_and_garbage() {
        let ev = all(&[
            b"data: {\"choices\":[{\"text\":\"abc\"}]}\n\n",
            b"data: {not json\n\n",
            b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n",
        ]);
        assert_eq!(ev[0], Event::Content { text_len: 3 });
        assert!(matches!(ev[1], Event::Malformed(_)));
        assert_eq!(ev[2], Event::Error("overloaded".into()));
    }

    #[test]
    fn an_endless_event_fails_without_growing() {
        let mut p = Parser::default();
        let mut out = Vec::new();
        p.feed(b"data: {\"choices\":[]}\n\ndata: ", &mut out);
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..40 {
            p.feed(&chunk, &mut out);
        }
        assert!(p.overflowed());
        assert!(
            p.buf.capacity() <= 2 * MAX_EVENT_BYTES,
            "{}",
            p.buf.capacity()
        );
        assert!(
            matches!(out.last(), Some(Event::Malformed(m)) if m.contains("longer than")),
            "{out:?}"
        );
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let stream =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\ndata: [DONE]\n\n";
        for cut in 1..stream.len() {
            let mut p = Parser::default();
            let mut out = Vec::new();
            p.feed(&stream[..cut], &mut out);
            p.feed(&stream[cut..], &mut out);
            assert_eq!(out.len(), 2, "cut at {cut}: {out:?}");
            assert_eq!(out[1], Event::Done, "cut at {cut}");
        }
    }
}
