//! Moving bytes between the job and the remote once a connection is
//! allowed.
//!
//! On Linux each direction goes socket -> pipe -> socket with `splice(2)`,
//! so payload never enters user space; readiness comes from tokio (the
//! sockets are non-blocking and `try_io` clears readiness on `EAGAIN`). The
//! pipe is only refilled once it is empty, so an `EAGAIN` from the
//! socket-to-pipe splice always means "socket empty", and one from the
//! pipe-to-socket splice always means "socket full". If pipes cannot be
//! created (fd limit), a plain buffered copy is used instead.
//!
//! A direction that reaches end-of-file shuts down the write side of the
//! other socket (half-close) and the other direction carries on. The
//! tunnel ends when both directions are done, on an error, or when neither
//! direction moved a byte for the idle timeout.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

/// Buffer size per direction for the copying fallback.
const COPY_BUF: usize = 64 * 1024;

/// Carries bytes both ways until both sides are done, an error, or
/// `idle` without traffic. Counts bytes delivered to `upstream` in `up`
/// and to `client` in `down`.
pub(crate) async fn run(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    up: &mut u64,
    down: &mut u64,
) -> io::Result<()> {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let watchdog = async {
        loop {
            let last = Duration::from_millis(activity.load(Ordering::Relaxed));
            let deadline = start + last + idle;
            if Instant::now() >= deadline {
                return;
            }
            sleep_until(deadline).await;
        }
    };
    let both = async {
        #[cfg(target_os = "linux")]
        if let (Ok(a), Ok(b)) = (splice::Pipe::new(), splice::Pipe::new()) {
            return tokio::try_join!(
                splice::pump(client, upstream, &a, up, &activity, start),
                splice::pump(upstream, client, &b, down, &activity, start),
            )
            .map(|_| ());
        }
        tokio::try_join!(
            copy(client, upstream, up, &activity, start),
            copy(upstream, client, down, &activity, start),
        )
        .map(|_| ())
    };
    tokio::select! {
        result = both => result,
        () = watchdog => Ok(()),
    }
}

/// Records that bytes moved now.
fn touch(activity: &AtomicU64, start: Instant) {
    let millis = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    activity.store(millis, Ordering::Relaxed);
}

/// Half-closes `stream` for writing; errors (already closed) do not matter.
fn shutdown_write(stream: &TcpStream) {
    let _ = rustix::net::shutdown(stream, rustix::net::Shutdown::Write);
}

/// Writes all of `data` to `stream`.
pub(crate) async fn write_all(stream: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        stream.writable().await?;
        match stream.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One direction through a user-space buffer.
async fn copy(
    src: &TcpStream,
    dst: &TcpStream,
    count: &mut u64,
    activity: &AtomicU64,
    start: Instant,
) -> io::Result<()> {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        src.readable().await?;
        let n = match src.try_read(&mut buf) {
            Ok(0) => {
                shutdown_write(dst);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        touch(activity, start);
        write_all(dst, &buf[..n]).await?;
        *count += n as u64;
        touch(activity, start);
    }
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::OwnedFd;
    use std::sync::atomic::AtomicU64;

    use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size, pipe_with, PipeFlags, SpliceFlags};
    use tokio::io::Interest;
    use tokio::net::TcpStream;
    use tokio::time::Instant;

    use super::{shutdown_write, touch};

    /// Pipe capacity asked for; the kernel may give less (an unprivileged
    /// user over `pipe-user-pages-soft` gets small pipes, which still work).
    const PIPE_SIZE: usize = 256 * 1024;

    /// A pipe used as the in-kernel buffer of one direction.
    pub(super) struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
        capacity: usize,
    }

    impl Pipe {
        pub(super) fn new() -> io::Result<Pipe> {
            let (read, write) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)?;
            let capacity = fcntl_setpipe_size(&write, PIPE_SIZE)
                .or_else(|_| fcntl_getpipe_size(&write))
                .unwrap_or(4096);
            Ok(Pipe {
                read,
                write,
                capacity,
            })
        }
    }

    const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

    /// One direction: `src` -> pipe -> `dst`.
    pub(super) async fn pump(
        src: &TcpStream,
        dst: &TcpStream,
        pipe: &Pipe,
        count: &mut u64,
        activity: &AtomicU64,
        start: Instant,
    ) -> io::Result<()> {
        loop {
            // The pipe is empty here, so EAGAIN can only mean "no data".
            let n = loop {
                src.readable().await?;
                match src.try_io(Interest::READABLE, || {
                    Ok(rustix::pipe::splice(
                        src,
                        None,
                        &pipe.write,
                        None,
                        pipe.capacity,
                        FLAGS,
                    )?)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                shutdown_write(dst);
                return Ok(());
            }
            touch(activity, start);
            // The pipe holds `pending` bytes, so EAGAIN can only mean
            // "socket buffer full".
            let mut pending = n;
            while pending > 0 {
                dst.writable().await?;
                match dst.try_io(Interest::WRITABLE, || {
                    Ok(rustix::pipe::splice(
                        &pipe.read, None, dst, None, pending, FLAGS,
                    )?)
                }) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(m) => {
                        pending -= m;
                        *count += m as u64;
                        touch(activity, start);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        }
    }
}
