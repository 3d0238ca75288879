//! The job's execs recorded by the kernel itself, as they happen, through
//! perf events ([`ExecSource::Perf`](crate::ExecSource::Perf)): the
//! preferred source of [`procwatch`](crate::procwatch).
//!
//! One perf event per CPU on the `sched:sched_process_exec` tracepoint,
//! counting the job's cgroup (its directory in the perf_event hierarchy,
//! see [`Cgroup::perf_dir`](crate::cgroup::Cgroup::perf_dir)), so that the
//! kernel records every exec of the job and nothing else of the host. A
//! sandbox without a cgroup gets events attached to its init with
//! `inherit` instead, which follow every process the init forks; they cost
//! the job more (each fork copies them, each context switch switches
//! them). At each exec the kernel, in the exec'ing process and before it
//! runs an instruction of the new program, writes a record into a ring
//! buffer the runner has mapped:
//!
//! - the file name given to `execve` (the tracepoint's `filename`: the
//!   path the job ran, as it named it, `/bin/sh` rather than the
//!   `/usr/bin/dash` it links to, a script rather than its interpreter)
//!   and the process's host pid (its `pid`);
//! - its pid, from the event's own pid namespace: the events are opened
//!   by a short-lived helper process in the job's pid namespace (see
//!   [`open_in`]), so these are the job's pids;
//! - the new program's stack pointer and the first [`STACK_BYTES`] of its
//!   stack: `argc`, the argument and environment pointers, the auxiliary
//!   vector (with `AT_EUID`, the uid inside the job) and, above them, the
//!   argument strings. The arguments are those the program was started
//!   with: read before it could rewrite them, and read even when it lives
//!   for a microsecond. (The kernel's copy stops at the first page of the
//!   stack that was never touched: rarely, the random gap between the
//!   auxiliary vector and the strings holds one.)
//!
//! Beside the samples, the same rings get the job's forks and exits: the
//! tree, for each exec's parent.
//!
//! Nothing wakes the watch per exec: it reads the rings every
//! [`READ_INTERVAL`] (and the kernel loses nothing unless a ring fills in
//! that time: `PERF_RECORD_LOST` counts, see
//! [`Sandbox::execs_lost`](crate::Sandbox::execs_lost)). The cost to the
//! job is the kernel's copy of a record at each exec, fork and exit, a few
//! microseconds, in the job's own time; the watch's reading is batched,
//! off the job's critical path. Where the arguments are not in the copy (a
//! huge environment or command line, an untouched page), the watch reads
//! `/proc/PID/cmdline` instead if the process is still there, and reports
//! the exec without arguments if not.
//!
//! Needs `CAP_PERFMON` (or `CAP_SYS_ADMIN`) in the initial user namespace,
//! `CAP_SYS_ADMIN` to enter the job's pid namespace, and tracefs for the
//! tracepoint's id and record layout (where the host has not mounted it,
//! a thread mounts it in a mount namespace of its own). Without them the
//! watch falls back to the process events connector.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use perf_event_open_sys::bindings as perf;

use crate::procfs::{At, JobView, Proc, Reader};
use crate::procwatch::{ExecEvent, ExecSink};

/// How often the watch reads the rings.
pub const READ_INTERVAL: Duration = Duration::from_millis(5);

/// Bytes of a new program's stack copied at its exec. The kernel puts
/// the argument strings up to 8 KiB (a random gap) above the pointers and
/// the auxiliary vector; this leaves room for the pointers of a few
/// hundred arguments and environment variables and about 7 KiB of
/// argument strings.
pub const STACK_BYTES: u32 = 16 << 10;

/// The rings of a job take at most this much memory in all...
const RINGS_BYTES: usize = 8 << 20;
/// ...and each at least this (about 15 execs) and at most 1 MiB.
const RING_MIN: usize = 256 << 10;
const RING_MAX: usize = 1 << 20;

/// Where tracefs may be mounted.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracepoint, as this kernel lays out its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tracepoint {
    id: u64,
    /// Offset of the `__data_loc` word of `filename`.
    filename: usize,
    /// Offset of `pid` (the host pid, 4 bytes).
    pid: usize,
}

impl Tracepoint {
    /// Reads `sched:sched_process_exec`'s id and format from tracefs;
    /// where the host has not mounted tracefs, from a private mount of it
    /// (see [`Tracepoint::find_unmounted`]). Read once per process.
    pub(crate) fn find() -> io::Result<Tracepoint> {
        static FOUND: std::sync::OnceLock<Result<Tracepoint, (io::ErrorKind, String)>> =
            std::sync::OnceLock::new();
        FOUND
            .get_or_init(|| {
                Tracepoint::read_at(&TRACEFS)
                    .or_else(|_| Tracepoint::find_unmounted())
                    .map_err(|e| (e.kind(), e.to_string()))
            })
            .clone()
            .map_err(|(kind, message)| io::Error::new(kind, message))
    }

