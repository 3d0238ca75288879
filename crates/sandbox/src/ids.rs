//! A distinct host uid/gid for every concurrently running job (privileged
//! runner): two jobs never share a host identity, so even a process that
//! escaped its namespaces could not signal, trace or share files with
//! another job's processes.
//!
//! Slots are claimed with `flock` on a file per uid under
//! `/run/airlock/ids/`; the lock dies with the process holding it, so a
//! crashed runner frees its slots by itself.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};

/// First host uid/gid handed to jobs: above systemd's container range
/// (524288–1879048191), below 2^31.
pub const BASE: u32 = 0x7000_0000;
/// How many jobs can run at once on one host.
pub const SLOTS: u32 = 65536;

const LOCK_DIR: &str = "/run/airlock/ids";

/// A claimed host identity; released when dropped.
#[derive(Debug)]
pub struct HostIds {
    /// Host uid of the job's root.
    pub uid: u32,
    /// Host gid of the job's root.
    pub gid: u32,
    _lock: File,
}

/// Claims a free slot.
pub fn allocate() -> io::Result<HostIds> {
    allocate_in(Path::new(LOCK_DIR))
}

fn allocate_in(dir: &Path) -> io::Result<HostIds> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    // Lowest free slot first: the lock files stay as few as the most jobs
    // that ever ran at once.
    for slot in 0..SLOTS {
        let uid = BASE + slot;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join(uid.to_string()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                return Ok(HostIds {
                    uid,
                    gid: uid,
                    _lock: file,
                })
            }
            Err(rustix::io::Errno::WOULDBLOCK) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other(format!(
        "all {SLOTS} job identities are in use"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_claims_are_distinct_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = allocate_in(dir.path()).expect("a");
        let b = allocate_in(dir.path()).expect("b");
        assert_ne!(a.uid, b.uid);
        assert!(a.uid >= BASE && a.uid < BASE + SLOTS);
        let uid = a.uid;
        drop(a);
        // The slot is free again: locking its file succeeds.
        let file = File::options()
            .write(true)
            .open(dir.path().join(uid.to_string()))
            .expect("open");
        flock(&file, FlockOperation::NonBlockingLockExclusive).expect("free after drop");
    }
}
