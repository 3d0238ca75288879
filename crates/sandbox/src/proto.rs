//! The control protocol between the runner and the sandbox init.
//!
//! One `SOCK_SEQPACKET` socket pair; each message is one JSON datagram, and a
//! `Run` request carries the step's output pipe as `SCM_RIGHTS`. The init runs
//! as the job's own user, so everything it says is untrusted: the runner
//! bounds message sizes, parses strictly, and never acts on a message beyond
//! reporting it.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{CommandSpec, Layers, SandboxConfig};

/// Largest datagram either side sends; a step script must fit in it.
pub const MAX_MESSAGE: usize = 128 * 1024;

/// Most fds one message carries (the source and the secrets of a job).
pub const MAX_FDS: usize = 64;

/// Runner -> init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToInit {
    /// Build the job-independent part of the file system with these layers
    /// and report `Prepared`.
    Prepare(Layers),
    /// Finish the file system for this job, harden, and report `Ready`.
    /// Carries the job's source directory as an fd, then one sealed memfd
    /// per secret, named in order by the list.
    Setup(SandboxConfig, Vec<String>),
    /// Run a command with the attached fd as its stdout and stderr.
    Run(CommandSpec),
}

/// Init -> runner.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromInit {
    /// The job-independent part is built; waiting for `Setup`.
    Prepared,
    /// The sandbox is built; commands may run.
    Ready,
    /// The network watch filter is installed (after `Ready`, when seccomp
    /// is on); its listener is this fd of the init, for the runner to take
    /// with `pidfd_getfd`. (It cannot travel in a message: `sendmsg` is one
    /// of the calls the filter holds until the runner answers.)
    Watching { fd: i32 },
    /// Setup failed at `stage`.
    SetupFailed { stage: String, error: String },
    /// The command could not be started.
    SpawnFailed { error: String },
    /// The command exited with this code.
    Exited { code: i32 },
    /// The command was killed by this signal.
    Signaled { signal: i32 },
}

/// Sends one message, with `fds` attached.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    msg: &impl Serialize,
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    if bytes.len() > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "control message of {} bytes exceeds the {} byte limit",
                bytes.len(),
                MAX_MESSAGE
            ),
        ));
    }
    if fds.is_empty() {
        // send(2) is sendto without an address, which the init's network
        // watch filter lets through without asking the runner.
        loop {
            match rustix::net::send(sock, &bytes, SendFlags::NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other(
            "too many fds for one control message",
        ));
    }
    loop {
        match sendmsg(
            sock,
            &[IoSlice::new(&bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and the fds it carries; `None` when the peer has
/// closed the socket.
pub(crate) fn recv<T: DeserializeOwned>(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        match recvmsg(
            sock,
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(got) => break got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut fds = Vec::new();
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = msg {
            fds.extend(received);
        }
    }
    if got.bytes == 0 {
        return Ok(None);
    }
    if got.flags.contains(ReturnFlags::TRUNC) || got.flags.contains(ReturnFlags::CTRUNC) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "truncated control message",
        ));
    }
    let bytes = buf.get(..got.bytes).unwrap_or_default();
    let msg = serde_json::from_slice(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(Some((msg, fds)))
}
