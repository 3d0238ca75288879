//! Every exec of a job, reported as an [`ExecEvent`] (see
//! [`Sandbox::watch_execs`](crate::Sandbox::watch_execs)), from one of three
//! sources ([`ExecSource`]), the first available:
//!
//! - **Perf events** (see `perfwatch.rs`): the kernel records each exec of
//!   the job (its arguments, binary, uid and parent) in the exec'ing
//!   process itself, into ring buffers the watch reads every few
//!   milliseconds. Nothing races the process, and nothing runs per exec
//!   outside the job. Needs root in the initial namespaces and tracefs.
//! - **The kernel's process events connector** (netlink
//!   `NETLINK_CONNECTOR`, `CN_IDX_PROC`): the kernel tells every listener
//!   of every fork, exec and exit of the host, as they happen. It needs
//!   `CAP_NET_ADMIN` in the initial user namespace, and a runner in the
//!   initial pid namespace (the kernel silently sends nothing to any other).
//!   Since Linux 6.6 the socket asks the kernel to send it only forks,
//!   execs and exits; older kernels send every event, and the rest are
//!   ignored here.
//! - **Polling** `/proc` every [`POLL_INTERVAL`] where the connector
//!   cannot be had (a rootless runner, or one in a container). It sees
//!   processes, not execs: a process that starts and ends between two
//!   looks is never reported, and of a process that execs several times
//!   within one interval only the last program is. A process counts as new
//!   when its (pid, start time) was not seen before, and again when its
//!   command name changes (an exec without a fork).
//!
//! Which processes are the job's: those in its pid namespace. The watch
//! keeps the set of the job's processes (its host pids, from the job's
//! processes at the start, then every fork of one of them, minus the
//! exits), so that a process is attributed even when it is gone before it
//! could be read: a program that runs for a few microseconds is still
//! reported (with what could still be read of it). An exec of any other
//! pid costs one `stat` of `/proc/PID/ns/pid`; a fork or exit, a hash
//! lookup. Nothing else of the host is read.
//!
//! What is read of the job's process (executable, command line, status,
//! see `procfs.rs`) is read right after the exec, by a thread at the
//! lowest real-time priority where the runner may have it (see
//! `run_ahead_of_the_job`). But a process can change its command line,
//! or be gone: then the event carries what could be read, the command name
//! instead of the path (it exited), or `?` (it was reaped too). On a loaded
//! host that happens to a few in a hundred of programs that live under a
//! millisecond.
//!
//! The connector's socket can overflow when the host execs faster than
//! the watch reads (a burst, a starved runner): the kernel says so once,
//! then drops every event until the watch has emptied the queue. Once it
//! has, the watch takes the kernel's count of dropped events
//! ([`Sandbox::execs_lost`](crate::Sandbox::execs_lost)) and re-reads the
//! job's processes from `/proc`, reporting those it did not know. Execs
//! lost in an overflow by processes it knew are not reported.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::event::{eventfd, poll, EventfdFlags, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{AddressFamily, SendFlags, SocketFlags, SocketType};

use crate::error::SandboxError;
use crate::procfs::{self, At, JobView, Lookup, NsId, Proc, Reader, Stat};
use crate::teardown::HeldNs;

/// How often the polling source looks at `/proc`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The nice value of a connector watch's thread where it cannot be
/// real-time (see [`run_ahead_of_the_job`]).
const WATCH_NICE: i32 = -10;

/// The connector socket's receive buffer: about 5,000 events of a burst.
const RECEIVE_BUFFER: usize = 4 << 20;

/// One program started in the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    /// The process's pid in the job's pid namespace (0 if it was gone
    /// before it could be read).
    pub pid: i32,
    /// Its pid in the runner's pid namespace.
    pub host_pid: i32,
    /// Its parent's pid in the job's pid namespace (0 if unknown).
    pub ppid: i32,
    /// Its effective uid inside the job (`u32::MAX` if unknown).
    pub uid: u32,
    /// The program's path as the job sees it: from perf events, the path
    /// the job passed to `execve` (`/bin/sh`, a script); from the
    /// connector or polling, the binary it resolved to (`/usr/bin/dash`,
    /// the script's interpreter), or where that could not be read any
    /// more, the process's command name (`comm`, at most 15 bytes, no
    /// `/`), or `?` if nothing could.
    pub path: String,
    /// The command line, as the process had it when it was read (raw:
    /// redact before showing). Empty if it could not be read.
    pub argv: Vec<Vec<u8>>,
    /// Whether `argv` was read at the exec itself (perf events: the
    /// kernel's copy of the new stack), and so is what the program was
    /// started with. If not, it was read from `/proc` afterwards, and a
    /// program that writes over its arguments at once (perl's `$0`) may
    /// have replaced them by then.
    pub argv_at_exec: bool,
    /// The parent's executable path as the job sees it, or its command
    /// name; [`INIT_ARGV0`](crate::INIT_ARGV0) for the sandbox init; empty
    /// if unknown.
    pub parent: String,
    /// When it happened (connector), or when it was first seen (polling).
    pub at: SystemTime,
}

