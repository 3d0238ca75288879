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
//! A plain-HTTP exchange ([`relay_http`]) is relayed the same way, except
//! that the response's first bytes are copied through a buffer (one `read`
//! and one `write` for a small response) and only a response that fills it
//! moves the rest with `splice`.
//!
//! A tunnel whose two directions both ended cleanly leaves its pipes empty;
//! they go back to the server's [`Pipes`] for the next tunnel of the same
//! server (job), so that a small proxied request does not pay for creating,
//! sizing and closing two pipes. A pipe that may still hold bytes (an
//! error, the idle timeout) is closed, never reused.
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
/// Empty pipes a server keeps for reuse (two per tunnel), at most.
const POOLED_PIPES: usize = 16;

/// A server's empty pipes, ready for its next tunnels.
#[derive(Default)]
pub(crate) struct Pipes {
    #[cfg(target_os = "linux")]
    free: std::sync::Mutex<Vec<splice::Pipe>>,
}

#[cfg(target_os = "linux")]
impl Pipes {
    /// An empty pipe: a pooled one, else a new one.
    fn take(&self) -> io::Result<splice::Pipe> {
        let pooled = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        pooled.map_or_else(splice::Pipe::new, Ok)
    }

    /// Keeps `pipe` for reuse; it must be empty.
    fn put(&self, pipe: splice::Pipe) {
        let mut free = self
            .free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < POOLED_PIPES {
            free.push(pipe);
        }
    }
}

