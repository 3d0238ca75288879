//! Hostile clients: each attack gets its answer, and a normal request
//! still works afterwards.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::dns::{ask, client, receive};
use crate::support::*;

/// A proxy for `ok.test` on `up`, plus a check that it still serves.
fn setup(tweak: impl FnOnce(&mut net::Config)) -> (Dns, Upstream, Proxy) {
    let dns = standard_dns();
    let up = Upstream::start("127.0.0.1:0");
    let p = up.port();
    let proxy = Proxy::start_with(
        &patterns(&[
            &format!("ok.test:{p}"),
            &format!("127.0.0.1:{p}"),
            "pub.test:443",
        ]),
        dns.addr,
        tweak,
    );
    (dns, up, proxy)
}

fn still_serves(proxy: &Proxy, up: &Upstream) {
    let answer = proxy.get(&format!("ok.test:{}", up.port()));
    assert_eq!(status(&answer), 200, "{answer}");
    rule(&proxy.event());
}

#[test]
fn garbage_is_400() {
    let (_dns, up, proxy) = setup(|_| {});
    for garbage in [
        &b"\x00\xff\x13garbage\r\n\r\n"[..],
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n",
        b"GET http://ok.test:80/ HTTP/9.9\r\n\r\n",
        b"GET http://ok%2etest/ HTTP/1.1\r\n\r\n",
    ] {
        let answer = proxy.exchange(garbage);
        assert_eq!(status(&answer), 400, "{garbage:?}: {answer}");
        assert!(answer.contains("airlock: malformed request"), "{answer}");
        assert!(reason(&proxy.event()).starts_with("malformed request"));
    }
    still_serves(&proxy, &up);
}

#[test]
fn oversized_head_is_431() {
    let (_dns, up, proxy) = setup(|_| {});
    let p = up.port();
    let mut s = proxy.connect();
    let head = format!(
        "GET http://ok.test:{p}/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    // The proxy may answer before it has read everything.
    let _ = s.write_all(head.as_bytes());
    let answer = read_all(&mut s);
    assert_eq!(status(&answer), 431, "{answer}");
    assert!(reason(&proxy.event()).contains("larger than 16384 bytes"));
    still_serves(&proxy, &up);
}

#[test]
fn slowloris_gets_408_and_is_closed() {
    let (_dns, up, proxy) = setup(|c| c.header_timeout = Duration::from_millis(300));
    let p = up.port();
    let mut s = proxy.connect();
    let head = format!("GET http://ok.test:{p}/ HTTP/1.1\r\nHost: ok.test\r\n\r\n");
    let started = Instant::now();
    let mut writer = s.try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let elapsed = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(elapsed < Duration::from_secs(2), "closed after {elapsed:?}");
    assert!(reason(&proxy.event()).contains("not complete within 300ms"));
    assert!(up.requests.lock().expect("lock").is_empty());
    drop(s);
    let _ = trickle.join();
    still_serves(&proxy, &up);
}

#[test]
fn connections_over_the_limit_get_503() {
    let (_dns, up, proxy) = setup(|c| c.max_connections = 4);
    let idle: Vec<_> = (0..4).map(|_| proxy.connect()).collect();
    // Accepts happen in order, so the fifth is over the limit for sure.
    let answer = proxy.get(&format!("ok.test:{}", up.port()));
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(answer.contains("this job's limit is 4"), "{answer}");
    assert!(reason(&proxy.event()).starts_with("too many connections"));
    drop(idle);
    for _ in 0..4 {
        assert_eq!(
            reason(&proxy.event()),
            "connection closed before a complete request head"
        );
    }
    still_serves(&proxy, &up);
}

#[test]
fn malformed_dns_packets() {
    let (_dns, up, proxy) = setup(|_| {});
    let server = proxy.dns.expect("dns socket");
    let c = client();
    // Too short for a header: dropped, no answer. A header saying one
    // question but holding none: FORMERR with the same id.
    c.send_to(b"\x12", server).expect("send");
    c.send_to(b"\xab\xcd\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", server)
        .expect("send");
    let formerr = receive(&c);
    assert_eq!(formerr.metadata.id, 0xabcd);
    assert_eq!(formerr.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(reason(&proxy.event()), "undecodable dns packet dropped");
    assert_eq!(reason(&proxy.event()), "malformed dns query");
    // A response sent to the responder is never answered.
    c.send_to(b"\xab\xce\x81\x80\x00\x00\x00\x00\x00\x00\x00\x00", server)
        .expect("send");
    proxy.event();
    let ok = ask(&c, server, 0x4242, "pub.test", RecordType::A);
    assert_eq!(ok.metadata.id, 0x4242, "the dropped packets got no answer");
    assert_eq!(ok.metadata.response_code, ResponseCode::NoError);
    rule(&proxy.event());
    still_serves(&proxy, &up);
}

#[test]
fn a_dns_flood_is_answered_with_bounded_work() {
    let (_dns, up, proxy) = setup(|_| {});
    let server = proxy.dns.expect("dns socket");
    let c = client();
    for i in 0..2000u16 {
        let mut q = i.to_be_bytes().to_vec();
        q.extend_from_slice(b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00");
        q.extend_from_slice(b"\x05other\x04test\x00\x00\x01\x00\x01");
        let _ = c.send_to(&q, server);
    }
    // Queries are handled in order: once the last one is answered, every
    // earlier one was handled (or dropped by the kernel's socket buffer).
    let mut last = [0u8; 12].to_vec();
    last[..2].copy_from_slice(&0xfffeu16.to_be_bytes());
    last[2] = 1;
    last[5] = 1;
    last.extend_from_slice(b"\x03pub\x04test\x00\x00\x10\x00\x01");
    // The kernel may have dropped it too: ask again until answered.
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    'answered: for _ in 0..25 {
        c.send_to(&last, server).expect("send");
        while let Ok(n) = c.recv(&mut buf) {
            if n >= 2 && buf[..2] == [0xff, 0xfe] {
                break 'answered;
            }
        }
    }
    let mut refused = 0;
    loop {
        let event = proxy.event();
        if event.host == "pub.test" {
            // Retries of the last query may be queued behind it.
            break;
        }
        assert_eq!(reason(&event), "not in allowlist");
        refused += 1;
    }
    assert!(refused > 0 && refused <= 2000, "{refused}");
    still_serves(&proxy, &up);
}

/// Each job has its own server: one whose every connection slot is held
/// by a stalled client does not stop
/// another job's proxy from serving.
#[test]
fn an_attacked_server_does_not_affect_another_jobs() {
    let (_dns, up, attacked) = setup(|c| c.max_connections = 8);
    let (_dns2, up2, other) = setup(|_| {});
    let stalled: Vec<_> = (0..8)
        .map(|_| {
            let mut s = attacked.connect();
            let _ = s.write_all(b"GET http://ok.test/ HTTP/1.1\r\nX-Slow:");
            s
        })
        .collect();
    let answer = attacked.get(&format!("ok.test:{}", up.port()));
    assert_eq!(
        status(&answer),
        503,
        "the attacked server is full: {answer}"
    );
    still_serves(&other, &up2);
    drop(stalled);
}
