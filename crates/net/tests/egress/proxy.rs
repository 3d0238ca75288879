//! The proxy's decisions, end to end over loopback.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use net::Kind;

use crate::support::*;

#[test]
fn allowed_http_is_forwarded_in_origin_form() {
    let dns = standard_dns();
    let up = Upstream::start("127.0.0.1:0");
    let p = up.port();
    let proxy = Proxy::start(
        &patterns(&[&format!("ok.test:{p}"), &format!("127.0.0.1:{p}")]),
        dns.addr,
    );
    let raw = format!(
        "GET http://OK.test:{p}/hello?x=1 HTTP/1.1\r\nHost: evil.test\r\n\
         Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n\
         Connection: keep-alive\r\nAccept: */*\r\n\r\n"
    );
    let answer = proxy.exchange(raw.as_bytes());
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(answer.ends_with(BODY), "{answer}");

    let seen = up.requests.lock().expect("lock")[0].clone();
    assert_eq!(
        seen,
        format!("GET /hello?x=1 HTTP/1.1\r\nHost: OK.test:{p}\r\nAccept: */*\r\n\r\n")
    );
    let event = proxy.event();
    assert_eq!(event.kind, Kind::Http);
    assert_eq!(event.host, "OK.test");
    assert_eq!(event.port, p);
    assert_eq!(event.addr, Some(up.addr));
    assert_eq!(rule(&event), format!("ok.test:{p} + 127.0.0.1:{p}"));
    assert_eq!(event.bytes_up, seen.len() as u64);
    assert_eq!(event.bytes_down, answer.len() as u64);
    let json = serde_json::to_value(&event).expect("json");
    assert_eq!(json["decision"], "allowed");
    assert_eq!(json["kind"], "http");
    assert!(json["duration_ms"].as_f64().is_some(), "{json}");
}