    /// From the first of `roots` that has the tracepoint.
    fn read_at(roots: &[&str]) -> io::Result<Tracepoint> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "tracefs is not mounted");
        for root in roots {
            let dir = format!("{root}/events/sched/sched_process_exec");
            let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}"));
            match (read("id"), read("format")) {
                (Ok(id), Ok(format)) => {
                    let bad = |what: &str| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{dir}/{what} is not as expected"),
                        )
                    };
                    let id = id.trim().parse().map_err(|_| bad("id"))?;
                    let filename = field(&format, "filename", 4).ok_or_else(|| bad("format"))?;
                    let pid = field(&format, "pid", 4).ok_or_else(|| bad("format"))?;
                    return Ok(Tracepoint { id, filename, pid });
                }
                (Err(e), _) | (_, Err(e)) => last = e,
            }
        }
        Err(last)
    }

    /// Mounts tracefs where only a thread of ours sees it: the thread
    /// takes a mount namespace of its own (`unshare(CLONE_NEWNS)` applies
    /// to the calling thread), makes it private, mounts tracefs over
    /// `/sys/kernel/tracing` there, reads, and ends, and its namespace with
    /// it. The host's mounts are not touched.
    fn find_unmounted() -> io::Result<Tracepoint> {
        std::thread::Builder::new()
            .name("tracefs".into())
            .spawn(|| {
                // SAFETY: only the mount namespace (and with it this
                // thread's filesystem context) is unshared, for this thread
                // alone, which ends right after.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
                rustix::mount::mount_change(
                    "/",
                    rustix::mount::MountPropagationFlags::PRIVATE
                        | rustix::mount::MountPropagationFlags::REC,
                )?;
                rustix::mount::mount(
                    "tracefs",
                    TRACEFS[0],
                    "tracefs",
                    rustix::mount::MountFlags::NOSUID
                        | rustix::mount::MountFlags::NODEV
                        | rustix::mount::MountFlags::NOEXEC,
                    None,
                )?;
                Tracepoint::read_at(&TRACEFS[..1])
            })?
            .join()
            .map_err(|_| io::Error::other("the tracefs thread panicked"))?
    }
}

/// The offset of field `name` of `size` bytes in a tracepoint's format
/// file (`field:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;`).
fn field(format: &str, name: &str, size: usize) -> Option<usize> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let decl = parts.next()?.strip_prefix("field:")?;
        if decl.rsplit(|c: char| c.is_whitespace()).next()? != name {
            return None;
        }
        let mut offset = None;
        let mut found_size: Option<usize> = None;
        for part in parts {
            if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                found_size = v.parse().ok();
            }
        }
        (found_size? == size).then_some(offset?)
    })
}

/// The online CPUs (`/sys/devices/system/cpu/online`: `0-3,6`).
fn online_cpus() -> io::Result<Vec<i32>> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let mut cpus = Vec::new();
    for range in text.trim().split(',').filter(|r| !r.is_empty()) {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("CPU list {text:?}"));
        let (a, b) = range.split_once('-').unwrap_or((range, range));
        let (a, b): (i32, i32) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

/// The event's attributes: the tracepoint, sampled at every hit, with
/// the job's pid, the time (`CLOCK_MONOTONIC`), the raw record, the user
/// stack pointer and stack; forks and exits beside; with `inherit`,
/// inherited by every child (attached to a process, not a cgroup).
fn attributes(tracepoint: &Tracepoint, inherit: bool) -> perf::perf_event_attr {
    let mut attr = perf::perf_event_attr {
        size: u32::try_from(std::mem::size_of::<perf::perf_event_attr>()).unwrap_or(0),
        type_: perf::PERF_TYPE_TRACEPOINT,
        config: tracepoint.id,
        sample_type: u64::from(
            perf::PERF_SAMPLE_TID
                | perf::PERF_SAMPLE_TIME
                | perf::PERF_SAMPLE_RAW
                | perf::PERF_SAMPLE_REGS_USER
                | perf::PERF_SAMPLE_STACK_USER,
        ),
        sample_regs_user: 1 << perf::PERF_REG_X86_SP,
        sample_stack_user: STACK_BYTES,
        // The tracepoint may not use CLOCK_REALTIME (not NMI-safe).
        clockid: libc::CLOCK_MONOTONIC,
        ..Default::default()
    };
    attr.__bindgen_anon_1.sample_period = 1;
    attr.set_inherit(u64::from(inherit));
    attr.set_task(1);
    attr.set_sample_id_all(1);
    attr.set_use_clockid(1);
    attr
}

