//! What the user grants a pipeline: environment variables it may read and paths outside the
//! project it may read. The pipeline only asks (`env:`, `path:` sources, templates, path
//! params); grants come from the command line (`--allow-env`, `--allow-read`) and the user's
//! config file (`$XDG_CONFIG_HOME/minerva/config.toml`), never from the pipeline.

use crate::paths::resolve;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// Environment variables the pipeline may read.
    pub env: BTreeSet<String>,
    /// Files or directories outside the project the pipeline may read.
    pub read: Vec<PathBuf>,
    /// The config file the grants were read from, when there was one (for messages).
    pub config: Option<PathBuf>,
}

/// The user's config file: `allow_env = ["NAME"]`, `allow_read = ["/path"]`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    allow_env: Vec<String>,
    #[serde(default)]
    allow_read: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum GrantsError {
    #[error("cannot read the config file {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
}

/// Where the user's config lives: `$MINERVA_CONFIG`, else `$XDG_CONFIG_HOME/minerva/config.toml`,
/// else `~/.config/minerva/config.toml`.
pub fn config_path() -> Option<PathBuf> {
    let var = |n: &str| {
        std::env::var_os(n)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(p) = var("MINERVA_CONFIG") {
        return Some(p);
    }
    var("XDG_CONFIG_HOME")
        .or_else(|| var("HOME").map(|h| h.join(".config")))
        .map(|d| d.join("minerva").join("config.toml"))
}

impl Grants {
    /// The command line's grants plus the config file's (a missing file grants nothing).
    pub fn load(cli_env: &[String], cli_read: &[PathBuf]) -> Result<Grants, GrantsError> {
        let mut g = Grants {
            env: cli_env.iter().map(|s| s.trim().to_string()).collect(),
            read: cli_read.to_vec(),
            config: None,
        };
        if let Some(path) = config_path() {
            if let Some(cfg) = read_config(&path)? {
                g.env.extend(cfg.allow_env);
                g.read.extend(cfg.allow_read);
                g.config = Some(path);
            }
        }
        Ok(g)
    }

    /// How to grant `what` (`--allow-env X`), for hints.
    pub fn how_to(&self, flag: &str, value: &str) -> String {
        let key = if flag == "--allow-env" {
            "allow_env"
        } else {
            "allow_read"
        };
        let file = config_path()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "~/.config/minerva/config.toml".into());
        format!("the user grants it, not the pipeline: pass `{flag} {value}`, or add it to `{key}` in {file}")
    }
}

fn read_config(path: &Path) -> Result<Option<ConfigFile>, GrantsError> {
    use crate::paths::ReadBoundedError;
    let err = |message: String| GrantsError::Read {
        path: path.to_path_buf(),
        message,
    };
    let bytes = match crate::paths::read_bounded(path, MAX_CONFIG_BYTES, true) {
        Ok(b) => b,
        Err(ReadBoundedError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None)
        }
        Err(ReadBoundedError::Io(e)) => return Err(err(e.to_string())),
        Err(ReadBoundedError::TooLarge(_)) => {
            return Err(err(format!("larger than {MAX_CONFIG_BYTES} bytes")))
        }
        Err(ReadBoundedError::NotRegular) => return Err(err("not a regular file".into())),
    };
    let text = String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))?;
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| GrantsError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Where a path a pipeline names may be read from.
#[derive(Debug, Clone)]
pub struct Roots {
    /// The pipeline's directory, the working directory, the models directory and minerva's and
    /// the Hugging Face caches (canonical).
    pub project: Vec<PathBuf>,
    /// `--allow-read` and `allow_read` (canonical).
    pub granted: Vec<PathBuf>,
    pub cwd: PathBuf,
}

/// Where a named path falls.
#[derive(Debug, Clone, PartialEq)]
pub enum Place {
    Project(PathBuf),
    Granted(PathBuf),
    Outside(PathBuf),
}

impl Roots {
    pub fn new(pipeline: &Path, models_dir: &Path, caches: &[PathBuf], grants: &Grants) -> Roots {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        let parent = pipeline
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut project = vec![
            resolve(parent, &cwd),
            resolve(Path::new("."), &cwd),
            resolve(models_dir, &cwd),
        ];
        project.extend(caches.iter().map(|c| resolve(c, &cwd)));
        let granted = grants.read.iter().map(|g| resolve(g, &cwd)).collect();
        Roots {
            project,
            granted,
            cwd,
        }
    }

    pub fn place(&self, p: &Path) -> Place {
        let r = resolve(p, &self.cwd);
        if self.project.iter().any(|root| r.starts_with(root)) {
            Place::Project(r)
        } else if self.granted.iter().any(|root| r.starts_with(root)) {
            Place::Granted(r)
        } else {
            Place::Outside(r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_through_links_and_dots() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = std::fs::canonicalize(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(root.join("proj/sub")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(root.join("secret")).unwrap_or_else(|e| panic!("{e}"));
        std::os::unix::fs::symlink(root.join("secret"), root.join("proj/link"))
            .unwrap_or_else(|e| panic!("{e}"));
        let proj = root.join("proj");
        assert_eq!(
            resolve(Path::new("sub/../x.gguf"), &proj),
            root.join("proj/x.gguf")
        );
        assert_eq!(
            resolve(Path::new("link/key"), &proj),
            root.join("secret/key")
        );
        assert_eq!(
            resolve(Path::new("missing/../../secret/k"), &proj),
            root.join("secret/k")
        );
        let roots = Roots {
            project: vec![proj.clone()],
            granted: vec![root.join("secret/ok")],
            cwd: proj.clone(),
        };
        assert_eq!(
            roots.place(Path::new("sub/m.gguf")),
            Place::Project(proj.join("sub/m.gguf"))
        );
        assert!(matches!(
            roots.place(Path::new("link/key")),
            Place::Outside(_)
        ));
        assert!(matches!(
            roots.place(Path::new("link/ok/m.gguf")),
            Place::Granted(_)
        ));
        assert!(matches!(
            roots.place(Path::new("/proc/self/environ")),
            Place::Outside(_)
        ));
    }
}
