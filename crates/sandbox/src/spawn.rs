//! Creating a sandbox: clone into fresh namespaces, map the ids, re-exec the
//! init, and drive it over the control socket.
//!
//! The runner is multi-threaded, so between `clone` and `execve` the child
//! does only raw system calls on memory prepared before the clone (no
//! allocation, no locks): wait for the id maps, become root of its user
//! namespace, arm the parent-death signal, move the control socket to fd 3
//! and exec `/proc/self/exe` as the sandbox init. Everything else (mounts,
//! pivot_root) happens in the init, a fresh single-threaded process.

use std::ffi::CStr;
use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal, WaitOptions};
use zeroize::Zeroizing;

use crate::cgroup::{self, Cgroup, Events, Sample};
use crate::config::{CommandSpec, Layers, SandboxConfig};
use crate::contain::ProcessInfo;
use crate::error::SandboxError;
use crate::ids::{self, HostIds};
use crate::init::INIT_ARGV0;
use crate::netns::EgressSockets;
use crate::netwatch::{Attempt, NetWatch};
use crate::procwatch::{ExecSink, ExecSource, ExecWatch, Target};
use crate::proto::{self, FromInit, ToInit, MAX_MESSAGE};
use crate::teardown::{self, HeldNs, Namespaces, TeardownReport};

/// The job's output pipe holds this much (the kernel's default is 64 KiB,
/// and 1 MiB is what `fs.pipe-max-size` lets any user ask for), and the
/// runner reads it in pieces of up to [`READ_CHUNK`]. A job writing 1 GiB
/// ran about 6% faster than with 64 KiB and 64 KiB reads, with or without
/// secrets, and varied less (BENCHMARKS.md, "Redaction end to end"): it
/// blocks less often on a full pipe, and the runner pays its per-read costs
/// (poll, the mask channel, the redactor's call) a quarter as often.
const OUTPUT_PIPE: usize = 1 << 20;

/// The most the runner reads of the job's output at once.
pub const READ_CHUNK: usize = 256 << 10;

/// How long the runner waits for output before telling the sink it is idle
/// (so that a partial line can be flushed and live output does not stall).
pub const IDLE_TICK: Duration = Duration::from_millis(100);

/// The host identity a sandbox's root maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMode {
    /// Run as host root: the job's root maps to an unprivileged host id, and
    /// supplementary groups are dropped.
    Privileged {
        /// Host uid of the job's root.
        uid: u32,
        /// Host gid of the job's root.
        gid: u32,
    },
    /// Run as an unprivileged user: the job's root maps to that user.
    Rootless {
        /// The invoking user's uid.
        uid: u32,
        /// The invoking user's gid.
        gid: u32,
    },
}

impl IdMode {
    /// The mode for the current process: privileged as root, else rootless.
    pub fn current() -> IdMode {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        if uid == 0 {
            IdMode::Privileged {
                uid: NOBODY,
                gid: NOBODY,
            }
        } else {
            IdMode::Rootless { uid, gid }
        }
    }
}

/// Host id of `nobody`, the default identity of a job's root under a
/// privileged runner.
pub const NOBODY: u32 = 65534;

/// A part of the output stream of a running command.
#[derive(Debug)]
pub enum Output<'a> {
    /// Bytes the command wrote to stdout or stderr (merged, in order), in
    /// the buffer they were read into (as many as its capacity holds, which
    /// is at least [`READ_CHUNK`]). The callback may take the buffer,
    /// leaving another in its place (taking it saves a copy): the next
    /// bytes are read into whatever buffer is there, emptied first. Output
    /// before redaction may hold a secret, hence a buffer zeroed when
    /// dropped.
    Data(&'a mut Zeroizing<Vec<u8>>),
    /// Nothing arrived for [`IDLE_TICK`].
    Idle,
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
    /// The deadline passed; the whole sandbox was killed.
    TimedOut,
    /// The command could not be started.
    SpawnFailed(String),
}

/// A live sandbox: an init process in fresh namespaces, waiting for commands.
///
/// Dropping it kills every process in it.
#[derive(Debug)]
pub struct Sandbox {
    pid: Pid,
    /// The init's pidfd and the job's cgroup, shared with [`Killer`]s.
    shared: Arc<Shared>,
    control: OwnedFd,
    namespaces: Namespaces,
    /// Held for the sandbox's life: the slot of its host identity.
    _host_ids: Option<HostIds>,
    reaped: bool,
    buf: Vec<u8>,
    /// The read end of the job's mask channel, once the sandbox is ready,
    /// until the runner takes it.
    mask: Option<MaskChannel>,
    /// The egress proxy's sockets, until the runner takes them.
    egress: Option<EgressSockets>,
    /// Serves the network watch filter for the sandbox's life.
    netwatch: Option<Watcher>,
    /// Reports the job's execs, once asked to.
    execwatch: Mutex<Option<ExecWatch>>,
}

/// What a sandbox shares with the [`Killer`]s of other threads.
#[derive(Debug)]
struct Shared {
    /// Host pid of the init.
    pid: i32,
    /// Names exactly the init, even once its pid could be reused.
    pidfd: OwnedFd,
    /// The job's cgroup. Locked for the whole of a containment, a teardown
    /// or a removal, so that those never interleave their freezes, kills
    /// and thaws.
    cgroup: Mutex<Option<Box<dyn Cgroup>>>,
}

