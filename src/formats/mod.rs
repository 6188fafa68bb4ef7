//! Model file formats, read without trusting the file: used by the verify stage and
//! `minerva verify`. Pure parsing; no policy about where files come from.

pub mod gguf;

/// sha256 of `bytes`, as lowercase hex (pipeline files, resolved pipelines).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