/// A job's plain-HTTP requests to one address share one upstream
/// connection: each answer is whole, ends the job's connection with
/// `Connection: close`, and each request still has its own event.
#[test]
fn upstream_connections_are_kept_between_requests() {
    let dns = standard_dns();
    let up = KeepAlive::start();
    let p = up.port();
    let proxy = Proxy::start(
        &patterns(&[&format!("ok.test:{p}"), &format!("127.0.0.1:{p}")]),
        dns.addr,
    );
    let fixed = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    for path in ["/a", "/chunked", "/b", "/head"] {
        let authority = format!("ok.test:{p}");
        let method = if path == "/head" { "HEAD" } else { "GET" };
        let raw =
            format!("{method} http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
        let answer = proxy.exchange(raw.as_bytes());
        match path {
            "/chunked" => assert_eq!(
                answer,
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                 6\r\nhello \r\nd;x=1\r\nfrom upstream\r\n0\r\n\r\n"
            ),
            // No body after a HEAD, whatever Content-Length says; the
            // test server sends none either.
            "/head" => assert_eq!(answer, fixed.replace(BODY, "")),
            _ => assert_eq!(answer, fixed),
        }
        let event = proxy.event();
        assert_eq!(rule(&event), format!("ok.test:{p} + 127.0.0.1:{p}"));
        assert_eq!(event.bytes_down, answer.len() as u64, "{path}");
    }
    assert_eq!(up.connections(), [0, 0, 0, 0]);
    // A request with a body is sent with Connection: close on a new
    // connection, never on a kept one.
    let raw = format!(
        "POST http://ok.test:{p}/c HTTP/1.1\r\nHost: ok.test\r\nContent-Length: 2\r\n\r\nhi"
    );
    assert_eq!(status(&proxy.exchange(raw.as_bytes())), 200);
    let requests = up.requests.lock().expect("lock").clone();
    let (number, head) = &requests[4];
    assert_eq!(*number, 1);
    assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
    assert!(requests[..4]
        .iter()
        .all(|(_, head)| !head.contains("onnection")));
    // The same address under another name gets a connection of its own.
    let raw = format!("GET http://127.0.0.1:{p}/d HTTP/1.1\r\n\r\n");
    assert!(proxy.exchange(raw.as_bytes()).ends_with(BODY));
    assert_eq!(up.connections(), [0, 0, 0, 0, 1, 2]);
}

/// A proxy that allows a keep-alive upstream at its loopback address,
/// for the kept-connection tests.
struct Kept {
    _dns: Dns,
    up: KeepAlive,
    proxy: Proxy,
}

impl Kept {
    fn start() -> Kept {
        let dns = standard_dns();
        let up = KeepAlive::start();
        let p = up.port();
        let proxy = Proxy::start(&patterns(&[&format!("127.0.0.1:{p}")]), dns.addr);
        Kept {
            _dns: dns,
            up,
            proxy,
        }
    }

    /// The answer to a plain `GET` of `path` upstream, through the proxy.
    fn get(&self, path: &str) -> String {
        let raw = format!(
            "GET http://127.0.0.1:{}{path} HTTP/1.1\r\n\r\n",
            self.up.port()
        );
        self.proxy.exchange(raw.as_bytes())
    }
}

/// A body larger than what comes with the head moves by its length (the
/// rest through a pipe), and the connection serves the next request.
#[test]
fn a_large_body_is_relayed_exactly_and_its_connection_kept() {
    let k = Kept::start();
    let body = big_body();
    for path in ["/big", "/big", "/a"] {
        let answer = k.get(path);
        let (head, got) = answer.split_once("\r\n\r\n").expect("a head");
        assert!(head.ends_with("Connection: close"), "{head}");
        if path == "/big" {
            assert!(
                got == body,
                "{path}: {} bytes, not the {} sent",
                got.len(),
                body.len()
            );
        } else {
            assert_eq!(got, BODY);
        }
        assert_eq!(k.proxy.event().bytes_down, answer.len() as u64);
    }
    assert_eq!(k.up.connections(), [0, 0, 0]);
}

/// A kept connection the remote closed is replaced, and the request is
/// answered; a response with ambiguous framing is refused with 502 and its
/// connection is not kept.
#[test]
fn closed_or_ambiguous_upstream_connections_are_not_reused() {
    let k = Kept::start();
    assert_eq!(status(&k.get("/last")), 200);
    k.proxy.event();
    // The remote closed after /last without saying so: the proxy finds
    // the kept connection closed and opens another.
    assert!(k.get("/a").ends_with(BODY));
    k.proxy.event();
    let answer = k.get("/ambiguous");
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(
        answer.contains("both Transfer-Encoding and Content-Length"),
        "{answer}"
    );
    k.proxy.event();
    assert!(k.get("/b").ends_with(BODY));
    // /last and /a: connections 0 and 1; /ambiguous on the kept 1, which
    // is then closed; /b on a new one.
    assert_eq!(k.up.connections(), [0, 1, 1, 2]);
}

/// A remote that sends an unasked-for response on a connection the proxy
/// keeps (response splitting) gets that connection closed: the job's next
/// request goes on a new connection and gets its own answer.
#[test]
fn bytes_on_an_idle_kept_connection_never_answer_the_next_request() {
    let k = Kept::start();
    assert!(k.get("/smuggle").ends_with(BODY));
    // The smuggled bytes are sent 50 ms after the answer.
    std::thread::sleep(Duration::from_millis(300));
    let answer = k.get("/a");
    assert!(answer.ends_with(BODY), "{answer}");
    assert!(!answer.contains("evil"), "{answer}");
    assert_eq!(k.up.connections(), [0, 1]);
}

#[test]
fn allowed_connect_tunnels_both_ways() {
    let dns = standard_dns();
    let echo = echo("127.0.0.1:0");
    let p = echo.port();
    let proxy = Proxy::start(
        &patterns(&[&format!("ok.test:{p}"), &format!("127.0.0.1:{p}")]),
        dns.addr,
    );
    let mut s = proxy.connect();
    // The first tunnel bytes ride along with the head.
    s.write_all(
        format!("CONNECT ok.test:{p} HTTP/1.1\r\nHost: ok.test:{p}\r\n\r\nearly").as_bytes(),
    )
    .expect("send");
    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let mut got = vec![0u8; established.len() + 5];
    s.read_exact(&mut got).expect("read");
    assert_eq!(&got[..established.len()], established);
    assert_eq!(&got[established.len()..], b"early");
    let big = vec![7u8; 1 << 20];
    let mut reader = s.try_clone().expect("clone");
    let pump = std::thread::spawn(move || {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).expect("read back");
        back
    });
    s.write_all(&big).expect("send big");
    s.shutdown(Shutdown::Write).expect("half-close");
    let back = pump.join().expect("reader");
    assert_eq!(back.len(), big.len());
    assert!(back == big);

    let event = proxy.event();
    assert_eq!(event.kind, Kind::Connect);
    assert_eq!(event.host, "ok.test");
    assert_eq!(event.addr, Some(echo));
    assert_eq!(rule(&event), format!("ok.test:{p} + 127.0.0.1:{p}"));
    assert_eq!(event.bytes_up, 5 + (1 << 20));
    assert_eq!(event.bytes_down, 5 + (1 << 20));
}