/// Locks `m`, whatever a thread that panicked holding it left: every value
/// behind these locks is valid at any point.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a sandbox's network [`Attempt`]s go.
pub type AttemptSink = Box<dyn FnMut(Attempt) + Send>;

/// The thread that answers a sandbox's network watch filter. Every call of
/// the job waits for it, so it runs from the moment the filter exists,
/// whether or not anyone listens for attempts; it ends when the sandbox's
/// processes are gone or the sandbox is dropped, and the sink (with
/// whatever it holds) is dropped with the sandbox.
struct Watcher {
    sink: Arc<Mutex<Option<AttemptSink>>>,
    stop: Arc<AtomicBool>,
}

impl Watcher {
    fn start(watch: NetWatch, pid: i32) -> Result<Watcher, SandboxError> {
        let sink: Arc<Mutex<Option<AttemptSink>>> = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (to, stopped) = (Arc::clone(&sink), Arc::clone(&stop));
        std::thread::Builder::new()
            .name(format!("netwatch-{pid}"))
            .spawn(move || {
                watch.serve(&stopped, &mut |attempt| {
                    if let Ok(mut sink) = to.lock() {
                        if let Some(sink) = sink.as_mut() {
                            sink(attempt);
                        }
                    }
                });
            })
            .map_err(|e| SandboxError::io("start the network watch thread", e))?;
        Ok(Watcher { sink, stop })
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(mut sink) = self.sink.lock() {
            *sink = None;
        }
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

/// Namespaces every sandbox gets at clone. The cgroup namespace comes
/// later: the init unshares it once the runner has moved it into the job's
/// cgroup, so that cgroup becomes the root of the job's view.
const CLONE_FLAGS: i32 = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWNET;

impl Sandbox {
    /// Creates a sandbox: [`Spare::prepare`] then [`Spare::start`].
    pub fn create(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        Spare::prepare(config.layers, false)?.start(config)
    }

    /// Clones the init in fresh namespaces, maps `ids`, and has it build the
    /// job-independent part of the root.
    fn spawn(layers: Layers, ids: IdMode) -> Result<Sandbox, SandboxError> {
        let (control, control_child) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| SandboxError::io("create the control socket", e))?;
        let (sync_r, sync_w) = pipe_with(PipeFlags::CLOEXEC)
            .map_err(|e| SandboxError::io("create the sync pipe", e))?;

        let plan = ChildPlan {
            sync: sync_r.as_raw_fd(),
            control: control_child.as_raw_fd(),
            drop_groups: matches!(ids, IdMode::Privileged { .. }),
            exe: c"/proc/self/exe",
            dev_null: c"/dev/null",
            argv: [INIT_ARGV0_C.as_ptr(), std::ptr::null()],
            envp: [std::ptr::null()],
        };

        // A raw clone with a NULL stack behaves like fork: the child gets a
        // copy of this thread's stack and continues here. It runs only
        // `child_after_clone`, which makes raw system calls on memory
        // prepared above and never returns.
        // SAFETY: as just said; the flags are valid namespace flags, and
        // SIGCHLD makes the child an ordinary waitable one.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::c_long::from(CLONE_FLAGS | libc::SIGCHLD),
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if ret == 0 {
            child_after_clone(&plan);
        }
        if ret < 0 {
            let errno =
                Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::INVAL);
            return Err(SandboxError::Clone(errno.into()));
        }
        drop(sync_r);
        drop(control_child);
        let raw_pid = i32::try_from(ret)
            .map_err(|_| SandboxError::Protocol("clone returned an impossible pid".into()))?;
        let pid = Pid::from_raw(raw_pid)
            .ok_or_else(|| SandboxError::Protocol("clone returned pid 0".into()))?;
        // The child is ours and unreaped, so its pid cannot be reused; the
        // pidfd lets every later signal name exactly this process.
        let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                kill_and_reap_pid(pid);
                return Err(SandboxError::io("open a pidfd for the sandbox init", e));
            }
        };
        let mut sandbox = Sandbox {
            pid,
            shared: Arc::new(Shared {
                pid: raw_pid,
                pidfd,
                cgroup: Mutex::new(None),
            }),
            control,
            namespaces: Namespaces::default(),
            _host_ids: None,
            reaped: false,
            buf: vec![0; MAX_MESSAGE + 1],
            mask: None,
            egress: None,
            netwatch: None,
            execwatch: Mutex::new(None),
        };
        // From here on, dropping `sandbox` on an error kills and reaps it.
        write_id_maps(pid, ids)?;
        rustix::io::write(&sync_w, b"g")
            .map_err(|e| SandboxError::io("release the sandbox init", e))?;
        drop(sync_w);
        sandbox.namespaces = Namespaces::open(pid)?;
        // The caller waits for `Prepared` (with `expect`), after doing its
        // own share of the preparation meanwhile.
        sandbox.send(&ToInit::Prepare(layers), &[])?;
        Ok(sandbox)
    }

    /// Waits for the init's answer to a setup request.
    fn expect(&mut self, want: &FromInit) -> Result<(), SandboxError> {
        self.expect_with_fds(want).map(drop)
    }

    /// Like [`expect`](Sandbox::expect), keeping the fds sent along.
    fn expect_with_fds(&mut self, want: &FromInit) -> Result<Vec<OwnedFd>, SandboxError> {
        let got = proto::recv(self.control.as_fd(), &mut self.buf)
            .map_err(|e| SandboxError::Control(e.to_string()))?;
        let (got, fds) = match got {
            Some((msg, fds)) => (Some(msg), fds),
            None => (None, Vec::new()),
        };
        match got {
            Some(got) if std::mem::discriminant(&got) == std::mem::discriminant(want) => Ok(fds),
            Some(FromInit::SetupFailed { stage, error }) => {
                Err(SandboxError::Setup { stage, error })
            }
            Some(other) => Err(SandboxError::Protocol(format!(
                "expected {want:?} from the sandbox init, got {other:?}"
            ))),
            None => Err(SandboxError::InitDied(self.exit_description())),
        }
    }

    /// A handle that can kill, contain or sample this sandbox from another
    /// thread (while this one waits in [`run`](Sandbox::run)), valid even
    /// after the sandbox is gone.
    pub fn killer(&self) -> Result<Killer, SandboxError> {
        Ok(Killer {
            shared: Arc::clone(&self.shared),
            pid_ns: self.namespaces.pid(),
        })
    }

    /// The job's mask channel (once): the values it registers for masking.
    /// The runner must read it (see [`MaskChannel`]).
    pub fn take_mask_channel(&mut self) -> Option<MaskChannel> {
        self.mask.take()
    }

    /// The sockets to serve the job's egress proxy on (once; `None` for a
    /// job without egress). Dropping them leaves the job without a way out.
    pub fn take_egress(&mut self) -> Option<EgressSockets> {
        self.egress.take()
    }

    /// Sends every attempt of the job to reach an address other than
    /// loopback (see [`crate::netwatch`]) to `sink`, from another thread,
    /// until the sandbox is dropped (then `sink` is dropped too). `false`
    /// when the sandbox has no network watch (the seccomp layer is off).
    pub fn on_network_attempt(&self, sink: AttemptSink) -> bool {
        let Some(watcher) = &self.netwatch else {
            return false;
        };
        match watcher.sink.lock() {
            Ok(mut slot) => {
                *slot = Some(sink);
                true
            }
            Err(_) => false,
        }
    }

    /// Reads `Watching` and copies the listener out of the init.
    fn take_watch_listener(&mut self) -> Result<NetWatch, SandboxError> {
        let got = proto::recv(self.control.as_fd(), &mut self.buf)
            .map_err(|e| SandboxError::Control(e.to_string()))?;
        let fd = match got {
            Some((FromInit::Watching { fd }, _)) => fd,
            Some((FromInit::SetupFailed { stage, error }, _)) => {
                return Err(SandboxError::Setup { stage, error })
            }
            Some((other, _)) => {
                return Err(SandboxError::Protocol(format!(
                    "expected Watching from the sandbox init, got {other:?}"
                )))
            }
            None => return Err(SandboxError::InitDied(self.exit_description())),
        };
        let listener = rustix::process::pidfd_getfd(
            &self.shared.pidfd,
            fd,
            rustix::process::PidfdGetfdFlags::empty(),
        )
        .map_err(|e| SandboxError::io("take the network watch listener", e))?;
        NetWatch::new(listener)
    }

    /// Sends every exec in the job from now on to `sink`, from another
    /// thread, as an [`ExecEvent`](crate::ExecEvent) (see
    /// [`crate::procwatch`]): from the kernel's process events connector
    /// where the runner may listen to it (root in the initial namespaces),
    /// else by polling `/proc`. Returns which. The watch (and `sink` with
    /// it) ends when the sandbox's init exits, when the sandbox is
    /// dropped, or when another watch replaces it. `sink` runs on the
    /// watch's thread (see [`ExecSink`]): keep it short.
    pub fn watch_execs(&self, sink: ExecSink) -> Result<ExecSource, SandboxError> {
        self.start_exec_watch(None, sink)
    }

    /// Like [`watch_execs`](Sandbox::watch_execs), from `source` only: an
    /// error if that is the connector and it cannot be had.
    pub fn watch_execs_from(&self, source: ExecSource, sink: ExecSink) -> Result<(), SandboxError> {
        self.start_exec_watch(Some(source), sink).map(drop)
    }

    fn start_exec_watch(
        &self,
        source: Option<ExecSource>,
        sink: ExecSink,
    ) -> Result<ExecSource, SandboxError> {
        let pid_ns = self
            .namespaces
            .pid()
            .ok_or_else(|| SandboxError::Protocol("the sandbox has no pid namespace".into()))?;
        let pidfd = self
            .shared
            .pidfd
            .try_clone()
            .map_err(|e| SandboxError::io("duplicate the sandbox pidfd", e))?;
        let perf_cgroup = lock(&self.shared.cgroup)
            .as_ref()
            .and_then(|cg| cg.perf_dir())
            .map(|dir| {
                rustix::fs::open(
                    &dir,
                    rustix::fs::OFlags::RDONLY
                        | rustix::fs::OFlags::DIRECTORY
                        | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .map_err(|e| SandboxError::io("open the job's perf_event cgroup", e))
            })
            .transpose()?;
        let target = Target {
            init: self.pid(),
            pidfd,
            pid_ns,
            perf_cgroup,
        };
        let mut slot = lock(&self.execwatch);
        // One watch at a time: the previous one stops.
        drop(slot.take());
        let (watch, source) = ExecWatch::start(target, source, sink)?;
        *slot = Some(watch);
        Ok(source)
    }

    /// How many events the kernel dropped because the exec watch fell
    /// behind (forks, execs and exits of the host alike: at most that many
    /// of the job's execs went unreported). 0 without a watch, and for
    /// polling.
    pub fn execs_lost(&self) -> u64 {
        lock(&self.execwatch).as_ref().map_or(0, ExecWatch::lost)
    }

    /// The init's pid in the host's pid namespace.
    pub fn pid(&self) -> i32 {
        self.pid.as_raw_nonzero().get()
    }

    /// The sandbox's root directory as the host sees it (`/proc/PID/root`).
    /// Open paths under it only with `RESOLVE_IN_ROOT` (see
    /// [`crate::artifacts`]): the tree belongs to the job.
    pub fn root(&self) -> std::path::PathBuf {
        Path::new("/proc").join(self.pid().to_string()).join("root")
    }

    /// Runs `command` to completion, streaming its output to `on_output`.
    ///
    /// If `deadline` passes first, the whole sandbox is killed (every process
    /// in it, however it was started) and the outcome is `TimedOut`.
    pub fn run(
        &mut self,
        command: &CommandSpec,
        deadline: Instant,
        on_output: &mut dyn FnMut(Output<'_>),
    ) -> Result<CommandOutcome, SandboxError> {
        let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
            .map_err(|e| SandboxError::io("create the output pipe", e))?;
        // O_NONBLOCK was set on both ends; the job's write end must block.
        rustix::fs::fcntl_setfl(&out_w, rustix::fs::OFlags::empty())
            .map_err(|e| SandboxError::io("set the output pipe blocking", e))?;
        // Best effort: a user over its pipe-buffer quota
        // (`fs.pipe-user-pages-soft`) keeps the default size, which works,
        // only slower.
        let _ = rustix::pipe::fcntl_setpipe_size(&out_r, OUTPUT_PIPE);
        self.send(&ToInit::Run(command.clone()), &[out_w.as_fd()])?;
        drop(out_w);

        let mut out_open = true;
        let mut chunk = Zeroizing::new(Vec::with_capacity(READ_CHUNK));
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                drain(&out_r, &mut chunk, on_output);
                return Ok(CommandOutcome::TimedOut);
            }
            let wait = (deadline - now).min(IDLE_TICK);
            let (out_ready, control_ready) = {
                let mut fds = Vec::with_capacity(2);
                fds.push(PollFd::new(&self.control, PollFlags::IN));
                if out_open {
                    fds.push(PollFd::new(&out_r, PollFlags::IN));
                }
                let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
                    tv_sec: 0,
                    tv_nsec: 100_000_000,
                });
                match poll(&mut fds, Some(&timeout)) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(e) => return Err(SandboxError::io("poll the sandbox", e)),
                }
                let ready = |f: &PollFd<'_>| !f.revents().is_empty();
                (
                    fds.get(1).is_some_and(ready),
                    fds.first().is_some_and(ready),
                )
            };
            if !out_ready && !control_ready {
                on_output(Output::Idle);
                continue;
            }
            if out_ready && !read_available(&out_r, &mut chunk, on_output)? {
                out_open = false;
            }
            if control_ready {
                let msg = self.recv()?;
                // The command has ended; what it wrote is already in the
                // pipe. Take it, then stop listening: a background process
                // that kept the pipe open writes into the void from now on.
                drain(&out_r, &mut chunk, on_output);
                return match msg {
                    Some(FromInit::Exited { code }) => Ok(CommandOutcome::Exited(code)),
                    Some(FromInit::Signaled { signal }) => Ok(CommandOutcome::Signaled(signal)),
                    Some(FromInit::SpawnFailed { error }) => Ok(CommandOutcome::SpawnFailed(error)),
                    Some(other) => Err(SandboxError::Protocol(format!(
                        "unexpected message from the sandbox init: {other:?}"
                    ))),
                    None => Err(SandboxError::InitDied(self.exit_description())),
                };
            }
        }
    }

    /// Kills every process in the sandbox (SIGKILL to its init: the kernel
    /// then kills the whole pid namespace).
    pub fn kill(&self) {
        if !self.reaped {
            // ESRCH only means it is already dead.
            let _ = pidfd_send_signal(&self.shared.pidfd, Signal::KILL);
        }
    }

    /// Limit events of the job's cgroup so far (OOM kills, refused forks);
    /// `None` without a cgroup.
    pub fn events(&self) -> Option<Events> {
        self.shared.events()
    }

    /// What the job has used so far (cpu, memory, pids, block I/O); `None`
    /// without a cgroup. [`Killer::sample`] reads the same from another
    /// thread.
    pub fn sample(&self) -> Option<Sample> {
        self.shared.sample()
    }

    /// Whether the sandbox has a cgroup.
    fn has_cgroup(&self) -> bool {
        lock(&self.shared.cgroup).is_some()
    }

    /// Kills everything in the sandbox, waits until the kernel has torn the
    /// pid namespace down, removes the cgroup, and checks the host's process
    /// table and cgroup tree for anything of the job that survived.
    pub fn destroy(mut self) -> Result<TeardownReport, SandboxError> {
        self.kill();
        drop(lock(&self.execwatch).take());
        self.reap()?;
        let shared = Arc::clone(&self.shared);
        let mut slot = lock(&shared.cgroup);
        let Some(cg) = slot.take() else {
            return teardown::scan(&self.namespaces);
        };
        // Every process of the job is in its cgroup and cannot leave it (no
        // cgroupfs in the sandbox, no capabilities): an empty cgroup proves
        // nothing survived, nested namespaces included.
        let mut report = TeardownReport {
            leftover_pids: cg.procs().unwrap_or_default(),
            ..TeardownReport::default()
        };
        let removed = cg.kill_all().and_then(|()| cg.remove());
        if removed.is_err() || cg.exists() {
            report.leftover_cgroups = cg.paths().into_iter().filter(|p| p.exists()).collect();
        }
        Ok(report)
    }

    fn reap(&mut self) -> Result<(), SandboxError> {
        if self.reaped {
            return Ok(());
        }
        loop {
            match rustix::process::waitpid(Some(self.pid), WaitOptions::empty()) {
                Ok(_) => break,
                Err(Errno::INTR) => continue,
                Err(e) => return Err(SandboxError::io("reap the sandbox init", e)),
            }
        }
        self.reaped = true;
        Ok(())
    }

    fn exit_description(&mut self) -> String {
        // The init closed its end: it is dying or dead. Kill it for sure and
        // say how it ended.
        self.kill();
        if self.reaped {
            return "it had already been reaped".into();
        }
        loop {
            match rustix::process::waitpid(Some(self.pid), WaitOptions::empty()) {
                Ok(Some((_, status))) => {
                    self.reaped = true;
                    return match (status.exit_status(), status.terminating_signal()) {
                        (Some(code), _) => format!("it exited with status {code}"),
                        (None, Some(sig)) => format!("it was killed by signal {sig}"),
                        _ => "it ended".into(),
                    };
                }
                Ok(None) => return "it ended".into(),
                Err(Errno::INTR) => continue,
                Err(e) => return format!("it could not be reaped: {e}"),
            }
        }
    }

    fn send(&self, msg: &ToInit, fds: &[BorrowedFd<'_>]) -> Result<(), SandboxError> {
        proto::send(self.control.as_fd(), msg, fds)
            .map_err(|e| SandboxError::Control(e.to_string()))
    }

    /// The init's next message. Any fd it sends along is closed unread: the
    /// init is untrusted.
    fn recv(&mut self) -> Result<Option<FromInit>, SandboxError> {
        proto::recv(self.control.as_fd(), &mut self.buf)
            .map(|got| got.map(|(msg, _fds)| msg))
            .map_err(|e| SandboxError::Control(e.to_string()))
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill();
        let _ = self.reap();
        let mut slot = lock(&self.shared.cgroup);
        if let Some(cg) = slot.take() {
            let _ = cg.kill_all();
            let _ = cg.remove();
        }
    }
}