/// Where [`ExecEvent`]s come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecSource {
    /// Perf events on the kernel's exec tracepoint, recorded in the job:
    /// every exec, with the arguments it started with.
    Perf,
    /// The kernel's process events connector: every exec.
    Connector,
    /// Polling `/proc` every [`POLL_INTERVAL`]: processes that live at
    /// least that long.
    Polling,
}

/// Where a sandbox's [`ExecEvent`]s go, in batches in the order of the
/// execs: the perf source hands over every exec of one read of its rings
/// at once, the connector and polling each exec as they see it. It is
/// called on the watch's thread, which runs at real-time priority with the
/// connector: keep it short (hand the batch to a channel); the next exec
/// is read only after it returns.
pub type ExecSink = Box<dyn FnMut(Vec<ExecEvent>) + Send>;

/// The sandbox being watched.
pub(crate) struct Target {
    /// Host pid of its init.
    pub(crate) init: i32,
    /// A pidfd of its init: readable once the init has exited.
    pub(crate) pidfd: OwnedFd,
    /// Its pid namespace, held open while the watch runs (so that no other
    /// namespace can get its inode number meanwhile).
    pub(crate) pid_ns: Arc<HeldNs>,
    /// Its directory in the perf_event cgroup hierarchy, if it has one.
    pub(crate) perf_cgroup: Option<OwnedFd>,
}

/// A running exec watch. Its thread ends, dropping the sink, when the
/// sandbox's init exits or this is dropped.
pub(crate) struct ExecWatch {
    wake: OwnedFd,
    lost: Arc<AtomicU64>,
}

impl std::fmt::Debug for ExecWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecWatch")
            .field("lost", &self.lost())
            .finish_non_exhaustive()
    }
}

impl ExecWatch {
    /// Starts watching `target` with `source`, or the best one available
    /// when `None`. The job's processes at this moment are not reported;
    /// every exec after this returns is.
    pub(crate) fn start(
        target: Target,
        source: Option<ExecSource>,
        sink: ExecSink,
    ) -> Result<(ExecWatch, ExecSource), SandboxError> {
        let proc = Proc::open().map_err(|e| SandboxError::io("open /proc", e))?;
        let ns = target.pid_ns.id();
        let Lookup::Ours(init_dir) = proc.lookup(target.init, ns) else {
            return Err(SandboxError::InitDied(
                "it was gone before the exec watch started".into(),
            ));
        };
        let job = JobView::of_init(init_dir.as_fd())
            .map_err(|e| SandboxError::io("read the sandbox init's uid map and root", e))?;
        drop(init_dir);
        let lost = Arc::new(AtomicU64::new(0));
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| SandboxError::io("create the exec watch's wake fd", e))?;
        let woken = wake
            .try_clone()
            .map_err(|e| SandboxError::io("duplicate the exec watch's wake fd", e))?;
        let name = format!("procwatch-{}", target.init);
        if matches!(source, None | Some(ExecSource::Perf)) {
            let attach = match &target.perf_cgroup {
                Some(dir) => crate::perfwatch::Attach::Cgroup(dir.as_fd()),
                None => crate::perfwatch::Attach::Init,
            };
            match crate::perfwatch::Rings::open(target.pid_ns.fd(), attach) {
                Ok(rings) => {
                    let mut reader = crate::perfwatch::PerfReader::new(
                        rings,
                        proc,
                        job,
                        sink,
                        Arc::clone(&lost),
                    );
                    let stop = Stop {
                        wake: woken,
                        pidfd: target.pidfd,
                    };
                    let pid_ns = target.pid_ns;
                    std::thread::Builder::new()
                        .name(name)
                        .spawn(move || {
                            let _held = pid_ns;
                            yield_to_the_job();
                            loop {
                                let (_, stopped) =
                                    stop.wait(None, Some(crate::perfwatch::READ_INTERVAL));
                                reader.read(stopped);
                                if stopped {
                                    return;
                                }
                            }
                        })
                        .map_err(|e| SandboxError::io("start the exec watch thread", e))?;
                    return Ok((ExecWatch { wake, lost }, ExecSource::Perf));
                }
                Err(e) if source.is_some() => {
                    return Err(SandboxError::io("open perf events on the job's execs", e));
                }
                Err(_) => {}
            }
        }
        let connector = match source {
            Some(ExecSource::Connector) => Some(
                Connector::open()
                    .map_err(|e| SandboxError::io("listen to the process events connector", e))?,
            ),
            Some(ExecSource::Polling) => None,
            Some(ExecSource::Perf) | None => Connector::open().ok(),
        };
        let mut core = Core {
            proc,
            reader: Reader::default(),
            ns,
            job,
            known: HashMap::new(),
            sink,
            lost: Arc::clone(&lost),
            behind: false,
        };
        let stop = Stop {
            wake: woken,
            pidfd: target.pidfd,
        };
        let pid_ns = target.pid_ns;
        let chosen = if connector.is_some() {
            ExecSource::Connector
        } else {
            ExecSource::Polling
        };
        let spawned = match connector {
            Some(connector) => {
                // Subscribed first, then the job's processes read: a fork
                // in between is seen by one or the other.
                core.rescan(false);
                std::thread::Builder::new().name(name).spawn(move || {
                    let _held = pid_ns;
                    run_ahead_of_the_job();
                    core.serve_connector(&connector, &stop);
                })
            }
            None => {
                let mut poller = Poller::new(&core.proc)
                    .map_err(|e| SandboxError::io("read the /proc directory", e))?;
                poller.tick(&mut core, false);
                std::thread::Builder::new().name(name).spawn(move || {
                    let _held = pid_ns;
                    poller.serve(&mut core, &stop);
                })
            }
        };
        spawned.map_err(|e| SandboxError::io("start the exec watch thread", e))?;
        Ok((ExecWatch { wake, lost }, chosen))
    }

    /// Events the kernel dropped because the watch fell behind (forks,
    /// execs and exits alike: at most that many execs went unreported).
    pub(crate) fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for ExecWatch {
    fn drop(&mut self) {
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }
}