/// What the events count: the processes of a cgroup, or the init and
/// every process it forks from now on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Attach<'a> {
    /// The job's directory in the perf_event cgroup hierarchy: one event
    /// per CPU, filtered by the kernel at each hit; nothing to copy at a
    /// fork.
    Cgroup(BorrowedFd<'a>),
    /// Inherited events on the init: each fork copies the events into the
    /// child, and each context switch of the job switches them (dearer:
    /// for a job without a cgroup).
    Init,
}

/// Opens the events for every CPU in `cpus`, attached to `attach` (the
/// init is pid 1 of the pid namespace `pid_ns`) with `attr`, from a helper
/// process in that namespace, so that the records carry the job's pids
/// (an event gives pids as its opener's namespace sees them).
///
/// The runner forks a child that enters the namespace (`setns` applies to
/// the caller's children only) and forks again; the grandchild, pid N of
/// the job for a moment, still root in the initial user namespace, opens
/// the events and sends them back over a socket pair, then both exit.
/// Between the forks and their exits only system calls run: no
/// allocation, no lock (the runner is multi-threaded).
fn open_in(
    pid_ns: BorrowedFd<'_>,
    attach: Attach<'_>,
    attr: &perf::perf_event_attr,
    cpus: &[i32],
) -> io::Result<Vec<OwnedFd>> {
    use rustix::net::{
        recvmsg, socketpair, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
        SocketFlags, SocketType,
    };
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // One c_int per CPU (a CPU number is an i32, the size of an fd).
    let fd_bytes = std::mem::size_of_val(cpus);
    let fd_len = u32::try_from(fd_bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many CPUs"))?;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = usize::try_from(unsafe { libc::CMSG_SPACE(fd_len) }).unwrap_or(0);
    // Everything the helper touches is made before the fork.
    let (target, flags) = match attach {
        Attach::Cgroup(dir) => (dir.as_raw_fd(), perf::PERF_FLAG_PID_CGROUP),
        Attach::Init => (1, 0),
    };
    let mut helper = Helper {
        attr: *attr,
        target,
        flags: libc::c_ulong::from(perf::PERF_FLAG_FD_CLOEXEC | flags),
        pid_ns: pid_ns.as_raw_fd(),
        sock: theirs.as_raw_fd(),
        cpus: cpus.to_vec(),
        fds: vec![-1; cpus.len()],
        control: vec![0u8; space],
        fd_len,
    };
    // SAFETY: fork in a multi-threaded process: the child only makes
    // system calls (see Helper::run) and leaves with _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // SAFETY: in the forked child, as Helper::run requires.
        let code = unsafe { helper.run() };
        // SAFETY: _exit ends the child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(code) };
    }
    drop(theirs);
    if child < 0 {
        return Err(io::Error::last_os_error());
    }
    let received = (|| {
        let mut ready = [rustix::event::PollFd::new(
            &ours,
            rustix::event::PollFlags::IN,
        )];
        let timeout = rustix::event::Timespec {
            tv_sec: 5,
            tv_nsec: 0,
        };
        if rustix::event::poll(&mut ready, Some(&timeout))? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the perf helper did not answer within 5 s",
            ));
        }
        let mut errno = [0u8; 4];
        let mut space =
            vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(cpus.len()))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [io::IoSliceMut::new(&mut errno)];
        let got = recvmsg(&ours, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
        let mut fds = Vec::new();
        for message in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = message {
                fds.extend(rights);
            }
        }
        let errno = i32::from_ne_bytes(errno);
        if got.bytes != 4 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the perf helper ended without an answer",
            ));
        }
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno));
        }
        if fds.len() != cpus.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the perf helper sent {} events for {} CPUs",
                    fds.len(),
                    cpus.len()
                ),
            ));
        }
        Ok(fds)
    })();
    reap(child);
    received
}

/// Waits for our own child `pid` to end (retrying when a signal
/// interrupts), so that it leaves no zombie.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: waitpid on our own child; `status` is a valid int. Only
    // system calls: also safe in a forked child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
}

