//! Execution: the tokio runner that walks the job graph (the rules it follows are in
//! `schedule`, a pure scheduler), and the events it emits.

pub mod resume;
mod runner;
pub mod schedule;

pub use crate::events::Event;
pub use runner::{run, RunOptions, RunOutcome};