#[test]
fn other_port_host_and_wildcard_are_refused_without_resolving() {
    let dns = standard_dns();
    let up = Upstream::start("127.0.0.1:0");
    let p = up.port();
    let q = p.wrapping_add(1).max(1);
    let proxy = Proxy::start(
        &patterns(&[
            &format!("ok.test:{p}"),
            &format!("*.ok.test:{p}"),
            &format!("127.0.0.1:{p}"),
        ]),
        dns.addr,
    );
    for (authority, pattern) in [
        (format!("ok.test:{q}"), format!("ok.test:{q}")),
        (format!("other.test:{p}"), format!("other.test:{p}")),
        (format!("xok.test:{p}"), format!("xok.test:{p}")),
        (format!("a.ok.test:{q}"), format!("a.ok.test:{q}")),
    ] {
        let answer = proxy.get(&authority);
        assert_eq!(status(&answer), 403, "{answer}");
        let want = format!(
            "airlock: egress to {pattern} is not in this job's allowlist; add \"{pattern}\" to network.egress to allow it"
        );
        assert!(answer.contains(&want), "{answer}");
        let event = proxy.event();
        assert_eq!(reason(&event), "not in allowlist");
        assert_eq!(event.addr, None);
        assert_eq!(event.bytes_up + event.bytes_down, 0);
    }
    assert_eq!(dns.count(), 0, "denied names must not be resolved");

    // The wildcard matches one or more labels in front.
    for name in ["a.ok.test", "a.b.ok.test"] {
        let answer = proxy.get(&format!("{name}:{p}"));
        assert_eq!(status(&answer), 200, "{name}: {answer}");
        assert_eq!(
            rule(&proxy.event()),
            format!("*.ok.test:{p} + 127.0.0.1:{p}")
        );
    }
}

#[test]
fn names_resolving_to_special_addresses_are_refused_even_when_listed() {
    let dns = standard_dns();
    let proxy = Proxy::start(
        &patterns(&[
            "private.test:80",
            "meta.test:80",
            "ok.test:*",
            "mapped.test:80",
        ]),
        dns.addr,
    );
    for (name, addr, words) in [
        ("private.test", "10.0.0.5", "private address"),
        ("meta.test", "169.254.169.254", "link-local"),
        ("ok.test", "127.0.0.1", "loopback"),
        ("mapped.test", "::ffff:127.0.0.1", "loopback"),
    ] {
        let answer = proxy.get(&format!("{name}:80"));
        assert_eq!(status(&answer), 403, "{answer}");
        assert!(
            answer.contains(&format!("{name} resolves to {addr}")),
            "{answer}"
        );
        assert!(answer.contains(words), "{answer}");
        let literal = if addr.contains(':') {
            format!("\"[{addr}]:80\" literally")
        } else {
            format!("\"{addr}:80\" literally")
        };
        assert!(answer.contains(&literal), "{answer}");
        let event = proxy.event();
        assert_eq!(event.host, name);
        assert!(reason(&event).contains(addr), "{event:?}");
        assert!(reason(&event).contains(words), "{event:?}");
        assert_eq!(event.addr, None);
    }
}

#[test]
fn loopback_needs_the_literal_next_to_the_name() {
    let dns = standard_dns();
    let up = Upstream::start("127.0.0.1:0");
    let p = up.port();
    let without = Proxy::start(&patterns(&[&format!("ok.test:{p}")]), dns.addr);
    assert_eq!(status(&without.get(&format!("ok.test:{p}"))), 403);
    assert!(reason(&without.event()).contains("127.0.0.1 (a loopback address)"));

    // A literal on another port does not count.
    let other_port = Proxy::start(
        &patterns(&[&format!("ok.test:{p}"), "127.0.0.1:1"]),
        dns.addr,
    );
    assert_eq!(status(&other_port.get(&format!("ok.test:{p}"))), 403);
    other_port.event();

    let with = Proxy::start(
        &patterns(&[&format!("ok.test:{p}"), &format!("127.0.0.1:{p}")]),
        dns.addr,
    );
    assert_eq!(status(&with.get(&format!("ok.test:{p}"))), 200);
    assert_eq!(with.event().addr, Some(up.addr));
    assert!(
        up.requests.lock().expect("lock").len() == 1,
        "only the allowed request arrived"
    );
}

#[test]
fn ip_literals_match_only_literal_rules() {
    let dns = standard_dns();
    let up = Upstream::start("127.0.0.1:0");
    let p = up.port();
    let by_name = Proxy::start(&patterns(&[&format!("ok.test:{p}")]), dns.addr);
    let answer = by_name.get(&format!("127.0.0.1:{p}"));
    assert_eq!(status(&answer), 403);
    assert!(
        answer.contains(&format!("add \"127.0.0.1:{p}\"")),
        "{answer}"
    );
    assert_eq!(reason(&by_name.event()), "not in allowlist");

    let literal = Proxy::start(&patterns(&[&format!("127.0.0.1:{p}")]), dns.addr);
    let answer = literal.get(&format!("127.0.0.1:{p}"));
    assert_eq!(status(&answer), 200, "{answer}");
    let event = literal.event();
    assert_eq!(rule(&event), format!("127.0.0.1:{p}"));
    assert_eq!(event.host, "127.0.0.1");
    assert_eq!(dns.count(), 0, "literals are not resolved");
}