/// What ends a watch thread: a write to `wake`, or the init's exit.
struct Stop {
    wake: OwnedFd,
    pidfd: OwnedFd,
}

impl Stop {
    /// Waits up to `timeout` (forever if `None`) for `also` to be readable
    /// or the watch to be stopped. Returns (readable, stopped).
    fn wait(&self, also: Option<&OwnedFd>, timeout: Option<Duration>) -> (bool, bool) {
        let timeout = timeout.map(|t| {
            Timespec::try_from(t).unwrap_or(Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            })
        });
        let mut fds = [
            PollFd::new(&self.wake, PollFlags::IN),
            PollFd::new(&self.pidfd, PollFlags::IN),
            PollFd::new(also.unwrap_or(&self.wake), PollFlags::IN),
        ];
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) => {}
            Err(Errno::INTR) => return (false, false),
            // Cannot wait: stop rather than spin.
            Err(_) => return (false, true),
        }
        let ready = |f: &PollFd<'_>| !f.revents().is_empty();
        let stopped = ready(&fds[0]) || ready(&fds[1]);
        (also.is_some() && ready(&fds[2]), stopped)
    }
}

/// What the watch knows of one of the job's processes.
#[derive(Debug, Clone)]
struct Known {
    /// Host pid of its parent.
    ppid: i32,
    /// Its pid in the job (0 until read).
    pid: i32,
    /// Its executable as the job sees it (inherited at fork).
    exe: Option<Arc<str>>,
}

/// The part of a watch both sources share: telling the job's processes,
/// reading them, and reporting.
struct Core {
    proc: Proc,
    reader: Reader,
    ns: NsId,
    job: JobView,
    /// The job's processes by host pid.
    known: HashMap<i32, Known>,
    sink: ExecSink,
    /// Events the kernel dropped so far.
    lost: Arc<AtomicU64>,
    /// The socket overflowed; not caught up yet.
    behind: bool,
}

impl Core {
    fn on_fork(&mut self, parent_tgid: i32, child_pid: i32, child_tgid: i32) {
        if child_pid != child_tgid {
            return; // a thread
        }
        if let Some(parent) = self.known.get(&parent_tgid) {
            let child = Known {
                ppid: parent_tgid,
                pid: 0,
                exe: parent.exe.clone(),
            };
            self.known.insert(child_tgid, child);
        }
    }

    fn on_exit(&mut self, pid: i32, tgid: i32) {
        if pid == tgid {
            self.known.remove(&tgid);
        }
    }

    fn on_exec(&mut self, tgid: i32, at: SystemTime) {
        if !self.known.contains_key(&tgid) && self.proc.in_ns(tgid, self.ns) != Some(true) {
            // Another namespace's, or gone before it could be told (and
            // not forked from a known process of the job).
            return;
        }
        if let Some(event) = self.describe(tgid, at, false) {
            (self.sink)(vec![event]);
        }
    }

