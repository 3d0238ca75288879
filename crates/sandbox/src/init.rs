//! The sandbox init: pid 1 of the job's pid namespace.
//!
//! It is the runner's own binary, re-executed (argv[0] = [`INIT_ARGV0`]) right
//! after clone, so it starts single-threaded with a clean heap. It builds the
//! file system (see [`crate::rootfs`]), then runs the commands the runner
//! sends, one at a time, reaping every orphan the job leaves behind. When the
//! runner closes the control socket or dies, the init exits and the kernel
//! kills everything left in the namespace.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use rustix::io::Errno;
use rustix::process::{Pid, WaitOptions};

use crate::config::{CommandSpec, SandboxConfig};
use crate::proto::{self, FromInit, ToInit, MAX_MESSAGE};
use crate::rootfs::{self, SetupError};
use crate::spawn::CONTROL_FD;
use crate::{caps, landlock, netns, rlimits, seccomp};

/// argv[0] under which the runner's binary acts as the sandbox init.
pub const INIT_ARGV0: &str = "airlock-sandbox-init";

/// If this process was started as the sandbox init, runs it and exits;
/// otherwise returns at once. Every binary that creates sandboxes (the
/// `airlock` binary, test harnesses) calls this first thing in `main`.
pub fn run_if_init() {
    let mut args = std::env::args_os();
    if args.next().is_some_and(|a| a == INIT_ARGV0) && args.next().is_none() {
        std::process::exit(run());
    }
}

fn run() -> i32 {
    // Own session: no terminal signals from the runner's terminal reach the
    // job, and nothing can TIOCSTI into it.
    let _ = rustix::process::setsid();
    // Not dumpable: the job runs as the same user, but cannot read the
    // init's memory, environment or fds through /proc/1, nor ptrace it.
    let _ = rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
    close_inherited_fds();
    // Files the init creates (the generated /etc) are 0644, directories 0755.
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
    // SAFETY: the runner placed the control socket at fd 3 just before exec
    // (spawn::child_after_clone) and nothing else owns that fd.
    let control = unsafe { OwnedFd::from_raw_fd(CONTROL_FD) };
    let mut buf = vec![0u8; MAX_MESSAGE + 1];

    let fail = |stage: String, error: String| {
        let _ = proto::send(
            control.as_fd(),
            &FromInit::SetupFailed { stage, error },
            &[],
        );
    };
    let layers = match proto::recv::<ToInit>(control.as_fd(), &mut buf) {
        Ok(Some((ToInit::Prepare(layers), _))) => layers,
        _ => return 2,
    };
    if let Err(e) = rootfs::prepare(&layers) {
        fail(e.stage, e.error);
        return 1;
    }
    if proto::send(control.as_fd(), &FromInit::Prepared, &[]).is_err() {
        return 3;
    }
    let (config, names, source, secrets) = match proto::recv::<ToInit>(control.as_fd(), &mut buf) {
        Ok(Some((ToInit::Setup(config, names), fds))) if fds.len() == names.len() + 1 => {
            let mut fds = fds.into_iter();
            let Some(source) = fds.next() else { return 2 };
            (config, names, source, fds.collect::<Vec<_>>())
        }
        // The runner dropped a spare it did not need.
        _ => return 0,
    };
    if config.layers != layers {
        fail(
            "setup".into(),
            format!("prepared with {layers:?}, asked for {:?}", config.layers),
        );
        return 1;
    }
    // The runner has moved us into the job's cgroup: make it the root of
    // the job's cgroup namespace, so the job sees "/" and nothing of the
    // host's tree.
    let flags = rustix::thread::UnshareFlags::NEWCGROUP;
    // SAFETY: only the cgroup namespace is unshared (not the fd table), and
    // this process has a single thread.
    let unshared = unsafe { rustix::thread::unshare_unsafe(flags) };
    if let Err(e) = unshared {
        fail("cgroup namespace".into(), e.to_string());
        return 1;
    }
    let secrets: Vec<(&str, OwnedFd)> = names.iter().map(String::as_str).zip(secrets).collect();
    let finished = rootfs::finish(&config, source.as_fd(), &secrets);
    drop(source);
    drop(secrets);
    // Sockets before hardening: binding port 53 needs a capability.
    let egress = match config.egress {
        true => match netns::egress_sockets() {
            Ok(sockets) => sockets.into_iter().collect(),
            Err(e) => {
                fail("egress sockets".into(), e.to_string());
                return 1;
            }
        },
        false => Vec::new(),
    };
    let mask = match finished.and_then(|mask| harden(&config).map(|()| mask)) {
        Ok(mask) => mask,
        Err(e) => {
            fail(e.stage, e.error);
            return 1;
        }
    };
    // The read end of the mask channel and the egress sockets go to the
    // runner; the init keeps no copy (nothing in the sandbox may read what
    // the job registers, or answer in the proxy's place).
    let mut fds = vec![mask.as_fd()];
    fds.extend(egress.iter().map(AsFd::as_fd));
    if proto::send(control.as_fd(), &FromInit::Ready, &fds).is_err() {
        return 3;
    }
    drop(mask);
    drop(egress);
    // Last: from here on every network call that can name a destination
    // waits for the runner, which takes the listener as soon as it reads
    // `Watching` (before it sends the first command).
    let mut watch = if config.layers.seccomp {
        let installed = seccomp::watch_program().and_then(|p| seccomp::apply_with_listener(&p));
        match installed {
            Ok(fd) => {
                let msg = FromInit::Watching { fd: fd.as_raw_fd() };
                if proto::send(control.as_fd(), &msg, &[]).is_err() {
                    return 3;
                }
                Some(fd)
            }
            Err(e) => {
                fail("network watch".into(), e);
                return 1;
            }
        }
    } else {
        None
    };

    loop {
        reap_orphans();
        let request = proto::recv::<ToInit>(control.as_fd(), &mut buf);
        // The runner has the listener once it sends anything.
        drop(watch.take());
        let (command, output) = match request {
            Ok(Some((ToInit::Run(command), fds))) if fds.len() == 1 => {
                match fds.into_iter().next() {
                    Some(fd) => (command, fd),
                    None => return 0,
                }
            }
            // EOF, an error or a malformed request: the runner is done.
            _ => return 0,
        };
        let reply = run_command(&command, output);
        if proto::send(control.as_fd(), &reply, &[]).is_err() {
            return 4;
        }
    }
}

