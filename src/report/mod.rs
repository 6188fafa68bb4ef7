//! Report: a pure function from stored results (manifest + samples) to Markdown bytes.

mod context;
mod markdown;
pub mod plots;

pub use context::{build_context, PlotRef, ReportContext, RunState};
pub use markdown::{load_template, render, ReportError, BUILTIN_TEMPLATE, MAX_REPORT_BYTES};