impl Shared {
    fn sample(&self) -> Option<Sample> {
        lock(&self.cgroup).as_ref().and_then(|cg| cg.sample().ok())
    }

    fn events(&self) -> Option<Events> {
        lock(&self.cgroup).as_ref().and_then(|cg| cg.events().ok())
    }
}

/// A sandbox prepared ahead of its job: namespaces created, ids mapped, the
/// init running, and the job-independent part of the root built. Claiming
/// it with [`Spare::start`] leaves only the job-specific work on the job's
/// critical path. Dropping an unclaimed spare kills it.
#[derive(Debug)]
pub struct Spare {
    sandbox: Sandbox,
    layers: Layers,
}

impl Spare {
    /// Prepares a spare with these layers (and, if `cgroup`, a cgroup
    /// without limits yet, which the init joins at once). Under a privileged
    /// runner it claims a host identity of its own ([`crate::ids`]);
    /// rootless, it uses the invoking user's.
    pub fn prepare(layers: Layers, cgroup: bool) -> Result<Spare, SandboxError> {
        let sandbox = match IdMode::current() {
            IdMode::Privileged { .. } => {
                let host = ids::allocate()
                    .map_err(|e| SandboxError::io("claim a host uid for the job", e))?;
                let mode = IdMode::Privileged {
                    uid: host.uid,
                    gid: host.gid,
                };
                let mut sandbox = Sandbox::spawn(layers, mode)?;
                sandbox._host_ids = Some(host);
                sandbox
            }
            rootless => Sandbox::spawn(layers, rootless)?,
        };
        let mut spare = Spare { sandbox, layers };
        // While the init builds the job-independent root, join the cgroup:
        // on cgroup v1 the first migration after a quiet spell waits for an
        // RCU grace period (often 10 ms or more), which this overlaps. The
        // init is in the cgroup before it does any work for a job.
        if cgroup {
            let cg = cgroup::create(&cgroup::spare_name(), &cgroup::Limits::default())
                .map_err(|e| SandboxError::Cgroup(e.to_string()))?;
            let pid = spare.sandbox.pid();
            // Owned by the sandbox from here: removed with it on any error.
            lock(&spare.sandbox.shared.cgroup)
                .insert(cg)
                .add_task(pid)
                .map_err(|e| SandboxError::Cgroup(e.to_string()))?;
        }
        spare.sandbox.expect(&FromInit::Prepared)?;
        Ok(spare)
    }

