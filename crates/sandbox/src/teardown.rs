//! Proving that nothing of a job outlives it.
//!
//! The kernel kills every process of a pid namespace when its init dies, and
//! `waitpid` on the init returns only after they are gone. The runner still
//! checks: it holds the job's pid and user namespaces open (so their inode
//! numbers cannot be reused by another job meanwhile) and scans the host's
//! process table for any process still in either of them.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;

use rustix::process::Pid;

use crate::error::SandboxError;

/// One namespace of a sandbox, held open: while it is, no other namespace
/// can get its inode number.
#[derive(Debug)]
pub(crate) struct HeldNs {
    file: File,
    dev: u64,
    ino: u64,
}

impl HeldNs {
    /// The namespace's file, for `setns`.
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.file.as_fd()
    }

    pub(crate) fn id(&self) -> crate::procfs::NsId {
        crate::procfs::NsId {
            dev: self.dev,
            ino: self.ino,
        }
    }
}

/// The namespaces of a sandbox that identify its processes.
#[derive(Debug, Default)]
pub(crate) struct Namespaces {
    pid: Option<Arc<HeldNs>>,
    user: Option<HeldNs>,
}

impl Namespaces {
    /// Opens the pid and user namespaces of process `pid`.
    pub(crate) fn open(pid: Pid) -> Result<Namespaces, SandboxError> {
        let dir = Path::new("/proc")
            .join(pid.as_raw_nonzero().get().to_string())
            .join("ns");
        let hold = |name: &str| -> Result<HeldNs, SandboxError> {
            let path = dir.join(name);
            let file = File::open(&path).map_err(|e| SandboxError::Path {
                path: path.clone(),
                source: e,
            })?;
            let meta = file.metadata().map_err(|e| SandboxError::Path {
                path: path.clone(),
                source: e,
            })?;
            Ok(HeldNs {
                file,
                dev: meta.dev(),
                ino: meta.ino(),
            })
        };
        Ok(Namespaces {
            pid: Some(Arc::new(hold("pid")?)),
            user: Some(hold("user")?),
        })
    }

    /// The job's pid namespace, to hold beyond the sandbox's life.
    pub(crate) fn pid(&self) -> Option<Arc<HeldNs>> {
        self.pid.clone()
    }

    fn contains(&self, proc_pid_dir: &Path) -> bool {
        let is = |held: Option<&HeldNs>, name: &str| {
            held.is_some_and(|ns| {
                std::fs::metadata(proc_pid_dir.join("ns").join(name))
                    .is_ok_and(|m| m.dev() == ns.dev && m.ino() == ns.ino)
            })
        };
        is(self.pid.as_deref(), "pid") || is(self.user.as_ref(), "user")
    }
}

/// What teardown found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// Host pids of processes of the job still alive after teardown. Empty
    /// unless something is badly wrong; the engine reports it as an error.
    pub leftover_pids: Vec<i32>,
    /// cgroup directories of the job that could not be removed.
    pub leftover_cgroups: Vec<std::path::PathBuf>,
}

impl TeardownReport {
    /// True when nothing of the job is left.
    pub fn is_clean(&self) -> bool {
        self.leftover_pids.is_empty() && self.leftover_cgroups.is_empty()
    }
}

/// Scans `/proc` for processes in the sandbox's namespaces.
pub(crate) fn scan(ns: &Namespaces) -> Result<TeardownReport, SandboxError> {
    let mut report = TeardownReport::default();
    let entries = std::fs::read_dir("/proc").map_err(|e| SandboxError::Path {
        path: "/proc".into(),
        source: e,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if ns.contains(&entry.path()) {
            report.leftover_pids.push(pid);
        }
    }
    Ok(report)
}
