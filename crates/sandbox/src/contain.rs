//! Containment: stopping a job at once and recording what it was running
//! (see [`Killer::contain`](crate::Killer::contain)).
//!
//! With a cgroup: freeze it (nothing in it runs or forks any more), read
//! every process in it, kill them all while frozen, thaw (the killed die),
//! and wait until the cgroup is empty. Without one (a degraded sandbox):
//! read every process in the job's pid namespace, then kill the init,
//! which takes the namespace with it; processes forked between the two
//! are killed but not recorded.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, SystemTime};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_send_signal, Signal};

use crate::cgroup::Cgroup;
use crate::error::SandboxError;
use crate::procfs::{At, JobView, Lookup, NsId, Proc, Reader, Stat};

/// How long containment waits for the init to be gone after the kill.
const INIT_EXIT_WAIT: Duration = Duration::from_secs(2);

/// One process of a job, as containment found it (frozen, with a cgroup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its pid in the job's pid namespace (0 if unknown).
    pub pid: i32,
    /// Its pid in the runner's pid namespace.
    pub host_pid: i32,
    /// Its parent's pid in the job's pid namespace (0 for the init, whose
    /// parent is the runner, or if unknown).
    pub ppid: i32,
    /// Its effective uid inside the job (`u32::MAX` if unknown).
    pub uid: u32,
    /// Its executable's path as the job sees it
    /// ([`INIT_ARGV0`](crate::INIT_ARGV0) for the init); its command name
    /// if the executable could not be read, `?` if nothing could.
    pub path: String,
    /// Its command line (raw: redact before showing).
    pub argv: Vec<Vec<u8>>,
    /// Its state letter as `/proc` gave it just before the freeze: `R`
    /// running, `S` sleeping, `D` in uninterruptible wait, `T` stopped, `Z`
    /// zombie; `?` unknown. A process that started while the cgroup froze
    /// reads `D`, as every frozen process does.
    pub state: char,
    /// Its resident memory.
    pub rss_bytes: u64,
    /// When it started, after the host's boot (clock-tick resolution).
    pub started_after_boot: Duration,
    /// When it started, by the wall clock.
    pub started: SystemTime,
}

/// Freezes, records and kills the job (see the module doc). `cgroup` is
/// the job's, if it has one; `init` its init's host pid and `pidfd` a
/// pidfd of it; `pid_ns` its pid namespace.
pub(crate) fn contain(
    cgroup: Option<&dyn Cgroup>,
    init: i32,
    pidfd: &OwnedFd,
    pid_ns: Option<NsId>,
) -> Result<Vec<ProcessInfo>, SandboxError> {
    let proc = Proc::open().map_err(|e| SandboxError::io("open /proc", e))?;
    let snapshot = match cgroup {
        Some(cg) => {
            // Frozen, every process reads as `D`: their states first.
            let before = states(&proc, &cg.procs().unwrap_or_default());
            // A cgroup that will not freeze (a task stuck in the kernel) is
            // recorded and killed all the same.
            let _ = cg.freeze();
            let pids = cg
                .procs()
                .map_err(|e| SandboxError::Cgroup(e.to_string()))?;
            let mut snapshot = snapshot(&proc, &pids, init, pid_ns);
            for p in &mut snapshot {
                if let Some((_, state)) = before.iter().find(|(pid, _)| *pid == p.host_pid) {
                    p.state = *state;
                }
            }
            let _ = pidfd_send_signal(pidfd, Signal::KILL);
            cg.kill_all()
                .map_err(|e| SandboxError::Cgroup(format!("contain: {e}")))?;
            snapshot
        }
        None => {
            let pids = match pid_ns {
                Some(ns) => walk(&proc, ns),
                None => vec![init],
            };
            let snapshot = snapshot(&proc, &pids, init, pid_ns);
            let _ = pidfd_send_signal(pidfd, Signal::KILL);
            snapshot
        }
    };
    if !exited(pidfd, INIT_EXIT_WAIT) {
        return Err(SandboxError::Io {
            what: "contain the sandbox",
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the sandbox init is still alive after SIGKILL",
            ),
        });
    }
    Ok(snapshot)
}

