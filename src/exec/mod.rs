//! Execution: the tokio runner that walks the job graph, and the events it emits.

mod runner;

pub use crate::events::Event;
pub use runner::{run, RunOptions, RunOutcome};
