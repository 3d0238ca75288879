//! The request head: parsing (with `httparse`), the target, and the head
//! forwarded upstream.
//!
//! Everything here is a pure function of the bytes received, so it can be
//! property-tested and fuzzed without sockets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::allow::{normalise_name, valid_name};
use crate::Kind;

/// The largest request head accepted, in bytes (431 beyond).
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// The most header fields accepted (431 beyond).
const MAX_HEADERS: usize = 128;

/// Headers never forwarded: hop-by-hop (RFC 9110 section 7.6.1) and the
/// ones the proxy writes itself. `Proxy-*` are dropped by prefix.
const DROPPED: &[&str] = &[
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "host",
    "proxy-connection",
];

/// Where the job wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Host {
    /// A DNS name, lowercase, without a trailing dot.
    Name(String),
    /// An IP literal (`[v6]` in the request).
    Ip(IpAddr),
}

/// A complete, valid proxy request head.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub kind: Kind,
    /// The host as the job wrote it (for events and messages).
    pub host_text: String,
    pub host: Host,
    pub port: u16,
    /// Length of the head in the buffer; what follows is body or tunnel.
    pub head_len: usize,
    /// For plain HTTP: the head to send upstream, in origin-form, with
    /// hop-by-hop and `Proxy-*` headers removed, and `Connection: close`
    /// unless [`Request::persistent`]. Empty for CONNECT.
    pub upstream_head: Vec<u8>,
    /// For a plain-HTTP request the upstream connection may outlive (see
    /// [`Persistent`]): sent without `Connection: close`, its response is
    /// framed by the proxy, and the connection can serve the job's next
    /// request to the same address.
    pub persistent: Option<Persistent>,
}

/// A request whose upstream connection may be kept: HTTP/1.1, no body (no
/// `Content-Length` but 0, no `Transfer-Encoding`), no `Upgrade`, no
/// `Expect`, so that the proxy knows where the exchange ends on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Persistent {
    /// `GET`, `HEAD` or `OPTIONS`: safe to send on a kept connection, and
    /// to send again on a new one if the kept one turns out closed before
    /// any answer (RFC 9112 section 9.3.1).
    pub idempotent: bool,
    /// `HEAD`: the response has no body whatever its headers say.
    pub head: bool,
}

/// Why a head cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeadError {
    /// The head exceeds [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields.
    #[error("request head larger than {MAX_HEAD} bytes or {MAX_HEADERS} header fields")]
    TooLarge,
    /// Not a valid proxy request.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// What the bytes so far amount to.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// The head is not complete yet.
    Partial,
    /// A complete head.
    Complete(Request),
}

fn malformed(why: impl Into<String>) -> HeadError {
    HeadError::Malformed(why.into())
}

/// Parses a request head from the start of `buf`.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Parsed, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(malformed(e.to_string())),
    };
    if head_len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(malformed("incomplete request line"));
    };
    if method.eq_ignore_ascii_case("CONNECT") {
        let (host_text, host, port) = authority(target, None)?;
        return Ok(Parsed::Complete(Request {
            kind: Kind::Connect,
            host_text,
            host,
            port,
            head_len,
            upstream_head: Vec::new(),
            persistent: None,
        }));
    }
    let Some(rest) = strip_prefix_ignore_case(target, "http://") else {
        return Err(if target.starts_with('/') {
            malformed(
                "this is an egress proxy: send absolute-URI requests (http://host/path) or CONNECT",
            )
        } else if target.contains("://") {
            malformed("only http:// URLs can be proxied; use CONNECT (HTTPS_PROXY) for TLS")
        } else {
            malformed("request target is not an absolute http:// URI")
        });
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, path) = rest.split_at(end);
    let path = path.split('#').next().unwrap_or_default();
    let (host_text, host, port) = authority(auth, Some(80))?;
    let (upstream_head, persistent) = upstream_head(method, path, version, auth, req.headers)?;
    Ok(Parsed::Complete(Request {
        kind: Kind::Http,
        host_text,
        host,
        port,
        head_len,
        upstream_head,
        persistent,
    }))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Parses `host:port`, `[v6]:port`, or (with a default port) `host`.