    /// The exec event of the job's process `host_pid`, from what can be
    /// read of it now. With `verify`, first checks that it is the job's
    /// (`None` if not); without, the caller knows: it has just checked, or
    /// the process is a known one's child (its pid cannot have been reused
    /// since, within microseconds).
    fn describe(&mut self, host_pid: i32, at: SystemTime, verify: bool) -> Option<ExecEvent> {
        if verify && self.proc.in_ns(host_pid, self.ns) == Some(false) {
            self.known.remove(&host_pid);
            return None;
        }
        // A short-lived program is gone within a millisecond: no system
        // call before the reads that need not be there.
        let seen = self
            .reader
            .process(At::Pid(self.proc.as_fd(), host_pid), &self.job, true);
        let Some(seen) = seen else {
            // Gone: what the fork told.
            let known = self.known.get(&host_pid).cloned();
            let (pid, host_ppid) = known.as_ref().map_or((0, 0), |k| (k.pid, k.ppid));
            let (ppid, parent) = self.parent(host_ppid);
            return Some(ExecEvent {
                pid,
                host_pid,
                ppid,
                uid: u32::MAX,
                path: "?".into(),
                argv: Vec::new(),
                argv_at_exec: false,
                parent,
                at,
            });
        };
        let path = match (&seen.path, seen.name.is_empty()) {
            (Some(path), _) => path.clone(),
            (None, false) => seen.name.clone(),
            (None, true) => "?".into(),
        };
        self.known.insert(
            host_pid,
            Known {
                ppid: seen.host_ppid,
                pid: seen.pid,
                exe: seen.path.as_deref().map(Arc::from),
            },
        );
        let (ppid, parent) = self.parent(seen.host_ppid);
        Some(ExecEvent {
            pid: seen.pid,
            host_pid,
            ppid,
            uid: seen.uid,
            path,
            argv: seen.argv,
            argv_at_exec: false,
            parent,
            at,
        })
    }

    /// The job pid and executable (or command name) of the host process
    /// `host_ppid`, if it is the job's.
    fn parent(&mut self, host_ppid: i32) -> (i32, String) {
        if host_ppid <= 0 {
            return (0, String::new());
        }
        if let Some(Known {
            pid,
            exe: Some(exe),
            ..
        }) = self.known.get(&host_ppid)
        {
            if *pid != 0 {
                return (*pid, exe.to_string());
            }
        }
        let Lookup::Ours(dir) = self.proc.lookup(host_ppid, self.ns) else {
            return (0, String::new());
        };
        let Some(seen) = self.reader.process(At::Dir(dir.as_fd()), &self.job, false) else {
            return (0, String::new());
        };
        let exe = self.reader.exe(At::Dir(dir.as_fd()), &self.job, seen.pid);
        self.known.insert(
            host_ppid,
            Known {
                ppid: seen.host_ppid,
                pid: seen.pid,
                exe: exe.as_deref().map(Arc::from),
            },
        );
        (seen.pid, exe.unwrap_or(seen.name))
    }

    /// Reads the job's processes from `/proc` anew: forgets those gone,
    /// learns (and with `report`, reports) those it did not know.
    fn rescan(&mut self, report: bool) {
        let Ok(dir) = rustix::fs::Dir::read_from(self.proc.as_fd()) else {
            return;
        };
        let mut found = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = pid_of(entry.file_name().to_bytes()) else {
                continue;
            };
            if self.proc.in_ns(pid, self.ns) == Some(true) {
                found.push(pid);
            }
        }
        self.known.retain(|pid, _| found.contains(pid));
        for pid in found {
            if self.known.contains_key(&pid) {
                continue;
            }
            if report {
                if let Some(event) = self.describe(pid, SystemTime::now(), false) {
                    (self.sink)(vec![event]);
                }
            } else if let Lookup::Ours(dir) = self.proc.lookup(pid, self.ns) {
                if let Some(seen) = self.reader.process(At::Dir(dir.as_fd()), &self.job, false) {
                    let exe = self.reader.exe(At::Dir(dir.as_fd()), &self.job, seen.pid);
                    self.known.insert(
                        pid,
                        Known {
                            ppid: seen.host_ppid,
                            pid: seen.pid,
                            exe: exe.as_deref().map(Arc::from),
                        },
                    );
                }
            }
        }
    }

    /// Reads the connector until the watch stops, then once more.
    fn serve_connector(&mut self, connector: &Connector, stop: &Stop) {
        let mut batch = Batch::new();
        loop {
            let (readable, stopped) = stop.wait(Some(&connector.sock), None);
            if (readable || stopped) && !self.drain(connector, &mut batch) {
                // The socket broke: waiting on it again would spin.
                return;
            }
            if stopped {
                return;
            }
        }
    }

    /// Handles every message queued on the connector socket; `false` if
    /// the socket failed.
    fn drain(&mut self, connector: &Connector, batch: &mut Batch) -> bool {
        loop {
            match batch.receive(connector.sock.as_fd()) {
                Ok(n) => {
                    for i in 0..n {
                        for event in messages(batch.datagram(i)) {
                            match event {
                                ProcEvent::Fork {
                                    parent_tgid,
                                    child_pid,
                                    child_tgid,
                                } => self.on_fork(parent_tgid, child_pid, child_tgid),
                                ProcEvent::Exec { tgid, timestamp_ns } => {
                                    self.on_exec(tgid, wall_clock(timestamp_ns));
                                }
                                ProcEvent::Exit { pid, tgid } => self.on_exit(pid, tgid),
                            }
                        }
                    }
                    if n < BATCH {
                        // Fewer than asked for: nothing more is queued.
                        return self.caught_up(connector);
                    }
                }
                Err(Errno::NOBUFS) => {
                    // The kernel dropped events, and drops every further
                    // one (silently) until the queue is empty: catch up
                    // once it is.
                    self.behind = true;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return self.caught_up(connector),
                Err(_) => return false,
            }
        }
    }

    /// After an overflow, once the queue is empty (events flow again):
    /// counts what was dropped and reads the job's processes anew,
    /// reporting those it did not know. An exec in the short while between
    /// the two may be reported twice.
    fn caught_up(&mut self, connector: &Connector) -> bool {
        if std::mem::take(&mut self.behind) {
            if let Some(dropped) = connector.dropped() {
                self.lost.store(dropped, Ordering::Relaxed);
            }
            self.rescan(true);
        }
        true
    }
}

