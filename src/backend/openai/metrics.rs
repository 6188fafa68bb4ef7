//! Server-side metrics: the server's Prometheus `/metrics`, scraped before a load step, every
//! second during it and after it, parsed with `openmetrics-parser`. The known gauges and
//! counters of vLLM, SGLang, TGI and llama-server (running and waiting requests, KV-cache usage,
//! prompt, cached-prompt and generated token counters) become a [`ServerMetrics`] beside the step's client figures;
//! a server without the endpoint is recorded as "not exposed", never guessed at.

use crate::results::{GaugeStats, ServerMetrics, ServerPoint};
use openmetrics_parser::PrometheusValue;
use std::time::{Duration, Instant};

/// A scrape larger than this is not read (vLLM's is tens of KiB).
const MAX_SCRAPE_BYTES: usize = 4 << 20;

/// What a known metric measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Running,
    Waiting,
    KvUsage,
    PromptTokens,
    CachedPromptTokens,
    GeneratedTokens,
}

/// Metric family names of vLLM, TGI and llama-server (`--metrics`), and what each measures.
/// KV usage is a fraction (vLLM's `_perc` is 0..1 despite its name).
const KNOWN: &[(&str, Kind, &str)] = &[
    ("vllm:num_requests_running", Kind::Running, "vllm"),
    ("vllm:num_requests_waiting", Kind::Waiting, "vllm"),
    ("vllm:kv_cache_usage_perc", Kind::KvUsage, "vllm"),
    ("vllm:gpu_cache_usage_perc", Kind::KvUsage, "vllm"),
    ("vllm:prompt_tokens_total", Kind::PromptTokens, "vllm"),
    (
        "vllm:prefix_cache_hits_total",
        Kind::CachedPromptTokens,
        "vllm",
    ),
    (
        "vllm:generation_tokens_total",
        Kind::GeneratedTokens,
        "vllm",
    ),
    ("sglang:num_running_reqs", Kind::Running, "sglang"),
    ("sglang:num_queue_reqs", Kind::Waiting, "sglang"),
    ("sglang:token_usage", Kind::KvUsage, "sglang"),
    ("sglang:prompt_tokens_total", Kind::PromptTokens, "sglang"),
    (
        "sglang:cached_tokens_total",
        Kind::CachedPromptTokens,
        "sglang",
    ),
    (
        "sglang:generation_tokens_total",
        Kind::GeneratedTokens,
        "sglang",
    ),
    ("tgi_batch_current_size", Kind::Running, "tgi"),
    ("tgi_queue_size", Kind::Waiting, "tgi"),
    ("tgi_request_input_length", Kind::PromptTokens, "tgi"),
    ("tgi_request_generated_tokens", Kind::GeneratedTokens, "tgi"),
    ("llamacpp:requests_processing", Kind::Running, "llama.cpp"),
    ("llamacpp:requests_deferred", Kind::Waiting, "llama.cpp"),
    ("llamacpp:kv_cache_usage_ratio", Kind::KvUsage, "llama.cpp"),
    (
        "llamacpp:prompt_tokens_total",
        Kind::PromptTokens,
        "llama.cpp",
    ),
    (
        "llamacpp:prompt_tokens_cached_total",
        Kind::CachedPromptTokens,
        "llama.cpp",
    ),
    (
        "llamacpp:tokens_predicted_total",
        Kind::GeneratedTokens,
        "llama.cpp",
    ),
];

/// One scrape's known values: gauges summed over their series (KV usage: the largest), and
/// counters summed (a histogram counts its sum).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    running: Option<f64>,
    waiting: Option<f64>,
    kv_usage: Option<f64>,
    prompt_tokens: Option<f64>,
    cached_prompt_tokens: Option<f64>,
    generated_tokens: Option<f64>,
    source: Option<&'static str>,
}

