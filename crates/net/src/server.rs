//! The server: a dedicated thread with its own current-thread runtime per
//! job, the accept loop, the connection limit and shutdown.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::tunnel::Pipes;
use crate::{dns, proxy, Config, Connection, Decision, Kind, Listeners, Sink};

/// Connections over the limit that are answered 503 at the same time; more
/// than that are closed without an answer (still with an event).
const MAX_REJECTING: usize = 32;
/// Threads for blocking `getaddrinfo` calls, per server.
const MAX_BLOCKING_THREADS: usize = 8;
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every task of one server shares.
pub(crate) struct Shared {
    pub config: Config,
    sink: Sink,
    /// Empty pipes for the next tunnels.
    pub pipes: Pipes,
    /// Idle upstream connections for the job's next plain-HTTP requests.
    pub upstreams: crate::kept::Upstreams,
}

impl Shared {
    /// Delivers one event.
    pub(crate) fn emit(&self, event: Connection) {
        (self.sink)(event);
    }
}

/// Resolves once `stop` says so (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// A running proxy (and DNS responder) for one job.
///
/// Dropping it shuts it down like [`Server::shutdown`].
pub struct Server {
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Stops accepting, ends open connections and pending DNS lookups, and
    /// returns once every connection's event was delivered to the sink.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            // A panic in the server thread has already been reported by the
            // panic hook; there is nothing more to do with it here.
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Starts serving; see [`crate::serve`].
pub(crate) fn start(config: Config, listeners: Listeners, sink: Sink) -> io::Result<Server> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_name("airlock-net")
        .build()?;
    listeners.proxy.set_nonblocking(true)?;
    if let Some(dns) = &listeners.dns {
        dns.set_nonblocking(true)?;
    }
    let (proxy, dns) = {
        let _guard = runtime.enter();
        let proxy = TcpListener::from_std(listeners.proxy)?;
        let dns = listeners.dns.map(UdpSocket::from_std).transpose()?;
        (proxy, dns)
    };
    let (stop, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        config,
        sink,
        pipes: Pipes::default(),
        upstreams: crate::kept::Upstreams::default(),
    });
    let thread = std::thread::Builder::new()
        .name("airlock-net".to_owned())
        .spawn(move || {
            runtime.block_on(run(shared, proxy, dns, stop_rx));
            // Every task has ended; blocking getaddrinfo calls still
            // running are abandoned rather than waited for.
            runtime.shutdown_background();
        })?;
    Ok(Server {
        stop,
        thread: Some(thread),
    })
}

async fn run(
    shared: Arc<Shared>,
    proxy: TcpListener,
    dns: Option<UdpSocket>,
    mut stop: watch::Receiver<bool>,
) {
    // Every task holds a clone of `done`; when all are dropped, `finished`
    // yields None: that is how shutdown knows every event was delivered.
    let (done, mut finished) = mpsc::channel::<()>(1);
    if let Some(socket) = dns {
        tokio::spawn(dns::serve(
            shared.clone(),
            socket,
            stop.clone(),
            done.clone(),
        ));
    }
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    loop {
        let stream = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = proxy.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        match limit.clone().try_acquire_owned() {
            Ok(permit) => {
                let task =
                    proxy::connection(shared.clone(), stream, stop.clone(), done.clone(), permit);
                tokio::spawn(task);
            }
            Err(_) => {
                let max = shared.config.max_connections;
                let reason = format!("too many connections (this job's limit is {max})");
                let Ok(slot) = rejecting.clone().try_acquire_owned() else {
                    drop(stream);
                    shared.emit(over_limit(reason, std::time::Duration::ZERO));
                    continue;
                };
                let (shared, done) = (shared.clone(), done.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let _done = done;
                    let started = std::time::Instant::now();
                    let body = format!("airlock: {reason}; close idle connections or retry later");
                    proxy::answer(&stream, 503, &body).await;
                    shared.emit(over_limit(reason, started.elapsed()));
                });
            }
        }
    }
    drop(proxy);
    drop(done);
    let _ = finished.recv().await;
}

fn over_limit(reason: String, duration: Duration) -> Connection {
    Connection {
        kind: Kind::Http,
        host: String::new(),
        port: 0,
        addr: None,
        decision: Decision::Denied { reason },
        bytes_up: 0,
        bytes_down: 0,
        duration,
    }
}
