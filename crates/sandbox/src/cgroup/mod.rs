//! cgroups: memory (swap off), cpu quota and pids limits for one job, its
//! limit events, usage samples (cpu, memory, pids, block I/O), freezing,
//! and its teardown, behind one trait with a v1 and a v2 backend (after
//! youki's `libcgroups`).
//!
//! Which backend applies depends on how the host mounts cgroups
//! ([`detect`]): *unified* (cgroup2 on `/sys/fs/cgroup`, most production
//! hosts) uses v2; *hybrid* (tmpfs with a cgroup2 `unified/` beside v1
//! controllers, like this project's CI) and *legacy* (v1 only) use v1.
//!
//! A job's cgroup is named `JOB.RUN.RUNNERPID` under an `airlock` parent,
//! so that a later runner can tell a dead runner's leftovers from a live
//! one's ([`recover`]).

mod v1;
mod v2;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the host mounts cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// cgroup2 only.
    Unified,
    /// cgroup v1 controllers plus an empty cgroup2 hierarchy.
    Hybrid,
    /// cgroup v1 only.
    Legacy,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Layout::Unified => "unified (v2)",
            Layout::Hybrid => "hybrid (v1 controllers)",
            Layout::Legacy => "legacy (v1)",
        })
    }
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Reads the layout of `/sys/fs/cgroup` (statfs magic, as youki does).
pub fn detect() -> io::Result<Layout> {
    detect_at(Path::new("/sys/fs/cgroup"))
}

fn detect_at(root: &Path) -> io::Result<Layout> {
    let magic = |p: &Path| -> io::Result<i64> {
        rustix::fs::statfs(p)
            .map(|s| s.f_type)
            .map_err(io::Error::from)
    };
    match magic(root)? {
        CGROUP2_SUPER_MAGIC => Ok(Layout::Unified),
        TMPFS_MAGIC => {
            let unified = root.join("unified");
            if unified.exists() && magic(&unified)? == CGROUP2_SUPER_MAGIC {
                Ok(Layout::Hybrid)
            } else {
                Ok(Layout::Legacy)
            }
        }
        other => Err(io::Error::other(format!(
            "{} is neither cgroup2 nor tmpfs (statfs magic {other:#x})",
            root.display()
        ))),
    }
}

/// The limits of one job. `None` leaves that resource unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory in bytes; swap is off whenever this is set.
    pub memory: Option<u64>,
    /// CPU quota in cores (0.5 = half a core).
    pub cpus: Option<f64>,
    /// Most processes (and threads) at once.
    pub pids: Option<u64>,
}

/// CFS period used for the CPU quota, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;

impl Limits {
    /// The CPU quota in microseconds per [`CPU_PERIOD_US`].
    pub fn cpu_quota_us(&self) -> Option<u64> {
        self.cpus.map(|c| {
            let us = (c * 100_000.0).round();
            // Bounded by spec validation (0 < cpus <= 1024).
            if us < 1000.0 {
                1000
            } else if us > 1e12 {
                1_000_000_000_000
            } else {
                format!("{us:.0}").parse().unwrap_or(CPU_PERIOD_US)
            }
        })
    }
}

/// What the kernel reports about a job's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Events {
    /// Processes killed by the OOM killer for the memory limit.
    pub oom_kills: u64,
    /// Forks refused because the pids limit was reached.
    pub pids_max: u64,
}

/// What a job's cgroup has used, read at one moment (see
/// [`Cgroup::sample`]). A counter whose controller the host lacks reads 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// CPU time used by every process of the job so far, in nanoseconds
    /// (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`).
    pub cpu_usage_ns: u64,
    /// Memory charged to the job now, page cache included (v1
    /// `memory.usage_in_bytes`, v2 `memory.current`).
    pub memory_bytes: u64,
    /// Processes and threads now (`pids.current`).
    pub pids: u64,
    /// Bytes read from block devices so far (v1 `blkio`, v2 `io.stat`).
    pub io_read_bytes: u64,
    /// Bytes written to block devices so far. On cgroup v1, buffered
    /// writes are written back by the kernel's flusher threads and charged
    /// to the root cgroup: only direct and synchronous writes show here.
    pub io_write_bytes: u64,
}

