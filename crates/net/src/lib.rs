//! Airlock's egress control for one job: an allowlist proxy (plain HTTP and
//! `CONNECT` on one TCP port) and a DNS responder.
//!
//! # Design
//!
//! A job's network namespace has only loopback. Its sandbox init creates a
//! TCP listener on `127.0.0.1:3128` and a UDP socket on `127.0.0.1:53`
//! inside that namespace and hands them to the runner, which serves them
//! with [`serve`]. A socket keeps the namespace it was created in, so
//! connections accepted on them come from the job, while everything the
//! proxy opens itself (upstream connections, DNS queries) is made from the
//! runner's (host) namespace. The job reaches the outside only through
//! these two sockets.
//!
//! Every request is decided by [`Allowlist`] rules (`host:port`,
//! `*.domain:port`, IP literals, port `*`). The proxy never trusts the job
//! to resolve names: it resolves them itself ([`Resolver`]), classifies each
//! address ([`Class`]) and refuses loopback, private, link-local (cloud
//! metadata), CGNAT, multicast, reserved and documentation addresses,
//! including IPv6 forms that embed such an IPv4 address, unless the exact
//! address is listed literally. It then connects to the vetted address it
//! resolved (pinned: there is no second lookup to rebind). Refusals are
//! answered with a status (403, 502, 400, 408, 431, 503) and a plain-text
//! body that says what was refused and which pattern would allow it.
//!
//! The DNS responder answers only names some rule allows, with the same
//! vetted addresses; any other name is REFUSED and never forwarded, so DNS
//! cannot be used to carry data out.
//!
//! Each [`Server`] runs on its own thread with its own single-threaded tokio
//! runtime, so it never blocks the caller and one job's traffic cannot
//! starve another's; there is one task per connection. Once allowed, bytes
//! move with `splice(2)` through a pipe (zero-copy) on Linux; a plain-HTTP
//! response's first 16 KiB are copied through the request head's buffer
//! instead (fewer system calls for a small response).
//!
//! Every connection and every DNS query, allowed or not, ends in exactly one
//! [`Connection`] event delivered to the sink.
//!
//! # Events as JSON
//!
//! A [`Connection`] serialises as one flat object: `kind` (`http`,
//! `connect`, `dns`), `host`, `port`, `addr` (`"ip:port"` or null),
//! `decision` (`allowed` with `rule`, or `denied` with `reason`),
//! `bytes_up`, `bytes_down` and `duration_ms` (a float: milliseconds, with
//! microsecond precision).
#![deny(missing_docs)]

pub mod addr;
pub mod allow;
mod dns;
mod error;
mod http;
mod kept;
mod policy;
mod proxy;
mod resolve;
mod response;
mod server;
mod tunnel;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use addr::Class;
pub use allow::{Allowlist, Rule, RuleHost};
pub use error::Error;
pub use server::Server;

/// The event sink: called once per connection or DNS query, from the
/// server's thread. It should return quickly (queue the event elsewhere).
pub type Sink = Arc<dyn Fn(Connection) + Send + Sync>;

/// How a server behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the job may reach.
    pub allow: Allowlist,
    /// Open proxy connections at once, per server (= per job); beyond it
    /// new connections are answered 503. Default 256.
    pub max_connections: usize,
    /// A tunnel or connection with no byte moving either way for this long
    /// is closed. Default 5 minutes.
    pub idle_timeout: Duration,
    /// The whole request head must arrive within this (slowloris); else
    /// 408. Default 10 seconds.
    pub header_timeout: Duration,
    /// How the proxy (and the DNS responder) resolve names.
    pub resolver: Resolver,
}

impl Config {
    /// The defaults, with `allow` as the allowlist and the system resolver.
    pub fn new(allow: Allowlist) -> Config {
        Config {
            allow,
            max_connections: 256,
            idle_timeout: Duration::from_secs(5 * 60),
            header_timeout: Duration::from_secs(10),
            resolver: Resolver::System,
        }
    }
}

/// How names are resolved, always from the runner's (host) side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolver {
    /// `getaddrinfo` (honours `/etc/hosts` and nsswitch).
    System,
    /// Send A/AAAA queries to this DNS server over UDP.
    Nameserver(SocketAddr),
}

/// The sockets to serve, created inside the job's network namespace.
#[derive(Debug)]
pub struct Listeners {
    /// The proxy's TCP listener (e.g. `127.0.0.1:3128`).
    pub proxy: std::net::TcpListener,
    /// The DNS responder's UDP socket (e.g. `127.0.0.1:53`), if any.
    pub dns: Option<std::net::UdpSocket>,
}