/// What the helper process needs, prepared before the fork.
struct Helper {
    attr: perf::perf_event_attr,
    /// The cgroup's fd, or pid 1.
    target: libc::c_int,
    flags: libc::c_ulong,
    pid_ns: libc::c_int,
    sock: libc::c_int,
    cpus: Vec<i32>,
    fds: Vec<libc::c_int>,
    control: Vec<u8>,
    fd_len: u32,
}

impl Helper {
    /// The forked child's work; returns its exit code.
    ///
    /// # Safety
    ///
    /// Only in a child just forked from `open_in`: it makes system calls
    /// on the prepared buffers and nothing else.
    unsafe fn run(&mut self) -> libc::c_int {
        // SAFETY: setns on an fd we hold; affects only our children.
        if unsafe { libc::setns(self.pid_ns, libc::CLONE_NEWPID) } != 0 {
            return self.answer(errno());
        }
        // SAFETY: as in open_in; this child is single-threaded.
        let grandchild = unsafe { libc::fork() };
        if grandchild < 0 {
            return self.answer(errno());
        }
        if grandchild > 0 {
            reap(grandchild);
            return 0;
        }
        // The grandchild: in the job's pid namespace, where its init is 1.
        // The events' pids are as this namespace sees them.
        let mut failed = 0;
        for (fd, &cpu) in self.fds.iter_mut().zip(self.cpus.iter()) {
            // SAFETY: `attr` is a valid perf_event_attr of its own size;
            // the kernel reads it (and may write its size back).
            *fd = unsafe {
                perf_event_open_sys::perf_event_open(
                    &mut self.attr,
                    self.target,
                    cpu,
                    -1,
                    self.flags,
                )
            };
            if *fd < 0 {
                failed = errno();
                break;
            }
        }
        // SAFETY: _exit as in open_in.
        unsafe { libc::_exit(self.answer(failed)) }
    }

    /// Sends `failed` (an errno, 0 for success) and, on success, the
    /// events. Returns the exit code.
    fn answer(&mut self, failed: libc::c_int) -> libc::c_int {
        let mut data = failed.to_ne_bytes();
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: msghdr is plain data; all-zero is an empty header.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if failed == 0 && !self.fds.is_empty() {
            msg.msg_control = self.control.as_mut_ptr().cast();
            msg.msg_controllen = self.control.len();
            // SAFETY: msg_control points at `control`, CMSG_SPACE(fd_len)
            // bytes (open_in), room for one header and the fds.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&msg);
                (*cmsg).cmsg_level = libc::SOL_SOCKET;
                (*cmsg).cmsg_type = libc::SCM_RIGHTS;
                (*cmsg).cmsg_len = libc::CMSG_LEN(self.fd_len) as usize;
                std::ptr::copy_nonoverlapping(
                    self.fds.as_ptr().cast::<u8>(),
                    libc::CMSG_DATA(cmsg),
                    self.fd_len as usize,
                );
            }
        }
        // SAFETY: every pointer in `msg` is valid for the call.
        let sent = unsafe { libc::sendmsg(self.sock, &msg, 0) };
        i32::from(sent < 0)
    }
}

