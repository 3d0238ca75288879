//! Errors of the engine.

/// Why a run was not started.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The pipeline asks for something invalid or unknown (exit 2).
    #[error("{0}")]
    BadInput(String),
    /// The pipeline needs a capability this host or version lacks (exit 3).
    #[error("{0}")]
    Unavailable(String),
}

/// Why the engine itself failed (exit 70).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The run was refused before it started.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The run record could not be written.
    #[error("run record: {0}")]
    State(#[from] state::StateError),
    /// A file of the run could not be written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The secret store failed (not a denial: those are `BadInput`).
    #[error("secret store: {0}")]
    Secrets(String),
    /// A job thread could not be started.
    #[error("cannot start a job thread: {0}")]
    Thread(std::io::Error),
}
