//! Real servers on loopback for the tests: a DNS server (hickory-proto), an
//! HTTP server that records what it received, an echo server, and the
//! proxy under test with its events on a channel.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};
use net::{Allowlist, Config, Connection, Decision, Listeners, Resolver, Server};

/// Time limit for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(5);

/// A DNS server on 127.0.0.1 answering from a fixed table.
pub struct Dns {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
}

impl Dns {
    pub fn start(table: &[(&str, &str)]) -> Dns {
        let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
        for (name, ip) in table {
            map.entry((*name).to_owned())
                .or_default()
                .push(ip.parse().expect("table address"));
        }
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind dns");
        let addr = socket.local_addr().expect("dns addr");
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((n, peer)) = socket.recv_from(&mut buf) {
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(req) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut resp = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
                let Some(q) = req.queries.first() else {
                    continue;
                };
                resp.add_query(q.clone());
                let name = q
                    .name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                match map.get(&name) {
                    None => resp.metadata.response_code = ResponseCode::NXDomain,
                    Some(ips) => {
                        for ip in ips {
                            let data = match (ip, q.query_type()) {
                                (IpAddr::V4(v4), RecordType::A) => RData::A(A(*v4)),
                                (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(*v6)),
                                _ => continue,
                            };
                            resp.add_answer(Record::from_rdata(q.name().clone(), 60, data));
                        }
                    }
                }
                let _ = socket.send_to(&resp.to_vec().expect("encode"), peer);
            }
        });
        Dns { addr, queries }
    }

    pub fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The test names and their addresses.
pub fn standard_dns() -> Dns {
    Dns::start(&[
        ("ok.test", "127.0.0.1"),
        ("a.ok.test", "127.0.0.1"),
        ("a.b.ok.test", "127.0.0.1"),
        ("xok.test", "127.0.0.1"),
        ("other.test", "127.0.0.1"),
        ("private.test", "10.0.0.5"),
        ("meta.test", "169.254.169.254"),
        ("mapped.test", "::ffff:127.0.0.1"),
        ("pub.test", "93.184.216.34"),
        ("pub.test", "2606:4700::1111"),
        ("mixed.test", "93.184.216.34"),
        ("mixed.test", "10.0.0.5"),
    ])
}

/// An HTTP server answering every request with `hello from upstream`,
/// keeping each request's raw bytes.
pub struct Upstream {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
}

pub const BODY: &str = "hello from upstream";

impl Upstream {
    pub fn start(bind: &str) -> Upstream {
        let listener = TcpListener::bind(bind).expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let seen = seen.clone();
                thread::spawn(move || {
                    let head = read_until_blank_line(&mut stream);
                    seen.lock().expect("lock").push(head);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
                        BODY.len()
                    );
                    let _ = stream.write_all(answer.as_bytes());
                });
            }
        });
        Upstream { addr, requests }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// The body of [`KeepAlive`]'s `/big`: 3 MiB of text that changes every
/// byte, so that a lost, repeated or reordered piece shows.
pub fn big_body() -> String {
    (0..3 << 20)
        .map(|i: u32| char::from(b'a' + u8::try_from(i % 26).expect("below 26")))
        .collect()
}

/// What [`KeepAlive`] sends, unasked, 50 ms after answering `/smuggle`.
pub const SMUGGLED: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nevil!";

/// An HTTP/1.1 server that keeps connections open between requests,
/// answering by path: `/chunked` with a chunked body, `/big` with
/// [`big_body`], `/smuggle` with a `Content-Length` body followed later by
/// [`SMUGGLED`], `/ambiguous` with
/// both `Content-Length` and `Transfer-Encoding`, `/last` with a
/// `Content-Length` body and then a close without `Connection: close`,
/// anything else with a `Content-Length` body; it closes after answering a
/// request with `Connection: close`. It records each request
/// with the number of the connection it came on.
pub struct KeepAlive {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<(usize, String)>>>,
}

