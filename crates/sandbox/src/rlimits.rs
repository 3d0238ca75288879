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

/// Keeps the calling process's memory out of core files: it holds the
/// secrets of the jobs it runs (and the key that opens the store), which a
/// crash must not write to disk. Core files are off (both limits 0, which
/// file and `systemd-coredump` style handlers honour) and, for a root
/// runner, the process is not dumpable: the kernel then writes no core at
/// all, whatever `core_pattern` says. (A rootless runner stays dumpable: its
/// children inherit the flag until they exec, and the runner must write
/// their uid maps, which are then root's.) Best effort, like
/// [`raise_nofile`]; the sandbox init sets its own.
pub fn no_core_dumps() {
    let _ = setrlimit(
        Resource::Core,
        Rlimit {
            current: Some(0),
            maximum: Some(0),
        },
    );
    if rustix::process::geteuid().is_root() {
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    }
}