#[test]
fn ipv6_literal() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipping ipv6_literal: cannot bind [::1] on this host");
        return;
    };
    drop(probe);
    let dns = standard_dns();
    let echo = echo("[::1]:0");
    let p = echo.port();
    let denied = Proxy::start(&patterns(&[&format!("127.0.0.1:{p}")]), dns.addr);
    let answer = denied.exchange(format!("CONNECT [::1]:{p} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!(status(&answer), 403, "{answer}");
    assert!(answer.contains(&format!("add \"[::1]:{p}\"")), "{answer}");
    denied.event();

    // Written differently, compared as an address.
    let allowed = Proxy::start(&patterns(&[&format!("[0:0::1]:{p}")]), dns.addr);
    let mut s = allowed.connect();
    s.write_all(format!("CONNECT [::1]:{p} HTTP/1.1\r\n\r\n").as_bytes())
        .expect("send");
    let mut head = [0u8; 39];
    s.read_exact(&mut head).expect("read");
    assert!(head.starts_with(b"HTTP/1.1 200"));
    s.write_all(b"v6").expect("send");
    s.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(read_all(&mut s), "v6");
    let event = allowed.event();
    assert_eq!(event.host, "[::1]");
    assert_eq!(event.addr, Some(echo));
    assert_eq!(rule(&event), format!("[::1]:{p}"));
}

#[test]
fn unresolvable_and_unreachable_are_502() {
    let dns = standard_dns();
    // A port nothing listens on: bind, learn it, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let proxy = Proxy::start(
        &patterns(&["nowhere.test:80", &format!("127.0.0.1:{closed}")]),
        dns.addr,
    );
    let answer = proxy.get("nowhere.test:80");
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(
        answer.contains("cannot resolve nowhere.test: no such host"),
        "{answer}"
    );
    assert!(reason(&proxy.event()).starts_with("cannot resolve nowhere.test"));

    let answer = proxy.get(&format!("127.0.0.1:{closed}"));
    assert_eq!(status(&answer), 502, "{answer}");
    assert!(answer.contains("connecting to 127.0.0.1"), "{answer}");
    assert!(reason(&proxy.event()).starts_with("cannot connect to 127.0.0.1"));
}

#[test]
fn shutdown_ends_open_tunnels_and_delivers_their_events() {
    let dns = standard_dns();
    let echo = echo("127.0.0.1:0");
    let p = echo.port();
    let mut proxy = Proxy::start(&patterns(&[&format!("127.0.0.1:{p}")]), dns.addr);
    let mut s = proxy.connect();
    s.write_all(format!("CONNECT 127.0.0.1:{p} HTTP/1.1\r\n\r\nping").as_bytes())
        .expect("send");
    let mut got = [0u8; 43];
    s.read_exact(&mut got).expect("read");
    assert!(got.ends_with(b"ping"));
    proxy.server.take().expect("server").shutdown();
    let event = proxy
        .events
        .try_recv()
        .expect("event delivered before shutdown returned");
    assert_eq!(event.kind, Kind::Connect);
    assert_eq!(event.bytes_up, 4);
    assert_eq!(event.bytes_down, 4);
    // The tunnel is closed.
    assert_eq!(read_all(&mut s), "");
}

#[test]
fn real_curl_through_the_proxy() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping real_curl_through_the_proxy: curl is not installed");
        return;
    }
    let dns = standard_dns();
    let up = Upstream::start("127.0.0.1:0");
    let p = up.port();
    let proxy = Proxy::start(
        &patterns(&[&format!("ok.test:{p}"), &format!("127.0.0.1:{p}")]),
        dns.addr,
    );
    let curl = |extra: &[&str], url: &str| {
        let out = std::process::Command::new("curl")
            .args(["-sS", "--max-time", "5", "--noproxy", "", "-x"])
            .arg(format!("http://{}", proxy.addr))
            .args(extra)
            .arg(url)
            .args(["-w", "\n%{http_code}"])
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("all_proxy")
            .env_remove("ALL_PROXY")
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = curl(&[], &format!("http://ok.test:{p}/x"));
    assert_eq!(plain, format!("{BODY}\n200"));
    assert_eq!(proxy.event().kind, Kind::Http);
    let tunnel = curl(&["--proxytunnel"], &format!("http://ok.test:{p}/x"));
    assert_eq!(tunnel, format!("{BODY}\n200"));
    assert_eq!(proxy.event().kind, Kind::Connect);
    let denied = curl(&[], "http://example.com:8080/");
    assert!(
        denied.contains("add \"example.com:8080\" to network.egress"),
        "{denied}"
    );
    assert!(denied.ends_with("403"), "{denied}");
    assert_eq!(reason(&proxy.event()), "not in allowlist");
}
