//! Server workloads: a scenario whose requests are drawn from a dataset (ShareGPT, OpenAI
//! chat, plain prompts) or from length distributions, with shared-prefix traffic and multi-turn
//! conversations. The plan checks a workload and pins its dataset's sha256; the `openai`
//! backend turns it into request contents, conversation by conversation, from the job's seed:
//! the same seed sends the same requests, in the same order. A leaf module.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// A dataset file larger than this is refused (the full ShareGPT V3 file is about 670 MB).
pub const MAX_DATASET_BYTES: u64 = 1 << 30;

/// A request length, in tokens: normal (`mean`, `stddev`), uniform (`min`, `max` without a
/// mean) or fixed (`mean` alone); `min` and `max` bound every draw.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Dist {
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
}

impl Dist {
    /// What is wrong with this distribution, if anything.
    pub fn problem(&self) -> Option<String> {
        let (lo, hi) = (self.min.unwrap_or(1), self.max.unwrap_or(u64::MAX));
        if self.mean.is_none() && (self.min.is_none() || self.max.is_none()) {
            return Some("needs `mean` (with an optional `stddev`) or both `min` and `max`".into());
        }
        if lo > hi {
            return Some(format!("`min` {lo} is above `max` {hi}"));
        }
        if self.min == Some(0) {
            return Some("`min` must be at least 1 token".into());
        }
        if let Some(m) = self.mean {
            if !m.is_finite() || !(1.0..=1e7).contains(&m) {
                return Some(format!("`mean` {m} is not a token count (1 to 10000000)"));
            }
            if m < lo as f64 || m > hi as f64 {
                return Some(format!("`mean` {m} lies outside `min`..`max`"));
            }
        }
        if let Some(s) = self.stddev {
            if !s.is_finite() || s < 0.0 {
                return Some(format!("`stddev` {s} must be a number ≥ 0"));
            }
            if self.mean.is_none() {
                return Some("`stddev` needs a `mean`".into());
            }
        }
        if self.max.is_some_and(|m| m > 10_000_000) {
            return Some("`max` is unreasonably large".into());
        }
        None
    }

    /// The largest value a draw can take.
    pub fn upper(&self) -> u64 {
        match (self.max, self.mean, self.stddev) {
            (Some(m), _, _) => m,
            (None, Some(m), Some(s)) => (m + 6.0 * s).ceil() as u64,
            (None, Some(m), None) => m.round() as u64,
            (None, None, _) => 1,
        }
    }

    /// One draw. A normal draw outside `min`..`max` is drawn again (at most 64 times, then
    /// clamped), so the bounds hold and the mean stays close to `mean` when they are wide.
    pub fn draw(&self, rng: &mut impl Rng) -> u64 {
        let (lo, hi) = (self.min.unwrap_or(1), self.max.unwrap_or(u64::MAX));
        let v = match (self.mean, self.stddev) {
            (Some(m), Some(s)) if s > 0.0 => {
                let Ok(normal) = Normal::new(m, s) else {
                    return (m.round() as u64).clamp(lo, hi);
                };
                let mut v = normal.sample(rng);
                for _ in 0..64 {
                    if v.round() >= lo as f64 && v.round() <= hi as f64 {
                        break;
                    }
                    v = normal.sample(rng);
                }
                v.round().max(0.0) as u64
            }
            (Some(m), _) => m.round() as u64,
            (None, _) => rng.random_range(lo..=hi),
        };
        v.clamp(lo, hi)
    }

    pub fn describe(&self) -> String {
        match (self.mean, self.stddev) {
            (Some(m), Some(s)) if s > 0.0 => format!("normal(mean {m}, sd {s})"),
            (Some(m), _) => format!("{m}"),
            (None, _) => format!(
                "uniform {}..{}",
                self.min.unwrap_or(1),
                self.max.unwrap_or(1)
            ),
        }
    }
}

