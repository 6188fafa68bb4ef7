//! The run directory: `manifest.json`, `samples.jsonl` (append-only, flushed per sample), and
//! the analysis and report files, each finished atomically (write, fsync, rename).

use super::Sample;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: not a sample: {message}")]
    BadSample {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {message}")]
    BadManifest { path: PathBuf, message: String },
}

pub use crate::paths::sync_parent;

/// Writes `bytes` to `path` atomically ([`crate::paths::write_atomic`]), naming the file on error.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    crate::paths::write_atomic(path, bytes).map_err(|source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[derive(Debug, Clone)]
pub struct RunDir {
    pub root: PathBuf,
}

impl RunDir {
    pub fn new(root: PathBuf) -> Self {
        RunDir { root }
    }
    pub fn manifest(&self) -> PathBuf {
        self.root.join("manifest.json")
    }
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples.jsonl")
    }
    pub fn summary_parquet(&self) -> PathBuf {
        self.root.join("summary.parquet")
    }
    pub fn samples_parquet(&self) -> PathBuf {
        self.root.join("samples.parquet")
    }
    pub fn summary_csv(&self) -> PathBuf {
        self.root.join("summary.csv")
    }
    pub fn report(&self) -> PathBuf {
        self.root.join("report.md")
    }

    pub fn read_manifest(&self) -> Result<super::Manifest, StoreError> {
        let path = self.manifest();
        let text = std::fs::read_to_string(&path).map_err(|source| StoreError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| StoreError::BadManifest {
            path,
            message: e.to_string(),
        })
    }

    pub fn write_manifest(&self, m: &super::Manifest) -> Result<(), StoreError> {
        let mut bytes = serde_json::to_vec_pretty(m).map_err(|e| StoreError::Write {
            path: self.manifest(),
            source: std::io::Error::other(e),
        })?;
        bytes.push(b'\n');
        let text = crate::redact::json_line(&String::from_utf8_lossy(&bytes));
        atomic_write(&self.manifest(), text.as_bytes())
    }

    /// Points `<pipeline dir>/latest` at this run (a relative symlink, replaced atomically).
    pub fn mark_latest(&self) -> Result<(), StoreError> {
        let (Some(parent), Some(name)) = (self.root.parent(), self.root.file_name()) else {
            return Ok(());
        };
        let latest = parent.join("latest");
        let tmp = parent.join(format!(".latest.{}", std::process::id()));
        let err = |source| StoreError::Write {
            path: latest.clone(),
            source,
        };
        let _ = std::fs::remove_file(&tmp);
        #[cfg(unix)]
        std::os::unix::fs::symlink(name, &tmp).map_err(err)?;
        std::fs::rename(&tmp, &latest).map_err(err)?;
        Ok(())
    }
}

/// Appends samples to `samples.jsonl`, one line each, flushed and synced before returning, so
/// a kill loses nothing already measured.
pub struct SampleWriter {
    path: PathBuf,
    file: File,
    /// Written since the last fsync.
    dirty: bool,
    last_sync: std::time::Instant,
}

/// At most this long between a sample's write and its fsync (see [`SampleWriter::append`]).
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

impl SampleWriter {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| StoreError::Write {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(SampleWriter {
            path: path.to_path_buf(),
            file,
            dirty: false,
            last_sync: std::time::Instant::now(),
        })
    }

    /// Appends one sample with a single write (lines never interleave; a torn last line is
    /// detectable). The write reaches the kernel at once, so a crash of minerva loses nothing;
    /// it is fsynced at once when the last fsync is older than [`SYNC_INTERVAL`], else by the
    /// next append or [`SampleWriter::sync`]: a load test writing thousands of samples a second
    /// is not held to one disk flush per request.
    pub fn append(&mut self, s: &Sample) -> Result<(), StoreError> {
        let err = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let line = serde_json::to_string(s).map_err(|e| err(std::io::Error::other(e)))?;
        // Every granted value and URL credential redacted, in its JSON-escaped form too.
        let mut line = crate::redact::json_line(&line).into_bytes();
        line.push(b'\n');
        self.file.write_all(&line).map_err(err)?;
        self.dirty = true;
        if self.last_sync.elapsed() >= SYNC_INTERVAL {
            self.sync()?;
        }
        Ok(())
    }

    /// fsyncs what was appended since the last fsync.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        if self.dirty {
            self.file.sync_data().map_err(|source| StoreError::Write {
                path: self.path.clone(),
                source,
            })?;
            self.dirty = false;
        }
        self.last_sync = std::time::Instant::now();
        Ok(())
    }
}

impl Drop for SampleWriter {
    fn drop(&mut self) {
        let _ = self.sync();
    }
}

/// Reads every sample. A torn final line (the process was killed mid-write) is skipped; a bad
/// line anywhere else is an error.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>, StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|source| StoreError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let mut out = Vec::with_capacity(lines.len());
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Sample>(line) {
            Ok(s) => out.push(s),
            Err(_) if i == last => {
                tracing::warn!("{}: skipping a torn last line", path.display());
            }
            Err(e) => {
                return Err(StoreError::BadSample {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(out)
}