    /// Whether this spare can become the sandbox `config` describes (same
    /// layers, and a cgroup exactly when the job wants one).
    pub fn fits(&self, config: &SandboxConfig) -> bool {
        self.layers == config.layers && self.sandbox.has_cgroup() == config.cgroup.is_some()
    }

    /// Turns the spare into the sandbox of the job `config` describes: its
    /// cgroup (created now, the init moved into it before it does anything
    /// for the job), source, workspace, host name, and every hardening
    /// layer.
    pub fn start(self, config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        let mut sandbox = self.sandbox;
        if config.secrets.len() + 1 > crate::proto::MAX_FDS {
            return Err(SandboxError::Protocol(format!(
                "a job can have at most {} secrets",
                crate::proto::MAX_FDS - 1
            )));
        }
        if let Some(bad) = config
            .secrets
            .iter()
            .find(|s| !crate::config::valid_secret_name(&s.name))
        {
            return Err(SandboxError::Protocol(format!(
                "invalid secret file name {:?}",
                bad.name
            )));
        }
        if config.layers != self.layers {
            return Err(SandboxError::Protocol(format!(
                "a spare prepared with {:?} cannot run a job asking for {:?}",
                self.layers, config.layers
            )));
        }
        let cgroup_err = |e: std::io::Error| SandboxError::Cgroup(e.to_string());
        {
            let pid = sandbox.pid();
            let mut slot = lock(&sandbox.shared.cgroup);
            match (&config.cgroup, slot.as_mut()) {
                (Some(spec), Some(cg)) => {
                    cg.rename(&spec.name).map_err(cgroup_err)?;
                    cg.set_limits(&spec.limits).map_err(cgroup_err)?;
                }
                (Some(spec), None) => {
                    let cg = cgroup::create(&spec.name, &spec.limits).map_err(cgroup_err)?;
                    // Owned by the sandbox from here: removed with it on any
                    // error.
                    slot.insert(cg).add_task(pid).map_err(cgroup_err)?;
                }
                (None, Some(_)) => {
                    return Err(SandboxError::Protocol(
                        "a spare with a cgroup cannot run a job without one".into(),
                    ))
                }
                (None, None) => {}
            }
        }
        // The runner opens the source (it may walk paths the job's host
        // identity cannot), in the init's mount namespace, where the host
        // tree sits under the scratch root while the root is being built.
        let source = Path::new("/proc")
            .join(sandbox.pid().to_string())
            .join("root")
            .join(crate::rootfs::HOST_TREE.trim_start_matches('/'))
            .join(config.source.strip_prefix("/").unwrap_or(&config.source));
        let source_dir = rustix::fs::open(
            &source,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| SandboxError::Path {
            path: config.source.clone(),
            source: e.into(),
        })?;
        // Each secret travels in a sealed memfd: in memory only, and never
        // part of a (logged, size-limited) control message.
        let mut names = Vec::with_capacity(config.secrets.len());
        let mut memfds = Vec::with_capacity(config.secrets.len());
        for secret in &config.secrets {
            names.push(secret.name.clone());
            memfds.push(sealed_memfd(&secret.name, &secret.value)?);
        }
        let mut fds = vec![source_dir.as_fd()];
        fds.extend(memfds.iter().map(AsFd::as_fd));
        sandbox.send(&ToInit::Setup(config.clone(), names), &fds)?;
        drop(memfds);
        drop(source_dir);
        let mut fds = sandbox.expect_with_fds(&FromInit::Ready)?.into_iter();
        sandbox.mask = Some(MaskChannel::new(fds.next())?);
        let rest: Vec<OwnedFd> = fds.collect();
        sandbox.egress = match (config.egress, rest.is_empty()) {
            (true, _) => Some(EgressSockets::from_init(rest)?),
            (false, true) => None,
            (false, false) => {
                return Err(SandboxError::Protocol(
                    "the sandbox init sent egress sockets nobody asked for".into(),
                ))
            }
        };
        if config.layers.seccomp {
            let watch = sandbox.take_watch_listener()?;
            sandbox.netwatch = Some(Watcher::start(watch, sandbox.pid())?);
        }
        Ok(sandbox)
    }
}

