//! Verify stage: checks a model's local files before any bench job uses them: presence, the
//! format's magic, and the pinned sha256 (streamed, constant memory).

use crate::plan::Model;
use crate::spec::ModelFormat;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

pub async fn run(model: &Model) -> Result<Option<String>, String> {
    let Some(path) = model.local_path() else {
        return Err(format!(
            "model `{}`: no local file to verify (its source is not a path)",
            model.name
        ));
    };
    let model = model.clone();
    tokio::task::spawn_blocking(move || verify_blocking(&model, &path))
        .await
        .map_err(|e| format!("verify task failed: {e}"))?
}

fn verify_blocking(model: &Model, path: &Path) -> Result<Option<String>, String> {
    let name = &model.name;
    let meta =
        std::fs::metadata(path).map_err(|e| format!("model `{name}`: {}: {e}", path.display()))?;
    if model.format == ModelFormat::Gguf {
        if meta.is_dir() {
            return Err(format!(
                "model `{name}`: {} is a directory, not a GGUF file",
                path.display()
            ));
        }
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| {
                format!(
                    "model `{name}`: {}: cannot read the header: {e}",
                    path.display()
                )
            })?;
        if &magic != b"GGUF" {
            return Err(format!(
                "model `{name}`: {} is not a GGUF file (magic {:02x?}, expected \"GGUF\")",
                path.display(),
                magic
            ));
        }
    }
    let mut detail = format!("{} ({} bytes)", path.display(), meta.len());
    if let Some(expected) = &model.sha256 {
        if meta.is_dir() {
            return Err(format!(
                "model `{name}`: a sha256 pin needs a file, {} is a directory",
                path.display()
            ));
        }
        let actual = sha256_file(path)
            .map_err(|e| format!("model `{name}`: hashing {}: {e}", path.display()))?;
        if &actual != expected {
            return Err(format!(
                "model `{name}`: sha256 mismatch for {}: expected {expected}, found {actual}",
                path.display()
            ));
        }
        detail.push_str(", sha256 ok");
    }
    Ok(Some(detail))
}

/// Streams a file through sha256 in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