/// A dataset's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// `[{"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", ...}]}]`.
    Sharegpt,
    /// `{"messages": [{"role": "user", "content": "..."}, ...]}` per line or entry.
    OpenaiChat,
    /// A prompt per entry: a string, or `{"prompt": "...", "output_tokens": N}`.
    Prompts,
}

impl DatasetFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DatasetFormat::Sharegpt => "sharegpt",
            DatasetFormat::OpenaiChat => "openai-chat",
            DatasetFormat::Prompts => "prompts",
        }
    }
}

/// A scenario's `dataset`, as a pipeline writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    /// A JSON array or JSON Lines file (relative to the working directory).
    pub path: String,
    pub format: DatasetFormat,
    /// Conversations used, drawn at random with the job's seed (default: all, shuffled).
    pub sample: Option<u64>,
    /// Turns sent per conversation (default 1: its first user message). With N > 1 each
    /// conversation is sent as up to N requests in order, each with the turns before it as
    /// history (the dataset's own replies), the next sent when the previous one is answered.
    pub turns: Option<u32>,
}

/// Shared-prefix traffic: every prompt starts with `tokens` ids; with probability `share` (per
/// request, seeded) they are the one shared prefix, otherwise a prefix of the request's own.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrefixSpec {
    pub tokens: u64,
    /// The fraction of requests that share the prefix (default 1).
    pub share: Option<f64>,
}

/// A job's workload: what the plan resolved from the scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Dataset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<Dist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<Dist>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PrefixSpec>,
}

/// A dataset as the plan pinned it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    /// As the pipeline wrote it (resolved against the working directory).
    pub path: String,
    /// Where the plan found it (the worker reads this).
    pub resolved: std::path::PathBuf,
    pub format: DatasetFormat,
    pub sample: Option<u64>,
    pub turns: u32,
    /// Of the file, when the plan was made; the worker refuses a file that changed since.
    pub sha256: String,
    /// Conversations the file holds (after skipping those with no user message).
    pub conversations: u64,
}

impl Workload {
    /// One line for the report's scenario list.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(d) = &self.dataset {
            let name = Path::new(&d.path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let mut s = format!(
                "{} dataset {name} (sha256 {}…, {} conversations",
                d.format.as_str(),
                &d.sha256[..d.sha256.len().min(12)],
                d.conversations
            );
            if let Some(n) = d.sample {
                s.push_str(&format!(", {n} sampled"));
            }
            s.push(')');
            if d.turns > 1 {
                s.push_str(&format!(", up to {} turns each", d.turns));
            }
            parts.push(s);
        }
        if let Some(i) = &self.input_tokens {
            parts.push(format!("input tokens {}", i.describe()));
        }
        if let Some(o) = &self.output_tokens {
            parts.push(format!("output tokens {}", o.describe()));
        }
        if let Some(p) = &self.prefix {
            parts.push(format!(
                "{}-token prefix shared by {:.0}% of requests",
                p.tokens,
                100.0 * p.share.unwrap_or(1.0)
            ));
        }
        parts.join("; ")
    }
}

/// One conversation of a dataset: an optional system message, then user turns, each with the
/// dataset's reply when it has one.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Conversation {
    pub system: Option<String>,
    pub turns: Vec<(String, Option<String>)>,
}