/// One job's cgroup.
pub trait Cgroup: fmt::Debug + Send + Sync {
    /// Writes the limits (memory with swap off, cpu quota, pids).
    fn set_limits(&self, limits: &Limits) -> io::Result<()>;
    /// Renames the cgroup (in place, under the same parent).
    fn rename(&mut self, name: &str) -> io::Result<()>;
    /// Moves process `pid` into the cgroup.
    fn add_task(&self, pid: i32) -> io::Result<()>;
    /// Limit events so far.
    fn events(&self) -> io::Result<Events>;
    /// What the job has used so far (see [`Sample`]).
    fn sample(&self) -> io::Result<Sample>;
    /// Pids in the cgroup.
    fn procs(&self) -> io::Result<Vec<i32>>;
    /// The job's directory in the hierarchy that holds the perf_event
    /// controller (cgroup2, or a v1 `perf_event` mount), if it has one:
    /// perf events can count the job's processes by it.
    fn perf_dir(&self) -> Option<PathBuf>;
    /// Freezes every process in the cgroup and waits until the kernel
    /// reports the cgroup frozen: none of them runs or forks until
    /// [`thaw`](Cgroup::thaw).
    fn freeze(&self) -> io::Result<()>;
    /// Lets the processes of a frozen cgroup run again.
    fn thaw(&self) -> io::Result<()>;
    /// Kills every process in the cgroup (v2: `cgroup.kill`; v1: freeze,
    /// SIGKILL each, thaw) and waits until it is empty.
    fn kill_all(&self) -> io::Result<()>;
    /// Removes the (empty) cgroup.
    fn remove(&self) -> io::Result<()>;
    /// Whether any of its directories still exists.
    fn exists(&self) -> bool;
    /// Its directories, for reports.
    fn paths(&self) -> Vec<PathBuf>;
}

/// Renames the cgroup directory `old` to `name` and returns its path
/// after. cgroup2 refuses renames (`EPERM`): there the directory keeps
/// its name (a spare's, which names the same runner, so [`recover`] still
/// tells whose it is).
fn rename_dir(old: &Path, name: &str) -> io::Result<PathBuf> {
    let to = old.with_file_name(name);
    match std::fs::rename(old, &to) {
        Ok(()) => Ok(to),
        Err(e)
            if e.raw_os_error() == Some(libc::EPERM)
                && rustix::fs::statfs(old).is_ok_and(|s| s.f_type == CGROUP2_SUPER_MAGIC) =>
        {
            Ok(old.to_path_buf())
        }
        Err(e) => Err(with_path(e, old)),
    }
}

/// Creates the cgroup `name` with `limits` for the current layout.
pub fn create(name: &str, limits: &Limits) -> io::Result<Box<dyn Cgroup>> {
    match detect()? {
        Layout::Unified => Ok(Box::new(v2::V2::create(
            &v2::parent(Path::new("/sys/fs/cgroup"))?,
            name,
            limits,
        )?)),
        Layout::Hybrid | Layout::Legacy => Ok(Box::new(v1::V1::create(name, limits)?)),
    }
}

/// Kills and removes cgroups left by runners that are no longer alive.
/// Returns the names removed.
pub fn recover() -> io::Result<Vec<String>> {
    match detect()? {
        Layout::Unified => v2::recover(&v2::parent(Path::new("/sys/fs/cgroup"))?),
        Layout::Hybrid | Layout::Legacy => v1::recover(),
    }
}

/// A provisional name for the cgroup of a spare sandbox (renamed with
/// [`name_for`] when a job claims it).
pub fn spare_name() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("spare-{n}.0.{}", std::process::id())
}

/// The cgroup name for a job of a run by this process.
pub fn name_for(job: &str, run: i64) -> String {
    format!("{job}.{run}.{}", std::process::id())
}

/// The runner pid encoded in a cgroup name, if it is one of ours.
fn runner_of(name: &str) -> Option<i32> {
    name.rsplit('.').next()?.parse().ok()
}