impl KeepAlive {
    pub fn start() -> KeepAlive {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        thread::spawn(move || {
            for (number, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let seen = seen.clone();
                thread::spawn(move || loop {
                    let head = read_until_blank_line(&mut stream);
                    if head.is_empty() {
                        return;
                    }
                    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    let closing = head.contains("Connection: close\r\n");
                    seen.lock().expect("lock").push((number, head));
                    let answer = match path.as_str() {
                        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                             6\r\nhello \r\nd;x=1\r\nfrom upstream\r\n0\r\n\r\n"
                            .to_owned(),
                        "/ambiguous" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\
                             Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                            .to_owned(),
                        "/big" => {
                            let body = big_body();
                            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                            head + &body
                        }
                        _ => format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nKeep-Alive: timeout=30\r\n\r\n{BODY}",
                            BODY.len()
                        ),
                    };
                    if stream.write_all(answer.as_bytes()).is_err() || path == "/last" || closing {
                        return;
                    }
                    if path == "/smuggle" {
                        // A second, unasked-for response, once the first
                        // has been relayed: it must never answer the
                        // job's next request.
                        thread::sleep(Duration::from_millis(50));
                        let _ = stream.write_all(SMUGGLED.as_bytes());
                    }
                });
            }
        });
        KeepAlive { addr, requests }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The connection numbers the requests came on, in order.
    pub fn connections(&self) -> Vec<usize> {
        let requests = self.requests.lock().expect("lock");
        requests.iter().map(|(number, _)| *number).collect()
    }
}

fn read_until_blank_line(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A TCP server that echoes everything back, then closes when the client
/// half-closes.
pub fn echo(bind: &str) -> SocketAddr {
    let listener = TcpListener::bind(bind).expect("bind echo");
    let addr = listener.local_addr().expect("echo addr");
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                let mut buf = [0u8; 65536];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// The proxy under test.
pub struct Proxy {
    pub addr: SocketAddr,
    pub dns: Option<SocketAddr>,
    pub events: Receiver<Connection>,
    pub server: Option<Server>,
}

impl Proxy {
    pub fn start(patterns: &[String], resolver: SocketAddr) -> Proxy {
        Proxy::start_with(patterns, resolver, |_| {})
    }

    pub fn start_with(
        patterns: &[String],
        resolver: SocketAddr,
        tweak: impl FnOnce(&mut Config),
    ) -> Proxy {
        let mut config = Config::new(Allowlist::new(patterns).expect("valid patterns"));
        config.resolver = Resolver::Nameserver(resolver);
        tweak(&mut config);
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let dns = UdpSocket::bind("127.0.0.1:0").expect("bind dns socket");
        let addr = proxy.local_addr().expect("proxy addr");
        let dns_addr = dns.local_addr().expect("dns socket addr");
        let (tx, events) = channel();
        let sink = Arc::new(move |event: Connection| {
            let _ = tx.send(event);
        });
        let listeners = Listeners {
            proxy,
            dns: Some(dns),
        };
        let server = net::serve(config, listeners, sink).expect("serve");
        Proxy {
            addr,
            dns: Some(dns_addr),
            events,
            server: Some(server),
        }
    }

    /// The next event (fails the test after [`WAIT`]).
    pub fn event(&self) -> Connection {
        self.events.recv_timeout(WAIT).expect("an event")
    }

    /// Sends `raw` and reads the whole answer (until the proxy closes).
    pub fn exchange(&self, raw: &[u8]) -> String {
        let mut stream = self.connect();
        stream.write_all(raw).expect("send request");
        read_all(&mut stream)
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect proxy");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream
    }

    /// A plain GET through the proxy; returns the whole answer.
    pub fn get(&self, authority: &str) -> String {
        let raw = format!("GET http://{authority}/hello HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        self.exchange(raw.as_bytes())
    }
}

pub fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

pub fn status(answer: &str) -> u16 {
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

pub fn patterns(list: &[&str]) -> Vec<String> {
    list.iter().map(|p| (*p).to_owned()).collect()
}

pub fn reason(event: &Connection) -> &str {
    match &event.decision {
        Decision::Denied { reason } => reason,
        Decision::Allowed { rule } => panic!("expected a denial, got allowed by {rule}: {event:?}"),
    }
}

pub fn rule(event: &Connection) -> &str {
    match &event.decision {
        Decision::Allowed { rule } => rule,
        Decision::Denied { reason } => panic!("expected allowed, got denied: {reason}: {event:?}"),
    }
}
