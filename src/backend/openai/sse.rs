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

/// A string field whose presence and length is all that counts: `len` for a string, 0 for
/// null; `present` is false only when the field is absent (the default).
#[derive(Debug, Default)]
struct Text {
    present: bool,
    len: usize,
}

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Text;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or null")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text, E> {
                Ok(Text {
                    present: true,
                    len: v.len(),
                })
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Text, E> {
                Ok(Text {
                    present: true,
                    len: 0,
                })
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Text, E> {
                self.visit_unit()
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct Delta {
    #[serde(default)]
    content: Text,
    #[serde(default)]
    reasoning_content: Text,
}

#[derive(Debug, serde::Deserialize)]
struct Choice {
    delta: Option<Delta>,
    #[serde(default)]
    text: Text,
}

#[derive(Debug, serde::Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

/// The usual shape of a stream chunk, read without building a JSON tree: strings are measured
/// in place and unknown fields skipped. Anything else goes the general way ([`parse_value`]).
#[derive(Debug, serde::Deserialize)]
struct Chunk {
    choices: Option<Vec<Choice>>,
    usage: Option<Usage>,
    error: Option<serde::de::IgnoredAny>,
}

/// The events of a chunk of the usual shape; None to take the general way.
fn parse_fast(data: &[u8], out: &mut Vec<Event>) -> Option<()> {
    let c: Chunk = serde_json::from_slice(data).ok()?;
    if c.error.is_some() {
        return None;
    }
    match &c.choices {
        Some(choices) => {
            for ch in choices {
                match &ch.delta {
                    Some(d) if d.content.present || d.reasoning_content.present => {
                        out.push(Event::Content {
                            text_len: d.content.len + d.reasoning_content.len,
                        })
                    }
                    Some(_) => {}
                    None if ch.text.present => out.push(Event::Content {
                        text_len: ch.text.len,
                    }),
                    None => out.push(Event::Malformed("a choice without delta or text".into())),
                }
            }
        }
        // Rare (usage-only events carry `choices: []`): the general way tells absent from null.
        None => return None,
    }
    if let Some(u) = c.usage {
        out.push(Event::Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        });
    }
    Some(())
}

fn parse_event(raw: &[u8], out: &mut Vec<Event>) {
    // The data of the event: its one `data:` line in place (the usual case, no copy), or its
    // `data:` lines joined by newlines.
    let mut lines = raw
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .filter_map(|line| line.strip_prefix(b"data:"))
        .map(|rest| rest.strip_prefix(b" ").unwrap_or(rest));
    // `event:`, `id:`, `retry:` and `:` comments carry nothing we measure.
    let Some(first) = lines.next() else {
        return;
    };
    let joined;
    let data: &[u8] = match lines.next() {
        None => first,
        Some(second) => {
            let mut d = first.to_vec();
            for l in std::iter::once(second).chain(lines) {
                d.push(b'\n');
                d.extend_from_slice(l);
            }
            joined = d;
            &joined
        }
    };
    if data.is_empty() {
        return;
    }
    if data == b"[DONE]" {
        out.push(Event::Done);
        return;
    }
    let mark = out.len();
    if parse_fast(data, out).is_some() {
        return;
    }
    out.truncate(mark);
    parse_value(data, out);
}

/// Any event the fast path declined: a JSON tree, every odd shape named.
fn parse_value(data: &[u8], out: &mut Vec<Event>) {
    let v: serde_json::Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => {
            let shown: String = String::from_utf8_lossy(data).chars().take(80).collect();
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
    fn the_fast_path_reads_what_the_general_one_reads() {
        let cases: &[&[u8]] = &[
            br#"{"choices":[{"index":0,"delta":{"content":"Hi "there"
"},"finish_reason":null}]}"#,
            br#"{"choices":[{"delta":{"role":"assistant"}}]}"#,
            br#"{"choices":[{"delta":{"content":null}}]}"#,
            br#"{"choices":[{"delta":{"reasoning_content":"ab","content":"c"}}]}"#,
            br#"{"choices":[{"text":"abc","logprobs":null}]}"#,
            br#"{"choices":[{"index":0}]}"#,
            br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
            br#"{"usage":null}"#,
            br#"{"id":"x"}"#,
            br#"{"choices":[{"delta":{"content":"a"}}],"usage":{"completion_tokens":1}}"#,
        ];
        for c in cases {
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            parse_value(c, &mut general);
            if parse_fast(c, &mut fast).is_none() {
                fast.clear();
                parse_value(c, &mut fast);
            }
            assert_eq!(fast, general, "{}", String::from_utf8_lossy(c));
        }
        // Odd shapes take the general way, which names them.
        let mut out = Vec::new();
        assert!(parse_fast(br#"{"choices":[{"delta":{"content":7}}]}"#, &mut out).is_none());
        assert!(parse_fast(br#"[1, 2]"#, &mut out).is_none());
        assert!(parse_fast(br#"{"error":{"message":"x"}}"#, &mut out).is_none());
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
