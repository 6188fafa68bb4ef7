//! The memory-bandwidth roofline for decode. Generating a token on a dense model reads every
//! weight once (and the KV cache up to its position), so memory bandwidth ÷ bytes per token is
//! the fastest generation the machine allows. The report shows measured tokens/s as a share of
//! it; above 100% means the measurement (or the byte count) is wrong, and it says so.
//!
//! The bandwidth is read bandwidth over a buffer the size of the model's bytes per token (every
//! core reading its slice, best of several passes): where the weights fit in the last-level
//! cache, that is the cache's bandwidth, else DRAM's. It is measured once per host and size and
//! cached by the host fingerprint.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// A host's measured memory read bandwidth at one working-set size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Bytes read per second.
    pub bytes_per_s: f64,
    /// The buffer read, bytes: the model's bytes per token rounded up to a power of two, so
    /// the figure is that of the level (cache or DRAM) the weights stream from.
    pub bytes: u64,
    /// How it was measured, in words.
    pub method: String,
    /// When it was measured (RFC 3339), and whether this run took it from the cache.
    pub measured_at: String,
    #[serde(default)]
    pub cached: bool,
}

/// Reads a `bytes`-sized buffer with `threads` threads (one slice each, `memchr` for a byte
/// that is not there: a vectorized read of every byte, optimized whatever the build profile),
/// best of `passes`.
pub fn probe(bytes: usize, threads: usize, passes: u32) -> Bandwidth {
    let threads = threads.max(1);
    let bytes = (bytes / threads / 4096).max(1) * 4096 * threads;
    // Written, so every page is really there (a fresh zeroed allocation maps one shared page).
    let buf = vec![1u8; bytes];
    let chunk = bytes / threads;
    let mut best = f64::INFINITY;
    // One untimed pass brings the buffer to wherever it settles (cache or DRAM).
    for pass in 0..=passes.max(1) {
        let t = Instant::now();
        let found = std::thread::scope(|s| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|c| s.spawn(move || memchr::memchr(0, c).is_some()))
                .collect();
            handles.into_iter().any(|h| h.join().unwrap_or(true))
        });
        std::hint::black_box(found);
        if pass > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    Bandwidth {
        bytes_per_s: bytes as f64 / best.max(1e-9),
        bytes: bytes as u64,
        method: format!(
            "read of {} MiB (memchr, {threads} threads), best of {} passes",
            bytes >> 20,
            passes.max(1)
        ),
        measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cached: false,
    }
}

/// The host's read bandwidth over a working set of `working_set` bytes: from
/// `<cache>/bandwidth/<fingerprint hash>-<size>.json` when measured before, else probed (the
/// size rounded up to a power of two, at least 64 MiB, at most a quarter of memory; every
/// core) and cached.
pub fn host_bandwidth(
    cache: &Path,
    fingerprint: &str,
    memory_bytes: u64,
    working_set: u64,
) -> Bandwidth {
    host_bandwidth_at(
        cache,
        fingerprint,
        memory_bytes,
        working_set,
        load_average(),
    )
}

/// [`host_bandwidth`], given the load average to judge whether to keep the figure.
fn host_bandwidth_at(
    cache: &Path,
    fingerprint: &str,
    memory_bytes: u64,
    working_set: u64,
    load: Option<f64>,
) -> Bandwidth {
    let size = working_set
        .max(64 << 20)
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX)
        .min((memory_bytes / 4).max(64 << 20));
    let key = &crate::formats::sha256_hex(fingerprint.as_bytes())[..16];
    let path = cache
        .join("bandwidth")
        .join(format!("{key}-{}MiB.json", size >> 20));
    if let Some(mut b) = std::fs::read(&path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Bandwidth>(&t).ok())
        .filter(|b| b.bytes_per_s.is_finite() && b.bytes_per_s > 0.0)
    {
        b.cached = true;
        return b;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut b = probe(size as usize, threads, 5);
    // A figure taken while other work competes for the memory (a build, another run) would be
    // low, and kept for every later run of this host: it is used for this run only.
    if !quiet(load, threads) {
        b.method.push_str(&format!(
            ", not cached: load average {:.1} on {threads} CPUs when measured",
            load.unwrap_or_default()
        ));
        return b;
    }
    if let (Some(dir), Ok(text)) = (path.parent(), serde_json::to_vec_pretty(&b)) {
        let _ = std::fs::create_dir_all(dir);
        let _ = crate::paths::write_atomic(&path, &text);
    }
    b
}

/// The 1-minute load average, where the kernel says it (`/proc/loadavg`).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Quiet enough to keep a bandwidth figure for the host: less than half the CPUs busy on
/// average over the last minute (or no load figure to judge by).
fn quiet(load: Option<f64>, cpus: usize) -> bool {
    load.is_none_or(|l| l < 0.5 * cpus as f64)
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
    fn a_figure_measured_on_a_busy_host_is_not_kept() {
        assert!(quiet(Some(0.3), 2));
        assert!(!quiet(Some(1.0), 2));
        assert!(!quiet(Some(3.7), 2));
        assert!(quiet(Some(7.9), 16));
        assert!(quiet(None, 2));
    }

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
        // Measured on a busy host: used, not kept.
        let busy = host_bandwidth_at(dir.path(), "host-a", 1 << 30, 100 << 20, Some(99.0));
        assert!(!busy.cached && busy.method.contains("not cached: load average 99.0"));
        let first = host_bandwidth_at(dir.path(), "host-a", 1 << 30, 100 << 20, Some(0.0));
        assert!(!first.cached && first.bytes_per_s > 1e8, "{first:?}");
        assert_eq!(
            first.bytes,
            128 << 20,
            "100 MiB of weights: a 128 MiB probe"
        );
        let again = host_bandwidth_at(dir.path(), "host-a", 1 << 30, 100 << 20, Some(99.0));
        assert!(again.cached);
        // The same figure, through JSON.
        assert!((again.bytes_per_s / first.bytes_per_s - 1.0).abs() < 1e-12);
    }
}