/// Parses Prometheus text into the known values.
pub fn read(text: &str) -> Result<Reading, String> {
    let exp = openmetrics_parser::prometheus::parse_prometheus(text)
        .map_err(|e| format!("not Prometheus text: {e:?}"))?;
    let mut r = Reading::default();
    for (name, kind, source) in KNOWN {
        let Some(fam) = exp.families.get(*name) else {
            continue;
        };
        let mut total: Option<f64> = None;
        for s in fam.iter_samples() {
            let v = match &s.value {
                PrometheusValue::Gauge(n) | PrometheusValue::Unknown(n) => n.as_f64(),
                PrometheusValue::Counter(c) => c.value.as_f64(),
                PrometheusValue::Histogram(h) => h.sum.as_ref().map_or(f64::NAN, |n| n.as_f64()),
                PrometheusValue::Summary(s) => s.sum.as_ref().map_or(f64::NAN, |n| n.as_f64()),
            };
            if !v.is_finite() {
                continue;
            }
            total = Some(match (total, kind) {
                (None, _) => v,
                (Some(t), Kind::KvUsage) => t.max(v),
                (Some(t), _) => t + v,
            });
        }
        let Some(v) = total else { continue };
        let slot = match kind {
            Kind::Running => &mut r.running,
            Kind::Waiting => &mut r.waiting,
            Kind::KvUsage => &mut r.kv_usage,
            Kind::PromptTokens => &mut r.prompt_tokens,
            Kind::CachedPromptTokens => &mut r.cached_prompt_tokens,
            Kind::GeneratedTokens => &mut r.generated_tokens,
        };
        if slot.is_none() {
            *slot = Some(v);
            r.source.get_or_insert(source);
        }
    }
    Ok(r)
}

/// `<base_url minus /v1>/metrics`: where vLLM, TGI and llama-server serve it.
pub fn default_url(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let root = base.strip_suffix("/v1").unwrap_or(base);
    format!("{root}/metrics")
}

/// Reads one scrape; the error says why there is none.
async fn scrape(client: &reqwest::Client, url: &str) -> Result<Reading, String> {
    let get = || client.get(url).timeout(Duration::from_secs(5)).send();
    // A pooled keep-alive connection the server has closed meanwhile (llama-server does) fails
    // before any answer: such a scrape is sent again, once.
    let resp = match get().await {
        Err(e) if !e.is_timeout() && !e.is_connect() => get().await,
        other => other,
    }
    .map_err(|e| crate::fetch::error_text(&e))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let body = crate::fetch::bounded_body(resp, MAX_SCRAPE_BYTES).await;
    let text = String::from_utf8_lossy(&body);
    read(&text)
}

/// Scrapes during one step: once at its start, then every `every` until told to stop, then
/// once more.
pub struct Scraper {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<Vec<(f64, Reading)>, String>>,
    url: String,
}

impl Scraper {
    /// Scrapes once (the step's baseline, before its first request), then every `every` in
    /// the background.
    pub async fn start(client: reqwest::Client, url: String, every: Duration) -> Scraper {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let t0 = Instant::now();
        // The first scrape decides whether the server exposes metrics at all.
        let first = scrape(&client, &url).await;
        let u = url.clone();
        let task = tokio::spawn(async move {
            let mut points = vec![(0.0, first?)];
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped.changed() => break,
                }
                if let Ok(r) = scrape(&client, &u).await {
                    points.push((t0.elapsed().as_secs_f64(), r));
                }
            }
            if let Ok(r) = scrape(&client, &u).await {
                points.push((t0.elapsed().as_secs_f64(), r));
            }
            Ok(points)
        });
        Scraper { stop, task, url }
    }

    /// Stops scraping (after one last scrape) and sums the step up.
    pub async fn finish(self) -> ServerMetrics {
        let _ = self.stop.send(true);
        let points = match self.task.await {
            Ok(r) => r,
            Err(e) => Err(format!("the scraper stopped: {e}")),
        };
        summarize(&self.url, points)
    }
}

fn gauge(points: &[(f64, Reading)], f: fn(&Reading) -> Option<f64>) -> Option<GaugeStats> {
    let v: Vec<f64> = points.iter().filter_map(|(_, r)| f(r)).collect();
    if v.is_empty() {
        return None;
    }
    Some(GaugeStats {
        mean: v.iter().sum::<f64>() / v.len() as f64,
        max: v.iter().copied().fold(f64::MIN, f64::max),
    })
}