/// A handle on a sandbox for other threads: kill it, contain it, sample
/// its cgroup, while the sandbox's own thread waits in
/// [`Sandbox::run`]. Every call is harmless once the sandbox is gone.
#[derive(Debug, Clone)]
pub struct Killer {
    shared: Arc<Shared>,
    /// Held so that its inode cannot name another job's namespace.
    pid_ns: Option<Arc<HeldNs>>,
}

impl Killer {
    /// Sends SIGKILL to the sandbox init, which takes every process of the
    /// sandbox with it. Harmless if the sandbox is already gone.
    pub fn kill(&self) {
        let _ = pidfd_send_signal(&self.shared.pidfd, Signal::KILL);
    }

    /// Stops the job at once and says what it was running: freezes its
    /// cgroup, records every process in it (pid, parent, uid, executable,
    /// command line, state, memory, start), kills them all and the init,
    /// and returns the record once they are gone (see
    /// [`crate::contain`]). Without a cgroup, records the processes of the
    /// job's pid namespace, then kills the init (and so the namespace).
    ///
    /// The thread in [`Sandbox::run`] sees the init die and returns
    /// [`SandboxError::InitDied`]. Safe to call at any time, from any
    /// thread, more than once, and while the sandbox is being destroyed:
    /// once it is gone, the record is empty.
    pub fn contain(&self) -> Result<Vec<ProcessInfo>, SandboxError> {
        let slot = lock(&self.shared.cgroup);
        crate::contain::contain(
            slot.as_deref(),
            self.shared.pid,
            &self.shared.pidfd,
            self.pid_ns.as_deref().map(HeldNs::id),
        )
    }

