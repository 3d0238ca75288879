//! Plain-HTTP exchanges on upstream connections the proxy keeps between a
//! job's requests.
//!
//! A job's `curl http://...` opens a new connection to the proxy for each
//! request, and the proxy used to open a new one upstream too and close it
//! after the response: two TCP handshakes and two closes per request. For a
//! [`Persistent`](crate::http::Persistent) request the proxy now sends the
//! head without `Connection: close`, reads the response's framing
//! ([`crate::response`]), relays exactly one response, and keeps the
//! upstream connection for the job's next request to the same address,
//! within limits: at most [`KEPT_PER_JOB`] idle connections per job (the
//! oldest is closed first), each kept for at most [`KEPT_IDLE`], checked
//! still open before reuse. Only idempotent requests (`GET`, `HEAD`,
//! `OPTIONS`) are sent on a kept connection, so that one the remote closed
//! meanwhile can be retried on a new connection (RFC 9112 section 9.3.1).
//!
//! Every request is still decided on its own (allowlist, resolution,
//! address vetting, event): a kept connection is only taken for an address
//! the request was allowed to reach. Connections are kept per job (per
//! [`Server`](crate::Server)), never shared between jobs.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use crate::http::Request;
use crate::response::{parse_response, Body, Chunks, ResponseError, MAX_RESPONSE_HEAD};
use crate::server::Shared;
use crate::tunnel::{self, write_all};

/// Idle upstream connections a job's proxy keeps, at most.
pub(crate) const KEPT_PER_JOB: usize = 8;
/// How long an idle upstream connection is kept.
pub(crate) const KEPT_IDLE: Duration = Duration::from_secs(15);
/// Buffer for a response body moved through user space.
const BODY_BUF: usize = 64 * 1024;

/// An idle connection: the host the job named, the address, since when.
type Idle = (String, SocketAddr, TcpStream, Instant);

/// A job's idle upstream connections, oldest first.
#[derive(Default)]
pub(crate) struct Upstreams {
    idle: Mutex<Vec<Idle>>,
}

impl Upstreams {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A kept connection opened for `host` to one of `addrs` that is still
    /// open, if any; closes the expired and the closed ones it meets.
    /// (Keyed by the name too, as browsers and curl do: a connection opened
    /// for one virtual host never carries another's requests.)
    pub(crate) fn take(&self, host: &str, addrs: &[SocketAddr]) -> Option<(TcpStream, SocketAddr)> {
        let mut idle = self.idle();
        idle.retain(|(.., since)| since.elapsed() < KEPT_IDLE);
        while let Some(i) = idle
            .iter()
            .rposition(|(name, addr, ..)| name == host && addrs.contains(addr))
        {
            let (_, addr, stream, _) = idle.remove(i);
            if still_open(&stream) {
                return Some((stream, addr));
            }
        }
        None
    }

    /// Keeps `stream` (opened for `host`, to `addr`, between exchanges)
    /// for a later request.
    pub(crate) fn put(&self, host: &str, addr: SocketAddr, stream: TcpStream) {
        let mut idle = self.idle();
        if idle.len() >= KEPT_PER_JOB {
            idle.remove(0);
        }
        idle.push((host.to_owned(), addr, stream, Instant::now()));
    }
}

/// Whether an idle connection is still open and quiet: nothing to read
/// (a remote that closed, or sent bytes nobody asked for, is not reused).
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        rustix::net::recv(
            stream,
            &mut byte,
            rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT
        ),
        Err(rustix::io::Errno::AGAIN)
    )
}

/// Why an exchange ended early.
#[derive(Debug)]
pub(crate) enum Failed {
    /// Nothing came back (the remote closed or reset first): the request
    /// can be sent again on a new connection if it is idempotent.
    Unanswered(io::Error),
    /// The response cannot be relayed (bad framing, a head too large, an
    /// end before a complete head); nothing was given to the job yet.
    Refused(ResponseError),
    /// A failure after the job got part of the response: close both.
    Broken,
}