/// Applies the hardening layers to the init itself, after the file system
/// is built: every command it starts inherits them. Order matters: rlimits
/// and capabilities first (dropping capabilities needs CAP_SETPCAP, which
/// is gone afterwards), then Landlock and seccomp, which need only
/// no_new_privs.
fn harden(config: &SandboxConfig) -> Result<(), SetupError> {
    let layers = config.layers;
    let step = |stage: &str, r: Result<(), String>| {
        r.map_err(|error| SetupError {
            stage: stage.into(),
            error,
        })
    };
    if layers.rlimits {
        step("rlimits", rlimits::apply(config))?;
    }
    if layers.capabilities {
        step("capabilities", caps::drop_all())?;
    } else {
        // Landlock and seccomp need no_new_privs (or CAP_SYS_ADMIN).
        step(
            "no_new_privs",
            rustix::thread::set_no_new_privs(true).map_err(|e| e.to_string()),
        )?;
    }
    if layers.landlock {
        step("landlock", landlock::apply(config))?;
    }
    if layers.seccomp {
        let programs = seccomp::programs();
        step("seccomp", programs.and_then(|p| seccomp::apply(&p)))?;
    }
    Ok(())
}

/// Runs one command with `output` as its stdout and stderr; waits for it.
fn run_command(spec: &CommandSpec, output: OwnedFd) -> FromInit {
    let Some((program, args)) = spec.argv.split_first() else {
        return FromInit::SpawnFailed {
            error: "empty command".into(),
        };
    };
    let stderr = match output.try_clone() {
        Ok(fd) => fd,
        Err(e) => {
            return FromInit::SpawnFailed {
                error: format!("dup output: {e}"),
            }
        }
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output))
        .stderr(Stdio::from(stderr));
    // Each command leads a process group of its own. The init's session
    // (made at its start) has no controlling terminal, and nothing in the
    // sandbox can reach the runner's. A process group, unlike a new session,
    // lets std spawn with posix_spawn (vfork semantics) instead of fork.
    command.process_group(0);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            return FromInit::SpawnFailed {
                error: format!("{program}: {e}"),
            }
        }
    };
    // Drop the parent's copies of the output pipe so that the runner sees
    // EOF when the last writer in the job closes it.
    drop(command);
    let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) else {
        return FromInit::SpawnFailed {
            error: "impossible child pid".into(),
        };
    };
    loop {
        // Wait for any child: orphans re-parented to us are reaped on the way.
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((p, status))) if p == pid => {
                return match (status.exit_status(), status.terminating_signal()) {
                    (Some(code), _) => FromInit::Exited { code },
                    (None, Some(signal)) => FromInit::Signaled { signal },
                    _ => FromInit::Exited { code: 255 },
                };
            }
            Ok(_) | Err(Errno::INTR) => continue,
            Err(e) => {
                return FromInit::SpawnFailed {
                    error: format!("wait: {e}"),
                }
            }
        }
    }
}

/// Reaps exited orphans without blocking.
fn reap_orphans() {
    while let Ok(Some(_)) = rustix::process::wait(WaitOptions::NOHANG) {}
}

/// Closes every fd above the control socket: the runner's binary may have
/// inherited fds without CLOEXEC from whoever started the runner.
fn close_inherited_fds() {
    let first = u32::try_from(CONTROL_FD + 1).unwrap_or(4);
    // SAFETY: close_range only closes descriptors; none above fd 3 is owned
    // by any Rust object at this point of the init.
    unsafe {
        libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32);
    }
}