fn errno() -> libc::c_int {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// One CPU's ring buffer, mapped.
struct Ring {
    /// The event: kept open as long as its mapping.
    _fd: OwnedFd,
    base: *mut u8,
    len: usize,
    data_offset: usize,
    data_size: usize,
}

// SAFETY: the mapping belongs to this Ring alone; it is only read through
// `&mut self` (and the kernel).
unsafe impl Send for Ring {}

impl Ring {
    fn map(fd: OwnedFd, data_bytes: usize) -> io::Result<Ring> {
        let page = rustix::param::page_size();
        let len = page + data_bytes;
        // SAFETY: a fresh shared mapping of the event's ring; the kernel
        // checks the fd and the length (one page plus a power of two).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = Ring {
            _fd: fd,
            base: base.cast(),
            len,
            data_offset: page,
            data_size: data_bytes,
        };
        // SAFETY: the first page is the kernel's perf_event_mmap_page.
        let (offset, size) = unsafe {
            let meta = ring.base.cast::<perf::perf_event_mmap_page>();
            (
                std::ptr::read_volatile(std::ptr::addr_of!((*meta).data_offset)),
                std::ptr::read_volatile(std::ptr::addr_of!((*meta).data_size)),
            )
        };
        // Kernels since 4.1 say where the data is; older ones put it after
        // the first page.
        if size != 0 {
            ring.data_offset = usize::try_from(offset).unwrap_or(page);
            ring.data_size = usize::try_from(size).unwrap_or(data_bytes);
        }
        if ring.data_offset + ring.data_size > len || !ring.data_size.is_power_of_two() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unexpected perf ring layout",
            ));
        }
        Ok(ring)
    }

    fn head(&self) -> &AtomicU64 {
        // SAFETY: data_head is an aligned u64 in the mapped first page,
        // which lives as long as self; the kernel writes it, we read it
        // atomically.
        unsafe {
            let meta = self.base.cast::<perf::perf_event_mmap_page>();
            &*std::ptr::addr_of!((*meta).data_head).cast::<AtomicU64>()
        }
    }

    fn tail(&self) -> &AtomicU64 {
        // SAFETY: as head(); data_tail is ours to write.
        unsafe {
            let meta = self.base.cast::<perf::perf_event_mmap_page>();
            &*std::ptr::addr_of!((*meta).data_tail).cast::<AtomicU64>()
        }
    }

    /// The ring's bytes `at..at + len` (within the data area, not
    /// wrapping).
    fn bytes(&self, at: usize, len: usize) -> &[u8] {
        debug_assert!(at + len <= self.data_size);
        // Only asked for records between tail and head, which the kernel
        // does not write until we move tail past them.
        // SAFETY: the range lies within the data area (mapped, see above).
        unsafe { std::slice::from_raw_parts(self.base.add(self.data_offset + at), len) }
    }

    /// Copies `out.len()` bytes of the ring from `at`, wrapping.
    fn copy_out(&self, at: usize, out: &mut [u8]) {
        let first = wrap_split(at, out.len(), self.data_size);
        out[..first].copy_from_slice(self.bytes(at, first));
        let rest = out.len() - first;
        out[first..].copy_from_slice(self.bytes(0, rest));
    }

    /// Calls `each` with every record written since the last call (a
    /// record that wraps around the ring's end is copied into `scratch`).
    fn drain(&mut self, scratch: &mut Vec<u8>, mut each: impl FnMut(&[u8])) {
        let head = self.head().load(Ordering::Acquire);
        let mut tail = self.tail().load(Ordering::Relaxed);
        let mask = u64::try_from(self.data_size - 1).unwrap_or(0);
        while tail < head {
            let at = usize::try_from(tail & mask).unwrap_or(0);
            let mut header = [0u8; 8];
            self.copy_out(at, &mut header);
            let size = usize::from(u16::from_ne_bytes([header[6], header[7]]));
            if size < 8 || u64::try_from(size).unwrap_or(u64::MAX) > head - tail {
                break; // not a record: skip the rest rather than misread it
            }
            if at + size <= self.data_size {
                each(self.bytes(at, size));
            } else {
                scratch.resize(size, 0);
                self.copy_out(at, scratch);
                each(scratch);
            }
            tail += u64::try_from(size).unwrap_or(0);
        }
        fence(Ordering::Release);
        self.tail().store(head, Ordering::Release);
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps our own mapping; nothing borrows it past self.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// How many of `len` bytes from `at` fit before the end of a ring of
/// `size` bytes (the rest continue at its start).
fn wrap_split(at: usize, len: usize, size: usize) -> usize {
    size.saturating_sub(at).min(len)
}

/// The rings of one sandbox.
pub(crate) struct Rings {
    rings: Vec<Ring>,
    tracepoint: Tracepoint,
}

impl std::fmt::Debug for Rings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rings")
            .field("cpus", &self.rings.len())
            .finish()
    }
}

impl Rings {
    /// Records every exec of `attach` from now on, with pids as the pid
    /// namespace `pid_ns` sees them.
    pub(crate) fn open(pid_ns: BorrowedFd<'_>, attach: Attach<'_>) -> io::Result<Rings> {
        let tracepoint = Tracepoint::find()?;
        let cpus = online_cpus()?;
        let inherit = matches!(attach, Attach::Init);
        let fds = open_in(pid_ns, attach, &attributes(&tracepoint, inherit), &cpus)?;
        let per_cpu = (RINGS_BYTES / cpus.len().max(1))
            .clamp(RING_MIN, RING_MAX)
            .next_power_of_two()
            .min(RING_MAX);
        let rings = fds
            .into_iter()
            .map(|fd| Ring::map(fd, per_cpu))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Rings { rings, tracepoint })
    }

    /// Whether this host would give a watch perf events: tracefs and the
    /// permission to open the tracepoint (tried on the calling thread).
    pub(crate) fn available() -> io::Result<()> {
        let tracepoint = Tracepoint::find()?;
        let mut attr = attributes(&tracepoint, false);
        // SAFETY: a valid attr; pid 0 is the calling thread, cpu -1 any.
        let fd = unsafe {
            perf_event_open_sys::perf_event_open(
                &mut attr,
                0,
                -1,
                -1,
                libc::c_ulong::from(perf::PERF_FLAG_FD_CLOEXEC),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd of our own.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }
}

/// One record, decoded.
#[derive(Debug)]
enum Record {
    Exec {
        pid: i32,
        host_pid: i32,
        filename: String,
        /// `None` where the copied stack did not hold them all.
        argv: Option<Vec<Vec<u8>>>,
        euid: Option<u32>,
    },
    Fork {
        pid: i32,
        ppid: i32,
    },
    Exit {
        pid: i32,
    },
    Lost(u64),
}

/// Little-endian-agnostic reads from a record (native byte order).
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, at: 0 }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_ne_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_ne_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_ne_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// The time at the end of a side-band record (`sample_id_all` with
/// `TID | TIME`: pid, tid, time).
fn trailer_time(record: &[u8]) -> Option<u64> {
    let at = record.len().checked_sub(8)?;
    Some(u64::from_ne_bytes(record.get(at..)?.try_into().ok()?))
}

