//! The top-level error and its exit codes.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | the run finished, but some jobs failed; `compare --fail-on-regression` found a regression |
//! | 2 | invalid input: pipeline, arguments, template; runs `compare` cannot compare |
//! | 3 | an I/O or internal error |
//! | 130 | interrupted (SIGINT/SIGTERM/SIGHUP); measured samples are kept |

use crate::plan::PlanError;

pub mod exit {
    pub const OK: i32 = 0;
    pub const RUN_FAILED: i32 = 1;
    pub const INVALID: i32 = 2;
    pub const ERROR: i32 = 3;
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Store(#[from] crate::results::StoreError),
    #[error(transparent)]
    Render(#[from] crate::stage::RenderRunError),
    /// The user's config file (grants) is unreadable or invalid.
    #[error(transparent)]
    Grants(#[from] crate::plan::GrantsError),
    /// `minerva compare`: bad input or runs that are not comparable.
    #[error(transparent)]
    Compare(#[from] crate::compare::CompareError),
    #[error(transparent)]
    Export(#[from] crate::export::ExportError),
    /// `run --resume`: the run cannot be resumed with this pipeline, or here.
    #[error(transparent)]
    Resume(#[from] crate::exec::resume::ResumeError),
    /// `minerva merge`: inputs that do not make one whole, or a store error.
    #[error(transparent)]
    Merge(#[from] crate::merge::MergeError),
    /// Bad command-line arguments.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Plan(_)
            | Error::Usage(_)
            | Error::Grants(_)
            | Error::Compare(_)
            | Error::Export(_)
            | Error::Resume(_) => exit::INVALID,
            Error::Render(crate::stage::RenderRunError::Report(_)) => exit::INVALID,
            Error::Merge(crate::merge::MergeError::Input(_)) => exit::INVALID,
            Error::Merge(_) => exit::ERROR,
            Error::Store(_) | Error::Render(_) | Error::Other(_) => exit::ERROR,
        }
    }
}