/// Carries bytes both ways until both sides are done, an error, or
/// `idle` without traffic. Counts bytes delivered to `upstream` in `up`
/// and to `client` in `down`. Takes its pipes from `pipes` and, if both
/// directions end cleanly (so both are empty), gives them back.
pub(crate) async fn run(
    client: &TcpStream,
    upstream: &TcpStream,
    pipes: &Pipes,
    idle: Duration,
    up: &mut u64,
    down: &mut u64,
) -> io::Result<()> {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let watchdog = watchdog(&activity, start, idle);
    let both = async {
        #[cfg(not(target_os = "linux"))]
        let _ = pipes;
        #[cfg(target_os = "linux")]
        if let (Ok(a), Ok(b)) = (pipes.take(), pipes.take()) {
            tokio::try_join!(
                splice::pump(client, upstream, &a, None, up, &activity, start),
                splice::pump(upstream, client, &b, None, down, &activity, start),
            )?;
            // Each pump returns Ok only at end-of-file with its pipe
            // drained; on an error or the idle timeout the pipes are
            // dropped (closed) with this future instead.
            pipes.put(a);
            pipes.put(b);
            return Ok(());
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

/// Relays one plain-HTTP exchange (the request head is already sent
/// upstream, with `Connection: close`) like [`run`] relays a tunnel: until
/// both sides are done, an error, or `idle` without traffic; ends of file
/// half-close the other side. Counts like [`run`].
///
/// The response's first bytes go through `buf` (the buffer the request
/// head was read into): a small response costs one `read` and one `write`
/// and no pipe. A read that fills `buf` switches the rest of the response
/// to `splice(2)` through a pooled pipe. The job's side (a request body,
/// if any) moves through a pooled pipe as in a tunnel.
///
/// (Closing both sockets at the remote's end-of-file instead of
/// half-closing the job's saves two `shutdown`s per request, but measured
/// 10-20 us slower to the first byte on loopback, and could reset a job
/// that is still sending.)
pub(crate) async fn relay_http(
    client: &TcpStream,
    upstream: &TcpStream,
    pipes: &Pipes,
    buf: Vec<u8>,
    idle: Duration,
    up: &mut u64,
    down: &mut u64,
) -> io::Result<()> {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let watchdog = watchdog(&activity, start, idle);
    let request = async {
        // Usually nothing more comes from the job: a pooled pipe costs no
        // allocation while it waits for the end-of-file.
        #[cfg(target_os = "linux")]
        if let Ok(pipe) = pipes.take() {
            splice::pump(client, upstream, &pipe, None, up, &activity, start).await?;
            pipes.put(pipe);
            return Ok(());
        }
        copy(client, upstream, up, &activity, start).await
    };
    let response = response(upstream, client, pipes, buf, down, &activity, start);
    let both = async { tokio::try_join!(request, response).map(|_| ()) };
    tokio::select! {
        result = both => result,
        () = watchdog => Ok(()),
    }
}

/// The remote-to-job direction of [`relay_http`]: copies through `buf`,
/// and switches to `splice` once a read fills it.
async fn response(
    src: &TcpStream,
    dst: &TcpStream,
    pipes: &Pipes,
    mut buf: Vec<u8>,
    count: &mut u64,
    activity: &AtomicU64,
    start: Instant,
) -> io::Result<()> {
    loop {
        match copy_once(src, dst, &mut buf, count, activity, start).await? {
            0 => return Ok(()),
            n if n == buf.len() => break,
            _ => {}
        }
    }
    // A large body: the rest moves through a pipe, kernel to kernel.
    #[cfg(target_os = "linux")]
    if let Ok(pipe) = pipes.take() {
        drop(buf);
        splice::pump(src, dst, &pipe, None, count, activity, start).await?;
        pipes.put(pipe);
        return Ok(());
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pipes;
    copy(src, dst, count, activity, start).await
}

/// Moves exactly `len` bytes from `src` to `dst` (a response body whose
/// length is known), through a pooled pipe, or a buffer if no pipe can be
/// had; fails on an end of `src` before them, or `idle` without a byte.
/// Counts bytes delivered in `count`.
pub(crate) async fn exact(
    src: &TcpStream,
    dst: &TcpStream,
    pipes: &Pipes,
    len: u64,
    idle: Duration,
    count: &mut u64,
) -> io::Result<()> {
    let start = Instant::now();
    let activity = AtomicU64::new(0);
    let moved = async {
        #[cfg(target_os = "linux")]
        if let Ok(pipe) = pipes.take() {
            splice::pump(src, dst, &pipe, Some(len), count, &activity, start).await?;
            pipes.put(pipe);
            return Ok(());
        }
        #[cfg(not(target_os = "linux"))]
        let _ = pipes;
        let mut buf = vec![0u8; COPY_BUF];
        let mut left = len;
        while left > 0 {
            let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
            match copy_once(src, dst, &mut buf[..want], count, &activity, start).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => left -= n as u64,
            }
        }
        Ok(())
    };
    tokio::select! {
        result = moved => result,
        () = watchdog(&activity, start, idle) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// Resolves once no byte moved (see [`touch`]) for `idle`.
async fn watchdog(activity: &AtomicU64, start: Instant, idle: Duration) {
    loop {
        let last = Duration::from_millis(activity.load(Ordering::Relaxed));
        let deadline = start + last + idle;
        if Instant::now() >= deadline {
            return;
        }
        sleep_until(deadline).await;
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
    while copy_once(src, dst, &mut buf, count, activity, start).await? > 0 {}
    Ok(())
}

/// Moves what `src` has (at most `buf.len()` bytes) to `dst`; returns how
/// many bytes, 0 at the end of `src` (then `dst` is shut for writing).
async fn copy_once(
    src: &TcpStream,
    dst: &TcpStream,
    buf: &mut [u8],
    count: &mut u64,
    activity: &AtomicU64,
    start: Instant,
) -> io::Result<usize> {
    loop {
        src.readable().await?;
        let n = match src.try_read(buf) {
            Ok(0) => {
                shutdown_write(dst);
                return Ok(0);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        touch(activity, start);
        write_all(dst, &buf[..n]).await?;
        *count += n as u64;
        touch(activity, start);
        return Ok(n);
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

    /// One direction: `src` -> pipe -> `dst`, to the end of `src` (then
    /// `dst` is shut for writing), or exactly `limit` bytes if given (an
    /// end of `src` before them is an error; `dst` stays open).
    pub(super) async fn pump(
        src: &TcpStream,
        dst: &TcpStream,
        pipe: &Pipe,
        mut limit: Option<u64>,
        count: &mut u64,
        activity: &AtomicU64,
        start: Instant,
    ) -> io::Result<()> {
        loop {
            let want = match limit {
                Some(0) => return Ok(()),
                Some(left) => usize::try_from(left).map_or(pipe.capacity, |l| l.min(pipe.capacity)),
                None => pipe.capacity,
            };
            // The pipe is empty here, so EAGAIN can only mean "no data".
            let n = loop {
                src.readable().await?;
                match src.try_io(Interest::READABLE, || {
                    Ok(rustix::pipe::splice(
                        src,
                        None,
                        &pipe.write,
                        None,
                        want,
                        FLAGS,
                    )?)
                }) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                if limit.is_some() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                shutdown_write(dst);
                return Ok(());
            }
            if let Some(left) = limit.as_mut() {
                *left -= n as u64;
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected pair of loopback sockets.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let a = TcpStream::connect(addr).await.expect("connect");
        let (b, _) = listener.accept().await.expect("accept");
        (a, b)
    }

    fn pattern(len: u32, modulus: u32) -> Vec<u8> {
        (0..len)
            .map(|i| u8::try_from(i % modulus).expect("below 256"))
            .collect()
    }

    fn pooled(pipes: &Pipes) -> usize {
        pipes.free.lock().expect("pool lock").len()
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Job sends `up`, the remote sends `down`, both close; returns what
    /// the other ends read.
    async fn through(pipes: &Pipes, up: &[u8], down: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let (mut job, client) = pair().await;
        let (upstream, mut remote) = pair().await;
        let (mut sent_up, mut sent_down) = (0, 0);
        let idle = Duration::from_secs(10);
        let tunnel = run(
            &client,
            &upstream,
            pipes,
            idle,
            &mut sent_up,
            &mut sent_down,
        );
        let (mut job_r, mut job_w) = job.split();
        let (mut remote_r, mut remote_w) = remote.split();
        let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
        let (result, a, b, c, d) = tokio::join!(
            tunnel,
            async {
                job_w.write_all(up).await?;
                job_w.shutdown().await
            },
            async {
                remote_w.write_all(down).await?;
                remote_w.shutdown().await
            },
            remote_r.read_to_end(&mut got_up),
            job_r.read_to_end(&mut got_down),
        );
        result.expect("tunnel");
        a.expect("job writes");
        b.expect("remote writes");
        c.expect("remote reads");
        d.expect("job reads");
        assert_eq!((sent_up, sent_down), (up.len() as u64, down.len() as u64));
        (got_up, got_down)
    }

    #[test]
    fn http_responses_small_and_large_arrive_whole() {
        runtime().block_on(async {
            for len in [2, 16 * 1024 - 1, 16 * 1024, 16 * 1024 + 1, 900_000] {
                let pipes = Pipes::default();
                let (mut job, client) = pair().await;
                let (upstream, mut remote) = pair().await;
                let down = pattern(len, 241);
                let (mut up_n, mut down_n) = (0, 0);
                let idle = Duration::from_secs(10);
                let buf = vec![0u8; 16 * 1024];
                let relay = relay_http(
                    &client,
                    &upstream,
                    &pipes,
                    buf,
                    idle,
                    &mut up_n,
                    &mut down_n,
                );
                let (mut got_up, mut got_down) = (Vec::new(), Vec::new());
                let (job_r, job_w) = job.split();
                let (remote_r, remote_w) = remote.split();
                let (result, a, b, c, d) = tokio::join!(
                    relay,
                    async move {
                        let mut w = job_w;
                        w.write_all(b"body").await?;
                        w.shutdown().await
                    },
                    async move {
                        let mut w = remote_w;
                        w.write_all(&down).await?;
                        w.shutdown().await
                    },
                    async move {
                        let mut r = remote_r;
                        r.read_to_end(&mut got_up).await.map(|_| got_up)
                    },
                    async move {
                        let mut r = job_r;
                        r.read_to_end(&mut got_down).await.map(|_| got_down)
                    },
                );
                result.expect("relay");
                a.expect("job writes");
                b.expect("remote writes");
                assert_eq!(c.expect("remote reads"), b"body");
                assert_eq!(d.expect("job reads"), pattern(len, 241), "len {len}");
                assert_eq!((up_n, down_n), (4, u64::from(len)));
                // The request's pipe, and the response's once it switched
                // to splice (certain only when reads must fill the buffer).
                let pooled = pooled(&pipes);
                match len {
                    2 => assert_eq!(pooled, 1),
                    900_000 => assert_eq!(pooled, 2),
                    _ => assert!((1..=2).contains(&pooled)),
                }
            }
        });
    }

    #[test]
    fn clean_tunnels_reuse_their_pipes_and_carry_every_byte() {
        runtime().block_on(async {
            let pipes = Pipes::default();
            let (up, down) = (pattern(700_000, 251), pattern(900_000, 241));
            for _ in 0..3 {
                let (got_up, got_down) = through(&pipes, &up, &down).await;
                assert!(got_up == up && got_down == down, "bytes changed");
                assert_eq!(pooled(&pipes), 2);
            }
        });
    }

    #[test]
    fn a_tunnel_ended_by_the_idle_timeout_does_not_return_its_pipes() {
        runtime().block_on(async {
            let pipes = Pipes::default();
            let (mut job, client) = pair().await;
            let (upstream, _remote) = pair().await;
            // The remote never reads: the job's bytes back up into the
            // tunnel's pipe and stay there until the idle timeout.
            let job_writes = async {
                let chunk = pattern(64 << 10, 239);
                while job.write_all(&chunk).await.is_ok() {}
                std::future::pending::<()>().await;
            };
            let (mut up, mut down) = (0, 0);
            let idle = Duration::from_millis(200);
            let result = tokio::select! {
                result = run(&client, &upstream, &pipes, idle, &mut up, &mut down) => result,
                () = job_writes => unreachable!("the job's writes block"),
            };
            result.expect("the idle timeout is a clean end");
            assert!(up > 0, "some bytes went through before the remote stalled");
            assert_eq!(pooled(&pipes), 0);
        });
    }
}