/// A NUL-terminated string at the start of `bytes`.
fn c_string(bytes: &[u8]) -> String {
    let end = memchr0(bytes).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn memchr0(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == 0)
}

const PERF_RECORD_LOST: u32 = perf::PERF_RECORD_LOST;
const AT_NULL: u64 = 0;
const AT_EUID: u64 = 12;

/// Decodes one record; `None` for records of no interest (or malformed).
fn decode(record: &[u8], tracepoint: &Tracepoint) -> Option<(u64, Record)> {
    let mut c = Cursor::new(record);
    let kind = c.u32()?;
    c.take(4)?; // misc, size
    match kind {
        perf::PERF_RECORD_SAMPLE => {
            let pid = c.i32()?;
            c.u32()?;
            let time = c.u64()?;
            let raw_len = usize::try_from(c.u32()?).ok()?;
            let raw = c.take(raw_len)?;
            let abi = c.u64()?;
            let sp = if abi == 0 { None } else { Some(c.u64()?) };
            let stack_len = usize::try_from(c.u64()?).ok()?;
            let stack = c.take(stack_len)?;
            let dyn_len = if stack_len == 0 {
                0
            } else {
                usize::try_from(c.u64()?).ok()?.min(stack_len)
            };
            let loc = u32::from_ne_bytes(
                raw.get(tracepoint.filename..tracepoint.filename + 4)?
                    .try_into()
                    .ok()?,
            );
            let (offset, len) = ((loc & 0xffff) as usize, (loc >> 16) as usize);
            let filename = c_string(raw.get(offset..offset + len)?);
            let host_pid = i32::from_ne_bytes(
                raw.get(tracepoint.pid..tracepoint.pid + 4)?
                    .try_into()
                    .ok()?,
            );
            let (argv, euid) = match sp {
                Some(sp) => startup(&stack[..dyn_len], sp),
                None => (None, None),
            };
            Some((
                time,
                Record::Exec {
                    pid,
                    host_pid,
                    filename,
                    argv,
                    euid,
                },
            ))
        }
        perf::PERF_RECORD_FORK | perf::PERF_RECORD_EXIT => {
            let pid = c.i32()?;
            let ppid = c.i32()?;
            let tid = c.i32()?;
            c.i32()?;
            let time = c.u64()?;
            if pid != tid {
                return None; // a thread
            }
            Some((
                time,
                if kind == perf::PERF_RECORD_FORK {
                    Record::Fork { pid, ppid }
                } else {
                    Record::Exit { pid }
                },
            ))
        }
        PERF_RECORD_LOST => {
            c.u64()?;
            let lost = c.u64()?;
            Some((trailer_time(record).unwrap_or(0), Record::Lost(lost)))
        }
        _ => None,
    }
}