/// Datagrams taken from the connector per system call.
const BATCH: usize = 16;

/// Room for one datagram: a connector message is under 100 bytes.
const DATAGRAM: usize = 512;

/// Buffers for [`Batch::receive`].
struct Batch {
    bufs: Box<[[u8; DATAGRAM]; BATCH]>,
    lens: [usize; BATCH],
}

impl Batch {
    fn new() -> Batch {
        Batch {
            bufs: Box::new([[0; DATAGRAM]; BATCH]),
            lens: [0; BATCH],
        }
    }

    /// Takes up to [`BATCH`] queued datagrams at once (`recvmmsg`, which
    /// rustix lacks), without waiting: one system call per wake-up where
    /// `recv` needs one per datagram plus the one that finds none left.
    fn receive(&mut self, sock: std::os::fd::BorrowedFd<'_>) -> Result<usize, Errno> {
        use std::os::fd::AsRawFd;
        let mut iovs: [libc::iovec; BATCH] = std::array::from_fn(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        });
        for (iov, buf) in iovs.iter_mut().zip(self.bufs.iter_mut()) {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = DATAGRAM;
        }
        // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (msg, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
            msg.msg_hdr.msg_iov = iov;
            msg.msg_hdr.msg_iovlen = 1;
        }
        let vlen = u32::try_from(BATCH).unwrap_or(1);
        // `msgs` holds BATCH headers, each pointing at one iovec of `iovs`
        // that points at a buffer of `self.bufs`, writable for DATAGRAM
        // bytes; all outlive the call.
        // SAFETY: the kernel writes at most `vlen` headers, and at most
        // each iovec's length into its buffer (all valid, see above).
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Err(Errno::from_io_error(&io::Error::last_os_error()).unwrap_or(Errno::IO));
        };
        for (len, msg) in self.lens.iter_mut().zip(msgs.iter()).take(n) {
            *len = usize::try_from(msg.msg_len).unwrap_or(0).min(DATAGRAM);
        }
        Ok(n.min(BATCH))
    }

    /// The `i`th datagram of the last [`receive`](Batch::receive).
    fn datagram(&self, i: usize) -> &[u8] {
        match (self.bufs.get(i), self.lens.get(i)) {
            (Some(buf), Some(&len)) => buf.get(..len).unwrap_or_default(),
            _ => &[],
        }
    }
}

/// The polling source: what was seen of each pid at the last look.
struct Poller {
    dir: rustix::fs::Dir,
    seen: HashMap<i32, Polled>,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct Polled {
    generation: u64,
    /// `None`: another namespace's process (a process cannot change its pid
    /// namespace, so it is not looked at again while its pid lives).
    ours: Option<Identity>,
}

/// What tells one program of a process from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    start_ticks: u64,
    comm: [u8; 16],
}

impl Poller {
    fn new(proc: &Proc) -> io::Result<Poller> {
        Ok(Poller {
            dir: rustix::fs::Dir::read_from(proc.as_fd())?,
            seen: HashMap::new(),
            generation: 0,
        })
    }

    fn serve(&mut self, core: &mut Core, stop: &Stop) {
        loop {
            let (_, stopped) = stop.wait(None, Some(POLL_INTERVAL));
            if stopped {
                return;
            }
            self.tick(core, true);
        }
    }

