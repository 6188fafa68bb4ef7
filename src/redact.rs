//! Redaction by value: every secret minerva holds (granted environment values, secret-named
//! vars, the Hugging Face token) and every credential inside a URL is replaced by
//! `***REDACTED***` wherever minerva writes or prints. A leaf module: the plan fills it, and the
//! writers (results, logs, the UI) consult the process-wide set through [`text`] and [`json_line`].

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::RwLock;

pub const REDACTED: &str = "***REDACTED***";

/// Whether a variable or parameter name looks like it holds a secret.
///
/// A name is secret when one of its `_`/`-`/`.` parts is TOKEN, KEY, SECRET or PASSWORD, or it
/// ends with one (`HF_TOKEN`, `api_key`, `hfToken`); `max_tokens` is not.
pub fn is_secret_name(name: &str) -> bool {
    const WORDS: [&str; 4] = ["TOKEN", "KEY", "SECRET", "PASSWORD"];
    let upper = name.to_ascii_uppercase();
    upper
        .split(['_', '-', '.'])
        .any(|part| WORDS.contains(&part))
        || WORDS.iter().any(|w| upper.ends_with(w))
}

/// Replaces secret values wherever the pipeline is echoed (manifest, report, logs, job ids).
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Each secret with its JSON-escaped form (when that differs), longest first.
    secrets: Vec<(String, Option<String>)>,
}

impl Redactor {
    pub const fn new() -> Self {
        Redactor {
            secrets: Vec::new(),
        }
    }

    /// A secret value. Very short values would redact unrelated text; they are still removed
    /// from named keys ([`Redactor::redact_named`]).
    pub fn add(&mut self, secret: &str) {
        if secret.len() >= 4 && !self.secrets.iter().any(|(s, _)| s == secret) {
            let escaped = serde_json::to_string(secret)
                .ok()
                .map(|q| q[1..q.len() - 1].to_string())
                .filter(|e| e != secret);
            self.secrets.push((secret.to_string(), escaped));
            self.secrets
                .sort_by_key(|(s, _)| std::cmp::Reverse(s.len()));
        }
    }

    /// A value the user granted (an environment variable): redacted like a secret, except
    /// numbers and booleans (`THREADS=4096` must not blank every 4096 in a report).
    pub fn add_granted(&mut self, value: &str) {
        let t = value.trim();
        if t == "true" || t == "false" || t.parse::<f64>().is_ok() {
            return;
        }
        self.add(t);
        if t != value {
            self.add(value);
        }
    }

