//! Records of files already hashed, so a second run does not re-hash a 5 GB model: keyed by the
//! file's canonical path, and valid only while its size and modification time are unchanged.
//! One small JSON file per record under `<state dir>/verified/`, written atomically.

use crate::paths::write_atomic as atomic_write;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Record {
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    sha256: String,
}

#[derive(Debug, Clone)]
pub struct VerifiedStore {
    dir: PathBuf,
}

fn stamp(path: &Path) -> std::io::Result<(PathBuf, u64, i128)> {
    let canon = std::fs::canonicalize(path)?;
    let meta = std::fs::metadata(&canon)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    Ok((canon, meta.len(), mtime))
}

impl VerifiedStore {
    pub fn new(state_dir: &Path) -> Self {
        VerifiedStore {
            dir: state_dir.join("verified"),
        }
    }

    fn entry(&self, canon: &Path) -> PathBuf {
        self.dir.join(format!(
            "{}.json",
            crate::formats::sha256_hex(canon.as_os_str().as_encoded_bytes())
        ))
    }

    /// The recorded sha256 of `path`, if the file is unchanged since it was recorded.
    pub fn lookup(&self, path: &Path) -> Option<String> {
        let (canon, size, mtime) = stamp(path).ok()?;
        let bytes = std::fs::read(self.entry(&canon)).ok()?;
        let r: Record = serde_json::from_slice(&bytes).ok()?;
        (r.path == canon && r.size == size && r.mtime_ns == mtime).then_some(r.sha256)
    }

    /// Records that `path`, as it is now, has this sha256. Best effort.
    pub fn record(&self, path: &Path, sha256: &str) {
        let Ok((canon, size, mtime_ns)) = stamp(path) else {
            return;
        };
        let r = Record {
            path: canon.clone(),
            size,
            mtime_ns,
            sha256: sha256.to_string(),
        };
        let _ = std::fs::create_dir_all(&self.dir);
        if let Ok(bytes) = serde_json::to_vec(&r) {
            if let Err(e) = atomic_write(&self.entry(&canon), &bytes) {
                tracing::debug!("cannot record the hash of {}: {e}", path.display());
            }
        }
    }
}

/// The sha256 of `path`: recorded if unchanged since, else hashed now (and recorded).
/// Returns the hash and whether it was computed now.
pub fn sha256_verified(store: &VerifiedStore, path: &Path) -> std::io::Result<(String, bool)> {
    if let Some(h) = store.lookup(path) {
        return Ok((h, false));
    }
    let h = crate::formats::sha256_file(path)?;
    store.record(path, &h);
    Ok((h, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_holds_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = VerifiedStore::new(dir.path());
        let f = dir.path().join("m.bin");
        std::fs::write(&f, b"abc").unwrap_or_else(|e| panic!("{e}"));
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(
            sha256_verified(&store, &f).ok(),
            Some((abc.to_string(), true))
        );
        assert_eq!(
            sha256_verified(&store, &f).ok(),
            Some((abc.to_string(), false))
        );
        std::fs::write(&f, b"abcd").unwrap_or_else(|e| panic!("{e}"));
        let again = sha256_verified(&store, &f).unwrap_or_else(|e| panic!("{e}"));
        assert!(again.1, "a changed file is hashed again");
        assert_ne!(again.0, abc);
    }
}