    /// One look at `/proc`: reports (with `report`) every process of the
    /// job whose identity is new.
    fn tick(&mut self, core: &mut Core, report: bool) {
        self.generation += 1;
        self.dir.rewind();
        while let Some(Ok(entry)) = self.dir.next() {
            let Some(pid) = pid_of(entry.file_name().to_bytes()) else {
                continue;
            };
            let before = self.seen.get(&pid).copied();
            if let Some(Polled { ours: None, .. }) = before {
                self.seen.insert(
                    pid,
                    Polled {
                        generation: self.generation,
                        ours: None,
                    },
                );
                continue;
            }
            if before.is_none() {
                match core.proc.in_ns(pid, core.ns) {
                    Some(true) => {}
                    Some(false) => {
                        self.seen.insert(
                            pid,
                            Polled {
                                generation: self.generation,
                                ours: None,
                            },
                        );
                        continue;
                    }
                    None => continue, // gone
                }
            }
            let Ok(text) = core
                .reader
                .read(At::Pid(core.proc.as_fd(), pid), "stat", 4096)
            else {
                continue; // gone
            };
            let Some(stat) = Stat::parse(text) else {
                continue;
            };
            let mut comm = [0u8; 16];
            for (to, from) in comm.iter_mut().zip(stat.comm) {
                *to = *from;
            }
            let identity = Identity {
                start_ticks: stat.start_ticks,
                comm,
            };
            let changed = before.and_then(|b| b.ours) != Some(identity);
            let mut ours = Some(identity);
            if changed && report {
                // The pid may have gone to another namespace's process.
                match core.describe(pid, SystemTime::now(), true) {
                    Some(event) => (core.sink)(vec![event]),
                    // The pid went to another namespace's process.
                    None => ours = None,
                }
            }
            self.seen.insert(
                pid,
                Polled {
                    generation: self.generation,
                    ours,
                },
            );
        }
        let generation = self.generation;
        self.seen.retain(|_, p| p.generation == generation);
        let seen = &self.seen;
        core.known
            .retain(|pid, _| seen.get(pid).is_some_and(|p| p.ours.is_some()));
    }
}

/// Gives the calling (connector watch) thread the lowest real-time
/// priority, else a nice value of [`WATCH_NICE`].
///
/// A program like `true` lives for half a millisecond after its exec; to
/// read its command line the watch must run within that. A woken thread of
/// a better nice value still waits for the running one's time slice (up to
/// several milliseconds, under load), a real-time one does not. It costs
/// the host little: the thread runs only when an event arrives, never
/// spins (every error ends it), and does a few dozen microseconds of work
/// per exec of the job (a hash lookup per fork or exit of the host).
fn run_ahead_of_the_job() {
    let param = libc::sched_param { sched_priority: 1 };
    // Whatever the sink starts (a thread, a hook's process) runs as usual.
    let policy = libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK;
    // SAFETY: sched_setscheduler reads one sched_param from a valid
    // pointer; pid 0 is the calling thread. Failure (no CAP_SYS_NICE, or a
    // real-time budget of 0 in this cgroup) changes nothing.
    let realtime = unsafe { libc::sched_setscheduler(0, policy, &param) } == 0;
    if !realtime {
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), WATCH_NICE);
    }
}

/// Makes the calling thread a batch thread (`SCHED_BATCH`, same nice
/// value): it gets its fair share of CPU, so a job that keeps every CPU
/// busy cannot starve it, but its wake-ups never preempt the task running
/// on a CPU; it takes an idle CPU or waits for the running task's slice to
/// end (a few milliseconds). For the threads that watch a job without
/// racing it (the perf source's reader, the engine's monitor): they wake
/// every few milliseconds and would otherwise cut into the job's time.
/// (Nice 19 on top was tried: no better.)
pub fn yield_to_the_job() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads one sched_param from a valid
    // pointer; pid 0 is the calling thread. On failure nothing changes.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
}

/// A pid from a `/proc` entry name.
fn pid_of(name: &[u8]) -> Option<i32> {
    if name.is_empty() || !name.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(name).ok()?.parse().ok()
}

/// The wall-clock time of a connector timestamp (`CLOCK_MONOTONIC`).
pub(crate) fn wall_clock(timestamp_ns: u64) -> SystemTime {
    let now = SystemTime::now();
    let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let mono_ns = u64::try_from(mono.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(mono.tv_nsec).unwrap_or(0));
    now.checked_sub(Duration::from_nanos(mono_ns.saturating_sub(timestamp_ns)))
        .unwrap_or(now)
}

// The connector's wire format (linux/connector.h, linux/cn_proc.h).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const NLMSG_DONE: u16 = 3;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;

/// Which source a watch started now would use, and why not the better
/// ones (for `airlock doctor`).
pub fn available_source() -> (ExecSource, Vec<String>) {
    let mut why_not = Vec::new();
    match crate::perfwatch::Rings::available() {
        Ok(()) => return (ExecSource::Perf, why_not),
        Err(e) => why_not.push(format!("no perf events: {e}")),
    }
    match Connector::open() {
        Ok(_) => (ExecSource::Connector, why_not),
        Err(e) => {
            why_not.push(format!("no process events connector: {e}"));
            (ExecSource::Polling, why_not)
        }
    }
}

