//! Reading pipeline and scenario files: size-bounded, alias-bounded, located errors.

use super::types::{PipelineSpec, ScenarioSpec};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Pipeline and scenario files are small; anything larger is refused before it is parsed, so a
/// 100 MB string in a shared pipeline cannot exhaust memory.
pub const MAX_SPEC_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: file is {size} bytes, larger than the {MAX_SPEC_BYTES}-byte limit for pipeline files")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path}: file is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        column: u64,
        message: String,
    },
}

/// A parsed file and its text (kept for error snippets).
pub struct Loaded<T> {
    pub value: T,
    pub text: String,
}

fn options() -> serde_saphyr::Options {
    let mut opts = serde_saphyr::Options::default();
    opts.duplicate_keys = serde_saphyr::options::DuplicateKeyPolicy::Error;
    // Tight limits: a pipeline has a few hundred nodes; an alias bomb has billions.
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_events = 1_000_000;
    budget.max_nodes = 250_000;
    budget.max_depth = 64;
    budget.max_total_scalar_bytes = MAX_SPEC_BYTES as usize;
    budget.max_documents = 1;
    opts.budget = Some(budget);
    opts.alias_limits.max_total_replayed_events = 100_000;
    opts.alias_limits.max_alias_expansions_per_anchor = 1_000;
    opts
}

fn read_bounded(path: &Path) -> Result<String, SpecError> {
    use crate::paths::ReadBoundedError;
    let bytes = crate::paths::read_bounded(path, MAX_SPEC_BYTES, false).map_err(|e| match e {
        ReadBoundedError::TooLarge(size) => SpecError::TooLarge {
            path: path.to_path_buf(),
            size,
        },
        ReadBoundedError::Io(source) => SpecError::Read {
            path: path.to_path_buf(),
            source,
        },
        ReadBoundedError::NotRegular => SpecError::Read {
            path: path.to_path_buf(),
            source: std::io::Error::other("not a regular file"),
        },
    })?;
    String::from_utf8(bytes).map_err(|_| SpecError::NotUtf8 {
        path: path.to_path_buf(),
    })
}

/// Parses YAML text into `T`, turning the parser's error into one that names the file.
pub fn parse_text<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, SpecError> {
    serde_saphyr::from_str_with_options::<T>(text, options()).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        // The parser's text repeats the position and calls the file `<input>`.
        let rendered = e.to_string();
        let prefix = format!("error: line {line} column {column}: ");
        let message = rendered
            .strip_prefix(&prefix)
            .unwrap_or(&rendered)
            .replace("<input>", &path.display().to_string());
        SpecError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        }
    })
}

fn load<T: DeserializeOwned>(path: &Path) -> Result<Loaded<T>, SpecError> {
    let text = read_bounded(path)?;
    let value = parse_text(path, &text)?;
    Ok(Loaded { value, text })
}

pub fn load_pipeline(path: &Path) -> Result<Loaded<PipelineSpec>, SpecError> {
    load(path)
}

pub fn load_scenario_file(path: &Path) -> Result<Loaded<ScenarioSpec>, SpecError> {
    load(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_bomb_is_refused_quickly() {
        let mut y = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let prev = i - 1;
            y.push_str(&format!(
                "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
            ));
        }
        let started = std::time::Instant::now();
        let r = parse_text::<serde_json::Value>(Path::new("bomb.yaml"), &y);
        assert!(r.is_err(), "a 10^12-node alias bomb must be refused");
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn parse_error_names_file_line_column() {
        let err = parse_text::<PipelineSpec>(Path::new("p.yaml"), "name: x\nstages: [\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.starts_with("p.yaml:"), "{err}");
    }
}
