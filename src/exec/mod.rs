//! Execution: the tokio runner that walks the job graph, and the events it emits.

mod events;
mod runner;

pub use events::Event;
pub use runner::{run, RunOptions, RunOutcome};