    /// What the job has used so far (see [`Sandbox::sample`]); `None`
    /// without a cgroup, or once it is gone.
    pub fn sample(&self) -> Option<Sample> {
        self.shared.sample()
    }

    /// Limit events so far (see [`Sandbox::events`]).
    pub fn events(&self) -> Option<Events> {
        self.shared.events()
    }
}

/// A memfd holding `value`, sealed against any change.
fn sealed_memfd(name: &str, value: &[u8]) -> Result<OwnedFd, SandboxError> {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let fd = memfd_create(
        format!("airlock-secret-{name}").as_str(),
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .map_err(|e| SandboxError::io("create a memfd for a secret", e))?;
    let mut written = 0;
    while written < value.len() {
        let rest = value.get(written..).unwrap_or_default();
        written += rustix::io::write(&fd, rest)
            .map_err(|e| SandboxError::io("write a secret to its memfd", e))?;
    }
    fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(|e| SandboxError::io("seal a secret's memfd", e))?;
    Ok(fd)
}

/// Reads what is available now; `false` at end of file.
fn read_available(
    fd: &OwnedFd,
    chunk: &mut Zeroizing<Vec<u8>>,
    on_output: &mut dyn FnMut(Output<'_>),
) -> Result<bool, SandboxError> {
    loop {
        chunk.clear();
        chunk.reserve(READ_CHUNK);
        match rustix::io::read(fd, spare_capacity(&mut **chunk)) {
            Ok(0) => return Ok(false),
            Ok(_) => on_output(Output::Data(chunk)),
            Err(Errno::AGAIN) => return Ok(true),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(SandboxError::io("read the command's output", e)),
        }
    }
}

/// Takes whatever is buffered in the pipe, ignoring errors (best effort at
/// the end of a command).
fn drain(fd: &OwnedFd, chunk: &mut Zeroizing<Vec<u8>>, on_output: &mut dyn FnMut(Output<'_>)) {
    let _ = read_available(fd, chunk, on_output);
}

/// The longest line the mask channel buffers; a longer one is delivered in
/// pieces of this size (and refused by the redactor's size limit).
const MAX_MASK_LINE: usize = 64 * 1024;

/// The read end of the job's mask channel ([`crate::MASK_PATH`], a FIFO
/// only the job writes), split into lines: each line is a value the job
/// registered for masking. A line ends at a line break, or when no writer
/// has the FIFO open any more (a value written without a line break, then
/// closed).
///
/// Nothing reads it on its own: the runner takes it
/// ([`Sandbox::take_mask_channel`]) and reads it before it redacts
/// anything the job produced (output, the arguments of an exec, a host
/// name), so that a value registered before is always masked there. The
/// FIFO holds 64 KiB; a job that writes more than that between two reads
/// waits.
#[derive(Debug)]
pub struct MaskChannel {
    fd: OwnedFd,
    /// The line read so far: part of a value to mask.
    line: Zeroizing<Vec<u8>>,
}

impl MaskChannel {
    /// Takes the read end the init sent with `Ready`, if it is a FIFO (the
    /// init is not trusted with handing over anything else).
    fn new(fd: Option<OwnedFd>) -> Result<MaskChannel, SandboxError> {
        let Some(fd) = fd else {
            return Err(SandboxError::Protocol(
                "the sandbox init sent no mask channel".into(),
            ));
        };
        let stat =
            rustix::fs::fstat(&fd).map_err(|e| SandboxError::io("stat the mask channel", e))?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::Fifo {
            return Err(SandboxError::Protocol(
                "the sandbox init sent a mask channel that is not a FIFO".into(),
            ));
        }
        rustix::fs::fcntl_setfl(
            &fd,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK,
        )
        .map_err(|e| SandboxError::io("make the mask channel non-blocking", e))?;
        Ok(MaskChannel {
            fd,
            line: Zeroizing::new(Vec::new()),
        })
    }

    /// Calls `each` with every value (line, without its line break and a
    /// trailing `\r`) written so far. Never blocks.
    pub fn read(&mut self, each: &mut dyn FnMut(&[u8])) {
        let fd = &self.fd;
        let mut buf = Zeroizing::new([0u8; 4096]);
        loop {
            match rustix::io::read(fd, &mut *buf) {
                Ok(0) => {
                    // No writer: a value left without its line break is
                    // complete.
                    deliver_mask(&mut self.line, each);
                    return;
                }
                Ok(n) => {
                    for &b in buf.get(..n).unwrap_or_default() {
                        if b == b'\n' {
                            deliver_mask(&mut self.line, each);
                        } else {
                            if self.line.len() == MAX_MASK_LINE {
                                deliver_mask(&mut self.line, each);
                            }
                            // Never reallocate: a moved buffer would leave
                            // a copy of the value behind, unzeroed.
                            if self.line.capacity() == 0 {
                                self.line.reserve_exact(MAX_MASK_LINE);
                            }
                            self.line.push(b);
                        }
                    }
                }
                Err(Errno::INTR) => continue,
                // AGAIN (a writer is still there), or the channel broke: a
                // partial value waits for its end.
                Err(_) => return,
            }
        }
    }
}

/// Delivers one registered value (without a trailing `\r`) and clears it.
fn deliver_mask(line: &mut Vec<u8>, each: &mut dyn FnMut(&[u8])) {
    let value = match line.split_last() {
        Some((b'\r', rest)) => rest,
        _ => &line[..],
    };
    if !value.is_empty() {
        each(value);
    }
    line.clear();
}

fn write_id_maps(pid: Pid, ids: IdMode) -> Result<(), SandboxError> {
    let proc_dir = Path::new("/proc").join(pid.as_raw_nonzero().get().to_string());
    let write = |name: &str, content: &str| -> Result<(), SandboxError> {
        let path = proc_dir.join(name);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| SandboxError::IdMap {
                path: path.clone(),
                source: e,
            })?;
        // Each map must be written in a single write(2).
        f.write_all(content.as_bytes())
            .map_err(|e| SandboxError::IdMap {
                path: path.clone(),
                source: e,
            })
    };
    match ids {
        IdMode::Privileged { uid, gid } => {
            write("uid_map", &format!("0 {uid} 1\n"))?;
            write("gid_map", &format!("0 {gid} 1\n"))?;
        }
        IdMode::Rootless { uid, gid } => {
            write("setgroups", "deny")?;
            write("uid_map", &format!("0 {uid} 1\n"))?;
            write("gid_map", &format!("0 {gid} 1\n"))?;
        }
    }
    Ok(())
}

fn kill_and_reap_pid(pid: Pid) {
    let _ = rustix::process::kill_process(pid, Signal::KILL);
    let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
}

const INIT_ARGV0_C: &CStr = c"airlock-sandbox-init";
const _: () = {
    // INIT_ARGV0 and its C twin must agree.
    let a = INIT_ARGV0.as_bytes();
    let b = INIT_ARGV0_C.to_bytes();
    assert!(a.len() == b.len());
    let mut i = 0;
    while i < a.len() {
        assert!(a[i] == b[i]);
        i += 1;
    }
};

/// Everything the child needs between clone and exec, prepared beforehand.
struct ChildPlan {
    sync: RawFd,
    control: RawFd,
    drop_groups: bool,
    exe: &'static CStr,
    dev_null: &'static CStr,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
}

/// The fd number at which the init finds its control socket.
pub(crate) const CONTROL_FD: RawFd = 3;

/// Runs in the cloned child. Only async-signal-safe raw system calls: the
/// parent is multi-threaded and any lock may be held by a thread that does
/// not exist here.
fn child_after_clone(plan: &ChildPlan) -> ! {
    // SAFETY: the fds were open in the parent at clone time and stay open in
    // this child's copy of the fd table until exec.
    let sync = unsafe { BorrowedFd::borrow_raw(plan.sync) };
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(sync, &mut byte) {
            Ok(1) => break,
            Err(Errno::INTR) => continue,
            // The runner died or gave up before mapping our ids.
            _ => child_exit(10),
        }
    }
    let root_gid = rustix::process::Gid::ROOT;
    let root_uid = rustix::process::Uid::ROOT;
    if rustix::thread::set_thread_res_gid(root_gid, root_gid, root_gid).is_err() {
        child_exit(11);
    }
    if plan.drop_groups && rustix::thread::set_thread_groups(&[]).is_err() {
        child_exit(12);
    }
    if rustix::thread::set_thread_res_uid(root_uid, root_uid, root_uid).is_err() {
        child_exit(13);
    }
    // Armed after the uid change, which would clear it. If the runner dies
    // the whole sandbox dies with it.
    if rustix::process::set_parent_process_death_signal(Some(Signal::KILL)).is_err() {
        child_exit(14);
    }
    if plan.control == CONTROL_FD {
        // SAFETY: fd 3 is the open control socket (checked just above).
        let fd = unsafe { BorrowedFd::borrow_raw(CONTROL_FD) };
        if rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()).is_err() {
            child_exit(15);
        }
    } else {
        // SAFETY: dup2 on two valid fd numbers; it clears CLOEXEC on fd 3,
        // which is what passes the socket through exec.
        if unsafe { libc::dup2(plan.control, CONTROL_FD) } < 0 {
            child_exit(15);
        }
    }
    // The init must not hold the runner's stdin, stdout or stderr (a
    // terminal, perhaps): it reports only through the control socket.
    // SAFETY: open on a NUL-terminated path; the result is checked.
    let null = unsafe { libc::open(plan.dev_null.as_ptr(), libc::O_RDWR) };
    if null < 0 {
        child_exit(18);
    }
    for fd in 0..3 {
        // SAFETY: dup2 on valid fd numbers; fd 3 (the control socket) is
        // never a target, and `null` is not 3 because fd 3 is taken.
        if fd != null && unsafe { libc::dup2(null, fd) } < 0 {
            child_exit(19);
        }
    }
    if null > CONTROL_FD {
        // SAFETY: closing the /dev/null fd we opened above.
        unsafe { libc::close(null) };
    }
    // SAFETY: exe, argv and envp are NUL-terminated C strings and
    // NULL-terminated pointer arrays built before the clone; execve only
    // returns on failure.
    unsafe {
        libc::execve(plan.exe.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr());
    }
    child_exit(16)
}

fn child_exit(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or
    // touching the parent's (copied) heap state; always safe.
    unsafe { libc::_exit(code) }
}
