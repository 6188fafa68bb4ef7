//! The memory-bandwidth roofline for decode. Generating a token on a dense model reads every
//! weight once (and the KV cache up to its position), so memory bandwidth ÷ bytes per token is
//! the fastest generation the machine allows. The report shows measured tokens/s as a share of
//! it; above 100% means the measurement (or the byte count) is wrong, and it says so.
//!
//! The bandwidth is measured once per host (STREAM's Copy kernel: `memcpy` between two buffers
//! far larger than the caches, one slice per core, best of several passes) and cached by the
//! host fingerprint.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// A host's measured memory bandwidth, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Bytes read plus bytes written per second, as STREAM counts Copy.
    pub bytes_per_s: f64,
    /// How it was measured, in words.
    pub method: String,
    /// When it was measured (RFC 3339), and whether this run took it from the cache.
    pub measured_at: String,
    #[serde(default)]
    pub cached: bool,
}

/// STREAM's Copy over `bytes`-sized buffers with `threads` threads, best of `passes`.
pub fn probe(bytes: usize, threads: usize, passes: u32) -> Bandwidth {
    let threads = threads.max(1);
    let bytes = (bytes / threads / 4096).max(1) * 4096 * threads;
    // Filled, so every page is really there before the first timed pass.
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    let chunk = bytes / threads;
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        std::thread::scope(|s| {
            for (d, c) in dst.chunks_mut(chunk).zip(src.chunks(chunk)) {
                s.spawn(move || d.copy_from_slice(c));
            }
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    Bandwidth {
        bytes_per_s: 2.0 * bytes as f64 / best.max(1e-9),
        method: format!(
            "STREAM Copy (memcpy), 2 × {} MiB per pass counted (read + write), {threads} threads, best of {} passes",
            bytes >> 20,
            passes.max(1)
        ),
        measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cached: false,
    }
}

/// The host's bandwidth: from `<cache>/bandwidth/<fingerprint hash>.json` when measured
/// before, else probed (512 MiB buffers, or an eighth of memory if less, on every core) and
/// cached.
pub fn host_bandwidth(cache: &Path, fingerprint: &str, memory_bytes: u64) -> Bandwidth {
    let key = &crate::formats::sha256_hex(fingerprint.as_bytes())[..16];
    let path = cache.join("bandwidth").join(format!("{key}.json"));
    if let Some(mut b) = std::fs::read(&path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Bandwidth>(&t).ok())
        .filter(|b| b.bytes_per_s.is_finite() && b.bytes_per_s > 0.0)
    {
        b.cached = true;
        return b;
    }
    let size = (512usize << 20).min((memory_bytes / 8).max(64 << 20) as usize);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let b = probe(size, threads, 5);
    if let (Some(dir), Ok(text)) = (path.parent(), serde_json::to_vec_pretty(&b)) {
        let _ = std::fs::create_dir_all(dir);
        let _ = crate::paths::write_atomic(&path, &text);
    }
    b
}

/// The fastest generation the bandwidth allows, tokens/s: bandwidth ÷ (weight bytes + KV bytes
/// read at `position`). None without a byte count.
pub fn tg_roofline(
    bytes_per_s: f64,
    weight_bytes: Option<u64>,
    kv_bytes_per_position: Option<u64>,
    position: f64,
) -> Option<f64> {
    let w = weight_bytes.filter(|w| *w > 0)? as f64;
    let kv = kv_bytes_per_position.unwrap_or(0) as f64 * position.max(0.0);
    (bytes_per_s > 0.0).then(|| bytes_per_s / (w + kv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_roofline_is_bandwidth_over_bytes_per_token() {
        // 10 GB/s over 100 MB of weights: 100 tokens/s; 1,000 positions of 20 kB of KV add
        // 20 MB a token.
        let r = tg_roofline(10e9, Some(100_000_000), Some(20_000), 1000.0);
        assert!((r.unwrap_or(0.0) - 10e9 / 120e6).abs() < 1e-9, "{r:?}");
        assert_eq!(tg_roofline(10e9, None, Some(1), 1.0), None);
        assert_eq!(tg_roofline(0.0, Some(1), None, 1.0), None);
    }

    #[test]
    fn a_probe_measures_and_the_cache_answers_next_time() {
        let b = probe(8 << 20, 2, 2);
        assert!(b.bytes_per_s > 1e8, "{b:?}");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = host_bandwidth(dir.path(), "host-a", 1 << 30);
        assert!(!first.cached && first.bytes_per_s > 1e8);
        let again = host_bandwidth(dir.path(), "host-a", 1 << 30);
        assert!(again.cached);
        // The same figure, through JSON.
        assert!((again.bytes_per_s / first.bytes_per_s - 1.0).abs() < 1e-12);
    }
}