/// The process events connector, subscribed.
struct Connector {
    sock: OwnedFd,
}

impl Connector {
    fn open() -> io::Result<Connector> {
        let caps = rustix::thread::capabilities(None)?;
        if !caps
            .effective
            .contains(rustix::thread::CapabilitySet::NET_ADMIN)
        {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the process events connector needs CAP_NET_ADMIN",
            ));
        }
        // The kernel sends events only to listeners in the initial pid and
        // user namespaces, and silently ignores the others' subscriptions.
        let pid_ns = procfs::ns_id(rustix::fs::CWD, c"/proc/self/ns/pid")?;
        let user_ns = procfs::ns_id(rustix::fs::CWD, c"/proc/self/ns/user")?;
        if pid_ns.ino != procfs::INIT_PID_NS_INO || user_ns.ino != procfs::INIT_USER_NS_INO {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the process events connector serves only the initial namespaces",
            ));
        }
        let sock = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(rustix::net::netlink::CONNECTOR),
        )?;
        if rustix::net::sockopt::set_socket_recv_buffer_size_force(&sock, RECEIVE_BUFFER).is_err() {
            // Not allowed past net.core.rmem_max: as much as it lets.
            let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&sock, RECEIVE_BUFFER);
        }
        rustix::net::bind(&sock, &SocketAddrNetlink::new(0, CN_IDX_PROC))?;
        let connector = Connector { sock };
        // Every event (any kernel), then only forks, execs and exits
        // (Linux 6.6 and later; older ones ignore this message).
        connector.control(&PROC_CN_MCAST_LISTEN.to_ne_bytes())?;
        let mut filtered = [0u8; 8];
        filtered[..4].copy_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
        filtered[4..]
            .copy_from_slice(&(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT).to_ne_bytes());
        connector.control(&filtered)?;
        Ok(connector)
    }

    /// How many events the kernel dropped for this socket so far
    /// (`SO_MEMINFO`, which rustix lacks).
    fn dropped(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        // asm-generic/socket.h, which x86_64 and arm64 use.
        const SO_MEMINFO: libc::c_int = 55;
        let mut info = [0u32; 16];
        let mut len = libc::socklen_t::try_from(std::mem::size_of_val(&info)).ok()?;
        // SAFETY: getsockopt writes at most `len` bytes to `info`, a
        // writable buffer of that many bytes, and the length it wrote to
        // `len`.
        let got = unsafe {
            libc::getsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_MEMINFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let drops = usize::try_from(libc::SK_MEMINFO_DROPS).ok()?;
        let written = usize::try_from(len).ok()? / std::mem::size_of::<u32>();
        (got == 0 && drops < written)
            .then(|| info.get(drops).copied().map(u64::from))
            .flatten()
    }

    /// Sends the connector one control message.
    fn control(&self, payload: &[u8]) -> io::Result<()> {
        let mut msg = [0u8; NLMSG_HDRLEN + CN_MSG_LEN + 8];
        let len = NLMSG_HDRLEN + CN_MSG_LEN + payload.len();
        let (Ok(total), Ok(data_len)) = (u32::try_from(len), u16::try_from(payload.len())) else {
            return Err(io::Error::other("connector message too long"));
        };
        let msg = msg
            .get_mut(..len)
            .ok_or_else(|| io::Error::other("connector message too long"))?;
        msg[0..4].copy_from_slice(&total.to_ne_bytes());
        msg[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        // flags, seq, pid: 0.
        let cn = NLMSG_HDRLEN;
        msg[cn..cn + 4].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
        msg[cn + 4..cn + 8].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
        // seq, ack: 0.
        msg[cn + 16..cn + 18].copy_from_slice(&data_len.to_ne_bytes());
        msg[cn + CN_MSG_LEN..].copy_from_slice(payload);
        rustix::net::send(&self.sock, msg, SendFlags::empty())?;
        Ok(())
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        // The kernel counts listeners, and skips building events while
        // there are none: say goodbye rather than just close.
        let _ = self.control(&PROC_CN_MCAST_IGNORE.to_ne_bytes());
    }
}

/// One event the watch acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcEvent {
    Fork {
        parent_tgid: i32,
        child_pid: i32,
        child_tgid: i32,
    },
    Exec {
        tgid: i32,
        timestamp_ns: u64,
    },
    Exit {
        pid: i32,
        tgid: i32,
    },
}

/// The events in one datagram from the connector (netlink messages, each a
/// `cn_msg` holding a `proc_event`). Anything malformed or of another kind
/// is skipped.
fn messages(buf: &[u8]) -> impl Iterator<Item = ProcEvent> + '_ {
    let mut rest = buf;
    std::iter::from_fn(move || loop {
        let len = usize::try_from(u32_at(rest, 0)?).ok()?;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return None;
        }
        let msg = rest.get(..len)?;
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
        if let Some(event) = proc_event(msg.get(NLMSG_HDRLEN..)?) {
            return Some(event);
        }
    })
}

