//! Errors of the sandbox.

use std::path::PathBuf;

/// Why a sandbox could not be created or driven.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// clone(2) into new namespaces failed.
    #[error("cannot create the job's namespaces (clone: {0}); user namespaces may be disabled on this host (check /proc/sys/user/max_user_namespaces and kernel.unprivileged_userns_clone)")]
    Clone(#[source] std::io::Error),
    /// Writing a uid/gid map failed.
    #[error("cannot write {}: {source}", path.display())]
    IdMap {
        /// The map file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The job's cgroup could not be created or joined.
    #[error("cgroup: {0}")]
    Cgroup(String),
    /// The init reported a setup failure.
    #[error("sandbox setup failed: {stage}: {error}")]
    Setup {
        /// What it was doing.
        stage: String,
        /// The error it reported.
        error: String,
    },
    /// The init broke the protocol.
    #[error("sandbox protocol error: {0}")]
    Protocol(String),
    /// The control socket failed.
    #[error("sandbox control socket: {0}")]
    Control(String),
    /// The init went away.
    #[error("the sandbox init process went away: {0}")]
    InitDied(String),
    /// A system call failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("{}: {source}", path.display())]
    Path {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl SandboxError {
    pub(crate) fn io(what: &'static str, e: impl Into<std::io::Error>) -> SandboxError {
        SandboxError::Io {
            what,
            source: e.into(),
        }
    }
}
