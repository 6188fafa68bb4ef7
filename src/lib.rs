//! minerva: benchmark LLM inference from declarative YAML pipelines.
//!
//! The flow, one module each: spec → plan → exec → stage → backend → results → analyze →
//! report, with `ui` the only code that prints. See ARCHITECTURE.md.

pub mod analyze;
pub mod backend;
pub mod benchcli;
pub mod cli;
pub mod compare;
pub mod convert;
pub mod energy;
pub mod error;
pub mod events;
pub mod exec;
pub mod export;
pub mod fetch;
pub mod fleet;
pub mod formats;
pub mod gpu;
pub mod job;
pub mod lock;
pub mod merge;
pub mod paths;
pub mod plan;
pub mod redact;
pub mod report;
pub mod results;
pub mod roofline;
pub mod schema;
pub mod spec;
pub mod stage;
pub mod ui;
pub mod workload;

/// The git revision minerva was built from ("unknown" outside a checkout).
pub const GIT_REVISION: &str = env!("MINERVA_GIT_REVISION");

pub mod build_info;