/// Sends `req` (a [`Persistent`](crate::http::Persistent) request) on
/// `upstream` and relays its response to `client` through `buf` (the
/// buffer the request head was read into; grown for a large response head
/// or a streamed body); returns whether `upstream` may serve another
/// request. Every wait is limited to the idle timeout. A body of known
/// length beyond what came with the head moves kernel to kernel through one
/// of the server's pipes. Counts bytes sent upstream in `up` and to the job
/// in `down`.
pub(crate) async fn exchange(
    shared: &Shared,
    client: &TcpStream,
    upstream: &TcpStream,
    req: &Request,
    buf: &mut Vec<u8>,
    up: &mut u64,
    down: &mut u64,
) -> Result<bool, Failed> {
    let (pipes, idle) = (&shared.pipes, shared.config.idle_timeout);
    let head_request = req.persistent.is_some_and(|p| p.head);
    let head = &req.upstream_head;
    match timeout(idle, write_all(upstream, head)).await {
        Ok(Ok(())) => *up += head.len() as u64,
        Ok(Err(e)) => return Err(Failed::Unanswered(e)),
        Err(_) => return Err(Failed::Unanswered(io::ErrorKind::TimedOut.into())),
    }
    let mut filled = 0;
    let mut answered = false;
    let mut res = loop {
        let mut res = loop {
            match parse_response(&buf[..filled], head_request) {
                Ok(Some(res)) => break res,
                Ok(None) => {}
                Err(_) if answered => return Err(Failed::Broken),
                Err(e) => return Err(Failed::Refused(e)),
            }
            if filled == buf.len() {
                buf.resize((buf.len() * 2).min(MAX_RESPONSE_HEAD), 0);
            }
            match read(upstream, &mut buf[filled..], idle).await {
                Ok(0) | Err(_) if !answered && filled == 0 => {
                    return Err(Failed::Unanswered(io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => {
                    let why = "the remote closed before a complete response head";
                    return Err(if answered {
                        Failed::Broken
                    } else {
                        Failed::Refused(ResponseError::Malformed(why.into()))
                    });
                }
                Ok(n) => filled += n,
                Err(_) if answered => return Err(Failed::Broken),
                Err(e) => {
                    let why = format!("reading the response head: {e}");
                    return Err(Failed::Refused(ResponseError::Malformed(why)));
                }
            }
        };
        answered = true;
        buf.copy_within(res.head_len..filled, 0);
        filled -= res.head_len;
        if !res.interim() {
            break res;
        }
        send(client, &mut res.head, &[], idle, down).await?;
    };
    // The head goes with the body's first bytes, in one write.
    let mut head = std::mem::take(&mut res.head);
    let complete = match res.body {
        Body::Empty => {
            send(client, &mut head, &[], idle, down).await?;
            filled == 0
        }
        Body::Length(len) => {
            let take = usize::try_from(len).map_or(filled, |l| l.min(filled));
            send(client, &mut head, &buf[..take], idle, down).await?;
            let left = len - take as u64;
            if left > 0 {
                tunnel::exact(upstream, client, pipes, left, idle, down)
                    .await
                    .map_err(|_| Failed::Broken)?;
            }
            filled == take
        }
        Body::Chunked => {
            buf.resize(buf.len().max(BODY_BUF), 0);
            let mut chunks = Chunks::default();
            loop {
                let used = chunks.feed(&buf[..filled]).map_err(|_| Failed::Broken)?;
                send(client, &mut head, &buf[..used], idle, down).await?;
                if chunks.done() {
                    break used == filled;
                }
                filled = next(upstream, buf, idle).await?;
            }
        }
        Body::UntilClose => {
            send(client, &mut head, &buf[..filled], idle, down).await?;
            buf.resize(buf.len().max(BODY_BUF), 0);
            loop {
                match read(upstream, buf, idle).await {
                    Ok(0) => break false,
                    Ok(n) => send(client, &mut head, &buf[..n], idle, down).await?,
                    Err(_) => return Err(Failed::Broken),
                }
            }
        }
    };
    Ok(complete && res.reusable)
}

/// Reads what `stream` has into `buf`, waiting at most `idle`.
async fn read(stream: &TcpStream, buf: &mut [u8], idle: Duration) -> io::Result<usize> {
    let once = async {
        loop {
            stream.readable().await?;
            match stream.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
        }
    };
    timeout(idle, once)
        .await
        .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
}

/// The next bytes of a body that has not ended: an end of file or an error
/// here breaks the exchange.
async fn next(upstream: &TcpStream, buf: &mut [u8], idle: Duration) -> Result<usize, Failed> {
    match read(upstream, buf, idle).await {
        Ok(0) | Err(_) => Err(Failed::Broken),
        Ok(n) => Ok(n),
    }
}

/// Gives `first` (a head not sent yet, or nothing) and then `bytes` to the
/// job, in one write where the socket takes them; empties `first`. Waits at
/// most `idle`.
async fn send(
    client: &TcpStream,
    first: &mut Vec<u8>,
    bytes: &[u8],
    idle: Duration,
    down: &mut u64,
) -> Result<(), Failed> {
    let total = first.len() + bytes.len();
    let all = async {
        let mut done = 0;
        while done < total {
            client.writable().await?;
            let slices = if done < first.len() {
                [IoSlice::new(&first[done..]), IoSlice::new(bytes)]
            } else {
                [
                    IoSlice::new(&bytes[done - first.len()..]),
                    IoSlice::new(&[]),
                ]
            };
            match client.try_write_vectored(&slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok::<(), io::Error>(())
    };
    match timeout(idle, all).await {
        Ok(Ok(())) => {
            first.clear();
            *down += total as u64;
            Ok(())
        }
        _ => Err(Failed::Broken),
    }
}
