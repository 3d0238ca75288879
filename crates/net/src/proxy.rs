//! One proxy connection: read the head, decide, connect, tunnel.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::time::{timeout, Instant};

use crate::http::{parse_head, HeadError, Parsed, Persistent, Request, MAX_HEAD};
use crate::kept::{self, Failed};
use crate::policy::{decide, literal};
use crate::server::{stopped, Shared};
use crate::{tunnel, Connection, Decision, Kind};

/// How long connecting upstream may take, per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing an error answer to the job may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// After an error answer, how long (and how much) the job's unread input is
/// drained, so that closing does not reset the connection before the job
/// has read the answer.
const LINGER: Duration = Duration::from_millis(500);
const LINGER_BYTES: usize = 64 * 1024;

/// What becomes the connection's event.
struct Record {
    kind: Kind,
    host: String,
    port: u16,
    addr: Option<SocketAddr>,
    decision: Option<Decision>,
    up: u64,
    down: u64,
}

impl Record {
    fn deny(&mut self, reason: impl Into<String>) {
        self.decision = Some(Decision::Denied {
            reason: reason.into(),
        });
    }
}

/// Serves one accepted connection and emits its event.
pub(crate) async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    mut stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
    _permit: OwnedSemaphorePermit,
) {
    let started = Instant::now();
    let mut rec = Record {
        kind: Kind::Http,
        host: String::new(),
        port: 0,
        addr: None,
        decision: None,
        up: 0,
        down: 0,
    };
    tokio::select! {
        () = handle(&shared, stream, &mut rec) => {}
        () = stopped(&mut stop) => {
            if rec.decision.is_none() {
                rec.deny("proxy shut down");
            }
        }
    }
    let decision = rec.decision.unwrap_or_else(|| Decision::Denied {
        reason: "connection ended without a decision".to_owned(),
    });
    shared.emit(Connection {
        kind: rec.kind,
        host: rec.host,
        port: rec.port,
        addr: rec.addr,
        decision,
        bytes_up: rec.up,
        bytes_down: rec.down,
        duration: started.elapsed(),
    });
}

/// Why no request head could be read.
enum HeadFailure {
    Closed,
    Io(io::Error),
    Bad(HeadError),
}

