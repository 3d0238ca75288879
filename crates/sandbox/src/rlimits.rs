//! Resource limits of every process of a job (backstops behind the cgroup
//! limits).

use rustix::process::{setrlimit, Resource, Rlimit};

use crate::config::SandboxConfig;

/// Open files per process.
pub const NOFILE: u64 = 8192;
/// Processes of the job's host user (a backstop: the pids cgroup is the
/// real limit).
pub const NPROC: u64 = 16384;

/// Applies the limits to the calling process (inherited by its children).
pub(crate) fn apply(config: &SandboxConfig) -> Result<(), String> {
    let fsize = config.workspace_size.max(config.tmp_size);
    let limits = [
        (Resource::Core, 0, "core"),
        (Resource::Nofile, NOFILE, "nofile"),
        (Resource::Nproc, NPROC, "nproc"),
        (Resource::Fsize, fsize, "fsize"),
    ];
    for (resource, value, name) in limits {
        setrlimit(
            resource,
            Rlimit {
                current: Some(value),
                maximum: Some(value),
            },
        )
        .map_err(|e| format!("set rlimit {name}={value}: {e}"))?;
    }
    Ok(())
}
