//! File-system helpers, a leaf module: path resolution for permission checks (the plan's grants,
//! the fetcher's check of which links under `models/` are minerva's), the one bounded file
//! reader, and atomic writes (write, fsync, rename, fsync the directory).

use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Writes `bytes` to `path` so that readers see the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Results are meant to be shared: the usual 0644, not the temp file's 0600.
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_parent(path);
    Ok(())
}

/// fsyncs the directory holding `path`, so a rename into it survives a power loss. Best effort.
pub fn sync_parent(path: &Path) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// `p` made absolute against `cwd`, with symlinks followed as far as the path exists and
/// `.`/`..` resolved lexically beyond that (a file not created yet still gets a real answer).
pub fn resolve(p: &Path, cwd: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    // The longest prefix that exists, canonicalized; the rest appended lexically.
    let comps: Vec<Component<'_>> = abs.components().collect();
    for split in (1..=comps.len()).rev() {
        let prefix: PathBuf = comps[..split].iter().collect();
        if let Ok(canon) = std::fs::canonicalize(&prefix) {
            let mut out = canon;
            for c in &comps[split..] {
                match c {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
    }
    abs
}

/// Why [`read_bounded`] gave up.
#[derive(Debug)]
pub enum ReadBoundedError {
    Io(std::io::Error),
    /// Larger than the limit: the size the file reports, or the bytes read past the limit.
    TooLarge(u64),
    /// A device, FIFO or directory where a regular file was required.
    NotRegular,
}

/// Reads a file of at most `max` bytes without ever holding more: the size is checked first,
/// then enforced while reading (`/dev/zero` and FIFOs report a size of 0). With `regular`,
/// anything but a regular file is refused before a byte is read.
pub fn read_bounded(path: &Path, max: u64, regular: bool) -> Result<Vec<u8>, ReadBoundedError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ReadBoundedError::Io)?;
    let meta = file.metadata().map_err(ReadBoundedError::Io)?;
    if regular && !meta.is_file() {
        return Err(ReadBoundedError::NotRegular);
    }
    if meta.len() > max {
        return Err(ReadBoundedError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadBoundedError::Io)?;
    if bytes.len() as u64 > max {
        return Err(ReadBoundedError::TooLarge(bytes.len() as u64));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_reads_stop_at_the_limit_and_refuse_devices() {
        let zero = Path::new("/dev/zero");
        if zero.exists() {
            assert!(matches!(
                read_bounded(zero, 10, true),
                Err(ReadBoundedError::NotRegular)
            ));
            assert!(matches!(
                read_bounded(zero, 10, false),
                Err(ReadBoundedError::TooLarge(11))
            ));
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let f = dir.path().join("t");
        std::fs::write(&f, b"0123456789").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            read_bounded(&f, 10, true).ok(),
            Some(b"0123456789".to_vec())
        );
        assert!(matches!(
            read_bounded(&f, 9, true),
            Err(ReadBoundedError::TooLarge(10))
        ));
    }
}