    /// Every secret of `other` too.
    pub fn merge(&mut self, other: &Redactor) {
        for (s, _) in &other.secrets {
            self.add(s);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `s` with every secret value and every URL credential replaced.
    pub fn redact_str(&self, s: &str) -> String {
        let mut out = url_credentials(s);
        for (secret, _) in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        out
    }

    /// One line of JSON: secrets replaced in their raw and JSON-escaped forms, so the line
    /// stays valid JSON.
    pub fn redact_json_line(&self, s: &str) -> String {
        let mut out = url_credentials(s);
        for (secret, escaped) in &self.secrets {
            for form in std::iter::once(secret).chain(escaped) {
                if out.contains(form.as_str()) {
                    out = out.replace(form.as_str(), REDACTED);
                }
            }
        }
        out
    }

    /// Redacts secret values anywhere in a value.
    pub fn redact_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.redact_str(s)),
            Value::Array(items) => {
                Value::Array(items.iter().map(|i| self.redact_value(i)).collect())
            }
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.redact_value(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// For a map of user-named entries (vars, params): secret values anywhere, and the whole
    /// value of every entry whose name looks secret.
    pub fn redact_named(&self, map: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
        map.iter()
            .map(|(k, v)| {
                let v = if is_secret_name(k) {
                    Value::String(REDACTED.into())
                } else {
                    self.redact_value(v)
                };
                (k.clone(), v)
            })
            .collect()
    }
}

/// The process-wide set: filled once the plan is built (and with the secret-looking
/// environment at start-up), read by every writer.
static GLOBAL: RwLock<Redactor> = RwLock::new(Redactor::new());

/// Adds `r`'s secrets to the process-wide set.
pub fn install(r: &Redactor) {
    if let Ok(mut g) = GLOBAL.write() {
        g.merge(r);
    }
}

/// Adds one secret value to the process-wide set.
pub fn install_value(secret: &str) {
    if let Ok(mut g) = GLOBAL.write() {
        g.add(secret);
    }
}

/// The values of secret-looking environment variables (HF_TOKEN, AWS_SECRET_ACCESS_KEY, …):
/// minerva never needs them in its output, granted or not.
pub fn install_secret_environment() {
    let mut r = Redactor::new();
    for (k, v) in std::env::vars_os() {
        if let (Some(k), Some(v)) = (k.to_str(), v.to_str()) {
            if is_secret_name(k) {
                r.add(v.trim());
            }
        }
    }
    install(&r);
}

/// `s` as it may be written or printed.
pub fn text(s: &str) -> String {
    match GLOBAL.read() {
        Ok(g) => g.redact_str(s),
        Err(_) => url_credentials(s),
    }
}

/// One JSON line as it may be written.
pub fn json_line(s: &str) -> String {
    match GLOBAL.read() {
        Ok(g) => g.redact_json_line(s),
        Err(_) => url_credentials(s),
    }
}

/// A copy of the process-wide set.
pub fn snapshot() -> Redactor {
    GLOBAL.read().map(|g| g.clone()).unwrap_or_default()
}

/// Whether a URL query key carries a credential (`token`, `sig`, `X-Amz-Signature`, …).
fn secret_query_key(k: &str) -> bool {
    let l = k.to_ascii_lowercase();
    is_secret_name(k)
        || [
            "sig", "token", "auth", "cred", "pass", "secret", "key", "session",
        ]
        .iter()
        .any(|w| l.contains(w))
}

/// Replaces the user-info (`user:pass@`) and credential-like query values of every URL in `s`.
pub fn url_credentials(s: &str) -> String {
    if !s.contains("://") {
        return s.to_string();
    }
    let ends = |c: char| c.is_whitespace() || "\"'<>`\\)]}|^".contains(c);
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail.find(ends).unwrap_or(tail.len());
        let (url, after) = tail.split_at(end);
        out.push_str(&redact_url_body(url));
        rest = after;
    }
    out.push_str(rest);
    out
}

/// `host/path?query#frag` (after the scheme) with credentials replaced.
fn redact_url_body(url: &str) -> String {
    let auth_end = url.find(['/', '?', '#']).unwrap_or(url.len());
    let (authority, path) = url.split_at(auth_end);
    let mut out = String::with_capacity(url.len());
    match authority.rfind('@') {
        Some(at) => {
            out.push_str(REDACTED);
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let Some(q) = path.find('?') else {
        out.push_str(path);
        return out;
    };
    out.push_str(&path[..=q]);
    let query = &path[q + 1..];
    let (query, frag) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let parts: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !v.is_empty() && secret_query_key(k) => format!("{k}={REDACTED}"),
            _ => kv.to_string(),
        })
        .collect();
    out.push_str(&parts.join("&"));
    out.push_str(frag);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_values_and_secret_keys() {
        let mut r = Redactor::default();
        r.add("hf_secret_value");
        let v: BTreeMap<String, Value> = serde_json::from_value(
            serde_json::json!({"url": "https://x/?t=hf_secret_value", "api_key": "abc", "threads": 2}),
        )
        .unwrap_or_default();
        let out = r.redact_named(&v);
        assert_eq!(out["url"], Value::from(format!("https://x/?t={REDACTED}")));
        assert_eq!(out["api_key"], Value::from(REDACTED));
        assert_eq!(out["threads"], Value::from(2));
        let nested =
            r.redact_value(&serde_json::json!({"max_tokens": 5, "p": ["hf_secret_value"]}));
        assert_eq!(nested["max_tokens"], 5);
        assert_eq!(nested["p"][0], REDACTED);
        assert!(
            is_secret_name("hf_token") && is_secret_name("API_KEY") && is_secret_name("hfToken")
        );
        assert!(
            !is_secret_name("threads")
                && !is_secret_name("max_tokens")
                && !is_secret_name("prompt_tokens")
        );
    }

    #[test]
    fn granted_values_are_redacted_but_not_numbers() {
        let mut r = Redactor::default();
        r.add_granted("4096");
        r.add_granted("true");
        r.add_granted("cred-\"quoted\\value");
        assert_eq!(r.redact_str("4096 tokens"), "4096 tokens");
        let line = serde_json::json!({ "m": "x cred-\"quoted\\value y" }).to_string();
        let red = r.redact_json_line(&line);
        assert!(!red.contains("quoted"), "{red}");
        let back: Value = serde_json::from_str(&red).unwrap_or_default();
        assert_eq!(back["m"], format!("x {REDACTED} y"));
    }

    #[test]
    fn url_credentials_are_redacted() {
        for (input, want) in [
            (
                "GET https://user:pa55@host.example/x.gguf failed",
                format!("GET https://{REDACTED}@host.example/x.gguf failed"),
            ),
            (
                "https://h/f.gguf?X-Amz-Signature=abc&x=1&token=t0k#frag",
                format!("https://h/f.gguf?X-Amz-Signature={REDACTED}&x=1&token={REDACTED}#frag"),
            ),
            (
                "\"http://a@b:8/p?q=1\"",
                format!("\"http://{REDACTED}@b:8/p?q=1\""),
            ),
            ("no url here", "no url here".to_string()),
            (
                "http://127.0.0.1:8080/v1/chat",
                "http://127.0.0.1:8080/v1/chat".to_string(),
            ),
        ] {
            assert_eq!(url_credentials(input), want, "{input}");
        }
    }
}
