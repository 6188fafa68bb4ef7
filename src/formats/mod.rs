//! Model file formats, read without trusting the file: used by the verify stage and
//! `minerva verify`. Pure parsing; no policy about where files come from.

pub mod gguf;
pub mod mlx;
pub mod safetensors;
pub mod tokenizer;

/// sha256 of `bytes`, as lowercase hex (pipeline files, resolved pipelines).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes read per chunk by [`sha256_file`]: large enough that syscalls are noise, small enough
/// that memory stays constant (three chunks in flight).
const HASH_CHUNK: usize = 4 << 20;

/// sha256 of a whole file, streamed in constant memory (three 4 MiB buffers).
///
/// Reading and hashing run on two threads: the page-cache copy of one chunk overlaps the
/// hashing of the previous one, so hashing proceeds at the SHA-NI rate rather than at
/// hash + copy.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<String> {
    let mut hasher = Sha256Stream::default();
    let mut f = std::fs::File::open(path)?;
    hasher.consume(&mut f)?;
    Ok(hasher.finish())
}

/// A sha256 fed from a reader on a helper thread (see [`sha256_file`]).
#[derive(Default)]
pub struct Sha256Stream {
    hasher: sha2::Sha256,
    bytes: u64,
}

impl Sha256Stream {
    /// Hash a prefix that is already known (a resumed download's partial file).
    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        self.hasher.update(data);
        self.bytes += data.len() as u64;
    }

    /// Read `reader` to its end and hash everything, reading on a second thread.
    pub fn consume<R: std::io::Read + Send>(&mut self, reader: &mut R) -> std::io::Result<u64> {
        use std::sync::mpsc::sync_channel;
        let (full_tx, full_rx) = sync_channel::<(Vec<u8>, usize)>(2);
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(3);
        for _ in 0..3 {
            let _ = empty_tx.send(vec![0u8; HASH_CHUNK]);
        }
        let before = self.bytes;
        std::thread::scope(|scope| {
            let reading = scope.spawn(move || -> std::io::Result<()> {
                while let Ok(mut buf) = empty_rx.recv() {
                    let mut filled = 0;
                    while filled < buf.len() {
                        match reader.read(&mut buf[filled..]) {
                            Ok(0) => break,
                            Ok(n) => filled += n,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(e) => return Err(e),
                        }
                    }
                    let last = filled < buf.len();
                    if full_tx.send((buf, filled)).is_err() || last {
                        return Ok(());
                    }
                }
                Ok(())
            });
            while let Ok((buf, n)) = full_rx.recv() {
                self.update(&buf[..n]);
                if n < buf.len() {
                    break;
                }
                // The reader may already have finished (and dropped its end) while chunks it
                // sent are still queued: keep draining them.
                let _ = empty_tx.send(buf);
            }
            drop(empty_tx);
            reading
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked")))
        })?;
        Ok(self.bytes - before)
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.bytes
    }

    /// Whether nothing has been hashed.
    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// The digest as lowercase hex.
    pub fn finish(self) -> String {
        use sha2::Digest;
        hex(&self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_hash_matches_one_shot_hash_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for len in [
            0usize,
            1,
            HASH_CHUNK - 1,
            HASH_CHUNK,
            HASH_CHUNK + 1,
            2 * HASH_CHUNK + 7,
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, &data).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                sha256_file(&p).ok(),
                Some(sha256_hex(&data)),
                "length {len}"
            );
        }
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