/// Reads until a complete head; returns it and how many bytes of `buf` are
/// filled (the head and whatever followed it).
async fn read_head(stream: &TcpStream, buf: &mut [u8]) -> Result<(Request, usize), HeadFailure> {
    let mut filled = 0;
    loop {
        stream.readable().await.map_err(HeadFailure::Io)?;
        let n = match stream.try_read(&mut buf[filled..]) {
            Ok(0) => return Err(HeadFailure::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(HeadFailure::Io(e)),
        };
        let first = filled == 0;
        filled += n;
        // Parsing again only when a line may have ended keeps a client
        // that trickles bytes from costing a full parse per byte.
        if first || buf[filled - n..filled].contains(&b'\n') || filled == buf.len() {
            match parse_head(&buf[..filled]) {
                Ok(Parsed::Complete(req)) => return Ok((req, filled)),
                Ok(Parsed::Partial) => {}
                Err(e) => return Err(HeadFailure::Bad(e)),
            }
        }
    }
}

async fn handle(shared: &Shared, client: TcpStream, rec: &mut Record) {
    let _ = client.set_nodelay(true);
    let config = &shared.config;
    let mut buf = vec![0u8; MAX_HEAD];
    let (req, filled) = match timeout(config.header_timeout, read_head(&client, &mut buf)).await {
        Ok(Ok(got)) => got,
        Err(_) => {
            let t = config.header_timeout;
            rec.deny(format!("request head not complete within {t:?}"));
            let body = format!("airlock: the request head did not arrive within {t:?}");
            answer(&client, 408, &body).await;
            return;
        }
        Ok(Err(HeadFailure::Closed)) => {
            rec.deny("connection closed before a complete request head");
            return;
        }
        Ok(Err(HeadFailure::Io(e))) => {
            rec.deny(format!("cannot read the request head: {e}"));
            return;
        }
        Ok(Err(HeadFailure::Bad(e))) => {
            rec.deny(e.to_string());
            let status = match e {
                HeadError::TooLarge => 431,
                HeadError::Malformed(_) => 400,
            };
            answer(&client, status, &format!("airlock: {e}")).await;
            return;
        }
    };
    rec.kind = req.kind;
    rec.host.clone_from(&req.host_text);
    rec.port = req.port;

    let allowed = match decide(&config.allow, &config.resolver, &req.host, req.port).await {
        Ok(allowed) => allowed,
        Err(refusal) => {
            rec.deny(refusal.reason());
            answer(&client, refusal.status(), &refusal.message()).await;
            return;
        }
    };
    // A persistent request with nothing after its head (a pipelined second
    // request goes the closing way below).
    if let Some(persistent) = req.persistent.filter(|_| filled == req.head_len) {
        rec.decision = Some(Decision::Allowed { rule: allowed.rule });
        keep_alive(shared, &client, &req, persistent, &allowed.addrs, buf, rec).await;
        linger(&client).await;
        return;
    }
    let (upstream, addr) = match connect(&allowed.addrs).await {
        Ok(connected) => connected,
        Err((addr, e)) => {
            let target = literal(addr.ip(), addr.port());
            rec.addr = Some(addr);
            rec.deny(format!("cannot connect to {target}: {e}"));
            let body = format!(
                "airlock: egress to {}:{} is allowed, but connecting to {target} failed: {e}",
                req.host_text, req.port
            );
            answer(&client, 502, &body).await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    rec.addr = Some(addr);
    rec.decision = Some(Decision::Allowed { rule: allowed.rule });

    let early = &buf[req.head_len..filled];
    let sent = match req.kind {
        Kind::Connect => {
            tunnel::write_all(&client, b"HTTP/1.1 200 Connection established\r\n\r\n").await
        }
        _ => tunnel::write_all(&upstream, &req.upstream_head).await,
    };
    if sent.is_err() {
        return;
    }
    if req.kind != Kind::Connect {
        rec.up += req.upstream_head.len() as u64;
    }
    if !early.is_empty() {
        if tunnel::write_all(&upstream, early).await.is_err() {
            return;
        }
        rec.up += early.len() as u64;
    }
    let (pipes, idle) = (&shared.pipes, config.idle_timeout);
    let (up, down) = (&mut rec.up, &mut rec.down);
    let _ = match req.kind {
        Kind::Connect => {
            drop(buf);
            tunnel::run(&client, &upstream, pipes, idle, up, down).await
        }
        _ => tunnel::relay_http(&client, &upstream, pipes, buf, idle, up, down).await,
    };
}

/// Relays a [`Persistent`] request on a kept upstream connection or a new
/// one (through `buf`, the buffer its head was read into), and keeps the connection if the exchange leaves it reusable. A kept
/// connection that turns out closed before any answer is replaced by a new
/// one, once (only idempotent requests take kept connections).
async fn keep_alive(
    shared: &Shared,
    client: &TcpStream,
    req: &Request,
    persistent: Persistent,
    addrs: &[SocketAddr],
    mut buf: Vec<u8>,
    rec: &mut Record,
) {
    let mut kept = if persistent.idempotent {
        shared.upstreams.take(&req.host_text, addrs)
    } else {
        None
    };
    loop {
        let reused = kept.is_some();
        let (upstream, addr) = match kept.take() {
            Some(connection) => connection,
            None => match connect(addrs).await {
                Ok((upstream, addr)) => {
                    let _ = upstream.set_nodelay(true);
                    (upstream, addr)
                }
                Err((addr, e)) => {
                    rec.addr = Some(addr);
                    let target = literal(addr.ip(), addr.port());
                    let body = format!(
                        "airlock: egress to {}:{} is allowed, but connecting to {target} failed: {e}",
                        req.host_text, req.port
                    );
                    rec.deny(format!("cannot connect to {target}: {e}"));
                    answer(client, 502, &body).await;
                    return;
                }
            },
        };
        rec.addr = Some(addr);
        let (up, down) = (&mut rec.up, &mut rec.down);
        match kept::exchange(shared, client, &upstream, req, &mut buf, up, down).await {
            Ok(true) => return shared.upstreams.put(&req.host_text, addr, upstream),
            Ok(false) | Err(Failed::Broken) => return,
            Err(Failed::Unanswered(_)) if reused => {}
            Err(Failed::Unanswered(e)) => {
                let body = format!("airlock: {} closed without answering: {e}", req.host_text);
                return answer(client, 502, &body).await;
            }
            Err(Failed::Refused(e)) => {
                let body = format!(
                    "airlock: the response from {} was refused: {e}",
                    req.host_text
                );
                return answer(client, 502, &body).await;
            }
        }
    }
}

/// Connects to the first address that answers.
async fn connect(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), (SocketAddr, io::Error)> {
    let mut last = None;
    for &addr in addrs {
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => last = Some((addr, e)),
            Err(_) => last = Some((addr, io::ErrorKind::TimedOut.into())),
        }
    }
    Err(last.unwrap_or_else(|| {
        let none = SocketAddr::from(([0, 0, 0, 0], 0));
        (none, io::Error::other("no address to connect to"))
    }))
}

/// Answers the job with a plain-text error and closes gracefully.
pub(crate) async fn answer(stream: &TcpStream, status: u16, body: &str) {
    let reason = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    let text = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    if timeout(ANSWER_TIMEOUT, tunnel::write_all(stream, text.as_bytes()))
        .await
        .is_ok_and(|r| r.is_ok())
    {
        linger(stream).await;
    }
}

/// Half-closes, then reads and discards what the job still sends, briefly,
/// so that the close does not turn into a reset that destroys the answer.
async fn linger(stream: &TcpStream) {
    let _ = rustix::net::shutdown(stream, rustix::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    let _ = timeout(LINGER, async {
        while drained < LINGER_BYTES {
            if stream.readable().await.is_err() {
                return;
            }
            match stream.try_read(&mut sink) {
                Ok(0) => return,
                Ok(n) => drained += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
        }
    })
    .await;
}