/// The event in one `cn_msg`.
fn proc_event(cn: &[u8]) -> Option<ProcEvent> {
    if u32_at(cn, 0)? != CN_IDX_PROC || u32_at(cn, 4)? != CN_VAL_PROC {
        return None;
    }
    let data_len = usize::from(u16::from_ne_bytes(cn.get(16..18)?.try_into().ok()?));
    let ev = cn.get(CN_MSG_LEN..CN_MSG_LEN + data_len)?;
    // struct proc_event: what, cpu, timestamp_ns, then the event's data.
    let what = u32_at(ev, 0)?;
    let timestamp_ns = u64::from_ne_bytes(ev.get(8..16)?.try_into().ok()?);
    let pid = |at: usize| i32_at(ev, 16 + at);
    match what {
        PROC_EVENT_FORK => Some(ProcEvent::Fork {
            parent_tgid: pid(4)?,
            child_pid: pid(8)?,
            child_tgid: pid(12)?,
        }),
        PROC_EVENT_EXEC => Some(ProcEvent::Exec {
            tgid: pid(4)?,
            timestamp_ns,
        }),
        PROC_EVENT_EXIT => Some(ProcEvent::Exit {
            pid: pid(0)?,
            tgid: pid(4)?,
        }),
        _ => None,
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn i32_at(b: &[u8], at: usize) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A netlink message as the connector sends it.
    fn message(what: u32, data: &[i32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&0u32.to_ne_bytes());
        ev.extend_from_slice(&123_456_789u64.to_ne_bytes());
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        let mut cn = Vec::new();
        cn.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        cn.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        cn.extend_from_slice(&[0; 8]);
        cn.extend_from_slice(&u16::try_from(ev.len()).expect("fits").to_ne_bytes());
        cn.extend_from_slice(&[0; 2]);
        cn.extend_from_slice(&ev);
        let mut msg = Vec::new();
        let len = u32::try_from(NLMSG_HDRLEN + cn.len()).expect("fits");
        msg.extend_from_slice(&len.to_ne_bytes());
        msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        msg.extend_from_slice(&[0; 10]);
        msg.extend_from_slice(&cn);
        while msg.len() % 4 != 0 {
            msg.push(0);
        }
        msg
    }

    #[test]
    fn connector_messages_parse() {
        let mut buf = message(PROC_EVENT_FORK, &[10, 10, 11, 11]);
        buf.extend(message(PROC_EVENT_EXEC, &[11, 11]));
        // A uid change: skipped.
        buf.extend(message(0x4, &[11, 11, 0, 0]));
        buf.extend(message(PROC_EVENT_EXIT, &[12, 11, 0, 9, 10, 10]));
        let events: Vec<ProcEvent> = messages(&buf).collect();
        assert_eq!(
            events,
            [
                ProcEvent::Fork {
                    parent_tgid: 10,
                    child_pid: 11,
                    child_tgid: 11
                },
                ProcEvent::Exec {
                    tgid: 11,
                    timestamp_ns: 123_456_789
                },
                ProcEvent::Exit { pid: 12, tgid: 11 },
            ]
        );
    }

    #[test]
    fn malformed_messages_end_the_datagram() {
        let good = message(PROC_EVENT_EXEC, &[5, 5]);
        // Cut short, a length past the end, another connector's message.
        assert_eq!(messages(&good[..good.len() - 8]).count(), 0);
        let mut long = good.clone();
        long[0] = 0xff;
        assert_eq!(messages(&long).count(), 0);
        let mut other = good.clone();
        other[NLMSG_HDRLEN] = 9;
        assert_eq!(messages(&other).count(), 0);
        assert_eq!(messages(&[]).count(), 0);
        assert_eq!(messages(&good).count(), 1);
    }

    #[test]
    fn proc_entry_names_that_are_pids() {
        assert_eq!(pid_of(b"4242"), Some(4242));
        for name in [&b"self"[..], b"", b"-1", b"12a", b"99999999999"] {
            assert_eq!(pid_of(name), None, "{name:?}");
        }
    }

    #[test]
    fn connector_timestamps_become_wall_clock_times() {
        let mono = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let now_ns = u64::try_from(mono.tv_sec).expect("positive") * 1_000_000_000
            + u64::try_from(mono.tv_nsec).expect("positive");
        let at = wall_clock(now_ns - 2_000_000_000);
        let ago = SystemTime::now().duration_since(at).expect("in the past");
        assert!(
            ago >= Duration::from_secs(2) && ago < Duration::from_secs(3),
            "{ago:?}"
        );
    }
}
