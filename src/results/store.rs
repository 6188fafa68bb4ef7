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
    /// The journal: one line per job as it ends ([`super::JobRecord`]).
    pub fn journal(&self) -> PathBuf {
        self.root.join("jobs.jsonl")
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

    /// Points `<pipeline dir>/<link>` at this run (a relative symlink, replaced atomically):
    /// `latest-started` when a run starts, `latest` when it completes.
    pub fn mark(&self, link: &str) -> Result<(), StoreError> {
        let (Some(parent), Some(name)) = (self.root.parent(), self.root.file_name()) else {
            return Ok(());
        };
        let latest = parent.join(link);
        let tmp = parent.join(format!(".{link}.{}", std::process::id()));
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
    /// Opens `path` for appending. A file whose last line was torn (a kill mid-write) gets its
    /// newline first, so the next sample starts a line of its own.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let err = |source| StoreError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        if len > 0 {
            use std::io::{Read, Seek, SeekFrom};
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1)).map_err(err)?;
            file.read_exact(&mut last).map_err(err)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(err)?;
                file.sync_data().map_err(err)?;
            }
        }
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

/// What reading `samples.jsonl` found.
#[derive(Debug, Default)]
pub struct SampleRead {
    /// The samples that count: superseded ones (written by a job that `--resume` reran) are
    /// left out.
    pub samples: Vec<Sample>,
    /// Lines that are not a sample (torn by a kill, a full disk or a crash), by line number.
    pub skipped_lines: Vec<usize>,
    /// Samples left out because a resumed run reran their job.
    pub superseded: usize,
}

/// Reads the samples that count (see [`read_samples_full`]).
pub fn read_samples(path: &Path) -> Result<Vec<Sample>, StoreError> {
    Ok(read_samples_full(path)?.samples)
}

/// Calls `f` with each line of `path` (without its newline) and its 1-based number, streaming:
/// one line is held at a time. A missing file has no lines.
pub(super) fn for_each_line(
    path: &Path,
    mut f: impl FnMut(usize, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut buf = Vec::new();
    let mut n = 0usize;
    loop {
        buf.clear();
        let got = r
            .read_until(b'\n', &mut buf)
            .map_err(|source| StoreError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if got == 0 {
            return Ok(());
        }
        n += 1;
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        f(n, &buf)?;
    }
}

/// Reads every sample, streaming. A line that is not a sample (torn by a kill or a full disk,
/// at the end or anywhere else) is skipped and counted, so one bad line never costs a run its
/// other samples; superseded samples are counted and left out.
pub fn read_samples_full(path: &Path) -> Result<SampleRead, StoreError> {
    let mut out = SampleRead::default();
    for_each_line(path, |n, line| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        match serde_json::from_slice::<Sample>(line) {
            Ok(s) if s.superseded => out.superseded += 1,
            Ok(s) => out.samples.push(s),
            Err(e) => {
                tracing::warn!(
                    "{}:{n}: skipping a line that is not a sample ({e})",
                    path.display()
                );
                out.skipped_lines.push(n);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// Marks every sample of `jobs` in `path` as superseded (`"superseded": true`), rewriting the
/// file atomically; returns how many were marked. Other lines, unreadable ones included, are
/// kept as they were.
pub fn supersede_samples(
    path: &Path,
    jobs: &std::collections::BTreeSet<String>,
) -> Result<usize, StoreError> {
    if jobs.is_empty() || !path.exists() {
        return Ok(0);
    }
    let mut out: Vec<u8> = Vec::new();
    let mut marked = 0usize;
    for_each_line(path, |_, line| {
        let mut v = serde_json::from_slice::<serde_json::Value>(line).ok();
        let hit = v.as_mut().and_then(|v| v.as_object_mut()).filter(|o| {
            o.get("job_id")
                .and_then(|j| j.as_str())
                .is_some_and(|j| jobs.contains(j))
                && o.get("superseded") != Some(&serde_json::Value::Bool(true))
        });
        match hit {
            Some(o) => {
                o.insert("superseded".into(), serde_json::Value::Bool(true));
                let text = serde_json::to_string(o).map_err(|e| StoreError::Write {
                    path: path.to_path_buf(),
                    source: std::io::Error::other(e),
                })?;
                out.extend_from_slice(text.as_bytes());
                marked += 1;
            }
            None => out.extend_from_slice(line),
        }
        out.push(b'\n');
        Ok(())
    })?;
    if marked > 0 {
        atomic_write(path, &out)?;
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(job: &str, rep: u32) -> String {
        format!(
            r#"{{"job_id":"{job}","stage":"b","backend":"simulated","model":"m","scenario":"s","params":{{}},"rep":{rep},"warmup":false,"simulated":true}}"#
        )
    }

    #[test]
    fn torn_lines_anywhere_are_skipped_and_superseded_samples_left_out() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("samples.jsonl");
        let torn = &line("a", 1)[..40];
        let text = format!(
            "{}\n{torn}\n{}\n\n{}\n{}",
            line("a", 0),
            line("b", 0),
            line("b", 1),
            &line("c", 0)[..30]
        );
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        let read = read_samples_full(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.samples.len(), 3);
        assert_eq!(read.skipped_lines, vec![2, 6]);

        // Appending after a torn last line starts a new line.
        let mut w = SampleWriter::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut s = read.samples[0].clone();
        s.job_id = "d".into();
        w.append(&s).unwrap_or_else(|e| panic!("{e}"));
        drop(w);
        let read = read_samples_full(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.samples.len(), 4);
        assert_eq!(read.skipped_lines, vec![2, 6]);

        let jobs: std::collections::BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(supersede_samples(&path, &jobs).ok(), Some(2));
        let read = read_samples_full(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read.superseded, 2);
        let ids: Vec<&str> = read.samples.iter().map(|s| s.job_id.as_str()).collect();
        assert_eq!(ids, vec!["a", "d"]);
        // Unreadable lines stay where they were.
        assert_eq!(read.skipped_lines, vec![2, 6]);
    }
}