/// Starts serving `listeners` with `config` on a thread of its own, and
/// returns at once. Each connection and DNS query ends in one event passed
/// to `sink`.
///
/// Fails only if the runtime, its thread, or the sockets' registration
/// cannot be set up.
pub fn serve(
    config: Config,
    listeners: Listeners,
    sink: Arc<dyn Fn(Connection) + Send + Sync>,
) -> std::io::Result<Server> {
    server::start(config, listeners, sink)
}

/// What kind of traffic a [`Connection`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain HTTP request with an absolute URI (also used for
    /// connections that ended before their request was understood).
    Http,
    /// A `CONNECT` tunnel.
    Connect,
    /// A DNS query.
    Dns,
}

/// Whether egress was allowed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "decision", rename_all = "lowercase")]
pub enum Decision {
    /// Allowed by `rule` (the normalised pattern; `NAME_RULE + IP_RULE`
    /// when a special address was admitted by a literal rule).
    Allowed {
        /// The rule that allowed it.
        rule: String,
    },
    /// Refused, or failed before anything was sent.
    Denied {
        /// Why, in words.
        reason: String,
    },
}

/// One connection or DNS query, reported when it ends.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Connection {
    /// HTTP, CONNECT or DNS.
    pub kind: Kind,
    /// The host as the job asked (a name, or an IP literal); empty if the
    /// request never got that far.
    pub host: String,
    /// The port asked for; 53 for DNS; 0 if unknown.
    pub port: u16,
    /// The address connected to; for DNS, the first address answered
    /// (with port 0).
    pub addr: Option<SocketAddr>,
    /// Allowed (by which rule) or denied (why).
    #[serde(flatten)]
    pub decision: Decision,
    /// Bytes from the job delivered to the remote (for plain HTTP this
    /// includes the rewritten request head).
    pub bytes_up: u64,
    /// Bytes from the remote delivered to the job (the proxy's own answers,
    /// like `200 Connection established` or a 403, are not counted).
    pub bytes_down: u64,
    /// From accept (or receipt of the query) to the end.
    #[serde(rename = "duration_ms", serialize_with = "millis")]
    pub duration: Duration,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

/// Entry points for the fuzz targets (`crates/net/fuzz`); not an API.
#[doc(hidden)]
pub mod fuzz {
    use crate::Allowlist;

    /// Parses a request head and, when complete, builds its refusal texts.
    pub fn http_head(data: &[u8]) {
        if let Ok(crate::http::Parsed::Complete(req)) = crate::http::parse_head(data) {
            assert!(req.head_len <= data.len());
            let _ = crate::policy::literal("::1".parse().expect("literal"), req.port);
        }
    }

    /// Parses a response head (as to a `GET`, then as to a `HEAD`) and
    /// frames what follows it as a chunked body, fed whole and then byte
    /// by byte: both feedings must agree on where the body ends.
    pub fn http_response(data: &[u8]) {
        for head_request in [false, true] {
            if let Ok(Some(res)) = crate::response::parse_response(data, head_request) {
                assert!(res.head_len <= data.len());
                assert!(!res.reusable || res.body != crate::response::Body::UntilClose);
            }
        }
        let mut whole = crate::response::Chunks::default();
        let at_once = whole.feed(data);
        let mut bytes = crate::response::Chunks::default();
        let mut used = 0;
        let mut one_by_one = Ok(0);
        for byte in data.chunks(1) {
            match bytes.feed(byte) {
                Ok(1) => used += 1,
                Ok(_) => break,
                Err(e) => {
                    one_by_one = Err(e);
                    break;
                }
            }
        }
        if one_by_one.is_ok() {
            one_by_one = Ok(used);
        }
        assert_eq!(at_once, one_by_one);
        assert_eq!(whole.done(), bytes.done());
    }

    /// Plans the answer to a DNS packet and, for a lookup, answers it with
    /// a fixed mix of public and special addresses.
    pub fn dns_query(data: &[u8], allow: &Allowlist) {
        if let crate::dns::Plan::Resolve {
            request,
            name,
            rule,
            ..
        } = crate::dns::plan(data, allow)
        {
            let ips = [
                "93.184.216.34".parse().expect("ip"),
                "10.0.0.5".parse().expect("ip"),
                "2606:4700::1111".parse().expect("ip"),
            ];
            let _ = crate::dns::answer(&request, allow, &name, rule, &ips);
        }
    }
}