/// The state letter of each of `pids` (host pids) now.
fn states(proc: &Proc, pids: &[i32]) -> Vec<(i32, char)> {
    let mut reader = Reader::default();
    pids.iter()
        .filter_map(|&pid| {
            let text = reader.read(At::Pid(proc.as_fd(), pid), "stat", 4096).ok()?;
            Some((pid, char::from(Stat::parse(text)?.state)))
        })
        .collect()
}

/// Host pids of the processes in the pid namespace `ns`.
fn walk(proc: &Proc, ns: NsId) -> Vec<i32> {
    let Ok(dir) = rustix::fs::Dir::read_from(proc.as_fd()) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name().to_bytes();
            if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(name).ok()?.parse::<i32>().ok()
        })
        .filter(|&pid| proc.in_ns(pid, ns) == Some(true))
        .collect()
}

/// Reads each of `pids` (host pids of the job's processes), sorted by
/// their pid in the job.
fn snapshot(proc: &Proc, pids: &[i32], init: i32, pid_ns: Option<NsId>) -> Vec<ProcessInfo> {
    let mut reader = Reader::default();
    let open = |pid: i32| -> Option<OwnedFd> {
        match pid_ns {
            Some(ns) => match proc.lookup(pid, ns) {
                Lookup::Ours(dir) => Some(dir),
                _ => None,
            },
            None => proc.open_pid(pid),
        }
    };
    // The uid map and root: the init's, or any process's of the job (they
    // share the user and mount namespaces).
    let job = std::iter::once(init)
        .chain(pids.iter().copied())
        .find_map(|pid| JobView::of_init(open(pid)?.as_fd()).ok())
        .unwrap_or_default();
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let since_boot = Duration::new(
        u64::try_from(boot.tv_sec).unwrap_or(0),
        u32::try_from(boot.tv_nsec).unwrap_or(0),
    );
    let now = SystemTime::now();
    let mut found: Vec<(ProcessInfo, i32)> = Vec::with_capacity(pids.len());
    for &host_pid in pids {
        let Some(dir) = open(host_pid) else {
            continue; // gone
        };
        let Some(seen) = reader.process(At::Dir(dir.as_fd()), &job, true) else {
            continue;
        };
        let start_ticks = reader
            .read(At::Dir(dir.as_fd()), "stat", 4096)
            .ok()
            .and_then(Stat::parse)
            .map_or(0, |s| s.start_ticks);
        let started_after_boot = Duration::from_secs(start_ticks / ticks)
            + Duration::from_nanos((start_ticks % ticks).saturating_mul(1_000_000_000) / ticks);
        let path = match (seen.path, seen.name.is_empty()) {
            (Some(path), _) => path,
            (None, false) => seen.name,
            (None, true) => "?".into(),
        };
        found.push((
            ProcessInfo {
                pid: seen.pid,
                host_pid,
                ppid: 0,
                uid: seen.uid,
                path,
                argv: seen.argv,
                state: seen.state,
                rss_bytes: seen.rss_bytes,
                started_after_boot,
                started: now
                    .checked_sub(since_boot.saturating_sub(started_after_boot))
                    .unwrap_or(now),
            },
            seen.host_ppid,
        ));
    }
    // Parents by the job's pids: every parent but the init's is in the job.
    let job_pid_of: Vec<(i32, i32)> = found.iter().map(|(p, _)| (p.host_pid, p.pid)).collect();
    let mut snapshot: Vec<ProcessInfo> = found
        .into_iter()
        .map(|(mut p, host_ppid)| {
            p.ppid = job_pid_of
                .iter()
                .find(|(host, _)| *host == host_ppid)
                .map_or(0, |(_, pid)| *pid);
            p
        })
        .collect();
    snapshot.sort_by_key(|p| p.pid);
    snapshot
}

/// Whether the process of `pidfd` has exited (waiting up to `timeout`).
fn exited(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let wait = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&wait)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(rustix::io::Errno::INTR) if !left.is_zero() => {}
            Err(_) => return false,
        }
    }
}