/// The arguments and effective uid from the start of a new program's
/// stack (`stack`, copied from address `sp`): `argc`, `argv[]`, NULL,
/// `envp[]`, NULL, the auxiliary vector, ..., the strings.
fn startup(stack: &[u8], sp: u64) -> (Option<Vec<Vec<u8>>>, Option<u32>) {
    let word = |i: usize| -> Option<u64> {
        let at = i.checked_mul(8)?;
        Some(u64::from_ne_bytes(stack.get(at..at + 8)?.try_into().ok()?))
    };
    let Some(argc) = word(0).and_then(|n| usize::try_from(n).ok()) else {
        return (None, None);
    };
    let string = |ptr: u64| -> Option<Vec<u8>> {
        let at = usize::try_from(ptr.checked_sub(sp)?).ok()?;
        let rest = stack.get(at..)?;
        Some(rest[..memchr0(rest)?].to_vec())
    };
    let argv = (1..=argc)
        .map(|i| word(i).and_then(string))
        .collect::<Option<Vec<_>>>();
    // Past argv's NULL, the environment's pointers up to theirs.
    let mut i = argc + 2;
    while word(i).is_some_and(|p| p != 0) {
        i += 1;
    }
    let mut euid = None;
    i += 1;
    while let (Some(key), Some(value)) = (word(i), word(i + 1)) {
        if key == AT_NULL {
            break;
        }
        if key == AT_EUID {
            euid = u32::try_from(value).ok();
            break;
        }
        i += 2;
    }
    (argv, euid)
}

/// What the watch knows of one of the job's processes.
#[derive(Debug, Clone)]
struct Task {
    ppid: i32,
    /// Its program's path (inherited at fork).
    exe: Arc<str>,
}

/// The reading side: turns the rings' records into [`ExecEvent`]s.
pub(crate) struct PerfReader {
    rings: Rings,
    /// For `/proc/PID/cmdline` where the copy lacks the arguments.
    proc: Proc,
    job: JobView,
    sink: ExecSink,
    /// The execs of the current read, handed to `sink` at its end.
    batch: Vec<ExecEvent>,
    /// Records the kernel dropped (a ring was full).
    lost: Arc<AtomicU64>,
    tasks: HashMap<i32, Task>,
    /// Records newer than the last read's start, held for the next one
    /// (another CPU's older record may not have been read yet).
    pending: Vec<(u64, Record)>,
    scratch: Vec<u8>,
    reader: Reader,
}

impl PerfReader {
    pub(crate) fn new(
        rings: Rings,
        proc: Proc,
        job: JobView,
        sink: ExecSink,
        lost: Arc<AtomicU64>,
    ) -> PerfReader {
        let mut tasks = HashMap::new();
        tasks.insert(
            1,
            Task {
                ppid: 0,
                exe: Arc::from(crate::INIT_ARGV0),
            },
        );
        PerfReader {
            rings,
            proc,
            job,
            sink,
            batch: Vec::new(),
            lost,
            tasks,
            pending: Vec::new(),
            scratch: Vec::new(),
            reader: Reader::default(),
        }
    }

    /// Reads every ring and reports the execs, in time order, in one
    /// batch. With `last`, also what came in during the read.
    pub(crate) fn read(&mut self, last: bool) {
        let now = monotonic_nanos();
        let mut records = std::mem::take(&mut self.pending);
        let tracepoint = self.rings.tracepoint;
        for ring in &mut self.rings.rings {
            ring.drain(&mut self.scratch, |record| {
                if let Some(decoded) = decode(record, &tracepoint) {
                    records.push(decoded);
                }
            });
        }
        records.sort_by_key(|(time, _)| *time);
        let keep_from = if last {
            records.len()
        } else {
            records.partition_point(|(time, _)| *time <= now)
        };
        self.pending = records.split_off(keep_from);
        for (time, record) in records {
            self.apply(time, record);
        }
        if !self.batch.is_empty() {
            (self.sink)(std::mem::take(&mut self.batch));
        }
    }

    fn apply(&mut self, time: u64, record: Record) {
        match record {
            Record::Fork { pid, ppid } => {
                let exe = self
                    .tasks
                    .get(&ppid)
                    .map_or_else(|| Arc::from(""), |t| Arc::clone(&t.exe));
                self.tasks.insert(pid, Task { ppid, exe });
            }
            Record::Exit { pid } => {
                if pid != 1 {
                    self.tasks.remove(&pid);
                }
            }
            Record::Lost(n) => {
                self.lost.fetch_add(n, Ordering::Relaxed);
            }
            Record::Exec {
                pid,
                host_pid,
                filename,
                argv,
                euid,
            } => {
                let task = self.task(pid);
                let path = filename;
                task.exe = Arc::from(path.as_str());
                let ppid = task.ppid;
                let parent = self
                    .tasks
                    .get(&ppid)
                    .map_or_else(String::new, |t| t.exe.to_string());
                let at_exec = argv.is_some();
                let (argv, uid) = match (argv, euid) {
                    (Some(argv), Some(uid)) => (argv, uid),
                    (argv, euid) => {
                        // Did not fit the copied stack: read what /proc has,
                        // if this is still the same process.
                        let seen = self
                            .reader
                            .process(At::Pid(self.proc.as_fd(), host_pid), &self.job, true)
                            .filter(|s| s.pid == pid);
                        match seen {
                            Some(seen) => (argv.unwrap_or(seen.argv), euid.unwrap_or(seen.uid)),
                            None => (argv.unwrap_or_default(), euid.unwrap_or(u32::MAX)),
                        }
                    }
                };
                self.batch.push(ExecEvent {
                    pid,
                    host_pid,
                    ppid,
                    uid,
                    path,
                    argv,
                    argv_at_exec: at_exec,
                    parent,
                    at: crate::procwatch::wall_clock(time),
                });
            }
        }
    }