/// Whether a cgroup named `name` belongs to a runner that is gone.
fn orphaned(name: &str) -> bool {
    match runner_of(name) {
        Some(pid) if u32::try_from(pid).ok() == Some(std::process::id()) => false,
        Some(pid) => !Path::new("/proc").join(pid.to_string()).exists(),
        None => false,
    }
}

/// Reads a file of the cgroup tree, trimmed.
fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| with_path(e, path))
}

/// Writes a cgroup control file.
fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value).map_err(|e| with_path(e, path))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Parses `key value` lines (memory.events, pids.events, oom_control).
fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Reads a counter file holding one number; 0 when the file is missing
/// (its controller is not there), an error otherwise.
fn counter(path: &Path) -> io::Result<u64> {
    match read(path) {
        Ok(text) => text
            .parse()
            .map_err(|_| io::Error::other(format!("{}: not a number: {text:?}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Like [`read`], but a missing file reads empty.
fn read_optional(path: &Path) -> io::Result<String> {
    match read(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        other => other,
    }
}

/// Polls `done` every millisecond for up to a second: the kernel takes a
/// moment to freeze every task of a cgroup.
fn wait_until(what: &str, done: impl Fn() -> io::Result<bool>) -> io::Result<()> {
    for _ in 0..1000 {
        if done()? {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: still not done after a second"),
    ))
}

/// Parses a `cgroup.procs` file.
fn pids_in(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

/// The pids in the cgroup directory `dir` (none if it is gone).
fn procs_of(dir: &Path) -> io::Result<Vec<i32>> {
    match read(&dir.join("cgroup.procs")) {
        Ok(text) => Ok(pids_in(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Waits until `procs` reports no process (killed processes take a moment
/// to leave the cgroup).
fn wait_empty(procs: impl Fn() -> io::Result<Vec<i32>>) -> io::Result<()> {
    for _ in 0..500 {
        if procs()?.is_empty() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    Err(io::Error::other(
        "processes are still in the cgroup after SIGKILL",
    ))
}

/// Removes a cgroup directory, retrying while the kernel finishes
/// releasing its last processes (rmdir fails with EBUSY meanwhile).
fn rmdir(path: &Path) -> io::Result<()> {
    for _ in 0..500 {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(e) => return Err(with_path(e, path)),
        }
    }
    Err(io::Error::other(format!("{}: still busy", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quota() {
        let l = |c| Limits {
            cpus: Some(c),
            ..Limits::default()
        };
        assert_eq!(l(0.5).cpu_quota_us(), Some(50_000));
        assert_eq!(l(1.5).cpu_quota_us(), Some(150_000));
        assert_eq!(l(0.001).cpu_quota_us(), Some(1000));
        assert_eq!(Limits::default().cpu_quota_us(), None);
    }

    #[test]
    fn event_files_parse() {
        let text = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 2\n";
        assert_eq!(keyed(text, "oom_kill"), 2);
        assert_eq!(keyed(text, "max"), 3);
        assert_eq!(keyed(text, "absent"), 0);
        assert_eq!(pids_in("12\n 13\nx\n"), [12, 13]);
    }

    #[test]
    fn counters_read_zero_when_absent_and_fail_when_garbled() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(counter(&dir.path().join("absent")).expect("absent"), 0);
        std::fs::write(dir.path().join("n"), "4096\n").expect("write");
        assert_eq!(counter(&dir.path().join("n")).expect("n"), 4096);
        std::fs::write(dir.path().join("bad"), "max\n").expect("write");
        assert!(counter(&dir.path().join("bad")).is_err());
    }

    #[test]
    fn names_carry_the_runner() {
        let name = name_for("build", 7);
        assert_eq!(runner_of(&name), i32::try_from(std::process::id()).ok());
        assert!(!orphaned(&name));
        assert!(orphaned("build.7.999999999"));
        assert!(!orphaned("not-ours"));
    }

    #[test]
    fn this_host_layout_is_detected() {
        // Whatever it is, it must be one of the three (CI: hybrid).
        let layout = detect().expect("detect");
        assert!(matches!(
            layout,
            Layout::Unified | Layout::Hybrid | Layout::Legacy
        ));
    }
}