/// Reads and parses a dataset file: a JSON array or JSON Lines. Entries with no user message
/// are skipped; an entry of the wrong shape is an error naming its number (from 1).
pub fn load_dataset(path: &Path, format: DatasetFormat) -> Result<Vec<Conversation>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // A pipe or a device (`/dev/zero`, a FIFO) has no length to check and may never end.
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > MAX_DATASET_BYTES {
        return Err(format!(
            "{} is {} bytes, over the {} MiB a dataset may have",
            path.display(),
            meta.len(),
            MAX_DATASET_BYTES >> 20
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_dataset(&bytes, format).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses a dataset's bytes (see [`load_dataset`]).
pub fn parse_dataset(bytes: &[u8], format: DatasetFormat) -> Result<Vec<Conversation>, String> {
    // A byte-order mark, as some editors write, is not JSON.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let entries: Vec<Value> = if first == Some(&b'[') {
        serde_json::from_slice(bytes).map_err(|e| format!("not a JSON array: {e}"))?
    } else {
        let mut v = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            v.push(
                serde_json::from_slice(line)
                    .map_err(|e| format!("line {}: not JSON: {e}", i + 1))?,
            );
        }
        v
    };
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let c = match format {
            DatasetFormat::Sharegpt => sharegpt(e),
            DatasetFormat::OpenaiChat => openai_chat(e),
            DatasetFormat::Prompts => prompt(e),
        }
        .map_err(|why| format!("entry {}: {why}", i + 1))?;
        if !c.turns.is_empty() {
            out.push(c);
        }
    }
    if out.is_empty() {
        return Err(format!(
            "no {} conversation with a user message in {} entries",
            format.as_str(),
            entries.len()
        ));
    }
    Ok(out)
}

/// Builds a conversation from (role, text) messages: user turns paired with the reply after.
fn from_messages(msgs: Vec<(String, String)>) -> Conversation {
    let mut c = Conversation::default();
    for (role, text) in msgs {
        match role.as_str() {
            "system" if c.turns.is_empty() && c.system.is_none() => c.system = Some(text),
            "user" => c.turns.push((text, None)),
            "assistant" => {
                if let Some(last) = c.turns.last_mut().filter(|t| t.1.is_none()) {
                    last.1 = Some(text);
                }
            }
            _ => {}
        }
    }
    c
}

fn sharegpt(e: &Value) -> Result<Conversation, String> {
    let list = e
        .get("conversations")
        .and_then(Value::as_array)
        .ok_or("expected an object with a `conversations` list")?;
    let mut msgs = Vec::new();
    for (k, m) in list.iter().enumerate() {
        let from = m.get("from").and_then(Value::as_str);
        let value = m.get("value").and_then(Value::as_str);
        let (Some(from), Some(value)) = (from, value) else {
            return Err(format!(
                "conversations[{k}] needs string `from` and `value`"
            ));
        };
        let role = match from {
            "human" | "user" => "user",
            "gpt" | "chatgpt" | "bard" | "bing" | "assistant" => "assistant",
            "system" => "system",
            _ => continue,
        };
        if !value.trim().is_empty() {
            msgs.push((role.to_string(), value.to_string()));
        }
    }
    Ok(from_messages(msgs))
}

fn content_text(c: &Value) -> Option<String> {
    match c {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        _ => None,
    }
}

fn openai_chat(e: &Value) -> Result<Conversation, String> {
    let list = e
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("expected an object with a `messages` list")?;
    let mut msgs = Vec::new();
    for (k, m) in list.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str);
        let text = m.get("content").and_then(content_text);
        let (Some(role), Some(text)) = (role, text) else {
            return Err(format!(
                "messages[{k}] needs a string `role` and a `content`"
            ));
        };
        if !text.trim().is_empty() {
            msgs.push((role.to_string(), text));
        }
    }
    Ok(from_messages(msgs))
}

fn prompt(e: &Value) -> Result<Conversation, String> {
    let text = match e {
        Value::String(s) => s.clone(),
        Value::Object(o) => o
            .get("prompt")
            .and_then(Value::as_str)
            .ok_or("expected a string or an object with a string `prompt`")?
            .to_string(),
        _ => return Err("expected a string or an object with a string `prompt`".into()),
    };
    Ok(Conversation {
        system: None,
        turns: if text.trim().is_empty() {
            Vec::new()
        } else {
            vec![(text, None)]
        },
    })
}

