//! Where fetched files go and how the network is used, from the environment (the variables the
//! Hugging Face tools read, so caches and tokens are shared with them) and the command line.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A credential. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([REDACTED])")
    }
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// The project's model directory: pip and URL downloads land here; HF models get a link.
    pub models_dir: PathBuf,
    /// The Hugging Face hub cache (`models--org--repo/{blobs,snapshots,refs}`).
    pub hf_cache: PathBuf,
    /// `HF_ENDPOINT`, without a trailing slash.
    pub endpoint: String,
    pub token: Option<Secret>,
    /// Use only what is cached (`--offline`, `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// minerva's own state: records of verified hashes.
    pub state_dir: PathBuf,
    /// Attempts per file for retryable failures (429, 5xx, timeouts, cut connections).
    pub attempts: u32,
    /// First retry delay; doubles each attempt (capped at 30 s).
    pub backoff: Duration,
    /// Files downloaded at once.
    pub parallel: usize,
    /// A connection that delivers nothing for this long is retried.
    pub read_timeout: Duration,
    /// The Python interpreter whose pip fetches `pip:` sources.
    pub python: String,
    /// Per-file progress bars (a terminal), or none.
    pub bars: Option<indicatif::MultiProgress>,
    /// The longest wait for a lock another process holds (a download of the same file, the
    /// machine-wide bench lock): `--lock-timeout`, `MINERVA_LOCK_TIMEOUT_S`, default 1 hour.
    pub lock_timeout: Duration,
    /// Where the machine-wide locks live (`MINERVA_LOCK_DIR`, default the state directory).
    pub lock_dir: PathBuf,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "on" | "yes" | "true"
    )
}

fn home() -> PathBuf {
    env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"))
}

impl FetchConfig {
    /// Reads `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`, `HF_ENDPOINT`, `HF_TOKEN`,
    /// `HF_TOKEN_PATH`, `HF_HUB_OFFLINE`, and minerva's `MINERVA_CACHE`,
    /// `MINERVA_DOWNLOAD_ATTEMPTS`, `MINERVA_DOWNLOAD_BACKOFF_MS`, `MINERVA_PYTHON`,
    /// `MINERVA_LOCK_TIMEOUT_S`, `MINERVA_LOCK_DIR`.
    pub fn from_env(models_dir: &Path) -> Self {
        let xdg_cache = env("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| home().join(".cache"));
        let hf_home = env("HF_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| xdg_cache.join("huggingface"));
        let hf_cache = env("HF_HUB_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let token = env("HF_TOKEN")
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = env("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
            })
            .filter(|t| !t.is_empty())
            .map(Secret);
        let state_dir = env("MINERVA_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| xdg_cache.join("minerva"));
        FetchConfig {
            models_dir: models_dir.to_path_buf(),
            hf_cache,
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| "https://huggingface.co".into())
                .trim_end_matches('/')
                .to_string(),
            token,
            offline: env("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            state_dir: state_dir.clone(),
            attempts: env("MINERVA_DOWNLOAD_ATTEMPTS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(5)
                .max(1),
            backoff: Duration::from_millis(
                env("MINERVA_DOWNLOAD_BACKOFF_MS")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000),
            ),
            parallel: 4,
            read_timeout: Duration::from_secs(
                env("MINERVA_DOWNLOAD_READ_TIMEOUT_S")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(60),
            ),
            python: env("MINERVA_PYTHON").unwrap_or_else(|| "python3".into()),
            bars: None,
            lock_timeout: Duration::from_secs(
                env("MINERVA_LOCK_TIMEOUT_S")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(3600),
            ),
            lock_dir: env("MINERVA_LOCK_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| state_dir.clone()),
        }
    }

    /// The delay before retry number `attempt` (1-based), or the server's `Retry-After`.
    pub(crate) fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(10));
        retry_after.unwrap_or(exp).min(Duration::from_secs(30))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hf_abcdef");
        assert_eq!(format!("{s:?}"), "Secret([REDACTED])");
        assert_eq!(s.expose(), "hf_abcdef");
    }
}
