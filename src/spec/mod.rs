//! Pipeline spec: serde types that mirror the YAML one to one, and the loader that parses them.
//!
//! First step of the flow (spec → plan → run). Everything here may be optional or a raw string;
//! `plan` turns it into the resolved form that the rest of the program uses.

mod load;
mod types;

pub use load::{load_pipeline, load_scenario_file, SpecError, MAX_SPEC_BYTES};
pub use types::*;