/// What one request sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Chat messages (role, text); the completions endpoint gets their texts joined.
    Messages(Vec<(&'static str, String)>),
    /// Token ids (synthetic prompts; the completions endpoint only).
    Tokens(Vec<u32>),
}

/// One request of a conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub content: Content,
    pub max_tokens: u64,
    /// The prompt's length in tokens when the client knows it (token-id prompts).
    pub input_tokens: Option<u64>,
}

/// The dataset's reply length as a request's `max_tokens`: about 4 characters per token (the
/// client has no tokenizer; the samples record the length the server reports, not this).
fn reply_tokens(reply: &str) -> u64 {
    (reply.chars().count() as u64).div_ceil(4).max(1)
}

/// Turns a workload into requests, conversation by conversation.
pub struct Generator {
    workload: Workload,
    conversations: Vec<Conversation>,
    /// Indices into `conversations`, in the order they are used (seeded).
    order: Vec<usize>,
    seed: u64,
    /// The scenario's `max_tokens` (a cap on every request), `prompt_tokens` and text prompt.
    max_tokens: u64,
    prompt_tokens: Option<u64>,
    text: Option<String>,
    shared_prefix: Vec<u32>,
}

fn rng_for(seed: u64, i: u64, salt: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ salt)
}

fn random_ids(rng: &mut impl Rng, n: u64, out: &mut Vec<u32>) {
    out.extend((0..n).map(|_| rng.random_range(100u32..1000)));
}

impl Generator {
    /// `conversations`: the dataset's, loaded by the caller (empty without a dataset). `text`:
    /// the scenario's text prompt, sent by every request when there is no dataset and no
    /// synthetic length (a fixed prompt with `output_tokens`).
    pub fn new(
        workload: Workload,
        conversations: Vec<Conversation>,
        seed: u64,
        max_tokens: u64,
        prompt_tokens: Option<u64>,
        text: Option<String>,
    ) -> Generator {
        let mut order: Vec<usize> = (0..conversations.len()).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_da7a);
        // Fisher–Yates with the seeded generator.
        for i in (1..order.len()).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        if let Some(n) = workload.dataset.as_ref().and_then(|d| d.sample) {
            order.truncate(n as usize);
        }
        let mut shared_prefix = Vec::new();
        if let Some(p) = &workload.prefix {
            random_ids(
                &mut ChaCha8Rng::seed_from_u64(seed ^ 0x7072_6566_6978),
                p.tokens,
                &mut shared_prefix,
            );
        }
        Generator {
            workload,
            conversations,
            order,
            seed,
            max_tokens,
            prompt_tokens,
            text,
            shared_prefix,
        }
    }

    /// The most requests a conversation has (a dataset's `turns`; 1 otherwise).
    pub fn max_turns(&self) -> u32 {
        self.workload.dataset.as_ref().map_or(1, |d| d.turns.max(1))
    }

    /// Conversations the generator cycles through (0 without a dataset).
    pub fn distinct(&self) -> usize {
        self.order.len()
    }

    /// Conversation `i` (any index: a dataset is cycled through).
    pub fn conversation(&self, i: u64) -> Vec<Turn> {
        let mut rng = rng_for(self.seed, i, 0);
        let output = |rng: &mut ChaCha8Rng, reply: Option<&str>| -> u64 {
            match (&self.workload.output_tokens, reply) {
                (Some(d), _) => d.draw(rng),
                (None, Some(r)) => reply_tokens(r).min(self.max_tokens.max(1)),
                (None, None) => self.max_tokens.max(1),
            }
        };
        if let (Some(d), false) = (&self.workload.dataset, self.order.is_empty()) {
            let c = &self.conversations[self.order[(i % self.order.len() as u64) as usize]];
            let mut history: Vec<(&'static str, String)> = Vec::new();
            if let Some(s) = &c.system {
                history.push(("system", s.clone()));
            }
            let mut out = Vec::new();
            for (user, reply) in c.turns.iter().take(d.turns.max(1) as usize) {
                history.push(("user", user.clone()));
                out.push(Turn {
                    content: Content::Messages(history.clone()),
                    max_tokens: output(&mut rng, reply.as_deref()),
                    input_tokens: None,
                });
                match reply {
                    Some(r) => history.push(("assistant", r.clone())),
                    None => break,
                }
            }
            return out;
        }
        if let (Some(t), None, None) = (&self.text, &self.workload.input_tokens, self.prompt_tokens)
        {
            return vec![Turn {
                content: Content::Messages(vec![("user", t.clone())]),
                max_tokens: output(&mut rng, None),
                input_tokens: None,
            }];
        }
        // Synthetic: a shared or own prefix, then a body of random ids.
        let mut ids = Vec::new();
        if let Some(p) = &self.workload.prefix {
            if rng.random_bool(p.share.unwrap_or(1.0).clamp(0.0, 1.0)) {
                ids.extend_from_slice(&self.shared_prefix);
            } else {
                random_ids(&mut rng, p.tokens, &mut ids);
            }
        }
        let body = match (&self.workload.input_tokens, self.prompt_tokens) {
            (Some(d), _) => d.draw(&mut rng),
            (None, Some(n)) => n,
            (None, None) => 0,
        };
        random_ids(&mut rng, body, &mut ids);
        let max_tokens = output(&mut rng, None);
        vec![Turn {
            input_tokens: Some(ids.len() as u64),
            content: Content::Tokens(ids),
            max_tokens,
        }]
    }
}

