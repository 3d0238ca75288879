//! Resource limits of every process of a job (backstops behind the cgroup
//! limits).

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

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

/// Raises the calling process's soft limit of open files to its hard
/// limit. The runner holds fds per running job (sandbox control sockets,
/// output pipes) and its egress proxies four per tunnel (two splice pipes),
/// so the common soft default of 1024 is too low for a busy runner; the
/// hard limit is the operator's ceiling. Jobs do not inherit this: their
/// init sets [`NOFILE`]. Best effort: on failure the soft limit stays.
pub fn raise_nofile() {
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}