fn delta(points: &[(f64, Reading)], f: fn(&Reading) -> Option<f64>) -> Option<f64> {
    let first = points.iter().find_map(|(_, r)| f(r))?;
    let last = points.iter().rev().find_map(|(_, r)| f(r))?;
    Some((last - first).max(0.0))
}

/// A step's server view from its scrapes.
pub fn summarize(url: &str, points: Result<Vec<(f64, Reading)>, String>) -> ServerMetrics {
    let points = match points {
        Ok(p) => p,
        Err(why) => {
            return ServerMetrics {
                url: url.to_string(),
                exposed: false,
                note: Some(why),
                ..ServerMetrics::default()
            }
        }
    };
    let source = points.iter().find_map(|(_, r)| r.source);
    if source.is_none() {
        return ServerMetrics {
            url: url.to_string(),
            exposed: false,
            scrapes: points.len() as u64,
            note: Some(
                "it answers, but with none of the vLLM, TGI or llama-server metrics minerva knows"
                    .into(),
            ),
            ..ServerMetrics::default()
        };
    }
    ServerMetrics {
        url: url.to_string(),
        exposed: true,
        note: None,
        source: source.map(String::from),
        scrapes: points.len() as u64,
        running: gauge(&points, |r| r.running),
        waiting: gauge(&points, |r| r.waiting),
        kv_cache_usage: gauge(&points, |r| r.kv_usage),
        prompt_tokens: delta(&points, |r| r.prompt_tokens),
        cached_prompt_tokens: delta(&points, |r| r.cached_prompt_tokens),
        generated_tokens: delta(&points, |r| r.generated_tokens),
        series: points
            .iter()
            .map(|(t, r)| ServerPoint {
                t_s: *t,
                running: r.running,
                waiting: r.waiting,
                kv_cache_usage: r.kv_usage,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VLLM: &str =
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
# TYPE vllm:num_requests_running gauge\n\
vllm:num_requests_running{model_name=\"m\"} 3.0\n\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n\
# TYPE vllm:num_requests_waiting gauge\n\
vllm:num_requests_waiting{model_name=\"m\"} 5.0\n\
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.\n\
# TYPE vllm:kv_cache_usage_perc gauge\n\
vllm:kv_cache_usage_perc{model_name=\"m\"} 0.25\n\
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.\n\
# TYPE vllm:prompt_tokens_total counter\n\
vllm:prompt_tokens_total{model_name=\"m\"} 1200.0\n\
# HELP vllm:generation_tokens_total Number of generation tokens processed.\n\
# TYPE vllm:generation_tokens_total counter\n\
vllm:generation_tokens_total{model_name=\"m\"} 640.0\n\
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.\n\
# TYPE vllm:time_to_first_token_seconds histogram\n\
vllm:time_to_first_token_seconds_bucket{le=\"0.1\",model_name=\"m\"} 3.0\n\
vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 4.0\n\
vllm:time_to_first_token_seconds_count{model_name=\"m\"} 4.0\n\
vllm:time_to_first_token_seconds_sum{model_name=\"m\"} 0.5\n";

    const TGI: &str = "# TYPE tgi_queue_size gauge\ntgi_queue_size 2\n\
# TYPE tgi_batch_current_size gauge\ntgi_batch_current_size 4\n\
# TYPE tgi_request_generated_tokens histogram\n\
tgi_request_generated_tokens_bucket{le=\"10\"} 1\n\
tgi_request_generated_tokens_bucket{le=\"+Inf\"} 3\n\
tgi_request_generated_tokens_sum 57\n\
tgi_request_generated_tokens_count 3\n";

    const LLAMA: &str = "# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.\n\
# TYPE llamacpp:prompt_tokens_total counter\nllamacpp:prompt_tokens_total 96\n\
# HELP llamacpp:prompt_tokens_cached_total Number of prompt tokens reused from the cache\n\
# TYPE llamacpp:prompt_tokens_cached_total counter\nllamacpp:prompt_tokens_cached_total 32\n\
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.\n\
# TYPE llamacpp:tokens_predicted_total counter\nllamacpp:tokens_predicted_total 40\n\
# HELP llamacpp:requests_processing Number of requests processing.\n\
# TYPE llamacpp:requests_processing gauge\nllamacpp:requests_processing 1\n\
# HELP llamacpp:requests_deferred Number of requests deferred.\n\
# TYPE llamacpp:requests_deferred gauge\nllamacpp:requests_deferred 0\n";

    const SGLANG: &str = "# HELP sglang:num_running_reqs The number of running requests.\n\
# TYPE sglang:num_running_reqs gauge\nsglang:num_running_reqs{model_name=\"m\"} 6.0\n\
# HELP sglang:num_queue_reqs The number of requests in the waiting queue.\n\
# TYPE sglang:num_queue_reqs gauge\nsglang:num_queue_reqs{model_name=\"m\"} 2.0\n\
# HELP sglang:token_usage The token usage.\n\
# TYPE sglang:token_usage gauge\nsglang:token_usage{model_name=\"m\"} 0.5\n\
# HELP sglang:cached_tokens_total Number of cached prompt tokens.\n\
# TYPE sglang:cached_tokens_total counter\nsglang:cached_tokens_total{model_name=\"m\"} 77.0\n";

    #[test]
    fn the_known_metrics_of_vllm_tgi_and_llama_server_are_read() {
        let g = read(SGLANG).unwrap();
        assert_eq!(
            (g.running, g.waiting, g.kv_usage),
            (Some(6.0), Some(2.0), Some(0.5))
        );
        assert_eq!(g.cached_prompt_tokens, Some(77.0));
        assert_eq!(g.source, Some("sglang"));
        let v = read(VLLM).unwrap();
        assert_eq!(v.running, Some(3.0));
        assert_eq!(v.waiting, Some(5.0));
        assert_eq!(v.kv_usage, Some(0.25));
        assert_eq!(v.prompt_tokens, Some(1200.0));
        assert_eq!(v.generated_tokens, Some(640.0));
        assert_eq!(v.source, Some("vllm"));
        let t = read(TGI).unwrap();
        assert_eq!((t.running, t.waiting), (Some(4.0), Some(2.0)));
        assert_eq!(t.generated_tokens, Some(57.0));
        assert_eq!(t.source, Some("tgi"));
        let l = read(LLAMA).unwrap();
        assert_eq!((l.running, l.waiting), (Some(1.0), Some(0.0)));
        assert_eq!(
            (l.prompt_tokens, l.generated_tokens),
            (Some(96.0), Some(40.0))
        );
        assert_eq!(l.kv_usage, None);
        assert_eq!(l.cached_prompt_tokens, Some(32.0));
        assert_eq!(l.source, Some("llama.cpp"));
        assert!(read("this is { not prometheus").is_err());
    }

    #[test]
    fn a_step_sums_up_its_scrapes_and_says_when_nothing_is_exposed() {
        let at = |running: f64, gen: f64| Reading {
            running: Some(running),
            generated_tokens: Some(gen),
            source: Some("vllm"),
            ..Reading::default()
        };
        let m = summarize(
            "http://h/metrics",
            Ok(vec![
                (0.0, at(0.0, 100.0)),
                (1.0, at(4.0, 180.0)),
                (2.0, at(2.0, 260.0)),
            ]),
        );
        assert!(m.exposed);
        assert_eq!(m.scrapes, 3);
        assert_eq!(
            m.running.as_ref().map(|g| (g.mean, g.max)),
            Some((2.0, 4.0))
        );
        assert_eq!(m.generated_tokens, Some(160.0));
        assert_eq!(m.waiting, None);
        let none = summarize("http://h/metrics", Err("HTTP 404 Not Found".into()));
        assert!(!none.exposed);
        assert_eq!(none.note.as_deref(), Some("HTTP 404 Not Found"));
        assert_eq!(
            default_url("http://127.0.0.1:8080/v1/"),
            "http://127.0.0.1:8080/metrics"
        );
    }
}