fn authority(text: &str, default_port: Option<u16>) -> Result<(String, Host, u16), HeadError> {
    if text.contains('@') {
        return Err(malformed("credentials in the URL are not supported"));
    }
    let (host_text, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| malformed("unterminated IPv6 literal"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| malformed("expected :port after IPv6 literal"))?,
            ),
        };
        (&text[..v6.len() + 2], port)
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    let port = match port_text {
        Some(p) if !p.is_empty() => parse_port(p).ok_or_else(|| malformed("invalid port"))?,
        _ => default_port.ok_or_else(|| malformed("CONNECT target needs a port (host:port)"))?,
    };
    let host = if let Some(v6) = host_text
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
    {
        Host::Ip(IpAddr::V6(
            v6.parse::<Ipv6Addr>()
                .map_err(|_| malformed("invalid IPv6 literal"))?,
        ))
    } else if let Ok(v4) = host_text.parse::<Ipv4Addr>() {
        Host::Ip(IpAddr::V4(v4))
    } else {
        let name = normalise_name(host_text);
        if !valid_name(&name) {
            return Err(malformed("invalid host name"));
        }
        Host::Name(name)
    };
    Ok((host_text.to_owned(), host, port))
}

fn parse_port(text: &str) -> Option<u16> {
    if text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// The origin-form head sent upstream, and whether the upstream connection
/// may be kept after the exchange.
fn upstream_head(
    method: &str,
    path: &str,
    version: u8,
    authority: &str,
    headers: &[httparse::Header<'_>],
) -> Result<(Vec<u8>, Option<Persistent>), HeadError> {
    let mut listed: Vec<String> = Vec::new();
    let mut content_length: Option<&[u8]> = None;
    let mut chunked = false;
    let mut upgrade_or_expect = false;
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("upgrade") || h.name.eq_ignore_ascii_case("expect") {
            upgrade_or_expect = true;
        }
        if h.name.eq_ignore_ascii_case("connection") {
            let value = std::str::from_utf8(h.value).unwrap_or_default();
            listed.extend(value.split(',').map(|t| t.trim().to_ascii_lowercase()));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            if content_length.is_some_and(|v| v != h.value) {
                return Err(malformed("conflicting Content-Length headers"));
            }
            content_length = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = true;
        }
    }
    if chunked && content_length.is_some() {
        return Err(malformed("both Content-Length and Transfer-Encoding"));
    }
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    if !path.starts_with('/') {
        out.push(b'/');
    }
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\nHost: "
    } else {
        b" HTTP/1.1\r\nHost: "
    });
    out.extend_from_slice(authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in headers.iter() {
        let name = h.name.to_ascii_lowercase();
        let framing = name == "content-length" || name == "transfer-encoding";
        let drop = DROPPED.contains(&name.as_str())
            || name.starts_with("proxy-")
            || (!framing && listed.contains(&name));
        if drop {
            continue;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = !chunked && content_length.is_none_or(|v| v == b"0");
    let persistent = (version == 1 && bodiless && !upgrade_or_expect).then(|| Persistent {
        idempotent: ["GET", "HEAD", "OPTIONS"].contains(&method),
        head: method == "HEAD",
    });
    if persistent.is_none() {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok((out, persistent))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(head: &str) -> Request {
        match parse_head(head.as_bytes()) {
            Ok(Parsed::Complete(req)) => req,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    fn error(head: &str) -> HeadError {
        match parse_head(head.as_bytes()) {
            Err(e) => e,
            other => panic!("{head:?}: {other:?}"),
        }
    }

    #[test]
    fn absolute_uri_is_rewritten_to_origin_form() {
        let req = complete(
            "GET http://Example.COM:8080/a/b?q=1#frag HTTP/1.1\r\n\
             Host: evil.example\r\n\
             Proxy-Authorization: Basic eA==\r\n\
             Proxy-Connection: keep-alive\r\n\
             Connection: keep-alive, X-Secret\r\n\
             X-Secret: 1\r\n\
             Keep-Alive: 300\r\n\
             Accept: */*\r\n\r\nBODY",
        );
        assert_eq!(req.kind, Kind::Http);
        assert_eq!(req.host, Host::Name("example.com".into()));
        assert_eq!(req.host_text, "Example.COM");
        assert_eq!(req.port, 8080);
        assert_eq!(
            String::from_utf8_lossy(&req.upstream_head),
            "GET /a/b?q=1 HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn only_bodiless_http_1_1_requests_keep_their_upstream_connection() {
        let kept = |head: &str| complete(head).persistent;
        let get = kept("GET http://a.example/ HTTP/1.1\r\n\r\n");
        assert_eq!(
            get,
            Some(Persistent {
                idempotent: true,
                head: false
            })
        );
        let head = kept("HEAD http://a.example/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert_eq!(
            head,
            Some(Persistent {
                idempotent: true,
                head: true
            })
        );
        let delete = kept("DELETE http://a.example/x HTTP/1.1\r\n\r\n");
        assert_eq!(
            delete,
            Some(Persistent {
                idempotent: false,
                head: false
            })
        );
        for closing in [
            "GET http://a.example/ HTTP/1.0\r\n\r\n",
            "POST http://a.example/ HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET http://a.example/ HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            "GET http://a.example/ HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        ] {
            let req = complete(closing);
            assert_eq!(req.persistent, None, "{closing:?}");
            let sent = String::from_utf8_lossy(&req.upstream_head).into_owned();
            assert!(sent.ends_with("Connection: close\r\n\r\n"), "{sent:?}");
        }
        let sent = complete("GET http://a.example/ HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!String::from_utf8_lossy(&sent.upstream_head).contains("onnection"));
    }

    #[test]
    fn defaults_and_literals() {
        let req = complete("GET http://example.com HTTP/1.0\r\n\r\n");
        assert_eq!(req.port, 80);
        assert!(String::from_utf8_lossy(&req.upstream_head).starts_with("GET / HTTP/1.0\r\n"));
        let req = complete("GET http://[::1]:81/x HTTP/1.1\r\n\r\n");
        assert_eq!(req.host, Host::Ip("::1".parse().expect("ip")));
        assert_eq!(req.host_text, "[::1]");
        assert_eq!(req.port, 81);
        let req = complete("CONNECT 10.0.0.5:443 HTTP/1.1\r\nHost: x\r\n\r\n\x16\x03");
        assert_eq!(req.kind, Kind::Connect);
        assert_eq!(req.host, Host::Ip("10.0.0.5".parse().expect("ip")));
        assert_eq!(req.head_len, 42);
        let req = complete("CONNECT example.com.:443 HTTP/1.1\r\n\r\n");
        assert_eq!(req.host, Host::Name("example.com".into()));
    }

    #[test]
    fn content_length_survives_connection_tokens() {
        let req = complete(
            "POST http://a.example/ HTTP/1.1\r\nConnection: content-length\r\nContent-Length: 3\r\n\r\nabc",
        );
        assert!(String::from_utf8_lossy(&req.upstream_head).contains("Content-Length: 3\r\n"));
    }

    #[test]
    fn partial_and_errors() {
        assert!(matches!(
            parse_head(b"GET http://a.example/ HTTP/1.1\r\nAccept"),
            Ok(Parsed::Partial)
        ));
        assert!(matches!(
            error("\x00\x01garbage\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("GET / HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("GET https://a.example/ HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("CONNECT a.example HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("CONNECT a.example:0 HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("CONNECT 127.1:80 HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("CONNECT [fe80::1%25eth0]:80 HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("GET http://u:p@a.example/ HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            error("POST http://a.example/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        let big = format!(
            "GET http://a.example/ HTTP/1.1\r\nX: {}",
            "a".repeat(MAX_HEAD)
        );
        assert_eq!(error(&big[..MAX_HEAD]), HeadError::TooLarge);
        let many: String = (0..200).map(|i| format!("X-{i}: y\r\n")).collect();
        assert_eq!(
            error(&format!("GET http://a.example/ HTTP/1.1\r\n{many}\r\n")),
            HeadError::TooLarge
        );
    }
}