    fn task(&mut self, pid: i32) -> &mut Task {
        self.tasks.entry(pid).or_insert_with(|| Task {
            ppid: 0,
            exe: Arc::from(""),
        })
    }
}

fn monotonic_nanos() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_offsets_come_from_the_format() {
        let format = "name: sched_process_exec\nID: 365\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:__data_loc char[] filename;\toffset:8;\tsize:4;\tsigned:0;\n\tfield:pid_t pid;\toffset:12;\tsize:4;\tsigned:1;\n\tfield:pid_t old_pid;\toffset:16;\tsize:4;\tsigned:1;\n";
        assert_eq!(field(format, "filename", 4), Some(8));
        assert_eq!(field(format, "pid", 4), Some(12));
        assert_eq!(field(format, "old_pid", 4), Some(16));
        assert_eq!(
            field(format, "pid", 8),
            None,
            "a size that differs is refused"
        );
        assert_eq!(field(format, "comm", 4), None);
    }

    /// A stack as the kernel lays it out at an exec, at address `sp`.
    fn stack(sp: u64, argv: &[&[u8]], envp: &[&[u8]], euid: Option<u64>) -> Vec<u8> {
        let words = 1 + argv.len() + 1 + envp.len() + 1 + 4 + 2;
        let mut strings = Vec::new();
        let mut ptrs = Vec::new();
        for s in argv.iter().chain(envp) {
            ptrs.push(sp + (words * 8 + strings.len()) as u64);
            strings.extend_from_slice(s);
            strings.push(0);
        }
        let mut out = Vec::new();
        let mut push = |w: u64| out.extend_from_slice(&w.to_ne_bytes());
        push(argv.len() as u64);
        for p in &ptrs[..argv.len()] {
            push(*p);
        }
        push(0);
        for p in &ptrs[argv.len()..] {
            push(*p);
        }
        push(0);
        push(6); // AT_PAGESZ
        push(4096);
        push(if euid.is_some() { AT_EUID } else { 11 });
        push(euid.unwrap_or(0));
        push(AT_NULL);
        push(0);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn arguments_and_uid_are_read_from_the_new_stack() {
        let sp = 0x7ffc_0000_1000;
        let s = stack(sp, &[b"/bin/true", b"a b", b""], &[b"X=1"], Some(1000));
        let (argv, euid) = startup(&s, sp);
        assert_eq!(
            argv,
            Some(vec![b"/bin/true".to_vec(), b"a b".to_vec(), Vec::new()])
        );
        assert_eq!(euid, Some(1000));
    }

    #[test]
    fn arguments_cut_by_the_copy_are_not_guessed() {
        let sp = 0x7ffc_0000_1000;
        let s = stack(sp, &[b"/bin/echo", b"0123456789abcdef"], &[], Some(0));
        // The copy ends inside the last argument: no terminating NUL.
        let cut = &s[..s.len() - 4];
        let (argv, _) = startup(cut, sp);
        assert_eq!(argv, None);
        // Or before the strings start.
        let (argv, euid) = startup(&s[..16], sp);
        assert_eq!((argv, euid), (None, None));
        // A pointer below sp is refused too.
        let mut bad = s.clone();
        bad[8..16].copy_from_slice(&(sp - 8).to_ne_bytes());
        assert_eq!(startup(&bad, sp).0, None);
    }

    #[test]
    fn an_unknown_uid_stays_unknown() {
        let sp = 0x1000;
        let s = stack(sp, &[b"x"], &[], None);
        assert_eq!(startup(&s, sp), (Some(vec![b"x".to_vec()]), None));
    }

    #[test]
    fn a_record_wrapping_the_ring_is_split_at_its_end() {
        assert_eq!(wrap_split(13, 6, 16), 3);
        assert_eq!(wrap_split(0, 6, 16), 6);
        assert_eq!(wrap_split(10, 6, 16), 6);
    }
}
