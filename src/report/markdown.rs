//! Markdown rendering with minijinja. Templates may come from shared pipelines, so they render
//! with no loader (no filesystem access), bounded fuel and bounded output.

use super::ReportContext;
use crate::plan::{render_bounded, sandboxed_env};
use std::path::Path;

pub const BUILTIN_TEMPLATE: &str = include_str!("../../reports/templates/baseline.md.j2");
/// Instructions a report template may execute.
const REPORT_FUEL: u64 = 50_000_000;
/// Largest report a template may produce.
pub const MAX_REPORT_BYTES: usize = 32 * 1024 * 1024;
const MAX_TEMPLATE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read template {path}: {message}")]
    Template { path: String, message: String },
    #[error("report template {name}: {message}")]
    Render { name: String, message: String },
}

pub fn load_template(path: &Path) -> Result<String, ReportError> {
    let err = |message: String| ReportError::Template {
        path: path.display().to_string(),
        message,
    };
    use crate::paths::ReadBoundedError;
    // A regular file, read through a bounded reader: `/dev/zero` or a FIFO reports a size of 0.
    let bytes =
        crate::paths::read_bounded(path, MAX_TEMPLATE_BYTES, true).map_err(|e| match e {
            ReadBoundedError::Io(e) => err(e.to_string()),
            ReadBoundedError::TooLarge(_) => err(format!("larger than {MAX_TEMPLATE_BYTES} bytes")),
            ReadBoundedError::NotRegular => err("not a regular file".into()),
        })?;
    String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))
}

/// Renders the report; `template` is the template's text (the built-in one when `None`).
pub fn render(ctx: &ReportContext, template: Option<(&str, &str)>) -> Result<String, ReportError> {
    let (name, source) = template.unwrap_or(("baseline.md.j2", BUILTIN_TEMPLATE));
    let mut env = sandboxed_env(REPORT_FUEL);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    render_bounded(
        &env,
        source,
        minijinja::Value::from(minijinja::value::Serde(ctx)),
        MAX_REPORT_BYTES,
    )
    .map_err(|message| ReportError::Render {
        name: name.to_string(),
        message,
    })
}