/// The sha256 of a file, hex.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// A small ShareGPT-format dataset that minerva writes itself (`datasets/sharegpt-sample.json`
/// is this, for `seed` 7 and 64 conversations): varied questions and replies of varied lengths,
/// a quarter of them with three turns. Deterministic; no text from elsewhere.
pub fn sharegpt_sample(n: usize, seed: u64) -> Value {
    const TOPICS: &[&str] = &[
        "a binary search tree",
        "the CAP theorem",
        "photosynthesis",
        "a Rust borrow checker error",
        "compound interest",
        "the French Revolution",
        "a sourdough starter",
        "TCP congestion control",
        "the Krebs cycle",
        "a haiku about autumn",
        "unit testing in Python",
        "the Doppler effect",
        "a job interview",
        "quantization of neural networks",
        "plate tectonics",
        "a weekly meal plan",
    ];
    const ASKS: &[&str] = &[
        "Explain {} to a beginner.",
        "Can you summarize {} in a few sentences?",
        "Write a short story that involves {}.",
        "What are the most common mistakes people make with {}?",
        "Give me a step-by-step guide to {}.",
        "Compare two ways of thinking about {}.",
    ];
    const FOLLOW: &[&str] = &[
        "Can you make that shorter?",
        "Give an example.",
        "Now explain it as if I were an expert.",
        "What would you add to that?",
    ];
    const WORDS: &[&str] = &[
        "the", "model", "first", "because", "each", "value", "then", "which", "simple", "step",
        "data", "result", "time", "example", "when", "more", "system", "change", "small", "part",
        "order", "light", "energy", "rate", "point", "case", "form", "idea", "rule", "way",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let reply = |rng: &mut ChaCha8Rng| -> String {
        // Reply lengths from 8 to about 400 words, skewed short, as chat replies are.
        let words = 8 + (rng.random::<f64>().powi(2) * 390.0) as usize;
        let mut s = String::new();
        for w in 0..words {
            if w > 0 {
                s.push(if w % 13 == 0 { '.' } else { ' ' });
                if w % 13 == 0 {
                    s.push(' ');
                }
            }
            s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
        }
        s.push('.');
        s
    };
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            let topic = TOPICS[rng.random_range(0..TOPICS.len())];
            let ask = ASKS[rng.random_range(0..ASKS.len())].replace("{}", topic);
            let mut conv = vec![
                serde_json::json!({ "from": "human", "value": ask }),
                serde_json::json!({ "from": "gpt", "value": reply(&mut rng) }),
            ];
            if i % 4 == 3 {
                for _ in 0..2 {
                    let f = FOLLOW[rng.random_range(0..FOLLOW.len())];
                    conv.push(serde_json::json!({ "from": "human", "value": f }));
                    conv.push(serde_json::json!({ "from": "gpt", "value": reply(&mut rng) }));
                }
            }
            serde_json::json!({ "id": format!("minerva-{i:03}"), "conversations": conv })
        })
        .collect();
    Value::Array(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wl() -> Workload {
        Workload {
            dataset: None,
            input_tokens: None,
            output_tokens: None,
            prefix: None,
        }
    }

    #[test]
    fn normal_draws_keep_their_bounds_and_mean() {
        let d = Dist {
            mean: Some(200.0),
            stddev: Some(50.0),
            min: Some(100),
            max: Some(300),
        };
        assert_eq!(d.problem(), None);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let v: Vec<u64> = (0..20_000).map(|_| d.draw(&mut rng)).collect();
        assert!(v.iter().all(|x| (100..=300).contains(x)));
        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
        assert!((mean - 200.0).abs() < 2.0, "mean {mean}");
        let u = Dist {
            mean: None,
            stddev: None,
            min: Some(10),
            max: Some(20),
        };
        let v: Vec<u64> = (0..5000).map(|_| u.draw(&mut rng)).collect();
        assert_eq!(v.iter().min(), Some(&10));
        assert_eq!(v.iter().max(), Some(&20));
        assert!(Dist { mean: None, ..u }.problem().is_none());
        assert!(Dist { min: Some(30), ..u }.problem().is_some());
        assert!(Dist {
            mean: Some(5.0),
            ..u
        }
        .problem()
        .is_some_and(|p| p.contains("outside")));
    }

    #[test]
    fn datasets_parse_in_every_format_and_name_a_bad_entry() {
        let sg = br#"[{"conversations":[{"from":"system","value":"Be brief."},{"from":"human","value":"Hi"},{"from":"gpt","value":"Hello there"},{"from":"human","value":"Bye"}]},
                      {"conversations":[{"from":"gpt","value":"orphan"}]}]"#;
        let c = parse_dataset(sg, DatasetFormat::Sharegpt).unwrap();
        assert_eq!(c.len(), 1, "the entry with no user message is skipped");
        assert_eq!(c[0].system.as_deref(), Some("Be brief."));
        assert_eq!(
            c[0].turns,
            vec![
                ("Hi".to_string(), Some("Hello there".to_string())),
                ("Bye".to_string(), None)
            ]
        );
        let oc = b"{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"}]}]}\n\n{\"messages\":[{\"role\":\"user\",\"content\":\"b\"},{\"role\":\"assistant\",\"content\":\"c\"}]}\n";
        let c = parse_dataset(oc, DatasetFormat::OpenaiChat).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].turns[0], ("b".into(), Some("c".into())));
        let p = b"\xEF\xBB\xBF\"one\"\n{\"prompt\": \"two\"}\n";
        assert_eq!(parse_dataset(p, DatasetFormat::Prompts).unwrap().len(), 2);
        let bad = b"{\"prompt\": \"ok\"}\n{\"text\": 3}\n";
        let e = parse_dataset(bad, DatasetFormat::Prompts).unwrap_err();
        assert!(e.starts_with("entry 2:"), "{e}");
        let e =
            parse_dataset(b"{\"prompt\": \"ok\"}\n{oops\n", DatasetFormat::Prompts).unwrap_err();
        assert!(e.starts_with("line 2: not JSON"), "{e}");
    }

    #[test]
    fn a_dataset_must_be_a_regular_file() {
        let e = load_dataset(Path::new("/dev/zero"), DatasetFormat::Prompts).unwrap_err();
        assert_eq!(e, "/dev/zero is not a regular file");
        let dir = tempfile::tempdir().unwrap();
        let e = load_dataset(dir.path(), DatasetFormat::Prompts).unwrap_err();
        assert!(e.ends_with("is not a regular file"), "{e}");
    }

    #[test]
    fn multi_turn_conversations_carry_their_history() {
        let sample = sharegpt_sample(8, 7);
        let convs = parse_dataset(
            &serde_json::to_vec(&sample).unwrap(),
            DatasetFormat::Sharegpt,
        )
        .unwrap();
        let mut w = wl();
        w.dataset = Some(Dataset {
            path: "x.json".into(),
            resolved: "x.json".into(),
            format: DatasetFormat::Sharegpt,
            sample: None,
            turns: 3,
            sha256: "00".into(),
            conversations: convs.len() as u64,
        });
        let g = Generator::new(w, convs, 5, 64, None, None);
        assert_eq!(g.distinct(), 8);
        let lens: Vec<usize> = (0..8).map(|i| g.conversation(i).len()).collect();
        assert_eq!(lens.iter().filter(|n| **n == 3).count(), 2, "{lens:?}");
        let three = (0..8)
            .map(|i| g.conversation(i))
            .find(|c| c.len() == 3)
            .unwrap();
        let Content::Messages(m) = &three[2].content else {
            panic!("messages expected")
        };
        assert_eq!(
            m.iter().map(|x| x.0).collect::<Vec<_>>(),
            ["user", "assistant", "user", "assistant", "user"]
        );
        assert!(three.iter().all(|t| (1..=64).contains(&t.max_tokens)));
        // Same seed, same requests; the dataset is cycled through.
        assert_eq!(g.conversation(3), g.conversation(11));
    }

    #[test]
    fn prefixes_are_shared_by_the_requested_fraction() {
        let mut w = wl();
        w.prefix = Some(PrefixSpec {
            tokens: 32,
            share: Some(0.75),
        });
        w.input_tokens = Some(Dist {
            mean: Some(64.0),
            stddev: None,
            min: None,
            max: None,
        });
        let g = Generator::new(w, Vec::new(), 9, 16, None, None);
        let first: Vec<Vec<u32>> = (0..2000)
            .map(|i| match &g.conversation(i)[0].content {
                Content::Tokens(t) => {
                    assert_eq!(t.len(), 96);
                    t[..32].to_vec()
                }
                _ => panic!("tokens expected"),
            })
            .collect();
        let shared = first.iter().filter(|p| **p == g.shared_prefix).count();
        let f = shared as f64 / 2000.0;
        assert!((f - 0.75).abs() < 0.03, "shared {f}");
    }

    #[test]
    fn a_text_prompt_with_drawn_output_lengths_sends_the_text() {
        let mut w = wl();
        w.output_tokens = Some(Dist {
            mean: None,
            stddev: None,
            min: Some(3),
            max: Some(9),
        });
        let g = Generator::new(w, Vec::new(), 1, 9, None, Some("Hi there".into()));
        let turns: Vec<Turn> = (0..200).flat_map(|i| g.conversation(i)).collect();
        assert_eq!(turns.len(), 200);
        assert!(turns
            .iter()
            .all(|t| t.content == Content::Messages(vec![("user", "Hi there".into())])));
        let lens: std::collections::BTreeSet<u64> = turns.iter().map(|t| t.max_tokens).collect();
        assert_eq!(lens, (3..=9).collect());
    }

    #[test]
    fn the_shipped_sample_is_what_the_generator_writes() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/sharegpt-sample.json");
        let want = serde_json::to_string_pretty(&sharegpt_sample(64, 7)).unwrap() + "\n";
        if std::env::var_os("MINERVA_WRITE_SAMPLE").is_some() {
            std::fs::write(&path, &want).unwrap();
        }
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "datasets/sharegpt-sample.json differs from workload::sharegpt_sample(64, 7); \
             MINERVA_WRITE_SAMPLE=1 cargo test --lib shipped_sample rewrites it"
        );
    }
}
